//! What the loop owes connections after their entry points ran: the one place a returned
//! [`Status`] is acted on.
//!
//! Every entry point of a connection ([`Conn`](crate::net::conn::Conn): an event, the timer, a
//! close, a resumed session, a delivered frame…) returns its `Status`; the loop passes it to
//! [`Followups::apply`] and never asks the connection again. What is owed is then done at its
//! point in the turn: what only the loop answers (metrics pages, API reads) is started right after the event that asked, connections
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
    /// Slab keys of connections that asked for something only the loop answers (`/metrics`,
    /// reads of the HTTP API).
    pub(super) asks: Vec<usize>,
}

impl Followups {
    /// Notes what the connection in slot `key` needs, as its entry point returned it.
    pub(super) fn apply(&mut self, key: usize, status: Status) {
        match status {
            Status::Open => {}
            Status::MoreInput => self.still_ready.push(key),
            Status::Asks => self.asks.push(key),
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
        followups.apply(3, Status::Asks);
        followups.apply(4, Status::Done);
        assert_eq!(followups.still_ready, [2]);
        assert_eq!(followups.asks, [3]);
        assert_eq!(followups.finished, [4]);
    }
}
