//! What the engine owes the durable store, kept as state rather than as a queue of changes.
//!
//! Each room knows the version that is safely on disk (`durable`). A batch carries, for every
//! room with newer changes, the latest value of each variable changed since then (or all of
//! them after a rename or delete): at most the room's state, however fast sets arrive. Only one
//! batch is out at a time; if it fails, its rooms stay owed and the next batch carries their
//! then-latest values. Rooms not in memory are loaded on join: the join waits (the engine
//! remembers who waits), the store's answer installs the room and names the waiters.

use std::collections::HashMap;
use std::time::Instant;

use super::catch_up::CatchUp;
use super::room::Room;
use super::value::ValueRef;
use super::{ClientId, Engine, JoinError};

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
    /// The room version these changes bring the store to.
    version: u64,
}

/// A variable as stored: the value's text and whether it is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedVariable {
    pub name: Box<str>,
    pub value: String,
    pub is_number: bool,
}

impl SavedVariable {
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
            version: 0,
        }
    }
}

impl RoomChanges {
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
}

/// A room that joins are waiting for.
#[derive(Debug, Default)]
pub(super) struct Load {
    pub waiters: Vec<ClientId>,
    /// The store has been asked for it.
    pub requested: bool,
    /// Cluster: the batches seen on the room's channel while loading, applied over the read.
    pub catch_up: CatchUp,
}

/// Persistence bookkeeping of the engine.
#[derive(Debug, Default)]
pub(super) struct Persistence {
    pub enabled: bool,
    /// Rooms with changes the store does not have yet.
    pub queue: Vec<usize>,
    pub loads: HashMap<Box<str>, Load>,
    /// Loads that failed: what the clients that waited are told when their join is retried.
    pub failed: HashMap<Box<str>, Failed>,
}

#[derive(Debug)]
pub(super) struct Failed {
    error: JoinError,
    waiters: Vec<ClientId>,
}

impl Persistence {
    pub fn note_change(&mut self, room: &mut Room, key: usize) {
        if self.enabled && !room.queued_for_persist {
            room.queued_for_persist = true;
            self.queue.push(key);
        }
    }
}

impl Engine {
    /// Whether rooms not in memory are loaded from a store, and changes saved to it.
    pub fn enable_persistence(&mut self) {
        self.persist.enabled = true;
    }

    /// Whether a batch would carry anything.
    pub fn has_unsaved(&self) -> bool {
        !self.persist.queue.is_empty()
    }

    /// The latest values of everything the store does not have yet, as one batch.
    pub fn collect_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        for key in std::mem::take(&mut self.persist.queue) {
            let Some(room) = self.rooms.get_mut(key) else {
                continue;
            };
            room.queued_for_persist = false;
            if room.version <= room.durable && !room.rewrite {
                continue;
            }
            let replace_all = std::mem::take(&mut room.rewrite);
            // Changes that came from the cluster are not sent back to it.
            let mut variables = Vec::new();
            let mut seeds = Vec::new();
            for v in &room.variables {
                let owed = v.changed_at > room.durable && !v.from_cluster;
                if !replace_all && !owed {
                    continue;
                }
                let value = v.value.as_ref();
                let saved = SavedVariable {
                    name: v.name.clone(),
                    value: value.text().to_owned(),
                    is_number: value.is_number(),
                };
                if v.seed && !replace_all {
                    seeds.push(saved);
                } else {
                    variables.push(saved);
                }
            }
            if variables.is_empty() && seeds.is_empty() && !replace_all {
                continue;
            }
            batch.rooms.push(RoomChanges {
                room: room.id.clone(),
                replace_all,
                variables,
                seeds,
                version: room.version,
            });
        }
        batch
    }

    /// The store has written `batch`: its rooms are durable up to the versions it carried.
    pub fn batch_saved(&mut self, batch: &Batch) {
        for changes in &batch.rooms {
            if let Some(room) = self.room_by_id_mut(&changes.room) {
                room.durable = room.durable.max(changes.version);
            }
        }
    }

    /// The store could not write `batch`: its rooms are owed again (with their latest values).
    pub fn batch_failed(&mut self, batch: &Batch) {
        for changes in &batch.rooms {
            let Some(&key) = self.index.get(&changes.room) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(key) {
                room.rewrite |= changes.replace_all;
                self.persist.note_change(room, key);
            }
        }
    }

    /// Rooms joins are waiting for that the store has not been asked for yet; each is named
    /// once (call [`Engine::load_not_sent`] if the request could not be sent).
    pub fn take_load_requests(&mut self) -> Vec<Box<str>> {
        self.persist
            .loads
            .iter_mut()
            .filter(|(_, load)| !load.requested)
            .map(|(room, load)| {
                load.requested = true;
                room.clone()
            })
            .collect()
    }

    /// The request for `room` could not be sent; it is named again by the next
    /// [`Engine::take_load_requests`].
    pub fn load_not_sent(&mut self, room: &str) {
        if let Some(load) = self.persist.loads.get_mut(room) {
            load.requested = false;
        }
    }

    /// Installs a room the store loaded (with no variables when it has none) and returns the
    /// clients waiting for it, whose joins can now be tried again.
    pub fn install_loaded(
        &mut self,
        room_id: &str,
        variables: &[SavedVariable],
        now: Instant,
    ) -> Vec<ClientId> {
        let waiters = self.take_waiters(room_id);
        if self.index.contains_key(room_id) {
            return waiters;
        }
        self.persist.failed.remove(room_id);
        match self.create_room(room_id, now) {
            Ok(key) => {
                if let Some(room) = self.rooms.get_mut(key) {
                    let before = room.state_bytes();
                    for variable in variables {
                        room.add_variable(&variable.name, variable.value(), super::NOBODY);
                    }
                    room.durable = room.version;
                    self.state_bytes += room.state_bytes().saturating_sub(before);
                }
            }
            Err(error) => self.refuse_waiters(room_id, error, &waiters),
        }
        waiters
    }

    /// The store could not load `room_id`: the joins that waited are refused when retried, and
    /// any other join asks the store again.
    pub fn load_failed(&mut self, room_id: &str) -> Vec<ClientId> {
        let waiters = self.take_waiters(room_id);
        self.refuse_waiters(room_id, JoinError::Unavailable, &waiters);
        waiters
    }

    fn take_waiters(&mut self, room_id: &str) -> Vec<ClientId> {
        self.persist
            .loads
            .remove(room_id)
            .map(|load| load.waiters)
            .unwrap_or_default()
    }

    /// The retried joins of `waiters` to `room_id` will be told `error`.
    fn refuse_waiters(&mut self, room_id: &str, error: JoinError, waiters: &[ClientId]) {
        if !waiters.is_empty() {
            let waiters = waiters.to_vec();
            self.persist
                .failed
                .insert(room_id.into(), Failed { error, waiters });
        }
    }

    /// For a join to a room not in memory: the answer of a failed load, or a wait for the
    /// store (registering `client` as a waiter).
    pub(super) fn wait_for_load(&mut self, room_id: &str, client: ClientId) -> JoinError {
        if let Some(failed) = self.persist.failed.get_mut(room_id) {
            if let Some(i) = failed.waiters.iter().position(|&c| c == client) {
                failed.waiters.swap_remove(i);
                let error = failed.error;
                if failed.waiters.is_empty() {
                    self.persist.failed.remove(room_id);
                }
                return error;
            }
        }
        let load = self.persist.loads.entry(room_id.into()).or_default();
        if !load.waiters.contains(&client) {
            load.waiters.push(client);
        }
        JoinError::Loading
    }

    /// Whether `room` may leave memory: nothing of it is owed to the store.
    pub(super) fn is_durable(&self, room: &Room) -> bool {
        if !self.persist.enabled {
            return true;
        }
        if room.rewrite {
            return false;
        }
        if self.cluster.enabled {
            // Other nodes' changes bump the version but are not owed to anyone.
            return !room
                .variables
                .iter()
                .any(|v| !v.from_cluster && v.changed_at > room.durable);
        }
        room.durable >= room.version
    }

    fn room_by_id_mut(&mut self, room_id: &str) -> Option<&mut Room> {
        let key = *self.index.get(room_id)?;
        self.rooms.get_mut(key)
    }
}
