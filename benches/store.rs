//! The storage thread's sustained write rate: batches like the loop hands over (many rooms, the
//! latest value of each changed variable, and optionally each room's new history entries)
//! written to a real SQLite database in a temporary data directory, one transaction per batch,
//! for a few seconds. With history, the database keeps `--history 1000` per room (so in steady
//! state every batch also trims), and the bench then reads `/logs?limit=1000`-sized pages.
//!
//!   cargo bench --bench store -- [ROOMS] [VARIABLES_PER_ROOM] [VALUE_BYTES] [SECONDS] [ENTRIES_PER_ROOM]
//!
//! Scenario 1 of the load generator at the default `--persist-interval 1s` is
//! `100 10 8 5 100` (100 rooms, 100 sets a second each).
// A benchmark tool, not the server: it stops with a message on anything unexpected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus::engine::{Batch, HistoryEntry, RoomChanges, SavedVariable, Verb};
use stratus::store::db::Database;

/// `--history` of the database under test.
const HISTORY_CAP: usize = 1000;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rooms = args.first().copied().unwrap_or(1000);
    let per_room = args.get(1).copied().unwrap_or(8);
    let value_bytes = args.get(2).copied().unwrap_or(8);
    let seconds = args.get(3).copied().unwrap_or(5);
    let entries_per_room = args.get(4).copied().unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("stratus-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut database = Database::open(&dir).expect("open database");
    database.set_history_cap(HISTORY_CAP);
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let (mut batches, mut variables, mut entries) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let mut writing = Duration::ZERO;
    let user: Arc<str> = Arc::from("griffpatch_alt");
    let started = Instant::now();
    while Instant::now() < deadline {
        let value = format!("{:0>width$}", batches, width = value_bytes);
        let mut batch = Batch::default();
        for room in 0..rooms {
            let changed = (0..per_room)
                .map(|i| SavedVariable {
                    user: Arc::clone(&user),
                    changed_ms: 1_733_400_000_000,
                    name: format!("☁ v{i}").into(),
                    value: value.clone(),
                    is_number: true,
                })
                .collect();
            let mut changes = RoomChanges::upserting(format!("{room:06}").into(), changed);
            let first = batches * entries_per_room as u64;
            changes.history = (1..=entries_per_room as u64)
                .map(|n| HistoryEntry {
                    user: Arc::clone(&user),
                    verb: Verb::Set,
                    name: format!("☁ v{}", n as usize % per_room.max(1)),
                    value: value.clone(),
                    timestamp_ms: 1_733_400_000_000 + first + n,
                    seq: first + n,
                })
                .collect();
            changes.history_seq = changes.history.last().map_or(0, |e| e.seq);
            batch.rooms.push(changes);
        }
        let write = Instant::now();
        database.save(&batch).expect("save");
        let took = write.elapsed();
        slowest = slowest.max(took);
        writing += took;
        batches += 1;
        variables += batch.variable_count() as u64;
        entries += batch.history_count() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "STORE_RESULT rooms={rooms} variables_per_room={per_room} value_bytes={value_bytes} \
         entries_per_room={entries_per_room} batches={batches} variables_per_s={:.0} \
         entries_per_s={:.0} batch_ms_avg={:.2} batch_ms_max={:.2}",
        variables as f64 / elapsed,
        entries as f64 / elapsed,
        writing.as_secs_f64() * 1000.0 / batches as f64,
        slowest.as_secs_f64() * 1000.0
    );
    if entries_per_room > 0 {
        // Full pages of the first room's history, as `/logs?limit=1000` from disk asks them.
        let reads = 200;
        let read = Instant::now();
        let mut read_entries = 0;
        for _ in 0..reads {
            read_entries += database
                .history_page("000000", None, u64::MAX, 0, HISTORY_CAP)
                .expect("read")
                .len();
        }
        println!(
            "STORE_READ entries_per_page={} page_ms_avg={:.3}",
            read_entries / reads,
            read.elapsed().as_secs_f64() * 1000.0 / reads as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
