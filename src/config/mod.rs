//! Every option, its default, its environment variable and its help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};

mod api_limits;
mod file;
mod port;
pub mod projects;
mod proxies;
mod template;
mod units;

pub use api_limits::{parse_api_burst, parse_api_rate, MAX_API_LIMIT, MIN_API_RATE};
pub use file::{load, LoadError, Loaded, Source};
pub use projects::{ProjectTable, VariableTable};
pub use proxies::{parse_trusted_proxies, Network, TrustedProxies};
pub use units::{
    parse_bytes, parse_duration, parse_history, parse_mode, parse_positive, parse_seconds,
    parse_size, MAX_HISTORY,
};

/// stratus: a fast cloud-variable server for Scratch 3 and TurboWarp projects.
///
/// Serves the Scratch 3 cloud protocol, cloud-server's older `kind` protocol, the array-RPC
/// protocol (on `/ws/world/<room>`) and MultiStudio on one port, over shared rooms, and keeps
/// every variable on disk (`--data-dir`) so a restart loses nothing.
/// Point TurboWarp at it with `?cloud_host=ws://HOST:PORT/`. Every option can also be set with
/// the environment variable shown next to it (switches take 1/0, true/false, yes/no), or a line
/// of the `--config` file. Sizes take units (`2MiB`), durations too (`10s`, `90d`).
#[derive(Parser, Debug, Clone)]
#[command(name = "stratus", version, about, long_about, max_term_width = 100)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A TOML file of settings with the flags' names (`max-connections = 5000`). Flags and
    /// environment variables override it.
    #[arg(long, env = "STRATUS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration, with where each value came from (flag, env, file or
    /// default), as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// With `--print-config`: every option, unset ones commented out, each after its help: a
    /// complete configuration file to start from.
    #[arg(long, requires = "print_config")]
    pub all: bool,

    /// Where variables are stored (a SQLite database, `stratus.db`), created if missing. Only
    /// one server may use a directory at a time.
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,

    /// Keep variables in memory only: a restart loses them (TurboWarp's cloud-server behaves
    /// so).
    #[arg(long, env = "STRATUS_NO_PERSIST", value_parser = BoolishValueParser::new())]
    pub no_persist: bool,

    /// Join a cluster of stratus nodes sharing rooms through Redis:
    /// `redis://[:PASSWORD@]HOST:PORT/DB`, or `rediss://…` for TLS. Any node then serves any
    /// room behind an ordinary load balancer; variables live in Redis (the SQLite store and
    /// `--data-dir` are not used). See "Running several nodes" in the README.
    #[arg(long, env = "STRATUS_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,

    /// This node's name in the cluster (in Redis's member counts and logs); unique per node.
    /// Default: the host name and a random suffix.
    #[arg(long, env = "STRATUS_CLUSTER_NODE", value_name = "NAME")]
    pub cluster_node: Option<String>,

    /// How often changes are written to disk, at most; a crash loses at most this much. A
    /// number of seconds or a duration such as `500ms`, `2s`.
    #[arg(long, env = "STRATUS_PERSIST_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub persist_interval: Duration,

    /// Stored rooms nobody wrote for this long are deleted from disk (checked once a day).
    /// A number of seconds or a duration such as `90d`, `12h`; 0 keeps them forever.
    #[arg(long, env = "STRATUS_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub retention: Duration,

    /// History entries kept per room (project): every accepted set, create, rename and delete,
    /// with its user and time, newest kept, stored with the variables (in `--data-dir`, or in
    /// Redis with `--cluster`, where every node should use the same N) and pruned by
    /// `--retention`. 0 records nothing. Takes effect after a restart.
    #[arg(
        long,
        env = "STRATUS_HISTORY",
        default_value_t = 1000,
        value_name = "N",
        value_parser = parse_history
    )]
    pub history: usize,

    /// Scratch-protocol clients are sent, with each value, who changed it last (`"user"`) and
    /// when (`"timestamp"`, Unix milliseconds), as scratchattach's own server does, so its cloud
    /// requests know their requester. Scratch's server does not send them. Applies to clients
    /// that join after it is turned on (also by a reload).
    #[arg(long, env = "STRATUS_RELAY_USER", value_parser = BoolishValueParser::new())]
    pub relay_user: bool,

    /// Test only: the storage thread waits this long before each request (a slow disk).
    #[arg(long, env = "STRATUS_STORE_DELAY", default_value = "0s", value_parser = parse_duration, hide = true)]
    pub store_delay: Duration,

    /// Address to listen on: HOST:PORT for TCP, a port alone (loopback), or a path starting
    /// with `/` for a unix socket. Port 0 picks a free port; the chosen address is logged.
    /// Without this flag, `STRATUS_LISTEN` or a `listen` line in the file, the `PORT`
    /// environment variable is used as a port.
    #[arg(long, env = "STRATUS_LISTEN", default_value = "127.0.0.1:9080")]
    pub listen: String,

    /// TLS certificate chain (PEM, leaf first), e.g. Let's Encrypt's `fullchain.pem`. With
    /// `--tls-key`, the `--listen` address speaks only TLS (`wss://`), unless `--tls-listen`
    /// gives TLS its own address. SIGHUP re-reads both files.
    #[arg(long, env = "STRATUS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1), e.g. Let's Encrypt's `privkey.pem`.
    #[arg(long, env = "STRATUS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// A second address, HOST:PORT, that speaks TLS while `--listen` stays plain (for a local
    /// proxy or health checks). Needs `--tls-cert` and `--tls-key`.
    #[arg(long, env = "STRATUS_TLS_LISTEN", value_name = "HOST:PORT")]
    pub tls_listen: Option<String>,

    /// Behind a reverse proxy: the proxies' addresses or networks, comma-separated
    /// (`127.0.0.1`, `10.0.0.0/8`). A connection from one of them is the client named by the
    /// last `X-Forwarded-For` entry; anyone else's header is ignored. A bare `--trust-proxy`
    /// (or `true`) trusts loopback, a proxy on this machine.
    #[arg(long, env = "STRATUS_TRUST_PROXY", value_name = "ADDRESSES", num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_trusted_proxies)]
    pub trust_proxy: Option<TrustedProxies>,

    /// Log client addresses with their last part zeroed (IPv4 /24, IPv6 /48).
    #[arg(long, env = "STRATUS_ANONYMIZE_IPS", value_parser = BoolishValueParser::new())]
    pub anonymize_ips: bool,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "STRATUS_LOG_LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Also write logs to daily files `stratus.YYYY-MM-DD.log` in this directory.
    #[arg(long, env = "STRATUS_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// Also answer `GET /metrics` (Prometheus text) on this address, to any client; without it,
    /// `/metrics` on the main port answers only local clients (the real address behind
    /// `--trust-proxy`). Plain HTTP only: WebSocket upgrades are refused there.
    #[arg(long, env = "STRATUS_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// Daily log files older than this many days are deleted (at start and once a day).
    /// 0 keeps them all.
    #[arg(long, env = "STRATUS_LOG_KEEP_DAYS", default_value_t = 30)]
    pub log_keep_days: u32,

    /// Permissions of the unix socket (`--listen /path`), in octal: 0660 lets a proxy in the
    /// socket's group connect.
    #[arg(long, env = "STRATUS_UNIX_SOCKET_MODE", default_value = "0660", value_parser = parse_mode)]
    pub unix_socket_mode: u32,

    /// Most frames per second a client gets from one room, on average (Scratch runs at 30
    /// frames per second). A room may send `--tick-burst` frames back to back and earns one
    /// more at every beat, `1/tick-hz` apart and shared by all rooms: a change in a room with
    /// one to spare goes out at once; otherwise it waits for the next beat and goes out with
    /// every other waiting room's, latest values only. 0 sends every change at once, after
    /// every event-loop iteration (lowest latency, most frames: for a few small rooms).
    #[arg(long, env = "STRATUS_TICK_HZ", default_value_t = 30)]
    pub tick_hz: u32,

    /// Frames a room may send back to back before its changes wait for the next beat (see
    /// `--tick-hz`). A room that was quiet for this many beats has them all, so a short burst
    /// of changes leaves at once; a busy room sends one frame per beat. At least 1.
    #[arg(long, env = "STRATUS_TICK_BURST", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tick_burst: u32,

    /// Most open connections; further clients are closed with 4003. Lowered automatically if
    /// the open-file limit cannot hold it.
    #[arg(long, env = "STRATUS_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = parse_positive)]
    pub max_connections: usize,

    /// Most rooms (projects) at once, counting empty rooms that still keep their variables;
    /// the longest-empty room is dropped to make space, otherwise clients get 4003.
    #[arg(long, env = "STRATUS_MAX_ROOMS", default_value_t = 16_384)]
    pub max_rooms: usize,

    /// Bytes of room state (variable names and values, rooms) the server may hold, counting
    /// whole-room replies of 64 KiB or more that only clients not reading them still hold. Over it,
    /// empty rooms are dropped longest-empty first, then new rooms (4003) and new variables
    /// (ignored; `cloud.too_many_variables` in array-RPC) are refused. With persistence, only
    /// rooms whose changes are on disk are dropped. Takes units (`512MiB`). 0 = no budget.
    #[arg(long, env = "STRATUS_MAX_STATE_MEMORY", default_value_t = 1 << 30, value_parser = parse_size)]
    pub max_state_memory: usize,

    /// Most connections from one client address (with `--trust-proxy`, the forwarded
    /// address); more are refused. Generous, as a school shares one address. 0 = no limit.
    #[arg(long, env = "STRATUS_MAX_CONNECTIONS_PER_IP", default_value_t = 512)]
    pub max_connections_per_ip: usize,

    /// Most clients in one room; more get 4003.
    #[arg(long, env = "STRATUS_MAX_CLIENTS_PER_ROOM", default_value_t = 128)]
    pub max_clients_per_room: usize,

    /// Most connections of one user in one room, in the array-RPC dialect: one more with the
    /// same `client_id` replaces the oldest (told `connection.replaced`, then closed); one more
    /// with a `username` and no `client_id` is refused (`connection.limit_reached`), since
    /// anyone can claim a name. 0 = no limit.
    #[arg(long, env = "STRATUS_MAX_CONNECTIONS_PER_USER", default_value_t = 0)]
    pub max_connections_per_user: usize,

    /// Most rooms one MultiStudio connection may be in at once; more get a `ROOM` error.
    #[arg(long, env = "STRATUS_MAX_ROOMS_PER_CONNECTION", default_value_t = 4)]
    pub max_rooms_per_connection: usize,

    /// Seconds a MultiStudio session whose connection broke (no close frame) is kept, with its
    /// rooms, for the client to reconnect with its token. 0 = no reconnecting.
    #[arg(long, env = "STRATUS_RECONNECT_WINDOW", default_value_t = 120, value_parser = parse_seconds)]
    pub reconnect_window: u64,

    /// Most MultiStudio sessions kept for reconnecting at once (default: a tenth of
    /// `--max-connections`). When full, the oldest is ended to keep another; a live client that
    /// needs a connection slot, a room place or its address's place (`--max-connections-per-ip`)
    /// also ends the oldest parked session holding it.
    #[arg(long, env = "STRATUS_MAX_PARKED_SESSIONS", value_name = "N")]
    pub max_parked_sessions: Option<usize>,

    /// Most variables in one room; sets that would create more are ignored.
    #[arg(long, env = "STRATUS_MAX_VARIABLES_PER_ROOM", default_value_t = 128)]
    pub max_variables_per_room: usize,

    /// Sustained incoming messages per second per connection (each newline-separated object
    /// counts); beyond the burst the client is closed with 4004. 0 disables.
    #[arg(long, env = "STRATUS_MESSAGE_RATE", default_value_t = 500.0)]
    pub message_rate: f64,

    /// Messages a connection may send at once before the rate applies.
    #[arg(long, env = "STRATUS_MESSAGE_BURST", default_value_t = 1000.0)]
    pub message_burst: f64,

    /// Sustained incoming bytes per second per connection; beyond the burst: 4004. 0 disables.
    #[arg(long, env = "STRATUS_BYTE_RATE", default_value_t = 2.0 * 1024.0 * 1024.0, value_parser = parse_bytes)]
    pub byte_rate: f64,

    /// Bytes a connection may send at once before the byte rate applies.
    #[arg(long, env = "STRATUS_BYTE_BURST", default_value_t = 4.0 * 1024.0 * 1024.0, value_parser = parse_bytes)]
    pub byte_burst: f64,

    /// Largest incoming WebSocket message in bytes; larger ones close with 1009.
    #[arg(long, env = "STRATUS_MAX_MESSAGE_SIZE", default_value_t = 1024 * 1024, value_parser = parse_size)]
    pub max_message_size: usize,

    /// Per-connection read buffer in bytes. Small keeps idle connections cheap; messages larger
    /// than this are still read whole.
    #[arg(long, env = "STRATUS_READ_BUFFER_SIZE", default_value_t = 1024, value_parser = parse_size)]
    pub read_buffer_size: usize,

    /// Seconds a client has for its HTTP upgrade, and then again for its handshake message.
    #[arg(long, env = "STRATUS_HANDSHAKE_TIMEOUT", default_value_t = 10, value_parser = parse_seconds)]
    pub handshake_timeout: u64,

    /// Seconds between WebSocket pings; a client that did not answer the previous ping is
    /// closed.
    #[arg(long, env = "STRATUS_PING_INTERVAL", default_value_t = 30, value_parser = parse_seconds)]
    pub ping_interval: u64,

    /// Seconds a client may leave our output unread before it is disconnected (10 s when that
    /// output holds a whole-room reply of 64 KiB or more the room no longer shares).
    #[arg(long, env = "STRATUS_WRITE_STALL_TIMEOUT", default_value_t = 60, value_parser = parse_seconds)]
    pub write_stall_timeout: u64,

    /// Seconds an empty room keeps its variables after the last client leaves.
    #[arg(long, env = "STRATUS_EMPTY_ROOM_TTL", default_value_t = 3600, value_parser = parse_seconds)]
    pub empty_room_ttl: u64,

    /// Accept any string as a value, not only numbers.
    #[arg(long, env = "STRATUS_ALLOW_NON_NUMERIC", value_parser = BoolishValueParser::new())]
    pub allow_non_numeric: bool,

    /// Longest string value, in characters; longer ones are ignored (`cloud.invalid_value` in
    /// array-RPC). A project's table may set its own (`max-value-length`).
    #[arg(long, env = "STRATUS_MAX_VALUE_LENGTH", default_value_t = crate::engine::value::MAX_VALUE_CHARS)]
    pub max_value_length: usize,

    /// Accept `rename` messages (otherwise ignored).
    #[arg(long, env = "STRATUS_ENABLE_RENAME", value_parser = BoolishValueParser::new())]
    pub enable_rename: bool,

    /// Accept `delete` messages (otherwise ignored).
    #[arg(long, env = "STRATUS_ENABLE_DELETE", value_parser = BoolishValueParser::new())]
    pub enable_delete: bool,

    /// Close clients that send no User-Agent header with 4006.
    #[arg(long, env = "STRATUS_REQUIRE_USER_AGENT", value_parser = BoolishValueParser::new())]
    pub require_user_agent: bool,

    /// Comma-separated Origin values allowed to connect; others get HTTP 403. Requests without
    /// an Origin header (non-browser clients) are allowed. Default: any origin.
    #[arg(long, env = "STRATUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// HTTP API requests (`/logs`, `/api/…`, `/cloudmonitor/…`) per second per client address
    /// (with `--trust-proxy`, the forwarded one; IPv6 by /64), sustained; beyond the burst they
    /// get 429. 0 = unlimited; otherwise 0.001 to 1000000.
    #[arg(long, env = "STRATUS_API_RATE", default_value_t = 10.0, value_parser = parse_api_rate)]
    pub api_rate: f64,

    /// HTTP API requests one address may send at once before `--api-rate` applies (1 to
    /// 1000000).
    #[arg(long, env = "STRATUS_API_BURST", default_value_t = 20.0, value_parser = parse_api_burst)]
    pub api_burst: f64,

    /// Comma-separated project ids allowed to connect; others get 4004. Default: all.
    #[arg(long, env = "STRATUS_ALLOWED_PROJECTS", value_delimiter = ',')]
    pub allowed_projects: Option<Vec<String>>,

    /// Comma-separated project ids refused with 4004.
    #[arg(long, env = "STRATUS_BLOCKED_PROJECTS", value_delimiter = ',')]
    pub blocked_projects: Vec<String>,

    /// Username filter file: one case-insensitive regex per line, tested against the name with
    /// non-alphanumerics removed; matches get 4002. Default: a built-in list against
    /// impersonating the Scratch Team. An empty file allows every well-formed name.
    #[arg(long, env = "STRATUS_USERNAME_FILTER")]
    pub username_filter: Option<PathBuf>,

    /// Test only: joining these rooms fails as if the server could not load them, so tests can
    /// see what a client is told when something inside the server fails.
    #[arg(long, env = "STRATUS_FAULT_ROOMS", value_delimiter = ',', hide = true)]
    pub fault_rooms: Vec<String>,

    /// The admin API and console (`/admin`), off without this file: one operator a line,
    /// `name token`, tokens of 32 to 256 characters (`openssl rand -hex 32`); a bad line stops
    /// the start. Re-read at SIGHUP (a bad file then keeps the operators in force). Served on
    /// loopback listeners and `--admin-listen` only. See "Admin API" in the README.
    #[arg(long, env = "STRATUS_ADMIN_TOKENS", value_name = "FILE")]
    pub admin_tokens: Option<PathBuf>,

    /// An address, HOST:PORT, that serves the admin API and console (nothing else), from any
    /// client with a token; TLS when `--tls-cert` is set. Needs `--admin-tokens`.
    #[arg(long, env = "STRATUS_ADMIN_LISTEN", value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,

    /// Let `--admin-listen` on a non-loopback address speak plain HTTP (no `--tls-cert`): only
    /// behind a proxy that terminates TLS, since bearer tokens would otherwise cross the
    /// network in clear. Without it such a start is refused.
    #[arg(long, env = "STRATUS_ADMIN_PLAIN_HTTP", value_parser = BoolishValueParser::new())]
    pub admin_plain_http: bool,

    /// The file's `[projects."ID"]` tables (per-project settings and variable rules); they
    /// have no flag.
    #[arg(skip)]
    pub projects: Vec<ProjectTable>,
}

/// Tools that work on the data directory instead of serving.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print stored rooms as JSON (`{"rooms": {ROOM: {NAME: VALUE}}}`); safe while a server runs.
    Export {
        /// Only this room.
        #[arg(long)]
        room: Option<String>,
    },
    /// Load rooms from an export file, replacing those rooms' stored variables. The server
    /// using the data directory must be stopped.
    Import {
        /// The JSON file written by `stratus export`.
        file: PathBuf,
    },
}

impl Config {
    /// The defaults, as if run with no arguments and no environment; for tests and benches.
    pub fn defaults() -> Self {
        Config::parse_from(["stratus"])
    }

    /// The peers whose `X-Forwarded-For` is believed (`--trust-proxy`); none when unset.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        self.trust_proxy.clone().unwrap_or_default()
    }
}
