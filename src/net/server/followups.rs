//! What the loop owes connections after their entry points ran: the one place a returned
//! [`Status`] is acted on.
//!
//! Every entry point of a connection ([`Conn`](crate::net::conn::Conn): an event, the timer, a
//! close, a resumed session, a delivered frame…) returns its `Status`; the loop passes it to
//! [`Followups::apply`] and never asks the connection again. What is owed is then done at its
//! point in the turn: metrics pages are answered right after the event that asked, connections
//! with input left are served first next turn, finished ones are removed at the end of the
//! turn.

use crate::net::conn::Status;

#[derive(Debug, Default)]
pub(super) struct Followups {
    /// Slab keys of connections to remove at the end of the turn (may repeat).
    pub(super) finished: Vec<usize>,
    /// Slab keys of connections whose turn ended with input left; served in the next turn
    /// without waiting for an event (may repeat).
    pub(super) still_ready: Vec<usize>,
    /// Connections that asked for `/metrics`, and whether with the body.
    pub(super) wants_metrics: Vec<(usize, bool)>,
}

impl Followups {
    /// Notes what the connection in slot `key` needs, as its entry point returned it.
    pub(super) fn apply(&mut self, key: usize, status: Status) {
        match status {
            Status::Open => {}
            Status::MoreInput => self.still_ready.push(key),
            Status::WantsMetrics { include_body } => self.wants_metrics.push((key, include_body)),
            Status::Done => self.finished.push(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_lands_where_the_loop_looks_for_it() {
        let mut followups = Followups::default();
        followups.apply(1, Status::Open);
        followups.apply(2, Status::MoreInput);
        followups.apply(
            3,
            Status::WantsMetrics {
                include_body: false,
            },
        );
        followups.apply(4, Status::Done);
        assert_eq!(followups.still_ready, [2]);
        assert_eq!(followups.wants_metrics, [(3, false)]);
        assert_eq!(followups.finished, [4]);
    }
}
