//! Logging repeated errors without flooding the log: a failing disk or an unreachable Redis
//! fails every round; the first error of a minute is logged, the rest are counted and the
//! count is logged with the next one.

use std::time::{Duration, Instant};

use log::{error, warn};

/// Errors are logged at most this often; the rest are counted.
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(60);

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
