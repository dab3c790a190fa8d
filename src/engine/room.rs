//! One room: its variables with versions, and its members with the version each has seen.
//!
//! Fan-out is state-based: the room never queues messages. Each change bumps the room's version
//! and stamps the variable with it and with its writer; a member is behind when the version it has
//! seen is older than the room's. What a member is sent is computed from that, so a slow member
//! costs no more memory than the room's own state.

use std::sync::Arc;
use std::time::Instant;

use super::cluster::RoomCluster;
use super::durable::RoomDurability;
use super::history::RoomHistory;
use super::pace::RoomPace;
use super::rate::TokenBucket;
use super::rules::RoomRules;
use super::value::{StoredValue, ValueRef};
use super::{ClientId, Format, Frame, SetLine};

#[derive(Debug)]
pub struct Variable {
    pub name: Box<str>,
    pub value: StoredValue,
    /// The room version at which this variable last changed.
    pub changed_at: u64,
    /// Who made that change; they are not sent their own value back.
    pub writer: ClientId,
    /// That writer's name as its dialect knows it (empty when unknown), and when it wrote
    /// (Unix milliseconds; 0 when unknown): the variables query and the stored row.
    pub user: Arc<str>,
    pub changed_ms: u64,
    /// The latest change came from another node through the cluster (it is not sent back).
    pub from_cluster: bool,
    /// Cluster: the value is a joiner's declaration seeding an empty room, not a set; another
    /// node's value for it wins, and Redis takes it only where it has none.
    pub seed: bool,
    /// Which rule of the room's project applies to it (`rule`), as of the rules with this
    /// epoch; 0: not looked up yet (new, renamed, or the rules were replaced since).
    pub rule_epoch: u32,
    pub rule: Option<u16>,
}

#[derive(Debug)]
pub struct Member {
    pub client: ClientId,
    pub format: Format,
    /// When it joined (Unix milliseconds), for the admin API's member list.
    pub joined_ms: u64,
    /// The room version this member has been sent everything up to.
    pub seen: u64,
    /// Its socket refused a frame: flushes skip it (no frame is built for it) until its
    /// connection drains and the loop calls [`super::Engine::resume`].
    pub waiting: bool,
    /// It was sent a full-state reply older than some of its own writes (a shared rendering):
    /// its next frame carries its own values too, which it is otherwise never sent.
    pub resend_own: bool,
    /// The name it joined with, lowercased (`writers` rules compare it); empty when unknown.
    pub user: Box<str>,
    /// The name as its dialect shows it (original case; array-RPC: the username, else the
    /// client id), shared by the history entries and variables it writes.
    pub shown: Arc<str>,
    /// `max-sets-per-minute` budgets its user spends (by rule index); kept on the user's first
    /// member in the room, so memory follows members, never messages.
    pub rates: Vec<(u16, TokenBucket)>,
}

#[derive(Debug)]
pub struct Room {
    pub id: Box<str>,
    pub variables: Vec<Variable>,
    pub members: Vec<Member>,
    pub version: u64,
    /// When the last member left; empty rooms keep their variables for a while.
    pub emptied_at: Option<Instant>,
    /// Whether and when the room is due to flush.
    pub pace: RoomPace,
    /// What of it the backend has stored (unused in memory only).
    pub durability: RoomDurability,
    /// Where the room stands in the cluster (unused without `--cluster`).
    pub cluster: RoomCluster,
    /// The latest rendering of all variables per format, shared by every full-state reply
    /// until it is older than the reuse window (see `Engine::shared_rendering`).
    pub snapshots: Vec<Snapshot>,
    /// Its project's settings and rules, looked up when the room was made or the rules
    /// were replaced.
    pub rules: Arc<RoomRules>,
    /// Its recorded changes held in memory (`engine/history.rs`).
    pub history: RoomHistory,
}

/// Every variable of a room rendered once in one format, with the version it shows.
#[derive(Debug)]
pub struct Snapshot {
    pub format: Format,
    pub version: u64,
    pub made_at: Instant,
    pub frame: Frame,
}

impl Variable {
    /// What a dialect's `set` line shows of it.
    pub fn line(&self) -> SetLine<'_> {
        SetLine {
            name: &self.name,
            value: self.value.as_ref(),
            user: &self.user,
            changed_ms: self.changed_ms,
        }
    }
}

impl Room {
    pub fn new(id: &str, now: Instant, pace: RoomPace, rules: Arc<RoomRules>) -> Self {
        Room {
            id: id.into(),
            variables: Vec::new(),
            members: Vec::new(),
            version: 0,
            emptied_at: Some(now),
            pace,
            durability: RoomDurability::default(),
            cluster: RoomCluster::default(),
            snapshots: Vec::new(),
            rules,
            history: RoomHistory::default(),
        }
    }

    pub fn variable_index(&self, name: &str) -> Option<usize> {
        self.variables.iter().position(|v| &*v.name == name)
    }

    pub fn member_index(&self, client: ClientId) -> Option<usize> {
        self.members.iter().position(|m| m.client == client)
    }

    /// Records a change to variable `index` by `writer` (`user`, at `ms`) and returns the new
    /// room version.
    pub fn touch(&mut self, index: usize, writer: ClientId, user: Arc<str>, ms: u64) -> u64 {
        self.version += 1;
        if let Some(variable) = self.variables.get_mut(index) {
            variable.changed_at = self.version;
            variable.writer = writer;
            variable.user = user;
            variable.changed_ms = ms;
            variable.from_cluster = false;
            variable.seed = false;
        }
        self.version
    }

    /// [`Room::touch`] by the variable's last writer again: its writer and name stay.
    pub fn touch_again(&mut self, index: usize, ms: u64) -> u64 {
        self.version += 1;
        if let Some(variable) = self.variables.get_mut(index) {
            variable.changed_at = self.version;
            variable.changed_ms = ms;
            variable.from_cluster = false;
            variable.seed = false;
        }
        self.version
    }

    pub fn add_variable(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        writer: ClientId,
        user: Arc<str>,
        ms: u64,
    ) {
        self.version += 1;
        self.variables.push(Variable {
            name: name.into(),
            value: StoredValue::new(value),
            changed_at: self.version,
            writer,
            user,
            changed_ms: ms,
            from_cluster: false,
            seed: false,
            rule_epoch: 0,
            rule: None,
        });
    }

    pub fn has_members_behind(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.seen < self.version && !m.waiting)
    }

    /// Whether `client` wrote the latest value of any variable changed after `seen`; such a
    /// member needs a frame of its own that leaves those variables out.
    pub fn wrote_since(&self, client: ClientId, seen: u64) -> bool {
        self.variables
            .iter()
            .any(|v| v.changed_at > seen && v.writer == client)
    }

    /// Approximate heap bytes held by this room, for limits and metrics.
    pub fn heap_bytes(&self) -> usize {
        let variables: usize = self.variables.iter().map(Variable::heap_bytes).sum();
        variables
            + self.history.budget_bytes()
            + self.members.capacity() * std::mem::size_of::<Member>()
            + self.id.len()
            + std::mem::size_of::<Room>()
    }
}

impl Room {
    /// Heap bytes of the room's state (id and variables, not members), as counted against
    /// the state memory budget.
    pub fn state_bytes(&self) -> usize {
        let variables: usize = self.variables.iter().map(Variable::heap_bytes).sum();
        variables + self.history.budget_bytes() + self.id.len() + std::mem::size_of::<Room>()
    }
}

impl Variable {
    /// Heap bytes this variable holds, for the state memory budget.
    pub fn heap_bytes(&self) -> usize {
        self.name.len() + self.value.heap_bytes() + std::mem::size_of::<Variable>()
    }
}
