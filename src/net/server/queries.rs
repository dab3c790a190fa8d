//! STUB of the read queries of the HTTP API (the history side replaces this file): `Variables`
//! is answered at once with no variables, `Logs` one loop iteration later with no entries, so
//! that both the immediate and the waiting path of the connections are exercised.

use std::time::Instant;

use super::Server;
use crate::engine::ClientId;
use crate::query::{Answer, Query};

impl Server {
    /// Starts answering `query` for the connection of `client`. Returns the answer at once
    /// when no backend read is needed; otherwise `None`, and the answer comes out of
    /// `take_query_answers` later (always, even if only `Answer::Unavailable`).
    pub(super) fn start_query(
        &mut self,
        client: ClientId,
        query: Query,
        _now: Instant,
    ) -> Option<Answer> {
        match query {
            Query::Variables { project } => Some(Answer::Json(format!(
                "{{\"project\":{},\"variables\":{{}}}}",
                json_string(&project)
            ))),
            Query::Logs { .. } => {
                self.stub_query_answers
                    .push((client, Answer::Json("[]".to_owned())));
                None
            }
        }
    }

    /// Answers finished since the last call, for connections that asked.
    pub(super) fn take_query_answers(&mut self) -> Vec<(ClientId, Answer)> {
        std::mem::take(&mut self.stub_query_answers)
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
