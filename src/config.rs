//! Every option, its default, its environment variable and its help text.

use std::path::PathBuf;

use clap::Parser;

/// stratus: a fast cloud-variable server for Scratch 3 and TurboWarp projects.
///
/// Serves the Scratch 3 cloud protocol and cloud-server's older `kind` protocol on one port.
/// Point TurboWarp at it with `?cloud_host=ws://HOST:PORT/`. Every option can also be set with
/// the environment variable shown next to it.
#[derive(Parser, Debug, Clone)]
#[command(name = "stratus", version, about, long_about, max_term_width = 100)]
pub struct Config {
    /// Address to listen on: HOST:PORT for TCP, or a path starting with `/` for a unix socket.
    /// Port 0 picks a free port; the chosen address is logged.
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

    /// Take the client's address from the last X-Forwarded-For entry (behind a reverse proxy).
    #[arg(long, env = "STRATUS_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Log client addresses with their last part zeroed (IPv4 /24, IPv6 /48).
    #[arg(long, env = "STRATUS_ANONYMIZE_IPS")]
    pub anonymize_ips: bool,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "STRATUS_LOG_LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Also write logs to daily files `stratus.YYYY-MM-DD.log` in this directory.
    #[arg(long, env = "STRATUS_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// Fan-out ticks per second: updates are batched and sent once per tick (Scratch runs at
    /// 30 frames per second). 0 sends at once, after every event-loop iteration.
    #[arg(long, env = "STRATUS_TICK_HZ", default_value_t = 30)]
    pub tick_hz: u32,

    /// Most open connections; further clients are closed with 4003. Lowered automatically if
    /// the open-file limit cannot hold it.
    #[arg(long, env = "STRATUS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most rooms (projects) at once, counting empty rooms that still keep their variables;
    /// the longest-empty room is dropped to make space, otherwise clients get 4003.
    #[arg(long, env = "STRATUS_MAX_ROOMS", default_value_t = 16_384)]
    pub max_rooms: usize,

    /// Most clients in one room; more get 4003.
    #[arg(long, env = "STRATUS_MAX_CLIENTS_PER_ROOM", default_value_t = 128)]
    pub max_clients_per_room: usize,

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
    #[arg(long, env = "STRATUS_BYTE_RATE", default_value_t = 2.0 * 1024.0 * 1024.0)]
    pub byte_rate: f64,

    /// Bytes a connection may send at once before the byte rate applies.
    #[arg(long, env = "STRATUS_BYTE_BURST", default_value_t = 4.0 * 1024.0 * 1024.0)]
    pub byte_burst: f64,

    /// Largest incoming WebSocket message in bytes; larger ones close with 1009.
    #[arg(long, env = "STRATUS_MAX_MESSAGE_SIZE", default_value_t = 1024 * 1024)]
    pub max_message_size: usize,

    /// Per-connection read buffer in bytes. Small keeps idle connections cheap; messages larger
    /// than this are still read whole.
    #[arg(long, env = "STRATUS_READ_BUFFER_SIZE", default_value_t = 1024)]
    pub read_buffer_size: usize,

    /// Seconds a client has for its HTTP upgrade, and then again for its handshake message.
    #[arg(long, env = "STRATUS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds between WebSocket pings; a client that did not answer the previous ping is
    /// closed.
    #[arg(long, env = "STRATUS_PING_INTERVAL", default_value_t = 30)]
    pub ping_interval: u64,

    /// Seconds a client may leave our output unread before it is disconnected.
    #[arg(long, env = "STRATUS_WRITE_STALL_TIMEOUT", default_value_t = 60)]
    pub write_stall_timeout: u64,

    /// Seconds an empty room keeps its variables after the last client leaves.
    #[arg(long, env = "STRATUS_EMPTY_ROOM_TTL", default_value_t = 3600)]
    pub empty_room_ttl: u64,

    /// Accept any string as a value, not only numbers.
    #[arg(long, env = "STRATUS_ALLOW_NON_NUMERIC")]
    pub allow_non_numeric: bool,

    /// Accept `rename` messages (otherwise ignored).
    #[arg(long, env = "STRATUS_ENABLE_RENAME")]
    pub enable_rename: bool,

    /// Accept `delete` messages (otherwise ignored).
    #[arg(long, env = "STRATUS_ENABLE_DELETE")]
    pub enable_delete: bool,

    /// Close clients that send no User-Agent header with 4006.
    #[arg(long, env = "STRATUS_REQUIRE_USER_AGENT")]
    pub require_user_agent: bool,

    /// Comma-separated Origin values allowed to connect; others get HTTP 403. Requests without
    /// an Origin header (non-browser clients) are allowed. Default: any origin.
    #[arg(long, env = "STRATUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

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
}

impl Config {
    /// The defaults, as if run with no arguments and no environment; for tests and benches.
    pub fn defaults() -> Self {
        Config::parse_from(["stratus"])
    }
}
