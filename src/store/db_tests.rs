//! The database's history rules: entries written in the batch's transaction and trimmed in it,
//! retention, and the migration of a version-1 file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::*;
use crate::admin::bans::{Ban, Banned, Block, Change};
use crate::config::Network;
use crate::engine::{RoomChanges, Verb};
use crate::query::MAX_ANSWER_BYTES;
use crate::store::chunks;

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("stratus-db-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn entry(seq: u64, ms: u64, value: &str) -> HistoryEntry {
    HistoryEntry {
        user: Arc::from("Alice"),
        verb: Verb::Set,
        name: "☁ x".into(),
        value: value.into(),
        timestamp_ms: ms,
        seq,
    }
}

fn variable(value: &str) -> SavedVariable {
    SavedVariable {
        user: Arc::from("Alice"),
        changed_ms: 1234,
        ..SavedVariable::new("☁ x", value, true)
    }
}

fn batch(room: &str, value: &str, history: Vec<HistoryEntry>) -> Batch {
    let mut changes = RoomChanges::upserting(room.into(), vec![variable(value)]);
    changes.history_seq = history.last().map_or(0, |e| e.seq);
    changes.history = history;
    Batch {
        rooms: vec![changes],
    }
}

fn seqs(entries: &[HistoryEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

#[test]
fn entries_are_written_with_the_values_and_trimmed_to_the_cap() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(3);
    let history = (1..=5)
        .map(|s| entry(s, 1000 + s, &s.to_string()))
        .collect();
    db.save(&batch("r", "5", history)).expect("save");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [5, 4, 3]);
    assert_eq!(seqs(&db.history("r", 2).expect("read")), [5, 4]);
    let (variables, last_seq) = db.load("r").expect("load");
    assert_eq!(last_seq, 5);
    assert_eq!(&*variables[0].user, "Alice");
    assert_eq!(variables[0].changed_ms, 1234);
    db.save(&batch("r", "6", vec![entry(6, 1006, "6")]))
        .expect("save");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [6, 5, 4]);
}

#[test]
fn a_failed_batch_writes_neither_values_nor_entries() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(10);
    db.save(&batch("r", "1", vec![entry(1, 1, "1")]))
        .expect("save");
    // A second room in the same batch whose insert fails (a NOT NULL column made to fail
    // by a trigger) rolls the whole batch back.
    db.connection
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON history WHEN NEW.room = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
    let mut both = batch("r", "2", vec![entry(2, 2, "2")]);
    both.rooms
        .extend(batch("bad", "9", vec![entry(1, 3, "9")]).rooms);
    assert!(db.save(&both).is_err());
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [1]);
    let (variables, _) = db.load("r").expect("load");
    assert_eq!(
        variables[0].value, "1",
        "the values rolled back with the entries"
    );
}

#[test]
fn retention_deletes_old_rooms_history_and_old_entries() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(10);
    db.save(&batch(
        "old",
        "1",
        vec![entry(1, unix_seconds() as u64 * 1000, "1")],
    ))
    .expect("save");
    db.save(&batch(
        "live",
        "1",
        vec![
            entry(1, 5_000, "1"),
            entry(2, unix_seconds() as u64 * 1000, "2"),
        ],
    ))
    .expect("save");
    db.connection
        .execute("UPDATE variables SET updated_at = 0 WHERE room = 'old'", [])
        .expect("age");
    let cutoff = 10; // seconds: `old`'s row (0) is older, and so is live's entry at 5 s.
    assert_eq!(db.delete_rooms_older_than(cutoff).expect("sweep"), 1);
    assert!(db.history("old", 10).expect("read").is_empty());
    assert_eq!(seqs(&db.history("live", 10).expect("read")), [2]);
}

#[test]
fn a_version_1_file_is_migrated_in_place() {
    let dir = temp_dir();
    {
        let old = Connection::open(dir.join(FILE_NAME)).expect("create");
        old.execute_batch(&format!(
            "BEGIN; {SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 1; COMMIT;"
        ))
        .expect("v1 schema");
        old.execute(
            "INSERT INTO variables (room, name, value, is_number, updated_at)
             VALUES ('r', '☁ x', '7', 1, 1700000000)",
            [],
        )
        .expect("v1 row");
    }
    let mut db = Database::open(&dir).expect("migrate");
    let version: i64 = db
        .connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("version");
    assert_eq!(version, 2);
    let (variables, last_seq) = db.load("r").expect("load");
    assert_eq!(last_seq, 0);
    assert_eq!(variables[0].value, "7");
    assert_eq!(&*variables[0].user, "");
    assert_eq!(
        variables[0].changed_ms, 1_700_000_000_000,
        "from updated_at"
    );
    db.set_history_cap(10);
    db.save(&batch("r", "8", vec![entry(1, 1, "8")]))
        .expect("save after migration");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [1]);
    db.write_ban_change(&Change::Unblock("p".into()))
        .expect("the migration made the admin tables");
    drop(db);
    // Opened again: version 2 as it is.
    Database::open(&dir).expect("reopen");
}

/// Whether SQLite deletes old entries through an index rather than reading the whole table.
fn sweep_uses_an_index(db: &Database) -> bool {
    let plan: Vec<String> = db
        .connection
        .prepare("EXPLAIN QUERY PLAN DELETE FROM history WHERE min_ms < 5 AND max_ms < 5")
        .expect("plan")
        .query_map([], |row| row.get::<_, String>(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan");
    plan.iter().any(|step| step.contains("history_by_time"))
}

#[test]
fn retention_finds_old_entries_through_an_index_new_or_migrated() {
    let dir = temp_dir();
    let db = Database::open(&dir).expect("open");
    assert!(sweep_uses_an_index(&db), "a new file");
    let dir = temp_dir();
    {
        let old = Connection::open(dir.join(FILE_NAME)).expect("create");
        old.execute_batch(&format!(
            "BEGIN; {SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = 1; COMMIT;"
        ))
        .expect("v1 schema");
    }
    let db = Database::open(&dir).expect("migrate");
    assert!(sweep_uses_an_index(&db), "a migrated file");
}

#[test]
fn a_page_reads_the_named_recent_entries_then_pages_below_the_boundary() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(100);
    let entries = (1..=10).map(|s| entry(s, s, &s.to_string())).collect();
    db.save(&batch("r", "1", entries)).expect("save");
    // 8 and 9 were unsaved when the read was asked (saved since); below 8, skip 1, take 2.
    let page = db.history_page("r", Some((8, 9)), 8, 1, 2).expect("read");
    assert_eq!(seqs(&page), [9, 8, 6, 5]);
    // Nothing recent: the store pages alone.
    let page = db.history_page("r", None, u64::MAX, 3, 4).expect("read");
    assert_eq!(seqs(&page), [7, 6, 5, 4]);
}

#[test]
fn stored_rooms_are_listed_by_id_without_those_in_memory() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    for room in ["3", "1", "2", "4"] {
        db.save(&batch(room, "12", Vec::new())).expect("save");
    }
    let ids = |rooms: Vec<RoomSummary>| rooms.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.rooms_page(0, 10, &[]).expect("page")),
        ["1", "2", "3", "4"]
    );
    let in_memory: Vec<Box<str>> = vec!["2".into()];
    assert_eq!(
        ids(db.rooms_page(1, 2, &in_memory).expect("page")),
        ["3", "4"]
    );
    let first = db.rooms_page(0, 1, &[]).expect("page").remove(0);
    // "☁ x" is 5 bytes, "12" 2.
    assert_eq!(
        (
            first.members,
            first.variables,
            first.bytes,
            first.last_change
        ),
        (0, 1, 7, Some(1234))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bans_and_blocks_survive_reopening_and_expired_ones_do_not() {
    let dir = temp_dir();
    let ban = |id, who, until_ms| Ban {
        id,
        who,
        until_ms,
        reason: "spam".into(),
        by: "alice".into(),
    };
    let network = Network::parse("10.0.0.0/8").expect("network");
    let kept_user = ban(1, Banned::User("Bob".into()), 5_000);
    let kept_net = ban(2, Banned::Address(network), 5_000);
    let expiring = ban(3, Banned::User("eve".into()), 1_000);
    let lifted = ban(4, Banned::User("mallory".into()), 5_000);
    let forever = Block {
        project: "123".into(),
        until_ms: None,
        by: "alice".into(),
    };
    let expiring_block = Block {
        project: "9".into(),
        until_ms: Some(1_000),
        by: "alice".into(),
    };
    {
        let mut db = Database::open(&dir).expect("open");
        for change in [
            Change::Ban(kept_user.clone()),
            Change::Ban(kept_net.clone()),
            Change::Ban(expiring),
            Change::Ban(lifted),
            Change::Lift(4),
            Change::Block(forever.clone()),
            Change::Block(expiring_block),
            Change::Block(Block {
                project: "gone".into(),
                until_ms: None,
                by: "x".into(),
            }),
            Change::Unblock("gone".into()),
        ] {
            db.write_ban_change(&change).expect("write");
        }
    }
    let mut db = Database::open(&dir).expect("reopen");
    let (bans, blocks) = db.load_bans(1_000).expect("load");
    assert_eq!(bans, [kept_user, kept_net]);
    assert_eq!(blocks, [forever]);
    let count: i64 = db
        .connection
        .query_row("SELECT count(*) FROM bans", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 2, "expired rows were deleted");
}

/// How many chunk rows `room` has on disk.
fn chunk_rows(db: &Database, room: &str) -> i64 {
    db.connection
        .query_row(
            "SELECT count(*) FROM history WHERE room = ?1",
            [room],
            |row| row.get(0),
        )
        .expect("count")
}

fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<HistoryEntry> {
    seqs.map(|s| entry(s, 1000 + s, &s.to_string())).collect()
}

#[test]
fn a_chunk_straddling_the_trim_keeps_its_older_entries_on_disk_but_never_shows_them() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(3);
    db.save(&batch("r", "4", entries(1..=4))).expect("save");
    db.save(&batch("r", "6", entries(5..=6))).expect("save");
    // The cut is at 3: the chunk 1..=4 straddles it and stays.
    assert_eq!(chunk_rows(&db, "r"), 2);
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [6, 5, 4]);
    let page = db.history_page("r", None, u64::MAX, 1, 10).expect("read");
    assert_eq!(seqs(&page), [5, 4]);
    let exported = db.all_history(Some("r")).expect("export");
    assert_eq!(
        seqs(&exported[0].1),
        [4, 5, 6],
        "an export shows what reads show"
    );
    // A smaller --history trims more; a larger one later does not bring those back.
    db.set_history_cap(1);
    db.save(&batch("r", "7", entries(7..=7))).expect("save");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [7]);
    db.set_history_cap(10);
    db.save(&batch("r", "8", entries(8..=8))).expect("save");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [8, 7]);
    // Chunks wholly at or below the cut are deleted.
    db.set_history_cap(2);
    db.save(&batch("r", "9", entries(9..=9))).expect("save");
    assert_eq!(chunk_rows(&db, "r"), 2, "only 8 and 9 are left");
}

#[test]
fn pages_read_across_chunk_boundaries_with_the_recent_range_skip_and_count() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(100);
    for range in [1..=3, 4..=6, 7..=10] {
        db.save(&batch("r", "1", entries(range))).expect("save");
    }
    assert_eq!(chunk_rows(&db, "r"), 3);
    // 5..=8 asked as recent (across two chunks), then below 5: skip 1 (4), take 2.
    let page = db.history_page("r", Some((5, 8)), 5, 1, 2).expect("read");
    assert_eq!(seqs(&page), [8, 7, 6, 5, 3, 2]);
    let page = db.history_page("r", None, u64::MAX, 2, 5).expect("read");
    assert_eq!(seqs(&page), [8, 7, 6, 5, 4]);
    let page = db.history_page("r", None, 7, 0, 100).expect("read");
    assert_eq!(seqs(&page), [6, 5, 4, 3, 2, 1]);
    let page = db
        .history_page("r", Some((9, 10)), 9, 5, 100)
        .expect("read");
    assert_eq!(seqs(&page), [10, 9, 3, 2, 1]);
    assert!(db
        .history_page("nobody", Some((1, 2)), 1, 0, 10)
        .expect("read")
        .is_empty());
}

#[test]
fn retention_deletes_old_chunks_and_rewrites_the_one_straddling_the_cutoff() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(100);
    let now_ms = unix_seconds() as u64 * 1000;
    db.save(&batch(
        "r",
        "1",
        vec![entry(1, 1_000, "1"), entry(2, 2_000, "2")],
    ))
    .expect("save");
    db.save(&batch(
        "r",
        "2",
        vec![entry(3, 3_000, "3"), entry(4, now_ms, "4")],
    ))
    .expect("save");
    db.save(&batch("r", "3", vec![entry(5, now_ms, "5")]))
        .expect("save");
    assert_eq!(db.delete_rooms_older_than(10).expect("sweep"), 0);
    assert_eq!(chunk_rows(&db, "r"), 2, "the chunk 1..=2 is gone");
    assert_eq!(seqs(&db.history("r", 10).expect("read")), [5, 4]);
    let (first, min_ms): (i64, i64) = db
        .connection
        .query_row(
            "SELECT first_seq, min_ms FROM history WHERE room = 'r' AND last_seq = 4",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("chunk");
    assert_eq!(
        (first, min_ms),
        (4, now_ms as i64),
        "rewritten with its range"
    );
    assert_eq!(db.load("r").expect("load").1, 5);
}

#[test]
fn an_import_writes_its_entries_as_chunks_of_bounded_size() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(10);
    let count = chunks::MAX_CHUNK_ENTRIES as u64 * 2 + 5;
    let imported = entries(1..=count);
    let rooms = Batch {
        rooms: vec![RoomChanges::replacing("r".into(), vec![variable("1")])],
    };
    db.import(&rooms, &[("r".to_owned(), imported.clone())])
        .expect("import");
    assert_eq!(chunk_rows(&db, "r"), 3);
    // An import keeps every entry (the server trims at its next save of the room).
    let exported = db.all_history(Some("r")).expect("export");
    assert_eq!(exported, [("r".to_owned(), imported)]);
    let page = db.history_page("r", None, u64::MAX, 1000, 3).expect("read");
    assert_eq!(seqs(&page), [count - 1000, count - 1001, count - 1002]);
    assert_eq!(db.load("r").expect("load").1, count);
    db.save(&batch("r", "2", entries(count + 1..=count + 1)))
        .expect("save");
    assert_eq!(db.history("r", 100).expect("read").len(), 10);
    assert_eq!(
        chunk_rows(&db, "r"),
        3,
        "the oldest chunk is gone, the one straddling the cut stays"
    );
}

#[test]
fn a_page_from_chunks_stops_once_its_text_passes_the_answer_size() {
    let dir = temp_dir();
    let mut db = Database::open(&dir).expect("open");
    db.set_history_cap(100);
    let big = "1".repeat(100_000);
    for first in [1, 11, 21] {
        let history = (first..first + 10).map(|s| entry(s, s, &big)).collect();
        db.save(&batch("r", "1", history)).expect("save");
    }
    // Entries are kept while the text so far is at most MAX_ANSWER_BYTES (1 MiB): the 11th
    // passes it.
    let limit = MAX_ANSWER_BYTES / 100_000 + 1;
    let page = db.history_page("r", None, u64::MAX, 0, 30).expect("read");
    assert_eq!(page.len(), limit);
    let page = db
        .history_page("r", Some((21, 30)), 21, 0, 20)
        .expect("read");
    assert_eq!(
        page.len(),
        limit,
        "the recent range and the page share the bound"
    );
}
