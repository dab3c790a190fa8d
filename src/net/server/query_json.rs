//! The JSON bodies of the HTTP API's reads, in Scratch's shapes: `/logs` is an array of
//! `{"user","verb","name","value","timestamp"}` newest first, the variables read is
//! `{"project", "variables": {name: {"value","user","timestamp"}}}`. Every string is escaped.

use std::fmt::Write as _;

use crate::dialect::json::push_string;
use crate::engine::{HistoryEntry, SavedVariable};
use crate::query::MAX_ANSWER_BYTES;

/// `/logs`: `entries`, newest first, as Scratch's cloud log; an entry that would take the
/// body past [`MAX_ANSWER_BYTES`] ends it (the first is always given).
pub(crate) fn logs<'e>(entries: impl IntoIterator<Item = &'e HistoryEntry>) -> String {
    let mut out = String::from("[");
    for (i, entry) in entries.into_iter().enumerate() {
        let mark = out.len();
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"user\":");
        push_string(&mut out, &entry.user);
        out.push_str(",\"verb\":\"");
        out.push_str(entry.verb.as_str());
        out.push_str("\",\"name\":");
        push_string(&mut out, &entry.name);
        out.push_str(",\"value\":");
        push_string(&mut out, &entry.value);
        let _ = write!(out, ",\"timestamp\":{}}}", entry.timestamp_ms);
        if out.len() > MAX_ANSWER_BYTES && i > 0 {
            out.truncate(mark);
            break;
        }
    }
    out.push(']');
    out
}

/// A variable as the variables read shows it: name, value, last writer, time (ms).
pub(crate) type ShownVariable<'v> = (&'v str, &'v str, &'v str, u64);

/// `saved` as the variables read shows it.
pub(crate) fn shown(saved: &SavedVariable) -> ShownVariable<'_> {
    (&saved.name, &saved.value, &saved.user, saved.changed_ms)
}

/// `/api/v1/projects/<project>/variables`: the current values with last writer and time.
/// Past [`MAX_ANSWER_BYTES`] the variables stop (the first is always given): those listed
/// first (the room's order, or the store's by name) make it, the rest are left out.
pub(crate) fn variables<'v>(
    project: &str,
    variables: impl IntoIterator<Item = ShownVariable<'v>>,
) -> String {
    let mut out = String::from("{\"project\":");
    push_string(&mut out, project);
    out.push_str(",\"variables\":{");
    for (i, (name, value, user, ms)) in variables.into_iter().enumerate() {
        let mark = out.len();
        if i > 0 {
            out.push(',');
        }
        push_string(&mut out, name);
        out.push_str(":{\"value\":");
        push_string(&mut out, value);
        out.push_str(",\"user\":");
        push_string(&mut out, user);
        let _ = write!(out, ",\"timestamp\":{ms}}}");
        if out.len() > MAX_ANSWER_BYTES && i > 0 {
            out.truncate(mark);
            break;
        }
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::Verb;

    #[test]
    fn logs_are_scratchs_shape_with_every_string_escaped() {
        let entry = HistoryEntry {
            user: Arc::from("a\"b"),
            verb: Verb::Rename,
            name: "☁ x".into(),
            value: "<img src=x onerror=alert(1)>\n\\".into(),
            timestamp_ms: 1_733_400_000_000,
            seq: 3,
        };
        let text = logs([&entry]);
        assert_eq!(
            text,
            r#"[{"user":"a\"b","verb":"rename_var","name":"☁ x","value":"<img src=x onerror=alert(1)>\n\\","timestamp":1733400000000}]"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed[0]["value"], "<img src=x onerror=alert(1)>\n\\");
        assert_eq!(logs([]), "[]");
    }

    #[test]
    fn variables_name_the_project_and_each_writer() {
        let mut a = SavedVariable::new("☁ a", "12", true);
        a.user = Arc::from("griffpatch");
        a.changed_ms = 5;
        let b = SavedVariable::new("☁ \"b\"", "x", false);
        let text = variables("1\"2", [shown(&a), shown(&b)]);
        assert_eq!(
            text,
            r#"{"project":"1\"2","variables":{"☁ a":{"value":"12","user":"griffpatch","timestamp":5},"☁ \"b\"":{"value":"x","user":"","timestamp":0}}}"#
        );
        assert_eq!(variables("7", []), r#"{"project":"7","variables":{}}"#);
    }
}
