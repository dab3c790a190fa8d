//! How many bytes one turn of the loop may hand to sockets, in total.
//!
//! Copying into the kernel is the loop's largest cost after syscalls, and a socket that has
//! just connected takes megabytes at once: a burst of joins to a 12.8 MB room used to copy
//! several MB per joiner before anyone else's frame went out. So every connection's transport
//! draws on one budget per turn ([`TurnBudget::start_turn`]). A write that fits what is left
//! goes out whole; a small write ([`SMALL_WRITE`] bytes or less: a room's frame, a reply, a
//! pong) always goes out, so ordinary traffic never waits; a larger write is cut to what is
//! left, and the connection is noted as deferred. The loop comes back to deferred connections
//! at the start of the next turn (edge-triggered readiness would not announce them again), so
//! bulk writes continue turn by turn at up to [`BYTES_PER_TURN`] each.
//!
//! Never touches a socket: it only counts, and remembers who was cut short.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::engine::ClientId;

/// Bytes all connections together may write in one turn, beyond small writes. About half a
/// millisecond of copying on a Raspberry Pi 4, less on a server.
pub const BYTES_PER_TURN: usize = 1024 * 1024;

/// Writes of this size or less go out whatever the budget says: a reply, a pong, a room's
/// frame carrying one changed variable of the largest size allowed (100 000 characters).
/// Cutting those would only keep them alive in our memory instead of the kernel's.
pub const SMALL_WRITE: usize = 128 * 1024;

#[derive(Debug, Default)]
struct Shared {
    left: Cell<usize>,
    /// Connections whose write was cut short, to come back to next turn (each once).
    deferred: RefCell<Vec<ClientId>>,
    /// Writes cut short since start, for `/metrics`.
    cuts: Cell<u64>,
}

/// The loop's side: starts each turn and collects the deferred connections.
#[derive(Debug)]
pub struct TurnBudget {
    shared: Rc<Shared>,
}

/// One connection's share of the turn's budget, held by its transport.
#[derive(Clone, Debug)]
pub struct WriteBudget {
    shared: Rc<Shared>,
    client: ClientId,
}

impl Default for TurnBudget {
    /// A budget at the start of a turn.
    fn default() -> Self {
        Self::new()
    }
}

impl TurnBudget {
    pub fn new() -> Self {
        let budget = TurnBudget {
            shared: Rc::default(),
        };
        budget.start_turn();
        budget
    }

    /// The handle for `client`'s transport.
    pub fn for_client(&self, client: ClientId) -> WriteBudget {
        WriteBudget {
            shared: Rc::clone(&self.shared),
            client,
        }
    }

    /// A new turn: the whole budget is available again.
    pub fn start_turn(&self) {
        self.shared.left.set(BYTES_PER_TURN);
    }

    /// The connections cut short since the last call, in the order they were cut; each to be
    /// served again, as long as the budget lasts.
    pub fn take_deferred(&self) -> Vec<ClientId> {
        std::mem::take(&mut *self.shared.deferred.borrow_mut())
    }

    /// Puts back connections the turn's budget did not reach, ahead of those cut since: the
    /// next turn serves them first, so every deferred connection gets its turn.
    pub fn requeue(&self, clients: Vec<ClientId>) {
        let mut deferred = self.shared.deferred.borrow_mut();
        let newer = std::mem::replace(&mut *deferred, clients);
        deferred.extend(newer);
    }

    /// Whether this turn's budget is used up: only small writes go out until the next turn.
    pub fn is_spent(&self) -> bool {
        self.shared.left.get() == 0
    }

    pub fn has_deferred(&self) -> bool {
        !self.shared.deferred.borrow().is_empty()
    }

    /// Writes the budget cut short since start.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.get()
    }
}

impl WriteBudget {
    /// How many of `offered` bytes may be written now.
    pub fn allow(&self, offered: usize) -> usize {
        let left = self.shared.left.get();
        if offered <= left.max(SMALL_WRITE) {
            offered
        } else {
            left
        }
    }

    /// `written` bytes went out.
    pub fn spend(&self, written: usize) {
        let left = self.shared.left.get();
        self.shared.left.set(left.saturating_sub(written));
    }

    /// This connection's write was cut short by the budget: come back to it next turn.
    pub fn defer(&self) {
        self.shared.cuts.set(self.shared.cuts.get() + 1);
        let mut deferred = self.shared.deferred.borrow_mut();
        // One event can cut the same connection twice in a row (two flushes); a connection
        // cut once waits as behind, so it is not cut again between others' cuts.
        if deferred.last() != Some(&self.client) {
            deferred.push(self.client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_writes_always_go_out_and_large_ones_take_what_is_left() {
        let turn = TurnBudget::new();
        let a = turn.for_client(ClientId(1));
        let b = turn.for_client(ClientId(2));
        assert_eq!(a.allow(BYTES_PER_TURN - 10), BYTES_PER_TURN - 10);
        a.spend(BYTES_PER_TURN - 10);
        assert_eq!(b.allow(100), 100, "small: whole");
        assert_eq!(b.allow(SMALL_WRITE), SMALL_WRITE);
        assert_eq!(b.allow(SMALL_WRITE + 1), 10, "large: what is left");
        b.spend(SMALL_WRITE + 100);
        assert_eq!(b.allow(SMALL_WRITE + 1), 0);
        assert_eq!(b.allow(5), 5);
        b.defer();
        b.defer();
        assert!(turn.has_deferred());
        assert_eq!(turn.take_deferred(), [ClientId(2)], "once");
        assert!(turn.is_spent());
        a.defer();
        turn.requeue(vec![ClientId(2)]);
        assert_eq!(
            turn.take_deferred(),
            [ClientId(2), ClientId(1)],
            "unserved first"
        );
        turn.start_turn();
        assert!(!turn.is_spent());
        assert_eq!(a.allow(2 * SMALL_WRITE), 2 * SMALL_WRITE);
    }
}
