//! Counters and histograms owned by the event loop, rendered as Prometheus text on request.
//!
//! Plain integers in one struct the loop owns: the per-message path gains no locks and no
//! allocations (a close code or refusal reason seen for the first time takes a slot in a small
//! list). Gauges (connections by dialect and phase, rooms, variables, process figures) are not
//! kept at all: they are read when `/metrics` is asked for.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;

use crate::engine::Engine;
use crate::store::StoreStats;

/// Counters the loop increments as things happen.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    pub accepted: u64,
    closed_by_code: SmallVec<[(u16, u64); 16]>,
    /// Connections that ended without a close frame (reset, EOF, stalled writer).
    pub dropped: u64,
    refused_by_reason: SmallVec<[(&'static str, u64); 16]>,
    /// Connections closed for exceeding the message or byte rate.
    pub rate_limited: u64,
    /// One per connection per flush that was handed a frame.
    pub deliveries: u64,
    /// Flushes that skipped a connection because it was behind.
    pub deliveries_skipped: u64,
    /// Bytes written by connections that are gone (live ones are added when rendering).
    pub bytes_written_closed: u64,
    pub tick: Histogram,
    pub busy: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: SystemTime::now(),
            accepted: 0,
            closed_by_code: SmallVec::new(),
            dropped: 0,
            refused_by_reason: SmallVec::new(),
            rate_limited: 0,
            deliveries: 0,
            deliveries_skipped: 0,
            bytes_written_closed: 0,
            tick: Histogram::new(&LATENCY_BUCKETS),
            busy: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// Seconds: 50 µs to 1 s.
const LATENCY_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0,
];

impl Metrics {
    /// A close frame with `code` was sent.
    pub fn closed(&mut self, code: u16) {
        bump(&mut self.closed_by_code, code);
    }

    /// A handshake was refused (or never came) for `reason`.
    pub fn refused(&mut self, reason: &'static str) {
        bump(&mut self.refused_by_reason, reason);
    }
}

fn bump<K: PartialEq>(counts: &mut SmallVec<[(K, u64); 16]>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

/// A Prometheus histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: SmallVec<[u64; 10]>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| 0).collect(),
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| seconds <= b) {
            if let Some(count) = self.counts.get_mut(i) {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the loop reads at scrape time, beside the counters.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (dialect, phase) → open connections.
    pub connections: Vec<((&'static str, &'static str), u64)>,
    pub bytes_written_live: u64,
    pub rooms: u64,
    pub variables: u64,
    pub sets_applied: u64,
    /// (reason, count).
    pub sets_ignored: Vec<(&'static str, u64)>,
    /// (project, rule, count): sets a project's rules refused.
    pub rule_refusals: Vec<(String, &'static str, u64)>,
    pub parked_sessions: u64,
    /// Parked sessions ended before their window, to make room for a live client or another.
    pub parked_sessions_ended: u64,
    /// Writes the loop's per-turn byte budget cut short (they continued the next turn).
    pub writes_deferred: u64,
    /// Renderings of a whole room made for full-state replies.
    pub full_renders: u64,
    /// History entries dropped: more than `--history` waited for the backend, or the state
    /// budget had no room for them.
    pub history_dropped: u64,
    /// Bytes of renderings that only blocked connections held at the last census.
    pub render_bytes_held: u64,
    /// HTTP API reads answered 503 because as many backend reads as allowed were out.
    pub api_reads_refused: u64,
    pub store: Option<StoreSnapshot>,
    pub cluster: Option<crate::cluster::ClusterStats>,
}

#[derive(Debug, Default)]
pub struct StoreSnapshot {
    pub batches_saved: u64,
    pub variables_saved: u64,
    pub save_failures: u64,
    pub rooms_loaded: u64,
    pub load_failures: u64,
    /// Rooms with changes not on disk yet.
    pub rooms_unsaved: u64,
    /// Seconds since the oldest unsaved change was made, roughly: since the last save.
    pub lag_seconds: f64,
}

impl Snapshot {
    /// The engine's figures and the open connections, each given as its (dialect, phase) and
    /// the bytes written to it; the loop adds what only it knows.
    pub fn read(
        engine: &Engine,
        connections: impl Iterator<Item = ((&'static str, &'static str), u64)>,
    ) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (key, bytes_written) in connections {
            match snapshot.connections.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => snapshot.connections.push((key, 1)),
            }
            snapshot.bytes_written_live += bytes_written;
        }
        snapshot.connections.sort();
        let stats = &engine.stats;
        let counted = stats.invalid_names
            + stats.invalid_values
            + stats.too_many_variables
            + stats.rule_violations
            + stats.unknown_variables;
        snapshot.rooms = engine.room_count() as u64;
        snapshot.variables = engine.variable_total() as u64;
        snapshot.sets_applied = stats.sets_applied;
        snapshot.sets_ignored = vec![
            ("invalid_name", stats.invalid_names),
            ("invalid_value", stats.invalid_values),
            ("too_many_variables", stats.too_many_variables),
            ("rule_violated", stats.rule_violations),
            ("unknown_variable", stats.unknown_variables),
            ("malformed", stats.sets_rejected.saturating_sub(counted)),
        ];
        snapshot.rule_refusals = engine
            .refusals
            .iter()
            .map(|(project, rule, n)| (project.to_owned(), rule.name(), n))
            .collect();
        snapshot.full_renders = stats.full_renders;
        snapshot.history_dropped = engine.history_dropped();
        snapshot.render_bytes_held = engine.held_render_bytes() as u64;
        snapshot
    }
}

impl StoreSnapshot {
    /// The store's counters, and the engine's rooms not on disk yet; `since_saved` is the time
    /// since the store last saved.
    pub fn read(stats: &StoreStats, engine: &Engine, since_saved: Duration) -> StoreSnapshot {
        StoreSnapshot {
            batches_saved: stats.batches_saved,
            variables_saved: stats.variables_saved,
            save_failures: stats.save_failures,
            rooms_loaded: stats.rooms_loaded,
            load_failures: stats.load_failures,
            rooms_unsaved: engine.unsaved_rooms() as u64,
            lag_seconds: if engine.has_unsaved() {
                since_saved.as_secs_f64()
            } else {
                0.0
            },
        }
    }
}

/// The page: counters, the snapshot and the `process_*` metrics.
pub fn render(metrics: &Metrics, snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP stratus_connections_open Open connections by dialect and phase.\n# TYPE stratus_connections_open gauge"
    );
    for ((dialect, phase), n) in &snapshot.connections {
        let _ = writeln!(
            out,
            "stratus_connections_open{{dialect=\"{dialect}\",phase=\"{phase}\"}} {n}"
        );
    }
    let counter = |out: &mut String, name: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        &mut out,
        "stratus_writes_deferred_total",
        "Bulk writes cut short by the per-turn write budget, continued the next turn.",
        snapshot.writes_deferred.to_string(),
    );
    counter(
        &mut out,
        "stratus_parked_sessions_ended_total",
        "Parked MultiStudio sessions ended early for a live client or to park a newer one.",
        snapshot.parked_sessions_ended.to_string(),
    );
    counter(
        &mut out,
        "stratus_connections_accepted_total",
        "Connections accepted.",
        metrics.accepted.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP stratus_connections_closed_total Connections closed, by the close code sent (none: ended without one).\n# TYPE stratus_connections_closed_total counter"
    );
    for (code, n) in &metrics.closed_by_code {
        let _ = writeln!(
            out,
            "stratus_connections_closed_total{{code=\"{code}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "stratus_connections_closed_total{{code=\"none\"}} {}",
        metrics.dropped
    );
    let _ = writeln!(
        out,
        "# HELP stratus_handshakes_refused_total Connections closed before joining, by reason.\n# TYPE stratus_handshakes_refused_total counter"
    );
    for (reason, n) in &metrics.refused_by_reason {
        let _ = writeln!(
            out,
            "stratus_handshakes_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    for (name, help, value) in [
        ("stratus_rooms", "Rooms in memory.", snapshot.rooms),
        (
            "stratus_variables",
            "Variables in memory.",
            snapshot.variables,
        ),
        (
            "stratus_parked_sessions",
            "MultiStudio sessions waiting for their client to reconnect.",
            snapshot.parked_sessions,
        ),
        (
            "stratus_render_bytes_held",
            "Bytes of whole-room renderings that only clients not reading them keep alive \
             (counted against --max-state-memory; measured once a second).",
            snapshot.render_bytes_held,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let received =
        snapshot.sets_applied + snapshot.sets_ignored.iter().map(|(_, n)| n).sum::<u64>();
    counter(
        &mut out,
        "stratus_sets_received_total",
        "Sets received, in every dialect.",
        received.to_string(),
    );
    counter(
        &mut out,
        "stratus_sets_applied_total",
        "Sets that changed a variable.",
        snapshot.sets_applied.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP stratus_sets_ignored_total Sets not applied, by reason.\n# TYPE stratus_sets_ignored_total counter"
    );
    for (reason, n) in &snapshot.sets_ignored {
        let _ = writeln!(out, "stratus_sets_ignored_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP stratus_rule_refusals_total Sets refused by a project's rules, by project and rule.\n# TYPE stratus_rule_refusals_total counter"
    );
    for (project, rule, n) in &snapshot.rule_refusals {
        let _ = writeln!(
            out,
            "stratus_rule_refusals_total{{project=\"{}\",rule=\"{rule}\"}} {n}",
            label_value(project)
        );
    }
    counter(
        &mut out,
        "stratus_rate_limit_closes_total",
        "Connections closed for sending too many messages or bytes.",
        metrics.rate_limited.to_string(),
    );
    counter(
        &mut out,
        "stratus_full_renders_total",
        "Renderings of a whole room made for joins, cloud.get and JOIN_ROOM (the others were shared).",
        snapshot.full_renders.to_string(),
    );
    counter(
        &mut out,
        "stratus_history_dropped_total",
        "History entries dropped before they were stored: more than --history waited, or room state was at its memory budget.",
        snapshot.history_dropped.to_string(),
    );
    counter(
        &mut out,
        "stratus_api_reads_refused_total",
        "HTTP API reads answered 503 because 64 reads of the durable backend were already out.",
        snapshot.api_reads_refused.to_string(),
    );
    counter(
        &mut out,
        "stratus_deliveries_total",
        "Fan-out frames handed to connections (one per connection per flush).",
        metrics.deliveries.to_string(),
    );
    counter(
        &mut out,
        "stratus_deliveries_skipped_total",
        "Fan-out frames not built or sent because the connection was behind.",
        metrics.deliveries_skipped.to_string(),
    );
    counter(
        &mut out,
        "stratus_bytes_written_total",
        "Bytes written to clients.",
        (metrics.bytes_written_closed + snapshot.bytes_written_live).to_string(),
    );
    metrics.tick.render(
        &mut out,
        "stratus_flush_duration_seconds",
        "Time to flush changed rooms to their members.",
    );
    metrics.busy.render(
        &mut out,
        "stratus_loop_busy_seconds",
        "Time the event loop worked per iteration (between waits).",
    );
    if let Some(store) = &snapshot.store {
        for (name, help, value) in [
            (
                "stratus_store_batches_saved_total",
                "Batches written to disk.",
                store.batches_saved,
            ),
            (
                "stratus_store_variables_saved_total",
                "Variables written to disk.",
                store.variables_saved,
            ),
            (
                "stratus_store_errors_total",
                "Failed writes and loads (retried).",
                store.save_failures + store.load_failures,
            ),
            (
                "stratus_store_rooms_loaded_total",
                "Rooms loaded from disk on join.",
                store.rooms_loaded,
            ),
        ] {
            counter(&mut out, name, help, value.to_string());
        }
        let _ = writeln!(
            out,
            "# HELP stratus_store_rooms_unsaved Rooms with changes not on disk yet.\n# TYPE stratus_store_rooms_unsaved gauge\nstratus_store_rooms_unsaved {}",
            store.rooms_unsaved
        );
        let _ = writeln!(
            out,
            "# HELP stratus_store_lag_seconds How far the disk is behind memory.\n# TYPE stratus_store_lag_seconds gauge\nstratus_store_lag_seconds {}",
            store.lag_seconds
        );
    }
    if let Some(cluster) = &snapshot.cluster {
        render_cluster(&mut out, cluster);
    }
    render_process(&mut out, metrics.started);
    out
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `--cluster`: the Redis link's health and traffic.
fn render_cluster(out: &mut String, cluster: &crate::cluster::ClusterStats) {
    let rows: [(&str, &str, &str, String); 8] = [
        (
            "stratus_cluster_connected",
            "gauge",
            "Whether Redis answers (1) or not (0).",
            u8::from(cluster.connected).to_string(),
        ),
        (
            "stratus_cluster_round_trip_seconds",
            "gauge",
            "Round trip of the last round (one pipeline) to Redis.",
            (cluster.last_round_trip_us as f64 / 1e6).to_string(),
        ),
        (
            "stratus_cluster_rounds_total",
            "counter",
            "Rounds (pipelines) sent to Redis.",
            cluster.rounds.to_string(),
        ),
        (
            "stratus_cluster_batches_out_total",
            "counter",
            "Room batches this node applied in Redis.",
            cluster.batches_out.to_string(),
        ),
        (
            "stratus_cluster_batches_in_total",
            "counter",
            "Room batches received from Redis (this node's own included).",
            cluster.batches_in.to_string(),
        ),
        (
            "stratus_cluster_room_reads_total",
            "counter",
            "Rooms read from Redis: one per room a join brought into memory, more after gaps, \
             outages or lost subscriptions.",
            cluster.room_reads.to_string(),
        ),
        (
            "stratus_cluster_outage_seconds_total",
            "counter",
            "Seconds Redis was unreachable.",
            cluster.outage_seconds.to_string(),
        ),
        (
            "stratus_cluster_outages_total",
            "counter",
            "Times Redis became unreachable.",
            cluster.outages.to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// The standard `process_*` metrics, from /proc.
fn render_process(out: &mut String, started: SystemTime) {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which may contain spaces, closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after ')'.
    let cpu = (field(11) + field(12)) as f64 / ticks;
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * page;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let start = started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for (name, kind, help, value) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("{cpu}"),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident.to_string(),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.to_string(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{start}"),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
