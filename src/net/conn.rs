//! One client connection, from its first HTTP byte to the last byte drained after closing.
//!
//! ```text
//! Http ──upgrade──▶ Open ──close frame sent──▶ Closing ──output written──▶ (drain) ──▶ Done
//!   └──plain response──▶ Lingering ──────────────────────────────────────▶ (drain) ──▶ Done
//! ```
//!
//! The connection is generic over its byte stream so tests and fuzzers drive it in memory. It
//! never touches the poll or the slab: each entry point returns a [`Status`] and the loop
//! applies it. Output produced while reading (the initial variables, pongs, close frames) is
//! flushed before the entry point returns, because edge-triggered readiness will not call
//! again for it.
//!
//! This file holds the phases, the entry points, the close and the keepalive. The HTTP phase
//! and the upgrade are in `upgrade` (what a request gets is decided in `net/admission.rs`),
//! reading and writing an open WebSocket in `messages` (frames are written by
//! `net/frame_writer.rs`), and what the census of held renderings asks in `census`.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Instant;

use log::info;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::WebSocket;

use super::admission::{Admission, Ask};
use super::head_reader::HeadReader;
use super::transport::{HalfClose, Transport};
use crate::dialect::{Outcome, Reason, Session, SessionContext};
use crate::engine::rate::TokenBucket;
use crate::engine::{ClientId, Engine, Frame};

mod admin_body;
mod census;
mod keep_alive;
mod messages;
mod upgrade;

use keep_alive::Requests;

pub use super::loop_context::{ConnSettings, LoopContext};

/// What a connection needs from the loop after an entry point: every entry point that can
/// change it returns it, and the loop acts on it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Nothing until its next event or timer.
    Open,
    /// Its turn's read budget ran out with input left: serve it again next turn without
    /// waiting for an event (edge-triggered readiness will not announce that input again).
    MoreInput,
    /// It asked for something only the loop can answer (`/metrics`, a read of the HTTP API):
    /// the loop takes it ([`Conn::take_ask`]) and answers ([`Conn::answer_metrics`],
    /// [`Conn::answer_query`]).
    Asks,
    /// Remove the connection: everything that could be said has been said.
    Done,
}

/// What offering a room's frame did ([`Conn::deliver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The frame is sent, or partly sent with its rest queued. False when the client is behind
    /// (or not in a room): it keeps its place in the room and is offered the latest values
    /// later.
    pub taken: bool,
    pub status: Status,
}

enum Phase<S> {
    Http {
        transport: Transport<S>,
        head: HeadReader,
    },
    Open {
        ws: Box<WebSocket<Transport<S>>>,
        session: Session,
    },
    /// A close frame is queued; once written, the input is drained until EOF.
    Closing {
        ws: Box<WebSocket<Transport<S>>>,
        output_done: bool,
    },
    /// A plain HTTP response is queued; same as `Closing`.
    Lingering {
        transport: Transport<S>,
        output_done: bool,
    },
    Done,
}

pub struct Conn<S> {
    phase: Phase<S>,
    client: ClientId,
    /// Who the client is: its address, its place, what it may ask for.
    admission: Admission,
    /// Handshake deadline while opening, linger deadline while closing.
    deadline: Option<Instant>,
    next_ping: Instant,
    awaiting_pong: bool,
    /// Since when output has been waiting for the client to read.
    stalled_since: Option<Instant>,
    bytes: TokenBucket,
    /// A write failed: the socket is unusable and the loop should remove the connection.
    broken: bool,
    /// The session joined: a close after this is not a refused handshake.
    joined: bool,
    /// A request only the loop can answer, until the loop takes it ([`Conn::take_ask`]).
    ask: Option<Ask>,
    /// The HTTP API requests of a kept-alive connection: how many, and the one waiting.
    requests: Requests,
    /// A fan-out frame was refused because the client is behind: its rooms were told to skip
    /// it, and are told to resume once its output drains.
    refused_frames: bool,
    /// This turn's read budget ran out with input left: the loop must come back without
    /// waiting for an event (edge-triggered readiness will not repeat).
    more_input: bool,
    /// A message larger than the WebSocket read buffer was read: once the input is at a
    /// message boundary, the WebSocket is rebuilt to give the grown buffer back.
    large_input: bool,
    /// Output blocked with a shared frame from the outbox (a full-state reply) in it: the
    /// once-a-second census of held renderings looks at this connection (see `unsent_replies`).
    reply_blocked: bool,
    /// Bytes written when the census last looked, and since when that count stood still.
    write_progress: (u64, Instant),
}

/// Most bytes read from one connection in one turn of the loop (also when draining a closing
/// one), so that one busy client cannot keep the loop from every other client and from the
/// tick; see also `messages::MESSAGES_PER_TURN`.
pub(super) const BYTES_PER_TURN: u64 = 256 * 1024;

impl LoopContext<'_> {
    /// What a session borrows while it handles a message.
    fn session(&mut self) -> SessionContext<'_> {
        SessionContext {
            engine: self.engine,
            policy: self.policy,
            parser: self.parser,
            users: self.users,
            reconnects: self.reconnects,
            now: self.now,
        }
    }
}

impl<S: Read + Write + HalfClose> Conn<S> {
    pub fn new(stream: S, client: ClientId, ip: Option<IpAddr>, ctx: &LoopContext<'_>) -> Self {
        let settings = ctx.settings;
        let mut transport = Transport::new(stream);
        transport.set_budget(ctx.write_budget.for_client(client));
        Conn {
            phase: Phase::Http {
                transport,
                head: HeadReader::default(),
            },
            refused_frames: false,
            more_input: false,
            large_input: false,
            reply_blocked: false,
            write_progress: (0, ctx.now),
            client,
            admission: Admission::new(ip, settings),
            deadline: Some(ctx.now + settings.handshake_timeout),
            next_ping: ctx.now + settings.ping_interval,
            awaiting_pong: false,
            stalled_since: None,
            bytes: TokenBucket::new(settings.byte_rate, settings.byte_burst, ctx.now),
            broken: false,
            joined: false,
            ask: None,
            requests: Requests::default(),
        }
    }

    /// A connection of the metrics listener: it may read `/metrics` wherever it comes from,
    /// and may not upgrade to WebSocket.
    pub fn for_metrics_only(&mut self) {
        self.admission.for_metrics_only();
    }

    /// Where the listener that accepted it stands on admin paths.
    pub fn set_admin_listener(&mut self, listener: super::admission::AdminListener) {
        self.admission.set_admin_listener(listener);
    }

    /// Sends the rendered metrics page it asked for ([`Ask::Metrics`]) and closes.
    pub fn answer_metrics(&mut self, page: Vec<u8>, ctx: &mut LoopContext<'_>) -> Status {
        let Phase::Http { mut transport, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return self.status();
        };
        transport.set_prefix(page);
        self.linger(transport, ctx);
        self.status()
    }

    /// For metrics: the connection's phase and dialect.
    pub fn describe(&self) -> (&'static str, &'static str) {
        match &self.phase {
            Phase::Http { .. } => ("none", "http"),
            Phase::Open { session, .. } => (session.dialect().map_or("none", |d| d.name()), "open"),
            Phase::Closing { .. } | Phase::Lingering { .. } => ("none", "closing"),
            Phase::Done => ("none", "done"),
        }
    }

    /// Bytes written to this client so far.
    pub fn bytes_written(&self) -> u64 {
        match &self.phase {
            Phase::Http { transport, .. } | Phase::Lingering { transport, .. } => {
                transport.bytes_written()
            }
            Phase::Open { ws, .. } | Phase::Closing { ws, .. } => ws.get_ref().bytes_written(),
            Phase::Done => 0,
        }
    }

    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The address this connection is logged for, not anonymized (behind a trusted proxy,
    /// the client the proxy named); `None` on a unix socket.
    pub(in crate::net) fn client_ip(&self) -> Option<IpAddr> {
        self.admission.client_ip()
    }

    pub fn stream(&self) -> Option<&S> {
        match &self.phase {
            Phase::Http { transport, .. } | Phase::Lingering { transport, .. } => {
                Some(transport.stream())
            }
            Phase::Open { ws, .. } | Phase::Closing { ws, .. } => Some(ws.get_ref().stream()),
            Phase::Done => None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// Whether output is waiting for the client to read.
    pub fn is_stalled(&self) -> bool {
        self.stalled_since.is_some()
    }

    /// What the loop is to do next; entry points return it.
    fn status(&self) -> Status {
        match (&self.phase, &self.ask) {
            (Phase::Done, _) => Status::Done,
            _ if self.broken => Status::Done,
            (_, Some(_)) => Status::Asks,
            _ if self.more_input => Status::MoreInput,
            _ => Status::Open,
        }
    }

    /// Called once as the loop removes the connection: leaves the room if it is still in one.
    pub fn release(&mut self, ctx: &mut LoopContext<'_>) {
        if self.is_open() {
            self.finish("connection lost while writing", ctx);
        }
        self.phase = Phase::Done;
        if let Some(ip) = self.admission.take_counted_ip() {
            ctx.per_ip.release(ip);
        }
    }

    /// The loop admitted this connection's address against `--max-connections-per-ip`.
    pub fn set_counted_ip(&mut self, ip: IpAddr) {
        self.admission.set_counted_ip(ip);
    }

    /// Tells the rooms that skipped this client while it was behind that it can take frames
    /// again. Edge-triggered: called after anything that may have drained the output.
    fn resume_rooms(&mut self, ctx: &mut LoopContext<'_>) {
        if !self.refused_frames {
            return;
        }
        let Phase::Open { ws, session } = &self.phase else {
            return;
        };
        if ws.get_ref().is_blocked() {
            return;
        }
        self.refused_frames = false;
        for room in session.rooms() {
            ctx.engine.resume(room, self.client);
        }
    }

    /// `[ip "user" room]` for log lines.
    fn label(&self, engine: &Engine) -> String {
        let ip = self.ip_text();
        match &self.phase {
            Phase::Open { session, .. } => match (session.user(), session.room_name(engine)) {
                (Some(user), Some(room)) => format!("[{ip} \"{user}\" {room}]"),
                (Some(user), None) => format!("[{ip} \"{user}\"]"),
                (None, Some(room)) => format!("[{ip} {room}]"),
                (None, None) => format!("[{ip}]"),
            },
            _ => format!("[{ip}]"),
        }
    }

    /// Handles a readiness event.
    pub fn on_event(
        &mut self,
        readable: bool,
        writable: bool,
        ctx: &mut LoopContext<'_>,
    ) -> Status {
        if readable {
            self.mark_readable();
        }
        self.more_input = false;
        match &self.phase {
            Phase::Http { .. } => self.serve_http(ctx),
            Phase::Open { .. } => {
                if writable {
                    self.flush(ctx.now);
                }
                self.read_websocket(ctx);
                self.flush(ctx.now);
            }
            Phase::Closing { .. } | Phase::Lingering { .. } => self.progress_close(ctx),
            Phase::Done => {}
        }
        self.resume_rooms(ctx);
        self.status()
    }

    fn mark_readable(&mut self) {
        match &mut self.phase {
            Phase::Http { transport, .. } | Phase::Lingering { transport, .. } => {
                transport.mark_readable()
            }
            Phase::Open { ws, .. } | Phase::Closing { ws, .. } => ws.get_mut().mark_readable(),
            Phase::Done => {}
        }
    }

    fn ip_text(&self) -> String {
        self.admission.ip_text()
    }

    /// The room this connection's session waited for is in memory (or failed to load): the
    /// waiting messages are handled, then whatever arrived meanwhile is read, since no new
    /// readable event will announce it.
    pub fn resume(&mut self, ctx: &mut LoopContext<'_>) -> Status {
        let Phase::Open { session, .. } = &mut self.phase else {
            return self.status();
        };
        let outcome = session.resume(&mut ctx.session());
        match self.after_message(outcome, ctx) {
            Outcome::Close(reason) => {
                self.write_outbox();
                self.close(reason, ctx);
            }
            Outcome::Wait => self.write_outbox(),
            Outcome::Continue | Outcome::Joined => self.read_websocket(ctx),
        }
        self.flush(ctx.now);
        self.status()
    }

    /// Offers a tick's frame (see [`Delivery`]).
    pub fn deliver(&mut self, frame: &Frame, now: Instant) -> Delivery {
        let taken = self.offer(frame, now);
        Delivery {
            taken,
            status: self.status(),
        }
    }

    /// A newer connection of the same user replaces this one: the client is told at once; the
    /// loop closes the connection a little later, so the message is read before the close.
    pub fn replace(&mut self, ctx: &mut LoopContext<'_>) -> Status {
        if let Phase::Open { session, .. } = &mut self.phase {
            session.replace(ctx.users);
            info!("{} replaced by a newer connection", self.label(ctx.engine));
            self.write_outbox();
        }
        self.status()
    }

    /// Closes with a close frame, leaving the room at once. The dialect may first tell the
    /// client why in its own words.
    pub fn begin_close(&mut self, reason: Reason, ctx: &mut LoopContext<'_>) -> Status {
        self.close(reason, ctx);
        self.status()
    }

    /// [`Conn::begin_close`] from inside the connection.
    fn close(&mut self, reason: Reason, ctx: &mut LoopContext<'_>) {
        let Phase::Open { session, .. } = &mut self.phase else {
            return;
        };
        let code = session.farewell(reason);
        ctx.metrics.closed(code);
        if matches!(reason, Reason::TooManyMessages | Reason::TooManyBytes) {
            ctx.metrics.rate_limited += 1;
        }
        if !self.joined {
            ctx.metrics.refused(reason.name());
        }
        info!(
            "{} closing: {code} {}",
            self.label(ctx.engine),
            reason.text()
        );
        self.write_outbox();
        if let Phase::Open { ws, .. } = &mut self.phase {
            // A pong tungstenite still holds would otherwise be written after the close frame.
            let _ = ws.flush();
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.text().into(),
            };
            // Queues the frame; it cannot fail before the connection is closed.
            let _ = ws.close(Some(frame));
        }
        // A client that stopped answering pings may come back (MultiStudio reconnects).
        self.enter_closing(reason == Reason::NoPong, ctx);
    }

    /// Ends the session and waits for the close handshake to finish. `abnormally`: the client
    /// did not close the connection itself.
    fn enter_closing(&mut self, abnormally: bool, ctx: &mut LoopContext<'_>) {
        if let Phase::Open { ws, mut session } = std::mem::replace(&mut self.phase, Phase::Done) {
            self.leave_session(&mut session, abnormally, ctx);
            self.phase = Phase::Closing {
                ws,
                output_done: false,
            };
            self.deadline = Some(ctx.now + ctx.settings.close_linger);
        }
        self.progress_close(ctx);
    }

    /// Ends the connection without a close frame (the peer is gone).
    fn finish(&mut self, reason: &str, ctx: &mut LoopContext<'_>) {
        info!("{} {reason}", self.label(ctx.engine));
        ctx.metrics.dropped += 1;
        if let Phase::Open { mut session, .. } = std::mem::replace(&mut self.phase, Phase::Done) {
            self.leave_session(&mut session, true, ctx);
        }
    }

    /// Ends the session; a parked one takes this connection's address charge with it (see
    /// `dialect::resume`), so it stays counted against `--max-connections-per-ip`.
    fn leave_session(
        &mut self,
        session: &mut Session,
        abnormally: bool,
        ctx: &mut LoopContext<'_>,
    ) {
        if session.leave(&mut ctx.session(), abnormally, self.admission.counted_ip()) {
            self.admission.take_counted_ip();
        }
    }

    /// Writes what is left to say, half-closes, then reads and discards until the peer closes:
    /// dropping a socket with unread input would reset it and could lose our close frame.
    fn progress_close(&mut self, ctx: &mut LoopContext<'_>) {
        let done = match &mut self.phase {
            Phase::Closing { ws, output_done } => {
                if !*output_done {
                    // Twice: a close frame that did not fit the control buffer behind pongs
                    // is only buffered by the second flush.
                    match ws.flush().and_then(|()| ws.flush()) {
                        Ok(()) | Err(WsError::ConnectionClosed) => {
                            *output_done = true;
                            ws.get_mut().shutdown_write();
                        }
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => *output_done = true,
                    }
                }
                *output_done && drain(ws.get_mut(), ctx.scratch, &mut self.more_input)
            }
            Phase::Lingering {
                transport,
                output_done,
            } => {
                if !*output_done {
                    match transport.flush_prefix() {
                        Ok(()) => {
                            *output_done = true;
                            transport.shutdown_write();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => *output_done = true,
                    }
                }
                *output_done && drain(transport, ctx.scratch, &mut self.more_input)
            }
            _ => false,
        };
        if done {
            self.phase = Phase::Done;
        }
    }

    /// Deadlines and keepalive; the loop calls this about once a second.
    pub fn on_timer(&mut self, ctx: &mut LoopContext<'_>) -> Status {
        let now = ctx.now;
        let expired = self.deadline.is_some_and(|d| now >= d);
        match &self.phase {
            Phase::Http { .. } if expired => self.http_deadline(ctx),
            Phase::Open { .. } if expired => {
                self.close(Reason::HandshakeTimeout, ctx);
            }
            Phase::Open { .. }
                if self.stalled_since.is_some_and(|since| {
                    now.saturating_duration_since(since) >= ctx.settings.write_stall_timeout
                }) =>
            {
                self.finish("closed: client stopped reading", ctx);
            }
            Phase::Open { .. } if now >= self.next_ping => {
                if self.awaiting_pong {
                    self.close(Reason::NoPong, ctx);
                } else {
                    self.ping(now, ctx.settings.ping_interval);
                }
            }
            Phase::Closing { .. } | Phase::Lingering { .. } if expired => {
                self.phase = Phase::Done;
            }
            _ => {}
        }
        self.resume_rooms(ctx);
        self.status()
    }
}

/// Reads and discards input; true once the peer has closed or the stream failed. Reads at
/// most `BYTES_PER_TURN`, then sets `more_input` and returns false.
fn drain<S: Read + HalfClose>(
    transport: &mut Transport<S>,
    scratch: &mut [u8],
    more_input: &mut bool,
) -> bool {
    let mut read = 0;
    loop {
        if read >= BYTES_PER_TURN as usize {
            *more_input = true;
            return false;
        }
        match transport.read(scratch) {
            Ok(0) => return true,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}
