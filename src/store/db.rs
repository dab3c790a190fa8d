//! The SQLite database under `--data-dir`: one row per variable, schema versioned, WAL mode.
//!
//! Used only by the storage thread and by the `export`/`import` commands, never by the event
//! loop. Opening refuses anything that is not a stratus database rather than touching it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::engine::{Batch, SavedVariable};

/// The database file inside the data directory.
pub const FILE_NAME: &str = "stratus.db";

/// Marks the file as ours (`PRAGMA application_id`): "STRT".
const APPLICATION_ID: i64 = 0x5354_5254;

/// The schema this release writes; later releases migrate from it.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE variables (
        room TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        is_number INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (room, name)
    ) WITHOUT ROWID;
";

pub struct Database {
    connection: Connection,
    path: PathBuf,
}

impl Database {
    /// Opens (creating if needed) the database in `dir` for reading and writing.
    pub fn open(dir: &Path) -> Result<Database, String> {
        Database::open_with(dir, false)
    }

    /// Opens an existing database read-only, next to a running server (WAL allows it).
    pub fn open_read_only(dir: &Path) -> Result<Database, String> {
        Database::open_with(dir, true)
    }

    fn open_with(dir: &Path, read_only: bool) -> Result<Database, String> {
        let path = dir.join(FILE_NAME);
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let fail = |what: &str, e: rusqlite::Error| format!("{}: {what}: {e}", path.display());
        let connection =
            Connection::open_with_flags(&path, flags).map_err(|e| fail("cannot open", e))?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| fail("cannot configure", e))?;
        let database = Database { connection, path };
        database.check_schema(read_only)?;
        if !read_only {
            database
                .connection
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                .map_err(|e| database.error("cannot configure", e))?;
        }
        Ok(database)
    }

    fn error(&self, what: &str, e: rusqlite::Error) -> String {
        format!("{}: {what}: {e}", self.path.display())
    }

    /// Accepts an empty new file (and gives it our schema) or a stratus database of a version
    /// we know; refuses anything else without changing it.
    fn check_schema(&self, read_only: bool) -> Result<(), String> {
        let db = &self.connection;
        let application_id: i64 = db
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(|e| self.error("not a readable SQLite database", e))?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.error("not a readable SQLite database", e))?;
        let tables: i64 = db
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|e| self.error("not a readable SQLite database", e))?;
        if application_id == 0 && version == 0 && tables == 0 {
            if read_only {
                return Err(format!("{}: no stored rooms yet", self.path.display()));
            }
            let create = format!(
                "BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            );
            return db
                .execute_batch(&create)
                .map_err(|e| self.error("cannot create the schema", e));
        }
        if application_id != APPLICATION_ID {
            return Err(format!(
                "{}: not a stratus database (application_id {application_id:#x}); \
                 refusing to touch it",
                self.path.display()
            ));
        }
        if version != SCHEMA_VERSION {
            return Err(format!(
                "{}: schema version {version}, this release knows {SCHEMA_VERSION}; \
                 refusing to touch it",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// The stored variables of `room` (none when it was never stored).
    pub fn load(&self, room: &str) -> Result<Vec<SavedVariable>, String> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT name, value, is_number FROM variables WHERE room = ?1")
            .map_err(|e| self.error("cannot read", e))?;
        let rows = statement
            .query_map([room], |row| {
                Ok(SavedVariable {
                    name: row.get::<_, String>(0)?.into(),
                    value: row.get(1)?,
                    is_number: row.get(2)?,
                })
            })
            .map_err(|e| self.error("cannot read", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.error("cannot read", e))
    }

    /// Writes a batch in one transaction.
    pub fn save(&mut self, batch: &Batch) -> Result<(), String> {
        let now = unix_seconds();
        let path = self.path.clone();
        let fail = |what: &str, e: rusqlite::Error| format!("{}: {what}: {e}", path.display());
        let transaction = self
            .connection
            .transaction()
            .map_err(|e| fail("cannot write", e))?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO variables (room, name, value, is_number, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (room, name) DO UPDATE SET
                       value = excluded.value, is_number = excluded.is_number,
                       updated_at = excluded.updated_at",
                )
                .map_err(|e| fail("cannot write", e))?;
            let mut clear = transaction
                .prepare_cached("DELETE FROM variables WHERE room = ?1")
                .map_err(|e| fail("cannot write", e))?;
            for room in &batch.rooms {
                if room.replace_all {
                    clear
                        .execute([&*room.room])
                        .map_err(|e| fail("cannot write", e))?;
                }
                // One node, one store: a seed has no other declaration to race with.
                for variable in room.variables.iter().chain(&room.seeds) {
                    upsert
                        .execute(params![
                            &*room.room,
                            &*variable.name,
                            variable.value,
                            variable.is_number,
                            now
                        ])
                        .map_err(|e| fail("cannot write", e))?;
                }
            }
        }
        transaction.commit().map_err(|e| fail("cannot commit", e))
    }

    /// Deletes rooms nobody wrote since `cutoff` (Unix seconds); returns how many.
    pub fn delete_rooms_older_than(&mut self, cutoff: i64) -> Result<usize, String> {
        self.connection
            .execute(
                "DELETE FROM variables WHERE room IN (
                   SELECT room FROM variables GROUP BY room HAVING max(updated_at) < ?1)",
                [cutoff],
            )
            .map_err(|e| self.error("cannot delete old rooms", e))
    }

    /// Every stored room (or only `room`), each with its variables, ordered by room and name.
    pub fn rooms(&self, room: Option<&str>) -> Result<Vec<(String, Vec<SavedVariable>)>, String> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT room, name, value, is_number FROM variables
                 WHERE ?1 IS NULL OR room = ?1 ORDER BY room, name",
            )
            .map_err(|e| self.error("cannot read", e))?;
        let mut rows = statement
            .query([room])
            .map_err(|e| self.error("cannot read", e))?;
        let mut rooms: Vec<(String, Vec<SavedVariable>)> = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.error("cannot read", e))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(String, SavedVariable)> {
                Ok((
                    row.get(0)?,
                    SavedVariable {
                        name: row.get::<_, String>(1)?.into(),
                        value: row.get(2)?,
                        is_number: row.get(3)?,
                    },
                ))
            };
            let (room, variable) = read(row).map_err(|e| self.error("cannot read", e))?;
            match rooms.last_mut() {
                Some((last, variables)) if *last == room => variables.push(variable),
                _ => rooms.push((room, vec![variable])),
            }
        }
        Ok(rooms)
    }

    /// Whether the database has any row; for tests and tools.
    pub fn is_empty(&self) -> Result<bool, String> {
        self.connection
            .query_row("SELECT 1 FROM variables LIMIT 1", [], |_| Ok(()))
            .optional()
            .map(|row| row.is_none())
            .map_err(|e| self.error("cannot read", e))
    }
}

pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
