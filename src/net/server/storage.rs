//! The loop's side of durable storage: asking for rooms joins wait for, handing the store a
//! batch at most every `--persist-interval`, applying the store's answers, and the last save
//! at shutdown. Never waits on the disk while serving.

use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::{entry_of, slot_of, Server};
use crate::engine::ClientId;
use crate::store::Reply;

/// How long shutdown waits for the store to write what is left.
const FINAL_SAVE_PATIENCE: Duration = Duration::from_secs(30);

impl Server {
    /// Sends load requests and, when due, the next batch.
    pub(super) fn storage_work(&mut self, now: Instant) {
        let Some(store) = &mut self.store else {
            return;
        };
        for room in self.engine.take_load_requests() {
            if !store.request_load(room.clone()) {
                self.engine.load_not_sent(&room);
            }
        }
        if now >= self.next_persist && !store.is_saving() && self.engine.has_unsaved() {
            let batch = self.engine.collect_batch();
            if !batch.is_empty() {
                if let Err(batch) = store.save(batch) {
                    self.engine.batch_failed(&batch);
                }
            }
            self.next_persist = now + self.persist_interval;
        }
    }

    /// When the loop must wake for the next batch, if one is owed.
    pub(super) fn next_persist_due(&self) -> Option<Instant> {
        let store = self.store.as_ref()?;
        (self.engine.has_unsaved() && !store.is_saving()).then_some(self.next_persist)
    }

    /// The storage thread woke the loop: applies its answers.
    pub(super) fn on_store_replies(&mut self, now: Instant) {
        let Some(store) = &mut self.store else {
            return;
        };
        for reply in store.take_replies() {
            match reply {
                Reply::Loaded(room, variables) => {
                    let waiters = self.engine.install_loaded(&room, &variables, now);
                    self.resume_waiters(waiters, now);
                }
                Reply::LoadFailed(room) => {
                    warn!("room {room} could not be loaded; its joins are refused");
                    let waiters = self.engine.load_failed(&room);
                    self.resume_waiters(waiters, now);
                }
                Reply::Saved(batch) => self.engine.batch_saved(&batch),
                Reply::SaveFailed(batch) => self.engine.batch_failed(&batch),
            }
        }
        // Resumed sessions may have changed rooms or queued load requests of their own.
        self.storage_work(now);
    }

    pub(super) fn resume_waiters(&mut self, waiters: Vec<ClientId>, now: Instant) {
        for client in waiters {
            let (mut ctx, conns, followups) = self.context(now);
            if let Some(entry) = entry_of(conns, client) {
                let status = entry.conn.resume(&mut ctx);
                followups.apply(slot_of(client).0, status);
            }
        }
    }

    /// At shutdown: waits for every change to be written; an error if some could not be.
    pub(super) fn finish_store(&mut self) -> io::Result<()> {
        let Some(store) = self.store.take() else {
            return Ok(());
        };
        let unsaved = store.finish(&mut self.engine, FINAL_SAVE_PATIENCE);
        if unsaved > 0 {
            error!("{unsaved} changed variables could not be saved before exit");
            return Err(io::Error::other(format!(
                "{unsaved} changed variables could not be saved"
            )));
        }
        info!("every change is saved");
        Ok(())
    }
}
