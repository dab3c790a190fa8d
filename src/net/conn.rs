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

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{debug, info};
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::http::{self, Head, Request, Response};
use super::transport::{HalfClose, Transport};
use crate::config::Config;
use crate::dialect::json::JsonParser;
use crate::dialect::{close_code, Outcome, Session, SessionContext};
use crate::engine::rate::TokenBucket;
use crate::engine::{ClientId, Engine, Frame};
use crate::policy::Policy;

/// Connection settings that come from the configuration.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub websocket: WebSocketConfig,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub write_stall_timeout: Duration,
    /// How long a closing connection is drained before the socket is dropped.
    pub close_linger: Duration,
    pub byte_rate: f64,
    pub byte_burst: f64,
    pub trust_proxy: bool,
    pub anonymize_ips: bool,
    pub allowed_origins: Option<Vec<String>>,
    pub require_user_agent: bool,
}

impl ConnSettings {
    pub fn from_config(config: &Config) -> Self {
        let websocket = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size.max(64))
            // Data frames bypass tungstenite's output buffer (see `send_text`); it only holds
            // control frames, and is bounded by not offering frames to a client that is behind.
            .write_buffer_size(usize::MAX / 2)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        ConnSettings {
            websocket,
            handshake_timeout: Duration::from_secs(config.handshake_timeout),
            ping_interval: Duration::from_secs(config.ping_interval),
            write_stall_timeout: Duration::from_secs(config.write_stall_timeout),
            close_linger: Duration::from_secs(2),
            byte_rate: config.byte_rate,
            byte_burst: config.byte_burst,
            trust_proxy: config.trust_proxy,
            anonymize_ips: config.anonymize_ips,
            allowed_origins: config.allowed_origins.clone(),
            require_user_agent: config.require_user_agent,
        }
    }
}

/// What a connection borrows from the loop while it handles one event.
pub struct LoopContext<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a Policy,
    pub parser: &'a mut JsonParser,
    pub settings: &'a ConnSettings,
    pub now: Instant,
    /// More connections are open than the configured maximum: refuse this one with 4003.
    pub over_capacity: bool,
    /// Loop-wide buffer for reading request heads and draining closed connections.
    pub scratch: &'a mut [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// Remove the connection: everything that could be said has been said.
    Done,
}

enum Phase<S> {
    Http {
        transport: Transport<S>,
        head: Vec<u8>,
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
    ip: Option<IpAddr>,
    /// Handshake deadline while opening, linger deadline while closing.
    deadline: Option<Instant>,
    next_ping: Instant,
    awaiting_pong: bool,
    /// Since when output has been waiting for the client to read.
    stalled_since: Option<Instant>,
    bytes: TokenBucket,
    /// A write failed: the socket is unusable and the loop should remove the connection.
    broken: bool,
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

impl<S: Read + Write + HalfClose> Conn<S> {
    pub fn new(stream: S, client: ClientId, ip: Option<IpAddr>, ctx: &LoopContext<'_>) -> Self {
        let settings = ctx.settings;
        Conn {
            phase: Phase::Http {
                transport: Transport::new(stream),
                head: Vec::new(),
            },
            client,
            ip: logged_ip(ip, settings),
            deadline: Some(ctx.now + settings.handshake_timeout),
            next_ping: ctx.now + settings.ping_interval,
            awaiting_pong: false,
            stalled_since: None,
            bytes: TokenBucket::new(settings.byte_rate, settings.byte_burst, ctx.now),
            broken: false,
        }
    }

    pub fn client(&self) -> ClientId {
        self.client
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

    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Done => Status::Done,
            _ if self.broken => Status::Done,
            _ => Status::Open,
        }
    }

    /// Called once as the loop removes the connection: leaves the room if it is still in one.
    pub fn release(&mut self, ctx: &mut LoopContext<'_>) {
        if self.is_open() {
            self.finish("connection lost while writing", ctx);
        }
        self.phase = Phase::Done;
    }

    /// `[ip "user" room]` for log lines.
    fn label(&self, engine: &Engine) -> String {
        let ip = self.ip_text();
        match &self.phase {
            Phase::Open { session, .. } => match (session.user(), session.room()) {
                (Some(user), Some(room)) => {
                    format!("[{ip} \"{user}\" {}]", engine.room_id(room).unwrap_or("?"))
                }
                _ => format!("[{ip}]"),
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
        match &self.phase {
            Phase::Http { .. } => self.read_http(ctx),
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

    fn read_http(&mut self, ctx: &mut LoopContext<'_>) {
        let Phase::Http { transport, head } = &mut self.phase else {
            return;
        };
        let parsed = loop {
            match transport.read(ctx.scratch) {
                Ok(0) => {
                    debug!("[{}] left before sending a request", self.ip_text());
                    self.phase = Phase::Done;
                    return;
                }
                Ok(n) => {
                    head.extend_from_slice(ctx.scratch.get(..n).unwrap_or_default());
                    match http::parse_head(head) {
                        Head::Partial => continue,
                        done => break done,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("[{}] read error before the request: {e}", self.ip_text());
                    self.phase = Phase::Done;
                    return;
                }
            }
        };
        match parsed {
            Head::Complete(request, length) => self.on_request(request, length, ctx),
            Head::Invalid(response) => {
                info!("[{}] invalid request: {}", self.ip_text(), response.status);
                self.respond(&response, true, ctx)
            }
            Head::Partial => {}
        }
    }

    fn ip_text(&self) -> String {
        self.ip
            .map_or_else(|| "unix".to_owned(), |ip| ip.to_string())
    }

    fn on_request(&mut self, request: Request, head_length: usize, ctx: &mut LoopContext<'_>) {
        let settings = ctx.settings;
        if settings.trust_proxy {
            let ip = http::client_ip(self.ip, request.forwarded_for.as_deref(), true);
            self.ip = logged_ip(ip, settings);
        }
        let Some(key) = request.websocket_key.as_deref() else {
            let response = request
                .bad_upgrade
                .clone()
                .unwrap_or_else(|| http::page(&request));
            info!(
                "[{}] {} {} {}",
                self.ip_text(),
                request.method,
                request.path,
                response.status
            );
            return self.respond(&response, request.method != "HEAD", ctx);
        };
        if let (Some(allowed), Some(origin)) = (&settings.allowed_origins, &request.origin) {
            if !allowed.iter().any(|a| a == origin) {
                info!("[{}] origin {origin:?} not allowed: 403", self.ip_text());
                return self.respond(&Response::FORBIDDEN, true, ctx);
            }
        }
        let Phase::Http {
            mut transport,
            head,
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        // The byte limit is for WebSocket traffic; the request head had its own size limit.
        transport.take_bytes_read();
        transport.set_prefix(http::switching_protocols(key));
        let leftover = head.get(head_length..).unwrap_or_default().to_vec();
        let leftover_allowed = self.bytes.take(leftover.len() as f64, ctx.now);
        let ws = WebSocket::from_partially_read(
            transport,
            leftover,
            Role::Server,
            Some(settings.websocket),
        );
        self.phase = Phase::Open {
            ws: Box::new(ws),
            session: Session::new(self.client, ctx.policy, ctx.now),
        };
        self.deadline = Some(ctx.now + settings.handshake_timeout);
        self.next_ping = ctx.now + settings.ping_interval;
        info!("[{}] connected", self.ip_text());
        if request.leaks_scratch_session {
            return self.begin_close(
                close_code::SECURITY,
                "request carried a Scratch session cookie",
                ctx,
            );
        }
        let has_user_agent = request
            .user_agent
            .as_deref()
            .is_some_and(|ua| !ua.is_empty());
        if settings.require_user_agent && !has_user_agent {
            return self.begin_close(close_code::USER_AGENT, "missing User-Agent", ctx);
        }
        if ctx.over_capacity {
            return self.begin_close(close_code::OVERLOADED, "server is full", ctx);
        }
        if !leftover_allowed {
            return self.begin_close(close_code::UNAVAILABLE, "too many bytes", ctx);
        }
        // Frames that arrived with the request head are already buffered: no event will come
        // for them.
        self.read_websocket(ctx);
        self.flush(ctx.now);
    }

    fn respond(&mut self, response: &Response, include_body: bool, ctx: &mut LoopContext<'_>) {
        let Phase::Http { mut transport, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        transport.set_prefix(response.to_bytes(include_body));
        self.phase = Phase::Lingering {
            transport,
            output_done: false,
        };
        self.deadline = Some(ctx.now + ctx.settings.close_linger);
        self.progress_close(ctx);
    }

    fn read_websocket(&mut self, ctx: &mut LoopContext<'_>) {
        loop {
            let Phase::Open { ws, session } = &mut self.phase else {
                return;
            };
            let message = ws.read();
            let bytes = ws.get_mut().take_bytes_read();
            if !self.bytes.take(bytes as f64, ctx.now) {
                return self.begin_close(close_code::UNAVAILABLE, "too many bytes", ctx);
            }
            let next = match message {
                Ok(Message::Text(text)) => {
                    let mut initial = None;
                    let outcome = session.on_text(
                        text.as_bytes(),
                        &mut SessionContext {
                            engine: ctx.engine,
                            policy: ctx.policy,
                            parser: ctx.parser,
                            now: ctx.now,
                            initial: &mut initial,
                        },
                    );
                    if let Some(frame) = initial {
                        match send_text(ws, &frame) {
                            Ok(true) => {}
                            // Earlier output is still waiting: queue the snapshot behind it.
                            Ok(false) => {
                                let _ = ws.write(Message::Text(frame));
                            }
                            Err(_) => {
                                self.broken = true;
                                return;
                            }
                        }
                    }
                    outcome
                }
                Ok(Message::Pong(_)) => {
                    self.awaiting_pong = false;
                    Outcome::Continue
                }
                // Binary frames are ignored; every frame still counts against the rate limit.
                Ok(Message::Binary(_) | Message::Ping(_) | Message::Frame(_)) => {
                    if session.take_message_token(ctx.now) {
                        Outcome::Continue
                    } else {
                        Outcome::Close {
                            code: close_code::UNAVAILABLE,
                            reason: "too many messages",
                        }
                    }
                }
                Ok(Message::Close(frame)) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    info!(
                        "{} client closed: {code} ({})",
                        self.label(ctx.engine),
                        client_close_meaning(code)
                    );
                    return self.enter_closing(ctx);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(WsError::Capacity(_)) => Outcome::Close {
                    code: 1009,
                    reason: "message too big",
                },
                Err(WsError::Utf8(_)) => Outcome::Close {
                    code: 1007,
                    reason: "invalid UTF-8",
                },
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return self.finish("client disconnected", ctx);
                }
                Err(WsError::Protocol(error)) => {
                    debug!("{} protocol error: {error}", self.label(ctx.engine));
                    Outcome::Close {
                        code: 1002,
                        reason: "WebSocket protocol error",
                    }
                }
                Err(error) => {
                    let reason = format!("connection lost: {error}");
                    return self.finish(&reason, ctx);
                }
            };
            match next {
                Outcome::Continue => {}
                Outcome::Joined => {
                    self.deadline = None;
                    info!(
                        "{} joined ({})",
                        self.label(ctx.engine),
                        self.dialect_name()
                    );
                }
                Outcome::Close { code, reason } => return self.begin_close(code, reason, ctx),
            }
        }
    }

    fn dialect_name(&self) -> &'static str {
        match &self.phase {
            Phase::Open { session, .. } => session.dialect().map_or("-", |d| d.name()),
            _ => "-",
        }
    }

    /// Writes queued WebSocket output; notes when the client stops keeping up.
    fn flush(&mut self, now: Instant) {
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

    /// Offers a tick's frame. False when the client is behind (or not in a room): it keeps its
    /// place in the room and is offered the latest values later.
    pub fn deliver(&mut self, frame: &Frame, now: Instant) -> bool {
        let Phase::Open { ws, .. } = &mut self.phase else {
            return false;
        };
        if ws.get_ref().is_blocked() {
            return false;
        }
        match send_text(ws, frame) {
            Ok(true) => {
                if ws.get_ref().is_blocked() {
                    self.stalled_since.get_or_insert(now);
                }
                true
            }
            Ok(false) => {
                self.stalled_since.get_or_insert(now);
                false
            }
            Err(_) => {
                self.broken = true;
                false
            }
        }
    }

    /// Closes with a close frame, leaving the room at once.
    pub fn begin_close(&mut self, code: u16, reason: &str, ctx: &mut LoopContext<'_>) {
        if !self.is_open() {
            return;
        }
        info!("{} closing: {code} {reason}", self.label(ctx.engine));
        if let Phase::Open { ws, .. } = &mut self.phase {
            // A pong tungstenite still holds would otherwise be written after the close frame.
            let _ = ws.flush();
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            // Queues the frame; it cannot fail before the connection is closed.
            let _ = ws.close(Some(frame));
        }
        self.enter_closing(ctx);
    }

    fn enter_closing(&mut self, ctx: &mut LoopContext<'_>) {
        if let Phase::Open { ws, mut session } = std::mem::replace(&mut self.phase, Phase::Done) {
            session.leave(ctx.engine, ctx.now);
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
        if let Phase::Open { mut session, .. } = std::mem::replace(&mut self.phase, Phase::Done) {
            session.leave(ctx.engine, ctx.now);
        }
    }

    /// Writes what is left to say, half-closes, then reads and discards until the peer closes:
    /// dropping a socket with unread input would reset it and could lose our close frame.
    fn progress_close(&mut self, ctx: &mut LoopContext<'_>) {
        let done = match &mut self.phase {
            Phase::Closing { ws, output_done } => {
                if !*output_done {
                    match ws.flush() {
                        Ok(()) | Err(WsError::ConnectionClosed) => {
                            *output_done = true;
                            ws.get_mut().shutdown_write();
                        }
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => *output_done = true,
                    }
                }
                *output_done && drain(ws.get_mut(), ctx.scratch)
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
                *output_done && drain(transport, ctx.scratch)
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
            Phase::Http { .. } if expired => {
                debug!("[{}] no request in time", self.ip_text());
                self.respond(&Response::TIMEOUT, true, ctx);
            }
            Phase::Open { .. } if expired => {
                self.begin_close(close_code::PROTOCOL, "no handshake in time", ctx);
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
                    self.begin_close(1001, "no answer to ping", ctx);
                } else {
                    self.ping(now, ctx.settings.ping_interval);
                }
            }
            Phase::Closing { .. } | Phase::Lingering { .. } if expired => {
                self.phase = Phase::Done;
            }
            _ => {}
        }
        self.status()
    }

    fn ping(&mut self, now: Instant, interval: Duration) {
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

/// Sends a text frame past tungstenite's output buffer: the header and the shared payload go
/// out in one vectored write, so a frame built once for a room is never copied per client and
/// no large buffer is left behind. Anything tungstenite has queued (a pong) goes first.
///
/// `Ok(false)`: earlier output could not be written, so the frame was not taken. `Ok(true)`: the
/// frame is sent, or partly sent with the rest queued to go out before anything else.
fn send_text<S: Read + Write + HalfClose>(
    ws: &mut WebSocket<Transport<S>>,
    frame: &Frame,
) -> io::Result<bool> {
    match ws.flush() {
        Ok(()) => {}
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(WsError::Io(e)) => return Err(e),
        Err(_) => return Err(io::ErrorKind::BrokenPipe.into()),
    }
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(OpData::Text),
        ..FrameHeader::default()
    };
    let mut header_bytes = [0u8; 14];
    let mut cursor = io::Cursor::new(&mut header_bytes[..]);
    header
        .format(frame.len() as u64, &mut cursor)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let header_len = cursor.position() as usize;
    match ws.get_mut().send_frame(
        header_bytes.get(..header_len).unwrap_or_default(),
        frame.as_bytes(),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

/// The address a connection is logged under: anonymized when the operator asked for it.
fn logged_ip(ip: Option<IpAddr>, settings: &ConnSettings) -> Option<IpAddr> {
    ip.map(|ip| {
        if settings.anonymize_ips {
            http::anonymize(ip)
        } else {
            ip
        }
    })
}

/// Reads and discards input; true once the peer has closed or the stream failed.
fn drain<S: Read + HalfClose>(transport: &mut Transport<S>, scratch: &mut [u8]) -> bool {
    loop {
        match transport.read(scratch) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}
