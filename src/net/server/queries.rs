//! Answers to the HTTP API's reads (`/logs`, the variables read): from memory when the engine
//! holds all that is asked, otherwise through a read of the durable backend that comes back
//! with its other replies, in order, and is merged with what memory holds at that moment. The
//! loop never waits: a read the backend's channel refuses is answered `Unavailable`.

use std::collections::HashMap;
use std::time::Instant;

use super::durable::Durable;
use super::query_json;
use super::Server;
use crate::engine::history::merge_newest;
use crate::engine::{ClientId, ReadRequest, StoredRead};
use crate::query::{Answer, Query};

/// Backend reads out at once, for the store and Redis alike; a query beyond them is answered
/// `Unavailable` (and counted) so that reads never crowd out the loads and saves sharing the
/// backend's channel.
pub(crate) const MAX_READS_OUT: usize = 64;

/// A query waiting for the backend's read.
#[derive(Debug)]
pub(super) enum Waiting {
    /// The backend reads a page of `room`'s history (see [`LogsPlan::Read`]): the answer is
    /// the entries of `recent` still in memory merged with what it read, `limit` at most.
    Logs {
        room: Box<str>,
        recent: Option<(u64, u64)>,
        limit: usize,
        /// Where the page starts among all entries (Redis: memory then its list).
        offset: usize,
    },
    /// The backend reads the variables of `project`, a room not in memory.
    Variables { project: Box<str> },
    /// A request of the admin API (`admin_rooms.rs`).
    Admin(super::admin_rooms::AdminWait),
    /// A ban or block change waiting for the backend to write it (`admin_bans.rs`).
    Change(super::admin_bans::ChangeWait),
}

/// Queries out to the backend, and answers ready to be taken.
#[derive(Debug, Default)]
pub(super) struct Queries {
    pub(super) next_id: u64,
    pub(super) waiting: HashMap<u64, (ClientId, Waiting)>,
    pub(super) ready: Vec<(ClientId, Answer)>,
    /// Queries answered `Unavailable` because [`MAX_READS_OUT`] reads were out.
    pub refused: u64,
    /// Admin requests waiting for their room to be loaded, by the connection that asked
    /// (one request at a time each): carried out again when the loop resumes it.
    pub admin_loads: HashMap<ClientId, (String, crate::admin::AdminRequest)>,
}

/// What answering a `/logs` query takes, given the room's entries in memory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogsPlan {
    /// Nothing to read: an empty page.
    Empty,
    /// Entries `offset..offset + limit` of those in memory, newest first.
    Memory { offset: usize, limit: usize },
    /// The page's positions `recent` (newest first) are entries in memory, the rest are
    /// stored: the newest `count` stored ones after skipping `skip`. Unsaved entries are
    /// always newer than stored ones, so the store pages by itself; the entries of `recent`
    /// are named by sequence number when the read is sent, since a save may move them to
    /// disk before it comes back.
    Read {
        recent: Option<(usize, usize)>,
        skip: usize,
        count: usize,
    },
}

/// How a `/logs` page is answered: `cap` is `--history` (it bounds `offset + limit`),
/// `in_memory` the room's entries held in memory, `all_in_memory` whether those are the whole
/// history (no backend).
pub(crate) fn plan_logs(
    offset: usize,
    limit: usize,
    cap: usize,
    in_memory: usize,
    all_in_memory: bool,
) -> LogsPlan {
    let end = offset.saturating_add(limit).min(cap);
    if end <= offset {
        return LogsPlan::Empty;
    }
    let limit = end - offset;
    if all_in_memory || end <= in_memory {
        return LogsPlan::Memory { offset, limit };
    }
    let stored_from = offset.max(in_memory);
    LogsPlan::Read {
        recent: (offset < in_memory).then_some((offset, in_memory)),
        skip: stored_from - in_memory,
        count: end - stored_from,
    }
}

impl Server {
    /// Starts answering `query` for the connection of `client`. Returns the answer at once
    /// when no backend read is needed; otherwise `None`, and the answer comes out of
    /// `take_query_answers` later (always, even if only `Answer::Unavailable`).
    pub(super) fn start_query(
        &mut self,
        client: ClientId,
        query: Query,
        _now: Instant,
    ) -> Option<Answer> {
        match query {
            Query::Logs {
                project,
                offset,
                limit,
            } => self.start_logs(client, &project, offset, limit),
            Query::Variables { project } => self.start_variables(client, &project),
            Query::Admin { operator, request } => {
                self.start_admin(client, &operator, request, _now)
            }
        }
    }

    /// Answers finished since the last call, for connections that asked.
    pub(super) fn take_query_answers(&mut self) -> Vec<(ClientId, Answer)> {
        std::mem::take(&mut self.queries.ready)
    }

    /// A `/logs` page of `project`'s room (the admin API's room history asks the same).
    pub(super) fn start_logs(
        &mut self,
        client: ClientId,
        project: &str,
        offset: usize,
        limit: usize,
    ) -> Option<Answer> {
        // A Scratch project's id is its room's id, as the Scratch dialect joins it.
        let room = self.engine.room_key(project);
        let in_memory = room.map_or(0, |room| self.engine.history_len(room));
        let cap = self.engine.history_cap();
        match plan_logs(offset, limit, cap, in_memory, self.durable.is_none()) {
            LogsPlan::Empty => Some(Answer::Json(query_json::logs([]))),
            LogsPlan::Memory { offset, limit } => {
                let entries = room.into_iter().flat_map(|r| self.engine.history_newest(r));
                Some(Answer::Json(query_json::logs(
                    entries.skip(offset).take(limit),
                )))
            }
            LogsPlan::Read {
                recent: positions,
                skip,
                count,
            } => {
                // Entries older than the oldest in memory are stored (or gone): the store
                // pages through those alone. No room in memory: all of them are stored.
                let (before, recent) = match room {
                    Some(room) => {
                        let (_, oldest) = self.engine.history_bounds(room);
                        let seq = |at| self.engine.history_seq_at(room, at);
                        let recent = positions
                            .and_then(|(from, to)| Some((seq(to.checked_sub(1)?)?, seq(from)?)));
                        (oldest, recent)
                    }
                    None => (u64::MAX, None),
                };
                let page = positions.map_or(0, |(from, to)| to - from) + count;
                let read = ReadRequest::History {
                    room: project.into(),
                    recent,
                    before,
                    skip,
                    count,
                    newest: offset.saturating_add(page),
                };
                let waiting = Waiting::Logs {
                    room: project.into(),
                    recent,
                    limit: page,
                    offset,
                };
                self.send_read(client, read, waiting)
            }
        }
    }

    fn start_variables(&mut self, client: ClientId, project: &str) -> Option<Answer> {
        if let Some(room) = self.engine.room_key(project) {
            let variables = self.engine.variables_shown(room);
            return Some(Answer::Json(query_json::variables(project, variables)));
        }
        if self.durable.is_none() {
            return Some(Answer::Json(query_json::variables(project, [])));
        }
        let read = ReadRequest::Variables {
            room: project.into(),
        };
        let waiting = Waiting::Variables {
            project: project.into(),
        };
        self.send_read(client, read, waiting)
    }

    /// Hands `read` to the backend; `Unavailable` at once when it cannot take it, or when
    /// [`MAX_READS_OUT`] reads are out already.
    pub(super) fn send_read(
        &mut self,
        client: ClientId,
        read: ReadRequest,
        waiting: Waiting,
    ) -> Option<Answer> {
        if self.queries.waiting.len() >= MAX_READS_OUT {
            self.queries.refused += 1;
            return Some(Answer::Unavailable);
        }
        let id = self.queries.next_id;
        let sent = match &mut self.durable {
            Some(Durable::Store(store, _)) => store.request_read(id, read),
            Some(Durable::Cluster(cluster, _)) => cluster.request_read(id, read),
            None => false,
        };
        if !sent {
            return Some(Answer::Unavailable);
        }
        self.queries.next_id += 1;
        self.queries.waiting.insert(id, (client, waiting));
        None
    }

    /// The backend's read `id` came back (in order with its other replies): the answer is
    /// made now, from it and what memory holds now.
    pub(super) fn finish_read(&mut self, id: u64, read: StoredRead) {
        let Some((client, waiting)) = self.queries.waiting.remove(&id) else {
            return;
        };
        let answer = match (waiting, read) {
            (
                Waiting::Logs {
                    room,
                    limit,
                    offset,
                    ..
                },
                StoredRead::History(stored),
            ) if matches!(self.durable, Some(Durable::Cluster(..))) => {
                // Redis's list holds every node's stored entries, each numbered by its own
                // writer, so sequence numbers do not order them. What this node has not
                // written yet is newer than its own stored entries and goes first; a round
                // answered before this read already took its entries out of memory and into
                // the list, one answered after it had not written them when Redis read.
                let unsaved = self
                    .engine
                    .room_key(&room)
                    .into_iter()
                    .flat_map(|key| self.engine.history_newest(key));
                let page = unsaved.chain(&stored).skip(offset).take(limit);
                Answer::Json(query_json::logs(page))
            }
            (
                Waiting::Logs {
                    room,
                    recent,
                    limit,
                    ..
                },
                StoredRead::History(stored),
            ) => {
                // The entries of `recent` not saved since the read was sent are still here;
                // those saved are in `stored`. Newer ones than `recent` came after the
                // request and are not part of its page.
                let (low, high) = recent.unwrap_or((1, 0));
                let unsaved = self
                    .engine
                    .room_key(&room)
                    .into_iter()
                    .flat_map(|key| self.engine.history_newest(key))
                    .skip_while(|e| e.seq > high)
                    .take_while(|e| e.seq >= low);
                let page = merge_newest(unsaved, &stored, 0, limit);
                Answer::Json(query_json::logs(page))
            }
            (Waiting::Variables { project }, StoredRead::Variables(variables)) => {
                // The room may have come into memory since: its values are the newer.
                let json = match self.engine.room_key(&project) {
                    Some(room) => {
                        query_json::variables(&project, self.engine.variables_shown(room))
                    }
                    None => {
                        query_json::variables(&project, variables.iter().map(query_json::shown))
                    }
                };
                Answer::Json(json)
            }
            (Waiting::Admin(wait), read) => self.finish_admin_read(client, wait, read),
            _ => Answer::Unavailable,
        };
        self.queries.ready.push((client, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_come_from_memory_only_when_it_holds_the_whole_page() {
        // No backend: memory is the history.
        assert_eq!(
            plan_logs(0, 100, 1000, 3, true),
            LogsPlan::Memory {
                offset: 0,
                limit: 100
            }
        );
        // With a backend: 5 unsaved entries answer a page within them.
        assert_eq!(
            plan_logs(2, 3, 1000, 5, false),
            LogsPlan::Memory {
                offset: 2,
                limit: 3
            }
        );
        // A page across them: positions 2..5 from memory, then the newest stored one.
        assert_eq!(
            plan_logs(2, 4, 1000, 5, false),
            LogsPlan::Read {
                recent: Some((2, 5)),
                skip: 0,
                count: 1
            }
        );
        // A page past them: the store pages alone, skipping what memory's entries stand for.
        assert_eq!(
            plan_logs(20, 10, 1000, 5, false),
            LogsPlan::Read {
                recent: None,
                skip: 15,
                count: 10
            }
        );
        // `--history` bounds the read, and a page past it is empty.
        assert_eq!(
            plan_logs(900, 1000, 1000, 0, false),
            LogsPlan::Read {
                recent: None,
                skip: 900,
                count: 100
            }
        );
        assert_eq!(plan_logs(1000, 10, 1000, 0, false), LogsPlan::Empty);
        assert_eq!(plan_logs(0, 10, 0, 0, false), LogsPlan::Empty);
        assert_eq!(
            plan_logs(usize::MAX, usize::MAX, 1000, 0, true),
            LogsPlan::Empty
        );
    }
}
