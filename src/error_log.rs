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

    /// Logs `message` unless one was logged less than a minute before `now` (the helper
    /// thread's clock: this type never reads it); then it is only counted.
    pub fn log(&mut self, now: Instant, message: &dyn std::fmt::Display) {
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
    fn one_error_a_minute_is_logged_the_rest_counted() {
        let mut errors = ErrorLog::new("test");
        let t0 = Instant::now();
        errors.log(t0, &"first");
        assert_eq!((errors.last, errors.unlogged), (Some(t0), 0));
        errors.log(t0 + Duration::from_secs(1), &"second");
        errors.log(t0 + Duration::from_secs(59), &"third");
        assert_eq!((errors.last, errors.unlogged), (Some(t0), 2));
        let later = t0 + ERROR_LOG_PERIOD;
        errors.log(later, &"a minute later");
        assert_eq!((errors.last, errors.unlogged), (Some(later), 0));
    }
}
