//! The store's orchestration: load requests as joins ask, one batch at most every
//! `--persist-interval` and only one out at a time, and what the storage thread's answers
//! mean for the engine.

use std::time::{Duration, Instant};

use log::warn;

use super::Command;
use crate::engine::{ClientId, Engine, Read, Want, Work};
use crate::store::Reply;

pub struct StorePlan {
    /// Shortest time between two batches.
    interval: Duration,
    next_batch: Instant,
    /// A batch is out: the next one waits for its answer.
    saving: bool,
    /// When the last batch was written (or the store opened).
    last_saved: Instant,
}

impl StorePlan {
    pub fn new(interval: Duration, now: Instant) -> Self {
        StorePlan {
            interval,
            next_batch: now,
            saving: false,
            last_saved: now,
        }
    }

    /// When the last batch was written (or the store opened), for the store lag metric.
    pub fn last_saved(&self) -> Instant {
        self.last_saved
    }

    /// Load requests for the rooms joins wait for and, when due, the next batch.
    pub fn poll(&mut self, engine: &mut Engine, now: Instant, out: &mut Vec<Command>) {
        let due = now >= self.next_batch && !self.saving && engine.has_unsaved();
        let work = engine.poll_work(Want {
            batch: due,
            ..Want::default()
        });
        // Reloads, rooms that left memory and member reports are the cluster's: with a store
        // the engine never has any, so only loads and the batch are handed on.
        debug_assert!(work.reloads.is_empty() && work.removed.is_empty());
        out.extend(work.loads.into_iter().map(Command::Load));
        if due {
            if !work.batch.is_empty() {
                self.saving = true;
                out.push(Command::Save(work.batch));
            }
            self.next_batch = now + self.interval;
        }
    }

    /// The storage thread could not take `command` now: it is handed out again later.
    pub fn handle_unsent(&mut self, engine: &mut Engine, command: Command) {
        match command {
            Command::Load(room) => engine.handle_unsent(Work {
                loads: vec![room],
                ..Work::default()
            }),
            Command::Save(batch) => {
                self.saving = false;
                engine.handle_saved(&batch, false);
            }
            Command::Subscribe(_) | Command::Unsubscribe(_) | Command::Round(_) => {}
        }
    }

    /// Applies one answer of the storage thread; returns the clients whose joins can be tried
    /// again.
    pub fn handle_reply(
        &mut self,
        engine: &mut Engine,
        reply: Reply,
        now: Instant,
    ) -> Vec<ClientId> {
        match reply {
            Reply::Loaded(room, variables, history_seq) => {
                let read = Read {
                    version: 0,
                    variables: &variables,
                    history_seq,
                };
                engine.handle_loaded(&room, read, now)
            }
            Reply::LoadFailed(room) => {
                warn!("room {room} could not be loaded; its joins are refused");
                engine.handle_load_failed(&room)
            }
            Reply::Saved(batch) => {
                self.saving = false;
                self.last_saved = now;
                engine.handle_saved(&batch, true);
                Vec::new()
            }
            Reply::SaveFailed(batch) => {
                self.saving = false;
                engine.handle_saved(&batch, false);
                Vec::new()
            }
            // The loop answers its queries before handing replies here.
            Reply::Read(..) | Reply::BansWritten(..) => Vec::new(),
        }
    }

    /// When the loop must wake for the next batch, if one is owed.
    pub fn poll_timeout(&self, engine: &Engine) -> Option<Instant> {
        (engine.has_unsaved() && !self.saving).then_some(self.next_batch)
    }
}
