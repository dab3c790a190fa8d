//! Messages a session has for its client, written by the connection in the same loop iteration.
//!
//! Replies are small and many: they are written one after the other into one reused buffer, and
//! the connection sends every message of an iteration with one vectored write. A room snapshot
//! is large and may be shared: it is kept as a reference-counted frame, never copied here; a
//! reply that embeds one (the variables in an array-RPC or MultiStudio join) is kept as its
//! written start and end around the shared frame.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::engine::Frame;

/// Above this, an emptied outbox gives its buffer back instead of keeping it for the next reply:
/// every idle connection keeps what it keeps here, and replies are small; a large one (a room's
/// variables) is rare enough to allocate each time.
const KEEP_CAPACITY: usize = 1024;
/// Likewise for the list of messages.
const KEEP_MESSAGES: usize = 8;

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
    /// `text[before]`, then the frame, then `text[after]`, as one message.
    Wrapped {
        before: (usize, usize),
        frame: Frame,
        after: (usize, usize),
    },
}

/// A piece of one message: written into the outbox, or a shared frame.
#[derive(Debug)]
pub enum Piece<'a> {
    Written(&'a [u8]),
    Shared(&'a Frame),
}

impl Piece<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Piece::Written(bytes) => bytes,
            Piece::Shared(frame) => frame.as_bytes(),
        }
    }
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

    /// Adds one message made of what `before` writes, a shared frame, and what `after` writes.
    pub fn push_wrapped(
        &mut self,
        before: impl FnOnce(&mut String),
        frame: Frame,
        after: impl FnOnce(&mut String),
    ) {
        let start = self.text.len();
        before(&mut self.text);
        let middle = self.text.len();
        after(&mut self.text);
        let end = self.text.len();
        self.bytes += end - start + frame.len();
        self.messages.push(Message::Wrapped {
            before: (start, middle),
            frame,
            after: (middle, end),
        });
    }

    /// Adds one message that already exists as a frame.
    pub fn push_frame(&mut self, frame: Frame) {
        self.bytes += frame.len();
        self.messages.push(Message::Shared(frame));
    }

    /// Each message's bytes, in order (a wrapped message is copied into one buffer: for tests
    /// and tools; the connection sends [`Outbox::pieces`]).
    pub fn messages(&self) -> impl Iterator<Item = Cow<'_, [u8]>> {
        self.pieces().map(|pieces| {
            if pieces.len() == 1 {
                match pieces.into_iter().next() {
                    Some(Piece::Written(bytes)) => return Cow::Borrowed(bytes),
                    Some(Piece::Shared(frame)) => return Cow::Borrowed(frame.as_bytes()),
                    None => return Cow::Borrowed(&[][..]),
                }
            }
            Cow::Owned(
                pieces
                    .iter()
                    .flat_map(|p| p.as_bytes().iter().copied())
                    .collect(),
            )
        })
    }

    /// Each message as its pieces, in order, so shared frames can be sent (and, when the socket
    /// does not take them at once, kept) by reference.
    pub fn pieces(&self) -> impl Iterator<Item = SmallVec<[Piece<'_>; 3]>> {
        let text = |(start, end): (usize, usize)| {
            Piece::Written(self.text.as_bytes().get(start..end).unwrap_or_default())
        };
        self.messages.iter().map(move |message| match message {
            Message::Written { start, end } => smallvec::smallvec![text((*start, *end))],
            Message::Shared(frame) => smallvec::smallvec![Piece::Shared(frame)],
            Message::Wrapped {
                before,
                frame,
                after,
            } => smallvec::smallvec![text(*before), Piece::Shared(frame), text(*after)],
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
        if self.messages.capacity() > KEEP_MESSAGES {
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
        outbox.push_wrapped(|out| out.push('<'), Frame::from("mid"), |out| out.push('>'));
        let all: Vec<Cow<'_, [u8]>> = outbox.messages().collect();
        assert_eq!(all, [&b"one"[..], b"shared", b"three", b"<mid>"]);
        assert_eq!(outbox.len_bytes(), 19);
        outbox.clear();
        assert!(outbox.is_empty());
        assert!(outbox.text.capacity() >= 8, "small buffers are kept");
        outbox.push_with(|out| out.push_str(&"x".repeat(KEEP_CAPACITY + 1)));
        outbox.clear();
        assert_eq!(outbox.text.capacity(), 0, "large buffers are given back");
    }
}
