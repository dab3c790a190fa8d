//! The admin API's rooms side: listing rooms, showing one, an operator's set, delete, reset
//! and rollback, and kicks.
//!
//! Reads go the way of `queries.rs`: answered from memory, or through a read of the backend
//! ([`AdminWait`] in `Waiting`, finished by `finish_read`). A change is made through the
//! engine like a member's (`engine/admin.rs`), so members of every dialect get it at the
//! room's next flush, history records it as `@<operator>`, and in a cluster it goes to Redis
//! and the other nodes like any change. A change to a room not in memory waits for its load
//! the way a join does (`Engine::admin_room`): the request is kept in `admin_loads` and
//! carried out again when the loop resumes its connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use log::info;

use super::admin_json::{self, AdminMemberRow};
use super::durable::Durable;
use super::queries::Waiting;
use super::{slot_of, Server};
use crate::admin::rollback::{self, Change, RollbackError};
use crate::admin::{AdminRequest, KickTarget};
use crate::dialect::{Dialect, Reason};
use crate::engine::history::merge_newest;
use crate::engine::{
    ClientId, HistoryEntry, JoinError, ReadRequest, Rejection, RoomKey, RoomSummary, StoredRead,
    ValueRef,
};
use crate::query::Answer;

/// An admin request waiting for the backend's read.
#[derive(Debug)]
pub(super) enum AdminWait {
    /// The rooms list: `memory` is the page's part in memory, the read brings the rest.
    Rooms {
        memory: Vec<RoomSummary>,
        offset: usize,
        limit: usize,
    },
    /// A room not in memory: its stored variables.
    Room { room: Box<str> },
    /// A rollback of `room` (in memory) to `to_ms`: its stored history.
    Rollback {
        room: Box<str>,
        operator: Arc<str>,
        to_ms: u64,
    },
}

impl Server {
    /// Carries out `request` of `operator` for the connection of `client`; `None` when the
    /// answer comes later.
    pub(super) fn admin_rooms(
        &mut self,
        client: ClientId,
        operator: &str,
        request: AdminRequest,
        now: Instant,
    ) -> Option<Answer> {
        match request {
            AdminRequest::ListRooms { offset, limit } => self.list_rooms(client, offset, limit),
            AdminRequest::Room { room } => self.show_room(client, &room),
            // The public `/logs` read without its project rules (`queries.rs`).
            AdminRequest::History {
                room,
                offset,
                limit,
            } => self.start_logs(client, &room, offset, limit),
            AdminRequest::Kick(target) => Some(self.kick(target, now)),
            AdminRequest::SetVariable { .. }
            | AdminRequest::DeleteVariable { .. }
            | AdminRequest::ResetRoom { .. }
            | AdminRequest::Rollback { .. } => self.change_room(client, operator, request, now),
            _ => Some(admin_json::error(404, "not a request of the rooms")),
        }
    }

    /// An admin request that waited for its room's load is carried out now, its answer
    /// written; false when `client` had none waiting.
    pub(super) fn resume_admin(&mut self, client: ClientId, now: Instant) -> bool {
        let Some((operator, request)) = self.queries.admin_loads.remove(&client) else {
            return false;
        };
        if !self.awaits_answer(client) {
            // Its deadline answered 503 (or it closed): the operator was told it failed.
            info!(
                "admin: {operator}'s {} dropped: its connection stopped waiting",
                request.action()
            );
            return true;
        }
        if let Some(answer) = self.admin_rooms(client, &operator, request, now) {
            self.serve_client(client, now, |conn, ctx| conn.answer_query(answer, ctx));
        }
        true
    }

    /// Whether the connection of `client` still waits for its request's answer.
    fn awaits_answer(&self, client: ClientId) -> bool {
        let (slot, generation) = slot_of(client);
        self.conns
            .get(slot)
            .is_some_and(|e| e.generation == generation && e.conn.awaits_answer())
    }

    /// Rooms in memory first (by id), then, with the store, the rooms only on disk (by id).
    fn list_rooms(&mut self, client: ClientId, offset: usize, limit: usize) -> Option<Answer> {
        let mut memory = self.engine.room_summaries();
        memory.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let in_memory = memory.len();
        let page: Vec<RoomSummary> = memory.iter().skip(offset).take(limit).cloned().collect();
        let wanted = limit.saturating_sub(page.len());
        if wanted == 0 || !matches!(self.durable, Some(Durable::Store(..))) {
            let rooms = page.iter().map(|r| (r, true));
            return Some(Answer::Json(admin_json::rooms(rooms, offset, limit)));
        }
        let read = ReadRequest::Rooms {
            skip: offset.saturating_sub(in_memory),
            count: wanted,
            in_memory: memory.into_iter().map(|r| r.id.into_boxed_str()).collect(),
        };
        let wait = AdminWait::Rooms {
            memory: page,
            offset,
            limit,
        };
        self.send_read(client, read, Waiting::Admin(wait))
    }

    fn show_room(&mut self, client: ClientId, room: &str) -> Option<Answer> {
        if let Some(key) = self.engine.room_key(room) {
            return Some(Answer::Json(self.render_room(room, key)));
        }
        if self.durable.is_none() {
            return Some(no_such_room());
        }
        let read = ReadRequest::Variables { room: room.into() };
        let wait = AdminWait::Room { room: room.into() };
        self.send_read(client, read, Waiting::Admin(wait))
    }

    /// A room in memory with its variables and members.
    fn render_room(&self, room: &str, key: RoomKey) -> String {
        let anonymize = self.settings.anonymize_ips;
        let members: Vec<AdminMemberRow<'_>> = self
            .engine
            .admin_members(key)
            .map(|m| {
                let (slot, generation) = slot_of(m.client);
                let address = self
                    .conns
                    .get(slot)
                    .filter(|e| e.generation == generation)
                    .map(|e| address_text(e.conn.client_ip(), anonymize));
                let dialect = Dialect::name_of(m.format);
                (m.client.0, m.user, dialect, m.joined_ms, address)
            })
            .collect();
        admin_json::room(room, true, self.engine.variables_shown(key), members)
    }

    /// Set, delete, reset, rollback: the room is loaded first when it is not in memory.
    fn change_room(
        &mut self,
        client: ClientId,
        operator: &str,
        request: AdminRequest,
        now: Instant,
    ) -> Option<Answer> {
        let (room, creates) = match &request {
            AdminRequest::SetVariable { room, .. } => (room.as_str(), true),
            AdminRequest::DeleteVariable { room, .. }
            | AdminRequest::ResetRoom { room }
            | AdminRequest::Rollback { room, .. } => (room.as_str(), false),
            _ => return Some(admin_json::error(404, "not a change of a room")),
        };
        let value = match &request {
            AdminRequest::SetVariable { value_json, .. } => match parse_value(value_json) {
                Ok(value) => Some(value),
                Err(why) => return Some(admin_json::error(400, why)),
            },
            _ => None,
        };
        if !creates && self.durable.is_none() && self.engine.room_key(room).is_none() {
            return Some(no_such_room());
        }
        let key = match self.engine.admin_room(room, client, now) {
            Ok(key) => key,
            Err(JoinError::Loading) => {
                self.queries
                    .admin_loads
                    .insert(client, (operator.to_owned(), request));
                return None;
            }
            Err(JoinError::Unavailable) => return Some(Answer::Unavailable),
            Err(_) => {
                return Some(admin_json::error(
                    503,
                    "no room for it: the server is at its room or memory limit",
                ))
            }
        };
        let shown: Arc<str> = Arc::from(format!("@{operator}"));
        let answer = match request {
            AdminRequest::SetVariable { name, .. } => {
                let (number, text) = value.unwrap_or_default();
                let value = if number {
                    ValueRef::Number(&text)
                } else {
                    ValueRef::Text(&text)
                };
                match self.engine.admin_set(key, &shown, &name, value, now) {
                    Ok(()) => admin_json::ok(&[]),
                    Err(why) => admin_json::error(400, &self.refusal_text(key, why)),
                }
            }
            AdminRequest::DeleteVariable { name, .. } => {
                match self.engine.admin_delete(key, &shown, &name, now) {
                    Ok(()) => admin_json::ok(&[]),
                    Err(_) => admin_json::error(404, "no such variable"),
                }
            }
            AdminRequest::ResetRoom { .. } => {
                let names: Vec<String> = self
                    .engine
                    .variables_of(key)
                    .map(|(name, _)| name.to_owned())
                    .collect();
                let deleted = names
                    .iter()
                    .filter(|name| self.engine.admin_delete(key, &shown, name, now).is_ok())
                    .count();
                admin_json::ok(&[("variables", deleted)])
            }
            AdminRequest::Rollback { room, to_ms } => {
                return self.start_rollback(client, key, &room, shown, to_ms, now)
            }
            _ => admin_json::error(404, "not a change of a room"),
        };
        Some(answer)
    }

    /// Why the engine refused an operator's set, for the 400 answer.
    fn refusal_text(&self, key: RoomKey, why: Rejection) -> String {
        let settings = self.engine.room_settings(key);
        match why {
            Rejection::InvalidValue if settings.allow_non_numeric => format!(
                "invalid value: this project takes numbers or text of at most {} characters",
                settings.max_value_chars
            ),
            Rejection::InvalidValue => {
                "invalid value: this project takes numbers only (allow-non-numeric is off)"
                    .to_owned()
            }
            Rejection::InvalidName => {
                "invalid variable name: it must start with the cloud prefix (\"☁ \")".to_owned()
            }
            Rejection::TooManyVariables => format!(
                "too many variables: this project allows {} per room (or room state is at its \
                 memory budget)",
                settings.max_variables_per_room
            ),
            Rejection::Rule(_) => why.as_str().to_owned(),
        }
    }

    /// Rolls room `key` back to `to_ms`: at once from memory without a backend, otherwise
    /// after reading its stored history.
    fn start_rollback(
        &mut self,
        client: ClientId,
        key: RoomKey,
        room: &str,
        operator: Arc<str>,
        to_ms: u64,
        now: Instant,
    ) -> Option<Answer> {
        let cap = self.engine.history_cap();
        if cap == 0 {
            return Some(admin_json::error(
                409,
                "history is off (--history 0): there is nothing to roll back from",
            ));
        }
        if self.durable.is_none() {
            return Some(self.roll_back(key, &operator, to_ms, &[], now));
        }
        // As for `/logs`: the store reads every entry from the oldest one in memory on (a save
        // may move them to disk before the read), and the older ones below it.
        let (_, oldest) = self.engine.history_bounds(key);
        let read = ReadRequest::History {
            room: room.into(),
            recent: Some((oldest, u64::MAX)),
            before: oldest,
            skip: 0,
            count: cap,
            newest: cap,
        };
        let wait = AdminWait::Rollback {
            room: room.into(),
            operator,
            to_ms,
        };
        self.send_read(client, read, Waiting::Admin(wait))
    }

    /// Computes and applies the rollback of `key` to `to_ms` from the entries in memory and
    /// `stored` (newest first), as one operator's change.
    fn roll_back(
        &mut self,
        key: RoomKey,
        operator: &Arc<str>,
        to_ms: u64,
        stored: &[HistoryEntry],
        now: Instant,
    ) -> Answer {
        let changes = {
            let current: Vec<(&str, &str)> = self
                .engine
                .variables_of(key)
                .map(|(name, value)| (name, value.text()))
                .collect();
            let unsaved = self.engine.history_newest(key);
            let result = if matches!(self.durable, Some(Durable::Cluster(..))) {
                // Redis's list mixes every node's entries: this node's unsaved ones are the
                // newest (see `finish_read`).
                rollback::rollback(&current, unsaved.chain(stored), to_ms)
            } else {
                let entries = merge_newest(unsaved, stored, 0, usize::MAX);
                rollback::rollback(&current, entries, to_ms)
            };
            match result {
                Ok(changes) => changes,
                Err(e) => return rollback_refused(&e),
            }
        };
        let mut applied = 0;
        for change in &changes {
            let done = match change {
                Change::Set { name, value } => self
                    .engine
                    .admin_set(key, operator, name, value_of_text(value), now)
                    .is_ok(),
                Change::Delete { name } => {
                    self.engine.admin_delete(key, operator, name, now).is_ok()
                }
            };
            applied += usize::from(done);
        }
        let refused = changes.len() - applied;
        if refused > 0 {
            info!(
                "rollback by {operator}: {refused} of {} changes refused",
                changes.len()
            );
            return admin_json::ok(&[("variables", applied), ("refused", refused)]);
        }
        admin_json::ok(&[("variables", applied)])
    }

    /// The backend's read for an admin request came back.
    pub(super) fn finish_admin_read(
        &mut self,
        client: ClientId,
        wait: AdminWait,
        read: StoredRead,
    ) -> Answer {
        match (wait, read) {
            (
                AdminWait::Rooms {
                    memory,
                    offset,
                    limit,
                },
                StoredRead::Rooms(stored),
            ) => {
                let listed = memory.iter().map(|r| (r, true)).chain(
                    stored
                        .iter()
                        .map(|r| (r, self.engine.room_key(&r.id).is_some())),
                );
                Answer::Json(admin_json::rooms(listed, offset, limit))
            }
            (AdminWait::Room { room }, read) => match (self.engine.room_key(&room), read) {
                // It came into memory since: memory is the newer.
                (Some(key), _) => Answer::Json(self.render_room(&room, key)),
                (None, StoredRead::Variables(variables)) if !variables.is_empty() => {
                    let shown = variables
                        .iter()
                        .map(|v| (&*v.name, &*v.value, &*v.user, v.changed_ms));
                    Answer::Json(admin_json::room(&room, false, shown, []))
                }
                (None, StoredRead::Variables(_)) => no_such_room(),
                (None, _) => Answer::Unavailable,
            },
            (
                AdminWait::Rollback {
                    room,
                    operator,
                    to_ms,
                },
                StoredRead::History(stored),
            ) => match self.engine.room_key(&room) {
                // Its deadline answered 503 (or it closed): the operator was told it failed.
                _ if !self.awaits_answer(client) => {
                    info!("admin: {operator}'s rollback dropped: its connection stopped waiting");
                    Answer::Unavailable
                }
                Some(key) => self.roll_back(key, &operator, to_ms, &stored, Instant::now()),
                None => Answer::Unavailable,
            },
            _ => Answer::Unavailable,
        }
    }

    fn kick(&mut self, target: KickTarget, now: Instant) -> Answer {
        match target {
            KickTarget::Connection(id) => {
                if self.kick_client(ClientId(id), now) {
                    admin_json::ok(&[("kicked", 1)])
                } else {
                    admin_json::error(404, "no open WebSocket connection has that id")
                }
            }
            KickTarget::User { room, user } => {
                let kicked = self.kick_local(&room, &user, now);
                // Every other node closes that user's connections in the room too.
                self.publish_kick(&room, &user);
                admin_json::ok(&[("kicked", kicked)])
            }
        }
    }

    /// Closes every connection of `user` (case-insensitively) in `room` on this node, in each
    /// dialect's "denied" form (4002, array-RPC `auth.denied`); how many. The cluster's
    /// control channel calls it for a kick made on another node.
    pub(super) fn kick_local(&mut self, room: &str, user: &str, now: Instant) -> usize {
        let Some(key) = self.engine.room_key(room) else {
            return 0;
        };
        let clients = self.engine.clients_of_user(key, user);
        clients
            .into_iter()
            .filter(|&client| self.kick_client(client, now))
            .count()
    }

    /// Closes the WebSocket connection of `client` as kicked; false when it has none open
    /// (gone, closing, or an HTTP connection).
    fn kick_client(&mut self, client: ClientId, now: Instant) -> bool {
        let (slot, generation) = slot_of(client);
        let open = self
            .conns
            .get(slot)
            .is_some_and(|e| e.generation == generation && e.conn.is_open());
        open && self.serve_client(client, now, |conn, ctx| {
            conn.begin_close(Reason::Kicked, ctx)
        })
    }
}

fn no_such_room() -> Answer {
    admin_json::error(404, "no such room")
}

fn rollback_refused(error: &RollbackError) -> Answer {
    admin_json::error(409, &error.describe())
}

/// The value of a set: `{"value": <number or string>}`'s JSON text as sent, as (whether a
/// number, its text).
fn parse_value(json: &str) -> Result<(bool, String), &'static str> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::String(text)) => Ok((false, text)),
        Ok(serde_json::Value::Number(number)) => {
            let text = json.trim();
            if is_plain_number(text) {
                return Ok((true, text.to_owned()));
            }
            match number.as_f64() {
                Some(n) if n.is_finite() => Ok((true, n.to_string())),
                _ => Err("invalid value: the number is out of range"),
            }
        }
        _ => Err("invalid value: it must be a number or a string"),
    }
}

/// `-?digits(.digits)?`: a number as Scratch writes it.
fn is_plain_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let mut parts = unsigned.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// A value as history recorded it (its text): a number when it reads as one.
fn value_of_text(text: &str) -> ValueRef<'_> {
    if is_plain_number(text) {
        ValueRef::Number(text)
    } else {
        ValueRef::Text(text)
    }
}

/// A member's address as the logs name it (behind a trusted proxy, the client the proxy
/// named). With `--anonymize-ips`, the network the logged address stands for (`a.b.c.0/24`,
/// IPv6 `/48`), so that a ban made from it covers every address it names.
fn address_text(ip: Option<IpAddr>, anonymize: bool) -> String {
    match ip {
        None => "unix".to_owned(),
        Some(ip) if anonymize => {
            let prefix = if ip.is_ipv4() { 24 } else { 48 };
            format!("{}/{prefix}", crate::net::http::anonymize(ip))
        }
        Some(ip) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_show_as_logged_or_as_the_network_anonymized() {
        let v4: IpAddr = [203, 0, 113, 7].into();
        let v6: IpAddr = "2001:db8:1:2::5".parse().expect("ip");
        assert_eq!(address_text(Some(v4), false), "203.0.113.7");
        assert_eq!(address_text(Some(v4), true), "203.0.113.0/24");
        assert_eq!(address_text(Some(v6), false), "2001:db8:1:2::5");
        assert_eq!(address_text(Some(v6), true), "2001:db8:1::/48");
        assert_eq!(address_text(None, true), "unix");
    }

    #[test]
    fn values_are_numbers_or_strings() {
        assert_eq!(parse_value("12"), Ok((true, "12".to_owned())));
        assert_eq!(parse_value(" -1.5 "), Ok((true, "-1.5".to_owned())));
        assert_eq!(parse_value("1e3"), Ok((true, "1000".to_owned())));
        assert_eq!(
            parse_value(r#""<b>x</b>""#),
            Ok((false, "<b>x</b>".to_owned()))
        );
        assert!(parse_value("true").is_err());
        assert!(parse_value("[1]").is_err());
        assert!(parse_value("").is_err());
        assert_eq!(value_of_text("42"), ValueRef::Number("42"));
        assert_eq!(value_of_text("4.2.1"), ValueRef::Text("4.2.1"));
        assert_eq!(value_of_text(""), ValueRef::Text(""));
    }
}
