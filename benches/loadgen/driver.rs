//! The event loop of one run: a single thread, one edge-triggered `mio::Poll`, connections in
//! a slab. Each turn it moves the run through its stages (ramp, warm-up, measured window,
//! closing, settle), opens the connections that are due, queues the sets that are due, flushes
//! every connection that has output once, then polls until the next deadline.
//! Sends follow the global schedule of `schedule`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Utf8Bytes;

use crate::config::{Config, VarOrder, CLOSE_GRACE};
use crate::conn::{io_kind, Conn, End, Outcome};
use crate::histogram::Histogram;
use crate::recv::{Clock, Counters, Receiver};
use crate::schedule::{Schedule, SetEncoder};
use crate::sysinfo::{self, CpuTimes};
use crate::tls::Stream;

/// Connections opened per turn at most, so that a zero ramp still lets events through.
const MAX_CONNECTS_PER_TURN: u32 = 256;
/// Sets queued per turn at most; the rest of what is due goes out on the next turn.
const MAX_SENDS_PER_TURN: u64 = 16_384;
/// Longest poll sleep, so stage deadlines are noticed even without traffic.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// The one read buffer all connections share: a read takes whatever the socket holds, up to
/// several coalesced frames, and the frames are processed before the next socket is read.
const READ_BUFFER: usize = 128 * 1024;
/// Tungstenite buffers outgoing frames up to this before writing on its own; we flush once
/// per turn anyway.
const WRITE_BUFFER: usize = 64 * 1024;
/// Beyond this much unsent data the server is not reading; further sets are dropped.
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// Counts of what happened to the connections of a run.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub attempted: u64,
    pub opened: u64,
    /// Connections that never opened, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Open connections that broke (I/O or protocol error), by reason.
    pub broken: BTreeMap<String, u64>,
    /// Open connections that ended in an orderly way before we started closing them.
    pub ended_early: u64,
    /// Connections able to send when the measured window ended.
    pub open_at_window_end: u64,
}

/// One server process's resource use, each reading None when /proc could not be read.
#[derive(Debug, Default)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu: Option<CpuTimes>,
    pub rss_before_kib: Option<u64>,
    pub rss_load_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

pub struct RunResult {
    pub rate: f64,
    pub room_prefix: String,
    pub conns: ConnStats,
    /// Length of the measured window; zero if the run never reached it.
    pub window: Duration,
    /// Counter deltas over the measured window.
    pub counters: Counters,
    pub latency: Histogram,
    pub unmatched_samples: u64,
    pub server_close_codes: BTreeMap<u16, u64>,
    /// One per `--server-pid`, in order.
    pub servers: Vec<ServerUsage>,
    pub own_cpu: CpuTimes,
    /// How far the send schedule fell behind at worst during the window.
    pub max_send_lag: Duration,
    pub aborted: Option<String>,
}

/// Runs one complete load run (connect, warm up, measure, close, settle) and reports it.
pub fn run(cfg: &Config, rate: f64, room_prefix: String, clock: Clock) -> RunResult {
    match Driver::new(cfg, rate, room_prefix, clock) {
        Ok(driver) => driver.run(),
        Err(e) => RunResult::failed_to_start(rate, format!("cannot create poll: {e}")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Ramp,
    Warmup { until: Instant },
    Measure { until: Instant },
    Closing { until: Instant },
    Settle { until: Instant },
    Done,
}

/// Counter and CPU readings at one edge of the measured window.
#[derive(Clone)]
struct Marks {
    at: Instant,
    counters: Counters,
    own_cpu: CpuTimes,
    /// One per server process, in the order of `Driver::servers`.
    server_cpu: Vec<Option<CpuTimes>>,
}

struct Client {
    key: Option<usize>,
    next_var: u32,
}

struct Driver<'a> {
    cfg: &'a Config,
    rate: f64,
    room_prefix: String,
    ws_config: WebSocketConfig,
    read_buf: Box<[u8]>,
    clock: Clock,
    poll: Poll,
    conns: Slab<Conn>,
    clients: Vec<Client>,
    rx: Receiver,
    schedule: Option<Schedule>,
    encoder: SetEncoder,
    flush_list: Vec<usize>,
    backlog: Vec<usize>,
    backlog_spare: Vec<usize>,
    stage: Stage,
    start: Instant,
    hard_deadline: Instant,
    next_connect: u32,
    /// Connections started but neither open nor failed yet.
    unresolved: u32,
    stats: ConnStats,
    window_start: Option<Marks>,
    window_end: Option<Marks>,
    max_send_lag: Duration,
    servers: Vec<ServerUsage>,
    aborted: Option<String>,
}

impl<'a> Driver<'a> {
    fn new(cfg: &'a Config, rate: f64, room_prefix: String, clock: Clock) -> std::io::Result<Self> {
        let start = Instant::now();
        let n = cfg.connections();
        // Tungstenite only writes here (reading goes through `frames`), so it needs no read
        // buffer of its own.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(0)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER);
        let servers = cfg
            .server_pids
            .iter()
            .map(|&pid| ServerUsage {
                pid,
                rss_before_kib: sysinfo::process_rss_kib(pid),
                ..ServerUsage::default()
            })
            .collect();
        Ok(Driver {
            cfg,
            rate,
            room_prefix,
            ws_config,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            clock,
            poll: Poll::new()?,
            conns: Slab::with_capacity(n as usize),
            // Round-robin clients start at different variables; starting them all at v0 would
            // have a whole room write the same variable at the same moment, which a coalescing
            // server folds into one update.
            clients: (0..n)
                .map(|i| Client {
                    key: None,
                    next_var: i % cfg.vars,
                })
                .collect(),
            rx: Receiver::new(clock, cfg.sample_every),
            schedule: (!cfg.silent).then(|| Schedule::new(start, rate, cfg.rooms, cfg.clients)),
            encoder: SetEncoder::new(cfg.vars),
            flush_list: Vec::with_capacity(n as usize),
            backlog: Vec::new(),
            backlog_spare: Vec::new(),
            stage: Stage::Ramp,
            start,
            hard_deadline: start + cfg.time_limit,
            next_connect: 0,
            unresolved: 0,
            stats: ConnStats::default(),
            window_start: None,
            window_end: None,
            max_send_lag: Duration::ZERO,
            servers,
            aborted: None,
        })
    }

    fn run(mut self) -> RunResult {
        let mut events = Events::with_capacity(1024);
        loop {
            self.advance_stages(Instant::now());
            if self.stage == Stage::Done {
                break;
            }
            self.open_due_connections(Instant::now());
            self.send_due_sets();
            self.flush_queued();
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.abort(Instant::now(), format!("poll failed: {e}"));
                }
            }
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed();
                self.on_ready(event.token().0, readable, writable);
            }
            self.revisit_backlog();
        }
        self.into_result()
    }

    // ----- stages -----

    fn advance_stages(&mut self, now: Instant) {
        if now >= self.hard_deadline && self.stage_before_closing() {
            self.abort(now, "time limit reached".into());
        }
        while self.next_stage(now) {}
    }

    fn stage_before_closing(&self) -> bool {
        matches!(
            self.stage,
            Stage::Ramp | Stage::Warmup { .. } | Stage::Measure { .. }
        )
    }

    /// Moves to the next stage if the current one is over; true if it did.
    fn next_stage(&mut self, now: Instant) -> bool {
        match self.stage {
            Stage::Ramp => {
                let ramp_end = self.start + self.cfg.ramp;
                let all_started = self.next_connect == self.cfg.connections();
                if all_started && self.unresolved == 0 && self.stats.opened == 0 {
                    self.abort(now, "no connection could be opened".into());
                } else if all_started && self.unresolved == 0 && now >= ramp_end {
                    self.stage = Stage::Warmup {
                        until: now + self.cfg.warmup,
                    };
                } else if now >= ramp_end + self.cfg.connect_timeout {
                    self.time_out_unopened();
                    self.stage = Stage::Warmup {
                        until: now + self.cfg.warmup,
                    };
                } else {
                    return false;
                }
            }
            Stage::Warmup { until } if now >= until => self.begin_measuring(now),
            Stage::Measure { until } if now >= until => {
                self.end_measuring(now);
                self.begin_closing(now);
            }
            Stage::Closing { until } if now >= until || self.conns.is_empty() => {
                self.drop_all_connections();
                self.stage = Stage::Settle {
                    until: now + self.cfg.settle,
                };
            }
            Stage::Settle { until } if now >= until => {
                for server in &mut self.servers {
                    server.rss_after_kib = sysinfo::process_rss_kib(server.pid);
                }
                self.stage = Stage::Done;
            }
            _ => return false,
        }
        true
    }

    fn abort(&mut self, now: Instant, reason: String) {
        if self.aborted.is_none() {
            self.aborted = Some(reason);
        }
        if matches!(self.stage, Stage::Measure { .. }) {
            self.end_measuring(now);
        }
        if self.stage_before_closing() {
            self.begin_closing(now);
        }
    }

    fn marks(&self, at: Instant) -> Marks {
        Marks {
            at,
            counters: self.rx.counters,
            own_cpu: sysinfo::own_cpu(),
            server_cpu: self
                .servers
                .iter()
                .map(|s| sysinfo::process_cpu(s.pid))
                .collect(),
        }
    }

    fn begin_measuring(&mut self, now: Instant) {
        self.window_start = Some(self.marks(now));
        self.rx.start_measuring(now);
        self.max_send_lag = Duration::ZERO;
        self.stage = Stage::Measure {
            until: now + self.cfg.duration,
        };
    }

    fn end_measuring(&mut self, now: Instant) {
        self.window_end = Some(self.marks(now));
        self.rx.stop_measuring();
        self.stats.open_at_window_end =
            self.conns.iter().filter(|(_, c)| c.can_send()).count() as u64;
        for server in &mut self.servers {
            server.rss_load_kib = sysinfo::process_rss_kib(server.pid);
        }
    }

    fn begin_closing(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.conns[key].begin_close() {
                Ok(()) => self.queue_flush(key),
                Err(end) => self.remove_conn(key, end),
            }
        }
        self.stage = Stage::Closing {
            until: now + CLOSE_GRACE,
        };
    }

    fn time_out_unopened(&mut self) {
        let stuck: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.opened)
            .map(|(key, _)| key)
            .collect();
        for key in stuck {
            self.remove_conn(key, End::ConnectFailed("timeout".into()));
        }
    }

    fn drop_all_connections(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove_conn(key, End::Closed);
        }
    }

    // ----- connections -----

    fn open_due_connections(&mut self, now: Instant) {
        if self.stage != Stage::Ramp {
            return;
        }
        let n = self.cfg.connections();
        let due = if self.cfg.ramp.is_zero() {
            n
        } else {
            let progress =
                now.duration_since(self.start).as_secs_f64() / self.cfg.ramp.as_secs_f64();
            ((progress * f64::from(n)) as u64 + 1).min(u64::from(n)) as u32
        };
        let due = due.min(self.next_connect + MAX_CONNECTS_PER_TURN);
        while self.next_connect < due {
            self.open_connection(self.next_connect);
            self.next_connect += 1;
        }
    }

    fn next_connect_at(&self) -> Option<Instant> {
        let n = self.cfg.connections();
        (self.stage == Stage::Ramp && self.next_connect < n).then(|| {
            self.start
                + self
                    .cfg
                    .ramp
                    .mul_f64(f64::from(self.next_connect) / f64::from(n))
        })
    }

    fn open_connection(&mut self, client: u32) {
        self.stats.attempted += 1;
        let target = self.cfg.target_of(client);
        let stream = match TcpStream::connect(target.addr) {
            Ok(stream) if target.tls => Stream::tls(stream),
            Ok(stream) => Ok(Stream::Plain(stream)),
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => return self.count_failure(format!("connect: {}", io_kind(&e))),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            return self.count_failure(format!("register: {}", io_kind(&e)));
        }
        entry.insert(Conn::new(client, stream));
        self.clients[client as usize].key = Some(key);
        self.unresolved += 1;
    }

    fn count_failure(&mut self, reason: String) {
        *self.stats.failed.entry(reason).or_insert(0) += 1;
    }

    fn on_ready(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let target = self.cfg.target_of(conn.client);
        let outcome = conn.on_ready(
            readable,
            writable,
            &mut self.read_buf,
            target,
            self.ws_config,
            &mut self.rx,
        );
        self.apply(key, outcome);
    }

    fn apply(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Idle => {}
            Outcome::Opened => self.on_opened(key),
            Outcome::Progress { flush, more } => {
                if flush {
                    self.queue_flush(key);
                }
                if more {
                    self.backlog.push(key);
                }
            }
            Outcome::Ended(end) => self.remove_conn(key, end),
        }
    }

    /// Joins the room with a Scratch handshake as soon as the WebSocket is open.
    fn on_opened(&mut self, key: usize) {
        self.stats.opened += 1;
        self.unresolved -= 1;
        let client = self.conns[key].client;
        let room = client / self.cfg.clients;
        let member = client % self.cfg.clients;
        let handshake = format!(
            "{{\"method\":\"handshake\",\"project_id\":\"{}{room:06}\",\"user\":\"lg{room}x{member}\"}}",
            self.room_prefix
        );
        let joining = self.stage_before_closing();
        let conn = &mut self.conns[key];
        let result = if joining {
            conn.send(Utf8Bytes::from(handshake)).map(|_| ())
        } else {
            conn.begin_close()
        };
        match result {
            Ok(()) => {
                self.queue_flush(key);
                // Bytes that came in with the upgrade response get no readiness event.
                self.backlog.push(key);
            }
            Err(end) => self.remove_conn(key, end),
        }
    }

    fn remove_conn(&mut self, key: usize, end: End) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.clients[conn.client as usize].key = None;
        if !conn.opened {
            self.unresolved -= 1;
        }
        let counter = match end {
            End::ConnectFailed(reason) => {
                Some((&mut self.stats.failed, format!("connect: {reason}")))
            }
            End::UpgradeFailed(reason) => {
                Some((&mut self.stats.failed, format!("upgrade: {reason}")))
            }
            End::Broken(reason) if conn.opened => Some((&mut self.stats.broken, reason)),
            End::Broken(reason) => Some((&mut self.stats.failed, reason)),
            End::Closed if !conn.opened => {
                Some((&mut self.stats.failed, "closed before open".to_string()))
            }
            End::Closed => {
                if self.stage_before_closing() {
                    self.stats.ended_early += 1;
                }
                None
            }
        };
        if let Some((map, reason)) = counter {
            *map.entry(reason).or_insert(0) += 1;
        }
        // Dropping the stream closes the socket, which also removes it from the poll.
        drop(conn);
    }

    fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.flush_list.push(key);
            }
        }
    }

    /// One flush per connection per turn: every set queued this turn leaves in one write.
    fn flush_queued(&mut self) {
        let mut list = std::mem::take(&mut self.flush_list);
        for &key in &list {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.flush_queued = false;
            if let Err(end) = conn.flush() {
                self.remove_conn(key, end);
            }
        }
        list.clear();
        self.flush_list = list;
    }

    /// Connections whose read budget ran out: edge triggering will not remind us of them.
    fn revisit_backlog(&mut self) {
        std::mem::swap(&mut self.backlog, &mut self.backlog_spare);
        let mut list = std::mem::take(&mut self.backlog_spare);
        for &key in &list {
            self.on_ready(key, true, false);
        }
        list.clear();
        self.backlog_spare = list;
    }

    // ----- sending -----

    fn sending(&self) -> bool {
        self.stage_before_closing()
    }

    fn send_due_sets(&mut self) {
        if !self.sending() {
            return;
        }
        let Some(schedule) = &mut self.schedule else {
            return;
        };
        let now = Instant::now();
        let due = schedule.due_until(now);
        if schedule.next >= due {
            return;
        }
        if matches!(self.stage, Stage::Measure { .. }) {
            let lag = now.saturating_duration_since(schedule.time_of(schedule.next));
            self.max_send_lag = self.max_send_lag.max(lag);
        }
        // A starved generator would otherwise catch up with a burst that measures nothing
        // but the burst; give up on what is more than a second late and say so.
        let too_late = due.saturating_sub(schedule.sends_per_second());
        if schedule.next < too_late {
            self.rx.counters.sends_skipped += too_late - schedule.next;
            schedule.next = too_late;
        }
        let first = schedule.next;
        let end = due.min(first + MAX_SENDS_PER_TURN);
        schedule.next = end;
        let now_us = self.clock.micros(now);
        for seq in first..end {
            let client = schedule.client_of(seq);
            let slot = &mut self.clients[client];
            let Some(key) = slot.key else {
                continue;
            };
            if !self.conns[key].can_send() {
                continue;
            }
            let var = match self.cfg.var_order {
                VarOrder::RoundRobin => {
                    let var = slot.next_var;
                    slot.next_var = (var + 1) % self.cfg.vars;
                    var
                }
                VarOrder::Random => self.encoder.random_var(),
            };
            self.encoder.push(client as u32, var, now_us);
        }
        self.hand_out_batch();
    }

    fn hand_out_batch(&mut self) {
        let (batch, mut pending) = self.encoder.take_batch();
        for set in pending.drain(..) {
            let Some(key) = self.clients[set.client as usize].key else {
                continue;
            };
            let Ok(text) = Utf8Bytes::try_from(batch.slice(set.start..set.end)) else {
                continue;
            };
            match self.conns[key].send(text) {
                Ok(true) => {
                    self.rx.counters.sets_sent += 1;
                    self.queue_flush(key);
                }
                Ok(false) => self.rx.counters.sends_dropped += 1,
                Err(end) => self.remove_conn(key, end),
            }
        }
        self.encoder.give_back(pending);
    }

    // ----- timing and result -----

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.backlog.is_empty() || self.cfg.busy_poll {
            return Duration::ZERO;
        }
        let stage_deadline = match self.stage {
            Stage::Ramp => self.start + self.cfg.ramp + self.cfg.connect_timeout,
            Stage::Warmup { until }
            | Stage::Measure { until }
            | Stage::Closing { until }
            | Stage::Settle { until } => until,
            Stage::Done => now,
        };
        let next_send = self
            .schedule
            .as_ref()
            .filter(|_| self.sending())
            .map(|s| s.time_of(s.next));
        [
            Some(stage_deadline),
            Some(self.hard_deadline),
            next_send,
            self.next_connect_at(),
        ]
        .into_iter()
        .flatten()
        .fold(now + MAX_SLEEP, Instant::min)
        .saturating_duration_since(now)
    }

    fn into_result(mut self) -> RunResult {
        let (window, counters, own_cpu, server_cpu) =
            match (self.window_start.take(), self.window_end.take()) {
                (Some(a), Some(b)) => (
                    b.at.duration_since(a.at),
                    b.counters.since(a.counters),
                    b.own_cpu.since(a.own_cpu),
                    a.server_cpu
                        .iter()
                        .zip(&b.server_cpu)
                        .map(|(a, b)| a.zip(*b).map(|(a, b)| b.since(a)))
                        .collect(),
                ),
                _ => (
                    Duration::ZERO,
                    Counters::default(),
                    CpuTimes::default(),
                    Vec::new(),
                ),
            };
        for (server, cpu) in self.servers.iter_mut().zip(server_cpu) {
            server.cpu = cpu;
        }
        RunResult {
            rate: self.rate,
            room_prefix: self.room_prefix,
            conns: self.stats,
            window,
            counters,
            latency: self.rx.latency,
            unmatched_samples: self.rx.unmatched_samples,
            server_close_codes: self.rx.server_close_codes,
            servers: self.servers,
            own_cpu,
            max_send_lag: self.max_send_lag,
            aborted: self.aborted,
        }
    }
}

impl RunResult {
    fn failed_to_start(rate: f64, reason: String) -> Self {
        RunResult {
            rate,
            room_prefix: String::new(),
            conns: ConnStats::default(),
            window: Duration::ZERO,
            counters: Counters::default(),
            latency: Histogram::new(),
            unmatched_samples: 0,
            server_close_codes: BTreeMap::new(),
            servers: Vec::new(),
            own_cpu: CpuTimes::default(),
            max_send_lag: Duration::ZERO,
            aborted: Some(reason),
        }
    }
}
