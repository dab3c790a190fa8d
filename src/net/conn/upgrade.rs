//! The HTTP phase: reading the request head, answering plain requests, and the upgrade.
//!
//! Each byte of the head is checked once as it arrives ([`HeadReader`]), the head is parsed
//! once it has ended, [`super::admission`] decides what the request gets, and an upgrade hands
//! the transport to tungstenite with the bytes that came after the head. A plain response is
//! written and the connection lingers (drains) until the client closes.

use std::io::{self, Read, Write};

use log::{debug, info};
use tungstenite::protocol::Role;
use tungstenite::WebSocket;

use super::{Conn, LoopContext, Phase};
use crate::dialect::{Outcome, Reason, Route, Session};
use crate::net::admission::{self, Ask, Verdict};
use crate::net::http::{self, Head, Request, Response};
use crate::net::transport::{HalfClose, Transport};

impl<S: Read + Write + HalfClose> Conn<S> {
    pub(super) fn read_http(&mut self, ctx: &mut LoopContext<'_>) {
        if self.requests.pending_body.is_some() {
            return self.read_body(ctx);
        }
        let Phase::Http { transport, head } = &mut self.phase else {
            return;
        };
        // A kept-alive connection may hold the next request already (pipelined).
        let buffered = head.receive(&[]);
        let parsed = loop {
            if buffered != Head::Partial {
                break buffered;
            }
            match transport.read(ctx.scratch) {
                Ok(0) => {
                    debug!("[{}] left before sending a request", self.ip_text());
                    self.phase = Phase::Done;
                    return;
                }
                // Each byte is scanned once as it arrives (garbage is refused at once), and the
                // head is parsed once, when it has ended.
                Ok(n) => match head.receive(ctx.scratch.get(..n).unwrap_or_default()) {
                    Head::Partial => continue,
                    done => break done,
                },
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

    fn on_request(&mut self, request: Request, head_length: usize, ctx: &mut LoopContext<'_>) {
        let key = match self.admission.decide(&request, ctx) {
            Verdict::Upgrade(key) => key,
            verdict => return self.act(verdict, &request, head_length, false, ctx),
        };
        let settings = ctx.settings;
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
        let route = Route::from_path(&request.path);
        let leftover = head.bytes().get(head_length..).unwrap_or_default().to_vec();
        transport.track_frames(&leftover);
        let leftover_allowed = self.bytes.take(leftover.len() as f64, ctx.now);
        let ws = WebSocket::from_partially_read(
            transport,
            leftover,
            Role::Server,
            Some(settings.websocket),
        );
        let session = Session::new(self.client, route, ctx.policy, ctx.now);
        let window = session
            .hello_window()
            .map_or(settings.handshake_timeout, |w| {
                w.min(settings.handshake_timeout)
            });
        self.phase = Phase::Open {
            ws: Box::new(ws),
            session,
        };
        self.deadline = Some(ctx.now + window);
        self.next_ping = ctx.now + settings.ping_interval;
        info!("[{}] connected", self.ip_text());
        let banned = self.admission.address_banned(ctx.policy);
        if let Some(reason) = admission::refusal(&request, settings, ctx.over_capacity, banned) {
            return self.close(reason, ctx);
        }
        if !leftover_allowed {
            return self.close(Reason::TooManyBytes, ctx);
        }
        if let Outcome::Close(reason) = self.open_session(ctx) {
            return self.close(reason, ctx);
        }
        // Frames that arrived with the request head are already buffered: no event will come
        // for them.
        self.read_websocket(ctx);
        self.flush(ctx.now);
    }

    /// Carries out what admission decided for a request that is not an upgrade. `head_length`
    /// is where the next request starts (after the body, when one was read: `body_read`).
    pub(super) fn act(
        &mut self,
        verdict: Verdict<'_>,
        request: &Request,
        head_length: usize,
        body_read: bool,
        ctx: &mut LoopContext<'_>,
    ) {
        match verdict {
            Verdict::Respond(response, include_body) => self.respond(&response, include_body, ctx),
            Verdict::Api {
                reply,
                endpoint,
                include_body,
            } => {
                let keep_alive = self.keeps_alive(request, body_read, ctx);
                self.send_api_reply(&reply, endpoint, include_body, keep_alive, head_length, ctx);
            }
            Verdict::Ask(ask) => {
                if let Ask::Query {
                    query,
                    endpoint,
                    include_body,
                } = &ask
                {
                    let keep_alive = self.keeps_alive(request, body_read, ctx);
                    self.await_answer(*endpoint, *include_body, keep_alive, head_length, ctx);
                    self.audit_admin(query);
                }
                self.ask = Some(ask);
            }
            Verdict::AdminBody(length) => self.start_body(request, head_length, length, ctx),
            // Handled by `on_request`.
            Verdict::Upgrade(_) => {}
        }
    }

    pub(super) fn respond(
        &mut self,
        response: &Response,
        include_body: bool,
        ctx: &mut LoopContext<'_>,
    ) {
        let Phase::Http { mut transport, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return;
        };
        transport.set_prefix(response.to_bytes(include_body));
        self.linger(transport, ctx);
    }

    /// Writes the queued response, then drains until the client closes.
    pub(super) fn linger(&mut self, transport: Transport<S>, ctx: &mut LoopContext<'_>) {
        self.phase = Phase::Lingering {
            transport,
            output_done: false,
        };
        self.deadline = Some(ctx.now + ctx.settings.close_linger);
        self.progress_close(ctx);
    }

    fn open_session(&mut self, ctx: &mut LoopContext<'_>) -> Outcome {
        let Phase::Open { session, .. } = &mut self.phase else {
            return Outcome::Continue;
        };
        session.on_open(&mut ctx.session())
    }
}
