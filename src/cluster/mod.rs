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
//! - `stratus:{ROOM}:meta`: hash, variable name → its last writer (`MS:USER`, `keys.rs`),
//!   written and removed with the vars hash.
//! - `stratus:{ROOM}:history`: list of the room's history entries, newest first (`engine/history_codec.rs`),
//!   trimmed to `--history` by the node that writes (so every node should run with the same
//!   `--history`). The vars, meta and history keys get the retention's expiry at every write.
//! - `stratus:{ROOM}:version`: the room's version, bumped by every batch.
//! - `stratus:{ROOM}:members`: hash, node id → that node's member count; a node's entry counts
//!   only while its heartbeat key `stratus:node:NODE` exists (it expires if the node dies).
//! - channel `stratus:{ROOM}`: every batch applied, with the version it got (payload:
//!   `codec.rs`).
//!
//! - `stratus:bans`, `stratus:blocks`: hashes of the admin API's bans (id → JSON) and runtime
//!   project blocks (project → JSON), read by every node when it connects; channel
//!   `stratus:control`: each ban, lift, block, unblock and kick of a user, for every node to
//!   apply (`admin/control.rs`).
//!
//! The braces are literal characters (`stratus:{lobby}:vars` for room `lobby`): see
//! `keys.rs`. The scripts are in `scripts.rs`, the threads in `commands.rs` and
//! `subscriber.rs`. The HTTP API's reads (a room's newest history entries, the variables of a
//! room not in memory) go to the command thread on the rounds' channel and come back as
//! [`Event::Read`] in order with the rounds' answers.

mod codec;
mod commands;
mod keys;
mod retry;
mod scripts;
mod stats;
mod subscriber;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::admin::bans::{Ban, Block};
use crate::admin::control::{Control, ControlMessage};
use crate::engine::{Batch, ReadRequest, SavedVariable, StoredRead};
use commands::CommandThread;
use stats::SharedStats;
use subscriber::Subscriber;

/// Subscribe/unsubscribe requests waiting for the subscriber thread.
const SUBSCRIBE_CAPACITY: usize = 1024;
/// Events waiting for the loop; when full, the subscriber thread waits (and Redis may drop
/// it, which ends in [`Event::Resubscribed`]).
const EVENT_CAPACITY: usize = 1024;
/// The HTTP API's reads waiting for the command thread besides the round (more: answered
/// unavailable).
const READ_CAPACITY: usize = 64;

/// What the loop knows about the cluster at start.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://…` for TLS.
    pub url: String,
    /// This node's id, unique in the cluster (random per process).
    pub node_id: Box<str>,
    /// Room keys expire this long after the room's last write; `None` keeps them.
    pub retention: Option<Duration>,
    /// `--history`: the length a room's history list is trimmed to (0: history is off).
    pub history: usize,
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

/// What the command thread is asked for, in order.
#[derive(Debug)]
pub enum Request {
    Round(Round),
    /// A read of the HTTP API, named by the loop's id.
    Read(u64, ReadRequest),
    /// An admin action for every node: a change is written to its hash, then published on
    /// the control channel (in one transaction). With an id, answered by
    /// [`Event::ControlDone`] (so the API answers only once Redis took it); a failure is
    /// logged either way.
    Control(Control, Option<u64>),
    /// Read the bans and blocks again ([`Event::Bans`] follows): the subscription was lost,
    /// so control messages may have been missed.
    ReadBans,
}

/// What the threads tell the loop.
#[derive(Debug)]
pub enum Event {
    RoundDone(RoundResult),
    /// The answer to [`Request::Read`] with this id (after the rounds sent before it).
    Read(u64, StoredRead),
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
    /// The bans and blocks Redis holds, read at each connection (start, and after an outage:
    /// control messages may have been missed meanwhile).
    Bans(Vec<Ban>, Vec<Block>),
    /// A control message, from any node (this one's own included).
    Control(ControlMessage),
    /// The answer to [`Request::Control`] with this id: whether Redis took the change.
    ControlDone(u64, bool),
}

/// Counters for logs and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ClusterStats {
    pub connected: bool,
    /// Rounds Redis answered (rounds failed at once during an outage are not counted).
    pub rounds: u64,
    /// Round trip of the last round, and the sum over all, in microseconds.
    pub last_round_trip_us: u64,
    pub round_trip_us_total: u64,
    /// Room batches applied and published by this node, and received from the channels
    /// (this node's own included).
    pub batches_out: u64,
    pub batches_in: u64,
    /// Rooms read from Redis (for joins, and again after a gap or an outage).
    pub room_reads: u64,
    /// Seconds Redis was unreachable, over the process's life (the ongoing outage included).
    pub outage_seconds: f64,
    pub outages: u64,
}

/// The loop's side of the Redis threads.
pub struct Cluster {
    rounds: Option<SyncSender<Request>>,
    subscriptions: Option<SyncSender<subscriber::Request>>,
    events: Receiver<Event>,
    threads: Vec<JoinHandle<()>>,
    /// The round out, by the variable count of its batch; the next one waits for its answer.
    busy: Option<usize>,
    shared: Arc<SharedStats>,
    node_id: Box<str>,
}

impl Cluster {
    /// Checks the URL and starts both threads, which connect in the background (retrying with
    /// backoff); an error says what is wrong with the URL.
    pub fn start(settings: ClusterSettings, waker: Arc<mio::Waker>) -> Result<Cluster, String> {
        let client = client(&settings.url)?;
        let node_id = settings.node_id.clone();
        let shared = Arc::new(SharedStats::default());
        let (event_tx, event_rx) = mpsc::sync_channel(EVENT_CAPACITY);
        // One round at a time is out; the channel holds it while the thread is busy, with the
        // reads asked for meanwhile.
        let (round_tx, round_rx) = mpsc::sync_channel(1 + READ_CAPACITY);
        let (sub_tx, sub_rx) = mpsc::sync_channel(SUBSCRIBE_CAPACITY);
        let worker = CommandThread::new(
            client.clone(),
            settings,
            event_tx.clone(),
            Arc::clone(&waker),
            Arc::clone(&shared),
        );
        let subscriber = Subscriber::new(client, event_tx, waker, Arc::clone(&shared));
        let mut threads = Vec::new();
        for (name, run) in [
            (
                "stratus-redis",
                Box::new(move || worker.run(round_rx)) as Box<dyn FnOnce() + Send>,
            ),
            (
                "stratus-redis-sub",
                Box::new(move || subscriber.run(sub_rx)),
            ),
        ] {
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(run)
                .map_err(|e| format!("--cluster: cannot start a thread: {e}"))?;
            threads.push(thread);
        }
        Ok(Cluster {
            rounds: Some(round_tx),
            subscriptions: Some(sub_tx),
            events: event_rx,
            threads,
            busy: None,
            shared,
            node_id,
        })
    }

    /// This node's id, as its control messages name it.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Hands an admin action over for every node (see [`Request::Control`]; with `answer`,
    /// [`Event::ControlDone`] with that id follows); false when the command thread has too
    /// much to do or is gone.
    pub fn send_control(&mut self, control: Control, answer: Option<u64>) -> bool {
        let Some(rounds) = &self.rounds else {
            return false;
        };
        match rounds.try_send(Request::Control(control, answer)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.rounds = None;
                false
            }
        }
    }

    /// Asks for the bans and blocks to be read again; false when the command thread cannot
    /// take it now.
    pub fn request_bans(&mut self) -> bool {
        let Some(rounds) = &self.rounds else {
            return false;
        };
        rounds.try_send(Request::ReadBans).is_ok()
    }

    /// Whether a round is out; the next one waits for its answer.
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// The variables of the round out (0 when none is): what is lost if its answer never
    /// comes.
    pub fn variables_out(&self) -> usize {
        self.busy.unwrap_or(0)
    }

    /// Hands over a round; gives it back when the thread cannot take it now.
    pub fn send_round(&mut self, round: Round) -> Result<(), Round> {
        if self.busy.is_some() {
            return Err(round);
        }
        let variables = round.batch.variable_count();
        let Some(rounds) = &self.rounds else {
            return Err(round);
        };
        match rounds.try_send(Request::Round(round)) {
            Ok(()) => {
                self.busy = Some(variables);
                Ok(())
            }
            Err(TrySendError::Full(request)) => Err(round_of(request)),
            Err(TrySendError::Disconnected(request)) => {
                self.rounds = None;
                Err(round_of(request))
            }
        }
    }

    /// Asks for a read of the HTTP API (answered by [`Event::Read`] with `id`, after the rounds
    /// sent before it); false when the command thread has too many to do or is gone.
    pub fn request_read(&mut self, id: u64, read: ReadRequest) -> bool {
        let Some(rounds) = &self.rounds else {
            return false;
        };
        match rounds.try_send(Request::Read(id, read)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.rounds = None;
                false
            }
        }
    }

    /// Whether a thread is gone (it panicked): nothing can reach Redis any more.
    pub fn is_broken(&self) -> bool {
        self.rounds.is_none()
            || self.subscriptions.is_none()
            || self.threads.iter().any(|thread| thread.is_finished())
    }

    /// Subscribes to a room's channel; [`Event::Subscribed`] follows. False: try again later.
    pub fn subscribe(&mut self, room: Box<str>) -> bool {
        self.ask(subscriber::Request::Subscribe(room))
    }

    /// Stops receiving a room's batches. False: try again later. (Batches published before
    /// Redis confirms may still arrive.)
    pub fn unsubscribe(&mut self, room: Box<str>) -> bool {
        self.ask(subscriber::Request::Unsubscribe(room))
    }

    fn ask(&mut self, request: subscriber::Request) -> bool {
        let Some(subscriptions) = &self.subscriptions else {
            return false;
        };
        match subscriptions.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.subscriptions = None;
                false
            }
        }
    }

    /// The threads' events so far; never waits.
    pub fn take_events(&mut self) -> Vec<Event> {
        let events: Vec<Event> = self.events.try_iter().collect();
        if events.iter().any(|e| matches!(e, Event::RoundDone(_))) {
            self.busy = None;
        }
        events
    }

    pub fn stats(&self) -> ClusterStats {
        self.shared.snapshot()
    }

    /// At shutdown: hands over a round, waiting while the thread is busy; gives it back when
    /// the thread is gone. Blocking is right here: the loop has stopped serving.
    pub fn send_round_blocking(&mut self, round: Round) -> Result<(), Round> {
        let Some(rounds) = &self.rounds else {
            return Err(round);
        };
        let variables = round.batch.variable_count();
        match rounds.send(Request::Round(round)) {
            Ok(()) => {
                self.busy = Some(variables);
                Ok(())
            }
            Err(mpsc::SendError(request)) => Err(round_of(request)),
        }
    }

    /// At shutdown: the threads' next event, waiting at most `timeout`; `None` when none came
    /// (the round out, if any, is then given up on).
    pub fn wait_event(&mut self, timeout: Duration) -> Option<Event> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                if matches!(event, Event::RoundDone(_)) {
                    self.busy = None;
                }
                Some(event)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                self.busy = None;
                None
            }
        }
    }

    /// Removes this node's member counts and heartbeat, and stops both threads.
    pub fn stop(mut self) {
        // Closing both request channels stops the threads (the command thread says goodbye
        // to Redis first); dropping the events unblocks a subscriber waiting to deliver.
        self.rounds = None;
        self.subscriptions = None;
        let Cluster {
            events, threads, ..
        } = self;
        drop(events);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The round a refused [`Request::Round`] carried.
fn round_of(request: Request) -> Round {
    match request {
        Request::Round(round) => round,
        Request::Read(..) | Request::Control(..) | Request::ReadBans => Round::default(),
    }
}

/// A Redis client for `url`, checked without connecting.
fn client(url: &str) -> Result<redis::Client, String> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(
            "--cluster: expected a URL like redis://HOST:PORT/DB or rediss://HOST:PORT/DB".into(),
        );
    }
    if scheme == Some("rediss") {
        // The crate builds its TLS config from rustls's process-wide provider; ours is ring
        // (an error only means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // The error text of the crate may quote the URL, password included: say what, not that.
    let info = url
        .into_connection_info()
        .map_err(|e| format!("--cluster: not a valid Redis URL ({:?})", e.kind()))?;
    // RESP2 always: the subscriber relies on RESP2 pub/sub replies (see subscriber.rs).
    let redis_settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP2);
    let info = info.set_redis_settings(redis_settings);
    redis::Client::open(info).map_err(|e| format!("--cluster: {:?}", e.kind()))
}
