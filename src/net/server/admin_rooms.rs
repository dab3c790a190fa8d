//! STUB: replaced by the admin rooms engineer's file.

use std::time::Instant;

use super::Server;
use crate::admin::AdminRequest;
use crate::engine::ClientId;
use crate::query::Answer;

impl Server {
    pub(super) fn admin_rooms(
        &mut self,
        _client: ClientId,
        _operator: &str,
        _request: AdminRequest,
        _now: Instant,
    ) -> Option<Answer> {
        Some(Answer::Status {
            status: 501,
            json: r#"{"error":"not built yet"}"#.to_owned(),
        })
    }
}
