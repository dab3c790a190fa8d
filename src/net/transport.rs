//! The byte stream under one connection, with the bookkeeping the event loop needs.
//!
//! [`Transport`] wraps a socket (or, in tests and fuzzing, any `Read + Write`) and:
//! - remembers that a short read drained the kernel buffer, so the next read returns
//!   `WouldBlock` without a syscall (edge-triggered readiness will announce new data);
//! - counts bytes read, for the per-connection byte rate limit;
//! - writes pending bytes (the HTTP `101` response, or the unsent rest of a data frame)
//!   before anything tungstenite writes; the unsent rest of a shared frame (a room snapshot)
//!   stays a reference to that frame plus an offset, never a private copy;
//! - sends whole data frames itself with one vectored write of header and shared payload, so
//!   fan-out copies nothing and no large buffer stays behind once a frame is out;
//! - remembers whether the last write hit `WouldBlock`, which is how the loop knows a client is
//!   behind and should not be handed more frames until it drains;
//! - draws its writes from the loop's per-turn budget ([`super::write_budget`]): a bulk write
//!   the budget cuts short keeps its rest pending, counts as behind, and continues next turn.
//!
//! The stream is a [`super::socket::Socket`] (plain or TLS); TLS holds output of its own,
//! which `flush` writes and [`HalfClose::holds_data`] reports.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

use bytes::{Buf, Bytes};

use super::frame_boundary::FrameBoundary;
use super::write_budget::WriteBudget;
use smallvec::SmallVec;
use tungstenite::protocol::frame::FrameHeader;

#[derive(Debug)]
pub struct Transport<S> {
    stream: S,
    /// The last read returned less than asked: the kernel buffer is empty until the next
    /// readable event.
    drained: bool,
    /// The last write could not finish: the peer is behind.
    blocked: bool,
    /// The last write was cut by the loop's write budget, not refused by the peer.
    cut: bool,
    /// Bytes of the frame tungstenite was writing when the socket stopped taking them: they go
    /// out before anything of ours, or a frame of ours would land inside it.
    frame_rest: usize,
    bytes_read: u64,
    bytes_written: u64,
    /// Bytes to write before anything else, in order. Small parts are copied into owned
    /// chunks; shared frames are kept as (frame, offset) through `Bytes` slices.
    pending: VecDeque<Bytes>,
    pending_len: usize,
    /// Frame boundaries of the WebSocket input, once the upgrade is done.
    frames: Option<FrameBoundary>,
    /// The loop's per-turn write budget; `None` (no limit) in tests.
    budget: Option<WriteBudget>,
}

/// What the transport needs from a stream beyond `Read + Write`; in-memory test streams keep
/// the defaults.
pub trait HalfClose {
    /// Ends our direction of the stream (after a TLS close_notify, for TLS).
    fn shutdown_write(&mut self) {}

    /// The stream itself holds something for the loop to do (encrypted output not yet
    /// written, an end of stream not yet reported), so an empty socket buffer is no reason
    /// to skip a read.
    fn holds_data(&self) -> bool {
        false
    }

    /// Bytes the stream read off the wire since the last call, when that differs from what
    /// its reads returned (TLS: records, handshake messages, padding); `None`: the same.
    fn take_wire_bytes_read(&mut self) -> Option<u64> {
        None
    }
}

/// One piece of already-framed output.
#[derive(Clone, Debug)]
pub enum Part<'a> {
    /// Copied if the socket does not take it at once (headers, small replies).
    Borrowed(&'a [u8]),
    /// Kept by reference if the socket does not take it at once (room frames, snapshots).
    Shared(Bytes),
}

impl Part<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Part::Borrowed(bytes) => bytes,
            Part::Shared(bytes) => bytes,
        }
    }
}

impl<'a> From<&'a [u8]> for Part<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Part::Borrowed(bytes)
    }
}

impl<S> Transport<S> {
    pub fn new(stream: S) -> Self {
        Transport {
            stream,
            drained: false,
            blocked: false,
            cut: false,
            frame_rest: 0,
            bytes_read: 0,
            bytes_written: 0,
            pending: VecDeque::new(),
            pending_len: 0,
            frames: None,
            budget: None,
        }
    }

    /// Draws every write from `budget` from now on.
    pub fn set_budget(&mut self, budget: WriteBudget) {
        self.budget = Some(budget);
    }

    /// How many of `offered` bytes the turn's budget lets this transport write now.
    fn allowed(&self, offered: usize) -> usize {
        self.budget
            .as_ref()
            .map_or(offered, |budget| budget.allow(offered))
    }

    fn spend(&mut self, written: usize) {
        self.bytes_written += written as u64;
        if let Some(budget) = &self.budget {
            budget.spend(written);
        }
    }

    /// The budget cut a write short: the rest waits (counting as behind) for the next turn.
    fn defer(&mut self) -> io::Error {
        if let Some(budget) = &self.budget {
            budget.defer();
        }
        self.blocked = true;
        self.cut = true;
        io::ErrorKind::WouldBlock.into()
    }

    /// Whether the output waiting now was held back by the loop's write budget rather than by
    /// the peer: the client is not behind, the server is.
    pub fn is_cut(&self) -> bool {
        self.blocked && self.cut
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// A readable event arrived: there may be data again.
    pub fn mark_readable(&mut self) {
        self.drained = false;
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Bytes read off the wire since the last call: for TLS every record byte, so padding,
    /// empty records and post-handshake messages cost the byte rate limit like plaintext.
    pub fn take_bytes_read(&mut self) -> u64
    where
        S: HalfClose,
    {
        let returned = std::mem::take(&mut self.bytes_read);
        self.stream.take_wire_bytes_read().unwrap_or(returned)
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// From now on, follows WebSocket frame boundaries in what is read; `already` is input read
    /// before (after the request head) and handed to the WebSocket directly.
    pub fn track_frames(&mut self, already: &[u8]) {
        let mut frames = FrameBoundary::default();
        frames.feed(already);
        self.frames = Some(frames);
    }

    /// Everything read so far ends with a whole WebSocket message (see `track_frames`).
    pub fn at_message_boundary(&self) -> bool {
        self.frames
            .as_ref()
            .is_some_and(FrameBoundary::at_message_boundary)
    }

    /// Ends our direction of the stream once everything is written.
    pub fn shutdown_write(&mut self)
    where
        S: HalfClose,
    {
        self.stream.shutdown_write();
    }

    /// Queues bytes to go out before anything else written through this transport.
    pub fn set_prefix(&mut self, bytes: Vec<u8>) {
        self.pending.clear();
        self.pending_len = 0;
        self.push_pending(Bytes::from(bytes));
    }

    fn push_pending(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending_len += bytes.len();
            self.pending.push_back(bytes);
        }
    }

    /// Keeps `parts[index][offset..]` and every later part, to go out first later.
    fn keep_rest(&mut self, parts: &[Part<'_>], index: usize, offset: usize) {
        let mut copied: Vec<u8> = Vec::new();
        for (i, part) in parts.iter().enumerate().skip(index) {
            let from = if i == index { offset } else { 0 };
            match part {
                Part::Borrowed(bytes) => {
                    copied.extend_from_slice(bytes.get(from..).unwrap_or_default())
                }
                Part::Shared(bytes) => {
                    if !copied.is_empty() {
                        self.push_pending(Bytes::from(std::mem::take(&mut copied)));
                    }
                    if from < bytes.len() {
                        self.push_pending(bytes.slice(from..));
                    }
                }
            }
        }
        if !copied.is_empty() {
            self.push_pending(Bytes::from(copied));
        }
    }
}

impl<S: Write> Transport<S> {
    fn write_prefix(&mut self) -> io::Result<()> {
        self.cut = false;
        while !self.pending.is_empty() {
            let allowed = self.allowed(self.pending_len);
            if allowed == 0 {
                return Err(self.defer());
            }
            let written = {
                let mut room = allowed;
                let slices: SmallVec<[IoSlice<'_>; 16]> = self
                    .pending
                    .iter()
                    .take(MAX_SLICES)
                    .map_while(|chunk| {
                        let take = chunk.len().min(room);
                        room -= take;
                        (take > 0).then(|| IoSlice::new(chunk.get(..take).unwrap_or_default()))
                    })
                    .collect();
                self.stream.write_vectored(&slices)?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.spend(written);
            self.pending_len -= written.min(self.pending_len);
            let mut left = written;
            while left > 0 {
                let Some(front) = self.pending.front_mut() else {
                    break;
                };
                if left < front.len() {
                    front.advance(left);
                    break;
                }
                left -= front.len();
                self.pending.pop_front();
            }
        }
        // Give the memory back: an idle connection should hold no output buffer.
        if self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        Ok(())
    }

    /// Writes the pending prefix; used when no WebSocket output follows it.
    pub fn flush_prefix(&mut self) -> io::Result<()> {
        let result = self.write_prefix().and_then(|()| self.stream.flush());
        self.note(&result);
        result
    }

    fn note<T>(&mut self, result: &io::Result<T>) {
        self.blocked = matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    }
}

/// Most slices handed to one `writev` (Linux allows 1024).
const MAX_SLICES: usize = 512;

impl<S: Write> Transport<S> {
    /// Sends one already-framed message: `header` then `payload`.
    pub fn send_frame(&mut self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        self.send_parts(&[header.into(), payload.into()])
    }

    /// Sends already-framed bytes made of `parts`, in vectored writes when nothing is pending,
    /// so shared payloads are never copied into a buffer of ours. What the socket does not take
    /// is kept and goes out first later; the buffer holding it is freed once it is written.
    pub fn send_parts(&mut self, parts: &[Part<'_>]) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.queue_parts(parts);
            return self.flush_prefix();
        }
        self.cut = false;
        // (part index, offset in it) of the first byte not yet written, and how many are left.
        let (mut index, mut offset) = (0, 0);
        let mut unsent: usize = parts.iter().map(|part| part.as_slice().len()).sum();
        loop {
            while parts
                .get(index)
                .is_some_and(|part| offset >= part.as_slice().len())
            {
                index += 1;
                offset = 0;
            }
            if index >= parts.len() {
                return self.flush_stream();
            }
            // Cut to the turn's budget; when it is spent, the rest waits for the next turn.
            let mut room = self.allowed(unsent);
            if room == 0 {
                self.keep_rest(parts, index, offset);
                return Err(self.defer());
            }
            let slices: SmallVec<[IoSlice<'_>; 16]> = parts
                .iter()
                .skip(index)
                .take(MAX_SLICES)
                .enumerate()
                .map_while(|(i, part)| {
                    let from = if i == 0 { offset } else { 0 };
                    let bytes = part.as_slice().get(from..).unwrap_or_default();
                    let take = bytes.len().min(room);
                    room -= take;
                    (take > 0 || bytes.is_empty())
                        .then(|| IoSlice::new(bytes.get(..take).unwrap_or_default()))
                })
                .collect();
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            let written = match self.stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            self.spend(written);
            unsent = unsent.saturating_sub(written);
            let mut left = written;
            while let Some(part) = parts.get(index) {
                let rest = part.as_slice().len().saturating_sub(offset);
                if left < rest {
                    offset += left;
                    break;
                }
                left -= rest;
                index += 1;
                offset = 0;
            }
            // A short write means the socket is full: trying again would only say so.
            if written < offered {
                break;
            }
        }
        if index >= parts.len() {
            return self.flush_stream();
        }
        self.keep_rest(parts, index, offset);
        self.blocked = true;
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Everything was handed to the stream: a TLS stream may still hold records the socket did
    /// not take, which count as being behind.
    fn flush_stream(&mut self) -> io::Result<()> {
        let result = self.stream.flush();
        self.note(&result);
        result
    }

    /// Appends framed bytes behind whatever is pending, to go out when the socket takes them.
    pub fn queue_parts(&mut self, parts: &[Part<'_>]) {
        self.keep_rest(parts, 0, 0);
    }

    /// Bytes waiting for the socket.
    pub fn pending_bytes(&self) -> usize {
        self.pending_len
    }

    /// The chunks of output waiting for the socket, in order: private copies, and references
    /// into shared frames (to find which renderings a blocked connection keeps alive).
    pub fn unsent(&self) -> impl Iterator<Item = &Bytes> {
        self.pending.iter()
    }

    /// Bytes waiting for the socket that are private to this connection (not shared frames).
    #[cfg(test)]
    fn pending_chunks(&self) -> usize {
        self.pending.len()
    }
}

impl<S: Read + HalfClose> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained && !self.stream.holds_data() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.stream.read(buf) {
            Ok(n) => {
                if n < buf.len() {
                    self.drained = true;
                }
                if let Some(frames) = &mut self.frames {
                    frames.feed(buf.get(..n).unwrap_or_default());
                }
                self.bytes_read += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                Err(e)
            }
        }
    }
}

impl<S: Write> Write for Transport<S> {
    /// Tungstenite's own output (pongs, pings, the close frame: whole frames). Our pending
    /// bytes go first, except while tungstenite is in the middle of a frame: the rest of that
    /// frame goes next, alone, then ours, then tungstenite's later frames.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = if self.frame_rest > 0 {
            let rest = buf.get(..self.frame_rest).unwrap_or(buf);
            self.stream.write(rest)
        } else {
            self.write_prefix().and_then(|()| self.stream.write(buf))
        };
        if let Ok(n) = result {
            self.bytes_written += n as u64;
            self.frame_rest = match self.frame_rest {
                _ if n >= buf.len() => 0,
                0 => rest_of_frame_at(buf, n),
                rest => rest.saturating_sub(n),
            };
        }
        self.note(&result);
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.write_prefix().and_then(|()| self.stream.flush());
        self.note(&result);
        result
    }
}

/// How many bytes of the frame that `frames` (whole WebSocket frames, from a frame's start)
/// is cut in after `written` bytes are still to come; 0 when the cut falls between frames.
fn rest_of_frame_at(frames: &[u8], written: usize) -> usize {
    let mut start = 0usize;
    while start < written {
        let Some(end) = frames
            .get(start..)
            .and_then(frame_length)
            .map(|n| start + n)
        else {
            // Not a frame we can read: keep all the rest together.
            return frames.len().saturating_sub(written);
        };
        if end > written {
            return end - written;
        }
        start = end;
    }
    0
}

/// The length, header included, of the frame `bytes` starts with.
fn frame_length(bytes: &[u8]) -> Option<usize> {
    let mut cursor = io::Cursor::new(bytes);
    let (_, payload) = FrameHeader::parse(&mut cursor).ok()??;
    usize::try_from(cursor.position())
        .ok()?
        .checked_add(usize::try_from(payload).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_pipe::Pipe;

    #[test]
    fn a_partly_sent_frame_is_finished_before_anything_else() {
        let (pipe, wire) = Pipe::with_room(3);
        let mut transport = Transport::new(pipe);
        let sent = transport.send_frame(b"HH", b"payload");
        assert_eq!(sent.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(transport.is_blocked());
        // Later output (a pong from tungstenite, say) must wait for the frame's rest.
        wire.borrow_mut().room = 100;
        transport.write_all(b"|next").expect("write");
        assert_eq!(wire.borrow().taken, b"HHpayload|next");
        assert!(!transport.is_blocked());
        assert_eq!(
            transport.pending.capacity(),
            0,
            "the pending buffer is released"
        );
    }

    #[test]
    fn a_partly_sent_pong_is_finished_before_a_frame_queued_meanwhile() {
        // Found by fuzz target `frames` (fuzz/known-crashes): tungstenite wrote 5 bytes of a
        // pong, a reply was queued behind it, and the next write put the reply inside the pong.
        let pong = [0x8a, 4, b'p', b'o', b'n', b'g'];
        let close = [0x88, 2, 3, 0xe8];
        let tungstenite_holds = [&pong[..], &close[..]].concat();
        let (pipe, wire) = Pipe::with_room(3);
        let mut transport = Transport::new(pipe);
        assert_eq!(transport.write(&tungstenite_holds).expect("part"), 3);
        transport.queue_parts(&[Part::Borrowed(b"HHreply")]);
        wire.borrow_mut().room = 100;
        // Tungstenite goes on with what it holds: the pong's rest alone, then (after the
        // reply, which was queued before) the close frame.
        let mut left = &tungstenite_holds[3..];
        while !left.is_empty() {
            let n = transport.write(left).expect("rest");
            left = &left[n..];
        }
        transport.flush().expect("flush");
        assert_eq!(
            wire.borrow().taken,
            [&pong[..], b"HHreply", &close[..]].concat()
        );
    }

    #[test]
    fn many_parts_go_out_whole_or_keep_their_rest_in_order() {
        let parts: Vec<Vec<u8>> = (0..1500u32)
            .map(|i| format!("<{i}>").into_bytes())
            .collect();
        let slices: Vec<Part<'_>> = parts.iter().map(|p| p.as_slice().into()).collect();
        let all: Vec<u8> = parts.concat();
        for room in [0, 1, 7, 3000, all.len() - 1, all.len(), all.len() + 5] {
            let (pipe, wire) = Pipe::with_room(room);
            let mut transport = Transport::new(pipe);
            let sent = transport.send_parts(&slices);
            assert_eq!(sent.is_ok(), room >= all.len(), "room {room}");
            wire.borrow_mut().room = usize::MAX / 2;
            transport.flush_prefix().expect("flush");
            assert_eq!(wire.borrow().taken, all, "room {room}");
        }
    }

    #[test]
    fn frames_queue_behind_pending_bytes() {
        let (pipe, wire) = Pipe::with_room(0);
        let mut transport = Transport::new(pipe);
        transport.set_prefix(b"101 ".to_vec());
        assert!(transport.send_frame(b"H", b"x").is_err());
        wire.borrow_mut().room = 100;
        transport.flush_prefix().expect("flush");
        assert_eq!(wire.borrow().taken, b"101 Hx");
    }

    #[test]
    fn the_unsent_rest_of_a_shared_frame_is_a_reference_not_a_copy() {
        let (pipe, wire) = Pipe::with_room(5);
        let mut transport = Transport::new(pipe);
        let frame = Bytes::from(vec![b'x'; 100_000]);
        let sent = transport.send_parts(&[Part::Borrowed(b"HH"), Part::Shared(frame.clone())]);
        assert!(sent.is_err());
        assert_eq!(transport.pending_bytes(), 100_002 - 5);
        assert_eq!(transport.pending_chunks(), 1);
        let kept = transport.pending.front().expect("kept").as_ptr();
        // SAFETY-free pointer comparison: the kept rest points into the shared frame itself.
        assert_eq!(kept, frame.get(3..).expect("rest").as_ptr());
        wire.borrow_mut().room = usize::MAX / 2;
        transport.flush_prefix().expect("flush");
        assert_eq!(wire.borrow().taken.len(), 100_002);
        assert_eq!(transport.pending_bytes(), 0);
    }
}
