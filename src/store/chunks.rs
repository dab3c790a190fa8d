//! The `history` table: a room's entries stored as chunks, one row per room per batch (see
//! `db.rs` for the layout), written, trimmed, paged, swept by retention and exported here.
//!
//! Every function takes the connection (inside the caller's transaction where it writes).
//! Reads walk chunks newest first through the primary key and decode entries as borrowed
//! views, copying only those they return; entries at or below the room's floor (the newest
//! chunk's) are trimmed ones still on disk in a straddling chunk and are never shown. A room's
//! entries are shown newest first with strictly falling sequence numbers: a chunk overlapping a
//! newer one (which the server never writes) cannot show an entry twice.

use rusqlite::{params, Connection};

use crate::engine::history_codec::{self, EntryView};
use crate::engine::HistoryEntry;
use crate::query::MAX_ANSWER_BYTES;

/// The most entries one chunk holds: a batch's entries of a room are at most `--history`, but
/// an import may bring any number; it is split so that no row grows without bound.
pub const MAX_CHUNK_ENTRIES: usize = 1000;

/// A kept encoding buffer larger than this is let go after the save.
const MAX_KEPT_BUFFER: usize = 1 << 20;

type Fail<'a> = &'a dyn Fn(&str, rusqlite::Error) -> String;

/// Writes `entries` (oldest first) of `room` as chunks; with `cap` (`--history`, `None` for an
/// import that keeps everything) the room's floor moves to `newest - cap` and the chunks wholly
/// at or below it are deleted. `buffer` is reused between calls.
pub fn write(
    db: &Connection,
    room: &str,
    entries: &[HistoryEntry],
    cap: Option<u64>,
    buffer: &mut Vec<u8>,
    fail: Fail<'_>,
) -> Result<(), String> {
    let mut insert = db
        .prepare_cached(
            "INSERT OR REPLACE INTO history
               (room, first_seq, last_seq, min_ms, max_ms, floor, entries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(|e| fail("cannot write", e))?;
    let mut floor = 0;
    for chunk in entries.chunks(MAX_CHUNK_ENTRIES) {
        let (Some(oldest), Some(newest)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        buffer.clear();
        let (mut min_ms, mut max_ms) = (u64::MAX, 0);
        for entry in chunk.iter().rev() {
            history_codec::encode_into(buffer, entry);
            min_ms = min_ms.min(entry.timestamp_ms);
            max_ms = max_ms.max(entry.timestamp_ms);
        }
        floor = cap.map_or(0, |cap| newest.seq.saturating_sub(cap));
        insert
            .execute(params![
                room,
                to_i64(oldest.seq),
                to_i64(newest.seq),
                to_i64(min_ms),
                to_i64(max_ms),
                to_i64(floor),
                &buffer[..],
            ])
            .map_err(|e| fail("cannot write", e))?;
    }
    if buffer.capacity() > MAX_KEPT_BUFFER {
        *buffer = Vec::new();
    }
    if floor > 0 {
        db.prepare_cached("DELETE FROM history WHERE room = ?1 AND last_seq <= ?2")
            .and_then(|mut trim| trim.execute(params![room, to_i64(floor)]))
            .map_err(|e| fail("cannot write", e))?;
    }
    Ok(())
}

/// The sequence number of `room`'s newest stored entry (0: none).
pub fn newest_seq(db: &Connection, room: &str) -> rusqlite::Result<u64> {
    let seq: Option<i64> = db.query_row(
        "SELECT max(last_seq) FROM history WHERE room = ?1",
        [room],
        |row| row.get(0),
    )?;
    Ok(seq.map_or(0, to_u64))
}

/// `room`'s floor: its entries numbered at or below it are trimmed (0: none; `None`: no
/// history stored). The highest of its chunks': a smaller `--history` earlier trimmed more,
/// and what it trimmed stays hidden. (That chunk stays until a higher floor passes it.)
fn floor(db: &Connection, room: &str) -> rusqlite::Result<Option<u64>> {
    let floor: Option<i64> = db
        .prepare_cached("SELECT max(floor) FROM history WHERE room = ?1")?
        .query_row([room], |row| row.get(0))?;
    Ok(floor.map(to_u64))
}

/// Walks `room`'s entries above `floor` newest first, in the chunks whose entries may lie in
/// `low..below` (a chunk is skipped unread when it cannot), until `visit` says stop.
fn walk(
    db: &Connection,
    room: &str,
    floor: u64,
    low: u64,
    below: u64,
    mut visit: impl FnMut(&EntryView<'_>) -> bool,
) -> rusqlite::Result<()> {
    let mut statement = db.prepare_cached(
        "SELECT first_seq, entries FROM history
         WHERE room = ?1 AND last_seq >= ?2 ORDER BY last_seq DESC",
    )?;
    let mut rows = statement.query(params![room, to_i64(low.max(floor + 1))])?;
    let mut shown_below = u64::MAX;
    while let Some(row) = rows.next()? {
        if to_u64(row.get(0)?) >= below {
            continue;
        }
        for view in history_codec::views(row.get_ref(1)?.as_blob()?) {
            if view.seq >= shown_below {
                continue;
            }
            if view.seq <= floor {
                break;
            }
            shown_below = view.seq;
            if !visit(&view) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A page of `room`'s history, newest first (`Database::history_page`): the entries numbered
/// in `recent` (inclusive), then the newest `count` numbered below `before` after skipping
/// `skip` of them; reading stops once the entries' text passes [`MAX_ANSWER_BYTES`].
pub fn page(
    db: &Connection,
    room: &str,
    recent: Option<(u64, u64)>,
    before: u64,
    skip: usize,
    count: usize,
) -> rusqlite::Result<Vec<HistoryEntry>> {
    let mut page = Page::default();
    let Some(floor) = floor(db, room)? else {
        return Ok(page.entries);
    };
    if let Some((low, high)) = recent {
        walk(db, room, floor, low, high.saturating_add(1), |view| {
            if view.seq < low || page.is_full() {
                return false;
            }
            if view.seq <= high {
                page.keep(view);
            }
            true
        })?;
    }
    if count > 0 && !page.is_full() {
        let (mut skipped, mut taken) = (0, 0);
        walk(db, room, floor, 0, before, |view| {
            if view.seq >= before {
                return true;
            }
            if skipped < skip {
                skipped += 1;
                return true;
            }
            page.keep(view);
            taken += 1;
            taken < count && !page.is_full()
        })?;
    }
    Ok(page.entries)
}

/// A page being read, and the bytes of its entries' text.
#[derive(Default)]
struct Page {
    entries: Vec<HistoryEntry>,
    bytes: usize,
}

impl Page {
    fn keep(&mut self, view: &EntryView<'_>) {
        self.bytes += view.user.len() + view.name.len() + view.value.len();
        self.entries.push(view.to_entry());
    }

    /// The answer would not show more.
    fn is_full(&self) -> bool {
        self.bytes > MAX_ANSWER_BYTES
    }
}

/// Retention: deletes the chunks whose entries are all older than `cutoff_ms`, and rewrites
/// those straddling it with their newer entries. Chunks are found through their oldest time's
/// index.
pub fn delete_older_than(db: &Connection, cutoff_ms: i64) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM history WHERE min_ms < ?1 AND max_ms < ?1",
        [cutoff_ms],
    )?;
    let straddling: Vec<(String, i64, Vec<u8>)> = db
        .prepare("SELECT room, last_seq, entries FROM history WHERE min_ms < ?1")?
        .query_map([cutoff_ms], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let cutoff = to_u64(cutoff_ms);
    let mut update = db.prepare(
        "UPDATE history SET first_seq = ?3, min_ms = ?4, entries = ?5
         WHERE room = ?1 AND last_seq = ?2",
    )?;
    let mut delete = db.prepare("DELETE FROM history WHERE room = ?1 AND last_seq = ?2")?;
    for (room, last_seq, chunk) in straddling {
        let kept: Vec<HistoryEntry> = history_codec::views(&chunk)
            .filter(|view| view.timestamp_ms >= cutoff)
            .map(|view| view.to_entry())
            .collect();
        let mut rewritten = Vec::with_capacity(chunk.len());
        for entry in &kept {
            history_codec::encode_into(&mut rewritten, entry);
        }
        match (kept.last(), kept.iter().map(|e| e.timestamp_ms).min()) {
            (Some(oldest), Some(min_ms)) => update.execute(params![
                room,
                last_seq,
                to_i64(oldest.seq),
                to_i64(min_ms),
                rewritten
            ])?,
            _ => delete.execute(params![room, last_seq])?,
        };
    }
    Ok(())
}

/// Every stored room's history (or only `room`'s), oldest first per room, for exports.
pub fn all(
    db: &Connection,
    room: Option<&str>,
) -> rusqlite::Result<Vec<(String, Vec<HistoryEntry>)>> {
    let mut statement = db.prepare(
        "SELECT room, floor, entries FROM history
         WHERE ?1 IS NULL OR room = ?1 ORDER BY room, last_seq DESC",
    )?;
    let mut rows = statement.query([room])?;
    // Per room, newest first, with the room's floor (the highest of its chunks').
    let mut rooms: Vec<(String, u64, Vec<HistoryEntry>)> = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let floor = to_u64(row.get(1)?);
        match rooms.last_mut() {
            Some((last, room_floor, _)) if *last == id => *room_floor = (*room_floor).max(floor),
            _ => rooms.push((id, floor, Vec::new())),
        }
        let Some((_, _, entries)) = rooms.last_mut() else {
            continue;
        };
        let shown_below = entries.last().map_or(u64::MAX, |e| e.seq);
        entries.extend(
            history_codec::views(row.get_ref(2)?.as_blob()?)
                .filter(|view| view.seq < shown_below)
                .map(|view| view.to_entry()),
        );
    }
    Ok(rooms
        .into_iter()
        .filter_map(|(id, floor, mut entries)| {
            entries.retain(|e| e.seq > floor);
            entries.reverse();
            (!entries.is_empty()).then_some((id, entries))
        })
        .collect())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
