//! The JSON bodies of the admin API's rooms side: the rooms list, one room, an action's result
//! and an error. Every string is escaped; a list that would pass
//! [`crate::query::MAX_ANSWER_BYTES`] stops there (the first item is always given).

use std::fmt::Write as _;

use crate::dialect::json::push_string;
use crate::engine::RoomSummary;
use crate::query::{Answer, MAX_ANSWER_BYTES};

/// One room of the list, and whether it is in memory.
pub(super) type ListedRoom<'r> = (&'r RoomSummary, bool);

/// `{"rooms":[...],"offset":K,"limit":N}`.
pub(super) fn rooms<'r>(
    rooms: impl IntoIterator<Item = ListedRoom<'r>>,
    offset: usize,
    limit: usize,
) -> String {
    let mut out = String::from("{\"rooms\":[");
    for (i, (room, in_memory)) in rooms.into_iter().enumerate() {
        let mark = out.len();
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        push_string(&mut out, &room.id);
        let _ = write!(
            out,
            ",\"members\":{},\"variables\":{},\"bytes\":{},\"last_change\":",
            room.members, room.variables, room.bytes
        );
        match room.last_change {
            Some(ms) => {
                let _ = write!(out, "{ms}");
            }
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\"in_memory\":{in_memory}}}");
        if out.len() > MAX_ANSWER_BYTES && i > 0 {
            out.truncate(mark);
            break;
        }
    }
    let _ = write!(out, "],\"offset\":{offset},\"limit\":{limit}}}");
    out
}

/// A variable of a room: name, value, last writer, time (ms).
pub(super) type AdminVariable<'v> = (&'v str, &'v str, &'v str, u64);

/// A member of a room: connection id, user, dialect, joined (ms), address as logged.
pub(super) type AdminMemberRow<'m> = (u64, &'m str, &'static str, u64, Option<String>);

/// `{"id","in_memory","variables":[{name,value,user,timestamp}],"members":[{connection,user,
/// dialect,since,address}]}`, the connection id as a string of digits; with
/// `"truncated":true` after them when the variables were cut at `MAX_ANSWER_BYTES`.
pub(super) fn room<'v>(
    id: &str,
    in_memory: bool,
    variables: impl IntoIterator<Item = AdminVariable<'v>>,
    members: impl IntoIterator<Item = AdminMemberRow<'v>>,
) -> String {
    let mut out = String::from("{\"id\":");
    push_string(&mut out, id);
    let _ = write!(out, ",\"in_memory\":{in_memory},\"variables\":[");
    let mut truncated = false;
    for (i, (name, value, user, ms)) in variables.into_iter().enumerate() {
        let mark = out.len();
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_string(&mut out, name);
        out.push_str(",\"value\":");
        push_string(&mut out, value);
        out.push_str(",\"user\":");
        push_string(&mut out, user);
        let _ = write!(out, ",\"timestamp\":{ms}}}");
        if out.len() > MAX_ANSWER_BYTES && i > 0 {
            out.truncate(mark);
            truncated = true;
            break;
        }
    }
    out.push_str("],\"members\":[");
    for (i, (connection, user, dialect, since, address)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A string: ids go beyond 2^53, where a JavaScript number would round them.
        let _ = write!(out, "{{\"connection\":\"{connection}\",\"user\":");
        push_string(&mut out, user);
        out.push_str(",\"dialect\":");
        push_string(&mut out, dialect);
        let _ = write!(out, ",\"since\":{since},\"address\":");
        match &address {
            Some(address) => push_string(&mut out, address),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push(']');
    if truncated {
        out.push_str(",\"truncated\":true");
    }
    out.push('}');
    out
}

/// 200 `{"ok":true}` plus `extra` (`"name":number` pairs).
pub(super) fn ok(extra: &[(&str, usize)]) -> Answer {
    let mut out = String::from("{\"ok\":true");
    for (name, n) in extra {
        out.push(',');
        push_string(&mut out, name);
        let _ = write!(out, ":{n}");
    }
    out.push('}');
    Answer::Json(out)
}

/// `status` with `{"error": why}`.
pub(super) fn error(status: u16, why: &str) -> Answer {
    let mut json = String::from("{\"error\":");
    push_string(&mut json, why);
    json.push('}');
    Answer::Status { status, json }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_listed_in_the_documented_shape() {
        let a = RoomSummary {
            id: "1\"<b>".into(),
            members: 2,
            variables: 3,
            bytes: 512,
            last_change: Some(1_733_400_000_000),
        };
        let b = RoomSummary {
            id: "2".into(),
            members: 0,
            variables: 0,
            bytes: 0,
            last_change: None,
        };
        let text = rooms([(&a, true), (&b, false)], 0, 100);
        assert_eq!(
            text,
            r#"{"rooms":[{"id":"1\"<b>","members":2,"variables":3,"bytes":512,"last_change":1733400000000,"in_memory":true},{"id":"2","members":0,"variables":0,"bytes":0,"last_change":null,"in_memory":false}],"offset":0,"limit":100}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["rooms"][0]["id"], "1\"<b>");
    }

    #[test]
    fn a_room_shows_variables_and_members_with_every_string_escaped() {
        let value = "<img src=x onerror=alert(1)>\"\n";
        let text = room(
            "123",
            true,
            [("☁ a", value, "al\"ice", 5)],
            [(17, "al\"ice", "scratch", 4, Some("127.0.0.0".to_owned()))],
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["variables"][0]["value"], value);
        assert_eq!(parsed["variables"][0]["user"], "al\"ice");
        assert_eq!(parsed["members"][0]["connection"], "17");
        assert_eq!(parsed["members"][0]["address"], "127.0.0.0");
        assert_eq!(parsed["members"][0]["since"], 4);
        // Beyond 2^53 the id stays exact as text (a JSON number would round in a browser).
        let big = (1u64 << 53) + 1;
        let text = room("7", true, [], [(big, "", "scratch", 0, None)]);
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["members"][0]["connection"], "9007199254740993");
        assert_eq!(
            room("7", false, [], [(1, "", "studio", 0, None)]),
            r#"{"id":"7","in_memory":false,"variables":[],"members":[{"connection":"1","user":"","dialect":"studio","since":0,"address":null}]}"#
        );
    }

    #[test]
    fn a_room_whose_variables_pass_the_answer_limit_says_they_were_cut() {
        let value = "x".repeat(100_000);
        let names: Vec<String> = (0..20).map(|i| format!("☁ v{i}")).collect();
        let variables = names.iter().map(|n| (n.as_str(), value.as_str(), "u", 1));
        let text = room("1", true, variables, [(1, "u", "scratch", 0, None)]);
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed["truncated"], true);
        let shown = parsed["variables"].as_array().map_or(0, Vec::len);
        assert!((1..20).contains(&shown), "{shown} variables shown");
        assert_eq!(parsed["members"][0]["user"], "u");
        let whole = room("1", true, [("☁ a", "1", "u", 1)], []);
        let parsed: serde_json::Value = serde_json::from_str(&whole).expect("json");
        assert_eq!(parsed.get("truncated"), None);
    }

    #[test]
    fn results_and_errors() {
        assert_eq!(
            ok(&[("kicked", 2)]),
            Answer::Json(r#"{"ok":true,"kicked":2}"#.to_owned())
        );
        assert_eq!(
            error(400, "bad \"value\""),
            Answer::Status {
                status: 400,
                json: r#"{"error":"bad \"value\""}"#.to_owned()
            }
        );
    }
}
