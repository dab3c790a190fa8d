//! Messages a session has for its client, written by the connection in the same loop iteration.
//!
//! Replies are small and many: they are written one after the other into one reused buffer, and
//! the connection sends every message of an iteration with one vectored write. A room snapshot
//! is large and may be shared: it is kept as a reference-counted frame, never copied here.

use crate::engine::Frame;

/// Above this, an emptied outbox gives its buffer back instead of keeping it for the next reply.
const KEEP_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Outbox {
    text: String,
    messages: Vec<Message>,
    /// Payload bytes of every message.
    bytes: usize,
}

#[derive(Debug)]
enum Message {
    /// `text[start..end]`.
    Written {
        start: usize,
        end: usize,
    },
    Shared(Frame),
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Adds one message, written by `write` into the outbox's buffer.
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let end = self.text.len();
        self.bytes += end - start;
        self.messages.push(Message::Written { start, end });
    }

    /// Adds one message that already exists as a frame.
    pub fn push_frame(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.messages.push(Message::Shared(frame));
    }

    /// Each message's bytes, in order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.messages.iter().map(|message| match message {
            Message::Written { start, end } => {
                self.text.as_bytes().get(*start..*end).unwrap_or_default()
            }
            Message::Shared(frame) => frame.as_bytes(),
        })
    }

    /// Each message's bytes, in order, with the shared frame it is when it is one (so the
    /// connection can keep a reference to it instead of copying what the socket did not take).
    pub fn messages_shared(&self) -> impl Iterator<Item = (&[u8], Option<&Frame>)> {
        self.messages.iter().map(|message| match message {
            Message::Written { start, end } => (
                self.text.as_bytes().get(*start..*end).unwrap_or_default(),
                None,
            ),
            Message::Shared(frame) => (frame.as_bytes(), Some(frame)),
        })
    }

    /// Total payload bytes, for limits.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every message once written; keeps a small buffer for the next ones.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.text.clear();
        self.bytes = 0;
        if self.text.capacity() > KEEP_CAPACITY {
            self.text = String::new();
        }
        if self.messages.capacity() > 64 {
            self.messages = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_in_order_and_the_buffer_is_reused() {
        let mut outbox = Outbox::default();
        outbox.push_with(|out| out.push_str("one"));
        outbox.push_frame(Frame::from("shared"));
        outbox.push_with(|out| out.push_str("three"));
        let all: Vec<&[u8]> = outbox.messages().collect();
        assert_eq!(all, [&b"one"[..], b"shared", b"three"]);
        assert_eq!(outbox.len_bytes(), 14);
        outbox.clear();
        assert!(outbox.is_empty());
        assert!(outbox.text.capacity() >= 8, "small buffers are kept");
        outbox.push_with(|out| out.push_str(&"x".repeat(KEEP_CAPACITY + 1)));
        outbox.clear();
        assert_eq!(outbox.text.capacity(), 0, "large buffers are given back");
    }
}
