//! The counters behind [`ClusterStats`](super::ClusterStats): updated by the Redis threads,
//! read by the loop (a mutex held for a few additions; the loop reads it for logs and
//! `/metrics` only).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ClusterStats, RoundResult};

/// Counters the threads update and the loop reads.
#[derive(Default)]
pub struct SharedStats {
    inner: Mutex<StatsState>,
}

#[derive(Default)]
struct StatsState {
    stats: ClusterStats,
    outage_since: Option<Instant>,
    outage_total: Duration,
}

impl SharedStats {
    fn lock(&self) -> MutexGuard<'_, StatsState> {
        // A thread that panicked while holding the lock left plain counters: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_connected(&self, connected: bool) {
        let mut state = self.lock();
        let now = Instant::now();
        if connected {
            if let Some(since) = state.outage_since.take() {
                state.outage_total += now.saturating_duration_since(since);
            }
        } else if state.outage_since.is_none() {
            state.outage_since = Some(now);
            state.stats.outages += 1;
        }
        state.stats.connected = connected;
    }

    pub fn count_round(&self, round_trip: Duration, result: &RoundResult) {
        let mut state = self.lock();
        let us = u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX);
        state.stats.rounds += 1;
        state.stats.last_round_trip_us = us;
        state.stats.round_trip_us_total = state.stats.round_trip_us_total.saturating_add(us);
        if result.saved {
            state.stats.batches_out += result.batch.rooms.len() as u64;
        }
        state.stats.room_reads += result.loaded.len() as u64;
    }

    pub fn count_batch_in(&self) {
        self.lock().stats.batches_in += 1;
    }

    pub fn snapshot(&self) -> ClusterStats {
        let state = self.lock();
        let ongoing = state
            .outage_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        ClusterStats {
            outage_seconds: (state.outage_total + ongoing).as_secs_f64(),
            ..state.stats.clone()
        }
    }
}
