//! The array-RPC dialect (venueless's WebSocket protocol) on `/ws/world/<room>`: one JSON array
//! per message both ways, `[action, payload]` or `[action, correlation id, payload]`.
//!
//! Requests get exactly one reply, `["success", id, result]` or `["error", id, {"code": ...}]`,
//! carrying the id exactly when the request had three elements. Other members' changes arrive
//! as `["cloud.set", {"name": N, "value": V}]`, one per message. Mistakes in a request are
//! answered with an error and the connection stays open; only text that is not a JSON array,
//! refused authentication, full rooms and rate limits end it, each with an error first.

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::users::{Counted, Identity};
use super::{
    check_room, json, variables_object, Dialect, Env, Outbox, Outcome, Peer, Reason, Users,
};
use crate::engine::{EditError, Engine, Rejection, SetOutcome, ValueRef};

/// Longest accepted `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// The room this connection asked for in its path, and who it is once authenticated.
#[derive(Debug)]
pub(super) struct World {
    /// `None` when the path named no valid room.
    room: Option<Box<str>>,
    /// The identity counted by `--max-connections-per-user`, while it is counted.
    counted_as: Option<Counted>,
}

impl World {
    pub fn new(room: Option<String>) -> Self {
        World {
            room: room.map(String::into_boxed_str),
            counted_as: None,
        }
    }

    /// The room the path named.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Stops counting this connection for its user.
    pub fn depart(&mut self, peer: &Peer, users: &mut Users) {
        if let (Some(counted), Some(room)) = (self.counted_as.take(), peer.room()) {
            users.depart(room, counted, peer.client);
        }
    }
}

/// A room refused by its form or by the operator is refused before any message.
pub(super) fn on_open(world: &World, policy: &crate::policy::Policy) -> Outcome {
    match &world.room {
        None => Outcome::Close(Reason::InvalidRoom),
        Some(room) => match check_room(room, policy) {
            Ok(()) => Outcome::Continue,
            Err(reason) => Outcome::Close(reason),
        },
    }
}

/// One request, borrowed from the parsed message.
struct Request<'t, 'v> {
    action: &'v str,
    /// The correlation id, when the request had three elements.
    id: Option<Value<'t, 'v>>,
    payload: Value<'t, 'v>,
}

pub(super) fn on_message(
    doc: Value<'_, '_>,
    world: &mut World,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    let Some(array) = doc.as_array() else {
        return Outcome::Close(Reason::Protocol("message is not a JSON array"));
    };
    let id = if array.len() == 3 { array.get(1) } else { None };
    let action = array.get(0).and_then(|a| a.into_string());
    let payload = array.get(array.len().saturating_sub(1));
    let (Some(action), Some(payload), 2..=3) = (action, payload, array.len()) else {
        error(&mut peer.outbox, id, "protocol.invalid");
        return Outcome::Continue;
    };
    let request = Request {
        action,
        id,
        payload,
    };
    match request.action {
        "ping" => {
            pong(&request, &mut peer.outbox);
            Outcome::Continue
        }
        "authenticate" => authenticate(&request, world, peer, env),
        _ if peer.room().is_none() => {
            error(&mut peer.outbox, request.id, "protocol.unauthenticated");
            Outcome::Continue
        }
        "cloud.set" => {
            cloud_set(&request, peer, env);
            Outcome::Continue
        }
        "cloud.get" => {
            cloud_get(&request, peer, env);
            Outcome::Continue
        }
        "cloud.rename" | "cloud.delete" => {
            cloud_edit(&request, peer, env);
            Outcome::Continue
        }
        _ => {
            error(&mut peer.outbox, request.id, "protocol.unknown_command");
            Outcome::Continue
        }
    }
}

/// A number too large for a double made the whole message unreadable, so there is no id to
/// answer with: the client is told without one.
pub(super) fn on_number_out_of_range(peer: &mut Peer, engine: &mut Engine) -> Outcome {
    engine.stats.sets_rejected += 1;
    peer.log_ignored(engine, "message", "number out of range");
    error(&mut peer.outbox, None, "cloud.invalid_value");
    Outcome::Continue
}

fn pong(request: &Request<'_, '_>, outbox: &mut Outbox) {
    let mut echoed = true;
    outbox.push_with(|out| {
        let start = out.len();
        echoed &= open_reply(out, "pong", request.id);
        echoed &= json::push_json(out, request.payload).is_some();
        out.push(']');
        if !echoed {
            // Still a reply to this request: it carries the id (`null` if that is too deep).
            out.truncate(start);
            write_error(out, request.id, "protocol.invalid");
        }
    });
}

fn authenticate(
    request: &Request<'_, '_>,
    world: &mut World,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    if peer.room().is_some() {
        error(&mut peer.outbox, request.id, "protocol.invalid");
        return Outcome::Continue;
    }
    if !request.payload.is_object() {
        error(&mut peer.outbox, request.id, "protocol.invalid");
        return Outcome::Continue;
    }
    let username = match request.payload.get("username") {
        None => None,
        Some(name) => match name.into_string() {
            Some(name) => match env.policy.check_username(name).inspect_err(|_| {
                peer.user = Some(name.chars().take(32).collect::<String>().into());
            }) {
                Ok(()) => Some(name),
                Err(problem) => return Outcome::Close(Reason::Username(problem)),
            },
            None => return Outcome::Close(Reason::NoIdentity),
        },
    };
    let client_id = match request.payload.get("client_id") {
        None => None,
        Some(id) => match id.into_string() {
            Some(id) if !id.is_empty() && id.chars().nth(MAX_CLIENT_ID_CHARS).is_none() => Some(id),
            _ => return Outcome::Close(Reason::NoIdentity),
        },
    };
    // A client id is the client's own secret and wins over the username, which anyone can
    // claim (see `users`); the log shows the username when there is one.
    let (identity, shown) = match (client_id, username) {
        (Some(id), name) => (Identity::ClientId(id), name.unwrap_or(id)),
        (None, Some(name)) => (Identity::Username(name), name),
        (None, None) => return Outcome::Close(Reason::NoIdentity),
    };
    peer.user = Some(shown.into());
    let Some(room_id) = world.room.as_deref() else {
        return Outcome::Close(Reason::InvalidRoom);
    };
    // Refused before entering, so the room never counts a connection it turns away. A room
    // not in memory holds none of this identity's connections.
    if let Some(room) = env.engine.room_key(room_id) {
        if !env.users.admits(room, identity) {
            return Outcome::Close(Reason::UserAtLimit);
        }
    }
    // Only a username is a name `writers` rules can list; a client id is a secret.
    let user = username.unwrap_or("");
    let room = match peer.enter(room_id, user, Dialect::Rpc, None, env) {
        Ok(room) => room,
        Err(refusal) => return refusal.outcome(),
    };
    world.counted_as = env.users.arrive(room, identity, peer.client);
    let variables = variables_object(env.engine, room, peer.client, env.now);
    peer.outbox.push_wrapped(
        |out| {
            open_reply(out, "authenticated", request.id);
            out.push_str(r#"{"room":"#);
            json::push_string(out, room_id);
            out.push_str(r#","variables":"#);
        },
        variables,
        |out| out.push_str("}]"),
    );
    Outcome::Joined
}

fn cloud_set(request: &Request<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) {
    let engine = &mut *env.engine;
    let name = request.payload.get("name").and_then(|n| n.into_string());
    let value = request.payload.get("value");
    let (Some(name), Some(value), Some(room)) = (name, value, peer.room()) else {
        engine.stats.sets_rejected += 1;
        error(&mut peer.outbox, request.id, "protocol.invalid");
        return;
    };
    let mut number = None;
    let Some(value) = json::value_ref(value, &mut number) else {
        engine.stats.sets_rejected += 1;
        error(&mut peer.outbox, request.id, "cloud.invalid_value");
        return;
    };
    let code = match engine.set_at(room, peer.client, name, value, true, env.now) {
        SetOutcome::Applied => None,
        SetOutcome::Rejected(Rejection::Rule(rule)) => {
            peer.log_rule_refusal(env, name, rule);
            peer.outbox.push_with(|out| {
                open_reply(out, "error", request.id);
                out.push_str(r#"{"code":"cloud.rule_violated","rule":"#);
                json::push_string(out, rule.name());
                out.push_str("}]");
            });
            return;
        }
        SetOutcome::Rejected(Rejection::InvalidName) => Some("cloud.invalid_name"),
        SetOutcome::Rejected(Rejection::InvalidValue) => Some("cloud.invalid_value"),
        SetOutcome::Rejected(Rejection::TooManyVariables) => Some("cloud.too_many_variables"),
        SetOutcome::Unknown => Some("cloud.unknown_variable"),
    };
    match code {
        None => success(&mut peer.outbox, request.id, |out| out.push_str("{}")),
        Some(code) => {
            peer.log_ignored(engine, "set", code);
            error(&mut peer.outbox, request.id, code);
        }
    }
}

fn cloud_get(request: &Request<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) {
    let Some(room) = peer.room() else {
        return;
    };
    // Shared like a join's: a large room is rendered at most once a second however many
    // clients ask, and the client catches up from the version the rendering shows.
    let variables = variables_object(env.engine, room, peer.client, env.now);
    peer.outbox.push_wrapped(
        |out| {
            open_reply(out, "success", request.id);
            out.push_str(r#"{"variables":"#);
        },
        variables,
        |out| out.push_str("}]"),
    );
}

fn cloud_edit(request: &Request<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) {
    let rename = request.action == "cloud.rename";
    let enabled = peer.room().is_some_and(|room| {
        if rename {
            env.engine.may_rename(room)
        } else {
            env.engine.may_delete(room)
        }
    });
    if !enabled {
        error(&mut peer.outbox, request.id, "cloud.disabled");
        return;
    }
    let name = request.payload.get("name").and_then(|n| n.into_string());
    let new_name = request
        .payload
        .get("new_name")
        .and_then(|n| n.into_string());
    let result = match (name, new_name, peer.room()) {
        (Some(name), Some(new_name), Some(room)) if rename => {
            env.engine
                .rename_at(room, peer.client, name, new_name, env.now)
        }
        (Some(name), _, Some(room)) if !rename => {
            env.engine.delete_at(room, peer.client, name, env.now)
        }
        _ => {
            error(&mut peer.outbox, request.id, "protocol.invalid");
            return;
        }
    };
    match result {
        Ok(()) => success(&mut peer.outbox, request.id, |out| out.push_str("{}")),
        Err(EditError::UnknownVariable) => {
            error(&mut peer.outbox, request.id, "cloud.unknown_variable")
        }
        Err(EditError::NameTaken) => error(&mut peer.outbox, request.id, "cloud.name_taken"),
        Err(EditError::InvalidName) => error(&mut peer.outbox, request.id, "cloud.invalid_name"),
        Err(EditError::Protected) => error(&mut peer.outbox, request.id, "cloud.disabled"),
    }
}

/// What the client is told before the close frame, and the close code.
pub(super) fn farewell(reason: Reason, outbox: &mut Outbox) -> u16 {
    let code = match reason {
        Reason::Username(_) | Reason::NoIdentity | Reason::Kicked | Reason::AddressBanned => {
            Some("auth.denied")
        }
        Reason::RoomFull | Reason::TooManyRooms | Reason::ServerFull => Some("world.full"),
        Reason::RoomRefused | Reason::InvalidRoom => Some("world.unknown_world"),
        Reason::TooManyMessages | Reason::TooManyBytes => Some("connection.rate_limited"),
        Reason::UserAtLimit => Some(USER_AT_LIMIT),
        Reason::ServerFault => Some("server.fatal"),
        // A server fault from the client's view: RPC clients know no "try later" code.
        Reason::RoomUnavailable => {
            error(outbox, None, "server.fatal");
            return Reason::ServerFault.close_code();
        }
        Reason::ShuttingDown => {
            outbox.push_with(|out| out.push_str(r#"["connection.reload",{}]"#));
            None
        }
        _ => None,
    };
    if let Some(code) = code {
        error(outbox, None, code);
    }
    reason.close_code()
}

/// The code of a connection that made way for a newer one with the same `client_id`.
const REPLACED: &str = "connection.replaced";

/// Its counterpart: a connection refused because its `username` (without a `client_id`) is
/// already connected to the room `--max-connections-per-user` times.
const USER_AT_LIMIT: &str = "connection.limit_reached";

/// Tells a connection that a newer one of the same client replaces it.
pub(super) fn replaced(outbox: &mut Outbox) {
    error(outbox, None, REPLACED);
}

fn success(outbox: &mut Outbox, id: Option<Value<'_, '_>>, result: impl FnOnce(&mut String)) {
    outbox.push_with(|out| {
        open_reply(out, "success", id);
        result(out);
        out.push(']');
    });
}

fn error(outbox: &mut Outbox, id: Option<Value<'_, '_>>, code: &str) {
    outbox.push_with(|out| write_error(out, id, code));
}

fn write_error(out: &mut String, id: Option<Value<'_, '_>>, code: &str) {
    open_reply(out, "error", id);
    out.push_str(r#"{"code":"#);
    json::push_string(out, code);
    out.push_str("}]");
}

/// Writes `["<kind>",` and, when the request had one, `<id>,`: the start of every reply. False
/// when the id nested too deeply to echo (it is written as `null`).
fn open_reply(out: &mut String, kind: &str, id: Option<Value<'_, '_>>) -> bool {
    out.push_str("[\"");
    out.push_str(kind);
    out.push_str("\",");
    let Some(id) = id else {
        return true;
    };
    let echoed = push_id(out, id);
    out.push(',');
    echoed
}

/// Echoes a correlation id; one nested too deeply to echo becomes `null`.
fn push_id(out: &mut String, id: Value<'_, '_>) -> bool {
    let echoed = json::push_json(out, id).is_some();
    if !echoed {
        out.push_str("null");
    }
    echoed
}

pub(super) fn encode_set(name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"["cloud.set",{"name":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    json::push_value(out, value);
    out.push_str("}]");
}
