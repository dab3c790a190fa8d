//! Reconnect tokens and parked sessions (MultiStudio dialect).
//!
//! Every session that said HELLO has one current token. When its connection ends abnormally
//! (no close frame from the client), the session is parked: its room memberships stay in the
//! engine, reserved but receiving nothing, until `--reconnect-window` runs out. A HELLO with
//! the token takes the session over, parked or (half-dead) still live; the token is then used
//! up and a fresh one issued. Memory is bounded: at most `max_parked` parked sessions, each a
//! name, an id, a token and at most `--max-rooms-per-connection` room keys.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
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
    /// Live connections whose session a reconnect took over; the event loop closes them.
    taken_over: Vec<ClientId>,
    /// Memberships of sessions dropped while parked; the event loop leaves their rooms.
    released: Vec<(ClientId, Rooms)>,
    next_user: u64,
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
    /// Its connection is gone; its memberships are still the old client's.
    Parked {
        client: ClientId,
        since: Instant,
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
            taken_over: Vec::new(),
            released: Vec::new(),
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
            State::Parked { client: old, since } => {
                self.parked_count -= 1;
                if now.saturating_duration_since(since) >= self.window {
                    // Expired but not yet swept.
                    self.released.push((old, entry.rooms));
                    return Ok(None);
                }
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

    /// The connection of `token` ended abnormally: keep its session for the window. Returns
    /// false when there is no such session (the caller then releases its rooms itself). When
    /// too many are parked, the oldest is dropped.
    pub fn park(&mut self, token: &str, now: Instant) -> bool {
        let Some(entry) = self.sessions.get_mut(token) else {
            return false;
        };
        let State::Live(client) = entry.state else {
            return false;
        };
        entry.state = State::Parked { client, since: now };
        self.parked.push_back((now, token.into()));
        self.parked_count += 1;
        if self.parked_count > self.max_parked {
            if let Some(dropped) = self.pop_oldest(None) {
                self.released.push(dropped);
            }
        }
        true
    }

    /// The session of `token` ended normally (its connection leaves its rooms itself).
    pub fn end(&mut self, token: &str) {
        if let Some(entry) = self.sessions.remove(token) {
            if let State::Parked { .. } = entry.state {
                self.parked_count -= 1;
            }
        }
    }

    /// Drops parked sessions whose window has passed.
    pub fn expire(&mut self, now: Instant) {
        while let Some(gone) = self.pop_oldest(Some(now)) {
            self.released.push(gone);
        }
    }

    /// Memberships of dropped parked sessions, for the loop to leave.
    pub fn take_released(&mut self) -> Vec<(ClientId, Rooms)> {
        std::mem::take(&mut self.released)
    }

    /// Parked sessions, which count against the connection limit.
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

    /// Removes the oldest parked session (only if expired at `now`, when given).
    fn pop_oldest(&mut self, now: Option<Instant>) -> Option<(ClientId, Rooms)> {
        while let Some((since, token)) = self.parked.front() {
            let current = self
                .sessions
                .get(token)
                .and_then(|entry| match entry.state {
                    State::Parked { client, since: s } if s == *since => Some(client),
                    _ => None,
                });
            let Some(client) = current else {
                // Resumed or ended since it was parked.
                self.parked.pop_front();
                continue;
            };
            if now.is_some_and(|now| now.saturating_duration_since(*since) < self.window) {
                return None;
            }
            let token = token.clone();
            self.parked.pop_front();
            self.parked_count -= 1;
            let entry = self.sessions.remove(&token)?;
            return Some((client, entry.rooms));
        }
        None
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
        assert!(r.park(&token, now));
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
            r.take_released().into_iter().map(|(c, _)| c).collect()
        };
        assert!(r.park(&tokens[0], now));
        assert!(r.park(&tokens[1], now + Duration::from_secs(1)));
        assert!(r.park(&tokens[2], now + Duration::from_secs(2)));
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
        r.expire(now + 2 * WINDOW);
        assert!(r.sessions.is_empty() && released(&mut r).is_empty());
    }
}
