//! The MultiStudio dialect: one JSON object with a `kind` per message both ways; a HELLO first,
//! then several rooms per connection, request ids (`rid`) echoed in replies, four-character
//! error codes, and reconnect tokens that let a session outlive its connection.
//!
//! Errors are `{"kind": <4CC>, "why": <case>, "rid"?}`; most leave the connection open. Which
//! close it, and with which code, is decided by [`farewell`] from the typed [`Reason`].

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::info;
use simd_json::prelude::*;
use simd_json::tape::Value;

use super::resume::{Reconnects, Resumed};
use super::{
    check_room, json, room_text, variables_object, Dialect, Env, Outbox, Outcome, Peer, Reason,
    Refusal,
};
use crate::engine::{ClientId, Rejection, RoomKey, Rule, SetOutcome, ValueRef};
use crate::policy::UsernameProblem;

/// How long a client on `/ws/multistudio` has for its HELLO.
pub const HELLO_WINDOW: Duration = Duration::from_secs(5);

/// Longest accepted `rid`, in characters.
pub const MAX_RID_CHARS: usize = 128;

/// Who the connection is, once it said HELLO.
#[derive(Debug, Default)]
pub(super) struct Studio {
    /// The session's current reconnect token; `None` before HELLO.
    token: Option<Box<str>>,
    /// The `rid` of the request that is closing the connection, for the last message.
    closing_rid: Option<Box<str>>,
}

/// A request's `rid`, borrowed from the message.
type Rid<'a> = Option<&'a str>;

pub(super) fn on_message(
    doc: Value<'_, '_>,
    studio: &mut Studio,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    let out = &mut peer.outbox;
    if !doc.is_object() {
        error(out, "PROT", "not_an_object", None);
        return Outcome::Continue;
    }
    let rid = match doc.get("rid") {
        None => None,
        Some(rid) => match rid.into_string() {
            Some(rid) if rid.chars().nth(MAX_RID_CHARS).is_none() => Some(rid),
            _ => {
                error(out, "PROT", "invalid_rid", None);
                return Outcome::Continue;
            }
        },
    };
    let Some(kind) = json::get_str(doc, "kind") else {
        error(out, "PROT", "missing_kind", rid);
        return Outcome::Continue;
    };
    if studio.token.is_none() && kind != "HELLO" {
        error(out, "PROT", "hello_required", rid);
        return Outcome::Continue;
    }
    let outcome = match kind {
        "HELLO" => hello(doc, rid, studio, peer, env),
        "JOIN_ROOM" => join_room(doc, rid, studio, peer, env),
        "LEAVE_ROOM" => leave_room(doc, rid, studio, peer, env),
        "SET" => set(doc, rid, peer, env),
        _ => {
            error(out, "PROT", "unknown_kind", rid);
            Outcome::Continue
        }
    };
    if let Outcome::Close(_) = outcome {
        studio.closing_rid = rid.map(Into::into);
    }
    outcome
}

fn hello(
    doc: Value<'_, '_>,
    rid: Rid<'_>,
    studio: &mut Studio,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    if studio.token.is_some() {
        error(&mut peer.outbox, "PROT", "hello_repeated", rid);
        return Outcome::Continue;
    }
    let Some(username) = json::get_str(doc, "username") else {
        error(&mut peer.outbox, "PROT", "missing_username", rid);
        return Outcome::Continue;
    };
    let token = match doc.get("reconnect_token") {
        None => None,
        Some(token) => match token.into_string() {
            Some(token) => Some(token),
            None => {
                error(&mut peer.outbox, "PROT", "invalid_reconnect_token", rid);
                return Outcome::Continue;
            }
        },
    };
    if let Err(problem) = env.policy.check_username(username) {
        return Outcome::Close(Reason::Username(problem));
    }
    let resumed = match token {
        Some(token) => env.reconnects.resume(token, peer.client, env.now),
        None => Ok(None),
    };
    let (resumed, user_id, token) = match resumed {
        Ok(Some((resumed, token))) => {
            let user_id = resumed.user_id.clone();
            (Some(resumed), user_id, token)
        }
        Ok(None) => match env.reconnects.start(peer.client, username) {
            Ok((user_id, token)) => (None, user_id, token),
            Err(_) => return Outcome::Close(Reason::ServerFault),
        },
        Err(_) => return Outcome::Close(Reason::ServerFault),
    };
    let username = resumed
        .as_ref()
        .map_or(username, |resumed: &Resumed| &*resumed.username);
    peer.user = Some(username.into());
    peer.outbox.push_with(|out| {
        out.push_str(r#"{"kind":"HELLO","user":{"id":"#);
        json::push_string(out, &user_id);
        out.push_str(r#","username":"#);
        json::push_string(out, username);
        out.push_str(r#"},"reconnected":"#);
        out.push_str(if resumed.is_some() { "true" } else { "false" });
        out.push_str(r#","reconnect_token":"#);
        json::push_string(out, &token);
        push_rid(out, rid);
        out.push('}');
    });
    if let Some(resumed) = resumed {
        let user: Box<str> = peer.user.clone().unwrap_or_default();
        for room in resumed.rooms {
            // The memberships held for the old connection pass to this one: leaving and
            // joining in one step, so nobody can take the place in between.
            let Some(room_id) = env.engine.room_id(room).map(Box::<str>::from) else {
                continue;
            };
            env.engine.leave(room, resumed.previous, env.now);
            if let Ok(key) = peer.enter(&room_id, &user, Dialect::Studio, None, env) {
                joined(&mut peer.outbox, &room_id, key, peer.client, env, None);
            }
        }
    }
    studio.token = Some(token);
    sync_rooms(studio, peer, env.reconnects);
    Outcome::Joined
}

fn join_room(
    doc: Value<'_, '_>,
    rid: Rid<'_>,
    studio: &Studio,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    let Some(room) = room_field(doc, rid, &mut peer.outbox) else {
        return Outcome::Continue;
    };
    if let Some(key) = membership(peer, env, &room) {
        // Already a member: the variables again, shared and caught up from like a join's.
        joined(&mut peer.outbox, &room, key, peer.client, env, rid);
        return Outcome::Continue;
    }
    match check_room(&room, env.policy) {
        Ok(()) => {}
        Err(Reason::InvalidRoom) => {
            error(&mut peer.outbox, "PROT", "invalid_room", rid);
            return Outcome::Continue;
        }
        Err(_) => {
            error(&mut peer.outbox, "ROOM", "room_not_allowed", rid);
            return Outcome::Continue;
        }
    }
    if peer.memberships.len() >= env.policy.max_rooms_per_connection {
        error(&mut peer.outbox, "ROOM", "too_many_rooms", rid);
        return Outcome::Continue;
    }
    let user: Box<str> = peer.user.clone().unwrap_or_default();
    match peer.enter(&room, &user, Dialect::Studio, None, env) {
        Ok(key) => {
            joined(&mut peer.outbox, &room, key, peer.client, env, rid);
            sync_rooms(studio, peer, env.reconnects);
            info!(
                "[\"{}\" {room}] joined room (studio)",
                peer.user.as_deref().unwrap_or("")
            );
        }
        Err(Refusal::Wait) => return Outcome::Wait,
        Err(Refusal::Refused(Reason::RoomFull)) => {
            error(&mut peer.outbox, "FULL", "room_full", rid)
        }
        Err(Refusal::Refused(Reason::TooManyRooms)) => {
            error(&mut peer.outbox, "FULL", "server_full_of_rooms", rid)
        }
        Err(Refusal::Refused(_)) => error(&mut peer.outbox, "ROOM", "room_unavailable", rid),
    }
    Outcome::Continue
}

fn leave_room(
    doc: Value<'_, '_>,
    rid: Rid<'_>,
    studio: &Studio,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    let Some(room) = room_field(doc, rid, &mut peer.outbox) else {
        return Outcome::Continue;
    };
    let Some(key) = membership(peer, env, &room) else {
        error(&mut peer.outbox, "NORM", "not_in_room", rid);
        return Outcome::Continue;
    };
    env.engine.leave(key, peer.client, env.now);
    peer.memberships.retain(|m| m.room != key);
    sync_rooms(studio, peer, env.reconnects);
    peer.outbox.push_with(|out| {
        out.push_str(r#"{"kind":"LEFT_ROOM","room":"#);
        json::push_string(out, &room);
        push_rid(out, rid);
        out.push('}');
    });
    Outcome::Continue
}

fn set(doc: Value<'_, '_>, rid: Rid<'_>, peer: &mut Peer, env: &mut Env<'_>) -> Outcome {
    let Some(room) = room_field(doc, rid, &mut peer.outbox) else {
        return Outcome::Continue;
    };
    let out = &mut peer.outbox;
    let Some(name) = json::get_str(doc, "name") else {
        error(out, "PROT", "missing_name", rid);
        return Outcome::Continue;
    };
    let Some(value) = doc.get("value") else {
        error(out, "PROT", "missing_value", rid);
        return Outcome::Continue;
    };
    let Some(key) = membership(peer, env, &room) else {
        error(&mut peer.outbox, "NORM", "not_in_room", rid);
        return Outcome::Continue;
    };
    let mut number = None;
    let Some(value) = json::value_ref(value, &mut number) else {
        env.engine.stats.sets_rejected += 1;
        error(&mut peer.outbox, "VALU", "invalid_value", rid);
        return Outcome::Continue;
    };
    let failure = match env
        .engine
        .set_at(key, peer.client, name, value, true, env.now)
    {
        SetOutcome::Applied => None,
        SetOutcome::Rejected(Rejection::Rule(rule)) => {
            peer.log_rule_refusal(env, name, rule);
            rule_error(&mut peer.outbox, rule, rid);
            return Outcome::Continue;
        }
        SetOutcome::Rejected(Rejection::InvalidName) => Some(("VALU", "invalid_name")),
        SetOutcome::Rejected(Rejection::InvalidValue) => Some(("VALU", "invalid_value")),
        SetOutcome::Rejected(Rejection::TooManyVariables) => Some(("VARS", "too_many_variables")),
        SetOutcome::Unknown => Some(("NORM", "not_in_room")),
    };
    match failure {
        Some((code, why)) => error(&mut peer.outbox, code, why, rid),
        None => {
            if let Some(rid) = rid {
                peer.outbox.push_with(|out| {
                    out.push_str(r#"{"kind":"OK""#);
                    push_rid(out, Some(rid));
                    out.push('}');
                });
            }
        }
    }
    Outcome::Continue
}

/// A number too large for a double made the message unreadable: there is no rid to echo.
pub(super) fn on_number_out_of_range(peer: &mut Peer) -> Outcome {
    error(&mut peer.outbox, "VALU", "invalid_value", None);
    Outcome::Continue
}

/// What the client is told before the close frame, and the close code.
pub(super) fn farewell(reason: Reason, studio: &mut Studio, outbox: &mut Outbox) -> u16 {
    let rid = studio.closing_rid.take();
    let message = match reason {
        Reason::InvalidJson => Some(("PROT", "invalid_json")),
        Reason::Username(UsernameProblem::Length) => Some(("USER", "username_length")),
        Reason::Username(UsernameProblem::Characters) => Some(("USER", "username_characters")),
        Reason::Username(UsernameProblem::Filtered) => Some(("USER", "username_refused")),
        Reason::Kicked => Some(("USER", "kicked")),
        Reason::Username(UsernameProblem::Banned) => Some(("USER", "username_banned")),
        Reason::AddressBanned => Some(("USER", "address_banned")),
        Reason::ServerFull => Some(("FULL", "server_full")),
        Reason::TooManyMessages => Some(("RATE", "too_many_messages")),
        Reason::TooManyBytes => Some(("RATE", "too_many_bytes")),
        Reason::HandshakeTimeout => Some(("TIME", "hello_timeout")),
        _ => None,
    };
    if let Some((code, why)) = message {
        error(outbox, code, why, rid.as_deref());
    }
    reason.close_code()
}

/// The connection ended abnormally: the session is kept for reconnection, charged to
/// `address`. Returns whether it was parked (its memberships must then stay in the engine).
pub(super) fn park(
    studio: &mut Studio,
    reconnects: &mut Reconnects,
    now: Instant,
    address: Option<IpAddr>,
) -> bool {
    studio
        .token
        .take()
        .is_some_and(|token| reconnects.park(&token, now, address))
}

/// The connection closed normally: the session ends with it.
pub(super) fn end(studio: &mut Studio, reconnects: &mut Reconnects) {
    if let Some(token) = studio.token.take() {
        reconnects.end(&token);
    }
}

/// The message's `room`; `None` (with the error queued) when it is missing or not a room id.
fn room_field<'v>(doc: Value<'_, 'v>, rid: Rid<'_>, outbox: &mut Outbox) -> Option<Cow<'v, str>> {
    let why = match room_text(doc.get("room")) {
        Ok(room) => return Some(room),
        Err(_) if doc.get("room").is_none() => "missing_room",
        Err(_) => "invalid_room",
    };
    error(outbox, "PROT", why, rid);
    None
}

fn membership(peer: &Peer, env: &Env<'_>, room: &str) -> Option<RoomKey> {
    peer.memberships
        .iter()
        .map(|m| m.room)
        .find(|&key| env.engine.room_id(key) == Some(room))
}

fn sync_rooms(studio: &Studio, peer: &Peer, reconnects: &mut Reconnects) {
    if let Some(token) = &studio.token {
        reconnects.set_rooms(token, peer.memberships.iter().map(|m| m.room));
    }
}

/// `member`: the client, a member of the room, which may be sent a shared rendering of the
/// variables up to a second old (see `variables_object`).
fn joined(
    outbox: &mut Outbox,
    room: &str,
    key: RoomKey,
    member: ClientId,
    env: &mut Env<'_>,
    rid: Rid<'_>,
) {
    let variables = variables_object(env.engine, key, member, env.now);
    outbox.push_wrapped(
        |out| {
            out.push_str(r#"{"kind":"JOINED_ROOM","room":"#);
            json::push_string(out, room);
            out.push_str(r#","variables":"#);
        },
        variables,
        |out| {
            push_rid(out, rid);
            out.push('}');
        },
    );
}

/// The code of a set a rule of the project refused (not one the protocol defines; none of
/// its codes means this). `why` names the rule in the protocol's style, `rule` as configured.
const RULE_VIOLATED: &str = "RULE";

fn rule_error(outbox: &mut Outbox, rule: Rule, rid: Rid<'_>) {
    outbox.push_with(|out| {
        out.push_str(r#"{"kind":"#);
        json::push_string(out, RULE_VIOLATED);
        out.push_str(r#","why":"#);
        json::push_string(out, rule_why(rule));
        out.push_str(r#","rule":"#);
        json::push_string(out, rule.name());
        push_rid(out, rid);
        out.push('}');
    });
}

fn rule_why(rule: Rule) -> &'static str {
    match rule {
        Rule::ReadOnly => "read_only",
        Rule::Writers => "writers",
        Rule::Integer => "integer",
        Rule::Min => "min",
        Rule::Max => "max",
        Rule::OnlyIncrease => "only_increase",
        Rule::MaxStep => "max_step",
        Rule::MaxSetsPerMinute => "max_sets_per_minute",
    }
}

fn error(outbox: &mut Outbox, code: &str, why: &str, rid: Rid<'_>) {
    outbox.push_with(|out| {
        out.push_str(r#"{"kind":"#);
        json::push_string(out, code);
        out.push_str(r#","why":"#);
        json::push_string(out, why);
        push_rid(out, rid);
        out.push('}');
    });
}

fn push_rid(out: &mut String, rid: Rid<'_>) {
    if let Some(rid) = rid {
        out.push_str(r#","rid":"#);
        json::push_string(out, rid);
    }
}

pub(super) fn encode_set(room: &str, name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"{"kind":"SET","room":"#);
    json::push_string(out, room);
    out.push_str(r#","name":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    json::push_value(out, value);
    out.push('}');
}
