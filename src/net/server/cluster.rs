//! The loop's side of a cluster (`--cluster`): subscribing before loading, one round to Redis
//! per tick at most (this tick's batches, loads and member counts in one pipeline), applying
//! what the Redis threads report, and the last round at shutdown. Never waits on Redis while
//! serving.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::Server;
use crate::cluster::{Cluster, ClusterSettings, Event, Round};
use crate::engine::{Engine, Remote, RemoteChanges};

/// How often every room's member count is reported again (a restarted Redis, counts of dead
/// nodes that expired).
const MEMBER_REFRESH: Duration = Duration::from_secs(5);
/// How long shutdown waits for Redis to take what is left.
const FINAL_ROUND_PATIENCE: Duration = Duration::from_secs(10);

/// The cluster handle and the loop's bookkeeping around it.
pub(super) struct ClusterLink {
    cluster: Cluster,
    node: Box<str>,
    /// Shortest time between two rounds carrying batches (the tick).
    interval: Duration,
    next_round: Instant,
    next_member_refresh: Instant,
    /// Subscribed rooms to read in the next round (joins wait for them, or reloads).
    loads: Vec<Box<str>>,
    /// Rooms left memory whose channels are still to be left.
    unsubscribes: Vec<Box<str>>,
    /// The member counts of the round out, reported again if it fails.
    members_out: Vec<(Box<str>, u32)>,
    /// The engine's cluster epoch when the round out was sent: its reads are dropped if a
    /// reload of every room was asked for since.
    round_epoch: u64,
    outage_since: Option<Instant>,
    /// A Redis thread has stopped (it panicked): this node stays cut off from the cluster.
    broken: bool,
}

impl ClusterLink {
    pub(super) fn start(
        url: &str,
        node: Option<&str>,
        retention: Option<Duration>,
        tick: Duration,
        waker: mio::Waker,
        engine: &mut Engine,
    ) -> Result<ClusterLink, String> {
        let node: Box<str> = match node {
            Some(node) => node.into(),
            None => default_node_name().into(),
        };
        let settings = ClusterSettings {
            url: url.to_owned(),
            node_id: node.clone(),
            retention,
        };
        let cluster = Cluster::start(settings, Arc::new(waker))?;
        engine.enable_cluster();
        info!("cluster node {node}: rooms are shared through Redis");
        let now = Instant::now();
        Ok(ClusterLink {
            cluster,
            node,
            interval: tick,
            next_round: now,
            next_member_refresh: now + MEMBER_REFRESH,
            loads: Vec::new(),
            unsubscribes: Vec::new(),
            members_out: Vec::new(),
            round_epoch: 0,
            outage_since: None,
            broken: false,
        })
    }

    pub(super) fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl Server {
    /// Subscribes for the rooms joins wait for, leaves the channels of rooms that left memory,
    /// and sends a round when one is due.
    pub(super) fn cluster_work(&mut self, now: Instant) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        if !link.broken && link.cluster.is_broken() {
            self.cluster_broken(now);
            return self.cluster_work(now);
        }
        let engine = &mut self.engine;
        // The load follows Redis's confirmation of the subscription, so that no batch
        // published after the read can be missed. While Redis is out, joins to rooms not in
        // memory are refused at once.
        // Channels of rooms that left memory are left first (the subscriber thread keeps the
        // order), unless a join wants the room back meanwhile.
        link.unsubscribes.extend(engine.take_removed_rooms());
        while let Some(room) = link.unsubscribes.pop() {
            if engine.has_room(&room) || engine.is_loading(&room) {
                continue;
            }
            if !link.cluster.unsubscribe(room.clone()) {
                link.unsubscribes.push(room);
                break;
            }
        }
        let mut refused = Vec::new();
        for room in engine.take_load_requests() {
            if link.outage_since.is_some() {
                refused.extend(engine.cluster_load_failed(&room));
            } else if !link.cluster.subscribe(room.clone()) {
                engine.load_not_sent(&room);
            }
        }
        if !refused.is_empty() {
            self.resume_waiters(refused, now);
            return self.cluster_work(now);
        }
        let Some(link) = &mut self.cluster else {
            return;
        };
        let engine = &mut self.engine;
        link.loads.extend(engine.take_reloads());
        // While Redis is out nothing is sent: changes stay owed in the engine (latest values
        // only) and go out once it is back and every room has been read again.
        if link.cluster.is_busy() || link.outage_since.is_some() {
            return;
        }
        let batch_due = now >= link.next_round;
        let refresh = now >= link.next_member_refresh;
        if !batch_due && link.loads.is_empty() {
            return;
        }
        let batch = if batch_due && engine.has_unsaved() {
            engine.collect_batch()
        } else {
            Default::default()
        };
        if refresh {
            link.next_member_refresh = now + MEMBER_REFRESH;
        }
        let mut members = if batch_due {
            engine.take_member_reports(refresh)
        } else {
            Vec::new()
        };
        // Each room once (a reload and a join may both have asked for it).
        link.loads.sort_unstable();
        link.loads.dedup();
        // A room read for a join comes with its members on other nodes, so that the join is
        // checked against the cluster's count. (Reports above are of rooms in memory only.)
        for room in &link.loads {
            if !engine.has_room(room) {
                members.push((room.clone(), 0));
            }
        }
        let round = Round {
            batch,
            loads: std::mem::take(&mut link.loads),
            members,
        };
        if round.batch.is_empty() && round.loads.is_empty() && round.members.is_empty() {
            return;
        }
        link.members_out = round.members.clone();
        if !round.batch.is_empty() {
            link.next_round = now + link.interval;
        }
        match link.cluster.send_round(round) {
            Ok(()) => link.round_epoch = engine.cluster_epoch(),
            Err(round) => {
                engine.batch_failed(&round.batch);
                engine.member_reports_failed(&round.members);
                link.loads = round.loads;
                link.members_out.clear();
            }
        }
    }

    /// A Redis thread is gone (only a bug can do that): the node goes on as in an outage that
    /// never ends, serving the rooms it has, instead of retrying without end.
    fn cluster_broken(&mut self, now: Instant) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        if std::mem::replace(&mut link.broken, true) {
            return;
        }
        error!(
            "a Redis thread of this node stopped: it serves the rooms in memory, local fan-out \
             only, and refuses joins to other rooms until it is restarted"
        );
        self.on_cluster_event(Event::Outage, now);
    }

    /// When the loop must wake for the next round, if something waits for one.
    pub(super) fn next_cluster_due(&self) -> Option<Instant> {
        let link = self.cluster.as_ref()?;
        if link.cluster.is_busy() || link.outage_since.is_some() {
            return None;
        }
        if !link.loads.is_empty() {
            return Some(Instant::now());
        }
        let due = if self.engine.has_unsaved() || self.engine.has_member_reports() {
            link.next_round
        } else {
            link.next_member_refresh
        };
        Some(due.max(link.next_round))
    }

    /// The Redis threads woke the loop: applies what they report.
    pub(super) fn on_cluster_events(&mut self, now: Instant) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        let events = link.cluster.take_events();
        for event in events {
            self.on_cluster_event(event, now);
        }
        self.cluster_work(now);
    }

    fn on_cluster_event(&mut self, event: Event, now: Instant) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        match event {
            Event::RoundDone(result) => {
                let mut members_out = std::mem::take(&mut link.members_out);
                if result.saved {
                    self.engine.batch_saved(&result.batch);
                } else {
                    self.engine.batch_failed(&result.batch);
                }
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
                self.engine.member_reports_failed(&members_out);
                // Reads asked for before the last reload of every room may predate batches
                // that were missed; their rooms are being read again.
                let reads_current = link.round_epoch == self.engine.cluster_epoch();
                let (loaded, load_failed) = if reads_current {
                    (&result.loaded[..], &result.load_failed[..])
                } else {
                    (&[][..], &[][..])
                };
                // Rooms first, then their member counts, then the joins that waited.
                let mut waiters = Vec::new();
                for state in loaded {
                    waiters.extend(self.engine.install_cluster_room(
                        &state.room,
                        state.version,
                        &state.variables,
                        now,
                    ));
                }
                for (room, total) in &result.member_totals {
                    self.engine.set_member_total(room, *total);
                }
                for room in load_failed {
                    let refused = self.engine.cluster_load_failed(room);
                    if !refused.is_empty() {
                        warn!("room {room} could not be read from Redis; its joins are refused");
                    }
                    waiters.extend(refused);
                }
                self.resume_waiters(waiters, now);
            }
            Event::Subscribed(room) => {
                if link.outage_since.is_none() {
                    link.loads.push(room);
                } else {
                    let refused = self.engine.cluster_load_failed(&room);
                    self.resume_waiters(refused, now);
                }
            }
            Event::Message(batch) => {
                let outcome = self.engine.apply_remote(RemoteChanges {
                    room: &batch.room,
                    version: batch.version,
                    own: batch.node == link.node,
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
            }
            Event::Resubscribed => {
                info!("Redis subscription back: reading every room again");
                self.engine.reload_all();
            }
            Event::Outage => {
                if link.outage_since.is_some() {
                    return;
                }
                link.outage_since = Some(now);
                error!(
                    "Redis unreachable: serving the rooms in memory, local fan-out only; joins \
                     to other rooms are refused until it is back"
                );
                // Joins waiting for a room to be read would wait for the whole outage.
                link.loads.retain(|room| self.engine.has_room(room));
                let refused = self.engine.fail_cluster_loads();
                self.resume_waiters(refused, now);
            }
            Event::Restored if link.broken => {}
            Event::Restored => {
                let lasted = link.outage_since.take().map_or(0.0, |since| {
                    now.saturating_duration_since(since).as_secs_f64()
                });
                info!("Redis reachable again after {lasted:.1} s: re-syncing every room");
                self.engine.reload_all();
                // A Redis restarted without its data has no member counts either.
                link.next_member_refresh = now;
            }
        }
    }

    /// At shutdown: hands Redis what is left; an error if some could not be sent.
    pub(super) fn finish_cluster(&mut self) -> io::Result<()> {
        let Some(link) = self.cluster.take() else {
            return Ok(());
        };
        let unsent = link.cluster.finish(&mut self.engine, FINAL_ROUND_PATIENCE);
        if unsent > 0 {
            error!("{unsent} changed variables could not be sent to Redis before exit");
            return Err(io::Error::other(format!(
                "{unsent} changed variables could not be sent to Redis"
            )));
        }
        info!("every change is in Redis");
        Ok(())
    }
}

/// The host name and a random suffix, so that two processes on one host differ.
fn default_node_name() -> String {
    let mut host = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL or the end.
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    let host = match host.get(..end) {
        Some(name) if ok && !name.is_empty() => String::from_utf8_lossy(name).into_owned(),
        _ => "stratus".to_owned(),
    };
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{suffix}")
}
