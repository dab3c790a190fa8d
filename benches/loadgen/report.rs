//! Turns a [`RunResult`] into the derived numbers (rates, ratios, CPU per set, RSS per
//! connection), then prints them as a table and as one `LOADGEN_RESULT {json}` line.

use serde_json::{json, Value};

use crate::config::{Config, VarOrder};
use crate::driver::{RunResult, ServerUsage};
use crate::sysinfo::CpuTimes;

/// A frame with at least this share of all variables counts as full.
const FULL_FRAME_SHARE: f64 = 0.9;

/// Generator CPU above which the table warns that the generator may be the bottleneck.
pub const GENERATOR_BUSY_PCT: f64 = 90.0;

/// The numbers of one run, derived once for the table, the JSON and the saturation loop.
pub struct Summary {
    pub step: Option<u32>,
    pub rate: f64,
    pub room_prefix: String,
    pub window_s: f64,
    pub attempted: u64,
    pub opened: u64,
    pub failed: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub frames_per_s: f64,
    pub sets_per_frame: Option<f64>,
    pub delivery_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub own_cpu_pct: f64,
    /// Frames carry (nearly) every variable: a coalescing server cannot deliver more sets.
    pub frames_full: bool,
    pub json: Value,
    table: String,
}

impl Summary {
    pub fn new(cfg: &Config, r: &RunResult, step: Option<u32>) -> Self {
        let window_s = r.window.as_secs_f64();
        let per_s = |n: u64| {
            if window_s > 0.0 {
                n as f64 / window_s
            } else {
                0.0
            }
        };
        let c = &r.counters;
        let ratio = (cfg.clients > 1 && c.sets_sent > 0)
            .then(|| c.sets_received as f64 / (c.sets_sent as f64 * f64::from(cfg.clients - 1)));
        let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
        let failed = r.conns.failed.values().sum();
        let own_cpu_pct = pct(r.own_cpu.total(), window_s).unwrap_or(0.0);
        let sets_per_frame = (c.frames > 0).then(|| c.sets_received as f64 / c.frames as f64);
        let mut s = Summary {
            step,
            rate: r.rate,
            room_prefix: r.room_prefix.clone(),
            window_s,
            attempted: r.conns.attempted,
            opened: r.conns.opened,
            failed,
            sent_per_s: per_s(c.sets_sent),
            delivered_per_s: per_s(c.sets_received),
            frames_per_s: per_s(c.frames),
            sets_per_frame,
            frames_full: sets_per_frame.is_some_and(|spf| {
                // More sets than variables per frame means the server does not coalesce.
                let vars = f64::from(cfg.vars);
                spf >= FULL_FRAME_SHARE * vars && spf <= vars
            }),
            delivery_ratio: ratio,
            p50_ms: ms(r.latency.quantile(0.50)),
            p99_ms: ms(r.latency.quantile(0.99)),
            p999_ms: ms(r.latency.quantile(0.999)),
            max_ms: ms((r.latency.count() > 0).then(|| r.latency.max())),
            own_cpu_pct,
            json: Value::Null,
            table: String::new(),
        };
        let server = ServerNumbers::new(r, r.conns.open_at_window_end, window_s, c);
        s.json = s.to_json(cfg, r, &server);
        s.table = s.to_table(cfg, r, &server);
        s
    }

    pub fn print(&self) {
        println!("{}", self.table);
        println!("LOADGEN_RESULT {}", self.json);
    }

    fn to_json(&self, cfg: &Config, r: &RunResult, server: &ServerNumbers) -> Value {
        let c = &r.counters;
        json!({
            "step": self.step,
            "scenario": cfg.scenario,
            "url": cfg.urls(),
            "rooms": cfg.rooms,
            "clients_per_room": cfg.clients,
            "rate_per_client": round(self.rate, 4),
            "vars": cfg.vars,
            "var_order": var_order_name(cfg.var_order),
            "silent": cfg.silent,
            "room_prefix": self.room_prefix,
            "ramp_s": cfg.ramp.as_secs_f64(),
            "warmup_s": cfg.warmup.as_secs_f64(),
            "window_s": round(self.window_s, 3),
            "connections": {
                "attempted": self.attempted,
                "opened": self.opened,
                "failed": self.failed,
                "failed_by_reason": r.conns.failed,
                "closed_by_server": r.server_close_codes.iter()
                    .map(|(code, n)| (code.to_string(), *n))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "broken_by_reason": r.conns.broken,
                "ended_early": r.conns.ended_early,
                "open_at_window_end": r.conns.open_at_window_end,
            },
            "sets_sent": c.sets_sent,
            "sets_sent_per_s": round(self.sent_per_s, 1),
            "sends_dropped": c.sends_dropped,
            "sends_skipped_generator_behind": c.sends_skipped,
            "sets_delivered": c.sets_received,
            "sets_delivered_per_s": round(self.delivered_per_s, 1),
            "frames_received_per_s": round(self.frames_per_s, 1),
            "binary_frames": c.binary_frames,
            "bytes_received_per_s": round(c.bytes_received as f64 / self.window_s.max(1e-9), 0),
            "sets_per_frame": self.sets_per_frame.map(|v| round(v, 3)),
            "frames_carry_every_variable": self.frames_full,
            "delivery_ratio": self.delivery_ratio.map(|v| round(v, 4)),
            "latency_ms": {
                "p50": self.p50_ms,
                "p99": self.p99_ms,
                "p99_9": self.p999_ms,
                "max": self.max_ms,
                "samples": r.latency.count(),
                "unmatched_samples": r.unmatched_samples,
            },
            "server": server.json(),
            "generator": {
                "cpu_user_s": round(r.own_cpu.user, 3),
                "cpu_system_s": round(r.own_cpu.system, 3),
                "cpu_pct_of_core": round(self.own_cpu_pct, 1),
                "max_send_lag_ms": round(r.max_send_lag.as_secs_f64() * 1000.0, 3),
            },
            "aborted": r.aborted,
        })
    }

    fn to_table(&self, cfg: &Config, r: &RunResult, server: &ServerNumbers) -> String {
        let c = &r.counters;
        let mut t = String::new();
        let mut line = |label: &str, text: String| t.push_str(&format!("  {label:<16}{text}\n"));
        let step = self.step.map_or(String::new(), |s| format!(" step {s}"));
        let load = if cfg.silent {
            "silent".to_string()
        } else {
            format!(
                "{} sets/s per client over {} vars ({})",
                trim_float(self.rate),
                cfg.vars,
                var_order_name(cfg.var_order)
            )
        };
        line(
            "run",
            format!(
                "{}{step}: {} rooms x {} clients, {load}",
                cfg.urls(),
                cfg.rooms,
                cfg.clients
            ),
        );
        line(
            "window",
            format!(
                "{:.2} s measured (ramp {:.1} s, warm-up {:.1} s), rooms {}NNNNNN",
                self.window_s,
                cfg.ramp.as_secs_f64(),
                cfg.warmup.as_secs_f64(),
                self.room_prefix
            ),
        );
        line("connections", connections_text(self, r));
        line(
            "sets sent",
            format!(
                "{}/s ({} dropped: server not reading; {} skipped: generator over 1 s behind)",
                num(self.sent_per_s),
                c.sends_dropped,
                c.sends_skipped
            ),
        );
        line(
            "sets delivered",
            format!(
                "{}/s, delivery ratio {} of sent x (clients-1){}",
                num(self.delivered_per_s),
                opt(self.delivery_ratio, 3),
                if self.delivery_ratio.is_some_and(|v| v < 0.999) {
                    " (below 1: coalescing or loss)"
                } else {
                    ""
                }
            ),
        );
        line(
            "frames received",
            format!(
                "{}/s, {} sets per frame{}",
                num(self.frames_per_s),
                opt(self.sets_per_frame, 2),
                if self.frames_full {
                    " (nearly every variable in every frame: coalescing caps delivery)"
                } else {
                    ""
                }
            ),
        );
        line(
            "latency ms",
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                opt(self.p50_ms, 2),
                opt(self.p99_ms, 2),
                opt(self.p999_ms, 2),
                opt(self.max_ms, 2),
                r.latency.count()
            ),
        );
        for (label, text) in server.table_lines() {
            line(label, text);
        }
        let busy = if self.own_cpu_pct >= GENERATOR_BUSY_PCT {
            "  <- generator near its limit: results may understate the server"
        } else {
            ""
        };
        line(
            "generator CPU",
            format!(
                "{:.1} % of a core (user {:.2} s, sys {:.2} s), worst send lag {:.2} ms{busy}",
                self.own_cpu_pct,
                r.own_cpu.user,
                r.own_cpu.system,
                r.max_send_lag.as_secs_f64() * 1000.0
            ),
        );
        if let Some(reason) = &r.aborted {
            line("ABORTED", reason.clone());
        }
        t
    }
}

fn connections_text(s: &Summary, r: &RunResult) -> String {
    let mut text = format!(
        "{} opened / {} attempted, {} failed, {} open at window end",
        s.opened, s.attempted, s.failed, r.conns.open_at_window_end
    );
    for (reason, n) in &r.conns.failed {
        text.push_str(&format!("; failed {reason}: {n}"));
    }
    for (code, n) in &r.server_close_codes {
        text.push_str(&format!("; closed by server {code}: {n}"));
    }
    for (reason, n) in &r.conns.broken {
        text.push_str(&format!("; broken {reason}: {n}"));
    }
    if r.conns.ended_early > 0 {
        text.push_str(&format!("; ended early: {}", r.conns.ended_early));
    }
    text
}

/// Server CPU and memory figures, all optional: they need --server-pid and a readable /proc.
/// With several server processes (a cluster), the figures are their sums; `each` keeps every
/// process's own CPU and RSS.
struct ServerNumbers {
    pids: Vec<u32>,
    user_s: Option<f64>,
    system_s: Option<f64>,
    pct_user: Option<f64>,
    pct_system: Option<f64>,
    pct_total: Option<f64>,
    us_per_delivered: Option<f64>,
    us_per_sent: Option<f64>,
    rss_before: Option<u64>,
    rss_load: Option<u64>,
    rss_after: Option<u64>,
    rss_per_conn_kib: Option<f64>,
    /// Per process when there are several: pid, CPU % of a core, RSS under load.
    each: Vec<(u32, Option<f64>, Option<u64>)>,
    /// No CPU used while sets flowed: the PID is probably a wrapper, not the server.
    suspect_pids: Vec<u32>,
}

/// The sum of a reading over every process, if every process has it.
fn sum_all(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.sum()
}

impl ServerNumbers {
    fn new(r: &RunResult, connections: u64, window_s: f64, c: &crate::recv::Counters) -> Self {
        let servers = &r.servers;
        let some = !servers.is_empty();
        let cpu = servers.iter().try_fold(None, |sum: Option<CpuTimes>, u| {
            let c = u.cpu?;
            let sum = sum.unwrap_or_default();
            Some(Some(CpuTimes {
                user: sum.user + c.user,
                system: sum.system + c.system,
            }))
        });
        let cpu = cpu.flatten();
        let total = cpu.map(|c| c.total());
        let per = |n: u64| total.filter(|_| n > 0).map(|t| t * 1e6 / n as f64);
        let rss_sum = |get: fn(&ServerUsage) -> Option<u64>| {
            some.then(|| sum_all(servers.iter().map(get))).flatten()
        };
        let rss_before = rss_sum(|u| u.rss_before_kib);
        let rss_load = rss_sum(|u| u.rss_load_kib);
        let flowed = c.sets_received + c.sets_sent > 0;
        ServerNumbers {
            pids: servers.iter().map(|u| u.pid).collect(),
            user_s: cpu.map(|c| c.user),
            system_s: cpu.map(|c| c.system),
            pct_user: cpu.and_then(|c| pct(c.user, window_s)),
            pct_system: cpu.and_then(|c| pct(c.system, window_s)),
            pct_total: total.and_then(|t| pct(t, window_s)),
            us_per_delivered: per(c.sets_received),
            us_per_sent: per(c.sets_sent),
            rss_before,
            rss_load,
            rss_after: rss_sum(|u| u.rss_after_kib),
            rss_per_conn_kib: rss_before
                .zip(rss_load)
                .filter(|_| connections > 0)
                .map(|(before, load)| (load as f64 - before as f64) / connections as f64),
            each: if servers.len() > 1 {
                servers
                    .iter()
                    .map(|u| {
                        let pct_total = u.cpu.and_then(|c| pct(c.total(), window_s));
                        (u.pid, pct_total, u.rss_load_kib)
                    })
                    .collect()
            } else {
                Vec::new()
            },
            suspect_pids: servers
                .iter()
                .filter(|u| flowed && u.cpu.map(CpuTimes::total) == Some(0.0))
                .map(|u| u.pid)
                .collect(),
        }
    }

    fn json(&self) -> Value {
        if self.pids.is_empty() {
            return Value::Null;
        }
        let each: Vec<Value> = self
            .each
            .iter()
            .map(|(pid, pct_total, rss_load)| {
                json!({
                    "pid": pid,
                    "cpu_pct_total": pct_total.map(|v| round(v, 1)),
                    "rss_kib_under_load": rss_load,
                })
            })
            .collect();
        json!({
            "pid": self.pids.first(),
            "pids": self.pids,
            "cpu_user_s": self.user_s.map(|v| round(v, 3)),
            "cpu_system_s": self.system_s.map(|v| round(v, 3)),
            "cpu_pct_user": self.pct_user.map(|v| round(v, 1)),
            "cpu_pct_system": self.pct_system.map(|v| round(v, 1)),
            "cpu_pct_total": self.pct_total.map(|v| round(v, 1)),
            "cpu_us_per_delivered_set": self.us_per_delivered.map(|v| round(v, 4)),
            "cpu_us_per_sent_set": self.us_per_sent.map(|v| round(v, 3)),
            "rss_kib_before": self.rss_before,
            "rss_kib_under_load": self.rss_load,
            "rss_kib_after_close": self.rss_after,
            "rss_kib_per_connection": self.rss_per_conn_kib.map(|v| round(v, 3)),
            "suspect_pid": !self.suspect_pids.is_empty(),
            "each": each,
        })
    }

    fn table_lines(&self) -> Vec<(&'static str, String)> {
        if self.pids.is_empty() {
            return vec![(
                "server",
                "no --server-pid given: no CPU or memory figures".into(),
            )];
        }
        let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
        let pids = pids.join("+");
        let mut lines = Vec::new();
        for pid in &self.suspect_pids {
            lines.push((
                "WARNING",
                format!(
                    "pid {pid} used no CPU while sets flowed: is it the server itself, not a \
                     wrapper such as timeout, sudo or a subshell?"
                ),
            ));
        }
        lines.extend([
            (
                "server CPU",
                format!(
                    "pid {pids}: user {} s + sys {} s = {} % of a core (user {} %, sys {} %)",
                    opt(self.user_s, 2),
                    opt(self.system_s, 2),
                    opt(self.pct_total, 1),
                    opt(self.pct_user, 1),
                    opt(self.pct_system, 1)
                ),
            ),
            (
                "server CPU/set",
                format!(
                    "{} us per delivered set, {} us per sent set",
                    opt(self.us_per_delivered, 3),
                    opt(self.us_per_sent, 2)
                ),
            ),
            (
                "server RSS",
                format!(
                    "before {} MiB, under load {} MiB, after close {} MiB; {} KiB per connection",
                    opt(self.rss_before.map(mib), 1),
                    opt(self.rss_load.map(mib), 1),
                    opt(self.rss_after.map(mib), 1),
                    opt(self.rss_per_conn_kib, 2)
                ),
            ),
        ]);
        for (pid, pct_total, rss_load) in &self.each {
            lines.push((
                "  each",
                format!(
                    "pid {pid}: {} % of a core, {} MiB under load",
                    opt(*pct_total, 1),
                    opt(rss_load.map(mib), 1)
                ),
            ));
        }
        lines
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn pct(cpu_s: f64, window_s: f64) -> Option<f64> {
    (window_s > 0.0).then(|| cpu_s / window_s * 100.0)
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

pub fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A rate with thousands separators, e.g. 1 234 567.
pub fn num(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

fn var_order_name(order: VarOrder) -> &'static str {
    match order {
        VarOrder::RoundRobin => "round-robin",
        VarOrder::Random => "random",
    }
}
