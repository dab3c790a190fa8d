//! Reconnect tokens and parked sessions (MultiStudio dialect).
//!
//! Every session that said HELLO has one current token. When its connection ends abnormally
//! (no close frame from the client), the session is parked: its room memberships stay in the
//! engine, reserved but receiving nothing, until `--reconnect-window` runs out. A HELLO with
//! the token takes the session over, parked or (half-dead) still live; the token is then used
//! up and a fresh one issued.
//!
//! A parked session is a courtesy, never at a live client's expense: it keeps its connection's
//! charge against `--max-connections-per-ip` (so one address cannot park more sessions than
//! it may open connections), at most `--max-parked-sessions` are parked (the oldest is ended
//! to park another), and a live client that needs a connection slot or a room place gets it by
//! ending the oldest parked session that holds it. Memory is bounded by that budget: each a
//! name, an id, a token and at most `--max-rooms-per-connection` room keys.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::engine::{ClientId, RoomKey};

/// Rooms of one session; `--max-rooms-per-connection` is small.
pub type Rooms = SmallVec<[RoomKey; 4]>;

#[derive(Debug)]
pub struct Reconnects {
    window: Duration,
    max_parked: usize,
    sessions: HashMap<Box<str>, Entry>,
    /// Parked sessions in the order they were parked (so in expiry order), with the time that
    /// makes a stale entry recognisable after its session was resumed or parked again.
    parked: VecDeque<(Instant, Box<str>)>,
    parked_count: usize,
    /// Parked sessions per address they are charged to, and per room they hold a place in:
    /// so a live client that needs either finds out at once whether any is there to end.
    parked_addresses: HashMap<IpAddr, u32>,
    parked_rooms: HashMap<RoomKey, u32>,
    /// Live connections whose session a reconnect took over; the event loop closes them.
    taken_over: Vec<ClientId>,
    /// Parked sessions that ended; the event loop leaves their rooms and frees their address.
    released: Vec<Ended>,
    /// Parked sessions ended before their window ran out, to make room for others.
    pub evicted: u64,
    next_user: u64,
}

/// A parked session that ended (expired, resumed, or ended to make room): what it still held.
#[derive(Debug)]
pub struct Ended {
    /// The client id its memberships are held under.
    pub client: ClientId,
    /// Rooms it is still a member of (empty when they were handed on or already left).
    pub rooms: Rooms,
    /// The address it was charged to (`--max-connections-per-ip`), now to be freed.
    pub address: Option<IpAddr>,
}

#[derive(Debug)]
struct Entry {
    user_id: Box<str>,
    username: Box<str>,
    rooms: Rooms,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live(ClientId),
    /// Its connection is gone; its memberships are still the old client's, and its
    /// connection's address charge is still held.
    Parked {
        client: ClientId,
        since: Instant,
        address: Option<IpAddr>,
    },
}

/// A session taken over by a reconnecting client.
#[derive(Debug)]
pub struct Resumed {
    pub user_id: Box<str>,
    pub username: Box<str>,
    /// The client id the session's memberships are held under.
    pub previous: ClientId,
    pub rooms: Rooms,
}

/// What a live client needs that a parked session may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A connection slot (`--max-connections`).
    Slot,
    /// A place in this full room (`--max-clients-per-room`).
    Place(RoomKey),
    /// A place of this address at `--max-connections-per-ip`: the new connection takes over
    /// the parked session's charge, which is therefore not freed.
    AddressPlace(IpAddr),
}

/// The operating system could not give random bytes for a token.
#[derive(Debug)]
pub struct NoRandomness;

impl Reconnects {
    pub fn new(window: Duration, max_parked: usize) -> Self {
        Reconnects {
            window,
            max_parked,
            sessions: HashMap::new(),
            parked: VecDeque::new(),
            parked_count: 0,
            parked_addresses: HashMap::new(),
            parked_rooms: HashMap::new(),
            taken_over: Vec::new(),
            released: Vec::new(),
            evicted: 0,
            next_user: 1,
        }
    }

    /// Starts a new session for `client`; returns its user id and first token.
    pub fn start(
        &mut self,
        client: ClientId,
        username: &str,
    ) -> Result<(Box<str>, Box<str>), NoRandomness> {
        let user_id: Box<str> = format!("u{}", self.next_user).into();
        self.next_user += 1;
        let entry = Entry {
            user_id: user_id.clone(),
            username: username.into(),
            rooms: Rooms::new(),
            state: State::Live(client),
        };
        let token = self.issue(entry)?;
        Ok((user_id, token))
    }

    /// Takes over the session of `token` for `client`, if the token is current and its session
    /// has not expired. A live connection holding it is named for closing. Returns the session
    /// and its new token.
    pub fn resume(
        &mut self,
        token: &str,
        client: ClientId,
        now: Instant,
    ) -> Result<Option<(Resumed, Box<str>)>, NoRandomness> {
        let Some(mut entry) = self.sessions.remove(token) else {
            return Ok(None);
        };
        let previous = match entry.state {
            State::Live(old) => {
                self.taken_over.push(old);
                old
            }
            State::Parked {
                client: old,
                since,
                address,
            } => {
                self.unpark(address, &entry.rooms);
                if now.saturating_duration_since(since) >= self.window {
                    // Expired but not yet swept.
                    self.released.push(Ended {
                        client: old,
                        rooms: entry.rooms,
                        address,
                    });
                    return Ok(None);
                }
                // The memberships pass to the new connection, which has its own charge.
                self.released.push(Ended {
                    client: old,
                    rooms: Rooms::new(),
                    address,
                });
                old
            }
        };
        let resumed = Resumed {
            user_id: entry.user_id.clone(),
            username: entry.username.clone(),
            previous,
            rooms: std::mem::take(&mut entry.rooms),
        };
        entry.state = State::Live(client);
        let token = self.issue(entry)?;
        Ok(Some((resumed, token)))
    }

    /// Records the rooms the session of `token` is in.
    pub fn set_rooms(&mut self, token: &str, rooms: impl Iterator<Item = RoomKey>) {
        if let Some(entry) = self.sessions.get_mut(token) {
            entry.rooms = rooms.collect();
        }
    }

    /// The connection of `token` ended abnormally: keep its session for the window, charged
    /// to `address` until it ends. Returns false when there is no such session (the caller
    /// then releases its rooms and address itself). When the budget is full, the oldest
    /// parked session is ended.
    pub fn park(&mut self, token: &str, now: Instant, address: Option<IpAddr>) -> bool {
        if self.max_parked == 0 {
            self.end(token);
            return false;
        }
        let Some(entry) = self.sessions.get_mut(token) else {
            return false;
        };
        let State::Live(client) = entry.state else {
            return false;
        };
        entry.state = State::Parked {
            client,
            since: now,
            address,
        };
        self.parked.push_back((now, token.into()));
        self.parked_count += 1;
        if let Some(address) = address {
            count_up(&mut self.parked_addresses, address);
        }
        for &room in &entry.rooms {
            count_up(&mut self.parked_rooms, room);
        }
        if self.parked_count > self.max_parked {
            if let Some(ended) = self.pop_oldest(None, |_| true) {
                self.evicted += 1;
                self.released.push(ended);
            }
        }
        true
    }

    /// The session of `token` ended normally (its connection leaves its rooms itself).
    pub fn end(&mut self, token: &str) {
        if let Some(entry) = self.sessions.remove(token) {
            if let State::Parked {
                client, address, ..
            } = entry.state
            {
                self.unpark(address, &entry.rooms);
                self.released.push(Ended {
                    client,
                    rooms: entry.rooms,
                    address,
                });
            }
        }
    }

    /// Ends the oldest parked session holding what a live client needs. Returns its client id
    /// and memberships, for the caller to leave at once (so the place is free now); its
    /// address is freed through [`Reconnects::take_released`], except for
    /// [`Need::AddressPlace`]. `None`, at the cost of a map lookup, when none holds it.
    pub fn end_oldest_for(&mut self, need: Need) -> Option<(ClientId, Rooms)> {
        let held = match need {
            Need::Slot => self.parked_count > 0,
            Need::Place(room) => self.parked_rooms.contains_key(&room),
            Need::AddressPlace(address) => self.parked_addresses.contains_key(&address),
        };
        if !held {
            return None;
        }
        let mut ended = self.pop_oldest(None, |entry| match (need, entry.state) {
            (Need::Slot, _) => true,
            (Need::Place(room), _) => entry.rooms.contains(&room),
            (Need::AddressPlace(wanted), State::Parked { address, .. }) => address == Some(wanted),
            (Need::AddressPlace(_), State::Live(_)) => false,
        })?;
        self.evicted += 1;
        let rooms = std::mem::take(&mut ended.rooms);
        let client = ended.client;
        if !matches!(need, Need::AddressPlace(_)) {
            self.released.push(ended);
        }
        Some((client, rooms))
    }

    /// Drops parked sessions whose window has passed.
    pub fn expire(&mut self, now: Instant) {
        while let Some(gone) = self.pop_oldest(Some(now), |_| true) {
            self.released.push(gone);
        }
    }

    /// Parked sessions that ended since the last call, for the loop to leave their rooms and
    /// free their addresses.
    pub fn take_released(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.released)
    }

    /// Parked sessions now.
    pub fn parked(&self) -> usize {
        self.parked_count
    }

    /// Live connections whose session a reconnect took over since the last call.
    pub fn take_taken_over(&mut self) -> Vec<ClientId> {
        std::mem::take(&mut self.taken_over)
    }

    /// Whether the loop has connections to close or memberships to leave.
    pub fn has_work(&self) -> bool {
        !self.taken_over.is_empty() || !self.released.is_empty()
    }

    /// Removes the oldest parked session that is `wanted`, stopping at the first one not
    /// expired at `now`, when given.
    fn pop_oldest(
        &mut self,
        now: Option<Instant>,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Option<Ended> {
        let mut index = 0;
        while let Some((since, token)) = self.parked.get(index) {
            let current = self.sessions.get(token).filter(
                |entry| matches!(entry.state, State::Parked { since: s, .. } if s == *since),
            );
            let Some(entry) = current else {
                // Resumed or ended since it was parked.
                self.parked.remove(index);
                continue;
            };
            if now.is_some_and(|now| now.saturating_duration_since(*since) < self.window) {
                return None;
            }
            if !wanted(entry) {
                index += 1;
                continue;
            }
            let (_, token) = self.parked.remove(index)?;
            let entry = self.sessions.remove(&token)?;
            let State::Parked {
                client, address, ..
            } = entry.state
            else {
                return None;
            };
            self.unpark(address, &entry.rooms);
            return Some(Ended {
                client,
                rooms: entry.rooms,
                address,
            });
        }
        None
    }

    /// Counts one parked session (charged to `address`, in `rooms`) as no longer parked.
    fn unpark(&mut self, address: Option<IpAddr>, rooms: &Rooms) {
        self.parked_count = self.parked_count.saturating_sub(1);
        if let Some(address) = address {
            count_down(&mut self.parked_addresses, address);
        }
        for &room in rooms {
            count_down(&mut self.parked_rooms, room);
        }
    }

    fn issue(&mut self, entry: Entry) -> Result<Box<str>, NoRandomness> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|_| NoRandomness)?;
        let mut token = String::with_capacity(32);
        for byte in bytes {
            let _ = write!(token, "{byte:02x}");
        }
        let token: Box<str> = token.into();
        self.sessions.insert(token.clone(), entry);
        Ok(token)
    }
}

fn count_up<K: Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    *counts.entry(key).or_default() += 1;
}

fn count_down<K: Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn a_parked_session_resumes_once_with_its_rooms_and_a_fresh_token() {
        let mut r = Reconnects::new(WINDOW, 10);
        let now = Instant::now();
        let (id, token) = r.start(ClientId(1), "alice").expect("random");
        assert_eq!(token.len(), 32);
        r.set_rooms(&token, [RoomKey::for_tests(3)].into_iter());
        assert!(r.park(&token, now, None));
        assert_eq!(r.parked(), 1);
        let (resumed, fresh) = r
            .resume(&token, ClientId(2), now + Duration::from_secs(5))
            .expect("random")
            .expect("resumed");
        assert_eq!((resumed.user_id, &*resumed.username), (id, "alice"));
        assert_eq!(resumed.previous, ClientId(1));
        assert_eq!(resumed.rooms.as_slice(), [RoomKey::for_tests(3)]);
        assert_ne!(fresh, token);
        assert_eq!(r.parked(), 0);
        let freed: Vec<_> = r
            .take_released()
            .into_iter()
            .map(|e| e.rooms.len())
            .collect();
        assert_eq!(freed, [0], "the old charge is freed; the rooms pass on");
        assert!(r
            .resume(&token, ClientId(3), now)
            .expect("random")
            .is_none());
        assert!(r.take_taken_over().is_empty());
    }

    #[test]
    fn a_live_session_taken_over_names_its_connection_for_closing() {
        let mut r = Reconnects::new(WINDOW, 10);
        let (_, token) = r.start(ClientId(1), "a").expect("random");
        let resumed = r
            .resume(&token, ClientId(2), Instant::now())
            .expect("random");
        assert!(resumed.is_some());
        assert_eq!(r.take_taken_over(), vec![ClientId(1)]);
    }

    #[test]
    fn parked_sessions_expire_after_the_window_and_are_capped() {
        let mut r = Reconnects::new(WINDOW, 2);
        let now = Instant::now();
        let tokens: Vec<_> = (0..3)
            .map(|i| r.start(ClientId(i), "a").expect("random").1)
            .collect();
        let released = |r: &mut Reconnects| -> Vec<ClientId> {
            r.take_released().into_iter().map(|e| e.client).collect()
        };
        assert!(r.park_at(&tokens[0], now));
        assert!(r.park_at(&tokens[1], now + Duration::from_secs(1)));
        assert!(r.park_at(&tokens[2], now + Duration::from_secs(2)));
        assert_eq!(released(&mut r), [ClientId(0)], "the oldest goes");
        assert_eq!(r.parked(), 2);
        r.expire(now + WINDOW);
        assert!(released(&mut r).is_empty());
        r.expire(now + WINDOW + Duration::from_secs(1));
        assert_eq!(released(&mut r), [ClientId(1)]);
        assert!(r
            .resume(&tokens[1], ClientId(9), now + WINDOW)
            .expect("random")
            .is_none());
        r.end(&tokens[2]);
        assert_eq!(r.parked(), 0);
        assert_eq!(released(&mut r), [ClientId(2)]);
        r.expire(now + 2 * WINDOW);
        assert!(r.sessions.is_empty() && released(&mut r).is_empty());
        assert_eq!(r.evicted, 1);
    }

    impl Reconnects {
        fn park_at(&mut self, token: &str, now: Instant) -> bool {
            self.park(token, now, None)
        }
    }

    #[test]
    fn an_ended_parked_session_frees_its_address_and_rooms() {
        let address: IpAddr = "192.0.2.7".parse().expect("address");
        let mut r = Reconnects::new(WINDOW, 10);
        let now = Instant::now();
        let (_, token) = r.start(ClientId(1), "a").expect("random");
        r.set_rooms(&token, [RoomKey::for_tests(3)].into_iter());
        assert!(r.park(&token, now, Some(address)));
        assert!(
            r.take_released().is_empty(),
            "the charge stays while parked"
        );
        r.expire(now + WINDOW);
        let ended = r.take_released();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].address, Some(address));
        assert_eq!(ended[0].rooms.as_slice(), [RoomKey::for_tests(3)]);
        assert_eq!(r.evicted, 0, "expiry is not eviction");
    }

    #[test]
    fn a_live_client_ends_the_oldest_parked_session_holding_what_it_needs() {
        let mut r = Reconnects::new(WINDOW, 10);
        let now = Instant::now();
        let rooms = [3, 4, 3].map(RoomKey::for_tests);
        let tokens: Vec<_> = (0..3)
            .map(|i| {
                let (_, token) = r.start(ClientId(i), "a").expect("random");
                r.set_rooms(&token, [rooms[i as usize]].into_iter());
                assert!(r.park_at(&token, now + Duration::from_secs(i)));
                token
            })
            .collect();
        let (client, held) = r
            .end_oldest_for(Need::Place(RoomKey::for_tests(4)))
            .expect("one");
        assert_eq!((client, held.as_slice()), (ClientId(1), &rooms[1..2]));
        let (client, _) = r
            .end_oldest_for(Need::Place(RoomKey::for_tests(3)))
            .expect("one");
        assert_eq!(client, ClientId(0), "the oldest in that room");
        assert!(r
            .end_oldest_for(Need::Place(RoomKey::for_tests(4)))
            .is_none());
        assert_eq!(r.parked(), 1);
        assert_eq!(r.evicted, 2);
        let released = r.take_released();
        assert!(
            released.iter().all(|e| e.rooms.is_empty()),
            "the caller left them"
        );
        assert_eq!(released.len(), 2);
        assert!(r
            .resume(&tokens[1], ClientId(9), now)
            .expect("random")
            .is_none());
        assert!(r.end_oldest_for(Need::Slot).is_some());
        assert!(r.end_oldest_for(Need::Slot).is_none());
    }

    #[test]
    fn no_budget_parks_nothing() {
        let mut r = Reconnects::new(WINDOW, 0);
        let (_, token) = r.start(ClientId(1), "a").expect("random");
        assert!(!r.park(&token, Instant::now(), None));
        assert_eq!(r.parked(), 0);
        assert!(
            r.sessions.is_empty(),
            "the session ended with its connection"
        );
        assert!(r
            .resume(&token, ClientId(2), Instant::now())
            .expect("random")
            .is_none());
    }

    #[test]
    fn a_new_connection_from_an_address_at_its_limit_takes_over_its_oldest_parked_charge() {
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("a"),
            "192.0.2.2".parse().expect("b"),
        );
        let mut r = Reconnects::new(WINDOW, 10);
        let now = Instant::now();
        for (i, address) in [(1, b), (2, a), (3, a)] {
            let (_, token) = r.start(ClientId(i), "x").expect("random");
            assert!(r.park(&token, now, Some(address)));
        }
        let (client, _) = r.end_oldest_for(Need::AddressPlace(a)).expect("a has some");
        assert_eq!(
            client,
            ClientId(2),
            "the oldest of that address, not of all"
        );
        assert!(
            r.take_released().is_empty(),
            "the charge passed on, nothing to free"
        );
        assert!(r.end_oldest_for(Need::AddressPlace(a)).is_some());
        assert!(r.end_oldest_for(Need::AddressPlace(a)).is_none());
        assert!(r
            .end_oldest_for(Need::Place(RoomKey::for_tests(1)))
            .is_none());
        assert_eq!(r.parked(), 1);
    }
}
