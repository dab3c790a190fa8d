//! The event loop: one thread, one `mio::Poll`, connections in a slab.
//!
//! Each iteration waits for readiness (or the next deadline: a room's pace, housekeeping),
//! hands each ready connection to its state machine, flushes the rooms the engine says are due
//! (one frame per connection with news, one write each), runs once-a-second housekeeping
//! (deadlines, pings, room expiry), and removes finished connections. SIGINT/SIGTERM close every
//! client with 1001 and end the loop.
//! SIGHUP reloads the configuration and the TLS certificate. A listener is plain or TLS: a TLS
//! listener wraps each accepted socket in a [`TlsStream`] with the certificate current at
//! accept time.

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::admission::{AdminListener, Ask};
use super::api::ApiState;
use super::conn::{Conn, Status};
use super::loop_context::{ConnSettings, LoopContext};
use super::per_ip::PerIp;
use super::socket::Socket;
use super::tls::TlsStream;
use super::tls_config::TlsSetup;
use super::write_budget::TurnBudget;
use crate::dialect::json::JsonParser;
use crate::dialect::{Need, Reason, Reconnects, Users};
use crate::engine::{ClientId, Engine};
use crate::metrics::{self, Metrics, Snapshot};
use crate::policy::Policy;
use followups::Followups;

mod admin;
mod admin_bans;
mod admin_json;
mod admin_rooms;
pub(super) mod durable;
mod followups;
mod projects;
mod queries;
mod query_json;
mod reload;
mod renders;
mod setup;

use durable::Durable;
use reload::Reload;
pub use setup::{BoundAddress, StartError};

const SIGNALS: Token = Token(usize::MAX - 2);
/// The storage thread's answers are waiting.
const STORE: Token = Token(usize::MAX - 3);
/// SIGHUP: reopen log files, re-read the configuration.
const RELOAD: Token = Token(usize::MAX - 4);
/// `--metrics-listen`.
const METRICS_LISTENER: Token = Token(usize::MAX - 5);
/// The `--listen` listener, then the `--tls-listen` one, then the `--admin-listen` one.
const LISTENERS: [Token; 3] = [
    Token(usize::MAX - 1),
    Token(usize::MAX - 6),
    Token(usize::MAX - 8),
];
/// The Redis threads have something to report.
const CLUSTER: Token = Token(usize::MAX - 7);
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);
/// Connections beyond the maximum that are still accepted, to be told 4003 instead of hanging.
const OVERFLOW_SLOTS: usize = 64;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How far the connection count must fall before freed memory is handed back.
const TRIM_AFTER_DROP: usize = 1000;
/// Old log files are looked for this often (and at start).
const LOG_PRUNE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// How long a replaced connection stays open after being told, so it reads why before the close.
const REPLACED_GRACE: Duration = Duration::from_millis(500);
/// Most connections accepted in one turn of the loop; the rest wait for the next turn, after
/// every ready connection and the tick had theirs.
const ACCEPTS_PER_TURN: usize = 32;
/// Least time between two warnings about one kind of refusal.
const WARN_EVERY: Duration = Duration::from_secs(10);

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

struct Bound {
    listener: Listener,
    tls: bool,
    /// Whether it answers admin paths (a loopback address, or `--admin-listen`).
    admin: AdminListener,
}

struct Entry {
    conn: Conn<Socket>,
    generation: u32,
}

pub struct Server {
    poll: Poll,
    listeners: Vec<Bound>,
    signals: mio::net::UnixStream,
    hangups: mio::net::UnixStream,
    metrics_listener: Option<TcpListener>,
    /// How to read the configuration again at SIGHUP, and what it said last time.
    reload: Option<Reload>,
    tls: Option<TlsSetup>,
    conns: Slab<Entry>,
    engine: Engine,
    policy: Policy,
    parser: JsonParser,
    users: Users,
    reconnects: Reconnects,
    metrics: Metrics,
    /// Connections told they were replaced, and when to close them; in deadline order.
    replaced: Vec<(Instant, ClientId)>,
    settings: ConnSettings,
    scratch: Vec<u8>,
    max_connections: usize,
    next_housekeeping: Instant,
    next_generation: u32,
    accept_paused: bool,
    shutdown_deadline: Option<Instant>,
    /// What connections' entry points left for the loop to do (see `followups`).
    followups: Followups,
    /// Most connections open since memory was last handed back to the system.
    peak_connections: usize,
    /// The log directory and how many days of files it keeps, when files are written.
    log_pruning: Option<(PathBuf, u32)>,
    next_log_prune: Instant,
    /// Where rooms come from and changes go: the store, or with `--cluster` Redis; `None`
    /// with `--no-persist`.
    durable: Option<Durable>,
    /// HTTP API reads waiting for the backend, and answers ready (`queries.rs`).
    queries: queries::Queries,
    per_ip: PerIp,
    /// Whether the listener has connections left to accept: served in the next turn without
    /// waiting for an event, since edge-triggered readiness will not announce them again (as
    /// for connections with input left, `followups.still_ready`).
    listener_ready: bool,
    /// Bytes one turn may write; connections it cut short are served first next turn.
    write_budget: TurnBudget,
    /// When refusals were last logged: (per address, for memory).
    last_warned: (Option<Instant>, Option<Instant>),
    refused_for_memory_logged: u64,
    /// The HTTP API's per-address rate limit and request counts.
    api: ApiState,
}

impl Server {
    /// Serves until SIGINT or SIGTERM, then closes every client with 1001, saves every change
    /// and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut revisit = Vec::new();
        loop {
            let busy = !self.followups.still_ready.is_empty()
                || self.listener_ready
                || self.write_budget.has_deferred();
            let timeout = if busy {
                Duration::ZERO
            } else {
                self.poll_timeout(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(io::Error::other(format!("event loop failed: {e}")));
                }
            }
            let mut now = Instant::now();
            let woke = now;
            // One turn: connections whose writes the last turn's budget cut short continue,
            // each connection left with input gets one more budget, then every event;
            // accepting is bounded too (see ACCEPTS_PER_TURN, conn::MESSAGES_PER_TURN).
            self.write_budget.start_turn();
            std::mem::swap(&mut revisit, &mut self.followups.still_ready);
            revisit.sort_unstable();
            revisit.dedup();
            self.continue_deferred_writes(&revisit, now);
            for key in revisit.drain(..) {
                // Writable too: it may also be one whose write was cut (see above).
                self.on_conn_event(key, true, true, now);
            }
            let accepted = std::mem::take(&mut self.listener_ready);
            if accepted {
                self.accept_some(now);
            }
            for event in events.iter() {
                match event.token() {
                    // Already accepted this turn, after the event was reported.
                    token if LISTENERS.contains(&token) && accepted => {}
                    token if LISTENERS.contains(&token) => self.accept_some(now),
                    SIGNALS => self.on_signal(now),
                    RELOAD => self.on_hangup(),
                    METRICS_LISTENER => self.accept_metrics(now),
                    STORE | CLUSTER => self.on_durable_answers(now),
                    Token(key) => {
                        self.on_conn_event(key, event.is_readable(), event.is_writable(), now)
                    }
                }
            }
            now = Instant::now();
            self.deliver_query_answers(now);
            self.replace_connections(now);
            self.durable_work(now);
            if self.engine.has_pending() {
                self.flush_engine(now);
                self.metrics.tick.observe(now.elapsed());
            }
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.log_refusals(now);
            self.remove_finished(now);
            self.metrics.busy.observe(woke.elapsed());
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    info!("shut down with {} connections still open", self.conns.len());
                    for bound in &self.listeners {
                        if let Listener::Unix(_, path) = &bound.listener {
                            let _ = std::fs::remove_file(path);
                        }
                    }
                    return self.finish_durable();
                }
            }
        }
    }

    /// Serves the connections whose writes the budget cut short, in the order they were cut,
    /// while the new turn's budget lasts; the rest go first next turn. Those in `revisit`
    /// (sorted) are served there, reading and writing at once.
    fn continue_deferred_writes(&mut self, revisit: &[usize], now: Instant) {
        let mut unserved = Vec::new();
        for client in self.write_budget.take_deferred() {
            let (key, generation) = slot_of(client);
            let current = self
                .conns
                .get(key)
                .is_some_and(|e| e.generation == generation);
            if !current || revisit.binary_search(&key).is_ok() {
                continue;
            }
            if self.write_budget.is_spent() {
                unserved.push(client);
            } else {
                self.on_conn_event(key, false, true, now);
            }
        }
        self.write_budget.requeue(unserved);
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut wake = self.next_housekeeping;
        if let Some(deadline) = self.engine.poll_timeout() {
            wake = wake.min(deadline);
        }
        if let Some(deadline) = self.shutdown_deadline {
            wake = wake.min(deadline);
        }
        if let Some((deadline, _)) = self.replaced.first() {
            wake = wake.min(*deadline);
        }
        if let Some(due) = self.durable_due(now) {
            wake = wake.min(due);
        }
        wake.saturating_duration_since(now)
    }

    /// What a connection borrows from the loop, the connections, and where what their entry
    /// points return is applied.
    fn context(&mut self, now: Instant) -> (LoopContext<'_>, &mut Slab<Entry>, &mut Followups) {
        // Parked sessions give way to live connections (see `make_way_for_a_connection`).
        let over_capacity = self.conns.len() > self.max_connections;
        (
            LoopContext {
                engine: &mut self.engine,
                policy: &self.policy,
                parser: &mut self.parser,
                users: &mut self.users,
                reconnects: &mut self.reconnects,
                metrics: &mut self.metrics,
                settings: &self.settings,
                now,
                over_capacity,
                scratch: &mut self.scratch,
                per_ip: &mut self.per_ip,
                write_budget: &self.write_budget,
                api: &mut self.api,
            },
            &mut self.conns,
            &mut self.followups,
        )
    }

    /// Calls an entry point of the connection in slot `key`, if there is one, and applies the
    /// status it returns.
    fn serve(
        &mut self,
        key: usize,
        now: Instant,
        entry_point: impl FnOnce(&mut Conn<Socket>, &mut LoopContext<'_>) -> Status,
    ) {
        let (mut ctx, conns, followups) = self.context(now);
        if let Some(entry) = conns.get_mut(key) {
            followups.apply(key, entry_point(&mut entry.conn, &mut ctx));
        }
    }

    /// [`Server::serve`] for the connection a client id names; false if it is gone.
    fn serve_client(
        &mut self,
        client: ClientId,
        now: Instant,
        entry_point: impl FnOnce(&mut Conn<Socket>, &mut LoopContext<'_>) -> Status,
    ) -> bool {
        let (mut ctx, conns, followups) = self.context(now);
        let Some(entry) = entry_of(conns, client) else {
            return false;
        };
        followups.apply(slot_of(client).0, entry_point(&mut entry.conn, &mut ctx));
        true
    }

    /// Accepts up to ACCEPTS_PER_TURN connections from each listener; if more may be waiting,
    /// the next turn accepts again.
    fn accept_some(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            self.accept_from(index, now);
        }
    }

    fn accept_from(&mut self, index: usize, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if self.conns.len() >= self.max_connections + OVERFLOW_SLOTS {
                if !self.accept_paused {
                    warn!(
                        "{} connections open: not accepting until one closes",
                        self.conns.len()
                    );
                }
                self.accept_paused = true;
                return;
            }
            let Some(bound) = self.listeners.get(index) else {
                return;
            };
            let accepted = match &bound.listener {
                Listener::Tcp(l) => l.accept().map(|(s, addr)| {
                    // We batch our own writes; Nagle would only add latency.
                    let _ = s.set_nodelay(true);
                    (Socket::Tcp(s), Some(addr.ip()))
                }),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| (Socket::Unix(s), None)),
            };
            match accepted {
                Ok((Socket::Tcp(s), ip)) if bound.tls => {
                    let admin = bound.admin;
                    let Some(tls) = &self.tls else { continue };
                    match TlsStream::new(s, tls.config()) {
                        Ok(stream) => {
                            self.add_connection(Socket::Tls(Box::new(stream)), ip, admin, now)
                        }
                        Err(e) => error!("cannot start TLS: {e}"),
                    }
                }
                Ok((socket, ip)) => {
                    let admin = bound.admin;
                    self.add_connection(socket, ip, admin, now)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again when a connection closes.
                    error!("accept failed: {e}");
                    self.accept_paused = true;
                    return;
                }
            }
        }
        self.listener_ready = true;
    }

    /// Connections of the metrics listener: plain pages, `/metrics` for anyone. They count
    /// against the connection limit like any other.
    fn accept_metrics(&mut self, now: Instant) {
        while self.conns.len() < self.max_connections + OVERFLOW_SLOTS {
            let Some(listener) = &self.metrics_listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, addr)) => {
                    let socket = Socket::Tcp(socket);
                    if let Some(key) = self.insert_connection(socket, Some(addr.ip()), now) {
                        if let Some(entry) = self.conns.get_mut(key) {
                            entry.conn.for_metrics_only();
                        }
                        self.on_conn_event(key, true, true, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn add_connection(
        &mut self,
        socket: Socket,
        ip: Option<IpAddr>,
        admin: AdminListener,
        now: Instant,
    ) {
        if let Some(key) = self.insert_connection(socket, ip, now) {
            if let Some(entry) = self.conns.get_mut(key) {
                entry.conn.set_admin_listener(admin);
            }
            // Data may already be waiting; the first edge may have fired before registration.
            self.on_conn_event(key, true, true, now);
        }
    }

    /// Admits a new socket (per-address limit), registers it and puts its connection in the
    /// slab; returns its key.
    fn insert_connection(
        &mut self,
        mut socket: Socket,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Option<usize> {
        // From a trusted proxy the client's address is known only from the request head.
        let counted_ip = ip.filter(|ip| !self.settings.trusted_proxies.trusts(Some(*ip)));
        if let Some(ip) = counted_ip {
            let (mut ctx, _, _) = self.context(now);
            if !ctx.admit_address(ip) {
                // Dropped at once: answering would hold a slot that the limit is there to free.
                debug!("refused a connection from {ip}: too many from this address");
                return None;
            }
        }
        self.metrics.accepted += 1;
        self.make_way_for_a_connection(now);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let vacant = self.conns.vacant_entry();
        let key = vacant.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            error!("cannot register connection: {e}");
            if let Some(ip) = counted_ip {
                self.per_ip.release(ip);
            }
            return None;
        }
        let client = ClientId((u64::from(generation) << 32) | key as u64);
        let (ctx, conns, _) = self.context(now);
        let mut conn = Conn::new(socket, client, ip, &ctx);
        if let Some(ip) = counted_ip {
            conn.set_counted_ip(ip);
        }
        debug!("accepted connection {key}");
        conns.insert(Entry { conn, generation });
        Some(key)
    }

    /// Parked sessions and connections share `--max-connections`: a connection that will be
    /// served ends the oldest parked session if the two together would be over it.
    fn make_way_for_a_connection(&mut self, now: Instant) {
        let open = self.conns.len() + 1;
        if open <= self.max_connections && open + self.reconnects.parked() > self.max_connections {
            if let Some((client, rooms)) = self.reconnects.end_oldest_for(Need::Slot) {
                self.engine.leave_rooms(client, rooms, now);
            }
        }
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        self.serve(key, now, |conn, ctx| conn.on_event(readable, writable, ctx));
        self.answer_asks(now);
    }

    /// Answers what connections asked of the loop: renders the `/metrics` page, or starts a
    /// read of the HTTP API (answered now, or later by `deliver_query_answers`).
    fn answer_asks(&mut self, now: Instant) {
        while let Some(key) = self.followups.asks.pop() {
            let Some(entry) = self.conns.get_mut(key) else {
                continue;
            };
            let client = entry.conn.client();
            match entry.conn.take_ask() {
                None => {}
                Some(Ask::Metrics { include_body }) => {
                    let page =
                        crate::net::http::metrics_page(&self.render_metrics(now), include_body);
                    self.serve(key, now, |conn, ctx| conn.answer_metrics(page, ctx));
                }
                Some(Ask::Query { query, .. }) => {
                    if let Some(answer) = self.start_query(client, query, now) {
                        self.serve(key, now, |conn, ctx| conn.answer_query(answer, ctx));
                    }
                }
            }
        }
    }

    /// Writes the answers of reads that finished since the last turn to the connections that
    /// asked; an answer for a connection that is gone (its slot perhaps reused) is dropped.
    fn deliver_query_answers(&mut self, now: Instant) {
        for (client, answer) in self.take_query_answers() {
            if !self.serve_client(client, now, |conn, ctx| conn.answer_query(answer, ctx)) {
                debug!("dropped a query answer: its connection is gone");
            }
        }
        self.answer_asks(now);
    }

    /// Warns about refusals at most every WARN_EVERY, with counts, so an attack cannot flood
    /// the log.
    fn log_refusals(&mut self, now: Instant) {
        let due =
            |last: Option<Instant>| last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        let memory = self.engine.stats.refused_for_memory;
        if memory > self.refused_for_memory_logged && due(self.last_warned.1) {
            warn!(
                "room state at its memory budget ({} bytes held, {} of them unread whole-room \
                 replies): refused {} new rooms or variables so far, evicted {} empty rooms",
                self.engine.state_bytes() + self.engine.held_render_bytes(),
                self.engine.held_render_bytes(),
                memory,
                self.engine.stats.rooms_evicted
            );
            self.refused_for_memory_logged = memory;
            self.last_warned.1 = Some(now);
        }
        if self.per_ip.refused > 0 && due(self.last_warned.0) {
            warn!(
                "refused {} connections from addresses over --max-connections-per-ip",
                self.per_ip.refused
            );
            self.per_ip.refused = 0;
            self.last_warned.0 = Some(now);
        }
    }

    /// The `/metrics` page: the loop's counters and what it reads now.
    fn render_metrics(&self, now: Instant) -> String {
        let connections = self
            .conns
            .iter()
            .map(|(_, entry)| (entry.conn.describe(), entry.conn.bytes_written()));
        let mut snapshot = Snapshot::read(&self.engine, connections);
        snapshot.parked_sessions = self.reconnects.parked() as u64;
        snapshot.parked_sessions_ended = self.reconnects.evicted;
        snapshot.writes_deferred = self.write_budget.cuts();
        snapshot.api_reads_refused = self.queries.refused;
        snapshot.store = self
            .durable
            .as_ref()
            .and_then(|d| d.store_snapshot(&self.engine, now));
        snapshot.cluster = self.durable.as_ref().and_then(Durable::cluster_stats);
        let mut page = metrics::render(&self.metrics, &snapshot);
        self.api.counts.render(&mut page);
        page
    }

    fn flush_engine(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let followups = &mut self.followups;
        let metrics = &mut self.metrics;
        self.engine.flush_due(now, |_room, client, frame| {
            let (key, generation) = slot_of(client);
            match conns.get_mut(key) {
                Some(entry) if entry.generation == generation => {
                    let delivery = entry.conn.deliver(frame, now);
                    if delivery.taken {
                        metrics.deliveries += 1;
                    } else {
                        metrics.deliveries_skipped += 1;
                    }
                    followups.apply(key, delivery.status);
                    delivery.taken
                }
                // Gone: nothing to deliver, and the room forgets it when it leaves.
                _ => true,
            }
        });
    }

    /// Tells connections that newer ones of their user replaced them, and closes those told
    /// long enough ago; closes connections whose session a reconnect took over, and leaves the
    /// rooms of parked sessions that were dropped.
    fn replace_connections(&mut self, now: Instant) {
        if self.reconnects.has_work() {
            for client in self.reconnects.take_taken_over() {
                self.serve_client(client, now, |conn, ctx| {
                    conn.begin_close(Reason::Replaced, ctx)
                });
            }
            for ended in self.reconnects.take_released() {
                self.engine.leave_rooms(ended.client, ended.rooms, now);
                if let Some(address) = ended.address {
                    self.per_ip.release(address);
                }
            }
        }
        if self.users.has_replaced() {
            for client in self.users.take_replaced() {
                if self.serve_client(client, now, |conn, ctx| conn.replace(ctx)) {
                    self.replaced.push((now + REPLACED_GRACE, client));
                }
            }
        }
        while let Some(&(deadline, client)) = self.replaced.first() {
            if deadline > now {
                break;
            }
            self.replaced.remove(0);
            self.serve_client(client, now, |conn, ctx| {
                conn.begin_close(Reason::Replaced, ctx)
            });
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING_PERIOD;
        if let Some((dir, keep_days)) = &self.log_pruning {
            if now >= self.next_log_prune {
                self.next_log_prune = now + LOG_PRUNE_PERIOD;
                let deleted = crate::logging::prune(dir, *keep_days);
                if deleted > 0 {
                    info!("deleted {deleted} log files older than {keep_days} days");
                }
            }
        }
        let (mut ctx, conns, followups) = self.context(now);
        for (key, entry) in conns.iter_mut() {
            // Draining a closing connection may stop at its budget: `MoreInput`.
            followups.apply(key, entry.conn.on_timer(&mut ctx));
        }
        self.reconnects.expire(now);
        self.expire_bans();
        self.api.rate.forget_idle(now);
        self.api.admin.attempts.forget_idle(now);
        let expired = self.engine.expire(now);
        if expired > 0 {
            debug!("dropped {expired} rooms that were empty for too long");
        }
        self.watch_held_renders(now);
        self.release_memory_after_a_drop();
        // History's wall clock is read again: a device without a real-time clock may have
        // started before NTP set it (the engine keeps its timestamps from going back).
        if self.engine.history_cap() > 0 {
            self.engine.set_clock(now, setup::wall_clock_ms());
        }
    }

    /// After many connections have gone, hands freed heap back to the system: the allocator
    /// keeps it otherwise, and a server that once held 15000 clients would stay that size.
    fn release_memory_after_a_drop(&mut self) {
        let open = self.conns.len();
        self.peak_connections = self.peak_connections.max(open);
        if self.peak_connections >= open + TRIM_AFTER_DROP {
            if self.conns.capacity() > 2 * open {
                self.conns.shrink_to_fit();
            }
            trim_heap();
            debug!(
                "connections fell from {} to {open}: released free memory",
                self.peak_connections
            );
            self.peak_connections = open;
        }
    }

    fn remove_finished(&mut self, now: Instant) {
        if self.followups.finished.is_empty() {
            return;
        }
        let mut finished = std::mem::take(&mut self.followups.finished);
        finished.sort_unstable();
        finished.dedup();
        for key in finished.drain(..) {
            if let Some(mut entry) = self.conns.try_remove(key) {
                self.metrics.bytes_written_closed += entry.conn.bytes_written();
                let (mut ctx, _, _) = self.context(now);
                entry.conn.release(&mut ctx);
                // Dropping the socket closes it, which also removes it from the poll.
                debug!("removed connection {key}");
            }
        }
        self.followups.finished = finished;
        if self.accept_paused && self.conns.len() < self.max_connections + OVERFLOW_SLOTS {
            self.accept_paused = false;
            self.accept_some(now);
        }
    }

    fn on_signal(&mut self, now: Instant) {
        let mut buf = [0u8; 64];
        while matches!(self.signals.read(&mut buf), Ok(n) if n > 0) {}
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down: closing {} connections with 1001",
            self.conns.len()
        );
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        let (mut ctx, conns, followups) = self.context(now);
        for (key, entry) in conns.iter_mut() {
            followups.apply(key, entry.conn.begin_close(Reason::ShuttingDown, &mut ctx));
        }
    }
}

/// The slab key and generation a client id was made from (see `add_connection`).
fn slot_of(client: ClientId) -> (usize, u32) {
    (
        (client.0 & u64::from(u32::MAX)) as usize,
        (client.0 >> 32) as u32,
    )
}

/// The connection a client id names, if it is still the one in that slot.
fn entry_of(conns: &mut Slab<Entry>, client: ClientId) -> Option<&mut Entry> {
    let (key, generation) = slot_of(client);
    conns
        .get_mut(key)
        .filter(|entry| entry.generation == generation)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
