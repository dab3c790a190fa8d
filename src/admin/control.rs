//! The cluster's control messages: what one node's operator did that every node must apply
//! (a ban, a lift, a block, an unblock, a kick of a user in a room), as JSON on one Redis
//! channel. Each message names the node that sent it, which ignores its own (it applied the
//! action already).

use serde_json::{json, Value};

use super::bans::{Ban, Block, Change};

/// One action every node applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Change(Change),
    /// Close every connection of `user` in `room`.
    Kick {
        room: String,
        user: String,
    },
}

/// A control message as received: who sent it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    pub node: String,
    pub control: Control,
}

impl ControlMessage {
    /// `{"node": N, "ban": {...}}`, `{"node": N, "lift": ID}`, `{"node": N, "block": {...}}`,
    /// `{"node": N, "unblock": P}` or `{"node": N, "kick": {"room": R, "user": U}}`.
    pub fn encode(&self) -> String {
        let (key, body) = match &self.control {
            Control::Change(Change::Ban(ban)) => ("ban", ban.to_json()),
            Control::Change(Change::Lift(id)) => ("lift", json!(id)),
            Control::Change(Change::Block(block)) => ("block", block.to_json()),
            Control::Change(Change::Unblock(project)) => ("unblock", json!(project)),
            Control::Kick { room, user } => ("kick", json!({"room": room, "user": user})),
        };
        let mut message = serde_json::Map::new();
        message.insert("node".to_owned(), json!(self.node));
        message.insert(key.to_owned(), body);
        Value::Object(message).to_string()
    }

    /// Reads [`ControlMessage::encode`]'s form; `None` for anything else.
    pub fn decode(payload: &[u8]) -> Option<ControlMessage> {
        let value: Value = serde_json::from_slice(payload).ok()?;
        let node = value.get("node")?.as_str()?.to_owned();
        let control = if let Some(ban) = value.get("ban") {
            Control::Change(Change::Ban(Ban::from_json(ban)?))
        } else if let Some(id) = value.get("lift") {
            Control::Change(Change::Lift(id.as_u64()?))
        } else if let Some(block) = value.get("block") {
            Control::Change(Change::Block(Block::from_json(block)?))
        } else if let Some(project) = value.get("unblock") {
            Control::Change(Change::Unblock(project.as_str()?.to_owned()))
        } else if let Some(kick) = value.get("kick") {
            Control::Kick {
                room: kick.get("room")?.as_str()?.to_owned(),
                user: kick.get("user")?.as_str()?.to_owned(),
            }
        } else {
            return None;
        };
        Some(ControlMessage { node, control })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admin::bans::Banned;
    use crate::config::Network;

    #[test]
    fn every_kind_survives_the_wire() {
        let ban = Ban {
            id: 7,
            who: Banned::Address(Network::parse("10.0.0.0/8").unwrap()),
            until_ms: 1_733_400_000_000,
            reason: "spam \"quoted\"".to_owned(),
            by: "alice".to_owned(),
        };
        let block = Block {
            project: "123".to_owned(),
            until_ms: None,
            by: "alice".to_owned(),
        };
        for control in [
            Control::Change(Change::Ban(ban)),
            Control::Change(Change::Lift(7)),
            Control::Change(Change::Block(block)),
            Control::Change(Change::Unblock("123".to_owned())),
            Control::Kick {
                room: "r".to_owned(),
                user: "bob".to_owned(),
            },
        ] {
            let message = ControlMessage {
                node: "n1".to_owned(),
                control,
            };
            assert_eq!(
                ControlMessage::decode(message.encode().as_bytes()),
                Some(message)
            );
        }
    }

    #[test]
    fn garbage_is_not_a_message() {
        for payload in [
            &b"not json"[..],
            br#"{"ban":{}}"#,
            br#"{"node":"n","what":1}"#,
            br#"{"node":"n","lift":"x"}"#,
            br#"{"node":"n","ban":{"id":1,"address":"nope","until":1,"reason":"","by":"a"}}"#,
        ] {
            assert_eq!(ControlMessage::decode(payload), None);
        }
    }
}
