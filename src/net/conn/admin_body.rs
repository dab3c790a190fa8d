//! An operator's admin request: its body, read to its `Content-Length` (at most
//! `MAX_ADMIN_BODY_BYTES`, only once the token matched, so no stranger makes the server hold
//! a megabyte), and its audit line, written once the answer's status is known.
//!
//! The body is read within the handshake timeout (408 otherwise), kept after the head in the
//! connection's `HeadReader`, and whatever follows it is the next request (keep-alive).

use std::io::{self, Read, Write};

use log::{debug, log, Level};

use super::{Conn, LoopContext, Phase};
use crate::net::api::admin::audit_target;
use crate::net::http::Request;
use crate::net::transport::HalfClose;
use crate::query::Query;

/// A request whose body is being read.
#[derive(Debug)]
pub(super) struct PendingBody {
    request: Request,
    head_length: usize,
    length: usize,
}

/// An admin request's audit line, without its status yet.
#[derive(Debug)]
pub(super) struct Audit {
    line: String,
    /// Changes are audited at info level, reads at debug.
    level: Level,
}

impl<S: Read + Write + HalfClose> Conn<S> {
    /// Starts reading the body of an operator's request; it may be here already.
    pub(super) fn start_body(
        &mut self,
        request: &Request,
        head_length: usize,
        length: usize,
        ctx: &mut LoopContext<'_>,
    ) {
        self.requests.pending_body = Some(PendingBody {
            request: request.clone(),
            head_length,
            length,
        });
        self.deadline = Some(ctx.now + ctx.settings.handshake_timeout);
        self.read_body(ctx);
    }

    /// Reads what has arrived of the body; once it is whole, the request is routed.
    pub(super) fn read_body(&mut self, ctx: &mut LoopContext<'_>) {
        let Some(pending) = self.requests.pending_body.take() else {
            return;
        };
        let end = pending.head_length.saturating_add(pending.length);
        let Phase::Http { transport, head } = &mut self.phase else {
            return;
        };
        while head.bytes().len() < end {
            match transport.read(ctx.scratch) {
                Ok(0) => {
                    debug!(
                        "[{}] left before sending its body",
                        self.admission.ip_text()
                    );
                    self.phase = Phase::Done;
                    return;
                }
                Ok(n) => head.append(ctx.scratch.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.requests.pending_body = Some(pending);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("[{}] read error in a body: {e}", self.admission.ip_text());
                    self.phase = Phase::Done;
                    return;
                }
            }
        }
        let body = head
            .bytes()
            .get(pending.head_length..end)
            .unwrap_or_default()
            .to_vec();
        let verdict = self.admission.admin_with_body(&pending.request, &body, ctx);
        self.act(verdict, &pending.request, end, true, ctx);
    }

    /// Remembers the audit line of an admin request the loop is to carry out.
    pub(super) fn audit_admin(&mut self, query: &Query) {
        let Query::Admin { operator, request } = query else {
            return;
        };
        let line = format!(
            "[{}] admin {operator} {} {}",
            self.admission.ip_text(),
            request.action(),
            audit_target(request)
        );
        let level = if request.changes() {
            Level::Info
        } else {
            Level::Debug
        };
        self.requests.audit = Some(Audit { line, level });
    }

    /// Writes the audit line of the admin request just answered, with its status.
    pub(super) fn log_audit(&mut self, status: u16) {
        if let Some(audit) = self.requests.audit.take() {
            log!(audit.level, "{}: {status}", audit.line);
        }
    }
}
