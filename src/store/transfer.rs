//! `stratus export` and `stratus import`: stored rooms as JSON, for backups and moving hosts.
//!
//! The format is `{"rooms": {"<room>": {"<name>": <value>, ...}, ...}}`, values keeping their
//! JSON type, with since history two more objects: `"writers"` (`{"<room>": {"<name>":
//! {"user", "timestamp"}}}`, each variable's last writer and time) and `"history"`
//! (`{"<room>": [{"seq", "user", "verb", "name", "value", "timestamp"}, ...]}`, oldest first).
//! An export without them (an earlier release's) imports as before. Export reads next to a
//! running server; import takes the data directory's lock, so the server must be stopped (it
//! would otherwise overwrite what was imported).

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Number, Value};

use super::db::Database;
use super::lock::DirLock;
use crate::engine::value::{is_valid_name, is_valid_value, MAX_NAME_CHARS, MAX_VALUE_CHARS};
use crate::engine::{Batch, HistoryEntry, RoomChanges, SavedVariable, Verb};

/// Every stored room (or only `room`) as JSON.
pub fn export(dir: &Path, room: Option<&str>) -> Result<String, String> {
    if !dir.join(super::db::FILE_NAME).exists() {
        return Err(format!(
            "no database in {} (nothing stored yet, or another --data-dir)",
            dir.display()
        ));
    }
    let database = Database::open_read_only(dir)?;
    let mut rooms = Map::new();
    let mut writers = Map::new();
    for (id, variables) in database.rooms(room)? {
        let mut values = Map::new();
        let mut room_writers = Map::new();
        for variable in variables {
            let mut writer = Map::new();
            writer.insert("user".into(), Value::String(variable.user.to_string()));
            writer.insert("timestamp".into(), Value::from(variable.changed_ms));
            room_writers.insert(variable.name.to_string(), Value::Object(writer));
            let value = if variable.is_number {
                variable
                    .value
                    .parse::<Number>()
                    .map(Value::Number)
                    .unwrap_or(Value::String(variable.value))
            } else {
                Value::String(variable.value)
            };
            values.insert(variable.name.into(), value);
        }
        writers.insert(id.clone(), Value::Object(room_writers));
        rooms.insert(id, Value::Object(values));
    }
    let mut history = Map::new();
    for (id, entries) in database.all_history(room)? {
        let entries = entries.iter().map(entry_json).collect();
        history.insert(id, Value::Array(entries));
    }
    let mut document = Map::new();
    document.insert("rooms".into(), Value::Object(rooms));
    document.insert("writers".into(), Value::Object(writers));
    document.insert("history".into(), Value::Object(history));
    serde_json::to_string_pretty(&Value::Object(document)).map_err(|e| e.to_string())
}

fn entry_json(entry: &HistoryEntry) -> Value {
    let mut object = Map::new();
    object.insert("seq".into(), Value::from(entry.seq));
    object.insert("user".into(), Value::String(entry.user.to_string()));
    object.insert("verb".into(), Value::String(entry.verb.as_str().into()));
    object.insert("name".into(), Value::String(entry.name.clone()));
    object.insert("value".into(), Value::String(entry.value.clone()));
    object.insert("timestamp".into(), Value::from(entry.timestamp_ms));
    Value::Object(object)
}

/// The largest sequence number an import may carry: a room counts on from it, so it stays
/// far below where SQLite's integers end (and exact in any JSON reader).
const MAX_IMPORTED_SEQ: u64 = 1 << 53;

fn entry_from_json(room: &str, value: &Value) -> Result<HistoryEntry, String> {
    let bad = || format!("history of room {room:?}: not a history entry: {value}");
    let text = |key: &str| value.get(key).and_then(Value::as_str).ok_or_else(bad);
    let number = |key: &str| value.get(key).and_then(Value::as_u64).ok_or_else(bad);
    let entry = HistoryEntry {
        seq: number("seq")?,
        user: Arc::from(text("user")?),
        verb: Verb::parse(text("verb")?).ok_or_else(bad)?,
        name: text("name")?.to_owned(),
        value: text("value")?.to_owned(),
        timestamp_ms: number("timestamp")?,
    };
    let invalid = |why: &str| format!("history of room {room:?}, entry {}: {why}", entry.seq);
    if entry.seq == 0 || entry.seq > MAX_IMPORTED_SEQ {
        return Err(invalid(&format!("seq must be 1 to {MAX_IMPORTED_SEQ}")));
    }
    if i64::try_from(entry.timestamp_ms).is_err() {
        return Err(invalid("timestamp out of range"));
    }
    if !is_valid_name(&entry.name) {
        return Err(invalid("not a valid cloud variable name"));
    }
    let value_ok = match entry.verb {
        Verb::Rename => is_valid_name(&entry.value),
        Verb::Set | Verb::Create | Verb::Delete => entry.value.chars().count() <= MAX_VALUE_CHARS,
    };
    if !value_ok {
        return Err(invalid(
            "value too long (or, for a rename, not a valid name)",
        ));
    }
    if entry.user.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(&format!(
            "user longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(entry)
}

/// A room's entries must come oldest first, each sequence number once.
fn check_order(room: &str, entries: &[HistoryEntry]) -> Result<(), String> {
    for pair in entries.windows(2) {
        if let [older, newer] = pair {
            if newer.seq <= older.seq {
                return Err(format!(
                    "history of room {room:?}: seq {} follows {}; entries must be oldest \
                     first, each seq once",
                    newer.seq, older.seq
                ));
            }
        }
    }
    Ok(())
}

/// Loads the rooms of an export into the database, replacing those rooms' stored variables
/// (and the history of rooms the export has history for). Returns how many rooms and
/// variables were written.
pub fn import(dir: &Path, json: &str) -> Result<(usize, usize), String> {
    let document: Value =
        serde_json::from_str(json).map_err(|e| format!("not an export file: {e}"))?;
    let rooms = document
        .get("rooms")
        .and_then(Value::as_object)
        .ok_or("not an export file: no \"rooms\" object")?;
    let mut batch = Batch::default();
    for (room, variables) in rooms {
        let variables = variables
            .as_object()
            .ok_or_else(|| format!("room {room:?}: variables must be an object"))?;
        let mut saved = Vec::with_capacity(variables.len());
        for (name, value) in variables {
            let variable = match value {
                Value::Number(n) => SavedVariable::new(name, &n.to_string(), true),
                Value::String(text) => SavedVariable::new(name, text, false),
                _ => return Err(format!("room {room:?}, {name:?}: not a number or string")),
            };
            if !is_valid_name(name) || !is_valid_value(variable.value(), true) {
                return Err(format!(
                    "room {room:?}, {name:?}: not a valid cloud variable"
                ));
            }
            let writer = document
                .get("writers")
                .and_then(|w| w.get(room.as_str()))
                .and_then(|w| w.get(name.as_str()));
            let variable = match writer {
                Some(writer) => SavedVariable {
                    user: Arc::from(writer.get("user").and_then(Value::as_str).unwrap_or("")),
                    changed_ms: writer.get("timestamp").and_then(Value::as_u64).unwrap_or(0),
                    ..variable
                },
                None => variable,
            };
            saved.push(variable);
        }
        batch
            .rooms
            .push(RoomChanges::replacing(room.as_str().into(), saved));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let _lock = DirLock::acquire(dir)?;
    let mut histories = Vec::new();
    if let Some(history) = document.get("history").and_then(Value::as_object) {
        for (room, entries) in history {
            let entries = entries
                .as_array()
                .ok_or_else(|| format!("history of room {room:?}: not an array"))?;
            let entries = entries
                .iter()
                .map(|entry| entry_from_json(room, entry))
                .collect::<Result<Vec<_>, _>>()?;
            check_order(room, &entries)?;
            histories.push((room.clone(), entries));
        }
    }
    let mut database = Database::open(dir)?;
    database.import(&batch, &histories)?;
    Ok((batch.rooms.len(), batch.variable_count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(entries: &str) -> String {
        format!(r#"{{"rooms": {{"r": {{"☁ x": 1}}}}, "history": {{"r": [{entries}]}}}}"#)
    }

    fn entry(seq: &str, name: &str, value: &str) -> String {
        format!(
            r#"{{"seq": {seq}, "user": "u", "verb": "set_var", "name": "{name}", "value": "{value}", "timestamp": 5}}"#
        )
    }

    #[test]
    fn an_import_refuses_history_the_server_would_not_write() {
        let dir = std::env::temp_dir().join(format!("stratus-import-{}", std::process::id()));
        let long_value = "1".repeat(MAX_VALUE_CHARS + 1);
        let long_name = format!("☁ {}", "n".repeat(MAX_NAME_CHARS));
        let cases = [
            (
                document(&entry("9223372036854775000", "☁ x", "1")),
                "seq must be",
            ),
            (document(&entry("0", "☁ x", "1")), "seq must be"),
            (
                document(&format!(
                    "{},{}",
                    entry("2", "☁ x", "1"),
                    entry("2", "☁ x", "2")
                )),
                "each seq once",
            ),
            (document(&entry("1", &long_name, "1")), "name"),
            (document(&entry("1", "☁ x", &long_value)), "too long"),
        ];
        for (json, expected) in cases {
            let error = import(&dir, &json).expect_err("refused");
            assert!(error.contains(expected), "{error}");
        }
        assert_eq!(import(&dir, &document(&entry("3", "☁ x", "1"))), Ok((1, 1)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
