//! The loop's driver of the durable backend (the SQLite store or the Redis cluster): it feeds
//! the backend's answers to the plan (`durable/`), sends the commands the plan produces to
//! the backend's bounded channels (giving back what they refuse), resumes the joins the plan
//! names, tells the loop when to wake, and at shutdown drains what the engine still owes, once,
//! for either backend. The clock is read here, never in the plans; the loop never waits on the
//! disk or on Redis while serving.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info};

use super::Server;
use crate::cluster::{Cluster, ClusterSettings, ClusterStats, Event, Round};
use crate::durable::{ClusterPlan, Command, StorePlan};
use crate::engine::{Backend, Batch, ClientId, Engine, Want};
use crate::metrics::StoreSnapshot;
use crate::store::{Reply, Store, StoreSettings};

/// How long shutdown waits for the store to write what is left.
const FINAL_SAVE_PATIENCE: Duration = Duration::from_secs(30);
/// How long shutdown waits for Redis to take what is left.
const FINAL_ROUND_PATIENCE: Duration = Duration::from_secs(10);

/// The configured backend's handle, as the shutdown drain needs it.
pub enum BackendLink {
    Store(Store),
    Cluster(Cluster),
}

/// The configured backend with the plan that decides what it is sent.
pub(super) enum Durable {
    Store(Store, StorePlan),
    Cluster(Cluster, ClusterPlan),
}

/// One answer of either backend.
enum Answer {
    Store(Reply),
    Cluster(Event),
}

/// The answers one wake-up brought, of whichever backend is configured.
enum Answers {
    Store(std::vec::IntoIter<Reply>),
    Cluster(std::vec::IntoIter<Event>),
}

impl Iterator for Answers {
    type Item = Answer;

    fn next(&mut self) -> Option<Answer> {
        match self {
            Answers::Store(replies) => replies.next().map(Answer::Store),
            Answers::Cluster(events) => events.next().map(Answer::Cluster),
        }
    }
}

impl Durable {
    /// Opens the store (`--data-dir`) and makes it the engine's backend.
    pub(super) fn open_store(
        settings: StoreSettings,
        interval: Duration,
        waker: mio::Waker,
        engine: &mut Engine,
    ) -> Result<Durable, String> {
        let store = Store::open(settings, Arc::new(waker))?;
        engine.set_backend(Backend::Store);
        Ok(Durable::Store(
            store,
            StorePlan::new(interval, Instant::now()),
        ))
    }

    /// Starts the Redis threads (`--cluster`) and makes Redis the engine's backend.
    pub(super) fn start_cluster(
        url: &str,
        node: Option<&str>,
        retention: Option<Duration>,
        history: usize,
        tick: Duration,
        waker: mio::Waker,
        engine: &mut Engine,
    ) -> Result<Durable, String> {
        let node: Box<str> = match node {
            Some(node) => node.into(),
            None => default_node_name().into(),
        };
        let settings = ClusterSettings {
            url: url.to_owned(),
            node_id: node.clone(),
            retention,
            history,
        };
        let cluster = Cluster::start(settings, Arc::new(waker))?;
        engine.set_backend(Backend::Cluster);
        info!("cluster node {node}: rooms are shared through Redis");
        let plan = ClusterPlan::new(node, tick, Instant::now());
        Ok(Durable::Cluster(cluster, plan))
    }

    /// The plan's commands for this turn, sent; returns the clients to resume (then poll
    /// again: resumed sessions may have asked for rooms).
    fn poll(&mut self, engine: &mut Engine, now: Instant) -> Vec<ClientId> {
        let mut commands = Vec::new();
        match self {
            Durable::Store(store, plan) => {
                plan.poll(engine, now, &mut commands);
                for command in commands {
                    if let Err(command) = send_to_store(store, command) {
                        plan.handle_unsent(engine, command);
                    }
                }
                Vec::new()
            }
            Durable::Cluster(cluster, plan) => {
                if cluster.is_broken() {
                    let refused = plan.handle_broken(engine, now);
                    if !refused.is_empty() {
                        return refused;
                    }
                }
                let refused = plan.poll(engine, now, &mut commands);
                for command in commands {
                    if let Err(command) = send_to_cluster(cluster, command) {
                        plan.handle_unsent(engine, command);
                    }
                }
                refused
            }
        }
    }

    /// The backend's answers so far, in the order they came (no copy into a second list).
    fn take_answers(&mut self) -> Answers {
        match self {
            Durable::Store(store, _) => Answers::Store(store.take_replies().into_iter()),
            Durable::Cluster(cluster, _) => Answers::Cluster(cluster.take_events().into_iter()),
        }
    }

    fn handle(&mut self, engine: &mut Engine, answer: Answer, now: Instant) -> Vec<ClientId> {
        match (self, answer) {
            (Durable::Store(_, plan), Answer::Store(reply)) => {
                plan.handle_reply(engine, reply, now)
            }
            (Durable::Cluster(_, plan), Answer::Cluster(event)) => {
                plan.handle_event(engine, event, now)
            }
            _ => Vec::new(),
        }
    }

    /// The store's counters for `/metrics`.
    pub(super) fn store_snapshot(&self, engine: &Engine, now: Instant) -> Option<StoreSnapshot> {
        let Durable::Store(store, plan) = self else {
            return None;
        };
        let since_saved = now.saturating_duration_since(plan.last_saved());
        Some(StoreSnapshot::read(&store.stats, engine, since_saved))
    }

    /// The cluster's counters for `/metrics`.
    pub(super) fn cluster_stats(&self) -> Option<ClusterStats> {
        match self {
            Durable::Cluster(cluster, _) => Some(cluster.stats()),
            Durable::Store(..) => None,
        }
    }
}

fn send_to_store(store: &mut Store, command: Command) -> Result<(), Command> {
    match command {
        Command::Load(room) => {
            if store.request_load(room.clone()) {
                Ok(())
            } else {
                Err(Command::Load(room))
            }
        }
        Command::Save(batch) => store.save(batch).map_err(Command::Save),
        other => Err(other),
    }
}

fn send_to_cluster(cluster: &mut Cluster, command: Command) -> Result<(), Command> {
    match command {
        Command::Subscribe(room) => match cluster.subscribe(room.clone()) {
            true => Ok(()),
            false => Err(Command::Subscribe(room)),
        },
        Command::Unsubscribe(room) => match cluster.unsubscribe(room.clone()) {
            true => Ok(()),
            false => Err(Command::Unsubscribe(room)),
        },
        Command::Round(round) => cluster.send_round(round).map_err(Command::Round),
        other => Err(other),
    }
}

impl Server {
    /// Sends what the backend is to do now (loads, subscriptions, a batch or a round when
    /// due), resuming the joins refused on the way.
    pub(super) fn durable_work(&mut self, now: Instant) {
        loop {
            let Some(durable) = &mut self.durable else {
                return;
            };
            let resumed = durable.poll(&mut self.engine, now);
            if resumed.is_empty() {
                return;
            }
            self.resume_waiters(resumed, now);
        }
    }

    /// A backend thread woke the loop: applies its answers, then sends what follows.
    pub(super) fn on_durable_answers(&mut self, now: Instant) {
        let Some(durable) = &mut self.durable else {
            return;
        };
        for answer in durable.take_answers() {
            // A query's read is answered here, in order with the replies around it.
            let answer = match answer {
                Answer::Store(Reply::Read(id, read)) | Answer::Cluster(Event::Read(id, read)) => {
                    self.finish_read(id, read);
                    continue;
                }
                Answer::Store(Reply::BansWritten(id, written))
                | Answer::Cluster(Event::ControlDone(id, written)) => {
                    self.finish_change(id, written);
                    continue;
                }
                Answer::Cluster(Event::Bans(bans, blocks)) => {
                    self.install_bans(bans, blocks);
                    continue;
                }
                Answer::Cluster(Event::Control(message)) => {
                    self.on_control(message, now);
                    continue;
                }
                Answer::Cluster(Event::Resubscribed) => {
                    // Control messages may have been missed while the subscription was down.
                    if let Some(Durable::Cluster(cluster, _)) = &mut self.durable {
                        cluster.request_bans();
                    }
                    Answer::Cluster(Event::Resubscribed)
                }
                other => other,
            };
            let Some(durable) = &mut self.durable else {
                return;
            };
            let waiters = durable.handle(&mut self.engine, answer, now);
            self.resume_waiters(waiters, now);
        }
        // Resumed sessions may have changed rooms or asked for rooms of their own.
        self.durable_work(now);
    }

    /// When the loop must wake for the backend's next batch or round, if something waits.
    pub(super) fn durable_due(&self, now: Instant) -> Option<Instant> {
        match self.durable.as_ref()? {
            Durable::Store(_, plan) => plan.poll_timeout(&self.engine),
            Durable::Cluster(_, plan) => plan.poll_timeout(&self.engine, now),
        }
    }

    fn resume_waiters(&mut self, waiters: Vec<ClientId>, now: Instant) {
        for client in waiters {
            // An admin request that waited for its room is carried out now.
            if self.resume_admin(client, now) {
                continue;
            }
            self.serve_client(client, now, |conn, ctx| conn.resume(ctx));
        }
    }

    /// At shutdown: hands the backend what is left; an error if some could not be.
    pub(super) fn finish_durable(&mut self) -> io::Result<()> {
        let Some(durable) = self.durable.take() else {
            return Ok(());
        };
        let (link, patience, what, done) = match durable {
            Durable::Store(store, _) => (
                BackendLink::Store(store),
                FINAL_SAVE_PATIENCE,
                "saved",
                "every change is saved",
            ),
            Durable::Cluster(cluster, _) => (
                BackendLink::Cluster(cluster),
                FINAL_ROUND_PATIENCE,
                "sent to Redis",
                "every change is in Redis",
            ),
        };
        let unsaved = drain(link, &mut self.engine, patience);
        if unsaved > 0 {
            error!("{unsaved} changed variables could not be {what} before exit");
            return Err(io::Error::other(format!(
                "{unsaved} changed variables could not be {what}"
            )));
        }
        info!("{done}");
        Ok(())
    }
}

/// What a wait for the backend's answer to a batch brought.
enum Waited {
    Saved(Batch, bool),
    /// An answer to something else (a load, a channel's batch): of no use any more.
    Other,
    /// Nothing before the deadline, or the thread is gone.
    Nothing,
}

impl BackendLink {
    fn is_out(&self) -> bool {
        match self {
            BackendLink::Store(store) => store.is_saving(),
            BackendLink::Cluster(cluster) => cluster.is_busy(),
        }
    }

    fn variables_out(&self) -> usize {
        match self {
            BackendLink::Store(store) => store.variables_out(),
            BackendLink::Cluster(cluster) => cluster.variables_out(),
        }
    }

    fn send_blocking(&mut self, batch: Batch) -> Result<(), Batch> {
        match self {
            BackendLink::Store(store) => store.save_blocking(batch),
            BackendLink::Cluster(cluster) => {
                let round = Round {
                    batch,
                    ..Round::default()
                };
                cluster
                    .send_round_blocking(round)
                    .map_err(|round| round.batch)
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Waited {
        match self {
            BackendLink::Store(store) => match store.wait_reply(timeout) {
                Some(Reply::Saved(batch)) => Waited::Saved(batch, true),
                Some(Reply::SaveFailed(batch)) => Waited::Saved(batch, false),
                Some(
                    Reply::Loaded(..)
                    | Reply::LoadFailed(_)
                    | Reply::Read(..)
                    | Reply::BansWritten(..),
                ) => Waited::Other,
                None => Waited::Nothing,
            },
            // Reading the other events keeps the subscriber (and so the command thread) from
            // waiting on a full channel.
            BackendLink::Cluster(cluster) => match cluster.wait_event(timeout) {
                Some(Event::RoundDone(result)) => Waited::Saved(result.batch, result.saved),
                Some(_) => Waited::Other,
                None => Waited::Nothing,
            },
        }
    }

    fn stop(self) {
        match self {
            BackendLink::Store(store) => store.stop(),
            BackendLink::Cluster(cluster) => cluster.stop(),
        }
    }
}

/// At shutdown: hands the backend everything the engine still owes, batch after batch,
/// waiting for each answer (at most `patience` in all), then stops the backend's threads (the
/// cluster's take this node's member counts and heartbeat out of Redis). Gives up after a
/// timeout or three failed batches. Returns how many variables could not be saved: those
/// still owed, and those of a batch whose answer did not come in time (it may or may not be
/// written; only an answer says so).
pub fn drain(mut link: BackendLink, engine: &mut Engine, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    let mut failures = 0;
    let mut unanswered = 0;
    let all = Want {
        batch: true,
        ..Want::default()
    };
    loop {
        while link.is_out() {
            let out = link.variables_out();
            match link.wait(deadline.saturating_duration_since(Instant::now())) {
                Waited::Saved(batch, written) => {
                    engine.handle_saved(&batch, written);
                    if !written {
                        failures += 1;
                    }
                }
                Waited::Other => {}
                Waited::Nothing => {
                    failures += 3;
                    unanswered += out;
                }
            }
        }
        if !engine.has_unsaved() || failures >= 3 || Instant::now() >= deadline {
            break;
        }
        let batch = engine.poll_work(all).batch;
        if batch.is_empty() {
            break;
        }
        if let Err(batch) = link.send_blocking(batch) {
            engine.handle_saved(&batch, false);
            break;
        }
    }
    let unsaved = if engine.has_unsaved() {
        engine.poll_work(all).batch.variable_count()
    } else {
        0
    };
    link.stop();
    unsaved + unanswered
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
