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

use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use slab::Slab;

use super::catch_up::{CatchUp, CaughtUp};
use super::durable::{Read, Work};
use super::room::{Room, Variable};
use super::value::{self, StoredValue};
use super::{ClientId, Engine, SavedVariable, NOBODY};

/// Cluster bookkeeping of the engine.
#[derive(Debug, Default)]
pub(super) struct ClusterBook {
    pub enabled: bool,
    /// Rooms whose member count changed since it was last reported.
    member_changes: Vec<usize>,
    /// Rooms to read again from Redis, not yet asked for.
    reloads: Vec<Box<str>>,
    /// Rooms that left memory since last asked: their channels can be left.
    removed: Vec<Box<str>>,
    /// Counts [`Engine::handle_resync`]s: reads asked for before the last one may predate
    /// batches that were missed, and are not used.
    epoch: u64,
}

/// A room's cluster bookkeeping: which Redis version it shows and what of its own it has seen
/// come back.
#[derive(Debug, Default)]
pub struct RoomCluster {
    /// The room's version in Redis that the variables reflect.
    pub version: u64,
    /// The local version up to which this node's own changes have come back on the room's
    /// channel: later local changes are not overwritten by other nodes' batches, which Redis
    /// ordered before them.
    pub published: u64,
    /// A reload is asked for; the batches seen on the channel since, applied over the read.
    pub reloading: Option<Box<CatchUp>>,
    /// Members on other nodes, as of the last count from Redis.
    remote_members: usize,
    /// The member count last reported to Redis.
    reported_members: usize,
    /// Whether the room is in the book's list of member counts to report.
    members_queued: bool,
    /// A join was refused for members on other nodes: ask Redis for the count again, even if
    /// this node's own did not change.
    recount: bool,
}

impl ClusterBook {
    /// Queues room `key`'s member count for the next report.
    pub fn note_members(&mut self, room: &mut Room, key: usize) {
        if self.enabled && !room.cluster.members_queued {
            room.cluster.members_queued = true;
            self.member_changes.push(key);
        }
    }

    /// Whether room `key` has no place left for one more member, counting those on other
    /// nodes; if those are what fills it, their count is asked for again (they may have left
    /// since Redis last counted them).
    pub fn is_full(&mut self, room: &mut Room, key: usize, max_members: usize) -> bool {
        if room.members.len() + room.cluster.remote_members < max_members {
            return false;
        }
        if room.cluster.remote_members > 0 {
            room.cluster.recount = true;
            self.note_members(room, key);
        }
        true
    }

    /// Room `room_id` left memory (its channel can be left).
    pub fn removed(&mut self, room_id: Box<str>) {
        if self.enabled {
            self.removed.push(room_id);
        }
    }

    /// Whether some room's member count changed since it was last reported.
    pub fn has_reports(&self) -> bool {
        !self.member_changes.is_empty()
    }

    /// Moves the rooms to read again (each once) and the rooms that left memory into `work`.
    pub fn take_work(&mut self, work: &mut Work) {
        let mut reloads = std::mem::take(&mut self.reloads);
        reloads.sort_unstable();
        reloads.dedup();
        work.reloads = reloads;
        work.removed = std::mem::take(&mut self.removed);
    }

    /// Reloads and removed rooms the backend could not take.
    pub fn give_back(&mut self, reloads: Vec<Box<str>>, removed: Vec<Box<str>>) {
        self.reloads.extend(reloads);
        self.removed.extend(removed);
    }

    /// This node's member counts to report: of the rooms whose count changed, or with `all`,
    /// of every room with members here or elsewhere; and of rooms whose count a refused join
    /// asked to know again.
    pub fn take_reports(&mut self, rooms: &mut Slab<Room>, all: bool) -> Vec<(Box<str>, u32)> {
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
            self.member_changes.clear();
            for (_, room) in rooms.iter_mut() {
                report(room, true);
            }
        } else {
            for key in self.member_changes.drain(..) {
                if let Some(room) = rooms.get_mut(key) {
                    report(room, false);
                }
            }
        }
        reports
    }

    /// The reports could not be sent, or were not answered: they are reported again next time.
    pub fn reports_unsent(
        &mut self,
        rooms: &mut Slab<Room>,
        index: &HashMap<Box<str>, usize>,
        reports: &[(Box<str>, u32)],
    ) {
        for (room_id, _) in reports {
            let Some(&key) = index.get(room_id) else {
                continue;
            };
            if let Some(room) = rooms.get_mut(key) {
                room.cluster.reported_members = usize::MAX;
                self.note_members(room, key);
            }
        }
    }

    /// Members of `room` across the cluster, this node's included, as counted by Redis.
    pub fn set_total(room: &mut Room, total: u32) {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        room.cluster.remote_members = total.saturating_sub(room.cluster.reported_members);
    }

    /// Every room in memory is to be read again (the subscription or Redis was lost); reads
    /// asked for before are not used when they come back.
    pub fn resync(&mut self, rooms: &mut Slab<Room>) {
        self.epoch += 1;
        for (_, room) in rooms.iter_mut() {
            self.reloads.push(room.id.clone());
            // Batches seen before were on the lost subscription: the next read has them.
            room.cluster.reloading = Some(Box::default());
        }
    }

    /// Room `room` is to be read again.
    pub fn reload(&mut self, room: &Room) {
        self.reloads.push(room.id.clone());
    }
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
    /// Versions are missing before it: the room is to be read again (see [`Engine::poll_work`]).
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
    /// Applies a batch received on a room's channel.
    pub fn handle_remote(&mut self, changes: RemoteChanges<'_>) -> Remote {
        let own = changes.own.then_some(changes.local_version);
        let Some(&key) = self.index.get(changes.room) else {
            if let Some(load) = self.durable.load_mut(changes.room) {
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
            self.cluster.reload(room);
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
                    if is_unpublished(variable, published) {
                        continue;
                    }
                    if variable.value.as_ref() == value {
                        // The same value written again: only who wrote last, and when, is news.
                        variable.user = Arc::clone(&saved.user);
                        variable.changed_ms = saved.changed_ms;
                        continue;
                    }
                    variable.value.replace(value);
                    room.version += 1;
                    variable.changed_at = room.version;
                    variable.writer = NOBODY;
                    variable.user = Arc::clone(&saved.user);
                    variable.changed_ms = saved.changed_ms;
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
                        user: Arc::clone(&saved.user),
                        changed_ms: saved.changed_ms,
                        from_cluster: true,
                        seed: false,
                        rule_epoch: 0,
                        rule: None,
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
    pub(super) fn install_cluster_room(
        &mut self,
        room_id: &str,
        read: Read<'_>,
        now: Instant,
    ) -> Vec<ClientId> {
        let Read {
            version, variables, ..
        } = read;
        if let Some(&key) = self.index.get(room_id) {
            self.refresh_room(key, version, variables);
            return self.durable.take_waiters(room_id);
        }
        let Some(load) = self.durable.load_mut(room_id) else {
            // Nobody waits for it any more (a reread of a room that left memory meanwhile):
            // a room without its channel would never hear of other nodes' changes.
            self.cluster.removed(room_id.into());
            return Vec::new();
        };
        let Some(caught_up) = std::mem::take(&mut load.catch_up).over_read(version) else {
            // Asked for again (the subscription is confirmed again at once, then read).
            load.requested = false;
            return Vec::new();
        };
        let waiters = self.install_loaded(room_id, read, now);
        let Some(&key) = self.index.get(room_id) else {
            // Refused (room or memory limit): its channel is left.
            self.cluster.removed(room_id.into());
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
                    self.cluster.reload(room);
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
        room.cluster.published = room.cluster.published.max(room.durability.durable);
        if version < room.cluster.version {
            // Redis went back in time (restarted without its data, or the room's keys expired
            // and were created again): what it has now is merged in, and it gets this node's
            // state back, whole, with the next batch.
            room.cluster.version = version;
            room.durability.rewrite = true;
            self.durable.note_change(room, key);
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
    pub(super) fn cluster_load_failed(&mut self, room_id: &str) -> Vec<ClientId> {
        if let Some(room) = self.index.get(room_id).and_then(|&k| self.rooms.get(k)) {
            if room.cluster.reloading.is_some() {
                // What the channel shows meanwhile is still kept for the next read.
                self.cluster.reload(room);
            }
            return self.durable.take_waiters(room_id);
        }
        self.cluster.removed(room_id.into());
        self.refuse_load(room_id)
    }

    /// Every room may have missed batches (the subscription or Redis was lost): each room in
    /// memory is read again, and loads under way are asked for again.
    /// Reads asked for before this call are not used when they come back (see
    /// [`Engine::resync_epoch`]): they may predate what was missed.
    pub fn handle_resync(&mut self) {
        self.cluster.resync(&mut self.rooms);
        self.durable.restart_loads();
    }

    /// Changes with every [`Engine::handle_resync`]: the answers to reads asked for under an
    /// older epoch are to be dropped (newer reads are on their way).
    pub fn resync_epoch(&self) -> u64 {
        self.cluster.epoch
    }

    /// Redis is out: joins waiting for a room not in memory are refused now rather than when
    /// it is back. Returns their clients.
    pub fn handle_outage(&mut self) -> Vec<ClientId> {
        let mut refused = Vec::new();
        for room in self.durable.loads_not_in(&self.index) {
            refused.extend(self.cluster_load_failed(&room));
        }
        refused
    }

    /// Members per room across the cluster, this node's included, as counted by Redis.
    pub fn handle_member_totals(&mut self, totals: &[(Box<str>, u32)]) {
        for (room_id, total) in totals {
            let Some(&key) = self.index.get(room_id) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(key) {
                ClusterBook::set_total(room, *total);
            }
        }
    }
}

/// Whether `variable` holds a change of this node that has not come back on the channel yet
/// (a declaration's seed does not count: any value Redis has wins over it).
fn is_unpublished(variable: &Variable, published: u64) -> bool {
    !variable.from_cluster && !variable.seed && variable.changed_at > published
}
