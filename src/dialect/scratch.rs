//! The Scratch 3 / TurboWarp dialect: `{"method": "handshake" | "set" | "create" | "rename" |
//! "delete", ...}` in, `{"method":"set","name":N,"value":V}` lines out.
//!
//! Invalid names and values are ignored (the connection stays open), as Scratch's own server
//! does; protocol violations close with 4000. `user` and `project_id` on later messages are
//! ignored.

use simd_json::tape::Value;

use super::json;
use super::session::{log_ignored, room_text, Handshake, Membership, Outcome};
use super::{close_code, Dialect};
use crate::engine::{ClientId, EditError, Engine, SetOutcome, ValueRef};
use crate::policy::Policy;

pub(super) fn read_handshake<'v>(doc: Value<'_, 'v>) -> Result<Handshake<'v>, Outcome> {
    let room = room_text(doc.get("project_id"))?;
    // A missing or non-string user is a username problem the client can fix.
    let user = json::get_str(doc, "user").unwrap_or("");
    Ok(Handshake {
        dialect: Dialect::Scratch,
        room,
        user,
        variables: None,
    })
}

pub(super) fn on_message(
    doc: Value<'_, '_>,
    membership: &Membership,
    client: ClientId,
    engine: &mut Engine,
    policy: &Policy,
) -> Outcome {
    match json::get_str(doc, "method") {
        Some("set" | "create") => {
            on_set(doc, membership, client, engine);
            Outcome::Continue
        }
        Some("rename") if policy.enable_rename => {
            let (Some(name), Some(new_name)) =
                (json::get_str(doc, "name"), json::get_str(doc, "new_name"))
            else {
                return Outcome::close(close_code::PROTOCOL, "rename needs name and new_name");
            };
            edit_outcome(engine.rename(membership.room, client, name, new_name))
        }
        Some("delete") if policy.enable_delete => {
            let Some(name) = json::get_str(doc, "name") else {
                return Outcome::close(close_code::PROTOCOL, "delete needs a name");
            };
            edit_outcome(engine.delete(membership.room, name))
        }
        Some("rename" | "delete") => {
            log_ignored(
                membership,
                engine,
                "rename/delete",
                "disabled on this server",
            );
            Outcome::Continue
        }
        Some("handshake") => Outcome::close(close_code::PROTOCOL, "second handshake"),
        _ => Outcome::close(close_code::PROTOCOL, "missing or unknown method"),
    }
}

fn on_set(doc: Value<'_, '_>, membership: &Membership, client: ClientId, engine: &mut Engine) {
    let mut number = None;
    let value = doc
        .get("value")
        .and_then(|v| json::value_ref(v, &mut number));
    let (Some(name), Some(value)) = (json::get_str(doc, "name"), value) else {
        engine.stats.sets_rejected += 1;
        log_ignored(
            membership,
            engine,
            "set",
            "name or value missing or of the wrong type",
        );
        return;
    };
    if let SetOutcome::Rejected(why) = engine.set(membership.room, client, name, value, true) {
        log_ignored(membership, engine, "set", why.as_str());
    }
}

fn edit_outcome(result: Result<(), EditError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Continue,
        Err(EditError::UnknownVariable) => {
            Outcome::close(close_code::PROTOCOL, "variable does not exist")
        }
        Err(EditError::InvalidName) => Outcome::close(close_code::PROTOCOL, "invalid new name"),
        Err(EditError::NameTaken) => Outcome::close(close_code::PROTOCOL, "new name is taken"),
    }
}

pub(super) fn encode_set(name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"{"method":"set","name":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    match value {
        ValueRef::Number(text) => out.push_str(text),
        ValueRef::Text(text) => json::push_string(out, text),
    }
    out.push('}');
}
