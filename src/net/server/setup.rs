//! Start-up: everything [`Server::bind`] does before the loop serves. Reads the username
//! filter and the TLS certificate, binds and registers the listeners (TCP or a unix socket,
//! plain or TLS, and `--metrics-listen`), routes signals into pipes the loop polls, and builds
//! the engine, the store or the cluster link. Each failure is a [`StartError`] with a message
//! an operator can act on.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Poll};
use slab::Slab;

use super::durable::Durable;
use super::followups::Followups;
use super::{
    Bound, Listener, Server, CLUSTER, HOUSEKEEPING_PERIOD, LISTENERS, METRICS_LISTENER,
    OVERFLOW_SLOTS, RELOAD, SIGNALS, STORE,
};
use crate::admin::tokens::AdminTokens;
use crate::config::{Config, TrustedProxies};
use crate::dialect;
use crate::dialect::json::JsonParser;
use crate::dialect::{Reconnects, Users};
use crate::engine::{Engine, Limits};
use crate::metrics::Metrics;
use crate::net::admission::AdminListener;
use crate::net::api::admin::AdminState;
use crate::net::api::{ApiRate, ApiState};
use crate::net::fd_limit;
use crate::net::loop_context::ConnSettings;
use crate::net::per_ip::PerIp;
use crate::net::tls_config::TlsSetup;
use crate::net::write_budget::TurnBudget;
use crate::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};
use crate::store::StoreSettings;

/// File descriptors kept for the listener, the poll, signals and log files.
const RESERVED_FDS: u64 = 32;

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
        let mut policy = build_policy(config)?;
        let max_connections =
            fd_limit::fit_connections(config.max_connections, RESERVED_FDS + OVERFLOW_SLOTS as u64);
        let tls = load_tls(config)?;
        let poll = Poll::new().map_err(|e| StartError(format!("cannot create poll: {e}")))?;
        let admin_tokens = load_admin_tokens(config)?;
        let mut listeners = vec![Bound {
            listener: bind_listener(&config.listen, config.unix_socket_mode)?,
            tls: tls.is_some() && config.tls_listen.is_none(),
            admin: AdminListener::No,
        }];
        if let Some(address) = &config.tls_listen {
            listeners.push(Bound {
                listener: bind_listener(address, config.unix_socket_mode)?,
                tls: true,
                admin: AdminListener::No,
            });
        }
        for bound in &mut listeners {
            bound.admin = admin_on_listener(&bound.listener);
        }
        if let Some(address) = &config.admin_listen {
            listeners.push(bind_admin(address, tls.is_some(), config.admin_plain_http)?);
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
        warn_if_trusted_proxies_are_bypassable(&config.trusted_proxies(), &listeners);
        let metrics_listener = match &config.metrics_listen {
            Some(listen) => Some(bind_metrics(listen, &poll)?),
            None => None,
        };
        let mut signals =
            signal_pipe(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        let mut hangups = signal_pipe(&[signal_hook::consts::SIGHUP])?;
        ignore_file_size_signal()?;
        for (pipe, token) in [(&mut signals, SIGNALS), (&mut hangups, RELOAD)] {
            poll.registry()
                .register(pipe, token, Interest::READABLE)
                .map_err(|e| StartError(format!("cannot register signal pipe: {e}")))?;
        }
        let limits = Limits {
            max_rooms: config.max_rooms,
            max_clients_per_room: config.max_clients_per_room,
            max_variables_per_room: config.max_variables_per_room,
            empty_room_ttl: Duration::from_secs(config.empty_room_ttl),
            allow_non_numeric: config.allow_non_numeric,
            max_value_chars: config.max_value_length,
            enable_rename: config.enable_rename,
            enable_delete: config.enable_delete,
            max_state_bytes: config.max_state_memory,
        };
        let mut engine = Engine::new(limits, dialect::encode_set);
        engine.set_rules(super::projects::build_rules(config));
        let tick = match config.tick_hz {
            0 => Duration::ZERO,
            hz => Duration::from_secs_f64(1.0 / f64::from(hz)),
        };
        // The durable backend: Redis with --cluster, else the store unless --no-persist.
        let mut durable = if let Some(url) = &config.cluster {
            let waker = mio::Waker::new(poll.registry(), CLUSTER)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?;
            let retention = (!config.retention.is_zero()).then_some(config.retention);
            let node = config.cluster_node.as_deref();
            Some(
                Durable::start_cluster(
                    url,
                    node,
                    retention,
                    config.history,
                    tick,
                    waker,
                    &mut engine,
                )
                .map_err(StartError)?,
            )
        } else if config.no_persist {
            info!("--no-persist: variables are kept in memory only");
            None
        } else {
            let waker = mio::Waker::new(poll.registry(), STORE)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?;
            let settings = StoreSettings {
                data_dir: config.data_dir.clone(),
                retention: (!config.retention.is_zero()).then_some(config.retention),
                delay: config.store_delay,
                history: config.history,
            };
            let interval = config.persist_interval;
            Some(Durable::open_store(settings, interval, waker, &mut engine).map_err(StartError)?)
        };
        install_stored_bans(&mut policy, durable.as_mut());
        let now = Instant::now();
        engine.set_history(config.history);
        // The wall-clock reading history timestamps count from (read again each second).
        engine.set_clock(now, wall_clock_ms());
        if config.tick_hz > 0 {
            // The beats every room shares count from the start.
            engine.set_pace(tick, config.tick_burst, now);
        }
        Ok(Server {
            poll,
            listeners,
            signals,
            hangups,
            metrics_listener,
            reload: None,
            tls,
            conns: Slab::new(),
            engine,
            policy,
            parser: JsonParser::default(),
            users: Users::new(config.max_connections_per_user),
            metrics: Metrics::default(),
            reconnects: Reconnects::new(
                Duration::from_secs(config.reconnect_window),
                parked_budget(config.max_parked_sessions, max_connections),
            ),
            replaced: Vec::new(),
            settings: ConnSettings::from_config(config),
            scratch: vec![0; 16 * 1024],
            max_connections,
            next_housekeeping: now + HOUSEKEEPING_PERIOD,
            next_generation: 0,
            accept_paused: false,
            shutdown_deadline: None,
            followups: Followups::default(),
            peak_connections: 0,
            log_pruning: config
                .log_dir
                .clone()
                .map(|dir| (dir, config.log_keep_days)),
            next_log_prune: now,
            durable,
            queries: Default::default(),
            per_ip: PerIp::new(config.max_connections_per_ip),
            listener_ready: false,
            write_budget: TurnBudget::new(),
            last_warned: (None, None),
            refused_for_memory_logged: 0,
            api: ApiState {
                rate: ApiRate::new(config.api_rate, config.api_burst),
                admin: AdminState {
                    tokens: admin_tokens,
                    tokens_path: config.admin_tokens.clone(),
                    ..AdminState::default()
                },
                ..ApiState::default()
            },
        })
    }

    /// Each listener's address, and whether it speaks TLS (not `--admin-listen`'s, which is
    /// logged on its own).
    pub fn local_addresses(&self) -> io::Result<Vec<(BoundAddress, bool)>> {
        self.listeners
            .iter()
            .filter(|bound| !matches!(bound.admin, AdminListener::Dedicated { .. }))
            .map(|bound| {
                let address = match &bound.listener {
                    Listener::Tcp(l) => BoundAddress::Tcp(l.local_addr()?),
                    Listener::Unix(_, path) => BoundAddress::Unix(path.clone()),
                };
                Ok((address, bound.tls))
            })
            .collect()
    }
}

/// `--trust-proxy` with a listener other machines can reach: whoever connects from a trusted
/// address without going through the proxy chooses the address it is logged, limited and
/// admitted to `/metrics` as. Said once at start, for each such listener.
fn warn_if_trusted_proxies_are_bypassable(trusted: &TrustedProxies, listeners: &[Bound]) {
    if !trusted.is_enabled() {
        return;
    }
    for bound in listeners {
        let Listener::Tcp(listener) = &bound.listener else {
            continue;
        };
        let Ok(address) = listener.local_addr() else {
            continue;
        };
        if address.ip().is_loopback() {
            continue;
        }
        warn!(
            "--trust-proxy with a listener on {address}, which other machines can reach: \
             X-Forwarded-For is believed from {trusted}; a client connecting from there \
             directly picks the address it is counted and logged as. Listen on 127.0.0.1 \
             behind the proxy, or let only the proxy reach this port"
        );
    }
}

/// How many MultiStudio sessions may be parked at once: `--max-parked-sessions`, by default a
/// tenth of the connections served, never more than those.
fn parked_budget(configured: Option<usize>, max_connections: usize) -> usize {
    configured
        .unwrap_or(max_connections.div_ceil(10))
        .min(max_connections)
}

pub(super) fn build_policy(config: &Config) -> Result<Policy, StartError> {
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
        message_rate: config.message_rate,
        message_burst: config.message_burst,
        max_rooms_per_connection: config.max_rooms_per_connection,
        fault_rooms: config.fault_rooms.iter().cloned().collect(),
        relay_user: config.relay_user,
        // Filled from the store or Redis once the backend is open.
        bans: Default::default(),
    })
}

fn bind_listener(listen: &str, unix_mode: u32) -> Result<Listener, StartError> {
    if listen.starts_with('/') {
        let path = PathBuf::from(listen);
        // A socket file left by an earlier run would make bind fail; one that a live server
        // still answers on is not ours to take.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            if StdUnixStream::connect(&path).is_ok() {
                return Err(StartError(format!(
                    "{listen} is in use by a running server; stop it or choose another path"
                )));
            }
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(unix_mode)).map_err(
            |e| {
                StartError(format!(
                    "cannot set the mode of {listen} to {unix_mode:o}: {e}"
                ))
            },
        )?;
        return Ok(Listener::Unix(listener, path));
    }
    let addr = tcp_address(listen)?;
    TcpListener::bind(addr)
        .map(Listener::Tcp)
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))
}

/// The `--metrics-listen` listener, registered with the poll.
fn bind_metrics(listen: &str, poll: &Poll) -> Result<TcpListener, StartError> {
    let addr = tcp_address(listen)?;
    let mut listener = TcpListener::bind(addr)
        .map_err(|e| StartError(format!("cannot listen on {addr} for metrics: {e}")))?;
    poll.registry()
        .register(&mut listener, METRICS_LISTENER, Interest::READABLE)
        .map_err(|e| StartError(format!("cannot register the metrics listener: {e}")))?;
    if let Ok(addr) = listener.local_addr() {
        info!("metrics on http://{addr}/metrics");
    }
    Ok(listener)
}

/// `--admin-tokens`, read at start: a bad file stops the start, naming the line.
fn load_admin_tokens(config: &Config) -> Result<Option<AdminTokens>, StartError> {
    let Some(path) = &config.admin_tokens else {
        if config.admin_listen.is_some() {
            return Err(StartError(
                "--admin-listen needs --admin-tokens (the admin API is off without operators)"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    let tokens = AdminTokens::load(path).map_err(|e| StartError(format!("--admin-tokens {e}")))?;
    warn_if_readable_by_others(path);
    info!(
        "admin API enabled: {} operators ({})",
        tokens.len(),
        tokens.names().collect::<Vec<_>>().join(", ")
    );
    Ok(Some(tokens))
}

/// Tokens are passwords: a file others on the machine can read gives them away.
pub(super) fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            warn!(
                "--admin-tokens {}: the file can be read by other users; chmod 600 it",
                path.display()
            );
        }
    }
}

/// A TCP listener on a loopback address answers admin paths to local clients.
fn admin_on_listener(listener: &Listener) -> AdminListener {
    match listener {
        Listener::Tcp(l) if l.local_addr().is_ok_and(|a| a.ip().is_loopback()) => {
            AdminListener::Loopback
        }
        _ => AdminListener::No,
    }
}

/// The `--admin-listen` listener (TLS when a certificate is configured); registered with the
/// other listeners.
fn bind_admin(listen: &str, tls: bool, plain_http: bool) -> Result<Bound, StartError> {
    let addr = tcp_address(listen)?;
    // Bearer tokens in clear over a network are anyone's on the path.
    if !tls && !plain_http && !addr.ip().is_loopback() {
        return Err(StartError(format!(
            "--admin-listen {listen}: not a loopback address, and without --tls-cert the \
             operators' tokens would cross the network in clear: configure TLS, listen on \
             loopback, or pass --admin-plain-http if a proxy in front terminates TLS"
        )));
    }
    let listener = TcpListener::bind(addr)
        .map_err(|e| StartError(format!("cannot listen on {addr} for the admin API: {e}")))?;
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls { "https" } else { "http" };
        info!("admin API on {scheme}://{addr}/admin");
    }
    Ok(Bound {
        listener: Listener::Tcp(listener),
        tls,
        admin: AdminListener::Dedicated {
            loopback: addr.ip().is_loopback(),
        },
    })
}

/// `--listen` as an operator types it: `HOST:PORT` (a name such as `localhost` is resolved),
/// or a bare port, meaning loopback.
fn tcp_address(listen: &str) -> Result<SocketAddr, StartError> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    if let Ok(port) = listen.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let not_an_address = || {
        StartError(format!(
            "--listen {listen:?} is not HOST:PORT, a port, or a /path for a unix socket"
        ))
    };
    // A well-formed HOST:PORT whose name does not resolve is a different mistake (a typo in
    // the name, no DNS yet at boot) from a malformed value: say which.
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(not_an_address());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(not_an_address());
    }
    match listen.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            StartError(format!(
                "--listen {listen:?}: the name {host:?} resolves to no address"
            ))
        }),
        Err(e) => Err(StartError(format!(
            "--listen {listen:?}: the name {host:?} does not resolve ({e})"
        ))),
    }
}

/// The TLS certificate and key, when both are given.
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

/// A pipe the loop polls, written to when one of `signals` arrives.
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

/// A write past the file size limit then fails with an error the storage thread reports and
/// retries, instead of killing the process.
fn ignore_file_size_signal() -> Result<(), StartError> {
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .map(|_| ())
    .map_err(|e| StartError(format!("cannot handle SIGXFSZ: {e}")))
}

/// The admin API's bans and blocks as the backend holds them, before anything is served: the
/// store's, read at open; Redis's arrive when its command thread connects. In a cluster, new
/// ban ids carry a part of the node's id, so two nodes do not give the same one.
fn install_stored_bans(policy: &mut Policy, durable: Option<&mut Durable>) {
    match durable {
        Some(Durable::Store(store, _)) => {
            let (bans, blocks) = store.take_bans();
            if !bans.is_empty() || !blocks.is_empty() {
                info!(
                    "{} bans and {} project blocks in force",
                    bans.len(),
                    blocks.len()
                );
            }
            policy.bans.replace_all(bans, blocks);
        }
        Some(Durable::Cluster(cluster, _)) => {
            let salt = cluster
                .node_id()
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            policy.bans.set_id_salt(salt);
        }
        None => {}
    }
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
