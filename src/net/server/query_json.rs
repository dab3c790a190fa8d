//! The JSON bodies of the HTTP API's reads, in Scratch's shapes: `/logs` is an array of
//! `{"user","verb","name","value","timestamp"}` newest first, the variables read is
//! `{"project", "variables": {name: {"value","user","timestamp"}}}`. Every string is escaped.

use std::fmt::Write as _;

use crate::dialect::json::push_string;
use crate::engine::{HistoryEntry, SavedVariable};

/// `/logs`: `entries`, newest first, as Scratch's cloud log.
pub(crate) fn logs<'e>(entries: impl IntoIterator<Item = &'e HistoryEntry>) -> String {
    let mut out = String::from("[");
    for (i, entry) in entries.into_iter().enumerate() {
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
    }
    out.push(']');
    out
}

/// `/api/v1/projects/<project>/variables`: the current values with last writer and time.
pub(crate) fn variables(project: &str, variables: &[SavedVariable]) -> String {
    let mut out = String::from("{\"project\":");
    push_string(&mut out, project);
    out.push_str(",\"variables\":{");
    for (i, variable) in variables.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(&mut out, &variable.name);
        out.push_str(":{\"value\":");
        push_string(&mut out, &variable.value);
        out.push_str(",\"user\":");
        push_string(&mut out, &variable.user);
        let _ = write!(out, ",\"timestamp\":{}}}", variable.changed_ms);
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
        let text = variables("1\"2", &[a, b]);
        assert_eq!(
            text,
            r#"{"project":"1\"2","variables":{"☁ a":{"value":"12","user":"griffpatch","timestamp":5},"☁ \"b\"":{"value":"x","user":"","timestamp":0}}}"#
        );
        assert_eq!(variables("7", &[]), r#"{"project":"7","variables":{}}"#);
    }
}
