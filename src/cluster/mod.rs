//! Several nodes sharing rooms through Redis (`--cluster redis://…`): the event loop's handle
//! to two helper threads, one for commands and one for the subscription.
//!
//! Redis holds each room's variables and orders the changes: a node's batch for a room is
//! applied by one script that bumps the room's version, writes the values and publishes the
//! batch on the room's channel, atomically. Every node subscribes to the channels of the rooms
//! it has in memory and applies batches in version order (the engine side is
//! `engine/cluster.rs`). The loop never waits on Redis: it hands over requests with `try_send`
//! on bounded channels, and the threads answer on channels of their own and wake the loop with a
//! `mio::Waker`. One [`Round`] (one pipeline, one round trip) carries everything the loop has
//! for Redis at a time, however many rooms; only one round is out at a time.
//!
//! Redis layout (a room id is used as is, binary-safe):
//! - `stratus:{ROOM}:vars`: hash, variable name → `n` or `t` followed by the value's text
//!   (number or text).
//! - `stratus:{ROOM}:version`: the room's version, bumped by every batch.
//! - `stratus:{ROOM}:members`: hash, node id → that node's member count; a node's entry counts
//!   only while its heartbeat key `stratus:node:NODE` exists (it expires if the node dies).
//! - channel `stratus:{ROOM}`: every batch applied, with the version it got.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Batch, Engine, SavedVariable};

/// What the loop knows about the cluster at start.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://…` for TLS.
    pub url: String,
    /// This node's id, unique in the cluster (random per process).
    pub node_id: Box<str>,
    /// Room keys expire this long after the room's last write; `None` keeps them.
    pub retention: Option<Duration>,
}

/// A batch some node (this one included) applied to a room, as received on the room's channel.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteBatch {
    pub room: Box<str>,
    /// The room's version in Redis after this batch.
    pub version: u64,
    /// The node that sent it.
    pub node: Box<str>,
    /// That node's local room version when it collected the batch (see `RoomChanges`).
    pub local_version: u64,
    /// The batch replaces every variable of the room (after renames and deletes).
    pub replace_all: bool,
    pub variables: Vec<SavedVariable>,
}

/// A room as read from Redis, with the version it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomState {
    pub room: Box<str>,
    pub version: u64,
    pub variables: Vec<SavedVariable>,
}

/// Everything the loop has for Redis at one time: one pipeline.
#[derive(Debug, Default)]
pub struct Round {
    /// Changes to apply and publish, one script call per room.
    pub batch: Batch,
    /// Rooms to read (already subscribed).
    pub loads: Vec<Box<str>>,
    /// This node's member count per room (0: none left); answered with cluster totals.
    pub members: Vec<(Box<str>, u32)>,
}

/// The answer to a [`Round`].
#[derive(Debug, Default)]
pub struct RoundResult {
    /// The batch, given back.
    pub batch: Batch,
    /// Whether every room of the batch was applied (otherwise none is counted as applied).
    pub saved: bool,
    pub loaded: Vec<RoomState>,
    pub load_failed: Vec<Box<str>>,
    /// Members per room across the cluster, this node's included.
    pub member_totals: Vec<(Box<str>, u32)>,
}

/// What the threads tell the loop.
#[derive(Debug)]
pub enum Event {
    RoundDone(RoundResult),
    /// Batches of this room published from now on will arrive.
    Subscribed(Box<str>),
    Message(RemoteBatch),
    /// The subscription was lost and is back (every room resubscribed): batches may have been
    /// missed, every room must be read again.
    Resubscribed,
    /// Redis stopped answering (once per outage).
    Outage,
    /// Redis answers again after an outage.
    Restored,
}

/// Counters for logs and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ClusterStats {
    pub connected: bool,
    pub rounds: u64,
    /// Round trip of the last round, and the sum over all, in microseconds.
    pub last_round_trip_us: u64,
    pub round_trip_us_total: u64,
    pub batches_out: u64,
    pub batches_in: u64,
    /// Seconds Redis was unreachable, over the process's life (the ongoing outage included).
    pub outage_seconds: f64,
    pub outages: u64,
}

/// The loop's side of the Redis threads.
pub struct Cluster {
    _private: (),
}

impl Cluster {
    /// Checks the URL and starts both threads, which connect in the background (retrying with
    /// backoff); an error says what is wrong with the URL.
    pub fn start(settings: ClusterSettings, waker: Arc<mio::Waker>) -> Result<Cluster, String> {
        let _ = (settings, waker);
        Err("not implemented".into())
    }

    /// Whether a round is out; the next one waits for its answer.
    pub fn is_busy(&self) -> bool {
        false
    }

    /// Hands over a round; gives it back when the thread cannot take it now.
    pub fn send_round(&mut self, round: Round) -> Result<(), Round> {
        Err(round)
    }

    /// Subscribes to a room's channel; [`Event::Subscribed`] follows. False: try again later.
    pub fn subscribe(&mut self, room: Box<str>) -> bool {
        let _ = room;
        false
    }

    /// Stops receiving a room's batches. False: try again later.
    pub fn unsubscribe(&mut self, room: Box<str>) -> bool {
        let _ = room;
        false
    }

    /// The threads' events so far; never waits.
    pub fn take_events(&mut self) -> Vec<Event> {
        Vec::new()
    }

    pub fn stats(&self) -> ClusterStats {
        ClusterStats::default()
    }

    /// At shutdown: sends what the engine still owes (waiting at most `patience`), removes
    /// this node's member counts and heartbeat, stops both threads. Returns how many variables
    /// could not be sent.
    pub fn finish(self, engine: &mut Engine, patience: Duration) -> usize {
        let _ = (engine, patience);
        0
    }
}
