//! cloud-server's older protocol (specs `legacy-v2.md`, `legacy-v1.md`): `{"kind": "handshake" |
//! "set", ...}` in, `{"kind":"set","variable":N,"value":V}` lines out, values always strings.
//!
//! Every property is required; a missing one, an unknown kind or a set of a variable the room
//! does not have closes with 4000. Rooms are shared with Scratch clients: the room engine's
//! validation applies to both, and a number set by a Scratch client reaches these clients as
//! its decimal text.

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::json;
use super::session::{log_ignored, room_text, Handshake, Membership, Outcome};
use super::{close_code, Dialect};
use crate::engine::{ClientId, Engine, SetOutcome, ValueRef};

pub(super) fn read_handshake<'v>(doc: Value<'_, 'v>) -> Result<Handshake<'v>, Outcome> {
    let missing = Outcome::close(
        close_code::PROTOCOL,
        "handshake needs room, username and variables",
    );
    let room = room_text(doc.get("room"))?;
    let user = json::get_str(doc, "username").ok_or(missing)?;
    let declared = doc.get_object("variables").ok_or(missing)?;
    let mut variables = Vec::with_capacity(declared.len());
    for (name, value) in declared.iter() {
        let value = value.into_string().ok_or(Outcome::close(
            close_code::PROTOCOL,
            "variable values must be strings",
        ))?;
        variables.push((name, ValueRef::Text(value)));
    }
    Ok(Handshake {
        dialect: Dialect::Legacy,
        room,
        user,
        variables: Some(variables),
    })
}

pub(super) fn on_message(
    doc: Value<'_, '_>,
    membership: &Membership,
    client: ClientId,
    engine: &mut Engine,
) -> Outcome {
    match json::get_str(doc, "kind") {
        Some("set") => {
            let (Some(name), Some(value)) =
                (json::get_str(doc, "variable"), json::get_str(doc, "value"))
            else {
                return Outcome::close(
                    close_code::PROTOCOL,
                    "set needs variable and a string value",
                );
            };
            match engine.set(membership.room, client, name, ValueRef::Text(value), false) {
                SetOutcome::Applied => Outcome::Continue,
                SetOutcome::Rejected(why) => {
                    log_ignored(membership, engine, "set", why.as_str());
                    Outcome::Continue
                }
                SetOutcome::Unknown => {
                    Outcome::close(close_code::PROTOCOL, "variable does not exist")
                }
            }
        }
        Some("handshake") => Outcome::close(close_code::PROTOCOL, "second handshake"),
        _ => Outcome::close(close_code::PROTOCOL, "missing or unknown kind"),
    }
}

pub(super) fn encode_set(name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"{"kind":"set","variable":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    json::push_string(out, value.text());
    out.push('}');
}
