//! The room engine: rooms, their variables, their members, limits and fan-out.
//!
//! Plain Rust with no sockets, no clock and no protocol knowledge. Dialects call it with borrowed
//! names and values; at the end of each loop iteration the event loop calls [`Engine::flush_due`]
//! with the time and a `deliver` callback that reports whether a member's socket took the frame,
//! and sleeps no longer than [`Engine::poll_timeout`]. Each room spends tokens of its own
//! bucket and waits, when out of them, for the beat all rooms share (`pace.rs`). Nothing here
//! grows with the message rate: memory is bounded by rooms × variables × value size and rooms ×
//! members.

mod admin;
mod catch_up;
mod cluster;
mod durable;
mod fanout;
pub mod history;
pub mod history_codec;
mod pace;
pub mod rate;
mod renders;
mod room;
pub mod rules;
pub mod value;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

pub use admin::{AdminMember, RoomSummary};
pub use cluster::{Remote, RemoteChanges};
pub use durable::{Backend, Batch, Read, Reports, RoomChanges, SavedVariable, Want, Work};
pub use fanout::{EncodeSet, Frame, SetLine};
pub use history::{HistoryEntry, ReadRequest, StoredRead, Verb};
pub use renders::{RenderCensus, RenderId};
pub use rules::{ProjectSettings, Refusals, Rule, Rules, VariableRule};
pub use value::{Rejection, ValueRef};

use fanout::FrameCache;
use pace::Pacer;
use rate::TokenBucket;
use renders::RenderBook;
pub use room::Variable;
use room::{Member, Room};

/// Identifies a client to the engine. The event loop chooses it (slot and generation) so that a
/// reused slot never receives a frame meant for the previous occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

/// The writer of a change every member is sent, its author included.
const NOBODY: ClientId = ClientId(u64::MAX);

/// Which wire format a member reads; dialects define the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Format(pub u8);

/// A room's slot in the engine, valid while the room has members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomKey(usize);

impl RoomKey {
    #[cfg(test)]
    pub(crate) fn for_tests(key: usize) -> Self {
        RoomKey(key)
    }
}

/// The engine's limits. `max_clients_per_room`, `max_variables_per_room`, `allow_non_numeric`,
/// `max_value_chars`, `enable_rename` and `enable_delete` are the server-wide settings rooms
/// start with ([`ProjectSettings::from_limits`]); once [`Engine::set_rules`] installs rules,
/// rooms follow those instead.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_rooms: usize,
    pub max_clients_per_room: usize,
    pub max_variables_per_room: usize,
    /// How long an empty room keeps its variables.
    pub empty_room_ttl: Duration,
    pub allow_non_numeric: bool,
    /// Longest string value, in characters.
    pub max_value_chars: usize,
    pub enable_rename: bool,
    pub enable_delete: bool,
    /// Budget for the heap held by room state (names, values, rooms), with the renderings only
    /// blocked connections hold ([`Engine::note_held_renders`]); 0 means no budget. Over it,
    /// empty rooms are evicted, then new rooms and variables are refused.
    pub max_state_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 16384,
            max_clients_per_room: 128,
            max_variables_per_room: 128,
            empty_room_ttl: Duration::from_secs(3600),
            allow_non_numeric: false,
            max_value_chars: value::MAX_VALUE_CHARS,
            enable_rename: false,
            enable_delete: false,
            max_state_bytes: 1 << 30,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinError {
    RoomFull,
    TooManyRooms,
    /// The variables a client declared do not match the room's (legacy dialect).
    Incompatible,
    /// A declared variable has an invalid name or value, or there are too many.
    InvalidDeclaration,
    /// The room is being loaded from the store; the join is to be tried again when it is in.
    Loading,
    /// The store could not load the room.
    Unavailable,
}

/// How the engine took a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    Applied,
    /// Ignored by protocol rule; the connection stays open.
    Rejected(Rejection),
    /// The variable does not exist and the caller asked not to create it.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    UnknownVariable,
    InvalidName,
    NameTaken,
    /// The variable, or the new name, is governed by a variable rule: a rename would carry a
    /// value no rule checked onto it, a delete then create would skip `only-increase` and
    /// `max-step`, and either would let anyone take it from its `writers`.
    Protected,
}

/// Counters for logs and benches.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub sets_applied: u64,
    /// Every set not applied, including malformed ones the dialects count.
    pub sets_rejected: u64,
    /// Of those, the ones the engine refused, by reason.
    pub invalid_names: u64,
    pub invalid_values: u64,
    pub too_many_variables: u64,
    /// Refused by a rule of the project (by project and rule in [`Engine::refusals`]).
    pub rule_violations: u64,
    pub unknown_variables: u64,
    pub frames_built: u64,
    /// Renderings of a whole room made for full-state replies (joins, `cloud.get`,
    /// `JOIN_ROOM`); the others were shared.
    pub full_renders: u64,
    /// Empty rooms dropped before their time to stay under the room or memory limit.
    pub rooms_evicted: u64,
    /// New rooms and variables refused because room state was at its memory budget.
    pub refused_for_memory: u64,
}

/// How long one rendering of a large room's variables is shared after it was made, even after
/// the room changed: a room renders at most once per format in this time, which is never more
/// often than its pace (`1/--tick-hz` is at most a second; the window is the longer of the two).
pub const SNAPSHOT_REUSE: Duration = Duration::from_secs(1);
/// From this size on, a rendering is shared even after the room changed. Below it, a full-state
/// reply is exact: rendering it costs about as much as reading a message of that size.
pub const SHARE_STALE_BYTES: usize = 64 * 1024;

/// A variable as declared by a joining client: name and value.
pub type Declared<'a> = (&'a str, ValueRef<'a>);

/// Rooms, their variables and members, for one event loop.
///
/// Call order, as the loop makes it:
/// - at start: [`Engine::new`], [`Engine::set_backend`] when rooms come from and go to a
///   store or a cluster, and [`Engine::set_pace`];
/// - for each message, from the dialects: [`Engine::join`] (with a backend, a room not in
///   memory answers [`JoinError::Loading`]: the join is tried again when the loop resumes the
///   client), [`Engine::set`], [`Engine::rename`], [`Engine::delete`], [`Engine::leave`],
///   full-state replies through [`Engine::shared_rendering`];
/// - the backend's answers, as they arrive: [`Engine::handle_loaded`] and
///   [`Engine::handle_load_failed`] (both name the clients to resume), [`Engine::handle_saved`],
///   and in a cluster [`Engine::handle_remote`], [`Engine::handle_member_totals`],
///   [`Engine::handle_outage`] (names clients to resume) and [`Engine::handle_resync`]; a read
///   asked for before the last resync is dropped (compare [`Engine::resync_epoch`]);
/// - then the backend's work: [`Engine::poll_work`] with what the backend can take now (the
///   orchestration in `durable/` decides), and [`Engine::handle_unsent`] for what its channel
///   refused;
/// - at the end of each iteration: [`Engine::flush_due`], and the loop sleeps no longer than
///   [`Engine::poll_timeout`]; [`Engine::resume`] when a member's connection drains;
/// - once a second: [`Engine::expire`], [`Engine::render_census`] and
///   [`Engine::note_held_renders`].
pub struct Engine {
    limits: Limits,
    encode: EncodeSet,
    rooms: Slab<Room>,
    index: HashMap<Box<str>, usize>,
    /// Which rooms flush when.
    pacer: Pacer,
    /// The rooms of the current flush, kept to reuse the allocation.
    due: Vec<usize>,
    /// Rooms without members, oldest first: expiry and eviction take from the front.
    empty_rooms: BTreeSet<(Instant, usize)>,
    /// Rooms holding a cached snapshot, to drop those caches once they are stale.
    snapshot_rooms: Vec<usize>,
    /// Heap held by room state, kept up to date by every change (see `Room::state_bytes`).
    state_bytes: usize,
    /// Large renderings handed out, and how much of them only blocked connections hold.
    renders: RenderBook,
    frames: FrameCache,
    durable: durable::DurableBook,
    cluster: cluster::ClusterBook,
    /// Every room's recorded changes (`history.rs`).
    history: history::HistoryBook,
    /// Each project's settings and rules, looked up when a room is made.
    rules: rules::Installed,
    /// Sets refused by rules, per project and rule.
    pub refusals: Refusals,
    pub stats: Stats,
}

impl Engine {
    pub fn new(limits: Limits, encode: EncodeSet) -> Self {
        Engine {
            rules: rules::Installed::new(ProjectSettings::from_limits(&limits)),
            refusals: Refusals::default(),
            limits,
            encode,
            rooms: Slab::new(),
            index: HashMap::new(),
            pacer: Pacer::default(),
            due: Vec::new(),
            empty_rooms: BTreeSet::new(),
            snapshot_rooms: Vec::new(),
            state_bytes: 0,
            renders: RenderBook::default(),
            frames: FrameCache::default(),
            durable: durable::DurableBook::default(),
            cluster: cluster::ClusterBook::default(),
            history: history::HistoryBook::default(),
            stats: Stats::default(),
        }
    }

    /// Paces the rooms (`pace` = `1 / --tick-hz`): each room may flush `burst` times back to
    /// back (`--tick-burst`), and gains one more flush at each beat `epoch + k × pace`, which
    /// every room shares; a room that has none left waits for the next beat. Zero `pace`, the
    /// default, flushes every change at the next [`Engine::flush_due`]. The loop passes the
    /// moment it starts as `epoch`: the engine reads no clock.
    pub fn set_pace(&mut self, pace: Duration, burst: u32, epoch: Instant) {
        self.pacer.configure(pace, burst, epoch);
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Installs every project's settings and rules (at start and on reload). Rooms in memory
    /// take their project's at once: their members' next messages follow them. Rate budgets
    /// start over.
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules.replace(rules, &mut self.refusals);
        for (_, room) in self.rooms.iter_mut() {
            room.rules = self.rules.for_project(&room.id);
            for member in &mut room.members {
                member.rates = Vec::new();
            }
        }
    }

    /// The settings of `room`'s project (the server-wide ones when it has no table).
    pub fn room_settings(&self, room: RoomKey) -> &ProjectSettings {
        match self.rooms.get(room.0) {
            Some(room) => &room.rules.settings,
            None => &self.rules.default.settings,
        }
    }

    /// Whether clients may rename variables in `room` (`enable-rename`, not `read-only`).
    pub fn may_rename(&self, room: RoomKey) -> bool {
        let settings = self.room_settings(room);
        settings.enable_rename && !settings.read_only
    }

    /// Whether clients may delete variables in `room` (`enable-delete`, not `read-only`).
    pub fn may_delete(&self, room: RoomKey) -> bool {
        let settings = self.room_settings(room);
        settings.enable_delete && !settings.read_only
    }

    /// The current value of `name` in `room`, if it has one (for tests and tools).
    pub fn current_value(&self, room: RoomKey, name: &str) -> Option<ValueRef<'_>> {
        let room = self.rooms.get(room.0)?;
        let index = room.variable_index(name)?;
        room.variables.get(index).map(|v| v.value.as_ref())
    }

    /// Whether `name` in `room` is governed by a variable rule (see [`EditError::Protected`]).
    fn is_protected(&self, room: RoomKey, name: &str) -> bool {
        self.rooms
            .get(room.0)
            .is_some_and(|room| room.rules.rule_index(name).is_some())
    }

    /// `client`'s set of `name` in `room` was refused by a rule: its next frame from the room
    /// carries the variable's current value (a Scratch or `kind` client has no error message,
    /// and would go on showing a value nobody else sees). Kept as state like any catch-up:
    /// nothing is queued, a client that does not read gets it when it reads again, and a
    /// burst of refusals comes back as one frame.
    pub fn resend(&mut self, room: RoomKey, client: ClientId, name: &str) {
        let Some(room_state) = self.rooms.get_mut(room.0) else {
            return;
        };
        let Some(changed_at) = room_state
            .variable_index(name)
            .and_then(|index| room_state.variables.get(index))
            .map(|variable| variable.changed_at)
        else {
            return;
        };
        let Some(member) = room_state.members.iter_mut().find(|m| m.client == client) else {
            return;
        };
        member.seen = member.seen.min(changed_at.saturating_sub(1));
        // The current value may be its own earlier write, which it is otherwise never sent.
        member.resend_own = true;
        self.pacer.mark_dirty(room.0, &mut room_state.pace);
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn room_id(&self, room: RoomKey) -> Option<&str> {
        self.rooms.get(room.0).map(|r| &*r.id)
    }

    /// The key of room `room_id`, if it is in memory.
    pub fn room_key(&self, room_id: &str) -> Option<RoomKey> {
        self.index.get(room_id).copied().map(RoomKey)
    }

    pub fn member_count(&self, room: RoomKey) -> usize {
        self.rooms.get(room.0).map_or(0, |r| r.members.len())
    }

    pub fn variable_count(&self, room: RoomKey) -> usize {
        self.rooms.get(room.0).map_or(0, |r| r.variables.len())
    }

    /// The current value of a variable, for tests.
    #[cfg(test)]
    pub(crate) fn value(&self, room_id: &str, name: &str) -> Option<ValueRef<'_>> {
        let room = self.rooms.get(*self.index.get(room_id)?)?;
        let index = room.variable_index(name)?;
        room.variables.get(index).map(|v| v.value.as_ref())
    }

    /// Every variable of a room in creation order, for tests and tools.
    pub fn variables(&self, room_id: &str) -> Vec<(&str, ValueRef<'_>)> {
        self.index
            .get(room_id)
            .and_then(|&key| self.rooms.get(key))
            .map(|room| {
                room.variables
                    .iter()
                    .map(|v| (&*v.name, v.value.as_ref()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every variable of a room in creation order.
    pub(crate) fn variables_of(&self, room: RoomKey) -> impl Iterator<Item = (&str, ValueRef<'_>)> {
        self.rooms
            .get(room.0)
            .into_iter()
            .flat_map(|room| room.variables.iter())
            .map(|v| (&*v.name, v.value.as_ref()))
    }

    /// Every variable of a room in one frame of `format` lines, for a member that just joined;
    /// `None` when the room has none.
    pub fn snapshot(&self, room: RoomKey, format: Format) -> Option<Frame> {
        fanout::snapshot(self.rooms.get(room.0)?, format, self.encode)
    }

    /// The snapshot for `client`, a member of `room` (it just joined): every variable as
    /// `format` lines, shared with other members (see [`Engine::shared_rendering`]); `None`
    /// when the room has no variables.
    pub fn snapshot_for(
        &mut self,
        key: RoomKey,
        client: ClientId,
        format: Format,
        now: Instant,
    ) -> Option<Frame> {
        if self.variable_count(key) == 0 {
            return None;
        }
        let encode = self.encode;
        self.shared_rendering(key, client, format, now, |engine, key, out| {
            if let Some(room) = engine.rooms.get(key.0) {
                fanout::write_snapshot(room, format, encode, out);
            }
        })
    }

    /// A rendering of the whole room (`render` writes it; `format` names it) for `member`, a
    /// member of the room that will be sent it as a full-state reply (a join's snapshot, a
    /// `cloud.get`, a `JOIN_ROOM`). Made once and shared: by every caller while the room is
    /// unchanged, and for a large room (a rendering of [`SHARE_STALE_BYTES`] or more) for the
    /// reuse window (a second, or the pace if longer) even if the room changed since. So a large
    /// room is rendered at most once per format in that window, however many clients ask, and
    /// clients that do not read hold references, not copies.
    ///
    /// `member` is recorded as having seen the version the rendering shows: the next flush
    /// sends it what changed since, nothing it already has. An older rendering marks the room
    /// dirty for it, and if it shows values older than the member's own later writes, its next
    /// frame carries those writes too (it is otherwise never sent its own values).
    pub fn shared_rendering(
        &mut self,
        key: RoomKey,
        member: ClientId,
        format: Format,
        now: Instant,
        render: impl FnOnce(&Engine, RoomKey, &mut String),
    ) -> Option<Frame> {
        let reuse = self.reuse_window();
        let room = self.rooms.get(key.0)?;
        let fresh = |s: &room::Snapshot| {
            s.format == format
                && (s.version == room.version
                    || (s.frame.len() >= SHARE_STALE_BYTES
                        && now.saturating_duration_since(s.made_at) < reuse))
        };
        let (frame, version) = match room.snapshots.iter().find(|s| fresh(s)) {
            Some(cached) => (cached.frame.clone(), cached.version),
            None => {
                let version = room.version;
                let mut text = String::new();
                render(self, key, &mut text);
                let frame = Frame::from(text);
                self.stats.full_renders += 1;
                self.renders.track(&frame);
                let room = self.rooms.get_mut(key.0)?;
                room.snapshots.retain(|s| s.format != format);
                if room.snapshots.is_empty() {
                    self.snapshot_rooms.push(key.0);
                }
                room.snapshots.push(room::Snapshot {
                    format,
                    version,
                    made_at: now,
                    frame: frame.clone(),
                });
                (frame, version)
            }
        };
        let room = self.rooms.get_mut(key.0)?;
        let older = version < room.version;
        let wrote_since = older && room.wrote_since(member, version);
        if let Some(index) = room.member_index(member) {
            if let Some(member) = room.members.get_mut(index) {
                member.seen = version;
                member.resend_own = wrote_since;
            }
            if older {
                self.pacer.mark_dirty(key.0, &mut room.pace);
            }
        }
        Some(frame)
    }

    /// How long a large room's rendering is shared after it was made: a second, or the pace
    /// if that is longer, so no room renders more often than it may flush.
    fn reuse_window(&self) -> Duration {
        SNAPSHOT_REUSE.max(self.pacer.pace())
    }

    /// Lists the large renderings that may still be held outside the engine (dropping those
    /// nobody holds any more), for the event loop to find which blocked connections hold them.
    pub fn render_census(&mut self) -> RenderCensus {
        let rooms = &self.rooms;
        let mut cached: Vec<usize> = self
            .snapshot_rooms
            .iter()
            .filter_map(|&key| rooms.get(key))
            .flat_map(|room| room.snapshots.iter())
            .filter(|snapshot| snapshot.frame.len() >= SHARE_STALE_BYTES)
            .map(|snapshot| snapshot.frame.as_str().as_ptr() as usize)
            .collect();
        cached.sort_unstable();
        self.renders.census(&cached)
    }

    /// Records the bytes of renderings only blocked connections hold (from a census); they
    /// count against the state budget until the next census.
    pub fn note_held_renders(&mut self, bytes: usize) {
        self.renders.held_bytes = bytes;
    }

    /// Bytes of renderings only blocked connections held at the last census.
    pub fn held_render_bytes(&self) -> usize {
        self.renders.held_bytes
    }

    /// Heap held by room state now, as counted against `--max-state-memory` (with
    /// [`Engine::held_render_bytes`]).
    pub fn state_bytes(&self) -> usize {
        self.state_bytes
    }

    /// Whether `extra` more bytes of room state fit the budget, after evicting empty rooms
    /// (longest empty first) if needed.
    fn make_space(&mut self, extra: usize) -> bool {
        let budget = self.limits.max_state_bytes;
        if budget == 0 {
            return true;
        }
        // Renderings kept alive only by clients that do not read are memory like room state.
        while self.state_bytes + self.renders.held_bytes + extra > budget {
            if !self.evict_one_empty() {
                self.stats.refused_for_memory += 1;
                return false;
            }
        }
        true
    }

    /// Adds `client` to room `room_id`, creating the room if needed.
    ///
    /// `declared` is the legacy dialect's list of the client's variables: it seeds an empty room
    /// and must otherwise name exactly the room's variables.
    pub fn join(
        &mut self,
        room_id: &str,
        client: ClientId,
        format: Format,
        declared: Option<&[Declared<'_>]>,
        now: Instant,
    ) -> Result<RoomKey, JoinError> {
        self.join_as(room_id, client, "", format, declared, now)
    }

    /// [`Engine::join`] for a client that gave a user name (`writers` rules compare it,
    /// case-insensitively; empty: no name).
    pub fn join_as(
        &mut self,
        room_id: &str,
        client: ClientId,
        user: &str,
        format: Format,
        declared: Option<&[Declared<'_>]>,
        now: Instant,
    ) -> Result<RoomKey, JoinError> {
        self.join_shown(room_id, client, user, user, format, declared, now)
    }

    /// [`Engine::join_as`] for a client shown as `shown` in history (the name as its dialect
    /// knows it, original case; array-RPC: the username, else the client id).
    #[allow(clippy::too_many_arguments)]
    pub fn join_shown(
        &mut self,
        room_id: &str,
        client: ClientId,
        user: &str,
        shown: &str,
        format: Format,
        declared: Option<&[Declared<'_>]>,
        now: Instant,
    ) -> Result<RoomKey, JoinError> {
        let key = match self.index.get(room_id) {
            Some(&key) => key,
            None if self.durable.loads_rooms() => {
                return Err(self.durable.wait_for_load(room_id, client))
            }
            None => self.create_room(room_id, now)?,
        };
        let Some(room) = self.rooms.get_mut(key) else {
            return Err(JoinError::TooManyRooms);
        };
        let max_clients = room.rules.settings.max_clients_per_room;
        if self.cluster.is_full(room, key, max_clients) {
            return Err(JoinError::RoomFull);
        }
        let shown: Arc<str> = Arc::from(shown);
        let mut seeded = false;
        if let Some(declared) = declared {
            check_declaration(room, declared)?;
            if room.variables.is_empty() && !declared.is_empty() {
                let ms = self.history.stamp(Some(now));
                let before = room.state_bytes();
                for (name, value) in declared {
                    room.add_variable(name, *value, client, Arc::clone(&shown), ms);
                    if let Some(variable) = room.variables.last_mut() {
                        variable.seed = self.cluster.enabled;
                    }
                }
                self.state_bytes += room.state_bytes().saturating_sub(before);
                self.durable.note_change(room, key);
                seeded = true;
            }
        }
        if seeded && self.history.cap > 0 {
            // A declaration that seeds an empty room creates its variables.
            let ms = self.history.stamp(Some(now));
            for (name, value) in declared.unwrap_or_default() {
                let user = Arc::clone(&shown);
                self.record(RoomKey(key), user, Verb::Create, name, value.text(), ms);
            }
        }
        let joined_ms = self.history.stamp(Some(now));
        let Some(room) = self.rooms.get_mut(key) else {
            return Err(JoinError::TooManyRooms);
        };
        room.members.push(Member {
            client,
            format,
            joined_ms,
            seen: room.version,
            waiting: false,
            resend_own: false,
            user: user.to_ascii_lowercase().into(),
            shown,
            rates: Vec::new(),
        });
        if let Some(at) = room.emptied_at.take() {
            self.empty_rooms.remove(&(at, key));
        }
        if room.has_members_behind() {
            self.pacer.mark_dirty(key, &mut room.pace);
        }
        self.cluster.note_members(room, key);
        Ok(RoomKey(key))
    }

    /// Removes `client` from each of `rooms`.
    pub fn leave_rooms(
        &mut self,
        client: ClientId,
        rooms: impl IntoIterator<Item = RoomKey>,
        now: Instant,
    ) {
        for room in rooms {
            self.leave(room, client, now);
        }
    }

    /// Removes `client` from its room. An emptied room keeps its variables until it expires.
    pub fn leave(&mut self, room_key: RoomKey, client: ClientId, now: Instant) {
        if let Some(room) = self.rooms.get_mut(room_key.0) {
            if let Some(index) = room.member_index(client) {
                room.members.swap_remove(index);
            }
            if room.members.is_empty() && room.emptied_at.is_none() {
                room.emptied_at = Some(now);
                self.empty_rooms.insert((now, room_key.0));
            }
            self.cluster.note_members(room, room_key.0);
        }
    }

    /// `client`'s connection can take frames again after refusing one: it is offered the
    /// latest values of `room` at the next flush.
    pub fn resume(&mut self, key: RoomKey, client: ClientId) {
        let Some(room) = self.rooms.get_mut(key.0) else {
            return;
        };
        let version = room.version;
        let Some(member) = room.members.iter_mut().find(|m| m.client == client) else {
            return;
        };
        member.waiting = false;
        if member.seen < version {
            self.pacer.mark_dirty(key.0, &mut room.pace);
        }
    }

    /// Sets a variable. `create` says whether an unknown name creates the variable (Scratch) or
    /// is reported as [`SetOutcome::Unknown`] (legacy). For tests and tools: without a time,
    /// `max-sets-per-minute` rules are not counted; the dialects call [`Engine::set_at`].
    pub fn set(
        &mut self,
        room: RoomKey,
        client: ClientId,
        name: &str,
        value: ValueRef<'_>,
        create: bool,
    ) -> SetOutcome {
        self.set_checked(room, client, name, value, create, None, None)
    }

    /// [`Engine::set`] at `now`, the time `max-sets-per-minute` rules count with; the
    /// dialects call this.
    pub fn set_at(
        &mut self,
        room: RoomKey,
        client: ClientId,
        name: &str,
        value: ValueRef<'_>,
        create: bool,
        now: Instant,
    ) -> SetOutcome {
        self.set_checked(room, client, name, value, create, Some(now), None)
    }

    /// A set by `client`, or with `operator` by an operator of the admin API (`client` is then
    /// [`NOBODY`], the change is recorded as the operator's and the project's rules do not
    /// apply: they guard clients, and an operator's repair must be able to restore any value).
    #[allow(clippy::too_many_arguments)]
    fn set_checked(
        &mut self,
        room: RoomKey,
        client: ClientId,
        name: &str,
        value: ValueRef<'_>,
        create: bool,
        now: Option<Instant>,
        operator: Option<&Arc<str>>,
    ) -> SetOutcome {
        let outcome = self.apply_set(room, client, name, value, create, now, operator);
        let stats = &mut self.stats;
        match outcome {
            SetOutcome::Applied => stats.sets_applied += 1,
            SetOutcome::Rejected(Rejection::InvalidName) => stats.invalid_names += 1,
            SetOutcome::Rejected(Rejection::InvalidValue) => stats.invalid_values += 1,
            SetOutcome::Rejected(Rejection::TooManyVariables) => stats.too_many_variables += 1,
            SetOutcome::Rejected(Rejection::Rule(_)) => stats.rule_violations += 1,
            SetOutcome::Unknown => stats.unknown_variables += 1,
        }
        if outcome != SetOutcome::Applied {
            stats.sets_rejected += 1;
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_set(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        value: ValueRef<'_>,
        create: bool,
        now: Option<Instant>,
        operator: Option<&Arc<str>>,
    ) -> SetOutcome {
        let Some(room) = self.rooms.get_mut(key.0) else {
            return SetOutcome::Unknown;
        };
        let settings = &room.rules.settings;
        let (allow, max_chars) = (settings.allow_non_numeric, settings.max_value_chars);
        if !value::is_valid_value_within(value, allow, max_chars) {
            return SetOutcome::Rejected(Rejection::InvalidValue);
        }
        let index = room.variable_index(name);
        match index {
            None if !create => return SetOutcome::Unknown,
            None if !value::is_valid_name(name) => {
                return SetOutcome::Rejected(Rejection::InvalidName)
            }
            None if room.variables.len() >= settings.max_variables_per_room => {
                return SetOutcome::Rejected(Rejection::TooManyVariables)
            }
            _ => {}
        }
        // Projects without rules pay this one branch per set.
        if room.rules.has_rules() && operator.is_none() {
            if let Err(rule) = check_rules(room, index, client, name, value, now) {
                self.refusals.count(room.rules.counted_as, rule);
                return SetOutcome::Rejected(Rejection::Rule(rule));
            }
        }
        let ms = self.history.stamp(now);
        // A member setting again what it set last keeps its name there: no search of the
        // members, no reference counted (the hot path of `--history 0`).
        let last_writer = index.and_then(|i| room.variables.get(i));
        let same_writer = client != NOBODY && last_writer.is_some_and(|v| v.writer == client);
        let recorded = match last_writer {
            _ if self.history.cap == 0 => None,
            _ if operator.is_some() => operator.cloned(),
            Some(v) if same_writer => Some(Arc::clone(&v.user)),
            _ => Some(history::shown_in(room, client, &self.history.nobody)),
        };
        let verb = match index {
            Some(index) => {
                if let Some(variable) = room.variables.get_mut(index) {
                    let before = variable.heap_bytes();
                    variable.value.replace(value);
                    self.state_bytes =
                        (self.state_bytes + variable.heap_bytes()).saturating_sub(before);
                }
                if same_writer {
                    room.touch_again(index, ms);
                } else {
                    let user = recorded.clone().or_else(|| operator.cloned());
                    let user = user
                        .unwrap_or_else(|| history::shown_in(room, client, &self.history.nobody));
                    room.touch(index, client, user, ms);
                }
                self.pacer.mark_dirty(key.0, &mut room.pace);
                self.durable.note_change(room, key.0);
                Verb::Set
            }
            None => {
                let extra = name.len() + value.text().len() + std::mem::size_of::<room::Variable>();
                // The room's own history gives way first, then empty rooms.
                if !self.fit_by_history(key.0, extra) && !self.make_space(extra) {
                    return SetOutcome::Rejected(Rejection::TooManyVariables);
                }
                let Some(room) = self.rooms.get_mut(key.0) else {
                    return SetOutcome::Unknown;
                };
                let user = recorded.clone().or_else(|| operator.cloned());
                let user =
                    user.unwrap_or_else(|| history::shown_in(room, client, &self.history.nobody));
                room.add_variable(name, value, client, user, ms);
                self.state_bytes += room.variables.last().map_or(0, room::Variable::heap_bytes);
                self.pacer.mark_dirty(key.0, &mut room.pace);
                self.durable.note_change(room, key.0);
                Verb::Create
            }
        };
        if let Some(user) = recorded {
            self.record(key, user, verb, name, value.text(), ms);
        }
        SetOutcome::Applied
    }

    /// Renames a variable, keeping its value; the other members get it under the new name.
    /// For tests and tools; the dialects call [`Engine::rename_at`].
    pub fn rename(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        new_name: &str,
    ) -> Result<(), EditError> {
        self.rename_checked(key, client, name, new_name, None)
    }

    /// [`Engine::rename`] at `now` (the time history records).
    pub fn rename_at(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        new_name: &str,
        now: Instant,
    ) -> Result<(), EditError> {
        self.rename_checked(key, client, name, new_name, Some(now))
    }

    fn rename_checked(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        new_name: &str,
        now: Option<Instant>,
    ) -> Result<(), EditError> {
        if self.is_protected(key, name) || self.is_protected(key, new_name) {
            return Err(EditError::Protected);
        }
        let (room, index) = find_variable(&mut self.rooms, key, name)?;
        if !value::is_valid_name(new_name) {
            return Err(EditError::InvalidName);
        }
        if room.variable_index(new_name).is_some() {
            return Err(EditError::NameTaken);
        }
        // The renamer keeps its own copy's value; it is left out of the fan-out only if that copy
        // is current (it wrote the value or was sent it), otherwise it must get the value too.
        let current = room.variables.get(index).is_some_and(|v| {
            v.writer == client
                || room
                    .members
                    .iter()
                    .any(|m| m.client == client && m.seen >= v.changed_at)
        });
        if let Some(variable) = room.variables.get_mut(index) {
            self.state_bytes =
                (self.state_bytes + new_name.len()).saturating_sub(variable.name.len());
            variable.name = new_name.into();
            // Its rule is that of its new name.
            variable.rule_epoch = 0;
        }
        // A cached snapshot still shows the old name, which no later flush would take back.
        room.snapshots.clear();
        let ms = self.history.stamp(now);
        let user = room
            .members
            .iter()
            .find(|m| m.client == client)
            .map_or_else(
                || Arc::clone(&self.history.nobody),
                |m| Arc::clone(&m.shown),
            );
        room.touch(
            index,
            if current { client } else { NOBODY },
            Arc::clone(&user),
            ms,
        );
        self.pacer.mark_dirty(key.0, &mut room.pace);
        room.durability.rewrite = true;
        self.durable.note_change(room, key.0);
        self.record(key, user, Verb::Rename, name, new_name, ms);
        Ok(())
    }

    /// Deletes a variable; for tests and tools (the dialects call [`Engine::delete_at`]).
    pub fn delete(&mut self, key: RoomKey, name: &str) -> Result<(), EditError> {
        self.delete_checked(key, NOBODY, name, None, None)
    }

    /// `client` deletes variable `name` of `key` at `now` (the time history records).
    pub fn delete_at(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        now: Instant,
    ) -> Result<(), EditError> {
        self.delete_checked(key, client, name, Some(now), None)
    }

    /// A delete by `client`, or with `operator` by an operator of the admin API (recorded as
    /// theirs; a variable with a rule may be deleted, see [`Engine::set_checked`]).
    fn delete_checked(
        &mut self,
        key: RoomKey,
        client: ClientId,
        name: &str,
        now: Option<Instant>,
        operator: Option<&Arc<str>>,
    ) -> Result<(), EditError> {
        if operator.is_none() && self.is_protected(key, name) {
            return Err(EditError::Protected);
        }
        let (room, index) = find_variable(&mut self.rooms, key, name)?;
        let removed = room.variables.remove(index);
        room.snapshots.clear();
        self.state_bytes = self.state_bytes.saturating_sub(removed.heap_bytes());
        room.durability.rewrite = true;
        self.durable.note_change(room, key.0);
        if self.history.cap > 0 {
            let ms = self.history.stamp(now);
            let user = match operator {
                Some(operator) => Arc::clone(operator),
                None => self.rooms.get(key.0).map_or_else(
                    || Arc::clone(&self.history.nobody),
                    |r| self.shown_user(r, client),
                ),
            };
            self.record(key, user, Verb::Delete, name, "", ms);
        }
        Ok(())
    }

    /// Flushes the rooms whose bucket allows it at `now`, and at or after a beat every room
    /// that waited for it: every member with news gets one frame with the latest values it has
    /// not seen. Rooms out of tokens wait for the next beat, [`Engine::poll_timeout`]. `deliver` returns false when the member's socket is behind;
    /// that member then waits, costing nothing, and is offered the then-latest values once its
    /// connection drains ([`Engine::resume`]).
    pub fn flush_due(
        &mut self,
        now: Instant,
        deliver: impl FnMut(RoomKey, ClientId, &Frame) -> bool,
    ) {
        self.flush_rooms(Some(now), deliver);
    }

    /// Flushes every room with news at once, whatever its pace; for tests and tools.
    pub fn flush(&mut self, deliver: impl FnMut(RoomKey, ClientId, &Frame) -> bool) {
        self.flush_rooms(None, deliver);
    }

    fn flush_rooms(
        &mut self,
        now: Option<Instant>,
        mut deliver: impl FnMut(RoomKey, ClientId, &Frame) -> bool,
    ) {
        let mut due = std::mem::take(&mut self.due);
        self.pacer.take_due(now, &mut due, &mut self.rooms);
        for key in due.drain(..) {
            let Some(room) = self.rooms.get_mut(key) else {
                continue;
            };
            flush_room(
                RoomKey(key),
                room,
                &mut self.frames,
                self.encode,
                &mut self.stats,
                &mut deliver,
            );
            self.pacer.flushed(&mut room.pace);
        }
        // Hand the allocation back so the next flush does not reallocate the list.
        self.due = due;
    }

    /// The next beat, when some room waits for it; `None` when no room waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pacer.next_beat()
    }

    /// Whether a flush would send anything: a room changed or waits for the beat.
    pub fn has_pending(&self) -> bool {
        self.pacer.has_pending()
    }

    /// Drops rooms that have been empty for longer than the configured time.
    pub fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.limits.empty_room_ttl;
        let expired: Vec<usize> = self
            .empty_rooms
            .iter()
            .take_while(|(at, _)| now.saturating_duration_since(*at) >= ttl)
            .map(|&(_, key)| key)
            .filter(|&key| self.may_drop(key))
            .collect();
        for &key in &expired {
            self.remove_room(key);
        }
        let reuse = self.reuse_window();
        let rooms = &mut self.rooms;
        self.snapshot_rooms.retain(|&key| {
            let Some(room) = rooms.get_mut(key) else {
                return false;
            };
            room.snapshots
                .retain(|s| now.saturating_duration_since(s.made_at) < reuse);
            !room.snapshots.is_empty()
        });
        expired.len()
    }

    /// Variables of every room in memory, for metrics.
    pub(crate) fn variable_total(&self) -> usize {
        self.rooms.iter().map(|(_, r)| r.variables.len()).sum()
    }

    /// Rooms with changes the store does not have yet, for metrics.
    pub(crate) fn unsaved_rooms(&self) -> usize {
        self.durable.owed_rooms()
    }

    /// Approximate heap bytes held by all rooms.
    pub fn heap_bytes(&self) -> usize {
        self.rooms.iter().map(|(_, r)| r.heap_bytes()).sum()
    }

    fn create_room(&mut self, room_id: &str, now: Instant) -> Result<usize, JoinError> {
        if self.rooms.len() >= self.limits.max_rooms && !self.evict_one_empty() {
            return Err(JoinError::TooManyRooms);
        }
        let pace = self.pacer.new_room();
        let room = Room::new(room_id, now, pace, self.rules.for_project(room_id));
        let bytes = room.state_bytes();
        if !self.make_space(bytes) {
            return Err(JoinError::TooManyRooms);
        }
        let key = self.rooms.insert(room);
        self.index.insert(room_id.into(), key);
        self.empty_rooms.insert((now, key));
        self.state_bytes += bytes;
        Ok(key)
    }

    /// Drops the room that has been empty the longest, to make space for new state; false
    /// when no room may go.
    fn evict_one_empty(&mut self) -> bool {
        let oldest = self
            .empty_rooms
            .iter()
            .map(|&(_, key)| key)
            .find(|&key| self.may_drop(key));
        match oldest {
            Some(key) => {
                self.remove_room(key);
                self.stats.rooms_evicted += 1;
                true
            }
            None => false,
        }
    }

    /// The one place that decides whether a room may leave memory (by expiry or eviction):
    /// nobody is in it, and nothing of it is owed to the store.
    fn may_drop(&self, key: usize) -> bool {
        self.rooms
            .get(key)
            .is_some_and(|room| room.members.is_empty() && self.durable.is_durable(room))
    }

    fn remove_room(&mut self, key: usize) {
        if let Some(room) = self.rooms.try_remove(key) {
            self.index.remove(&room.id);
            if let Some(at) = room.emptied_at {
                self.empty_rooms.remove(&(at, key));
            }
            self.state_bytes = self.state_bytes.saturating_sub(room.state_bytes());
            self.pacer.remove_room(key, &room.pace);
            self.durable.forget(key);
            self.cluster.removed(room.id);
        }
    }
}

fn find_variable<'r>(
    rooms: &'r mut Slab<Room>,
    key: RoomKey,
    name: &str,
) -> Result<(&'r mut Room, usize), EditError> {
    let room = rooms.get_mut(key.0).ok_or(EditError::UnknownVariable)?;
    let index = room
        .variable_index(name)
        .ok_or(EditError::UnknownVariable)?;
    Ok((room, index))
}

/// Sends every member of `room` that has not seen its latest version, and is not waiting for
/// its socket to drain, one frame. A member whose socket does not take it waits, costing
/// nothing, until [`Engine::resume`].
fn flush_room(
    key: RoomKey,
    room: &mut Room,
    frames: &mut FrameCache,
    encode: EncodeSet,
    stats: &mut Stats,
    deliver: &mut impl FnMut(RoomKey, ClientId, &Frame) -> bool,
) {
    frames.clear();
    for i in 0..room.members.len() {
        let Some(member) = room.members.get(i) else {
            break;
        };
        if member.seen >= room.version || member.waiting {
            continue;
        }
        let caught_up = match frames.frame_for(room, member, encode) {
            Some(frame) => {
                stats.frames_built += 1;
                deliver(key, member.client, &frame)
            }
            None => true,
        };
        let version = room.version;
        if let Some(member) = room.members.get_mut(i) {
            if caught_up {
                member.seen = version;
                member.resend_own = false;
            } else {
                // Nothing more is built for it until its connection drains.
                member.waiting = true;
            }
        }
    }
}

/// Checks a set against the rules of `room`'s project: `read-only`, then the rule of
/// variable `name` (at `index` when it exists): `writers`, the value checks, and last
/// `max-sets-per-minute`, so only a set that would be applied spends the budget.
fn check_rules(
    room: &mut Room,
    index: Option<usize>,
    client: ClientId,
    name: &str,
    value: ValueRef<'_>,
    now: Option<Instant>,
) -> Result<(), Rule> {
    let Room {
        rules,
        variables,
        members,
        ..
    } = room;
    if rules.settings.read_only {
        return Err(Rule::ReadOnly);
    }
    let rule_index = match index.and_then(|i| variables.get_mut(i)) {
        Some(variable) => {
            if variable.rule_epoch != rules.epoch {
                variable.rule = rules.rule_index(&variable.name);
                variable.rule_epoch = rules.epoch;
            }
            variable.rule
        }
        None => rules.rule_index(name),
    };
    let Some((rule_index, rule)) = rule_index.and_then(|i| Some((i, rules.rule(i)?))) else {
        return Ok(());
    };
    let setter = members.iter().position(|m| m.client == client);
    let user = setter.and_then(|i| members.get(i)).map_or("", |m| &*m.user);
    if !rules::may_write(rule, user) {
        return Err(Rule::Writers);
    }
    let current = index
        .and_then(|i| variables.get(i))
        .map(|v| v.value.as_ref());
    rules::check_value(rule, value, current)?;
    let (Some(per_minute), Some(now), Some(setter)) = (rule.max_sets_per_minute, now, setter)
    else {
        return Ok(());
    };
    // A user's budget is kept on its first member in the room; a nameless client has its own.
    let holder = if user.is_empty() {
        setter
    } else {
        members
            .iter()
            .position(|m| *m.user == *user)
            .unwrap_or(setter)
    };
    let Some(member) = members.get_mut(holder) else {
        return Ok(());
    };
    let slot = match member.rates.iter().position(|(i, _)| *i == rule_index) {
        Some(slot) => slot,
        None => {
            let burst = f64::from(per_minute);
            let bucket = TokenBucket::new(burst / 60.0, burst, now);
            member.rates.push((rule_index, bucket));
            member.rates.len() - 1
        }
    };
    let within = member
        .rates
        .get_mut(slot)
        .is_none_or(|(_, bucket)| bucket.take(1.0, now));
    if within {
        Ok(())
    } else {
        Err(Rule::MaxSetsPerMinute)
    }
}

fn check_declaration(room: &Room, declared: &[Declared<'_>]) -> Result<(), JoinError> {
    let settings = &room.rules.settings;
    if declared.len() > settings.max_variables_per_room {
        return Err(JoinError::InvalidDeclaration);
    }
    let (allow, max_chars) = (settings.allow_non_numeric, settings.max_value_chars);
    let valid = declared.iter().all(|(name, value)| {
        value::is_valid_name(name) && value::is_valid_value_within(*value, allow, max_chars)
    });
    if !valid {
        return Err(JoinError::InvalidDeclaration);
    }
    let mut names: Vec<&str> = declared.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != declared.len() {
        return Err(JoinError::InvalidDeclaration);
    }
    if room.variables.is_empty() {
        return Ok(());
    }
    let same_names = declared.len() == room.variables.len()
        && declared
            .iter()
            .all(|(name, _)| room.variable_index(name).is_some());
    if same_names {
        Ok(())
    } else {
        Err(JoinError::Incompatible)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod rules_tests;

#[cfg(test)]
mod history_tests;
