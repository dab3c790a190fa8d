//! The engine's side of a cluster: applying other nodes' batches in Redis order, reloading
//! rooms, and member counts across nodes. No Redis here, only versions and values.
//!
//! Every batch applied to a room in Redis gets the room's next version there, and every node
//! subscribed to the room receives it in that order. A node applies batches in version order
//! (a gap means it missed some: it reads the room again), its own batches included, so every
//! node converges on Redis's state, last writer in Redis order winning. One exception keeps
//! that true without flicker: a variable this node changed and has not yet seen come back on
//! the channel (`RoomCluster::published`) is not overwritten, since Redis orders that change
//! after everything it has published so far. Changes that came from the cluster are marked
//! (`Variable::from_cluster`) and never sent back.

use std::time::Instant;

use super::catch_up::{CatchUp, CaughtUp};
use super::room::{Room, Variable};
use super::value::{self, StoredValue};
use super::{ClientId, Engine, SavedVariable, NOBODY};

/// Cluster bookkeeping of the engine.
#[derive(Debug, Default)]
pub(super) struct ClusterBook {
    pub enabled: bool,
    /// Rooms whose member count changed since it was last reported.
    pub member_changes: Vec<usize>,
    /// Rooms to read again from Redis, not yet asked for.
    pub reloads: Vec<Box<str>>,
    /// Rooms that left memory since last asked: their channels can be left.
    pub removed: Vec<Box<str>>,
    /// Counts [`Engine::reload_all`]s: reads asked for before the last one may predate
    /// batches that were missed, and are not used.
    pub epoch: u64,
}

/// What became of a batch from the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    /// Applied: local members get it at the room's next flush.
    Applied,
    /// Older than what the room shows: nothing to do.
    Stale,
    /// The room is being read: kept, and applied over the read when it comes.
    Kept,
    /// Versions are missing before it: the room is to be read again ([`Engine::take_reloads`]).
    Gap,
    /// The room is not in memory here.
    NotHere,
}

/// A batch from the cluster, as the engine needs it.
#[derive(Clone, Copy, Debug)]
pub struct RemoteChanges<'a> {
    pub room: &'a str,
    /// The room's version in Redis after this batch.
    pub version: u64,
    /// Sent by this node; `local_version` is then this node's version it was collected at.
    pub own: bool,
    pub local_version: u64,
    pub replace_all: bool,
    pub variables: &'a [SavedVariable],
}

impl Engine {
    /// Makes this engine one node of a cluster: rooms come from and go to Redis (through the
    /// persistence bookkeeping), and batches of other nodes are applied.
    pub fn enable_cluster(&mut self) {
        self.persist.enabled = true;
        self.cluster.enabled = true;
    }

    pub fn is_clustered(&self) -> bool {
        self.cluster.enabled
    }

    /// Whether joins wait for room `room_id` to be read.
    pub fn is_loading(&self, room_id: &str) -> bool {
        self.persist.loads.contains_key(room_id)
    }

    /// Whether room `room_id` is in memory.
    pub fn has_room(&self, room_id: &str) -> bool {
        self.index.contains_key(room_id)
    }

    /// Applies a batch received on a room's channel.
    pub fn apply_remote(&mut self, changes: RemoteChanges<'_>) -> Remote {
        let own = changes.own.then_some(changes.local_version);
        let Some(&key) = self.index.get(changes.room) else {
            if let Some(load) = self.persist.loads.get_mut(changes.room) {
                load.catch_up
                    .note(changes.version, own, changes.replace_all, changes.variables);
                return Remote::Kept;
            }
            return Remote::NotHere;
        };
        let Some(room) = self.rooms.get_mut(key) else {
            return Remote::NotHere;
        };
        if let Some(catch_up) = &mut room.cluster.reloading {
            catch_up.note(changes.version, own, changes.replace_all, changes.variables);
            return Remote::Kept;
        }
        // Version 1 after a later one: the room's keys were created again in Redis (they
        // expired, or Redis lost them), so what this node holds must be reconciled by a read.
        let restarted = changes.version == 1 && room.cluster.version > 1;
        if changes.version <= room.cluster.version && !restarted {
            return Remote::Stale;
        }
        if changes.version > room.cluster.version + 1 || restarted {
            // Batches from this one on are kept for the read; those before it are in it.
            let mut catch_up = Box::<CatchUp>::default();
            catch_up.note(changes.version, own, changes.replace_all, changes.variables);
            room.cluster.reloading = Some(catch_up);
            self.cluster.reloads.push(room.id.clone());
            return Remote::Gap;
        }
        room.cluster.version = changes.version;
        if changes.own {
            room.cluster.published = room.cluster.published.max(changes.local_version);
        }
        self.apply_variables(key, changes.variables, changes.replace_all);
        Remote::Applied
    }

    /// Writes `variables` into room `key` as the cluster's (all of them, removing the others,
    /// with `replace_all`), leaving alone the variables this node changed and has not seen
    /// published yet. Members get what changed at the room's next flush.
    ///
    /// The room's variable limit and `--allow-non-numeric` are not applied here: the node
    /// whose client set a value checked it, and a node that dropped what the others keep
    /// would never agree with them again (two nodes can each add a variable near the limit
    /// at the same moment). Only what holds on every node, whatever its settings, is checked.
    fn apply_variables(&mut self, key: usize, variables: &[SavedVariable], replace_all: bool) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        let before = room.state_bytes();
        let mut changed = false;
        if replace_all {
            let published = room.cluster.published;
            let old = room.variables.len();
            room.variables.retain(|v| {
                is_unpublished(v, published) || variables.iter().any(|s| *s.name == *v.name)
            });
            if room.variables.len() != old {
                room.snapshots.clear();
            }
        }
        for saved in variables {
            let value = saved.value();
            if !value::is_valid_value(value, true) {
                continue;
            }
            match room.variable_index(&saved.name) {
                Some(index) => {
                    let published = room.cluster.published;
                    let Some(variable) = room.variables.get_mut(index) else {
                        continue;
                    };
                    if is_unpublished(variable, published) || variable.value.as_ref() == value {
                        continue;
                    }
                    variable.value.replace(value);
                    room.version += 1;
                    variable.changed_at = room.version;
                    variable.writer = NOBODY;
                    variable.from_cluster = true;
                    variable.seed = false;
                    changed = true;
                }
                None => {
                    if !value::is_valid_name(&saved.name) {
                        continue;
                    }
                    room.version += 1;
                    room.variables.push(Variable {
                        name: saved.name.clone(),
                        value: StoredValue::new(value),
                        changed_at: room.version,
                        writer: NOBODY,
                        from_cluster: true,
                        seed: false,
                    });
                    changed = true;
                }
            }
        }
        let after = room.state_bytes();
        self.state_bytes = (self.state_bytes + after).saturating_sub(before);
        if changed {
            self.pacer.mark_dirty(key, &mut room.pace);
        }
    }

    /// Installs or refreshes a room read from Redis at `version`, with the batches seen on its
    /// channel meanwhile applied over it, and returns the clients whose joins waited for it.
    /// A read those batches cannot be applied over is asked for again.
    pub fn install_cluster_room(
        &mut self,
        room_id: &str,
        version: u64,
        variables: &[SavedVariable],
        now: Instant,
    ) -> Vec<ClientId> {
        if let Some(&key) = self.index.get(room_id) {
            self.refresh_room(key, version, variables);
            return self.take_load_waiters(room_id);
        }
        let Some(load) = self.persist.loads.get_mut(room_id) else {
            // Nobody waits for it any more (a reread of a room that left memory meanwhile):
            // a room without its channel would never hear of other nodes' changes.
            self.cluster.removed.push(room_id.into());
            return Vec::new();
        };
        let Some(caught_up) = std::mem::take(&mut load.catch_up).over_read(version) else {
            // Asked for again (the subscription is confirmed again at once, then read).
            load.requested = false;
            return Vec::new();
        };
        let waiters = self.install_loaded(room_id, variables, now);
        let Some(&key) = self.index.get(room_id) else {
            // Refused (room or memory limit): its channel is left.
            self.cluster.removed.push(room_id.into());
            return waiters;
        };
        if let Some(room) = self.rooms.get_mut(key) {
            room.cluster.version = version;
            room.cluster.published = room.version;
            for variable in &mut room.variables {
                variable.from_cluster = true;
            }
        }
        // Own batches seen now are of an earlier stay of the room in memory: their local
        // versions mean nothing to this one.
        let caught_up = CaughtUp {
            own_published: 0,
            ..caught_up
        };
        self.apply_caught_up(key, caught_up);
        waiters
    }

    /// A room already in memory, read again (after a gap or an outage).
    fn refresh_room(&mut self, key: usize, version: u64, variables: &[SavedVariable]) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        let caught_up = match room.cluster.reloading.take() {
            Some(catch_up) => match catch_up.over_read(version) {
                Some(caught_up) => caught_up,
                None => {
                    // What the channel showed cannot be applied over this read: read again.
                    room.cluster.reloading = Some(Box::default());
                    self.cluster.reloads.push(room.id.clone());
                    return;
                }
            },
            // A read nobody asked for any more (a second read of a room installed
            // meanwhile), older than batches applied since: the channel is ahead of it.
            None if version <= room.cluster.version => return,
            None => CaughtUp::nothing_after(version),
        };
        // Batches Redis acknowledged are in what was read: their changes no longer need
        // protecting (their echo may have been missed while reading).
        room.cluster.published = room.cluster.published.max(room.durable);
        if version < room.cluster.version {
            // Redis went back in time (restarted without its data, or the room's keys expired
            // and were created again): what it has now is merged in, and it gets this node's
            // state back, whole, with the next batch.
            room.cluster.version = version;
            room.rewrite = true;
            self.persist.note_change(room, key);
            self.apply_variables(key, variables, false);
        } else {
            room.cluster.version = version;
            self.apply_variables(key, variables, true);
        }
        self.apply_caught_up(key, caught_up);
    }

    /// Applies the batches seen while room `key` was read over what was read.
    fn apply_caught_up(&mut self, key: usize, caught_up: CaughtUp) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.cluster.version = room.cluster.version.max(caught_up.version);
        room.cluster.published = room.cluster.published.max(caught_up.own_published);
        if !caught_up.newer.is_empty() || caught_up.replace_all {
            self.apply_variables(key, &caught_up.newer, caught_up.replace_all);
        }
    }

    /// Reading `room_id` failed: a room in memory is read again later; joins that waited for
    /// it are refused.
    pub fn cluster_load_failed(&mut self, room_id: &str) -> Vec<ClientId> {
        if let Some(room) = self.index.get(room_id).and_then(|&k| self.rooms.get(k)) {
            if room.cluster.reloading.is_some() {
                // What the channel shows meanwhile is still kept for the next read.
                self.cluster.reloads.push(room.id.clone());
            }
            return self.take_load_waiters(room_id);
        }
        self.cluster.removed.push(room_id.into());
        self.load_failed(room_id)
    }

    fn take_load_waiters(&mut self, room_id: &str) -> Vec<ClientId> {
        self.persist
            .loads
            .remove(room_id)
            .map(|load| load.waiters)
            .unwrap_or_default()
    }

    /// Every room may have missed batches (the subscription or Redis was lost): each room in
    /// memory is read again, and loads under way are asked for again.
    /// Reads asked for before this call are not used when they come back (see
    /// [`Engine::cluster_epoch`]): they may predate what was missed.
    pub fn reload_all(&mut self) {
        self.cluster.epoch += 1;
        for (_, room) in self.rooms.iter_mut() {
            self.cluster.reloads.push(room.id.clone());
            // Batches seen before were on the lost subscription: the next read has them.
            room.cluster.reloading = Some(Box::default());
        }
        for load in self.persist.loads.values_mut() {
            load.requested = false;
            load.catch_up = CatchUp::default();
        }
    }

    /// Changes with every [`Engine::reload_all`]: the answers to reads asked for under an
    /// older epoch are to be dropped (newer reads are on their way).
    pub fn cluster_epoch(&self) -> u64 {
        self.cluster.epoch
    }

    /// Redis is out: joins waiting for a room not in memory are refused now rather than when
    /// it is back. Returns their clients.
    pub fn fail_cluster_loads(&mut self) -> Vec<ClientId> {
        let waiting: Vec<Box<str>> = self
            .persist
            .loads
            .keys()
            .filter(|room| !self.index.contains_key(*room))
            .cloned()
            .collect();
        let mut refused = Vec::new();
        for room in waiting {
            refused.extend(self.cluster_load_failed(&room));
        }
        refused
    }

    /// Rooms to read again; each is named once.
    pub fn take_reloads(&mut self) -> Vec<Box<str>> {
        let mut reloads = std::mem::take(&mut self.cluster.reloads);
        reloads.sort_unstable();
        reloads.dedup();
        reloads
    }

    /// Rooms that left memory since the last call (their channels can be left).
    pub fn take_removed_rooms(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.cluster.removed)
    }

    /// This node's member counts to report: of the rooms whose count changed, or with `all`,
    /// of every room with members here or elsewhere; and of rooms whose count a refused join
    /// asked to know again.
    pub fn take_member_reports(&mut self, all: bool) -> Vec<(Box<str>, u32)> {
        let mut reports = Vec::new();
        let mut report = |room: &mut Room, all: bool| {
            room.cluster.members_queued = false;
            let count = room.members.len();
            let known_elsewhere = count > 0 || room.cluster.remote_members > 0;
            if count != room.cluster.reported_members
                || std::mem::take(&mut room.cluster.recount)
                || (all && known_elsewhere)
            {
                room.cluster.reported_members = count;
                reports.push((room.id.clone(), u32::try_from(count).unwrap_or(u32::MAX)));
            }
        };
        if all {
            self.cluster.member_changes.clear();
            for (_, room) in self.rooms.iter_mut() {
                report(room, true);
            }
        } else {
            for key in self.cluster.member_changes.drain(..) {
                if let Some(room) = self.rooms.get_mut(key) {
                    report(room, false);
                }
            }
        }
        reports
    }

    /// Whether some room's member count changed since it was last reported.
    pub fn has_member_reports(&self) -> bool {
        !self.cluster.member_changes.is_empty()
    }

    /// The reports could not be sent: they are reported again next time.
    pub fn member_reports_failed(&mut self, reports: &[(Box<str>, u32)]) {
        for (room_id, _) in reports {
            let Some(&key) = self.index.get(room_id) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(key) {
                room.cluster.reported_members = usize::MAX;
                note_members(&mut self.cluster, room, key);
            }
        }
    }

    /// Members of `room_id` across the cluster, this node's included, as counted by Redis.
    pub fn set_member_total(&mut self, room_id: &str, total: u32) {
        let Some(&key) = self.index.get(room_id) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(key) {
            let total = usize::try_from(total).unwrap_or(usize::MAX);
            room.cluster.remote_members = total.saturating_sub(room.cluster.reported_members);
        }
    }
}

/// Queues room `key`'s member count for the next report.
pub(super) fn note_members(book: &mut ClusterBook, room: &mut Room, key: usize) {
    if book.enabled && !room.cluster.members_queued {
        room.cluster.members_queued = true;
        book.member_changes.push(key);
    }
}

/// Whether `variable` holds a change of this node that has not come back on the channel yet
/// (a declaration's seed does not count: any value Redis has wins over it).
fn is_unpublished(variable: &Variable, published: u64) -> bool {
    !variable.from_cluster && !variable.seed && variable.changed_at > published
}
