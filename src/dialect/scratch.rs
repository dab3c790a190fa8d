//! The Scratch 3 / TurboWarp dialect: `{"method": "handshake" | "set" | "create" | "rename" |
//! "delete", ...}` in, `{"method":"set","name":N,"value":V}` lines out (with `--relay-user`,
//! also `"user"` and `"timestamp"` of the variable's last change).
//!
//! Invalid names and values are ignored (the connection stays open), as Scratch's own server
//! does; protocol violations close with 4000. `user` and `project_id` on later messages are
//! ignored.

use std::fmt::Write as _;

use simd_json::tape::Value;

use super::{json, room_text, Env, Handshake, Outcome, Peer, Reason};
use crate::engine::{EditError, Rejection, SetLine, SetOutcome, ValueRef};

pub(super) fn read_handshake<'v>(doc: Value<'_, 'v>) -> Result<Handshake<'v>, Reason> {
    let room = room_text(doc.get("project_id"))?;
    // A missing or non-string user is a username problem the client can fix.
    let user = json::get_str(doc, "user").unwrap_or("");
    Ok(Handshake {
        room,
        user,
        variables: None,
    })
}

pub(super) fn on_message(doc: Value<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) -> Outcome {
    let Some(room) = peer.room() else {
        return Outcome::Close(Reason::Protocol("not in a room"));
    };
    let engine = &mut *env.engine;
    match json::get_str(doc, "method") {
        Some("set" | "create") => {
            on_set(doc, peer, env);
            Outcome::Continue
        }
        Some("rename") if engine.may_rename(room) => {
            let (Some(name), Some(new_name)) =
                (json::get_str(doc, "name"), json::get_str(doc, "new_name"))
            else {
                return Outcome::Close(Reason::Protocol("rename needs name and new_name"));
            };
            edit_outcome(engine.rename_at(room, peer.client, name, new_name, env.now))
        }
        Some("delete") if engine.may_delete(room) => {
            let Some(name) = json::get_str(doc, "name") else {
                return Outcome::Close(Reason::Protocol("delete needs a name"));
            };
            edit_outcome(engine.delete_at(room, peer.client, name, env.now))
        }
        Some("rename" | "delete") => {
            peer.log_ignored(engine, "rename/delete", "disabled for this project");
            Outcome::Continue
        }
        Some("handshake") => Outcome::Close(Reason::Protocol("second handshake")),
        _ => Outcome::Close(Reason::Protocol("missing or unknown method")),
    }
}

fn on_set(doc: Value<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) {
    let engine = &mut *env.engine;
    let mut number = None;
    let value = doc
        .get("value")
        .and_then(|v| json::value_ref(v, &mut number));
    let (Some(name), Some(value), Some(room)) = (json::get_str(doc, "name"), value, peer.room())
    else {
        engine.stats.sets_rejected += 1;
        peer.log_ignored(engine, "set", "name or value missing or of the wrong type");
        return;
    };
    match engine.set_at(room, peer.client, name, value, true, env.now) {
        SetOutcome::Rejected(Rejection::Rule(rule)) => {
            peer.log_rule_refusal(env, name, rule);
            // Scratch has no error message: the setter gets the value everyone else has, so
            // its project does not go on showing one nobody else sees.
            env.engine.resend(room, peer.client, name);
        }
        SetOutcome::Rejected(why) => peer.log_ignored(engine, "set", why.as_str()),
        SetOutcome::Applied | SetOutcome::Unknown => {}
    }
}

fn edit_outcome(result: Result<(), EditError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Continue,
        Err(EditError::UnknownVariable) => {
            Outcome::Close(Reason::Protocol("variable does not exist"))
        }
        Err(EditError::InvalidName) => Outcome::Close(Reason::Protocol("invalid new name")),
        Err(EditError::NameTaken) => Outcome::Close(Reason::Protocol("new name is taken")),
        // As when renaming and deleting are disabled: ignored, the connection stays.
        Err(EditError::Protected) => Outcome::Continue,
    }
}

pub(super) fn encode_set(name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"{"method":"set","name":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    json::push_value(out, value);
    out.push('}');
}

/// A `set` line that also carries the writer's name and the time of the change in Unix
/// milliseconds, as scratchattach's own server sends them (`--relay-user`): its cloud requests
/// read the requester from `user`. `user` is "" and `timestamp` 0 where they are unknown.
pub(super) fn encode_set_with_writer(line: SetLine<'_>, out: &mut String) {
    out.push_str(r#"{"method":"set","name":"#);
    json::push_string(out, line.name);
    out.push_str(r#","value":"#);
    json::push_value(out, line.value);
    out.push_str(r#","user":"#);
    json::push_string(out, line.user);
    // Writing a number into a String cannot fail.
    let _ = write!(out, r#","timestamp":{}}}"#, line.changed_ms);
}
