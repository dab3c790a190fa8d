//! Follows WebSocket frame boundaries in the bytes a connection reads, without buffering them.
//!
//! tungstenite cannot shrink its read buffer, and cannot hand back what it has buffered. The
//! connection rebuilds the WebSocket to free a buffer grown by a large message, which is only
//! safe when tungstenite holds no unread bytes and no unfinished fragmented message: this
//! tracker says when the bytes read so far end exactly at such a point. It reads only headers
//! (at most 14 bytes each) and skips payloads by count.

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

#[derive(Debug, Default)]
pub struct FrameBoundary {
    header: [u8; MAX_HEADER],
    /// Header bytes of the current frame seen so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A data frame without FIN was seen: a fragmented message is unfinished.
    fragmented: bool,
}

impl FrameBoundary {
    /// Accounts for bytes read from the client, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = (self.remaining.min(bytes.len() as u64)) as usize;
                self.remaining -= skip as u64;
                bytes = bytes.get(skip..).unwrap_or_default();
                continue;
            }
            let Some((&byte, rest)) = bytes.split_first() else {
                break;
            };
            bytes = rest;
            if let Some(slot) = self.header.get_mut(self.have) {
                *slot = byte;
            }
            self.have += 1;
            if let Some(length) = self.complete_header() {
                let first = self.header[0];
                let opcode = first & 0x0f;
                if opcode < 8 {
                    // Data or continuation frame: FIN decides whether the message is finished.
                    self.fragmented = first & 0x80 == 0;
                }
                self.remaining = length;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is complete.
    fn complete_header(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let second = self.header[1];
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        let (extended, length) = match second & 0x7f {
            126 => (2, None),
            127 => (8, None),
            short => (0, Some(u64::from(short))),
        };
        if self.have < 2 + extended + mask {
            return None;
        }
        let length = length.unwrap_or_else(|| {
            self.header
                .get(2..2 + extended)
                .unwrap_or_default()
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        });
        Some(length)
    }

    /// Everything fed so far forms whole frames and whole messages.
    pub fn at_message_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0 && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload_len: usize) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload_len {
            0..=125 => out.push(0x80 | payload_len as u8),
            126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(b'x', payload_len));
        out
    }

    #[test]
    fn boundaries_are_found_whatever_the_split_of_the_reads() {
        let mut stream = frame(true, 1, 5);
        stream.extend(frame(false, 1, 300));
        stream.extend(frame(true, 9, 4));
        let fragmented_until = stream.len();
        stream.extend(frame(true, 0, 70_000));
        for chunk in [1, 2, 3, 13, 1000, usize::MAX] {
            let mut tracker = FrameBoundary::default();
            let mut fed = 0;
            for piece in stream.chunks(chunk.min(stream.len())) {
                tracker.feed(piece);
                fed += piece.len();
                let whole = fed == 11 || fed == stream.len();
                if fed <= 11 || fed >= fragmented_until {
                    assert_eq!(
                        tracker.at_message_boundary(),
                        whole,
                        "chunk {chunk} at {fed}"
                    );
                } else {
                    assert!(!tracker.at_message_boundary(), "chunk {chunk} at {fed}");
                }
            }
        }
    }
}
