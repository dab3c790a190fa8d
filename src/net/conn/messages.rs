//! The open WebSocket: reading messages into the session, and writing its replies and the
//! rooms' frames.
//!
//! Reads are bounded per turn (`MESSAGES_PER_TURN`, `BYTES_PER_TURN`) and charged to the byte
//! bucket; control frames are handled here and count as messages for the rate limit. Replies
//! are written once per read batch behind anything queued and never dropped; room frames are
//! refused while the client is behind (see `deliver`). After a large message the WebSocket is
//! rebuilt at a message boundary to give its grown read buffer back.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use log::{debug, info};
use smallvec::SmallVec;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::{Conn, LoopContext, Phase, BYTES_PER_TURN};
use crate::dialect::{Framing, Outcome, Piece, Reason};
use crate::engine::Frame;
use crate::net::frame_writer::{send_messages, OutMessage};
use crate::net::transport::{HalfClose, Part};

/// Most messages read from one connection in one turn of the loop, so that one busy client
/// cannot keep the loop from every other client and from the tick (bytes: `BYTES_PER_TURN`).
const MESSAGES_PER_TURN: usize = 128;

/// A message above this size grew the WebSocket's read buffer (see `large_input`).
const LARGE_MESSAGE_BYTES: usize = 16 * 1024;

/// Replies gathered while reading are written once they reach this size, so a client that
/// pipelines requests without reading cannot make one iteration buffer more than this.
const REPLY_BATCH_BYTES: usize = 64 * 1024;

impl<S: Read + Write + HalfClose> Conn<S> {
    pub(super) fn read_websocket(&mut self, ctx: &mut LoopContext<'_>) {
        let outcome = self.read_messages(ctx);
        // Replies of every message read in this iteration leave in one write.
        self.write_outbox();
        if self.large_input && !self.more_input {
            self.shrink_read_buffer(ctx);
        }
        if let Outcome::Close(reason) = outcome {
            self.close(reason, ctx);
        }
    }

    /// Notes a handled message's outcome: a join ends the handshake deadline.
    pub(super) fn after_message(&mut self, outcome: Outcome, ctx: &mut LoopContext<'_>) -> Outcome {
        if outcome == Outcome::Joined {
            self.deadline = None;
            self.joined = true;
            info!(
                "{} joined ({})",
                self.label(ctx.engine),
                self.dialect_name()
            );
        }
        outcome
    }

    /// Reads and handles messages until the socket has no more, the client must wait for its
    /// replies to be read, or the connection must close.
    fn read_messages(&mut self, ctx: &mut LoopContext<'_>) -> Outcome {
        let (mut messages, mut bytes_read) = (0, 0);
        loop {
            let Phase::Open { ws, session } = &mut self.phase else {
                return Outcome::Continue;
            };
            if messages >= MESSAGES_PER_TURN || bytes_read >= BYTES_PER_TURN {
                self.more_input = true;
                return Outcome::Continue;
            }
            if session.outbox().len_bytes() > REPLY_BATCH_BYTES {
                self.write_outbox();
                continue;
            }
            if session.is_waiting() {
                // Its messages wait, in order, for a room being loaded (see `resume`).
                return Outcome::Continue;
            }
            if session.answers_requests() && ws.get_ref().is_blocked() {
                // Backpressure: the client is not reading its replies, so its requests wait in
                // the kernel until a writable event drains the replies.
                return Outcome::Continue;
            }
            let message = ws.read();
            let bytes = ws.get_mut().take_bytes_read();
            bytes_read += bytes;
            messages += 1;
            if !self.bytes.take(bytes as f64, ctx.now) {
                return Outcome::Close(Reason::TooManyBytes);
            }
            if let Ok(Message::Text(data)) = &message {
                self.large_input |= data.len() > LARGE_MESSAGE_BYTES;
            } else if let Ok(Message::Binary(data)) = &message {
                self.large_input |= data.len() > LARGE_MESSAGE_BYTES;
            }
            let next = match message {
                Ok(Message::Text(text)) => session.on_text(text.as_bytes(), &mut ctx.session()),
                Ok(Message::Pong(_)) => {
                    self.awaiting_pong = false;
                    // Unsolicited pongs are messages like any other for the rate limit.
                    if session.take_message_token(ctx.now) {
                        Outcome::Continue
                    } else {
                        Outcome::Close(Reason::TooManyMessages)
                    }
                }
                // Binary frames are ignored; every frame (pings too, whose pongs we owe)
                // still counts against the rate limit.
                Ok(Message::Binary(_) | Message::Ping(_) | Message::Frame(_)) => {
                    if session.take_message_token(ctx.now) {
                        Outcome::Continue
                    } else {
                        Outcome::Close(Reason::TooManyMessages)
                    }
                }
                Ok(Message::Close(frame)) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    info!(
                        "{} client closed: {code} ({})",
                        self.label(ctx.engine),
                        client_close_meaning(code)
                    );
                    self.enter_closing(false, ctx);
                    return Outcome::Continue;
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Outcome::Continue
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(WsError::Capacity(_)) => Outcome::Close(Reason::MessageTooBig),
                Err(WsError::Utf8(_)) => Outcome::Close(Reason::InvalidUtf8),
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    self.finish("client disconnected", ctx);
                    return Outcome::Continue;
                }
                Err(WsError::Protocol(error)) => {
                    debug!("{} protocol error: {error}", self.label(ctx.engine));
                    Outcome::Close(Reason::WebSocketProtocol)
                }
                Err(error) => {
                    let reason = format!("connection lost: {error}");
                    self.finish(&reason, ctx);
                    return Outcome::Continue;
                }
            };
            match self.after_message(next, ctx) {
                Outcome::Continue | Outcome::Joined | Outcome::Wait => {}
                close @ Outcome::Close(_) => return close,
            }
        }
    }

    /// Gives back a read buffer grown by a large message: tungstenite cannot shrink it, so the
    /// WebSocket is rebuilt around the same transport. Only at a point where tungstenite holds
    /// no unread input (the last read said `WouldBlock` and the bytes read end with a whole
    /// message) and nothing to write (no pending pong or close).
    fn shrink_read_buffer(&mut self, ctx: &mut LoopContext<'_>) {
        let Phase::Open { ws, .. } = &mut self.phase else {
            return;
        };
        if !ws.get_ref().at_message_boundary() || ws.get_ref().is_blocked() {
            return;
        }
        // Twice: a pong that did not fit the control buffer is only buffered by the second.
        if ws.flush().and_then(|()| ws.flush()).is_err() {
            return;
        }
        let Phase::Open { ws, session } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let transport = ws.into_inner();
        let ws = WebSocket::from_raw_socket(transport, Role::Server, Some(ctx.settings.websocket));
        self.phase = Phase::Open {
            ws: Box::new(ws),
            session,
        };
        self.large_input = false;
    }

    /// Writes what the session has to say, behind anything already queued; nothing in the
    /// outbox is dropped (it holds replies and snapshots, not values a later flush repeats).
    pub(super) fn write_outbox(&mut self) {
        let Phase::Open { ws, session } = &mut self.phase else {
            return;
        };
        let outbox = session.outbox();
        if outbox.is_empty() {
            return;
        }
        let mut shared = false;
        let result = {
            let messages: SmallVec<[OutMessage<'_>; 4]> = outbox
                .pieces()
                .map(|pieces| {
                    pieces
                        .into_iter()
                        .map(|piece| match piece {
                            Piece::Written(bytes) => Part::Borrowed(bytes),
                            Piece::Shared(frame) => {
                                shared = true;
                                Part::Shared(frame.clone().into())
                            }
                        })
                        .collect()
                })
                .collect();
            send_messages(ws, &messages, true)
        };
        self.reply_blocked |= shared && ws.get_ref().is_blocked();
        outbox.clear();
        if result.is_err() {
            self.broken = true;
        }
    }

    fn dialect_name(&self) -> &'static str {
        match &self.phase {
            Phase::Open { session, .. } => session.dialect().map_or("-", |d| d.name()),
            _ => "-",
        }
    }

    /// Writes queued WebSocket output; notes when the client stops keeping up.
    pub(super) fn flush(&mut self, now: Instant) {
        let Phase::Open { ws, .. } = &mut self.phase else {
            return;
        };
        match ws.flush() {
            Ok(()) => self.stalled_since = None,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stalled_since.get_or_insert(now);
            }
            Err(error) => {
                debug!("write failed: {error}");
                self.broken = true;
            }
        }
    }

    pub(super) fn offer(&mut self, frame: &Frame, now: Instant) -> bool {
        let Phase::Open { ws, session } = &mut self.phase else {
            return false;
        };
        if ws.get_ref().is_blocked() {
            self.refused_frames = true;
            return false;
        }
        let shared = bytes::Bytes::from(frame.clone());
        let sent = match session.framing() {
            Framing::Joined => {
                send_messages(ws, &[smallvec::smallvec![Part::Shared(shared)]], false)
            }
            Framing::MessagePerLine => {
                let lines: SmallVec<[OutMessage<'_>; 8]> = shared
                    .split(|&b| b == b'\n')
                    .map(|line| smallvec::smallvec![Part::Shared(shared.slice_ref(line))])
                    .collect();
                send_messages(ws, &lines, false)
            }
        };
        match sent {
            Ok(true) => {
                if ws.get_ref().is_blocked() {
                    self.stalled_since.get_or_insert(now);
                }
                true
            }
            Ok(false) => {
                self.stalled_since.get_or_insert(now);
                self.refused_frames = true;
                false
            }
            Err(_) => {
                self.broken = true;
                false
            }
        }
    }

    pub(super) fn ping(&mut self, now: Instant, interval: Duration) {
        self.next_ping = now + interval;
        if let Phase::Open { ws, .. } = &mut self.phase {
            if ws.get_ref().is_blocked() {
                // A client that is not reading is handled by the write-stall timeout.
                return;
            }
            let _ = ws.write(Message::Ping(Default::default()));
            self.awaiting_pong = true;
        }
        self.flush(now);
    }
}

/// Which of the client's close codes mean something, for the log.
fn client_close_meaning(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1005 => "no status",
        4100 => "username change",
        _ => "unknown code",
    }
}
