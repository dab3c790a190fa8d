//! Writes text messages for the transport, past tungstenite's output buffer.
//!
//! Tungstenite frames and buffers what it writes; our data frames (room frames, replies,
//! snapshots) skip that: their headers are formatted here into a few stack bytes and go out
//! with the payload slices in one vectored write through [`Transport`], so a frame built once for
//! a room is never copied per client and no buffer of the largest message stays behind.
//! Tungstenite keeps its own frames (pongs, pings, the close), which the transport orders
//! around ours.

use std::io::{self, Read, Write};

use smallvec::SmallVec;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::WebSocket;

use super::transport::{HalfClose, Part, Transport};

/// Sends text messages past tungstenite's output buffer: their headers and payloads go out in
/// one vectored write, so a frame built once for a room is never copied per client and no large
/// buffer is left behind. Anything tungstenite has queued (a pong) goes first.
///
/// When earlier output cannot be written, `must_send` decides: messages that must not be lost
/// (replies) are queued behind it; fan-out frames are refused with `Ok(false)`, and the client
/// is offered the then-latest values later. `Ok(true)`: the messages are sent, or partly sent
/// with the rest queued to go out before anything else.
pub(super) fn send_messages<S: Read + Write + HalfClose>(
    ws: &mut WebSocket<Transport<S>>,
    messages: &[OutMessage<'_>],
    must_send: bool,
) -> io::Result<bool> {
    let blocked = match ws.flush() {
        Ok(()) => false,
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(WsError::Io(e)) => return Err(e),
        Err(_) => return Err(io::ErrorKind::BrokenPipe.into()),
    };
    if blocked && !must_send {
        return Ok(false);
    }
    let mut headers: SmallVec<[[u8; MAX_HEADER]; 4]> = SmallVec::with_capacity(messages.len());
    let mut lengths: SmallVec<[usize; 4]> = SmallVec::with_capacity(messages.len());
    for message in messages {
        let mut header = [0u8; MAX_HEADER];
        let length = message.iter().map(|part| part.as_slice().len()).sum();
        lengths.push(text_header(length, &mut header)?);
        headers.push(header);
    }
    let mut parts: SmallVec<[Part<'_>; 8]> = SmallVec::with_capacity(2 * messages.len());
    for ((header, length), message) in headers.iter().zip(&lengths).zip(messages) {
        parts.push(Part::Borrowed(header.get(..*length).unwrap_or_default()));
        parts.extend(message.iter().cloned());
    }
    let transport = ws.get_mut();
    if blocked {
        transport.queue_parts(&parts);
        return Ok(true);
    }
    match transport.send_parts(&parts) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

/// One text message to send, in pieces (a reply around a shared rendering, say).
pub(super) type OutMessage<'a> = SmallVec<[Part<'a>; 3]>;

/// Longest header of an unmasked frame.
const MAX_HEADER: usize = 14;

/// Writes the header of a final, unmasked text frame of `length` bytes; returns its size.
fn text_header(length: usize, out: &mut [u8; MAX_HEADER]) -> io::Result<usize> {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(OpData::Text),
        ..FrameHeader::default()
    };
    let mut cursor = io::Cursor::new(&mut out[..]);
    header
        .format(length as u64, &mut cursor)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok(cursor.position() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_pipe::{Pipe, Wire};
    use smallvec::smallvec;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tungstenite::protocol::Role;

    fn websocket(room: usize) -> (WebSocket<Transport<Pipe>>, Rc<RefCell<Wire>>) {
        let (pipe, wire) = Pipe::with_room(room);
        let transport = Transport::new(pipe);
        let ws = WebSocket::from_raw_socket(transport, Role::Server, None);
        (ws, wire)
    }

    #[test]
    fn headers_take_the_shortest_form_for_each_length() {
        let mut header = [0u8; MAX_HEADER];
        for (length, expected) in [
            (0, &[0x81, 0][..]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65_535, &[0x81, 126, 0xff, 0xff]),
            (65_536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let size = text_header(length, &mut header).expect("header");
            assert_eq!(&header[..size], expected, "length {length}");
        }
    }

    #[test]
    fn messages_go_out_framed_in_order_with_their_parts_joined() {
        let (mut ws, wire) = websocket(1000);
        let shared = bytes::Bytes::from_static(b"shared");
        let messages: [OutMessage<'_>; 2] = [
            smallvec![Part::Borrowed(b"a "), Part::Shared(shared)],
            smallvec![Part::Borrowed(b"b")],
        ];
        assert!(send_messages(&mut ws, &messages, false).expect("sent"));
        assert_eq!(wire.borrow().taken, b"\x81\x08a shared\x81\x01b");
    }

    #[test]
    fn behind_a_blocked_write_frames_are_refused_and_replies_queued() {
        let (mut ws, wire) = websocket(1);
        let frame: [OutMessage<'_>; 1] = [smallvec![Part::Borrowed(b"frame")]];
        // The first send blocks after one byte; its rest stays queued.
        assert!(send_messages(&mut ws, &frame, false).expect("partly sent"));
        assert!(ws.get_ref().is_blocked());
        assert!(
            !send_messages(&mut ws, &frame, false).expect("refused"),
            "a fan-out frame is refused while the client is behind"
        );
        let reply: [OutMessage<'_>; 1] = [smallvec![Part::Borrowed(b"reply")]];
        assert!(send_messages(&mut ws, &reply, true).expect("queued"));
        wire.borrow_mut().room = usize::MAX;
        ws.get_mut().flush_prefix().expect("flush");
        assert_eq!(wire.borrow().taken, b"\x81\x05frame\x81\x05reply");
    }
}
