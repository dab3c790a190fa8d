//! The command thread: owns one Redis connection and answers the loop's rounds, one pipeline
//! (one round trip) each; keeps this node's heartbeat alive; reconnects with backoff.
//!
//! A round's pipeline is, in order: the heartbeat (when due, so that this node's member
//! counts below count), one `WRITE` script call per room of the batch, one `LOAD` per room to
//! read, one `MEMBERS` per member count. While Redis is unreachable every round is answered at
//! once as failed; the loop keeps its changes as state and sends their latest values later.
//! The HTTP API's reads come on the same channel and are answered in turn (one command each:
//! `LRANGE` of the history list, or `LOAD` for the variables), so a read sent after a round
//! sees what the round wrote and its answer reaches the loop after the round's.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use redis::{Client, Connection, Value};

use super::keys::{self, apply_meta, decode_variable, encode_meta, encode_value};
use super::retry::Backoff;
use super::scripts::{LuaScript, Scripts};
use super::{ClusterSettings, Event, Request, RoomState, Round, RoundResult, SharedStats};
use crate::admin::bans::{Ban, Block, Change};
use crate::admin::control::{Control, ControlMessage};
use crate::engine::history_codec;
use crate::engine::{HistoryEntry, ReadRequest, StoredRead};
use crate::error_log::ErrorLog;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one round (or heartbeat) may wait for Redis before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The heartbeat is refreshed this often; it expires after [`HEARTBEAT_TTL_SECONDS`].
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
const HEARTBEAT_TTL_SECONDS: u64 = 15;

/// One entry of a round's pipeline, to read its reply.
#[derive(Clone, Copy)]
enum Op {
    Heartbeat,
    /// Index into `round.batch.rooms`.
    Write(usize),
    /// Index into `round.loads`.
    Load(usize),
    /// Index into `round.members`.
    Members(usize),
}

pub struct CommandThread {
    client: Client,
    settings: ClusterSettings,
    scripts: Scripts,
    connection: Option<Connection>,
    last_heartbeat: Instant,
    next_attempt: Instant,
    backoff: Backoff,
    /// An outage has been announced and Redis has not answered since.
    in_outage: bool,
    /// Rooms where this node has a member entry (removed at shutdown).
    reported: HashSet<Box<str>>,
    events: SyncSender<Event>,
    waker: Arc<mio::Waker>,
    shared: Arc<SharedStats>,
    errors: ErrorLog,
}

impl CommandThread {
    pub fn new(
        client: Client,
        settings: ClusterSettings,
        events: SyncSender<Event>,
        waker: Arc<mio::Waker>,
        shared: Arc<SharedStats>,
    ) -> Self {
        let now = Instant::now();
        CommandThread {
            client,
            settings,
            scripts: Scripts::new(),
            connection: None,
            last_heartbeat: now,
            next_attempt: now,
            backoff: Backoff::default(),
            in_outage: false,
            reported: HashSet::new(),
            events,
            waker,
            shared,
            errors: ErrorLog::new("cluster: redis commands"),
        }
    }

    /// Serves rounds until the loop drops its sender; then says goodbye to Redis.
    pub fn run(mut self, requests: Receiver<Request>) {
        self.connect();
        loop {
            let now = Instant::now();
            let wait = match self.connection {
                Some(_) => (self.last_heartbeat + HEARTBEAT_PERIOD).saturating_duration_since(now),
                None => self.next_attempt.saturating_duration_since(now),
            };
            match requests.recv_timeout(wait) {
                Ok(request) => {
                    if self.connection.is_none() && Instant::now() >= self.next_attempt {
                        self.connect();
                    }
                    let event = match request {
                        Request::Control(control, answer) => {
                            let done = self.control(control);
                            match answer {
                                Some(id) => Event::ControlDone(id, done),
                                None => continue,
                            }
                        }
                        Request::ReadBans => {
                            self.read_bans();
                            continue;
                        }
                        Request::Round(round) => Event::RoundDone(self.round(round)),
                        Request::Read(id, read) => Event::Read(id, self.read(read)),
                    };
                    if !self.emit(event) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => match self.connection {
                    Some(_) => self.heartbeat(),
                    None => self.connect(),
                },
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.farewell();
    }

    fn emit(&self, event: Event) -> bool {
        let sent = self.events.send(event).is_ok();
        let _ = self.waker.wake();
        sent
    }

    fn connect(&mut self) {
        match self.open() {
            Ok(connection) => {
                self.connection = Some(connection);
                self.last_heartbeat = Instant::now();
                self.backoff.reset();
                self.shared.set_connected(true);
                self.read_bans();
                if self.in_outage {
                    self.in_outage = false;
                    info!("cluster: redis answers again");
                    self.emit(Event::Restored);
                }
            }
            Err(e) => self.lost(&e),
        }
    }

    /// A fresh connection with the scripts loaded and the heartbeat set.
    fn open(&self) -> redis::RedisResult<Connection> {
        let mut connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        self.scripts.load_into(&mut connection)?;
        heartbeat_command(&self.settings.node_id).exec(&mut connection)?;
        Ok(connection)
    }

    fn lost(&mut self, error: &redis::RedisError) {
        let was_connected = self.connection.take().is_some();
        self.errors.log(Instant::now(), error);
        // A connection that broke is not yet an outage: Redis may answer a new one at once
        // (the round that failed is sent again by the engine, as state).
        if was_connected {
            if let Ok(connection) = self.open() {
                self.connection = Some(connection);
                self.last_heartbeat = Instant::now();
                self.read_bans();
                return;
            }
        }
        self.next_attempt = Instant::now() + self.backoff.next_delay();
        self.shared.set_connected(false);
        if !self.in_outage {
            self.in_outage = true;
            self.emit(Event::Outage);
        }
    }

    fn heartbeat(&mut self) {
        let Some(connection) = &mut self.connection else {
            return;
        };
        match heartbeat_command(&self.settings.node_id).exec(connection) {
            Ok(()) => self.last_heartbeat = Instant::now(),
            Err(e) => self.lost(&e),
        }
    }

    /// Runs a round: one pipeline, retried once if Redis lost the scripts.
    fn round(&mut self, round: Round) -> RoundResult {
        if self.connection.is_none() {
            // Not an error of its own: the outage is announced and the reconnects keep their
            // pace.
            return failed(round);
        }
        let started = Instant::now();
        let mut ops = Vec::new();
        if started.saturating_duration_since(self.last_heartbeat) >= HEARTBEAT_PERIOD {
            ops.push(Op::Heartbeat);
        }
        ops.extend((0..round.batch.rooms.len()).map(Op::Write));
        ops.extend((0..round.loads.len()).map(Op::Load));
        ops.extend((0..round.members.len()).map(Op::Members));
        let mut replies = match self.exchange(&round, &ops) {
            Ok(replies) => replies,
            Err(e) => {
                self.lost(&e);
                return failed(round);
            }
        };
        if replies.len() != ops.len() {
            let e = redis::RedisError::from((redis::ErrorKind::Client, "reply count mismatch"));
            self.lost(&e);
            return failed(round);
        }
        let retry: Vec<Op> = ops
            .iter()
            .zip(&replies)
            .filter(|(_, reply)| is_noscript(reply))
            .map(|(&op, _)| op)
            .collect();
        if !retry.is_empty() {
            // Redis restarted or flushed its scripts: nothing of those calls ran.
            let reloaded = match &mut self.connection {
                Some(connection) => self.scripts.load_into(connection),
                None => Ok(()),
            };
            match reloaded.and_then(|()| self.exchange(&round, &retry)) {
                Ok(answers) => {
                    let slots = replies.iter_mut().filter(|reply| is_noscript(reply));
                    for (slot, answer) in slots.zip(answers) {
                        *slot = answer;
                    }
                }
                Err(e) => {
                    self.lost(&e);
                    return failed(round);
                }
            }
        }
        let round_trip = started.elapsed();
        if ops.iter().any(|op| matches!(op, Op::Heartbeat)) {
            self.last_heartbeat = started;
        }
        let result = self.read_replies(round, &ops, replies);
        self.shared.count_round(round_trip, &result);
        result
    }

    /// Sends the pipeline for `ops` and reads one reply per op; stops at the first error of the
    /// connection (a server error is a reply).
    fn exchange(&mut self, round: &Round, ops: &[Op]) -> redis::RedisResult<Vec<Value>> {
        let Some(connection) = &mut self.connection else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            )));
        };
        let mut pipe = redis::pipe();
        let node = &*self.settings.node_id;
        let retention = self.settings.retention.map_or(0, |r| r.as_secs().max(1));
        let history = self.settings.history;
        for op in ops {
            match *op {
                Op::Heartbeat => {
                    pipe.add_command(heartbeat_command(node));
                }
                Op::Write(i) => {
                    let Some(changes) = round.batch.rooms.get(i) else {
                        continue;
                    };
                    let call = evalsha(&mut pipe, &self.scripts.write);
                    let room = &changes.room;
                    // With history off, entries are neither recorded nor trimmed.
                    let entries = if history > 0 {
                        &changes.history[..]
                    } else {
                        &[]
                    };
                    call.arg(4)
                        .arg(keys::vars_key(room))
                        .arg(keys::meta_key(room))
                        .arg(keys::version_key(room))
                        .arg(keys::history_key(room))
                        .arg(keys::channel(room))
                        .arg(node)
                        .arg(changes.local_version())
                        .arg(u8::from(changes.replace_all))
                        .arg(retention)
                        .arg(changes.seeds.len())
                        .arg(history)
                        .arg(entries.len());
                    for variable in changes.variables.iter().chain(&changes.seeds) {
                        call.arg(&*variable.name)
                            .arg(encode_value(variable))
                            .arg(encode_meta(variable));
                    }
                    for entry in entries {
                        call.arg(history_codec::encode(entry));
                    }
                }
                Op::Load(i) => {
                    let Some(room) = round.loads.get(i) else {
                        continue;
                    };
                    pipe.add_command(load_command(&self.scripts.load, room));
                }
                Op::Members(i) => {
                    let Some((room, count)) = round.members.get(i) else {
                        continue;
                    };
                    evalsha(&mut pipe, &self.scripts.members)
                        .arg(1)
                        .arg(keys::members_key(room))
                        .arg(node)
                        .arg(*count)
                        .arg(keys::HEARTBEAT_PREFIX);
                }
            }
        }
        let count = pipe.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        connection.send_packed_command(&pipe.get_packed_pipeline())?;
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            replies.push(connection.recv_response()?);
        }
        Ok(replies)
    }

    fn read_replies(&mut self, round: Round, ops: &[Op], replies: Vec<Value>) -> RoundResult {
        let mut result = RoundResult {
            saved: true,
            ..RoundResult::default()
        };
        for (op, reply) in ops.iter().zip(replies) {
            match *op {
                Op::Heartbeat => {}
                Op::Write(_) => {
                    if let Value::ServerError(e) = reply {
                        self.errors
                            .log(Instant::now(), &format!("applying a batch: {e:?}"));
                        result.saved = false;
                    }
                }
                Op::Load(i) => {
                    let Some(room) = round.loads.get(i) else {
                        continue;
                    };
                    match room_state(room, reply) {
                        Some(state) => result.loaded.push(state),
                        None => {
                            self.errors
                                .log(Instant::now(), &format!("reading room {room:?}: bad reply"));
                            result.load_failed.push(room.clone());
                        }
                    }
                }
                Op::Members(i) => {
                    let Some((room, count)) = round.members.get(i) else {
                        continue;
                    };
                    if let Value::Int(total) = reply {
                        if *count == 0 {
                            self.reported.remove(room);
                        } else {
                            self.reported.insert(room.clone());
                        }
                        let total = u32::try_from(total.max(0)).unwrap_or(u32::MAX);
                        result.member_totals.push((room.clone(), total));
                    } else {
                        self.errors.log(
                            Instant::now(),
                            &format!("counting members of {room:?}: {reply:?}"),
                        );
                    }
                }
            }
        }
        result.batch = round.batch;
        result
    }

    /// Answers a read of the HTTP API with one command; `Failed` when Redis cannot be asked
    /// or its answer is not what it should be.
    fn read(&mut self, read: ReadRequest) -> StoredRead {
        let (cmd, room) = match &read {
            // The admin API lists only the rooms in memory in a cluster.
            ReadRequest::Rooms { .. } => return StoredRead::Rooms(Vec::new()),
            ReadRequest::History { room, newest, .. } => {
                let mut cmd = redis::cmd("LRANGE");
                let last = i64::try_from(*newest).unwrap_or(i64::MAX).saturating_sub(1);
                cmd.arg(keys::history_key(room)).arg(0).arg(last);
                (cmd, room)
            }
            ReadRequest::Variables { room } => (load_command(&self.scripts.load, room), room),
        };
        let mut reply = self.ask(&cmd);
        if matches!(&reply, Ok(reply) if is_noscript(reply)) {
            // Redis restarted or flushed its scripts: load them and ask once more.
            reply = match &mut self.connection {
                Some(connection) => self.scripts.load_into(connection),
                None => Ok(()),
            }
            .and_then(|()| self.ask(&cmd));
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                if self.connection.is_some() {
                    self.lost(&e);
                }
                return StoredRead::Failed;
            }
        };
        let answer = match read {
            ReadRequest::History { .. } => history_entries(reply).map(StoredRead::History),
            ReadRequest::Variables { .. } => {
                room_state(room, reply).map(|state| StoredRead::Variables(state.variables))
            }
            ReadRequest::Rooms { .. } => Some(StoredRead::Rooms(Vec::new())),
        };
        answer.unwrap_or_else(|| {
            self.errors.log(
                Instant::now(),
                &format!("reading {room:?} for a query: bad reply"),
            );
            StoredRead::Failed
        })
    }

    /// Writes an admin action's change to its hash and publishes it for every node, in one
    /// transaction; logged when Redis cannot take it. Returns whether Redis took it.
    fn control(&mut self, control: Control) -> bool {
        let message = ControlMessage {
            node: self.settings.node_id.to_string(),
            control,
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &message.control {
            Control::Change(Change::Ban(ban)) => {
                pipe.hset(keys::BANS_KEY, ban.id, ban.to_json().to_string())
                    .ignore();
            }
            Control::Change(Change::Lift(id)) => {
                pipe.hdel(keys::BANS_KEY, *id).ignore();
            }
            Control::Change(Change::Block(block)) => {
                pipe.hset(
                    keys::BLOCKS_KEY,
                    &block.project,
                    block.to_json().to_string(),
                )
                .ignore();
            }
            Control::Change(Change::Unblock(project)) => {
                pipe.hdel(keys::BLOCKS_KEY, project).ignore();
            }
            Control::Kick { .. } => {}
        }
        pipe.publish(keys::CONTROL_CHANNEL, message.encode())
            .ignore();
        let Some(connection) = &mut self.connection else {
            self.errors.log(
                Instant::now(),
                &"an admin action was not sent to the other nodes: redis is unreachable",
            );
            return false;
        };
        match pipe.exec(connection) {
            Ok(()) => true,
            Err(e) => {
                self.lost(&e);
                false
            }
        }
    }

    /// Reads the bans and blocks Redis holds and hands them to the loop; expired ones are
    /// deleted from their hashes on the way, so the hashes stay as small as the books.
    fn read_bans(&mut self) {
        let Some(connection) = &mut self.connection else {
            return;
        };
        let now_ms = unix_ms();
        let read = redis::pipe()
            .hgetall(keys::BANS_KEY)
            .hgetall(keys::BLOCKS_KEY)
            .query::<(Vec<(String, String)>, Vec<(String, String)>)>(connection);
        let (ban_fields, block_fields) = match read {
            Ok(read) => read,
            Err(e) => {
                self.errors.log(Instant::now(), &e);
                return;
            }
        };
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
        let mut expired = redis::pipe();
        // Entries that do not read back as sound ones are dropped from the hashes too (they
        // could never be applied), with a warning.
        let mut malformed = 0usize;
        let mut bans = Vec::new();
        for (field, text) in ban_fields {
            match parse(&text).as_ref().and_then(Ban::from_json) {
                Some(ban) if ban.until_ms > now_ms => bans.push(ban),
                found => {
                    malformed += usize::from(found.is_none());
                    expired.hdel(keys::BANS_KEY, field).ignore();
                }
            }
        }
        let mut blocks = Vec::new();
        for (field, text) in block_fields {
            match parse(&text).as_ref().and_then(Block::from_json) {
                Some(block) if block.until_ms.is_none_or(|until| until > now_ms) => {
                    blocks.push(block)
                }
                found => {
                    malformed += usize::from(found.is_none());
                    expired.hdel(keys::BLOCKS_KEY, field).ignore();
                }
            }
        }
        if malformed > 0 {
            log::warn!("cluster: {malformed} malformed bans or blocks in redis were dropped");
        }
        bans.sort_by_key(|ban| ban.id);
        if let Err(e) = expired.exec(connection) {
            self.errors.log(Instant::now(), &e);
        }
        self.emit(Event::Bans(bans, blocks));
    }

    /// One command's reply (a server error is a reply); an error when Redis cannot be asked.
    fn ask(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        let Some(connection) = &mut self.connection else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            )));
        };
        connection.send_packed_command(&cmd.get_packed_command())?;
        connection.recv_response()
    }

    /// At shutdown: this node's member entries and heartbeat go, so other nodes stop counting
    /// its members at once rather than when the heartbeat expires.
    fn farewell(&mut self) {
        let Some(connection) = &mut self.connection else {
            return;
        };
        let node = &*self.settings.node_id;
        let mut pipe = redis::pipe();
        for room in &self.reported {
            pipe.cmd("HDEL")
                .arg(keys::members_key(room))
                .arg(node)
                .ignore();
        }
        pipe.cmd("DEL").arg(keys::heartbeat_key(node)).ignore();
        if let Err(e) = pipe.exec(connection) {
            self.errors.log(Instant::now(), &e);
        }
    }
}

fn heartbeat_command(node: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(keys::heartbeat_key(node))
        .arg(1)
        .arg("EX")
        .arg(HEARTBEAT_TTL_SECONDS);
    cmd
}

/// `LOAD` of `room`: its version, variables and their writers.
fn load_command(script: &LuaScript, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(&script.sha)
        .arg(3)
        .arg(keys::vars_key(room))
        .arg(keys::meta_key(room))
        .arg(keys::version_key(room));
    cmd
}

fn evalsha<'a>(pipe: &'a mut redis::Pipeline, script: &LuaScript) -> &'a mut redis::Pipeline {
    pipe.cmd("EVALSHA").arg(&script.sha)
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript))
}

/// The answer when Redis could not be asked: nothing saved, nothing loaded.
fn failed(round: Round) -> RoundResult {
    RoundResult {
        batch: round.batch,
        saved: false,
        loaded: Vec::new(),
        load_failed: round.loads,
        member_totals: Vec::new(),
    }
}

/// A `LOAD` reply: `[version, [name, value, …], [name, meta, …]]`.
fn room_state(room: &str, reply: Value) -> Option<RoomState> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let mut parts = parts.into_iter();
    let (Some(Value::Int(version)), Some(hash), Some(metas), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let mut variables = Vec::new();
    for (name, stored) in pairs(hash)? {
        // A value this node cannot read is skipped, not the whole room.
        if let Some(variable) = decode_variable(&name, &stored) {
            variables.push(variable);
        }
    }
    // Variables written before writers were kept have none (unknown writer, time 0). In name
    // order, to find each writer's variable.
    variables.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for (name, meta) in pairs(metas)? {
        let found = std::str::from_utf8(&name)
            .ok()
            .and_then(|name| variables.binary_search_by(|v| (*v.name).cmp(name)).ok());
        if let Some(variable) = found.and_then(|i| variables.get_mut(i)) {
            apply_meta(variable, &meta);
        }
    }
    Some(RoomState {
        room: room.into(),
        version: u64::try_from(version).unwrap_or(0),
        variables,
    })
}

/// The field/value pairs of a `HGETALL` reply; `None` when it is not one.
fn pairs(hash: Value) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let entries = match hash {
        Value::Array(entries) => entries,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let mut pairs = Vec::with_capacity(entries.len() / 2);
    let mut entries = entries.into_iter();
    while let (Some(name), Some(stored)) = (entries.next(), entries.next()) {
        let (Value::BulkString(name), Value::BulkString(stored)) = (name, stored) else {
            return None;
        };
        pairs.push((name, stored));
    }
    Some(pairs)
}

/// An `LRANGE` reply of a history list: its entries, newest first (those not ours skipped).
fn history_entries(reply: Value) -> Option<Vec<HistoryEntry>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::BulkString(stored) = item else {
            return None;
        };
        entries.extend(history_codec::decode(&stored));
    }
    Some(entries)
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
