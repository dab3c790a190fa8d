//! The admin API's requests, as the HTTP side parses them and the loop carries them out.
//!
//! Sans-IO types only: parsing a request (`/admin/api/v1/...` with its JSON body) into an
//! [`AdminRequest`] is the HTTP side's (`net/`), carrying it out is the loop's
//! (`net/server/admin*.rs`). Every request reaches the loop only from an operator whose bearer
//! token matched (`crate::query::Query::Admin`).

pub mod bans;
pub mod control;
pub mod rollback;
pub mod tokens;

/// One request of the admin API (`/admin/api/v1/...`), validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /admin/api/v1/rooms?offset=K&limit=N`: rooms in memory and on disk, with paging
    /// (limit 1..=1000, default 100).
    ListRooms { offset: usize, limit: usize },
    /// `GET /admin/api/v1/rooms/<room>`: variables and members of one room.
    Room { room: String },
    /// `GET /admin/api/v1/rooms/<room>/history?offset=K&limit=N`: the room's history in the
    /// public `/logs` page's shape (limit 1..=1000, default 100), whatever the project rules.
    History {
        room: String,
        offset: usize,
        limit: usize,
    },
    /// `PUT /admin/api/v1/rooms/<room>/variables/<name>` with `{"value": <number or string>}`:
    /// `value` is the value's JSON text as sent (a number or a string literal).
    SetVariable {
        room: String,
        name: String,
        value_json: String,
    },
    /// `DELETE /admin/api/v1/rooms/<room>/variables/<name>`.
    DeleteVariable { room: String, name: String },
    /// `POST /admin/api/v1/rooms/<room>/reset`: every variable deleted.
    ResetRoom { room: String },
    /// `POST /admin/api/v1/rooms/<room>/rollback` with `{"to": <ms since the epoch>}`.
    Rollback { room: String, to_ms: u64 },
    /// `POST /admin/api/v1/kick` with `{"connection": <id>}` or `{"room": R, "user": U}`.
    Kick(KickTarget),
    /// `GET /admin/api/v1/bans`.
    ListBans,
    /// `POST /admin/api/v1/bans` with `{"user": U}` or `{"address": "1.2.3.4" | "10.0.0.0/8"}`,
    /// `"seconds": N` (how long) and an optional `"reason"`.
    Ban {
        target: BanTarget,
        seconds: u64,
        reason: String,
    },
    /// `DELETE /admin/api/v1/bans/<id>`.
    LiftBan { id: u64 },
    /// `GET /admin/api/v1/blocks`: projects blocked at runtime.
    ListBlocks,
    /// `POST /admin/api/v1/blocks` with `{"project": P}` and an optional `"seconds": N`
    /// (absent: until lifted).
    Block {
        project: String,
        seconds: Option<u64>,
    },
    /// `DELETE /admin/api/v1/blocks/<project>`.
    Unblock { project: String },
}

/// Whom a kick closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KickTarget {
    /// One connection, by the id the room's member list shows (`ClientId`'s number).
    Connection(u64),
    /// Every connection of `user` in `room` (on every node in a cluster).
    User { room: String, user: String },
}

/// Whom a ban keeps out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    /// A user name, compared case-insensitively.
    User(String),
    /// An address or a CIDR block, as text (`1.2.3.4`, `2001:db8::/32`).
    Address(String),
}

impl AdminRequest {
    /// The action's name in audit lines.
    pub fn action(&self) -> &'static str {
        match self {
            AdminRequest::ListRooms { .. } => "list-rooms",
            AdminRequest::Room { .. } => "show-room",
            AdminRequest::History { .. } => "room-history",
            AdminRequest::SetVariable { .. } => "set-variable",
            AdminRequest::DeleteVariable { .. } => "delete-variable",
            AdminRequest::ResetRoom { .. } => "reset-room",
            AdminRequest::Rollback { .. } => "rollback",
            AdminRequest::Kick(_) => "kick",
            AdminRequest::ListBans => "list-bans",
            AdminRequest::Ban { .. } => "ban",
            AdminRequest::LiftBan { .. } => "lift-ban",
            AdminRequest::ListBlocks => "list-blocks",
            AdminRequest::Block { .. } => "block",
            AdminRequest::Unblock { .. } => "unblock",
        }
    }

    /// Whether it changes anything (audited at info level; reads at debug).
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            AdminRequest::ListRooms { .. }
                | AdminRequest::Room { .. }
                | AdminRequest::History { .. }
                | AdminRequest::ListBans
                | AdminRequest::ListBlocks
        )
    }
}
