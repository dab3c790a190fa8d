//! `stratus export` and `stratus import`: stored rooms as JSON, for backups and moving hosts.
//!
//! The format is `{"rooms": {"<room>": {"<name>": <value>, ...}, ...}}`, values keeping their
//! JSON type. Export reads next to a running server; import takes the data directory's lock,
//! so the server must be stopped (it would otherwise overwrite what was imported).

use std::path::Path;

use serde_json::{Map, Number, Value};

use super::db::Database;
use super::lock::DirLock;
use crate::engine::value::{is_valid_name, is_valid_value};
use crate::engine::{Batch, RoomChanges, SavedVariable};

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
    for (id, variables) in database.rooms(room)? {
        let mut values = Map::new();
        for variable in variables {
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
        rooms.insert(id, Value::Object(values));
    }
    let mut document = Map::new();
    document.insert("rooms".into(), Value::Object(rooms));
    serde_json::to_string_pretty(&Value::Object(document)).map_err(|e| e.to_string())
}

/// Loads the rooms of an export into the database, replacing those rooms' stored variables.
/// Returns how many rooms and variables were written.
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
            saved.push(variable);
        }
        batch
            .rooms
            .push(RoomChanges::replacing(room.as_str().into(), saved));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let _lock = DirLock::acquire(dir)?;
    let mut database = Database::open(dir)?;
    database.save(&batch)?;
    Ok((batch.rooms.len(), batch.variable_count()))
}
