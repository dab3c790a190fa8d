//! What the engine owes its durable backend (the SQLite store or the Redis cluster), kept as
//! state rather than as a queue of changes, and the rooms joins wait for.
//!
//! Each room knows the version that is safely stored ([`RoomDurability`]). A batch carries, for
//! every room with newer changes, the latest value of each variable changed since then (or all
//! of them after a rename or delete): at most the room's state, however fast sets arrive. Only
//! one batch is out at a time (the caller's rule); if it fails, its rooms stay owed and the
//! next batch carries their then-latest values. Rooms not in memory are loaded on join: the
//! join waits (the book remembers who waits), the backend's answer installs the room and names
//! the waiters.
//!
//! The book keeps its own logic; `impl Engine` below is the backend-facing contract (see
//! [`Engine`]'s documentation for the call order).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::catch_up::CatchUp;
use super::history::HistoryEntry;
use super::room::{Room, Variable};
use super::value::ValueRef;
use super::{ClientId, Engine, JoinError};

/// Where rooms come from and changes go to; set once at start ([`Engine::set_backend`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Memory only: rooms are created on join, nothing is owed.
    #[default]
    Memory,
    /// The SQLite store.
    Store,
    /// Redis, shared with other nodes (`engine/cluster.rs`).
    Cluster,
}

/// Variables to write, per room, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub rooms: Vec<RoomChanges>,
}

#[derive(Debug)]
pub struct RoomChanges {
    pub room: Box<str>,
    /// Replace the room's stored variables with `variables` (after renames and deletes).
    pub replace_all: bool,
    pub variables: Vec<SavedVariable>,
    /// Variables a joining client declared to seed an empty room (legacy dialect): written
    /// only where the store has no value of that name yet, since in a cluster another node's
    /// declaration, or sets after it, may have reached the store first.
    pub seeds: Vec<SavedVariable>,
    /// The room's history entries not yet stored, oldest first (`engine/history.rs`).
    pub history: Vec<HistoryEntry>,
    /// The sequence number of the newest of them (0: none); stored, they leave memory.
    pub history_seq: u64,
    /// The room version these changes bring the store to.
    version: u64,
}

/// A variable as stored: the value's text and whether it is a number, with its last writer
/// (empty when unknown) and when it wrote (Unix milliseconds; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedVariable {
    pub name: Box<str>,
    pub value: String,
    pub is_number: bool,
    pub user: Arc<str>,
    pub changed_ms: u64,
}

/// `variable` as it is stored.
pub(super) fn saved(variable: &Variable) -> SavedVariable {
    let value = variable.value.as_ref();
    SavedVariable {
        name: variable.name.clone(),
        value: value.text().to_owned(),
        is_number: value.is_number(),
        user: Arc::clone(&variable.user),
        changed_ms: variable.changed_ms,
    }
}

impl SavedVariable {
    /// A variable with no known writer or time.
    pub fn new(name: &str, value: &str, is_number: bool) -> Self {
        SavedVariable {
            name: name.into(),
            value: value.to_owned(),
            is_number,
            user: Arc::from(""),
            changed_ms: 0,
        }
    }

    pub fn value(&self) -> ValueRef<'_> {
        if self.is_number {
            ValueRef::Number(&self.value)
        } else {
            ValueRef::Text(&self.value)
        }
    }
}

impl RoomChanges {
    /// Variables to write over the stored ones of the same names (for tools and benches).
    pub fn upserting(room: Box<str>, variables: Vec<SavedVariable>) -> Self {
        RoomChanges {
            room,
            replace_all: false,
            variables,
            seeds: Vec::new(),
            history: Vec::new(),
            history_seq: 0,
            version: 0,
        }
    }

    /// All of a room's variables, replacing what is stored (for imports).
    pub fn replacing(room: Box<str>, variables: Vec<SavedVariable>) -> Self {
        RoomChanges {
            room,
            replace_all: true,
            variables,
            seeds: Vec::new(),
            history: Vec::new(),
            history_seq: 0,
            version: 0,
        }
    }

    /// The node's local room version these changes bring the store to.
    pub fn local_version(&self) -> u64 {
        self.version
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn variable_count(&self) -> usize {
        self.rooms
            .iter()
            .map(|r| r.variables.len() + r.seeds.len())
            .sum()
    }

    /// History entries the batch carries.
    pub fn history_count(&self) -> usize {
        self.rooms.iter().map(|r| r.history.len()).sum()
    }
}

/// A room as the backend read it.
#[derive(Clone, Copy, Debug)]
pub struct Read<'a> {
    /// The room's version in Redis; the store has none (0).
    pub version: u64,
    pub variables: &'a [SavedVariable],
    /// The sequence number of the room's newest stored history entry (0: none); the room's
    /// next entry follows it.
    pub history_seq: u64,
}

/// Which member counts [`Engine::poll_work`] is to report (cluster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reports {
    #[default]
    None,
    /// Of rooms whose count changed (or that a refused join asked to know again).
    Changed,
    /// Also of every room with members here or elsewhere (a periodic refresh).
    All,
}

/// What the caller of [`Engine::poll_work`] can take now. Load requests, reloads and
/// removed rooms are always handed out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    /// The owed changes, as one batch.
    pub batch: bool,
    pub reports: Reports,
}

/// Work for the backend, from [`Engine::poll_work`]; what it could not take goes back
/// through [`Engine::handle_unsent`].
#[derive(Debug, Default)]
pub struct Work {
    pub batch: Batch,
    /// Rooms joins wait for that the backend has not been asked for; each is named once.
    pub loads: Vec<Box<str>>,
    /// Cluster: rooms in memory to read again (a gap, an outage); each is named once.
    pub reloads: Vec<Box<str>>,
    /// Cluster: rooms that left memory (their channels can be left).
    pub removed: Vec<Box<str>>,
    /// Cluster: this node's member count per room (0: none left).
    pub reports: Vec<(Box<str>, u32)>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
            && self.loads.is_empty()
            && self.reloads.is_empty()
            && self.removed.is_empty()
            && self.reports.is_empty()
    }
}

/// A room's standing with the backend, kept in the room.
#[derive(Debug, Default)]
pub struct RoomDurability {
    /// The version the backend has stored.
    pub durable: u64,
    /// A rename or delete happened: the backend must replace the room's variables.
    pub rewrite: bool,
    /// Whether the room is in the book's list of rooms owed to the backend.
    pub queued: bool,
}

/// A room that joins are waiting for.
#[derive(Debug, Default)]
pub(super) struct Load {
    pub waiters: Vec<ClientId>,
    /// The backend has been asked for it.
    pub requested: bool,
    /// Cluster: the batches seen on the room's channel while loading, applied over the read.
    pub catch_up: CatchUp,
}

#[derive(Debug)]
struct Failed {
    error: JoinError,
    waiters: Vec<ClientId>,
}

/// The durability book: rooms owed to the backend, loads with their waiters, failed loads.
#[derive(Debug, Default)]
pub(super) struct DurableBook {
    pub backend: Backend,
    /// Rooms with changes the backend does not have yet.
    queue: Vec<usize>,
    loads: HashMap<Box<str>, Load>,
    /// Loads that failed: what the clients that waited are told when their join is retried.
    failed: HashMap<Box<str>, Failed>,
}

impl DurableBook {
    /// Whether rooms not in memory come from the backend (joins wait for them).
    pub fn loads_rooms(&self) -> bool {
        self.backend != Backend::Memory
    }

    /// Rooms with changes the backend does not have yet.
    pub fn owed_rooms(&self) -> usize {
        self.queue.len()
    }

    pub fn note_change(&mut self, room: &mut Room, key: usize) {
        if self.backend != Backend::Memory && !room.durability.queued {
            room.durability.queued = true;
            self.queue.push(key);
        }
    }

    /// Room `key` leaves memory.
    pub fn forget(&mut self, key: usize) {
        self.queue.retain(|&queued| queued != key);
    }

    /// The latest values of everything the backend does not have yet, as one batch.
    pub fn collect(&mut self, rooms: &mut Slab<Room>) -> Batch {
        let mut batch = Batch::default();
        for key in std::mem::take(&mut self.queue) {
            let Some(room) = rooms.get_mut(key) else {
                continue;
            };
            let owed = &mut room.durability;
            owed.queued = false;
            if room.version <= owed.durable && !owed.rewrite {
                continue;
            }
            let replace_all = std::mem::take(&mut owed.rewrite);
            let durable = owed.durable;
            // Changes that came from the cluster are not sent back to it.
            let mut variables = Vec::new();
            let mut seeds = Vec::new();
            for v in &room.variables {
                let owed = v.changed_at > durable && !v.from_cluster;
                if !replace_all && !owed {
                    continue;
                }
                let saved = saved(v);
                if v.seed && !replace_all {
                    seeds.push(saved);
                } else {
                    variables.push(saved);
                }
            }
            let history: Vec<HistoryEntry> = room.history.entries.iter().cloned().collect();
            if variables.is_empty() && seeds.is_empty() && !replace_all && history.is_empty() {
                continue;
            }
            room.history.sent_seq = history.last().map_or(0, |e| e.seq);
            batch.rooms.push(RoomChanges {
                room: room.id.clone(),
                replace_all,
                variables,
                seeds,
                history_seq: history.last().map_or(0, |e| e.seq),
                history,
                version: room.version,
            });
        }
        batch
    }

    /// The backend wrote `batch` (its rooms are durable up to the versions it carried), or
    /// could not (its rooms are owed again, with their latest values).
    pub fn saved(
        &mut self,
        rooms: &mut Slab<Room>,
        index: &HashMap<Box<str>, usize>,
        batch: &Batch,
        written: bool,
    ) {
        for changes in &batch.rooms {
            let Some(&key) = index.get(&changes.room) else {
                continue;
            };
            let Some(room) = rooms.get_mut(key) else {
                continue;
            };
            if written {
                room.durability.durable = room.durability.durable.max(changes.version);
            } else {
                room.durability.rewrite |= changes.replace_all;
                self.note_change(room, key);
            }
        }
    }

    /// Rooms joins wait for that the backend has not been asked for; each is named once.
    pub fn take_requests(&mut self) -> Vec<Box<str>> {
        self.loads
            .iter_mut()
            .filter(|(_, load)| !load.requested)
            .map(|(room, load)| {
                load.requested = true;
                room.clone()
            })
            .collect()
    }

    /// The request for `room` could not be sent: it is named again.
    pub fn not_sent(&mut self, room: &str) {
        if let Some(load) = self.loads.get_mut(room) {
            load.requested = false;
        }
    }

    pub fn is_loading(&self, room: &str) -> bool {
        self.loads.contains_key(room)
    }

    pub fn load_mut(&mut self, room: &str) -> Option<&mut Load> {
        self.loads.get_mut(room)
    }

    /// Every load is asked for again, forgetting what its channel showed (cluster resync).
    pub fn restart_loads(&mut self) {
        for load in self.loads.values_mut() {
            load.requested = false;
            load.catch_up = CatchUp::default();
        }
    }

    /// Rooms joins wait for that are not in memory.
    pub fn loads_not_in(&self, index: &HashMap<Box<str>, usize>) -> Vec<Box<str>> {
        self.loads
            .keys()
            .filter(|room| !index.contains_key(*room))
            .cloned()
            .collect()
    }

    pub fn take_waiters(&mut self, room_id: &str) -> Vec<ClientId> {
        self.loads
            .remove(room_id)
            .map(|load| load.waiters)
            .unwrap_or_default()
    }

    /// The room is in memory now: an earlier failure is forgotten.
    pub fn loaded(&mut self, room_id: &str) {
        self.failed.remove(room_id);
    }

    /// The retried joins of `waiters` to `room_id` will be told `error`.
    pub fn refuse(&mut self, room_id: &str, error: JoinError, waiters: &[ClientId]) {
        if !waiters.is_empty() {
            let waiters = waiters.to_vec();
            self.failed
                .insert(room_id.into(), Failed { error, waiters });
        }
    }

    /// For a join to a room not in memory: the answer of a failed load, or a wait for the
    /// backend (registering `client` as a waiter).
    pub fn wait_for_load(&mut self, room_id: &str, client: ClientId) -> JoinError {
        if let Some(failed) = self.failed.get_mut(room_id) {
            if let Some(i) = failed.waiters.iter().position(|&c| c == client) {
                failed.waiters.swap_remove(i);
                let error = failed.error;
                if failed.waiters.is_empty() {
                    self.failed.remove(room_id);
                }
                return error;
            }
        }
        let load = self.loads.entry(room_id.into()).or_default();
        if !load.waiters.contains(&client) {
            load.waiters.push(client);
        }
        JoinError::Loading
    }

    /// Whether `room` may leave memory: nothing of it is owed to the backend.
    pub fn is_durable(&self, room: &Room) -> bool {
        let owed = &room.durability;
        match self.backend {
            Backend::Memory => true,
            _ if owed.rewrite => false,
            // Other nodes' changes bump the version but are not owed to anyone.
            Backend::Cluster => !room
                .variables
                .iter()
                .any(|v| !v.from_cluster && v.changed_at > owed.durable),
            Backend::Store => owed.durable >= room.version,
        }
    }
}

impl Engine {
    /// Where rooms come from and changes go; called once, before serving.
    pub fn set_backend(&mut self, backend: Backend) {
        self.durable.backend = backend;
        self.history.until_stored = backend != Backend::Memory;
        self.cluster.enabled = backend == Backend::Cluster;
    }

    /// Whether changes are owed to the backend (a batch would carry something).
    pub fn has_unsaved(&self) -> bool {
        self.durable.owed_rooms() > 0
    }

    /// Cluster: whether some room's member count changed since it was last reported.
    pub fn has_reports(&self) -> bool {
        self.cluster.has_reports()
    }

    /// Whether room `room_id` is in memory or joins wait for it to be loaded.
    pub fn wants_room(&self, room_id: &str) -> bool {
        self.index.contains_key(room_id) || self.durable.is_loading(room_id)
    }

    /// Hands out what the backend is to do, as far as `want` says it can take now.
    pub fn poll_work(&mut self, want: Want) -> Work {
        let mut work = Work {
            loads: self.durable.take_requests(),
            ..Work::default()
        };
        self.cluster.take_work(&mut work);
        if want.batch {
            work.batch = self.durable.collect(&mut self.rooms);
        }
        if want.reports != Reports::None {
            work.reports = self
                .cluster
                .take_reports(&mut self.rooms, want.reports == Reports::All);
        }
        work
    }

    /// Takes back what [`Engine::poll_work`] handed out and the backend could not take: it is
    /// handed out again later (a batch with the then-latest values).
    pub fn handle_unsent(&mut self, work: Work) {
        self.handle_saved(&work.batch, false);
        for room in &work.loads {
            self.durable.not_sent(room);
        }
        self.cluster
            .reports_unsent(&mut self.rooms, &self.index, &work.reports);
        self.cluster.give_back(work.reloads, work.removed);
    }

    /// The backend wrote `batch` (`written`): its history entries leave memory; or could not:
    /// then its rooms are owed again, entries included.
    pub fn handle_saved(&mut self, batch: &Batch, written: bool) {
        self.durable
            .saved(&mut self.rooms, &self.index, batch, written);
        for changes in &batch.rooms {
            if changes.history_seq > 0 {
                self.history_answered(&changes.room, &changes.history, written);
            }
        }
    }

    /// Installs (or, in a cluster, refreshes) a room the backend read, with no variables when
    /// it has none, and returns the clients whose joins waited for it: their joins can now be
    /// tried again.
    pub fn handle_loaded(&mut self, room_id: &str, read: Read<'_>, now: Instant) -> Vec<ClientId> {
        match self.durable.backend {
            Backend::Cluster => self.install_cluster_room(room_id, read, now),
            Backend::Store | Backend::Memory => self.install_loaded(room_id, read, now),
        }
    }

    /// The backend could not load `room_id`: the joins that waited are refused when retried
    /// (returned), and any other join asks again. In a cluster a room in memory is read again
    /// later.
    pub fn handle_load_failed(&mut self, room_id: &str) -> Vec<ClientId> {
        if self.durable.backend == Backend::Cluster {
            return self.cluster_load_failed(room_id);
        }
        self.refuse_load(room_id)
    }

    /// The waiters of `room_id`'s load are refused as unavailable.
    pub(super) fn refuse_load(&mut self, room_id: &str) -> Vec<ClientId> {
        let waiters = self.durable.take_waiters(room_id);
        self.durable
            .refuse(room_id, JoinError::Unavailable, &waiters);
        waiters
    }

    /// Installs a room read from the backend and returns the clients waiting for it.
    pub(super) fn install_loaded(
        &mut self,
        room_id: &str,
        read: Read<'_>,
        now: Instant,
    ) -> Vec<ClientId> {
        let waiters = self.durable.take_waiters(room_id);
        if self.index.contains_key(room_id) {
            return waiters;
        }
        self.durable.loaded(room_id);
        match self.create_room(room_id, now) {
            Ok(key) => {
                if let Some(room) = self.rooms.get_mut(key) {
                    let before = room.state_bytes();
                    for variable in read.variables {
                        room.add_variable(
                            &variable.name,
                            variable.value(),
                            super::NOBODY,
                            Arc::clone(&variable.user),
                            variable.changed_ms,
                        );
                    }
                    room.history.last_seq = read.history_seq;
                    room.durability.durable = room.version;
                    self.state_bytes += room.state_bytes().saturating_sub(before);
                }
            }
            Err(error) => self.durable.refuse(room_id, error, &waiters),
        }
        waiters
    }
}
