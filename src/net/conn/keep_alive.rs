//! HTTP API requests on one connection: answers sent at once or once the loop has them, and
//! keep-alive.
//!
//! After an API answer the connection stays in the HTTP phase for its next request, unless the
//! client asked to close (`Connection: close`, HTTP/1.0), the request was not a read (GET, HEAD,
//! OPTIONS) or announced a body (which is never read), or this was its last allowed request
//! (`MAX_REQUESTS_PER_CONNECTION`). One request is handled at a time: the next one (pipelined
//! bytes after a head included) is read only once the answer is written in full, so a client
//! that does not read holds at most one answer. A read the loop answers later keeps the
//! connection waiting, reading nothing, until the answer or the deadline (503, then close: a
//! late answer must not be taken for the next request's). Between requests, the idle deadline
//! (`--handshake-timeout`) closes the connection quietly.

use std::io::{self, Read, Write};

use log::debug;

use super::{Conn, LoopContext, Phase, Status};
use crate::net::admission::Ask;
use crate::net::api::admin::AdminPath;
use crate::net::api::{Endpoint, Reply};
use crate::net::head_reader::HeadReader;
use crate::net::http::{Request, Response};
use crate::net::transport::HalfClose;
use crate::query::Answer;

/// The API requests of one connection.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// API requests answered on this connection.
    served: u32,
    /// The read the loop is answering, and how to send its answer.
    awaiting: Option<Awaiting>,
    /// An operator's admin request whose body is being read (`admin_body.rs`).
    pub(super) pending_body: Option<super::admin_body::PendingBody>,
    /// The audit line of the admin request the loop is answering, written with its status.
    pub(super) audit: Option<super::admin_body::Audit>,
}

/// How to send the answer of a read the loop is answering.
#[derive(Clone, Copy, Debug)]
struct Awaiting {
    endpoint: Endpoint,
    include_body: bool,
    keep_alive: bool,
    /// The length of its request head: the bytes after it are the next request.
    head_length: usize,
}

impl<S: Read + Write + HalfClose> Conn<S> {
    /// What the loop must answer for this connection, if anything ([`Status::Asks`]).
    pub fn take_ask(&mut self) -> Option<Ask> {
        self.ask.take()
    }

    /// The answer to the read it asked for; dropped if it no longer waits for one (its
    /// deadline passed).
    pub fn answer_query(&mut self, answer: Answer, ctx: &mut LoopContext<'_>) -> Status {
        let Some(awaiting) = self.requests.awaiting.take() else {
            return self.status();
        };
        let reply = match answer {
            Answer::Json(json) => Reply::json(json),
            Answer::Unavailable => Reply::unavailable(),
            Answer::Status { status, json } => Reply::with_status(status, json),
        };
        self.log_audit(reply.status);
        self.send_api_reply(
            &reply,
            awaiting.endpoint,
            awaiting.include_body,
            awaiting.keep_alive,
            awaiting.head_length,
            ctx,
        );
        self.status()
    }

    /// Whether the loop's answer to this connection's request is still awaited: false once
    /// its deadline answered 503 or it closed, so a late admin action is not carried out.
    pub fn awaits_answer(&self) -> bool {
        self.requests.awaiting.is_some()
    }

    /// Whether the connection stays open after answering `request`. Never after a request
    /// that has (or may have) a body that was not read (`body_read`: an operator's admin
    /// request, read to its `Content-Length`), nor after a method other than the reads' outside
    /// the admin paths: what follows the head would be taken for the next request — behind a
    /// proxy that reuses its connections, a request smuggled in by the client, naming any
    /// address.
    pub(super) fn keeps_alive(
        &self,
        request: &Request,
        body_read: bool,
        ctx: &LoopContext<'_>,
    ) -> bool {
        let nothing_unread = if AdminPath::of(&request.path).is_some() {
            body_read || !request.carries_body
        } else {
            !request.carries_body && matches!(request.method.as_str(), "GET" | "HEAD" | "OPTIONS")
        };
        !request.closes
            && nothing_unread
            && self.requests.served + 1 < ctx.settings.max_requests_per_connection
    }

    /// The loop answers this request later: nothing more is read until then, for at most the
    /// handshake timeout.
    pub(super) fn await_answer(
        &mut self,
        endpoint: Endpoint,
        include_body: bool,
        keep_alive: bool,
        head_length: usize,
        ctx: &LoopContext<'_>,
    ) {
        self.requests.awaiting = Some(Awaiting {
            endpoint,
            include_body,
            keep_alive,
            head_length,
        });
        self.deadline = Some(ctx.now + ctx.settings.handshake_timeout);
    }

    /// Sends an API answer; kept alive, the connection then waits for its next request (the
    /// bytes after this head first), otherwise it closes as after any plain response.
    pub(super) fn send_api_reply(
        &mut self,
        reply: &Reply,
        endpoint: Endpoint,
        include_body: bool,
        keep_alive: bool,
        head_length: usize,
        ctx: &mut LoopContext<'_>,
    ) {
        if endpoint == Endpoint::Admin && reply.public {
            // Admin answers are never readable by another site's page (no CORS headers).
            let private = Reply {
                public: false,
                ..reply.clone()
            };
            return self.send_api_reply(
                &private,
                endpoint,
                include_body,
                keep_alive,
                head_length,
                ctx,
            );
        }
        ctx.api.counts.count(endpoint, reply.status);
        self.requests.served = self.requests.served.saturating_add(1);
        let bytes = reply.to_bytes(include_body, keep_alive);
        let Phase::Http { transport, head } = &mut self.phase else {
            return;
        };
        if !keep_alive {
            let Phase::Http { mut transport, .. } = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                return;
            };
            transport.set_prefix(bytes);
            return self.linger(transport, ctx);
        }
        let mut next = HeadReader::default();
        next.receive(head.bytes().get(head_length..).unwrap_or_default());
        *head = next;
        transport.set_prefix(bytes);
        match transport.flush_prefix() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.broken = true,
        }
        self.deadline = Some(ctx.now + ctx.settings.handshake_timeout);
        // The next request may be buffered already, or in the socket past what was read.
        self.more_input = true;
    }

    /// A readiness event in the HTTP phase: the answer being written goes first; the next
    /// request is read only once it is out, and not while the loop answers a read.
    pub(super) fn serve_http(&mut self, ctx: &mut LoopContext<'_>) {
        if self.requests.awaiting.is_some() || self.ask.is_some() {
            return;
        }
        let Phase::Http { transport, .. } = &mut self.phase else {
            return;
        };
        if transport.pending_bytes() > 0 {
            match transport.flush_prefix() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
        self.read_http(ctx);
    }

    /// The HTTP phase's deadline passed: a read not answered in time gets 503 and the
    /// connection closes; an idle kept-alive connection, or one whose client has not read its
    /// last answer, closes quietly (that answer finished first); a request that did not arrive
    /// in time gets 408.
    pub(super) fn http_deadline(&mut self, ctx: &mut LoopContext<'_>) {
        if let Some(awaiting) = self.requests.awaiting.take() {
            debug!("[{}] no answer in time: 503", self.ip_text());
            self.log_audit(503);
            return self.send_api_reply(
                &Reply::unavailable(),
                awaiting.endpoint,
                awaiting.include_body,
                false,
                awaiting.head_length,
                ctx,
            );
        }
        // An answer the client has not read yet is still written before the close, and is not
        // replaced by a 408 (the bytes after it are not a late request: this one was answered).
        let idle = matches!(&self.phase, Phase::Http { head, transport }
            if self.requests.served > 0
                && (head.bytes().is_empty() || transport.pending_bytes() > 0));
        if idle {
            debug!("[{}] idle keep-alive connection closed", self.ip_text());
            let Phase::Http { transport, .. } = std::mem::replace(&mut self.phase, Phase::Done)
            else {
                return;
            };
            return self.linger(transport, ctx);
        }
        debug!("[{}] no request in time", self.ip_text());
        self.respond(&Response::TIMEOUT, true, ctx);
    }
}
