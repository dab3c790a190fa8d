//! Connections per user and room, for `--max-connections-per-user`: when a user opens one
//! connection too many, the oldest is named for replacement and the event loop closes it.

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::engine::{ClientId, RoomKey};

#[derive(Debug, Default)]
pub struct Users {
    /// Most connections of one user in one room; 0 = no limit (and no bookkeeping).
    limit: usize,
    open: HashMap<(RoomKey, Box<str>), SmallVec<[ClientId; 2]>>,
    /// Connections to close because their user opened newer ones; drained by the event loop.
    replaced: Vec<ClientId>,
}

impl Users {
    pub fn new(limit: usize) -> Self {
        Users {
            limit,
            ..Users::default()
        }
    }

    /// Records that `client` is `user` in `room`, naming the oldest connection for replacement
    /// when the user is over the limit. Returns whether anything was recorded.
    pub fn arrive(&mut self, room: RoomKey, user: &str, client: ClientId) -> bool {
        if self.limit == 0 {
            return false;
        }
        let clients = self.open.entry((room, user.into())).or_default();
        clients.push(client);
        while clients.len() > self.limit {
            let oldest = clients.remove(0);
            self.replaced.push(oldest);
        }
        true
    }

    /// Forgets `client`; called when it leaves the room or is replaced.
    pub fn depart(&mut self, room: RoomKey, user: &str, client: ClientId) {
        let key = (room, Box::<str>::from(user));
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

    #[test]
    fn the_oldest_connection_over_the_limit_is_replaced() {
        let room = RoomKey::for_tests(0);
        let mut users = Users::new(2);
        users.arrive(room, "a", ClientId(1));
        users.arrive(room, "a", ClientId(2));
        users.arrive(room, "b", ClientId(3));
        assert!(!users.has_replaced());
        users.arrive(room, "a", ClientId(4));
        assert_eq!(users.take_replaced(), vec![ClientId(1)]);
        users.depart(room, "a", ClientId(2));
        users.arrive(room, "a", ClientId(5));
        assert!(users.take_replaced().is_empty());
        users.depart(room, "a", ClientId(4));
        users.depart(room, "a", ClientId(5));
        users.depart(room, "b", ClientId(3));
        assert!(users.open.is_empty(), "nothing is kept for users who left");
    }

    #[test]
    fn no_limit_keeps_no_bookkeeping() {
        let mut users = Users::new(0);
        assert!(!users.arrive(RoomKey::for_tests(0), "a", ClientId(1)));
        assert!(users.open.is_empty());
    }
}
