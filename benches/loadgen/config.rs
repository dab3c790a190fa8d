//! Command line, the standard scenarios, and the checks done before any socket is opened
//! (loopback-only target, sane numbers). Produces a [`Config`]; knows nothing about sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

const AFTER_HELP: &str = "\
STANDARD SCENARIOS (--scenario N fills in these flags; flags given explicitly still win):
  1  100 rooms x 10 clients x 10 sets/s, 8 variables
  2  100 rooms x 10 clients x 60 sets/s, 8 variables
  3  10 rooms x 128 clients x 2 sets/s, 8 variables
  4  saturation: scenario 3 run in steps by the generator itself, the rate multiplied by
     --step-factor each step (2, 4, 8, ... sets/s per client), until delivered sets/s stop
     rising (less than +5 %), p99 latency exceeds --p99-limit-ms, the generator itself uses
     a whole core, or --max-steps is reached (same as: --scenario 3 --saturate --vars 128).
     It uses 128 variables (the usual per-room limit) because a server that coalesces sends
     each variable at most once per tick: with 8 variables delivery stops rising long before
     the server is busy. The run also stops, saying so, when frames carry every variable.
  5  idle memory: 500 rooms x 30 clients, silent (handshake, then nothing); give
     --server-pid to get the server's RSS per connection

HOW TO RUN (server and generator pinned to different cores):
  cargo build --release
  taskset -c 0 target/release/stratus --listen 127.0.0.1:9080 &
  taskset -c 1 cargo bench --bench loadgen -- --scenario 1 --server-pid $!

Every set's value is its send time (microseconds since the generator started), so receivers
measure end-to-end latency. The result is a table plus one line starting with LOADGEN_RESULT
followed by JSON (in saturation mode one per step, then one LOADGEN_SATURATION line).
Run without any argument (as plain `cargo bench` or `cargo test --benches` do), it only prints
a note and exits, because it needs a running server.";

/// Command-line flags. Options without a default here take theirs from `--scenario`, else
/// from scenario 1.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for Scratch 3 cloud-variable servers (stratus, TurboWarp cloud-server, ...)",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// WebSocket URL of the server. Only loopback hosts are accepted (127.0.0.0/8, ::1,
    /// localhost); wss:// speaks TLS without checking the certificate.
    #[arg(long, default_value = "ws://127.0.0.1:9080/")]
    pub url: String,

    /// Several servers of one cluster instead of --url: comma-separated WebSocket URLs or
    /// HOST:PORT (ws://HOST:PORT/). The clients of each room are spread over them
    /// round-robin (client k of a room goes to server k mod N), so every room spans them.
    #[arg(long, value_delimiter = ',', conflicts_with = "url")]
    pub servers: Vec<String>,

    /// Start from standard scenario N (1-5, listed below).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub scenario: Option<u8>,

    /// Number of rooms (Scratch project ids). [default: 100]
    #[arg(long)]
    pub rooms: Option<u32>,

    /// Clients per room. [default: 10]
    #[arg(long)]
    pub clients: Option<u32>,

    /// Sets per second sent by each client; may be fractional (0.5 = one set every 2 s).
    /// Sends of all clients are staggered evenly over time. [default: 10]
    #[arg(long)]
    pub rate: Option<f64>,

    /// Cloud variables per room, named "☁ v0", "☁ v1", ... [default: 8; scenario 4: 128]
    #[arg(long)]
    pub vars: Option<u32>,

    /// How each client picks the variable of its next set.
    #[arg(long, value_enum, default_value_t = VarOrder::RoundRobin)]
    pub var_order: VarOrder,

    /// Clients only connect and handshake, then send nothing (idle-memory measurement).
    #[arg(long)]
    pub silent: bool,

    /// Seconds over which the connections are opened, evenly spaced. [default: 2; scenario
    /// 5: 6]
    #[arg(long, conflicts_with = "connect_rate")]
    pub ramp: Option<f64>,

    /// Open this many connections per second instead of giving --ramp.
    #[arg(long)]
    pub connect_rate: Option<f64>,

    /// Seconds of unmeasured load after all connections are open. [default: 3; scenarios 4,
    /// 5: 2]
    #[arg(long)]
    pub warmup: Option<f64>,

    /// Seconds of the measured window. [default: 10; scenarios 4, 5: 5]
    #[arg(long)]
    pub duration: Option<f64>,

    /// Prefix of the room ids; room N is "<prefix><N as 6 digits>". Keep it numeric for
    /// servers that only accept numeric project ids (TurboWarp's does). [default: 8 digits
    /// from the clock, different every second]
    #[arg(long)]
    pub room_prefix: Option<String>,

    /// PID of the server process: report its CPU time over the measured window (from
    /// /proc/PID/stat) and its RSS before, under load and after closing (/proc/PID/status).
    /// It must be the server itself: `$!` after `taskset -c 0 stratus &` is (taskset execs),
    /// after `timeout ... stratus &` or `(cd x && stratus) &` it is a wrapper. Repeat it or
    /// give a comma-separated list for several processes (the nodes of a cluster, Redis):
    /// the report gives their sum and each one.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Parse every Nth received frame for latency (all frames are counted).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample_every: u32,

    /// Seconds after the ramp after which connections still not open count as failed.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Seconds to wait after closing all connections before reading the server's RSS.
    #[arg(long, default_value_t = 1.5)]
    pub settle: f64,

    /// Never sleep in poll (timeout 0): the generator spins on its core, so the server's
    /// writes never find it asleep. On loopback, waking a sleeping reader is work the kernel
    /// does in the writer's context (charged to the server); this takes it out of the
    /// measurement.
    #[arg(long)]
    pub busy_poll: bool,

    /// Hard limit in seconds for a run (each step in saturation mode); the run is cut short
    /// and reported as aborted when reached. [default: all phases + connect timeout + 30]
    #[arg(long)]
    pub time_limit: Option<f64>,

    /// Run in saturation mode: repeat the run with the rate multiplied by --step-factor.
    #[arg(long)]
    pub saturate: bool,

    /// Saturation mode: rate multiplier between steps.
    #[arg(long, default_value_t = 2.0)]
    pub step_factor: f64,

    /// Saturation mode: most steps to run.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub max_steps: u32,

    /// Saturation mode: stop once p99 latency exceeds this many milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,

    /// Passed by cargo to every harness=false bench; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VarOrder {
    /// Each client cycles through the variables in order.
    RoundRobin,
    /// Each set goes to a pseudo-random variable.
    Random,
}

/// Where to connect: already checked to be a loopback address.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Normalised URL, for reports.
    pub url: String,
    /// Value of the Host header of the upgrade request.
    pub host_header: String,
    /// Path and query of the upgrade request.
    pub path: String,
    /// `wss://`: speak TLS (the server's certificate is not checked; see `tls.rs`).
    pub tls: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Saturation {
    pub step_factor: f64,
    pub max_steps: u32,
    pub p99_limit_ms: f64,
}

/// Everything one run needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub scenario: Option<u8>,
    /// One server, or the nodes of a cluster (never empty).
    pub targets: Vec<Target>,
    pub rooms: u32,
    pub clients: u32,
    pub rate: f64,
    pub vars: u32,
    pub var_order: VarOrder,
    pub silent: bool,
    pub ramp: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub room_prefix: String,
    pub server_pids: Vec<u32>,
    pub sample_every: u32,
    pub connect_timeout: Duration,
    pub settle: Duration,
    pub busy_poll: bool,
    pub time_limit: Duration,
    pub saturation: Option<Saturation>,
}

/// Defaults that differ between scenarios.
struct Preset {
    rooms: u32,
    clients: u32,
    rate: f64,
    vars: u32,
    silent: bool,
    saturate: bool,
    ramp: f64,
    warmup: f64,
    duration: f64,
}

fn preset(scenario: Option<u8>) -> Preset {
    let base = Preset {
        rooms: 100,
        clients: 10,
        rate: 10.0,
        vars: 8,
        silent: false,
        saturate: false,
        ramp: 2.0,
        warmup: 3.0,
        duration: 10.0,
    };
    match scenario {
        Some(2) => Preset { rate: 60.0, ..base },
        Some(3) => Preset {
            rooms: 10,
            clients: 128,
            rate: 2.0,
            ..base
        },
        Some(4) => Preset {
            rooms: 10,
            clients: 128,
            rate: 2.0,
            vars: 128,
            saturate: true,
            warmup: 2.0,
            duration: 5.0,
            ..base
        },
        Some(5) => Preset {
            rooms: 500,
            clients: 30,
            silent: true,
            ramp: 6.0,
            warmup: 2.0,
            duration: 5.0,
            ..base
        },
        _ => base,
    }
}

/// Upper bound on total sends per second: beyond this the schedule itself is meaningless.
const MAX_SENDS_PER_SEC: f64 = 20_000_000.0;
const MAX_CONNECTIONS: u64 = 1_000_000;

impl Config {
    pub fn from_args(args: Args) -> Result<Self, String> {
        let p = preset(args.scenario);
        let rooms = args.rooms.unwrap_or(p.rooms);
        let clients = args.clients.unwrap_or(p.clients);
        let rate = args.rate.unwrap_or(p.rate);
        let vars = args.vars.unwrap_or(p.vars);
        let silent = args.silent || p.silent;
        if rooms == 0 || clients == 0 {
            return Err("--rooms and --clients must be at least 1".into());
        }
        let connections = u64::from(rooms) * u64::from(clients);
        if connections > MAX_CONNECTIONS {
            return Err(format!(
                "{connections} connections requested; at most {MAX_CONNECTIONS} are supported"
            ));
        }
        if !(1..=100_000).contains(&vars) {
            return Err("--vars must be between 1 and 100000".into());
        }
        let rate_valid = rate.is_finite() && rate > 0.0;
        if !silent && !rate_valid {
            return Err("--rate must be a positive number (or use --silent)".into());
        }
        if !silent && rate * connections as f64 > MAX_SENDS_PER_SEC {
            return Err(format!(
                "{rooms} rooms x {clients} clients x {rate} sets/s is more than \
                 {MAX_SENDS_PER_SEC} sets/s in total"
            ));
        }
        let ramp = match args.connect_rate {
            Some(per_sec) if per_sec.is_finite() && per_sec > 0.0 => connections as f64 / per_sec,
            Some(_) => return Err("--connect-rate must be a positive number".into()),
            None => args.ramp.unwrap_or(p.ramp),
        };
        let ramp = seconds("--ramp", ramp)?;
        let warmup = seconds("--warmup", args.warmup.unwrap_or(p.warmup))?;
        let duration = seconds("--duration", args.duration.unwrap_or(p.duration))?;
        if duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        let connect_timeout = seconds("--connect-timeout", args.connect_timeout)?;
        let settle = seconds("--settle", args.settle)?;
        let natural = ramp + warmup + duration + connect_timeout + settle + CLOSE_GRACE;
        let time_limit = match args.time_limit {
            Some(limit) => seconds("--time-limit", limit)?,
            None => natural + Duration::from_secs(30),
        };
        let saturate = args.saturate || p.saturate;
        if saturate && silent {
            return Err("--saturate makes no sense with --silent".into());
        }
        if saturate && !(args.step_factor.is_finite() && args.step_factor > 1.0) {
            return Err("--step-factor must be more than 1".into());
        }
        let room_prefix = args.room_prefix.unwrap_or_else(default_room_prefix);
        if room_prefix.len() > 64 || room_prefix.chars().any(|c| c == '"' || c == '\\') {
            return Err("--room-prefix must be at most 64 characters, without '\"' or '\\'".into());
        }
        Ok(Config {
            scenario: args.scenario,
            targets: parse_targets(&args.url, &args.servers)?,
            rooms,
            clients,
            rate: if silent { 0.0 } else { rate },
            vars,
            var_order: args.var_order,
            silent,
            ramp,
            warmup,
            duration,
            room_prefix,
            server_pids: args.server_pid,
            sample_every: args.sample_every,
            connect_timeout,
            settle,
            busy_poll: args.busy_poll,
            time_limit,
            saturation: saturate.then_some(Saturation {
                step_factor: args.step_factor,
                max_steps: args.max_steps,
                p99_limit_ms: args.p99_limit_ms,
            }),
        })
    }

    pub fn connections(&self) -> u32 {
        self.rooms * self.clients
    }

    /// The server client number `client` connects to: the clients of a room take the servers
    /// in turn, so that each room spans all of them.
    pub fn target_of(&self, client: u32) -> &Target {
        let member = client % self.clients;
        let index = member as usize % self.targets.len();
        &self.targets[index]
    }

    /// Every server's URL, comma-separated, for reports.
    pub fn urls(&self) -> String {
        let urls: Vec<&str> = self.targets.iter().map(|t| t.url.as_str()).collect();
        urls.join(",")
    }
}

/// `--servers` if given (bare `HOST:PORT` meaning `ws://HOST:PORT/`), else `--url`.
fn parse_targets(url: &str, servers: &[String]) -> Result<Vec<Target>, String> {
    if servers.is_empty() {
        return Ok(vec![parse_target(url)?]);
    }
    servers
        .iter()
        .map(|server| {
            let server = server.trim();
            if server.contains("://") {
                parse_target(server)
            } else {
                parse_target(&format!("ws://{server}/"))
            }
        })
        .collect()
}

/// How long closing handshakes may take before sockets are simply dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a non-negative number of seconds, got {value}"))
}

/// Digits only, so that servers accepting only numeric project ids take the rooms, and
/// different from one second to the next, so that runs do not share rooms.
fn default_room_prefix() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:08}", secs % 100_000_000)
}

/// Parses `ws://host[:port][/path]` and refuses every host that is not on this machine: the
/// generator is a load tool and must never be pointed at someone else's server.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let lower = url.to_ascii_lowercase();
    let tls = lower.starts_with("wss://");
    if !tls && !lower.starts_with("ws://") {
        return Err(format!(
            "--url must start with ws:// or wss://, got {url:?}"
        ));
    }
    let scheme = if tls { "wss" } else { "ws" };
    let rest = &url[scheme.len() + 3..];
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| not_loopback(host))?
    };
    if !ip.is_loopback() {
        return Err(not_loopback(host));
    }
    let url_host = match ip {
        IpAddr::V6(_) => format!("[{ip}]"),
        IpAddr::V4(_) => host.to_string(),
    };
    let host_header = format!("{url_host}:{port}");
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        url: format!("{scheme}://{host_header}{path}"),
        host_header,
        path,
        tls,
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("bad IPv6 host in --url: {authority:?}"))?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("bad host:port in --url: {authority:?}")),
        };
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("--url has no host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("bad port in --url: {p:?}"))?,
    };
    Ok((host, port))
}

fn not_loopback(host: &str) -> String {
    format!(
        "refusing to target {host:?}: the load generator only connects to this machine \
         (127.0.0.0/8, ::1 or localhost)"
    )
}
