//! Connections per user and room, for `--max-connections-per-user` (array-RPC dialect).
//!
//! Who a connection is comes from its own word, so the limit must never let one client end
//! another's connection. A `client_id` is treated as the client's secret (a random id its browser
//! keeps): a newer connection presenting it replaces the oldest one that presented it, since only
//! the same client can know it. A `username` alone is public, anyone can type it: such
//! connections are never replaced, and one over the limit is refused instead. The two kinds are
//! separate namespaces, so a `client_id` equal to someone's username touches nothing of theirs.

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::engine::{ClientId, RoomKey};

/// What a connection authenticated with, and therefore what the limit does to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    /// A `client_id`: over the limit, the oldest connection with the same id is replaced.
    ClientId(&'a str),
    /// A `username` without a `client_id`: over the limit, the newcomer is refused.
    Username(&'a str),
}

/// The kind of an [`Identity`], kept with its name while the connection is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    ClientId,
    Username,
}

impl<'a> Identity<'a> {
    fn split(self) -> (Namespace, &'a str) {
        match self {
            Identity::ClientId(id) => (Namespace::ClientId, id),
            Identity::Username(name) => (Namespace::Username, name),
        }
    }
}

/// An identity as counted, owned by the connection until it departs.
#[derive(Debug)]
pub struct Counted {
    namespace: Namespace,
    name: Box<str>,
}

#[derive(Debug, Default)]
pub struct Users {
    /// Most connections of one identity in one room; 0 = no limit (and no bookkeeping).
    limit: usize,
    open: HashMap<(RoomKey, Namespace, Box<str>), SmallVec<[ClientId; 2]>>,
    /// Connections to close because their client opened newer ones; drained by the event loop.
    replaced: Vec<ClientId>,
}

impl Users {
    pub fn new(limit: usize) -> Self {
        Users {
            limit,
            ..Users::default()
        }
    }

    /// Whether one more connection of `identity` may enter `room`: false only for a username
    /// that already has the limit's number of connections there (a client id always may, its
    /// oldest connection makes way).
    pub fn admits(&self, room: RoomKey, identity: Identity<'_>) -> bool {
        match identity {
            _ if self.limit == 0 => true,
            Identity::ClientId(_) => true,
            Identity::Username(name) => self
                .open
                .get(&(room, Namespace::Username, name.into()))
                .is_none_or(|clients| clients.len() < self.limit),
        }
    }

    /// Records that `client` is `identity` in `room`; for a client id over the limit, names the
    /// oldest connection with that id for replacement. A username's connections are never
    /// replaced: callers ask [`Users::admits`] first. Returns what to hand back to
    /// [`Users::depart`], or `None` when there is no limit (and nothing was recorded).
    pub fn arrive(
        &mut self,
        room: RoomKey,
        identity: Identity<'_>,
        client: ClientId,
    ) -> Option<Counted> {
        if self.limit == 0 {
            return None;
        }
        let (namespace, name) = identity.split();
        let clients = self.open.entry((room, namespace, name.into())).or_default();
        clients.push(client);
        if namespace == Namespace::ClientId {
            while clients.len() > self.limit {
                let oldest = clients.remove(0);
                self.replaced.push(oldest);
            }
        }
        Some(Counted {
            namespace,
            name: name.into(),
        })
    }

    /// Forgets `client`; called when it leaves the room or is replaced.
    pub fn depart(&mut self, room: RoomKey, counted: Counted, client: ClientId) {
        let key = (room, counted.namespace, counted.name);
        if let Some(clients) = self.open.get_mut(&key) {
            clients.retain(|c| *c != client);
            if clients.is_empty() {
                self.open.remove(&key);
            }
        }
    }

    /// The connections named for replacement since the last call.
    pub fn take_replaced(&mut self) -> Vec<ClientId> {
        std::mem::take(&mut self.replaced)
    }

    pub fn has_replaced(&self) -> bool {
        !self.replaced.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Identity::{ClientId as Id, Username as Name};

    #[test]
    fn the_oldest_connection_of_a_client_id_over_the_limit_is_replaced() {
        let room = RoomKey::for_tests(0);
        let mut users = Users::new(2);
        let one = users.arrive(room, Id("a"), ClientId(1));
        let two = users.arrive(room, Id("a"), ClientId(2));
        let three = users.arrive(room, Id("b"), ClientId(3));
        assert!(!users.has_replaced());
        assert!(users.admits(room, Id("a")), "a client id is never refused");
        let four = users.arrive(room, Id("a"), ClientId(4));
        assert_eq!(users.take_replaced(), vec![ClientId(1)]);
        users.depart(room, two.expect("counted"), ClientId(2));
        let five = users.arrive(room, Id("a"), ClientId(5));
        assert!(users.take_replaced().is_empty());
        // The replaced connection departs after it was named; that changes nothing.
        users.depart(room, one.expect("counted"), ClientId(1));
        for (counted, client) in [(four, 4), (five, 5), (three, 3)] {
            users.depart(room, counted.expect("counted"), ClientId(client));
        }
        assert!(users.open.is_empty(), "nothing is kept for users who left");
    }

    #[test]
    fn a_username_over_the_limit_is_refused_and_nobody_is_replaced() {
        let room = RoomKey::for_tests(0);
        let other_room = RoomKey::for_tests(1);
        let mut users = Users::new(1);
        assert!(users.admits(room, Name("alice")));
        let first = users.arrive(room, Name("alice"), ClientId(1));
        assert!(!users.admits(room, Name("alice")));
        assert!(
            users.admits(other_room, Name("alice")),
            "the limit is per room"
        );
        assert!(users.admits(room, Name("bob")));
        assert!(!users.has_replaced());
        users.depart(room, first.expect("counted"), ClientId(1));
        assert!(users.admits(room, Name("alice")), "its place is free again");
    }

    #[test]
    fn a_client_id_equal_to_a_username_is_someone_else() {
        let room = RoomKey::for_tests(0);
        let mut users = Users::new(1);
        let alice = users.arrive(room, Name("alice"), ClientId(1));
        for client in 2..10 {
            assert!(users.admits(room, Id("alice")));
            users.arrive(room, Id("alice"), ClientId(client));
            let replaced = users.take_replaced();
            assert!(!replaced.contains(&ClientId(1)), "{replaced:?}");
            if client > 2 {
                // Only its own older connection makes way.
                assert_eq!(replaced, vec![ClientId(client - 1)]);
            }
        }
        assert!(!users.admits(room, Name("alice")), "alice still counts");
        users.depart(room, alice.expect("counted"), ClientId(1));
        assert!(users.admits(room, Name("alice")));
    }

    #[test]
    fn no_limit_keeps_no_bookkeeping() {
        let mut users = Users::new(0);
        let room = RoomKey::for_tests(0);
        assert!(users.arrive(room, Name("a"), ClientId(1)).is_none());
        assert!(users.arrive(room, Id("a"), ClientId(2)).is_none());
        assert!(users.admits(room, Name("a")));
        assert!(users.open.is_empty());
    }
}
