//! The storage thread's sustained write rate: batches like the loop hands over (many rooms, the
//! latest value of each changed variable) written to a real SQLite database in a temporary data
//! directory, one transaction per batch, for a few seconds.
//!
//!   cargo bench --bench store -- [ROOMS] [VARIABLES_PER_ROOM] [VALUE_BYTES] [SECONDS]
// A benchmark tool, not the server: it stops with a message on anything unexpected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use stratus::engine::{Batch, RoomChanges, SavedVariable};
use stratus::store::db::Database;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rooms = args.first().copied().unwrap_or(1000);
    let per_room = args.get(1).copied().unwrap_or(8);
    let value_bytes = args.get(2).copied().unwrap_or(8);
    let seconds = args.get(3).copied().unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("stratus-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut database = Database::open(&dir).expect("open database");
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let (mut batches, mut variables) = (0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while Instant::now() < deadline {
        let value = format!("{:0>width$}", batches, width = value_bytes);
        let mut batch = Batch::default();
        for room in 0..rooms {
            let changed = (0..per_room)
                .map(|i| SavedVariable {
                    user: Default::default(),
                    changed_ms: 0,
                    name: format!("☁ v{i}").into(),
                    value: value.clone(),
                    is_number: true,
                })
                .collect();
            batch
                .rooms
                .push(RoomChanges::upserting(format!("{room:06}").into(), changed));
        }
        let write = Instant::now();
        database.save(&batch).expect("save");
        slowest = slowest.max(write.elapsed());
        batches += 1;
        variables += batch.variable_count() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "STORE_RESULT rooms={rooms} variables_per_room={per_room} value_bytes={value_bytes} \
         batches={batches} variables_per_s={:.0} batch_ms_avg={:.2} batch_ms_max={:.2}",
        variables as f64 / elapsed,
        elapsed * 1000.0 / batches as f64,
        slowest.as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
