//! Names of a room's Redis keys and channel, and how a variable's value is stored.
//!
//! The braces are literal characters around the room id: `stratus:{ROOM}:vars`. They make the
//! room id a Redis Cluster hash tag (all keys of a room in one slot), and they keep every name
//! unambiguous whatever the room id contains: each kind of key has its own fixed suffix, and a
//! node's heartbeat key (`stratus:node:NODE`) never starts with `stratus:{`.

use crate::engine::SavedVariable;

const ROOM_PREFIX: &str = "stratus:{";

/// Hash of the room's variables: name → [`encode_value`].
pub fn vars_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}:vars")
}

/// Hash of the room's variables' last writers: name → [`encode_meta`]. Written and removed
/// with the vars hash, by the same script.
pub fn meta_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}:meta")
}

/// List of the room's history entries, newest first (`engine/history_codec.rs`), trimmed to `--history`.
pub fn history_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}:history")
}

/// The room's version: bumped by every batch.
pub fn version_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}:version")
}

/// Hash of node id → that node's member count in the room.
pub fn members_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}:members")
}

/// Prefix of the heartbeat keys; the node id follows.
pub const HEARTBEAT_PREFIX: &str = "stratus:node:";

/// Exists while the node is alive (refreshed every few seconds, expires otherwise).
pub fn heartbeat_key(node: &str) -> String {
    format!("{HEARTBEAT_PREFIX}{node}")
}

/// Hash of the admin API's bans: id → the ban's JSON (`Ban::to_json`).
pub const BANS_KEY: &str = "stratus:bans";
/// Hash of the runtime project blocks: project → the block's JSON.
pub const BLOCKS_KEY: &str = "stratus:blocks";
/// Where every node's admin actions are published for the others (`admin/control.rs`).
pub const CONTROL_CHANNEL: &str = "stratus:control";

/// Where every batch applied to the room is published.
pub fn channel(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}}}")
}

/// The room a channel belongs to, if it is one of ours.
pub fn room_of_channel(channel: &[u8]) -> Option<&str> {
    let inner = channel
        .strip_prefix(ROOM_PREFIX.as_bytes())?
        .strip_suffix(b"}")?;
    std::str::from_utf8(inner).ok()
}

/// A value as stored in the vars hash: `n` (number) or `t` (text), then the value's text.
pub fn encode_value(variable: &SavedVariable) -> String {
    let mut stored = String::with_capacity(variable.value.len() + 1);
    stored.push(if variable.is_number { 'n' } else { 't' });
    stored.push_str(&variable.value);
    stored
}

/// A variable's last writer as stored in the meta hash: its time in Unix milliseconds, `:`,
/// then the user (which may contain anything, `:` included).
pub fn encode_meta(variable: &SavedVariable) -> String {
    let mut stored = String::with_capacity(variable.user.len() + 14);
    stored.push_str(&variable.changed_ms.to_string());
    stored.push(':');
    stored.push_str(&variable.user);
    stored
}

/// Sets `variable`'s writer and time from its stored meta; false (left as is) when the meta is
/// not ours.
pub fn apply_meta(variable: &mut SavedVariable, stored: &[u8]) -> bool {
    let Some(colon) = stored.iter().take(21).position(|&b| b == b':') else {
        return false;
    };
    let (ms, user) = stored.split_at(colon);
    let ms = std::str::from_utf8(ms).ok().and_then(|ms| ms.parse().ok());
    let user = std::str::from_utf8(user.get(1..).unwrap_or_default()).ok();
    let (Some(ms), Some(user)) = (ms, user) else {
        return false;
    };
    variable.changed_ms = ms;
    variable.user = user.into();
    true
}

/// A stored variable back from its name and stored value; `None` when it is not ours.
pub fn decode_variable(name: &[u8], stored: &[u8]) -> Option<SavedVariable> {
    let (&kind, text) = stored.split_first()?;
    let is_number = match kind {
        b'n' => true,
        b't' => false,
        _ => return None,
    };
    Some(SavedVariable::new(
        std::str::from_utf8(name).ok()?,
        std::str::from_utf8(text).ok()?,
        is_number,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_room() {
        assert_eq!(channel("a}b"), "stratus:{a}b}");
        assert_eq!(room_of_channel(channel("a}b").as_bytes()), Some("a}b"));
        assert_eq!(room_of_channel(b"stratus:node:x"), None);
        assert_eq!(room_of_channel(b"stratus:{x"), None);
    }

    #[test]
    fn values_keep_their_kind() {
        let number = SavedVariable {
            user: Default::default(),
            changed_ms: 0,
            name: "x".into(),
            value: "12".into(),
            is_number: true,
        };
        assert_eq!(encode_value(&number), "n12");
        assert_eq!(decode_variable(b"x", b"n12"), Some(number));
        assert_eq!(
            decode_variable(b"x", b"t").map(|v| v.is_number),
            Some(false)
        );
        assert_eq!(decode_variable(b"x", b"q1"), None);
        assert_eq!(decode_variable(b"x", b""), None);
    }

    #[test]
    fn meta_keeps_writer_and_time_whatever_the_user_holds() {
        let mut written = SavedVariable::new("x", "1", true);
        written.user = "a:b\n".into();
        written.changed_ms = 1_733_400_000_000;
        let stored = encode_meta(&written);
        assert_eq!(stored, "1733400000000:a:b\n");
        let mut read = SavedVariable::new("x", "1", true);
        assert!(apply_meta(&mut read, stored.as_bytes()));
        assert_eq!(read, written);
        for hostile in [&b""[..], b"12", b"x:u", b":u", b"99999999999999999999999:u"] {
            assert!(!apply_meta(&mut read, hostile), "{hostile:?}");
        }
        assert_eq!(read, written);
        assert_eq!(meta_key("a}b"), "stratus:{a}b}:meta");
        assert_eq!(history_key("a}b"), "stratus:{a}b}:history");
    }
}
