//! The event loop: one thread, one `mio::Poll`, connections in a slab, a tick timer.
//!
//! Each iteration waits for readiness (or the next deadline), hands each ready connection to
//! its state machine, flushes the room engine when a tick is due (one frame per connection with
//! news, one write each), runs once-a-second housekeeping (deadlines, pings, room expiry), and
//! removes finished connections. SIGINT/SIGTERM close every client with 1001 and end the loop;
//! SIGHUP re-reads the TLS certificate and key. A listener is plain or TLS: a TLS listener
//! wraps each accepted socket in a [`TlsStream`] with the certificate current at accept time.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::{Conn, ConnSettings, LoopContext, Status};
use super::fd_limit;
use super::tls::TlsStream;
use super::tls_config::TlsSetup;
use super::transport::Socket;
use crate::config::Config;
use crate::dialect;
use crate::dialect::json::JsonParser;
use crate::engine::{ClientId, Engine, Limits};
use crate::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};

/// The `--listen` listener, then the `--tls-listen` one.
const LISTENERS: [Token; 2] = [Token(usize::MAX - 1), Token(usize::MAX - 3)];
const SIGNALS: Token = Token(usize::MAX - 2);
const RELOAD: Token = Token(usize::MAX - 4);
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);
/// Connections beyond the maximum that are still accepted, to be told 4003 instead of hanging.
const OVERFLOW_SLOTS: usize = 64;
/// File descriptors kept for the listener, the poll, signals and log files.
const RESERVED_FDS: u64 = 32;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How far the connection count must fall before freed memory is handed back.
const TRIM_AFTER_DROP: usize = 1000;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Where the server listens, once bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for BoundAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddress::Tcp(addr) => write!(f, "{addr}"),
            BoundAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

struct Bound {
    listener: Listener,
    tls: bool,
}

struct Entry {
    conn: Conn<Socket>,
    generation: u32,
}

pub struct Server {
    poll: Poll,
    listeners: Vec<Bound>,
    signals: mio::net::UnixStream,
    reload_signal: mio::net::UnixStream,
    tls: Option<TlsSetup>,
    conns: Slab<Entry>,
    engine: Engine,
    policy: Policy,
    parser: JsonParser,
    settings: ConnSettings,
    scratch: Vec<u8>,
    max_connections: usize,
    tick_period: Option<Duration>,
    next_tick: Instant,
    next_housekeeping: Instant,
    next_generation: u32,
    accept_paused: bool,
    shutdown_deadline: Option<Instant>,
    finished: Vec<usize>,
    /// Most connections open since memory was last handed back to the system.
    peak_connections: usize,
}

/// Startup failures, each with a message an operator can act on.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Server {
    /// Binds the listener and prepares the loop; does not serve until [`Server::run`].
    pub fn bind(config: &Config) -> Result<Server, StartError> {
        let policy = build_policy(config)?;
        let max_connections =
            fd_limit::fit_connections(config.max_connections, RESERVED_FDS + OVERFLOW_SLOTS as u64);
        let tls = load_tls(config)?;
        let poll = Poll::new().map_err(|e| StartError(format!("cannot create poll: {e}")))?;
        let mut listeners = vec![Bound {
            listener: bind_listener(&config.listen)?,
            tls: tls.is_some() && config.tls_listen.is_none(),
        }];
        if let Some(address) = &config.tls_listen {
            listeners.push(Bound {
                listener: bind_listener(address)?,
                tls: true,
            });
        }
        for (bound, token) in listeners.iter_mut().zip(LISTENERS) {
            match &mut bound.listener {
                Listener::Tcp(l) => poll.registry().register(l, token, Interest::READABLE),
                Listener::Unix(..) if bound.tls => {
                    return Err(StartError(
                        "TLS needs a HOST:PORT listener, not a unix socket".to_owned(),
                    ))
                }
                Listener::Unix(l, _) => poll.registry().register(l, token, Interest::READABLE),
            }
            .map_err(|e| StartError(format!("cannot register listener: {e}")))?;
        }
        let mut signals =
            signal_pipe(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| StartError(format!("cannot register signal pipe: {e}")))?;
        let mut reload_signal = signal_pipe(&[signal_hook::consts::SIGHUP])?;
        poll.registry()
            .register(&mut reload_signal, RELOAD, Interest::READABLE)
            .map_err(|e| StartError(format!("cannot register signal pipe: {e}")))?;
        let limits = Limits {
            max_rooms: config.max_rooms,
            max_clients_per_room: config.max_clients_per_room,
            max_variables_per_room: config.max_variables_per_room,
            empty_room_ttl: Duration::from_secs(config.empty_room_ttl),
            allow_non_numeric: config.allow_non_numeric,
        };
        let now = Instant::now();
        Ok(Server {
            poll,
            listeners,
            signals,
            reload_signal,
            tls,
            conns: Slab::new(),
            engine: Engine::new(limits, dialect::encode_set),
            policy,
            parser: JsonParser::default(),
            settings: ConnSettings::from_config(config),
            scratch: vec![0; 16 * 1024],
            max_connections,
            tick_period: (config.tick_hz > 0)
                .then(|| Duration::from_secs_f64(1.0 / f64::from(config.tick_hz))),
            next_tick: now,
            next_housekeeping: now + HOUSEKEEPING_PERIOD,
            next_generation: 0,
            accept_paused: false,
            shutdown_deadline: None,
            finished: Vec::new(),
            peak_connections: 0,
        })
    }

    /// Each listener's address, and whether it speaks TLS.
    pub fn local_addresses(&self) -> io::Result<Vec<(BoundAddress, bool)>> {
        self.listeners
            .iter()
            .map(|bound| {
                let address = match &bound.listener {
                    Listener::Tcp(l) => BoundAddress::Tcp(l.local_addr()?),
                    Listener::Unix(_, path) => BoundAddress::Unix(path.clone()),
                };
                Ok((address, bound.tls))
            })
            .collect()
    }

    /// Serves until SIGINT or SIGTERM, then closes every client with 1001 and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    token if token == LISTENERS[0] => self.accept_all(0, now),
                    token if token == LISTENERS[1] => self.accept_all(1, now),
                    SIGNALS => self.on_signal(now),
                    RELOAD => self.on_reload_signal(),
                    Token(key) => {
                        self.on_conn_event(key, event.is_readable(), event.is_writable(), now)
                    }
                }
            }
            now = Instant::now();
            if self.engine.has_pending() && self.tick_due(now) {
                self.flush_engine(now);
            }
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.remove_finished(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    info!("shut down with {} connections still open", self.conns.len());
                    for bound in &self.listeners {
                        if let Listener::Unix(_, path) = &bound.listener {
                            let _ = std::fs::remove_file(path);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    fn tick_due(&mut self, now: Instant) -> bool {
        match self.tick_period {
            None => true,
            Some(period) if now >= self.next_tick => {
                // Keep the tick phase, but never try to catch up on missed ticks.
                self.next_tick += period;
                if self.next_tick <= now {
                    self.next_tick = now + period;
                }
                true
            }
            Some(_) => false,
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut wake = self.next_housekeeping;
        if self.engine.has_pending() && self.tick_period.is_some() {
            wake = wake.min(self.next_tick);
        }
        if let Some(deadline) = self.shutdown_deadline {
            wake = wake.min(deadline);
        }
        wake.saturating_duration_since(now)
    }

    fn context(&mut self, now: Instant) -> (LoopContext<'_>, &mut Slab<Entry>, &mut Vec<usize>) {
        let over_capacity = self.conns.len() > self.max_connections;
        (
            LoopContext {
                engine: &mut self.engine,
                policy: &self.policy,
                parser: &mut self.parser,
                settings: &self.settings,
                now,
                over_capacity,
                scratch: &mut self.scratch,
            },
            &mut self.conns,
            &mut self.finished,
        )
    }

    fn accept_all(&mut self, index: usize, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        loop {
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
                    let Some(tls) = &self.tls else { continue };
                    match TlsStream::new(s, tls.config()) {
                        Ok(stream) => self.add_connection(Socket::Tls(Box::new(stream)), ip, now),
                        Err(e) => error!("cannot start TLS: {e}"),
                    }
                }
                Ok((socket, ip)) => self.add_connection(socket, ip, now),
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
    }

    fn add_connection(&mut self, mut socket: Socket, ip: Option<IpAddr>, now: Instant) {
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
            return;
        }
        let client = ClientId((u64::from(generation) << 32) | key as u64);
        let (ctx, conns, _) = self.context(now);
        let conn = Conn::new(socket, client, ip, &ctx);
        debug!("accepted connection {key}");
        conns.insert(Entry { conn, generation });
        // Data may already be waiting; the first edge may have fired before registration.
        self.on_conn_event(key, true, true, now);
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        let (mut ctx, conns, finished) = self.context(now);
        let Some(entry) = conns.get_mut(key) else {
            return;
        };
        if entry.conn.on_event(readable, writable, &mut ctx) == Status::Done {
            finished.push(key);
        }
    }

    fn flush_engine(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let finished = &mut self.finished;
        self.engine.flush(|client, frame| {
            let key = (client.0 & u64::from(u32::MAX)) as usize;
            let generation = (client.0 >> 32) as u32;
            match conns.get_mut(key) {
                Some(entry) if entry.generation == generation => {
                    let delivered = entry.conn.deliver(frame, now);
                    if entry.conn.status() == Status::Done {
                        finished.push(key);
                    }
                    delivered
                }
                // Gone: nothing to deliver, and the room forgets it when it leaves.
                _ => true,
            }
        });
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING_PERIOD;
        let (mut ctx, conns, finished) = self.context(now);
        for (key, entry) in conns.iter_mut() {
            if entry.conn.on_timer(&mut ctx) == Status::Done {
                finished.push(key);
            }
        }
        let expired = self.engine.expire(now);
        if expired > 0 {
            debug!("dropped {expired} rooms that were empty for too long");
        }
        self.release_memory_after_a_drop();
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
        if self.finished.is_empty() {
            return;
        }
        let mut finished = std::mem::take(&mut self.finished);
        finished.sort_unstable();
        finished.dedup();
        for key in finished.drain(..) {
            if let Some(mut entry) = self.conns.try_remove(key) {
                let (mut ctx, _, _) = self.context(now);
                entry.conn.release(&mut ctx);
                // Dropping the socket closes it, which also removes it from the poll.
                debug!("removed connection {key}");
            }
        }
        self.finished = finished;
        if self.accept_paused && self.conns.len() < self.max_connections + OVERFLOW_SLOTS {
            self.accept_paused = false;
            for index in 0..self.listeners.len() {
                self.accept_all(index, now);
            }
        }
    }

    /// SIGHUP: new connections get the re-read certificate; open ones keep theirs.
    fn on_reload_signal(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.reload_signal.read(&mut buf), Ok(n) if n > 0) {}
        let Some(tls) = &mut self.tls else {
            info!("SIGHUP: no TLS certificate configured, nothing to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => info!(
                "SIGHUP: reloaded the TLS certificate {}",
                tls.cert_path().display()
            ),
            Err(e) => error!("SIGHUP: keeping the previous TLS certificate: {e}"),
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
        let (mut ctx, conns, finished) = self.context(now);
        for (key, entry) in conns.iter_mut() {
            entry
                .conn
                .begin_close(1001, "server shutting down", &mut ctx);
            if entry.conn.status() == Status::Done {
                finished.push(key);
            }
        }
    }
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

fn build_policy(config: &Config) -> Result<Policy, StartError> {
    let filter_text = match &config.username_filter {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            StartError(format!(
                "cannot read username filter {}: {e}",
                path.display()
            ))
        })?,
        None => DEFAULT_USERNAME_FILTER.to_owned(),
    };
    let usernames = UsernameFilter::parse(&filter_text)
        .map_err(|e| StartError(format!("invalid username filter: {e}")))?;
    info!("username filter: {} patterns", usernames.len());
    Ok(Policy {
        usernames,
        allowed_projects: config
            .allowed_projects
            .as_ref()
            .map(|list| list.iter().map(|id| id.trim().to_owned()).collect()),
        blocked_projects: config
            .blocked_projects
            .iter()
            .map(|id| id.trim().to_owned())
            .collect(),
        enable_rename: config.enable_rename,
        enable_delete: config.enable_delete,
        message_rate: config.message_rate,
        message_burst: config.message_burst,
    })
}

fn bind_listener(listen: &str) -> Result<Listener, StartError> {
    if listen.starts_with('/') {
        let path = PathBuf::from(listen);
        // A socket file left by an earlier run would make bind fail.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
        return Ok(Listener::Unix(listener, path));
    }
    let addr: SocketAddr = listen.parse().map_err(|e| {
        StartError(format!(
            "--listen {listen:?} is not HOST:PORT or /path: {e}"
        ))
    })?;
    TcpListener::bind(addr)
        .map(Listener::Tcp)
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))
}

fn load_tls(config: &Config) -> Result<Option<TlsSetup>, StartError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let setup = TlsSetup::load(cert, key).map_err(StartError)?;
            info!("TLS certificate {}", cert.display());
            Ok(Some(setup))
        }
        (None, None) if config.tls_listen.is_some() => Err(StartError(
            "--tls-listen needs --tls-cert and --tls-key".to_owned(),
        )),
        (None, None) => Ok(None),
        _ => Err(StartError(
            "--tls-cert and --tls-key go together: give both or neither".to_owned(),
        )),
    }
}

/// A pipe the given signals write to, so the loop sees them as readable events.
fn signal_pipe(signals: &[libc::c_int]) -> Result<mio::net::UnixStream, StartError> {
    let (read_end, write_end) =
        StdUnixStream::pair().map_err(|e| StartError(format!("cannot create signal pipe: {e}")))?;
    read_end
        .set_nonblocking(true)
        .map_err(|e| StartError(format!("cannot set up signal pipe: {e}")))?;
    for &signal in signals {
        let writer = write_end
            .try_clone()
            .map_err(|e| StartError(format!("cannot set up signal pipe: {e}")))?;
        signal_hook::low_level::pipe::register(signal, writer)
            .map_err(|e| StartError(format!("cannot handle signal {signal}: {e}")))?;
    }
    Ok(mio::net::UnixStream::from_std(read_end))
}
