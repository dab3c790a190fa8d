//! The cluster's orchestration (`--cluster`): subscribing before reading, one round to Redis
//! per tick at most (this tick's batch, the reads and the member counts in one pipeline, one
//! round out at a time), member counts refreshed every 5 s, and what the Redis threads report:
//! a round's answer, batches from the channels, outages, a lost subscription, a dead thread.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::Command;
use crate::cluster::{Event, Round};
use crate::engine::{ClientId, Engine, Read, Remote, RemoteChanges, Reports, Want, Work};

/// How often every room's member count is reported again (a restarted Redis, counts of dead
/// nodes that expired).
const MEMBER_REFRESH: Duration = Duration::from_secs(5);

pub struct ClusterPlan {
    /// This node's id: batches on a channel carrying it are this node's own.
    node: Box<str>,
    /// Shortest time between two rounds carrying batches (the tick).
    interval: Duration,
    next_round: Instant,
    next_member_refresh: Instant,
    /// Subscribed rooms to read in the next round (joins wait for them, or reloads).
    loads: Vec<Box<str>>,
    /// Rooms left memory whose channels are still to be left.
    unsubscribes: Vec<Box<str>>,
    /// A round is out: the next one waits for its answer.
    round_out: bool,
    /// The member counts of the round out, reported again if Redis does not answer for them.
    members_out: Vec<(Box<str>, u32)>,
    /// The engine's resync epoch when the round out was sent: its reads are dropped if a
    /// reload of every room was asked for since.
    round_epoch: u64,
    outage_since: Option<Instant>,
    /// A Redis thread has stopped (it panicked): this node stays cut off from the cluster.
    broken: bool,
}

impl ClusterPlan {
    pub fn new(node: Box<str>, interval: Duration, now: Instant) -> Self {
        ClusterPlan {
            node,
            interval,
            next_round: now,
            next_member_refresh: now + MEMBER_REFRESH,
            loads: Vec::new(),
            unsubscribes: Vec::new(),
            round_out: false,
            members_out: Vec::new(),
            round_epoch: 0,
            outage_since: None,
            broken: false,
        }
    }

    /// Leaves the channels of rooms that left memory, subscribes for the rooms joins wait for
    /// (refusing those joins while Redis is out: returned, to be resumed, after which `poll`
    /// is called again), and builds a round when one is due.
    pub fn poll(
        &mut self,
        engine: &mut Engine,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<ClientId> {
        // While Redis is out nothing is sent: changes stay owed in the engine (latest values
        // only) and go out once it is back and every room has been read again.
        let can_round = !self.round_out && self.outage_since.is_none();
        let batch_due = can_round && now >= self.next_round;
        let refresh = now >= self.next_member_refresh;
        let reports = match (batch_due, refresh) {
            (false, _) => Reports::None,
            (true, false) => Reports::Changed,
            (true, true) => Reports::All,
        };
        let work = engine.poll_work(Want {
            batch: batch_due && engine.has_unsaved(),
            reports,
        });
        // Channels of rooms that left memory are left first (the subscriber thread keeps the
        // order), unless a join wants the room back meanwhile.
        self.unsubscribes.extend(work.removed);
        for room in self.unsubscribes.drain(..) {
            if !engine.wants_room(&room) {
                out.push(Command::Unsubscribe(room));
            }
        }
        // The read follows Redis's confirmation of the subscription, so that no batch
        // published after it can be missed. While Redis is out, joins to rooms not in memory
        // are refused at once.
        let mut refused = Vec::new();
        for room in work.loads {
            if self.outage_since.is_some() {
                refused.extend(engine.handle_load_failed(&room));
            } else {
                out.push(Command::Subscribe(room));
            }
        }
        self.loads.extend(work.reloads);
        if !can_round || (!batch_due && self.loads.is_empty()) {
            return refused;
        }
        if refresh {
            self.next_member_refresh = now + MEMBER_REFRESH;
        }
        let mut members = work.reports;
        // Each room once (a reload and a join may both have asked for it).
        self.loads.sort_unstable();
        self.loads.dedup();
        // A room read for a join comes with its members on other nodes, so that the join is
        // checked against the cluster's count. (Reports above are of rooms in memory only.)
        for room in &self.loads {
            if engine.room_key(room).is_none() {
                members.push((room.clone(), 0));
            }
        }
        let round = Round {
            batch: work.batch,
            loads: std::mem::take(&mut self.loads),
            members,
        };
        if round.batch.is_empty() && round.loads.is_empty() && round.members.is_empty() {
            return refused;
        }
        self.members_out = round.members.clone();
        if !round.batch.is_empty() {
            self.next_round = now + self.interval;
        }
        self.round_out = true;
        self.round_epoch = engine.resync_epoch();
        out.push(Command::Round(round));
        refused
    }

    /// A Redis thread could not take `command` now: it is handed out again later.
    pub fn handle_unsent(&mut self, engine: &mut Engine, command: Command) {
        match command {
            Command::Unsubscribe(room) => self.unsubscribes.push(room),
            Command::Subscribe(room) => engine.handle_unsent(Work {
                loads: vec![room],
                ..Work::default()
            }),
            Command::Round(round) => {
                self.round_out = false;
                self.members_out.clear();
                self.loads = round.loads;
                engine.handle_unsent(Work {
                    batch: round.batch,
                    reports: round.members,
                    ..Work::default()
                });
            }
            Command::Load(_) | Command::Save(_) => {}
        }
    }

    /// A Redis thread is gone (only a bug can do that): the node goes on as in an outage that
    /// never ends, serving the rooms it has, instead of retrying without end. Returns the
    /// clients whose joins are refused.
    pub fn handle_broken(&mut self, engine: &mut Engine, now: Instant) -> Vec<ClientId> {
        if std::mem::replace(&mut self.broken, true) {
            return Vec::new();
        }
        error!(
            "a Redis thread of this node stopped: it serves the rooms in memory, local fan-out \
             only, and refuses joins to other rooms until it is restarted"
        );
        self.handle_event(engine, Event::Outage, now)
    }

    /// Applies one report of the Redis threads; returns the clients whose joins can be tried
    /// again.
    pub fn handle_event(
        &mut self,
        engine: &mut Engine,
        event: Event,
        now: Instant,
    ) -> Vec<ClientId> {
        match event {
            Event::RoundDone(result) => {
                self.round_out = false;
                let mut members_out = std::mem::take(&mut self.members_out);
                engine.handle_saved(&result.batch, result.saved);
                // Counts Redis did not answer for are reported again.
                if members_out.len() != result.member_totals.len() {
                    let answered: HashSet<&str> = result
                        .member_totals
                        .iter()
                        .map(|(room, _)| &**room)
                        .collect();
                    members_out.retain(|(room, _)| !answered.contains(&**room));
                } else {
                    members_out.clear();
                }
                engine.handle_unsent(Work {
                    reports: members_out,
                    ..Work::default()
                });
                // Reads asked for before the last reload of every room may predate batches
                // that were missed; their rooms are being read again.
                let reads_current = self.round_epoch == engine.resync_epoch();
                let (loaded, load_failed) = if reads_current {
                    (&result.loaded[..], &result.load_failed[..])
                } else {
                    (&[][..], &[][..])
                };
                // Rooms first, then their member counts, then the joins that waited.
                let mut waiters = Vec::new();
                for state in loaded {
                    let read = Read {
                        version: state.version,
                        variables: &state.variables,
                        history_seq: 0,
                    };
                    waiters.extend(engine.handle_loaded(&state.room, read, now));
                }
                engine.handle_member_totals(&result.member_totals);
                for room in load_failed {
                    let refused = engine.handle_load_failed(room);
                    if !refused.is_empty() {
                        warn!("room {room} could not be read from Redis; its joins are refused");
                    }
                    waiters.extend(refused);
                }
                waiters
            }
            Event::Subscribed(room) => {
                if self.outage_since.is_none() {
                    self.loads.push(room);
                    Vec::new()
                } else {
                    engine.handle_load_failed(&room)
                }
            }
            Event::Message(batch) => {
                let outcome = engine.handle_remote(RemoteChanges {
                    room: &batch.room,
                    version: batch.version,
                    own: batch.node == self.node,
                    local_version: batch.local_version,
                    replace_all: batch.replace_all,
                    variables: &batch.variables,
                });
                if outcome == Remote::Gap {
                    info!(
                        "room {}: batches missed before version {}; reading it again",
                        batch.room, batch.version
                    );
                }
                Vec::new()
            }
            // The driver answers its query; nothing of the plan's.
            // The loop's: reads are answered, bans and control messages applied, before the
            // plan sees the events.
            Event::Read(..) | Event::Bans(..) | Event::Control(_) | Event::ControlDone(..) => {
                Vec::new()
            }
            Event::Resubscribed => {
                info!("Redis subscription back: reading every room again");
                engine.handle_resync();
                Vec::new()
            }
            Event::Outage => {
                if self.outage_since.is_some() {
                    return Vec::new();
                }
                self.outage_since = Some(now);
                error!(
                    "Redis unreachable: serving the rooms in memory, local fan-out only; joins \
                     to other rooms are refused until it is back"
                );
                // Joins waiting for a room to be read would wait for the whole outage.
                self.loads.retain(|room| engine.room_key(room).is_some());
                engine.handle_outage()
            }
            Event::Restored if self.broken => Vec::new(),
            Event::Restored => {
                let lasted = self.outage_since.take().map_or(0.0, |since| {
                    now.saturating_duration_since(since).as_secs_f64()
                });
                info!("Redis reachable again after {lasted:.1} s: re-syncing every room");
                engine.handle_resync();
                // A Redis restarted without its data has no member counts either.
                self.next_member_refresh = now;
                Vec::new()
            }
        }
    }

    /// When the loop must wake for the next round, if something waits for one.
    pub fn poll_timeout(&self, engine: &Engine, now: Instant) -> Option<Instant> {
        if self.round_out || self.outage_since.is_some() {
            return None;
        }
        if !self.loads.is_empty() {
            return Some(now);
        }
        let due = if engine.has_unsaved() || engine.has_reports() {
            self.next_round
        } else {
            self.next_member_refresh
        };
        Some(due.max(self.next_round))
    }
}
