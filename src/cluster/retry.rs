//! What the Redis threads do after an error: wait longer before each reconnect (exponential
//! backoff), and log without flooding (rate-limited error log).

use std::time::{Duration, Instant};

use log::{error, warn};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Errors are logged at most this often; the rest are counted.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Reconnect delays: 100 ms, doubling up to 5 s; back to the start after a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The delay before the next attempt (each call doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }

    pub fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

/// Logs errors at most once a minute, saying how many were not logged.
#[derive(Debug)]
pub struct ErrorLog {
    what: &'static str,
    last: Option<Instant>,
    unlogged: u64,
}

impl ErrorLog {
    pub fn new(what: &'static str) -> Self {
        ErrorLog {
            what,
            last: None,
            unlogged: 0,
        }
    }

    pub fn log(&mut self, message: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < ERROR_LOG_PERIOD)
        {
            self.unlogged += 1;
            return;
        }
        if self.unlogged > 0 {
            warn!(
                "{}: {} more errors in the last minute",
                self.what, self.unlogged
            );
        }
        error!("{}: {message}", self.what);
        self.last = Some(now);
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), FIRST_DELAY);
    }
}
