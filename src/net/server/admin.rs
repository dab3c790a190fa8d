//! Carrying out the admin API's requests: the rooms' side in `admin_rooms.rs`, bans and
//! project blocks in `admin_bans.rs`. Like the reads of `queries.rs`, an answer is given at
//! once or later (through `take_query_answers`).

use std::time::Instant;

use super::Server;
use crate::admin::AdminRequest;
use crate::engine::ClientId;
use crate::query::Answer;

impl Server {
    /// Starts carrying out `request` of `operator` for the connection of `client`; `None`
    /// when the answer comes later.
    pub(super) fn start_admin(
        &mut self,
        client: ClientId,
        operator: &str,
        request: AdminRequest,
        now: Instant,
    ) -> Option<Answer> {
        match request {
            AdminRequest::ListBans
            | AdminRequest::Ban { .. }
            | AdminRequest::LiftBan { .. }
            | AdminRequest::ListBlocks
            | AdminRequest::Block { .. }
            | AdminRequest::Unblock { .. } => self.admin_bans(client, operator, request, now),
            _ => self.admin_rooms(client, operator, request, now),
        }
    }
}
