//! cloud-server's older protocol (specs `legacy-v2.md`, `legacy-v1.md`): `{"kind": "handshake" |
//! "set", ...}` in, `{"kind":"set","variable":N,"value":V}` lines out, values always strings.
//!
//! Every property is required; a missing one, an unknown kind or a set of a variable the room
//! does not have closes with 4000. Rooms are shared with the other dialects: the room engine's
//! validation applies to all, and a number set by a Scratch client reaches these clients as
//! its decimal text.

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::{json, room_text, Env, Handshake, Outcome, Peer, Reason};
use crate::engine::{Rejection, SetOutcome, ValueRef};

pub(super) fn read_handshake<'v>(doc: Value<'_, 'v>) -> Result<Handshake<'v>, Reason> {
    let missing = Reason::Protocol("handshake needs room, username and variables");
    let room = room_text(doc.get("room"))?;
    let user = json::get_str(doc, "username").ok_or(missing)?;
    let declared = doc.get_object("variables").ok_or(missing)?;
    let mut variables = Vec::with_capacity(declared.len());
    for (name, value) in declared.iter() {
        let value = value
            .into_string()
            .ok_or(Reason::Protocol("variable values must be strings"))?;
        variables.push((name, ValueRef::Text(value)));
    }
    Ok(Handshake {
        room,
        user,
        variables: Some(variables),
    })
}

pub(super) fn on_message(doc: Value<'_, '_>, peer: &mut Peer, env: &mut Env<'_>) -> Outcome {
    let engine = &mut *env.engine;
    match json::get_str(doc, "kind") {
        Some("set") => {
            let (Some(name), Some(value), Some(room)) = (
                json::get_str(doc, "variable"),
                json::get_str(doc, "value"),
                peer.room(),
            ) else {
                return Outcome::Close(Reason::Protocol("set needs variable and a string value"));
            };
            match engine.set_at(
                room,
                peer.client,
                name,
                ValueRef::Text(value),
                false,
                env.now,
            ) {
                SetOutcome::Applied => Outcome::Continue,
                SetOutcome::Rejected(Rejection::Rule(rule)) => {
                    peer.log_rule_refusal(env, name, rule);
                    // No error message in this protocol: the setter gets the current value.
                    env.engine.resend(room, peer.client, name);
                    Outcome::Continue
                }
                SetOutcome::Rejected(why) => {
                    peer.log_ignored(engine, "set", why.as_str());
                    Outcome::Continue
                }
                SetOutcome::Unknown => Outcome::Close(Reason::Protocol("variable does not exist")),
            }
        }
        Some("handshake") => Outcome::Close(Reason::Protocol("second handshake")),
        _ => Outcome::Close(Reason::Protocol("missing or unknown kind")),
    }
}

pub(super) fn encode_set(name: &str, value: ValueRef<'_>, out: &mut String) {
    out.push_str(r#"{"kind":"set","variable":"#);
    json::push_string(out, name);
    out.push_str(r#","value":"#);
    json::push_string(out, value.text());
    out.push('}');
}
