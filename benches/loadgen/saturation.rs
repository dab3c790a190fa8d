//! Saturation mode (scenario 4): the same run repeated with the per-client rate multiplied
//! by a factor each step, until the server stops keeping up. Each step is a complete run
//! with its own rooms; the steps and the reason for stopping are reported at the end.

use serde_json::json;

use crate::config::{Config, Saturation};
use crate::driver;
use crate::recv::Clock;
use crate::report::{num, opt, round, Summary, GENERATOR_BUSY_PCT};

/// Delivered sets/s must grow by more than this factor for the server to count as keeping up.
const MIN_GROWTH: f64 = 1.05;
/// The total send rate the generator will attempt at most.
const MAX_TOTAL_SENDS: f64 = 2_000_000.0;

/// Runs the steps; returns whether every step managed to open connections.
pub fn run(cfg: &Config, sat: Saturation, clock: Clock) -> bool {
    let mut steps: Vec<Summary> = Vec::new();
    let mut best = 0.0_f64;
    let mut stop_reason = format!("reached --max-steps {}", sat.max_steps);
    let mut all_ok = true;
    for step in 0..sat.max_steps {
        let rate = cfg.rate * sat.step_factor.powi(step as i32);
        if rate * f64::from(cfg.connections()) > MAX_TOTAL_SENDS {
            stop_reason = format!(
                "next rate ({rate} sets/s per client) is beyond the generator's send limit"
            );
            break;
        }
        let prefix = format!("{}{step:02}", cfg.room_prefix);
        let result = driver::run(cfg, rate, prefix, clock);
        let summary = Summary::new(cfg, &result, Some(step));
        summary.print();
        let stop = stop_condition(&summary, best, sat, cfg.vars, result.aborted.as_deref());
        all_ok &= summary.opened > 0;
        best = best.max(summary.delivered_per_s);
        steps.push(summary);
        if let Some(reason) = stop {
            stop_reason = reason;
            break;
        }
    }
    print_steps(&steps, best, &stop_reason);
    all_ok
}

fn stop_condition(
    s: &Summary,
    best: f64,
    sat: Saturation,
    vars: u32,
    aborted: Option<&str>,
) -> Option<String> {
    if let Some(reason) = aborted {
        return Some(format!("step aborted: {reason}"));
    }
    if let Some(p99) = s.p99_ms.filter(|&p| p > sat.p99_limit_ms) {
        return Some(format!(
            "p99 latency {p99:.1} ms exceeds {} ms",
            sat.p99_limit_ms
        ));
    }
    if s.frames_full {
        return Some(format!(
            "frames already carry nearly every variable ({} sets per frame, {} variables): a \
             coalescing server sends each variable once per frame, so delivered sets/s cannot \
             rise further; use more --vars",
            opt(s.sets_per_frame, 1),
            vars
        ));
    }
    if best > 0.0 && s.delivered_per_s < best * MIN_GROWTH {
        return Some(format!(
            "delivered sets/s stopped rising ({} after {})",
            num(s.delivered_per_s),
            num(best)
        ));
    }
    if s.own_cpu_pct >= GENERATOR_BUSY_PCT {
        return Some(format!(
            "the generator used {:.0} % of its core; it, not the server, would be measured next",
            s.own_cpu_pct
        ));
    }
    None
}

fn print_steps(steps: &[Summary], best: f64, stop_reason: &str) {
    println!("saturation: stopped because {stop_reason}");
    println!(
        "  {:>4} {:>10} {:>14} {:>14} {:>8} {:>9} {:>9} {:>8}",
        "step", "rate/cli", "sent/s", "delivered/s", "ratio", "p50 ms", "p99 ms", "gen cpu"
    );
    for s in steps {
        println!(
            "  {:>4} {:>10} {:>14} {:>14} {:>8} {:>9} {:>9} {:>7.0}%",
            s.step.unwrap_or(0),
            s.rate,
            num(s.sent_per_s),
            num(s.delivered_per_s),
            opt(s.delivery_ratio, 3),
            opt(s.p50_ms, 2),
            opt(s.p99_ms, 2),
            s.own_cpu_pct
        );
    }
    let json = json!({
        "max_delivered_per_s": round(best, 1),
        "stop_reason": stop_reason,
        "steps": steps.iter().map(|s| json!({
            "rate_per_client": s.rate,
            "sets_sent_per_s": round(s.sent_per_s, 1),
            "sets_delivered_per_s": round(s.delivered_per_s, 1),
            "delivery_ratio": s.delivery_ratio.map(|v| round(v, 4)),
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            "generator_cpu_pct": round(s.own_cpu_pct, 1),
        })).collect::<Vec<_>>(),
    });
    println!("LOADGEN_SATURATION {json}");
}
