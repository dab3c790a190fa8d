//! One client connection's state machine: TCP connect, HTTP upgrade, then open until closed.
//!
//! Once open, writing goes through a tungstenite `WebSocket` (client framing and masking, the
//! write buffer, pong and close frames), while reading bypasses it: bytes are read into the
//! driver's shared buffer and streamed through a [`FrameReader`]. Tungstenite's own reader
//! would validate every text frame as UTF-8 and zero-fill its buffer on every read, which
//! costs a third of the generator's time at ten million sets per second.
//!
//! The connection never touches the slab, the poll or the schedule; every call returns what
//! happened and the driver applies it.

use std::io::{ErrorKind, Read};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Bytes, Message, Utf8Bytes, WebSocket};

use crate::config::Target;
use crate::frames::{Control, FrameReader, NO_STATUS};
use crate::recv::Receiver;
use crate::tls::Stream;
use crate::upgrade::{Progress, Upgrade};

/// Bytes one connection may read per turn before the others get their go.
const READ_BUDGET: usize = 512 * 1024;

enum Phase {
    Connecting(Stream),
    Upgrading(Stream, Box<Upgrade>),
    Open(Box<Open>),
    /// Only while moving between phases.
    Empty,
}

struct Open {
    ws: WebSocket<Stream>,
    reader: FrameReader,
}

/// Why a connection is gone.
#[derive(Debug)]
pub enum End {
    /// TCP connect failed or timed out (reason).
    ConnectFailed(String),
    /// The HTTP upgrade failed (HTTP status or error).
    UpgradeFailed(String),
    /// Broken after it was open: I/O or protocol error, or EOF without a close frame.
    Broken(String),
    /// Orderly end: close handshake done, or dropped by us after closing.
    Closed,
}

/// What a call did, for the driver to act on.
#[derive(Debug)]
pub enum Outcome {
    Idle,
    /// The WebSocket is open; the Scratch handshake can be sent.
    Opened,
    /// `flush`: output is queued; `more`: the read budget ran out with data possibly left,
    /// which no new readiness event will announce.
    Progress {
        flush: bool,
        more: bool,
    },
    Ended(End),
}

pub struct Conn {
    pub client: u32,
    phase: Phase,
    /// Whether the upgrade ever completed.
    pub opened: bool,
    /// Already in the driver's list of connections to flush this turn.
    pub flush_queued: bool,
    flags: Flags,
}

#[derive(Default)]
struct Flags {
    /// A flush hit WouldBlock: finish it on the next writable event.
    flush_blocked: bool,
    /// The kernel may hold unread bytes. A read that returns less than asked empties the
    /// socket, and edge-triggered epoll reports later data with a new event, so reading
    /// again before that event would only cost a syscall returning WouldBlock.
    readable: bool,
    /// We sent a close frame.
    closing: bool,
    /// The server sent a close frame.
    peer_closed: bool,
}

/// Flags a read pass produced.
#[derive(Default)]
struct ReadPass {
    reply_queued: bool,
    more: bool,
}

impl Conn {
    pub fn new(client: u32, stream: Stream) -> Self {
        Conn {
            client,
            phase: Phase::Connecting(stream),
            opened: false,
            flush_queued: false,
            flags: Flags {
                readable: true,
                ..Flags::default()
            },
        }
    }

    /// Whether sets may be queued: open, and no close started by either side.
    pub fn can_send(&self) -> bool {
        matches!(self.phase, Phase::Open(_)) && !self.flags.closing && !self.flags.peer_closed
    }

    /// Reacts to a readiness event (or a backlog revisit, which passes `readable`).
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        buf: &mut [u8],
        target: &Target,
        config: WebSocketConfig,
        rx: &mut Receiver,
    ) -> Outcome {
        self.flags.readable |= readable;
        match std::mem::replace(&mut self.phase, Phase::Empty) {
            Phase::Connecting(stream) => self.finish_connect(stream, buf, target, config, rx),
            Phase::Upgrading(stream, upgrade) => self.upgrade(stream, upgrade, buf, config, rx),
            Phase::Open(open) => {
                self.phase = Phase::Open(open);
                self.pump(writable, buf, rx)
            }
            Phase::Empty => Outcome::Ended(End::Broken("internal: empty phase".into())),
        }
    }

    fn finish_connect(
        &mut self,
        stream: Stream,
        buf: &mut [u8],
        target: &Target,
        config: WebSocketConfig,
        rx: &mut Receiver,
    ) -> Outcome {
        match stream.tcp().take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Outcome::Ended(End::ConnectFailed(io_kind(&e))),
        }
        match stream.tcp().peer_addr() {
            Ok(_) => {}
            // Spurious wake-up: the connect is still in progress.
            Err(e) if matches!(e.kind(), ErrorKind::NotConnected | ErrorKind::WouldBlock) => {
                self.phase = Phase::Connecting(stream);
                return Outcome::Idle;
            }
            Err(e) => return Outcome::Ended(End::ConnectFailed(io_kind(&e))),
        }
        // Sets are tiny and latency is the point: never let Nagle hold them back.
        if let Err(e) = stream.tcp().set_nodelay(true) {
            return Outcome::Ended(End::ConnectFailed(io_kind(&e)));
        }
        let upgrade = Box::new(Upgrade::new(&target.host_header, &target.path));
        self.upgrade(stream, upgrade, buf, config, rx)
    }

    fn upgrade(
        &mut self,
        mut stream: Stream,
        mut upgrade: Box<Upgrade>,
        buf: &mut [u8],
        config: WebSocketConfig,
        rx: &mut Receiver,
    ) -> Outcome {
        match upgrade.advance(&mut stream, buf) {
            Ok(Progress::Pending) => {
                self.phase = Phase::Upgrading(stream, upgrade);
                Outcome::Idle
            }
            Ok(Progress::Done(early_bytes)) => {
                let ws = WebSocket::from_raw_socket(stream, Role::Client, Some(config));
                let mut open = Box::new(Open {
                    ws,
                    reader: FrameReader::new(),
                });
                let mut pass = ReadPass::default();
                let fed = feed(&mut open, &mut self.flags, &early_bytes, rx, &mut pass);
                self.phase = Phase::Open(open);
                self.opened = true;
                match fed {
                    Ok(()) => Outcome::Opened,
                    Err(end) => Outcome::Ended(end),
                }
            }
            Err(reason) => Outcome::Ended(End::UpgradeFailed(reason)),
        }
    }

    fn pump(&mut self, writable: bool, buf: &mut [u8], rx: &mut Receiver) -> Outcome {
        let flush_pending = writable && self.flags.flush_blocked;
        let pass = match self.read_available(buf, rx) {
            Ok(pass) => pass,
            Err(end) => return Outcome::Ended(end),
        };
        let flush = flush_pending || pass.reply_queued;
        if flush || pass.more {
            Outcome::Progress {
                flush,
                more: pass.more,
            }
        } else {
            Outcome::Idle
        }
    }

    /// Reads until the socket is empty or the budget is spent.
    fn read_available(&mut self, buf: &mut [u8], rx: &mut Receiver) -> Result<ReadPass, End> {
        let mut pass = ReadPass::default();
        let Phase::Open(open) = &mut self.phase else {
            return Ok(pass);
        };
        let flags = &mut self.flags;
        let mut budget = READ_BUDGET;
        while flags.readable {
            if budget == 0 {
                pass.more = true;
                break;
            }
            let n = match open.ws.get_mut().read(buf) {
                Ok(0) => return Err(end_at_eof(flags)),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    flags.readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Broken(io_kind(&e))),
            };
            if n < buf.len() {
                flags.readable = false;
            }
            budget = budget.saturating_sub(n);
            feed(open, flags, &buf[..n], rx, &mut pass)?;
        }
        Ok(pass)
    }

    /// Queues one text frame. Ok(false): not queued (not open, closing, or the write buffer
    /// is full because the server stopped reading).
    pub fn send(&mut self, text: Utf8Bytes) -> Result<bool, End> {
        if !self.can_send() {
            return Ok(false);
        }
        let Phase::Open(open) = &mut self.phase else {
            return Ok(false);
        };
        match open.ws.write(Message::Text(text)) {
            Err(tungstenite::Error::WriteBufferFull(_)) => Ok(false),
            other => queue_result(other, &mut self.flags.flush_blocked).map(|()| true),
        }
    }

    /// Writes out everything queued. Called at most once per connection per turn.
    pub fn flush(&mut self) -> Result<(), End> {
        let Phase::Open(open) = &mut self.phase else {
            return Ok(());
        };
        self.flags.flush_blocked = false;
        queue_result(open.ws.flush(), &mut self.flags.flush_blocked)
    }

    /// Starts our side of the close handshake. Connections never opened just end.
    pub fn begin_close(&mut self) -> Result<(), End> {
        let Phase::Open(open) = &mut self.phase else {
            return Err(End::Closed);
        };
        if self.flags.closing {
            return Ok(());
        }
        self.flags.closing = true;
        queue_result(open.ws.close(None), &mut self.flags.flush_blocked)
    }
}

fn end_at_eof(flags: &Flags) -> End {
    if flags.closing || flags.peer_closed {
        End::Closed
    } else {
        End::Broken("eof without close frame".into())
    }
}

/// Runs received bytes through the frame reader and answers control frames.
fn feed(
    open: &mut Open,
    flags: &mut Flags,
    mut data: &[u8],
    rx: &mut Receiver,
    pass: &mut ReadPass,
) -> Result<(), End> {
    while !data.is_empty() {
        let (used, control) = open.reader.consume(data, rx).map_err(End::Broken)?;
        data = &data[used..];
        match control {
            // After our close frame nothing else may be sent, pongs included.
            Some(Control::Ping(payload)) if !flags.closing => {
                let pong = Message::Pong(Bytes::copy_from_slice(payload.as_slice()));
                queue_result(open.ws.write(pong), &mut flags.flush_blocked)?;
                pass.reply_queued = true;
            }
            Some(Control::Close(code)) => {
                answer_close(open, flags, code, rx)?;
                pass.reply_queued = true;
            }
            Some(Control::Ping(_) | Control::Pong) | None => {}
        }
    }
    Ok(())
}

fn answer_close(
    open: &mut Open,
    flags: &mut Flags,
    code: u16,
    rx: &mut Receiver,
) -> Result<(), End> {
    flags.peer_closed = true;
    if flags.closing {
        // The server's answer to our close; it will now close the TCP connection.
        return Ok(());
    }
    rx.on_server_close(code);
    // Answer with the same code, except those that must never be sent (RFC 6455 7.4.1).
    let reply = (!matches!(code, NO_STATUS | 1006 | 1015)).then(|| CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(""),
    });
    flags.closing = true;
    queue_result(open.ws.close(reply), &mut flags.flush_blocked)
}

/// Maps a tungstenite write result: WouldBlock means the frame is queued but the socket is
/// full, so the rest must go out on the next writable event.
fn queue_result(result: tungstenite::Result<()>, flush_blocked: &mut bool) -> Result<(), End> {
    match result {
        Ok(()) => Ok(()),
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
            *flush_blocked = true;
            Ok(())
        }
        Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            Err(End::Closed)
        }
        Err(tungstenite::Error::Io(e)) => Err(End::Broken(io_kind(&e))),
        Err(e) => Err(End::Broken(e.to_string())),
    }
}

pub fn io_kind(e: &std::io::Error) -> String {
    format!("io: {:?}", e.kind())
}
