//! Load generator for stratus, or any Scratch 3 cloud-variable server (e.g. TurboWarp's
//! cloud-server): it speaks only the public Scratch 3 cloud protocol.
//!
//! It opens `--rooms` x `--clients` WebSocket connections to a server on this machine (loopback
//! only), spread over a connect ramp. Each client joins its room with
//! `{"method":"handshake","project_id":…,"user":…}` and then sends `--rate` sets per second to
//! one of `--vars` variables, the sends of all clients staggered evenly in time. Every value is
//! the send time in microseconds since the generator started, so the clients that receive it
//! (the others in the room) measure end-to-end latency. After a warm-up, a fixed window is
//! measured: sets sent and delivered per second, frames per second, delivery ratio, latency
//! percentiles, and with `--server-pid` the server's CPU time and RSS; the generator's own CPU
//! is reported too, so a generator-bound run is visible. Output: a table and one line
//! `LOADGEN_RESULT {json}`. `--scenario 1..5` selects the standard scenarios (see `--help`);
//! scenario 4 (saturation) is a loop the generator runs itself.
//!
//! Run it pinned to the core the server does not use:
//!
//! ```text
//! cargo build --release
//! taskset -c 0 target/release/stratus --listen 127.0.0.1:9080 &
//! taskset -c 1 cargo bench --bench loadgen -- --scenario 1 --server-pid $!
//! ```
//!
//! Design: one thread and one edge-triggered mio poll (`driver`); the send schedule and
//! set encoding (`schedule`); one state machine per connection (`conn`) with a hand-written
//! HTTP upgrade (`upgrade`), tungstenite's `WebSocket` for writing and a streaming reader on
//! tungstenite's frame headers (`frames`); receive accounting that counts sets with memchr
//! and parses only a sample of messages (`recv`, `histogram`); /proc readings (`sysinfo`).
//! Every run is bounded by `--time-limit` and ends by itself.
// A benchmark tool, not the server: it stops with a message on anything unexpected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod config;
mod conn;
mod driver;
mod frames;
mod histogram;
mod recv;
mod report;
mod saturation;
mod schedule;
mod sysinfo;
mod tls;
mod upgrade;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use config::{Args, Config};
use recv::Clock;
use report::Summary;

/// File descriptors needed beyond one per connection (poll, stdio, /proc reads).
const FD_MARGIN: u64 = 64;

fn main() -> ExitCode {
    // `cargo bench` and `cargo test --benches` run every bench without arguments (or with just
    // `--bench`); a load run needs a server, so only explain and succeed.
    if std::env::args_os().skip(1).all(|arg| arg == "--bench") {
        println!(
            "loadgen: needs a running server and explicit arguments, e.g. \
             `cargo bench --bench loadgen -- --scenario 1`; see `-- --help`. Skipping."
        );
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_args(Args::parse()) {
        Ok(cfg) => cfg,
        Err(message) => return fail(&message),
    };
    if let Err(message) = sysinfo::ensure_fd_limit(u64::from(cfg.connections()) + FD_MARGIN) {
        return fail(&message);
    }
    for &pid in &cfg.server_pids {
        if sysinfo::process_cpu(pid).is_none() {
            return fail(&format!(
                "cannot read /proc/{pid}/stat: is --server-pid {pid} right?"
            ));
        }
    }
    let clock = Clock {
        start: Instant::now(),
    };
    let ok = match cfg.saturation {
        Some(sat) => saturation::run(&cfg, sat, clock),
        None => run_once(&cfg, clock),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One run; true if it opened connections and was not cut short.
fn run_once(cfg: &Config, clock: Clock) -> bool {
    let result = driver::run(cfg, cfg.rate, cfg.room_prefix.clone(), clock);
    Summary::new(cfg, &result, None).print();
    if result.conns.opened == 0 {
        eprintln!(
            "loadgen: no connection to {} could be opened; is the server running?",
            cfg.urls()
        );
    }
    result.conns.opened > 0 && result.aborted.is_none()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("loadgen: {message}");
    ExitCode::from(2)
}
