//! The SQLite database under `--data-dir`: one row per variable (with its last writer and
//! time) and one history chunk per room per batch, schema versioned (a version-1 file is
//! migrated in place), WAL mode.
//!
//! A chunk holds the room's entries of one batch, newest first, encoded as the Redis list's
//! entries are (`engine/history_codec.rs`), with the range of their sequence numbers and times:
//! one b-tree insert per room and batch rather than one per entry. `floor` is the room's trim
//! cut when the chunk was written (entries numbered at or below it are gone): the save deletes
//! the chunks wholly below it, and reads skip the older entries of the chunk straddling it, so
//! the newest chunk's `floor` is the room's. Retention deletes chunks by their newest time and
//! rewrites a chunk straddling its cutoff. Chunks are a rowid table with an index on
//! `(room, last_seq)` rather than a table without rowid: a chunk is a few kilobytes, and a
//! b-tree keyed by whole rows that large is slow to insert into.
//!
//! Used only by the storage thread and by the `export`/`import` commands, never by the event
//! loop. Opening refuses anything that is not a stratus database rather than touching it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::chunks;
use crate::admin::bans::{Ban, Banned, Block, Change};
use crate::config::Network;
use crate::engine::{Batch, HistoryEntry, RoomChanges, RoomSummary, SavedVariable};
use crate::query::MAX_ANSWER_BYTES;

/// The database file inside the data directory.
pub const FILE_NAME: &str = "stratus.db";

/// Marks the file as ours (`PRAGMA application_id`): "STRT".
const APPLICATION_ID: i64 = 0x5354_5254;

/// The schema this release writes; later releases migrate from it.
const SCHEMA_VERSION: i64 = 2;

/// History, as chunks (`chunks.rs`): the same in a new file and in the migration from 1.
const HISTORY_TABLE: &str = "
    CREATE TABLE history (
        room TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        min_ms INTEGER NOT NULL,
        max_ms INTEGER NOT NULL,
        floor INTEGER NOT NULL,
        entries BLOB NOT NULL
    );
    CREATE UNIQUE INDEX history_by_room ON history (room, last_seq);
    CREATE INDEX history_by_time ON history (min_ms);
";

const SCHEMA: &str = "
    CREATE TABLE variables (
        room TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        is_number INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        user TEXT NOT NULL DEFAULT '',
        changed_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (room, name)
    ) WITHOUT ROWID;
";

/// The admin API's bans and runtime project blocks (schema 2). `IF NOT EXISTS`: a version-2
/// file written before they existed gets them at open.
const ADMIN_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS bans (
        id INTEGER PRIMARY KEY,
        user TEXT,
        address TEXT,
        until_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        by TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS blocks (
        project TEXT PRIMARY KEY,
        until_ms INTEGER,
        by TEXT NOT NULL
    ) WITHOUT ROWID;
";

/// Version 1 to 2: variables gain their writer and time (the time of rows written before is
/// their `updated_at`), and history gets its table. Run in one transaction.
const MIGRATE_1_TO_2: &str = "
    ALTER TABLE variables ADD COLUMN user TEXT NOT NULL DEFAULT '';
    ALTER TABLE variables ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE variables SET changed_ms = updated_at * 1000;
    PRAGMA user_version = 2;
";

/// The schema of version 1, as the previous release created it (for the migration's tests).
#[cfg(test)]
pub(crate) const SCHEMA_V1: &str = "
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
    /// `--history`: entries kept per room; a save trims to it.
    history_cap: usize,
    /// The encoding buffer of history chunks, reused between saves.
    chunk: Vec<u8>,
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
        let database = Database {
            connection,
            path,
            history_cap: 0,
            chunk: Vec::new(),
        };
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
                "BEGIN; {SCHEMA} {HISTORY_TABLE} {ADMIN_TABLES} PRAGMA application_id = {APPLICATION_ID}; \
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
        if version == 1 && !read_only {
            let migrate = format!("BEGIN; {MIGRATE_1_TO_2} {HISTORY_TABLE} {ADMIN_TABLES} COMMIT;");
            if let Err(e) = db.execute_batch(&migrate) {
                let _ = db.execute_batch("ROLLBACK;");
                return Err(self.error("cannot migrate the schema from version 1", e));
            }
            log::info!(
                "{}: schema migrated from version 1 to 2",
                self.path.display()
            );
            return Ok(());
        }
        if version != SCHEMA_VERSION {
            return Err(format!(
                "{}: schema version {version}, this release knows {SCHEMA_VERSION}; \
                 refusing to touch it",
                self.path.display()
            ));
        }
        if !read_only {
            db.execute_batch(ADMIN_TABLES)
                .map_err(|e| self.error("cannot create the admin tables", e))?;
        }
        Ok(())
    }

    /// The bans and blocks still in force at `now_ms`; expired ones are deleted first.
    pub fn load_bans(&mut self, now_ms: u64) -> Result<(Vec<Ban>, Vec<Block>), String> {
        self.delete_expired_bans(now_ms)?;
        let fail = |e| self.error("cannot read the bans", e);
        let mut statement = self
            .connection
            .prepare("SELECT id, user, address, until_ms, reason, by FROM bans ORDER BY id")
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                let user: Option<String> = row.get(1)?;
                let address: Option<String> = row.get(2)?;
                Ok((
                    to_u64(row.get(0)?),
                    user,
                    address,
                    to_u64(row.get(3)?),
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .map_err(fail)?;
        let mut bans = Vec::new();
        for row in rows {
            let (id, user, address, until_ms, reason, by) = row.map_err(fail)?;
            // A row that names nobody readable is skipped, not fatal.
            let who = match (user, address) {
                (Some(user), _) => Banned::User(user),
                (None, Some(address)) => match Network::parse(&address) {
                    Some(network) => Banned::Address(network),
                    None => continue,
                },
                (None, None) => continue,
            };
            let ban = Ban {
                id,
                who,
                until_ms,
                reason,
                by,
            };
            if ban.is_sound() {
                bans.push(ban);
            } else {
                log::warn!("store: ban {id} is malformed (id, name or length): left out");
            }
        }
        let mut statement = self
            .connection
            .prepare("SELECT project, until_ms, by FROM blocks ORDER BY project")
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                Ok(Block {
                    project: row.get(0)?,
                    until_ms: row.get::<_, Option<i64>>(1)?.map(to_u64),
                    by: row.get(2)?,
                })
            })
            .map_err(fail)?;
        let mut blocks = Vec::new();
        for block in rows {
            let block: Block = block.map_err(fail)?;
            if block.is_sound() {
                blocks.push(block);
            } else {
                log::warn!("store: a project block is malformed (project or length): left out");
            }
        }
        Ok((bans, blocks))
    }

    /// Writes one change to the bans or blocks.
    pub fn write_ban_change(&mut self, change: &Change) -> Result<(), String> {
        let written = match change {
            Change::Ban(ban) => {
                let (user, address) = match &ban.who {
                    Banned::User(name) => (Some(name.clone()), None),
                    Banned::Address(network) => (None, Some(network.to_string())),
                };
                self.connection.execute(
                    "INSERT OR REPLACE INTO bans (id, user, address, until_ms, reason, by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        to_i64(ban.id),
                        user,
                        address,
                        to_i64(ban.until_ms),
                        ban.reason,
                        ban.by
                    ],
                )
            }
            Change::Lift(id) => self
                .connection
                .execute("DELETE FROM bans WHERE id = ?1", [to_i64(*id)]),
            Change::Block(block) => self.connection.execute(
                "INSERT OR REPLACE INTO blocks (project, until_ms, by) VALUES (?1, ?2, ?3)",
                params![block.project, block.until_ms.map(to_i64), block.by],
            ),
            Change::Unblock(project) => self
                .connection
                .execute("DELETE FROM blocks WHERE project = ?1", [project]),
        };
        written
            .map(|_| ())
            .map_err(|e| self.error("cannot write the bans", e))
    }

    /// Deletes bans and blocks whose time has come by `now_ms`.
    pub fn delete_expired_bans(&mut self, now_ms: u64) -> Result<(), String> {
        let now = to_i64(now_ms);
        self.connection
            .execute("DELETE FROM bans WHERE until_ms <= ?1", [now])
            .and_then(|_| {
                self.connection
                    .execute("DELETE FROM blocks WHERE until_ms <= ?1", [now])
            })
            .map(|_| ())
            .map_err(|e| self.error("cannot delete expired bans", e))
    }

    /// `--history`: how many entries per room a save keeps (0: history is not written).
    pub fn set_history_cap(&mut self, cap: usize) {
        self.history_cap = cap;
    }

    /// The stored variables of `room` (none when it was never stored), with the sequence
    /// number of its newest history entry (0: none).
    pub fn load(&self, room: &str) -> Result<(Vec<SavedVariable>, u64), String> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT name, value, is_number, user, changed_ms FROM variables WHERE room = ?1",
            )
            .map_err(|e| self.error("cannot read", e))?;
        let rows = statement
            .query_map([room], read_variable)
            .map_err(|e| self.error("cannot read", e))?;
        let variables = rows
            .collect::<Result<_, _>>()
            .map_err(|e| self.error("cannot read", e))?;
        let seq =
            chunks::newest_seq(&self.connection, room).map_err(|e| self.error("cannot read", e))?;
        Ok((variables, seq))
    }

    /// The newest `count` history entries of `room`, newest first.
    pub fn history(&self, room: &str, count: usize) -> Result<Vec<HistoryEntry>, String> {
        self.history_page(room, None, u64::MAX, 0, count)
    }

    /// A page of `room`'s history, newest first: the entries with sequence numbers in
    /// `recent` (inclusive), then the newest `count` older than `before` after skipping `skip`
    /// of them. Reading stops once the entries' text passes [`MAX_ANSWER_BYTES`]: the answer
    /// would not show more.
    pub fn history_page(
        &self,
        room: &str,
        recent: Option<(u64, u64)>,
        before: u64,
        skip: usize,
        count: usize,
    ) -> Result<Vec<HistoryEntry>, String> {
        chunks::page(&self.connection, room, recent, before, skip, count)
            .map_err(|e| self.error("cannot read", e))
    }

    /// The admin API's page of stored rooms, by id: `count` of them after skipping `skip`,
    /// leaving out those in `in_memory` (sorted). Each with its number of variables, the bytes
    /// of their names and values, and the newest one's time. Stops near
    /// [`MAX_ANSWER_BYTES`] of ids.
    pub fn rooms_page(
        &self,
        skip: usize,
        count: usize,
        in_memory: &[Box<str>],
    ) -> Result<Vec<RoomSummary>, String> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT room, count(*),
                        sum(length(CAST(name AS BLOB)) + length(CAST(value AS BLOB))),
                        max(changed_ms)
                 FROM variables GROUP BY room ORDER BY room",
            )
            .map_err(|e| self.error("cannot read", e))?;
        let mut rows = statement
            .query([])
            .map_err(|e| self.error("cannot read", e))?;
        let (mut rooms, mut skipped, mut bytes) = (Vec::new(), 0, 0);
        while rooms.len() < count && bytes <= MAX_ANSWER_BYTES {
            let Some(row) = rows.next().map_err(|e| self.error("cannot read", e))? else {
                break;
            };
            let id: String = row.get(0).map_err(|e| self.error("cannot read", e))?;
            if in_memory
                .binary_search_by(|r| (**r).cmp(id.as_str()))
                .is_ok()
            {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            let number = |at: usize| -> Result<u64, String> {
                let n: Option<i64> = row.get(at).map_err(|e| self.error("cannot read", e))?;
                Ok(n.map_or(0, to_u64))
            };
            let last = number(3)?;
            bytes += id.len();
            rooms.push(RoomSummary {
                id,
                members: 0,
                variables: usize::try_from(number(1)?).unwrap_or(usize::MAX),
                bytes: usize::try_from(number(2)?).unwrap_or(usize::MAX),
                last_change: (last > 0).then_some(last),
            });
        }
        Ok(rooms)
    }

    /// Writes a batch in one transaction: values, then history entries, each room's history
    /// trimmed to the newest `--history` entries.
    pub fn save(&mut self, batch: &Batch) -> Result<(), String> {
        let cap = u64::try_from(self.history_cap).unwrap_or(u64::MAX);
        let path = self.path.clone();
        let fail = |what: &str, e: rusqlite::Error| format!("{}: {what}: {e}", path.display());
        let transaction = self
            .connection
            .transaction()
            .map_err(|e| fail("cannot write", e))?;
        Database::write_batch(&transaction, &path, batch, Some(cap), &mut self.chunk)?;
        transaction.commit().map_err(|e| fail("cannot commit", e))
    }

    /// Writes `batch` with `db` (inside the caller's transaction), history trimmed to `cap`
    /// (`None`: kept whole, for imports; `Some(0)`: history is not written).
    fn write_batch(
        db: &Connection,
        path: &Path,
        batch: &Batch,
        cap: Option<u64>,
        chunk: &mut Vec<u8>,
    ) -> Result<(), String> {
        let now = unix_seconds();
        let fail = |what: &str, e: rusqlite::Error| format!("{}: {what}: {e}", path.display());
        {
            let mut upsert = db
                .prepare_cached(
                    "INSERT INTO variables (room, name, value, is_number, updated_at, user,
                       changed_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (room, name) DO UPDATE SET
                       value = excluded.value, is_number = excluded.is_number,
                       updated_at = excluded.updated_at, user = excluded.user,
                       changed_ms = excluded.changed_ms",
                )
                .map_err(|e| fail("cannot write", e))?;
            let mut clear = db
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
                            now,
                            &*variable.user,
                            to_i64(variable.changed_ms),
                        ])
                        .map_err(|e| fail("cannot write", e))?;
                }
                if cap == Some(0) || room.history.is_empty() {
                    continue;
                }
                chunks::write(db, &room.room, &room.history, cap, chunk, &fail)?;
            }
        }
        Ok(())
    }

    /// Writes an import: `batch` (every history entry kept), and each room of `histories`
    /// gets exactly those entries, all in one transaction. The server trims to `--history`
    /// at its next save of the room.
    pub fn import(
        &mut self,
        batch: &Batch,
        histories: &[(String, Vec<HistoryEntry>)],
    ) -> Result<(), String> {
        let mut batch_with_history = Batch::default();
        for room in &batch.rooms {
            let mut changes = RoomChanges::replacing(room.room.clone(), room.variables.clone());
            if let Some((_, entries)) = histories.iter().find(|(id, _)| **id == *room.room) {
                changes.history_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
                changes.history = entries.clone();
            }
            batch_with_history.rooms.push(changes);
        }
        for (room, entries) in histories {
            if !batch.rooms.iter().any(|r| *r.room == **room) {
                let mut changes = RoomChanges::upserting(room.as_str().into(), Vec::new());
                changes.history = entries.clone();
                batch_with_history.rooms.push(changes);
            }
        }
        let path = self.path.clone();
        let fail = |what: &str, e: rusqlite::Error| format!("{}: {what}: {e}", path.display());
        let transaction = self
            .connection
            .transaction()
            .map_err(|e| fail("cannot write", e))?;
        for (room, _) in histories {
            transaction
                .execute("DELETE FROM history WHERE room = ?1", [room])
                .map_err(|e| fail("cannot write", e))?;
        }
        Database::write_batch(
            &transaction,
            &path,
            &batch_with_history,
            None,
            &mut self.chunk,
        )?;
        transaction.commit().map_err(|e| fail("cannot commit", e))
    }

    /// Deletes rooms nobody wrote since `cutoff` (Unix seconds) with their history, and history
    /// entries older than it; returns how many variables were deleted.
    pub fn delete_rooms_older_than(&mut self, cutoff: i64) -> Result<usize, String> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| format!("{}: cannot delete old rooms: {e}", path.display());
        let transaction = self.connection.transaction().map_err(fail)?;
        // The rooms to go are found once (one pass over the variables); the old entries of
        // the others through the index on their time.
        transaction
            .execute(
                "CREATE TEMP TABLE expired AS
                   SELECT room FROM variables GROUP BY room HAVING max(updated_at) < ?1",
                [cutoff],
            )
            .map_err(fail)?;
        transaction
            .execute(
                "DELETE FROM history WHERE room IN (SELECT room FROM expired)",
                [],
            )
            .map_err(fail)?;
        let deleted = transaction
            .execute(
                "DELETE FROM variables WHERE room IN (SELECT room FROM expired)",
                [],
            )
            .map_err(fail)?;
        transaction
            .execute("DROP TABLE expired", [])
            .map_err(fail)?;
        chunks::delete_older_than(&transaction, cutoff.saturating_mul(1000)).map_err(fail)?;
        transaction.commit().map_err(fail)?;
        Ok(deleted)
    }

    /// Every stored room's history (or only `room`'s), oldest first per room, for exports.
    pub fn all_history(
        &self,
        room: Option<&str>,
    ) -> Result<Vec<(String, Vec<HistoryEntry>)>, String> {
        chunks::all(&self.connection, room).map_err(|e| self.error("cannot read", e))
    }

    /// Every stored room (or only `room`), each with its variables, ordered by room and name.
    pub fn rooms(&self, room: Option<&str>) -> Result<Vec<(String, Vec<SavedVariable>)>, String> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT room, name, value, is_number, user, changed_ms FROM variables
                 WHERE ?1 IS NULL OR room = ?1 ORDER BY room, name",
            )
            .map_err(|e| self.error("cannot read", e))?;
        let mut rows = statement
            .query([room])
            .map_err(|e| self.error("cannot read", e))?;
        let mut rooms: Vec<(String, Vec<SavedVariable>)> = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.error("cannot read", e))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(String, SavedVariable)> {
                Ok((row.get(0)?, read_variable_at(row, 1)?))
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

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn read_variable(row: &rusqlite::Row<'_>) -> rusqlite::Result<SavedVariable> {
    read_variable_at(row, 0)
}

/// A variable from columns `name, value, is_number, user, changed_ms` starting at `at`.
fn read_variable_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SavedVariable> {
    Ok(SavedVariable {
        name: row.get::<_, String>(at)?.into(),
        value: row.get(at + 1)?,
        is_number: row.get(at + 2)?,
        user: Arc::from(row.get::<_, String>(at + 3)?),
        changed_ms: to_u64(row.get(at + 4)?),
    })
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
