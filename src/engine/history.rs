//! The history book: every accepted set, create, rename and delete of a room, as entries
//! `{user, verb, name, value, timestamp_ms, seq}`, kept per room in memory.
//!
//! With no backend the latest `--history` entries of a room are its history (lost at restart
//! like the values). With a backend only those not yet confirmed stored are kept, at most
//! `--history` of them: a batch carries them, `Engine::handle_saved` drops those it wrote, and
//! when more arrive before a batch is written the oldest are dropped and counted
//! (`stratus_history_dropped_total`). Entries count against `--max-state-memory`. Timestamps are
//! wall-clock milliseconds computed from the loop's `now` and a base the loop gives at start and
//! again each second (never going back): the engine reads no clock. `--history 0` records
//! nothing and allocates nothing.
//!
//! The book keeps its own logic; `impl Engine` at the bottom is what the engine and the loop
//! call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::room::Room;
use super::{ClientId, Engine, RoomKey, SavedVariable};

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Set,
    Create,
    /// The entry's value is the new name.
    Rename,
    /// The entry's value is empty.
    Delete,
}

impl Verb {
    /// Scratch's name of the action (`/logs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Set => "set_var",
            Verb::Create => "create_var",
            Verb::Rename => "rename_var",
            Verb::Delete => "del_var",
        }
    }

    pub fn parse(text: &str) -> Option<Verb> {
        match text {
            "set_var" => Some(Verb::Set),
            "create_var" => Some(Verb::Create),
            "rename_var" => Some(Verb::Rename),
            "del_var" => Some(Verb::Delete),
            _ => None,
        }
    }
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The writer as its dialect knows it (original case); empty when unknown.
    pub user: Arc<str>,
    pub verb: Verb,
    /// The variable's name (before a rename), `☁ ` prefix included.
    pub name: String,
    /// The value as stored (a rename: the new name; a delete: empty).
    pub value: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The room's sequence number of the entry (1, 2, …; continues after a reload).
    pub seq: u64,
}

impl HistoryEntry {
    /// Bytes this entry counts against the state budget: its buffers' capacities, not their
    /// lengths, since a reused buffer keeps the capacity of what it held before (fixed once
    /// recorded: an entry is never refilled in place).
    pub fn budget_bytes(&self) -> usize {
        std::mem::size_of::<HistoryEntry>() + self.name.capacity() + self.value.capacity()
    }
}

/// A room's entries not yet stored (with a backend), or its latest ones (memory only).
#[derive(Debug, Default)]
pub struct RoomHistory {
    /// Oldest first.
    pub entries: VecDeque<HistoryEntry>,
    /// The sequence number of the room's latest entry (stored or not).
    pub last_seq: u64,
    /// The newest entry the batch out carries (0: none out): an older one that leaves memory
    /// before the batch's answer is not lost, it is being written.
    pub sent_seq: u64,
}

impl RoomHistory {
    /// Entries newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter().rev()
    }

    /// Bytes the entries count against the state budget.
    pub fn budget_bytes(&self) -> usize {
        self.entries.iter().map(HistoryEntry::budget_bytes).sum()
    }
}

/// Spare entries kept for reuse (their strings' buffers): bounded in number and size, so a
/// set after a saved batch does not allocate.
const SPARE_ENTRIES: usize = 1024;
/// A spare entry's strings are kept only up to this capacity.
const SPARE_BYTES: usize = 256;

/// The engine's side of history: the cap, the wall-clock base, the drop counter.
#[derive(Debug)]
pub(super) struct HistoryBook {
    /// `--history`: entries kept per room; 0 records nothing.
    pub cap: usize,
    /// Whether entries are only kept until stored (a backend), or are the history (memory).
    pub until_stored: bool,
    /// The loop's instant and the Unix milliseconds it corresponds to.
    base: Option<(Instant, u64)>,
    /// The latest timestamp handed out, for changes made without a time (tests, tools).
    last_ms: u64,
    /// Unsaved entries dropped because more than `cap` waited for the backend.
    pub dropped: u64,
    spare: Vec<HistoryEntry>,
    /// The user of changes with no member behind them.
    pub nobody: Arc<str>,
}

impl Default for HistoryBook {
    fn default() -> Self {
        HistoryBook {
            cap: 0,
            until_stored: false,
            base: None,
            last_ms: 0,
            dropped: 0,
            spare: Vec::new(),
            nobody: Arc::from(""),
        }
    }
}

impl HistoryBook {
    /// Milliseconds since the epoch at `now` (the latest one handed out without a time).
    pub fn stamp(&mut self, now: Option<Instant>) -> u64 {
        let Some(now) = now else {
            return self.last_ms;
        };
        let (at, ms) = *self.base.get_or_insert((now, 0));
        let elapsed = now.saturating_duration_since(at).as_millis();
        let stamped = ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX));
        self.last_ms = self.last_ms.max(stamped);
        self.last_ms
    }

    /// Makes a new entry, from a spare one when there is one.
    fn entry(
        &mut self,
        user: Arc<str>,
        verb: Verb,
        name: &str,
        value: &str,
        timestamp_ms: u64,
        seq: u64,
    ) -> HistoryEntry {
        let mut entry = self.spare.pop().unwrap_or_else(|| HistoryEntry {
            user: Arc::clone(&self.nobody),
            verb,
            name: String::new(),
            value: String::new(),
            timestamp_ms,
            seq,
        });
        fill(&mut entry, user, verb, name, value, timestamp_ms, seq);
        entry
    }

    /// Keeps `entry`'s buffers for a later entry, if they are small and spares are few.
    fn give_back(&mut self, mut entry: HistoryEntry) {
        if self.spare.len() < SPARE_ENTRIES
            && entry.name.capacity() <= SPARE_BYTES
            && entry.value.capacity() <= SPARE_BYTES
        {
            entry.user = Arc::clone(&self.nobody);
            self.spare.push(entry);
        }
    }

    /// Drops `room`'s entries up to `seq` (they are stored); returns the bytes freed.
    pub fn stored(&mut self, room: &mut RoomHistory, seq: u64) -> usize {
        let mut freed = 0;
        while room.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(entry) = room.entries.pop_front() {
                freed += entry.budget_bytes();
                self.give_back(entry);
            }
        }
        freed
    }
}

fn fill(
    entry: &mut HistoryEntry,
    user: Arc<str>,
    verb: Verb,
    name: &str,
    value: &str,
    timestamp_ms: u64,
    seq: u64,
) {
    entry.user = user;
    entry.verb = verb;
    // Exact: an entry's capacity is what it counts against the budget.
    entry.name.clear();
    entry.name.reserve_exact(name.len());
    entry.name.push_str(name);
    entry.value.clear();
    entry.value.reserve_exact(value.len());
    entry.value.push_str(value);
    entry.timestamp_ms = timestamp_ms;
    entry.seq = seq;
}

/// The display name of `client` in `room` (shared, no copy), or `nobody`.
pub(super) fn shown_in(room: &Room, client: ClientId, nobody: &Arc<str>) -> Arc<str> {
    room.members
        .iter()
        .find(|m| m.client == client)
        .map_or_else(|| Arc::clone(nobody), |m| Arc::clone(&m.shown))
}

/// A page of a room's history, newest first: the entries still unsaved in memory
/// (`unsaved`, newest first) merged with those read from the backend (`stored`, newest
/// first), by the room's sequence number only (timestamps may step back with the wall clock;
/// the store pages by sequence number too), then `offset` and `limit` applied. An entry in
/// both (the same sequence number, as when a save was processed after the read) is kept once.
/// Borrows, never copies an entry.
pub fn merge_newest<'a>(
    unsaved: impl IntoIterator<Item = &'a HistoryEntry>,
    stored: &'a [HistoryEntry],
    offset: usize,
    limit: usize,
) -> Vec<&'a HistoryEntry> {
    let mut unsaved = unsaved.into_iter().peekable();
    let mut stored = stored.iter().peekable();
    let mut page = Vec::new();
    let mut skipped = 0;
    while page.len() < limit {
        let next = match (unsaved.peek(), stored.peek()) {
            (Some(a), Some(b)) if a.seq == b.seq => {
                stored.next();
                unsaved.next()
            }
            (Some(a), Some(b)) if a.seq < b.seq => stored.next(),
            (Some(_), _) => unsaved.next(),
            (None, _) => stored.next(),
        };
        let Some(entry) = next else {
            break;
        };
        if skipped < offset {
            skipped += 1;
        } else {
            page.push(entry);
        }
    }
    page
}

impl Engine {
    /// `--history`: entries kept per room; 0 (the default of [`super::Limits`]) records
    /// nothing. Called once, before serving, after [`Engine::set_backend`].
    pub fn set_history(&mut self, cap: usize) {
        self.history.cap = cap;
    }

    /// The wall clock: `now` is `unix_ms` milliseconds since the epoch. Called at start and
    /// again once a second, so that a device whose clock is set late (no real-time clock,
    /// waiting for NTP) stamps correctly from then on; timestamps never go back (a clock
    /// stepped back holds them at the latest one handed out until it catches up).
    pub fn set_clock(&mut self, now: Instant, unix_ms: u64) {
        self.history.base = Some((now, unix_ms));
        self.history.last_ms = self.history.last_ms.max(unix_ms);
    }

    /// `--history`.
    pub fn history_cap(&self) -> usize {
        self.history.cap
    }

    /// Unsaved entries dropped because more than `--history` waited for the backend.
    pub fn history_dropped(&self) -> u64 {
        self.history.dropped
    }

    /// The entries of `room` held in memory, newest first: its history without a backend,
    /// the unsaved ones with one. Borrowed: an answer renders straight from them.
    pub fn history_newest(&self, room: RoomKey) -> impl Iterator<Item = &HistoryEntry> {
        self.rooms
            .get(room.0)
            .into_iter()
            .flat_map(|room| room.history.newest_first())
    }

    /// [`Engine::history_newest`], copied (for tests and tools).
    pub fn history_in_memory(&self, room: RoomKey) -> Vec<HistoryEntry> {
        self.history_newest(room).cloned().collect()
    }

    /// The sequence numbers of `room`'s newest entry and of its oldest one in memory
    /// (`last + 1` when none is): every entry older than the latter is stored, if kept.
    pub fn history_bounds(&self, room: RoomKey) -> (u64, u64) {
        self.rooms.get(room.0).map_or((0, 1), |room| {
            let last = room.history.last_seq;
            let oldest = room.history.entries.front().map_or(last + 1, |e| e.seq);
            (last, oldest)
        })
    }

    /// How many entries of `room` are in memory.
    pub fn history_len(&self, room: RoomKey) -> usize {
        self.rooms
            .get(room.0)
            .map_or(0, |r| r.history.entries.len())
    }

    /// Every variable of `room` as the variables read shows it, borrowed: name, value, last
    /// writer, time (ms).
    pub fn variables_shown(&self, room: RoomKey) -> impl Iterator<Item = (&str, &str, &str, u64)> {
        self.rooms.get(room.0).into_iter().flat_map(|room| {
            room.variables
                .iter()
                .map(|v| (&*v.name, v.value.as_ref().text(), &*v.user, v.changed_ms))
        })
    }

    /// The sequence number of the entry of `room` in memory at `position`, newest first.
    pub fn history_seq_at(&self, room: RoomKey, position: usize) -> Option<u64> {
        let entries = &self.rooms.get(room.0)?.history.entries;
        let index = entries.len().checked_sub(position.checked_add(1)?)?;
        entries.get(index).map(|e| e.seq)
    }

    /// Every variable of `room` as it would be stored, with its last writer and time.
    pub fn saved_variables(&self, room: RoomKey) -> Vec<SavedVariable> {
        self.rooms
            .get(room.0)
            .map(|room| room.variables.iter().map(super::durable::saved).collect())
            .unwrap_or_default()
    }

    /// The display name of `client` in `room` (shared, no copy), or nobody's.
    pub(super) fn shown_user(&self, room: &Room, client: ClientId) -> Arc<str> {
        shown_in(room, client, &self.history.nobody)
    }

    /// Records a change in room `key`'s history (nothing with `--history 0`). `ms` is its
    /// time, `user` its writer.
    pub(super) fn record(
        &mut self,
        key: RoomKey,
        user: Arc<str>,
        verb: Verb,
        name: &str,
        value: &str,
        ms: u64,
    ) {
        let cap = self.history.cap;
        if cap == 0 {
            return;
        }
        let Some(room) = self.rooms.get_mut(key.0) else {
            return;
        };
        room.history.last_seq += 1;
        let seq = room.history.last_seq;
        if room.history.entries.len() >= cap {
            // At the cap the oldest goes (its small buffers, through the spares, carry the new
            // entry); the new one then fits the budget like any other.
            if let Some(oldest) = room.history.entries.pop_front() {
                if self.history.until_stored && oldest.seq > room.history.sent_seq {
                    self.history.dropped += 1;
                }
                self.state_bytes = self.state_bytes.saturating_sub(oldest.budget_bytes());
                self.history.give_back(oldest);
            }
        }
        let entry = self.history.entry(user, verb, name, value, ms, seq);
        let bytes = entry.budget_bytes();
        if !self.fit_by_history(key.0, bytes) {
            // History never evicts a room: the entry is lost, and counted.
            self.history.dropped += 1;
            self.history.give_back(entry);
            return;
        }
        if let Some(room) = self.rooms.get_mut(key.0) {
            self.state_bytes += bytes;
            room.history.entries.push_back(entry);
        }
    }

    /// Drops the oldest history entries of room `key` (counted) until `extra` more bytes fit
    /// the state budget; whether they do. History gives way to values and to newer history.
    /// When even all of them would not make room, none is dropped.
    pub(super) fn fit_by_history(&mut self, key: usize, extra: usize) -> bool {
        let budget = self.limits.max_state_bytes;
        if budget == 0 {
            return true;
        }
        let Some(room) = self.rooms.get_mut(key) else {
            return false;
        };
        let over = (self.state_bytes + self.renders.held_bytes + extra).saturating_sub(budget);
        if over == 0 {
            return true;
        }
        if room.history.budget_bytes() < over {
            return false;
        }
        let mut freed = 0;
        while freed < over {
            let Some(oldest) = room.history.entries.pop_front() else {
                break;
            };
            freed += oldest.budget_bytes();
            if !self.history.until_stored || oldest.seq > room.history.sent_seq {
                self.history.dropped += 1;
            }
            self.history.give_back(oldest);
        }
        self.state_bytes = self.state_bytes.saturating_sub(freed);
        freed >= over
    }

    /// The backend answered the batch that carried `sent` of `room_id`'s entries: stored
    /// (`written`), they leave memory; not, those that left memory meanwhile (the cap, the
    /// budget) are lost after all, and counted now.
    pub(super) fn history_answered(&mut self, room_id: &str, sent: &[HistoryEntry], written: bool) {
        if !self.history.until_stored {
            return;
        }
        let Some(room) = self.index.get(room_id).and_then(|&k| self.rooms.get_mut(k)) else {
            return;
        };
        room.history.sent_seq = 0;
        let Some(newest) = sent.last() else {
            return;
        };
        if written {
            let freed = self.history.stored(&mut room.history, newest.seq);
            self.state_bytes = self.state_bytes.saturating_sub(freed);
        } else {
            let kept_from = room.history.entries.front().map_or(u64::MAX, |e| e.seq);
            let lost = sent.iter().filter(|e| e.seq < kept_from).count();
            self.history.dropped += lost as u64;
        }
    }
}

/// A read for a query of the HTTP API, named by the loop's `id`, for either backend (the
/// storage thread or the Redis command thread).
#[derive(Debug)]
pub enum ReadRequest {
    /// A page of `room`'s history, newest first. The store reads the entries with sequence
    /// numbers in `recent` (unsaved when the read was asked; a save may have moved some to
    /// disk since), then the newest `count` of those older than `before` (all stored when
    /// the read was asked) after skipping `skip` of them. Redis, whose list mixes the entries
    /// of every node (each numbered by its writer), reads its `newest` entries instead. See
    /// `net/server/queries.rs`.
    History {
        room: Box<str>,
        recent: Option<(u64, u64)>,
        before: u64,
        skip: usize,
        count: usize,
        newest: usize,
    },
    /// The variables of `room`, with writer and time.
    Variables { room: Box<str> },
    /// The admin API's list of rooms on disk: the stored rooms by id, leaving out those of
    /// `in_memory` (sorted; the loop lists them itself), `count` of them after skipping
    /// `skip`. The store only: a cluster lists the rooms in memory.
    Rooms {
        skip: usize,
        count: usize,
        in_memory: Vec<Box<str>>,
    },
}

/// What the backend read for a query of the HTTP API (answered through the backend's reply
/// channel, in order with its other replies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredRead {
    /// A room's newest entries, newest first.
    History(Vec<HistoryEntry>),
    /// A room's variables with their last writer and time.
    Variables(Vec<SavedVariable>),
    /// Stored rooms, by id (members 0).
    Rooms(Vec<super::RoomSummary>),
    /// The backend could not read.
    Failed,
}
