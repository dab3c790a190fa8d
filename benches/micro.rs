//! Micro-benchmarks of the hot path without sockets: parsing, frame encoding, a fan-out tick.
//!
//! Run: `cargo bench --bench micro`. The event loop's cost is dominated by the kernel (several
//! microseconds per syscall); these numbers show how far below that our own work stays.
// A benchmark tool, not the server: it stops with a message on anything unexpected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Deserialize;

use stratus::dialect::json::{self, JsonParser};
use stratus::dialect::{encode_set, Reconnects, Route, Session, SessionContext, Users};
use stratus::engine::{ClientId, Engine, Format, Limits, SetLine, ValueRef};
use stratus::policy::Policy;

const SET: &[u8] = br#"{"method":"set","name":"\u2601 score","value":"12345.5","project_id":"1234","user":"griffpatch"}"#;

fn ten_sets() -> Vec<u8> {
    let mut frame = Vec::new();
    for i in 0..10 {
        frame.extend_from_slice(
            format!(
                r#"{{"method":"set","name":"☁ v{i}","value":"{}","user":"u","project_id":"1"}}"#,
                i * 1000
            )
            .as_bytes(),
        );
        frame.push(b'\n');
    }
    frame
}

#[derive(Deserialize)]
struct SerdeSet<'a> {
    #[allow(dead_code)]
    method: &'a str,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[allow(dead_code)]
    value: serde_json::Value,
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let mut parser = JsonParser::default();
    group.throughput(Throughput::Elements(1));
    group.bench_function("simd-json tape, one set", |b| {
        b.iter(|| {
            parser
                .parse(black_box(SET), |doc| {
                    let mut number = None;
                    let value = doc
                        .get("value")
                        .and_then(|v| json::value_ref(v, &mut number));
                    black_box((json::get_str(doc, "name"), value.map(|v| v.text().len())));
                })
                .ok()
        })
    });
    group.bench_function("serde_json borrowed, one set", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<SerdeSet<'_>>(black_box(SET))
                    .ok()
                    .map(|s| s.name.len()),
            )
        })
    });
    let frame = ten_sets();
    group.throughput(Throughput::Elements(10));
    group.bench_function("simd-json tape, frame of 10 sets", |b| {
        b.iter(|| {
            for line in black_box(&frame)
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let _ = parser.parse(line, |doc| {
                    black_box(json::get_str(doc, "name").map(str::len))
                });
            }
        })
    });
    group.bench_function("serde_json borrowed, frame of 10 sets", |b| {
        b.iter(|| {
            for line in black_box(&frame)
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                black_box(
                    serde_json::from_slice::<SerdeSet<'_>>(line)
                        .ok()
                        .map(|s| s.name.len()),
                );
            }
        })
    });
    group.finish();
}

/// A joined session handling a set end to end (split, rate limit, parse, validate, store).
fn session_set(c: &mut Criterion) {
    let mut engine = Engine::new(Limits::default(), encode_set);
    let policy = Policy::default();
    let mut parser = JsonParser::default();
    let now = Instant::now();
    let mut users = Users::new(0);
    let mut reconnects = Reconnects::new(std::time::Duration::from_secs(120), 100);
    let mut session = Session::new(ClientId(1), Route::Sniff, &policy, now);
    let mut ctx = SessionContext {
        engine: &mut engine,
        policy: &policy,
        parser: &mut parser,
        users: &mut users,
        reconnects: &mut reconnects,
        now,
    };
    session.on_text(
        br#"{"method":"handshake","project_id":"1","user":"u"}"#,
        &mut ctx,
    );
    c.bench_function("session: one set end to end", |b| {
        b.iter(|| black_box(session.on_text(black_box(SET), &mut ctx)))
    });
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode frame");
    for changed in [1usize, 10, 128] {
        let names: Vec<String> = (0..changed).map(|i| format!("☁ variable {i}")).collect();
        group.throughput(Throughput::Elements(changed as u64));
        group.bench_with_input(BenchmarkId::from_parameter(changed), &names, |b, names| {
            let mut out = String::new();
            b.iter(|| {
                out.clear();
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    let line = SetLine {
                        name,
                        value: ValueRef::Text("1234567.25"),
                        user: "",
                        changed_ms: 0,
                    };
                    encode_set(Format(0), "1", line, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// One flush of a full room: 128 members, 8 variables changed by 8 different writers.
fn fan_out(c: &mut Criterion) {
    let mut engine = Engine::new(Limits::default(), encode_set);
    let now = Instant::now();
    let mut room = None;
    for client in 0..128 {
        let key = engine
            .join("1", ClientId(client), Format(0), None, now)
            .expect("join");
        room = Some(key);
    }
    let Some(room) = room else { return };
    let names: Vec<String> = (0..8).map(|i| format!("☁ v{i}")).collect();
    let mut counter = 0u64;
    c.bench_function("flush: 128 members, 8 writers", |b| {
        b.iter(|| {
            counter += 1;
            let value = counter.to_string();
            for (writer, name) in names.iter().enumerate() {
                engine.set(
                    room,
                    ClientId(writer as u64),
                    name,
                    ValueRef::Text(&value),
                    true,
                );
            }
            let mut bytes = 0;
            engine.flush(|_, _, frame| {
                bytes += frame.len();
                true
            });
            black_box(bytes)
        })
    });
}

criterion_group!(benches, parsing, session_set, encoding, fan_out);
criterion_main!(benches);
