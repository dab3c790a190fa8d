//! Durable storage: a helper thread that owns the SQLite database, and the event loop's handle
//! to it.
//!
//! The loop never touches the disk and never waits for this thread while serving: it hands over
//! requests (load a room, save a batch) with `try_send` on a bounded channel, and the thread
//! answers on a channel of its own and wakes the loop with a `mio::Waker`. Only one batch is out
//! at a time; what changes meanwhile stays in the engine as state (see `engine/durable.rs`), so
//! a slow disk costs rounds, never memory. When to hand over what is `durable/store_plan.rs`'s
//! call; at shutdown the loop's driver waits, once, for the rest to be written.

pub(crate) mod chunks;
pub mod db;
mod lock;
pub mod transfer;

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::info;

use crate::admin::bans::{Ban, Block, Change};
use crate::engine::{Batch, SavedVariable, StoredRead};
use crate::error_log::ErrorLog;
use db::Database;
use lock::DirLock;

/// Requests waiting for the thread; loads beyond this wait in the engine for the next round.
const REQUEST_CAPACITY: usize = 256;
/// The first retention sweep runs this long after start, then once a day.
const RETENTION_FIRST: Duration = Duration::from_secs(60);
const RETENTION_PERIOD: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
    /// Rooms nobody wrote for this long are deleted; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Test only: how long the thread sleeps before each request, to play a slow disk.
    pub delay: Duration,
    /// `--history`: entries kept per room.
    pub history: usize,
}

/// A read for a query of the HTTP API (one kind for either backend).
pub use crate::engine::ReadRequest;

pub enum Request {
    Load(Box<str>),
    Save(Batch),
    Read(u64, ReadRequest),
    /// A change to the admin API's bans or blocks, answered by [`Reply::BansWritten`] with
    /// this id (a failure is logged too).
    Bans(Change, u64),
    /// Bans and blocks expired by this time (Unix ms) are deleted; not answered.
    ExpireBans(u64),
}

pub enum Reply {
    /// A room's variables and the sequence number of its newest history entry.
    Loaded(Box<str>, Vec<SavedVariable>, u64),
    LoadFailed(Box<str>),
    Saved(Batch),
    SaveFailed(Batch),
    /// The answer to `Request::Read` with this id.
    Read(u64, StoredRead),
    /// The answer to `Request::Bans` with this id: whether the change was written.
    BansWritten(u64, bool),
}

/// Counters for logs and metrics.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub batches_saved: u64,
    pub variables_saved: u64,
    pub save_failures: u64,
    pub rooms_loaded: u64,
    pub load_failures: u64,
}

/// The loop's side of the storage thread.
pub struct Store {
    requests: Option<SyncSender<Request>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
    /// The batch out, by its variable count; the next one waits for its answer.
    saving: Option<usize>,
    pub stats: StoreStats,
    /// The bans and blocks read at open, until the loop takes them.
    loaded_bans: (Vec<Ban>, Vec<Block>),
    _lock: DirLock,
}

impl Store {
    /// Creates the data directory if needed, takes its lock, opens the database (refusing what
    /// is not ours) and starts the thread. Every error says what to do.
    pub fn open(settings: StoreSettings, waker: Arc<mio::Waker>) -> Result<Store, String> {
        let dir = &settings.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        let lock = DirLock::acquire(dir)?;
        let mut database = Database::open(dir)?;
        database.set_history_cap(settings.history);
        let loaded_bans = database.load_bans(unix_ms())?;
        info!("storing variables in {}", dir.join(db::FILE_NAME).display());
        let (request_tx, request_rx) = mpsc::sync_channel(REQUEST_CAPACITY);
        let (reply_tx, reply_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stratus-store".into())
            .spawn(move || Worker::new(database, settings, reply_tx, waker).run(request_rx))
            .map_err(|e| format!("cannot start the storage thread: {e}"))?;
        Ok(Store {
            requests: Some(request_tx),
            replies: reply_rx,
            thread: Some(thread),
            saving: None,
            stats: StoreStats::default(),
            loaded_bans,
            _lock: lock,
        })
    }

    /// Asks for a room; false when the thread has too much to do right now.
    pub fn request_load(&mut self, room: Box<str>) -> bool {
        self.send(Request::Load(room)).is_ok()
    }

    /// Asks for a read of the HTTP API; false when the thread has too much to do right now.
    pub fn request_read(&mut self, id: u64, read: ReadRequest) -> bool {
        self.send(Request::Read(id, read)).is_ok()
    }

    /// The bans and blocks in force when the store was opened (once; empty after).
    pub fn take_bans(&mut self) -> (Vec<Ban>, Vec<Block>) {
        std::mem::take(&mut self.loaded_bans)
    }

    /// Hands over a change of the bans or blocks ([`Reply::BansWritten`] with `id` follows);
    /// false when the thread has too much to do right now (the change is then not made).
    pub fn write_bans(&mut self, change: Change, id: u64) -> bool {
        self.send(Request::Bans(change, id)).is_ok()
    }

    /// Asks for the bans and blocks expired by `now_ms` to be deleted; a refusal is harmless
    /// (they are deleted at the next start, or the next time).
    pub fn expire_bans(&mut self, now_ms: u64) {
        let _ = self.send(Request::ExpireBans(now_ms));
    }

    /// Whether a batch is out; the next one waits for its answer.
    pub fn is_saving(&self) -> bool {
        self.saving.is_some()
    }

    /// The variables of the batch out (0 when none is): what is lost if its answer never
    /// comes.
    pub fn variables_out(&self) -> usize {
        self.saving.unwrap_or(0)
    }

    /// Hands over a batch; gives it back when the thread cannot take it now.
    pub fn save(&mut self, batch: Batch) -> Result<(), Batch> {
        let variables = batch.variable_count();
        match self.send(Request::Save(batch)) {
            Ok(()) => {
                self.saving = Some(variables);
                Ok(())
            }
            Err(Request::Save(batch)) => Err(batch),
            Err(_) => Err(Batch::default()),
        }
    }

    /// The thread's answers so far; never waits.
    pub fn take_replies(&mut self) -> Vec<Reply> {
        let replies: Vec<Reply> = self.replies.try_iter().collect();
        for reply in &replies {
            self.count(reply);
        }
        replies
    }

    fn count(&mut self, reply: &Reply) {
        match reply {
            Reply::Saved(batch) => {
                self.saving = None;
                self.stats.batches_saved += 1;
                self.stats.variables_saved += batch.variable_count() as u64;
            }
            Reply::SaveFailed(_) => {
                self.saving = None;
                self.stats.save_failures += 1;
            }
            Reply::Loaded(..) => self.stats.rooms_loaded += 1,
            Reply::LoadFailed(_) => self.stats.load_failures += 1,
            Reply::Read(..) | Reply::BansWritten(..) => {}
        }
    }

    fn send(&mut self, request: Request) -> Result<(), Request> {
        let Some(requests) = &self.requests else {
            return Err(request);
        };
        requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(request) | TrySendError::Disconnected(request) => request,
        })
    }

    /// At shutdown: hands over a batch, waiting while the thread is busy; gives it back when
    /// the thread is gone. Blocking is right here: the loop has stopped serving.
    pub fn save_blocking(&mut self, batch: Batch) -> Result<(), Batch> {
        let Some(requests) = &self.requests else {
            return Err(batch);
        };
        let variables = batch.variable_count();
        match requests.send(Request::Save(batch)) {
            Ok(()) => {
                self.saving = Some(variables);
                Ok(())
            }
            Err(mpsc::SendError(Request::Save(batch))) => Err(batch),
            Err(mpsc::SendError(_)) => Err(Batch::default()),
        }
    }

    /// At shutdown: the thread's next answer, waiting at most `timeout`; `None` when none came
    /// (the batch out, if any, is then given up on).
    pub fn wait_reply(&mut self, timeout: Duration) -> Option<Reply> {
        match self.replies.recv_timeout(timeout) {
            Ok(reply) => {
                self.count(&reply);
                Some(reply)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                self.saving = None;
                None
            }
        }
    }

    /// Stops the thread once it has answered what it was handed.
    pub fn stop(mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The storage thread: owns the database, answers requests in order.
struct Worker {
    database: Database,
    settings: StoreSettings,
    replies: Sender<Reply>,
    waker: Arc<mio::Waker>,
    errors: ErrorLog,
}

impl Worker {
    fn new(
        database: Database,
        settings: StoreSettings,
        replies: Sender<Reply>,
        waker: Arc<mio::Waker>,
    ) -> Self {
        Worker {
            database,
            settings,
            replies,
            waker,
            errors: ErrorLog::new("storage"),
        }
    }

    fn run(mut self, requests: Receiver<Request>) {
        let mut next_sweep = Instant::now() + RETENTION_FIRST;
        loop {
            let wait = match self.settings.retention {
                Some(_) => next_sweep.saturating_duration_since(Instant::now()),
                None => RETENTION_PERIOD,
            };
            let request = match requests.recv_timeout(wait) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(retention) = self.settings.retention {
                        self.sweep(retention);
                        next_sweep = Instant::now() + RETENTION_PERIOD;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if !self.settings.delay.is_zero() {
                std::thread::sleep(self.settings.delay);
            }
            let reply = match request {
                Request::Bans(change, id) => match self.database.write_ban_change(&change) {
                    Ok(()) => Reply::BansWritten(id, true),
                    Err(e) => {
                        self.errors.log(Instant::now(), &e);
                        Reply::BansWritten(id, false)
                    }
                },
                Request::ExpireBans(now_ms) => {
                    if let Err(e) = self.database.delete_expired_bans(now_ms) {
                        self.errors.log(Instant::now(), &e);
                    }
                    continue;
                }
                Request::Read(id, read) => Reply::Read(id, self.read(read)),
                Request::Load(room) => match self.database.load(&room) {
                    Ok((variables, seq)) => Reply::Loaded(room, variables, seq),
                    Err(e) => {
                        self.errors.log(
                            Instant::now(),
                            &format!("{e}; serving from memory and retrying"),
                        );
                        Reply::LoadFailed(room)
                    }
                },
                Request::Save(batch) => match self.database.save(&batch) {
                    Ok(()) => Reply::Saved(batch),
                    Err(e) => {
                        self.errors.log(
                            Instant::now(),
                            &format!("{e}; serving from memory and retrying"),
                        );
                        Reply::SaveFailed(batch)
                    }
                },
            };
            if self.replies.send(reply).is_err() {
                return;
            }
            let _ = self.waker.wake();
        }
    }

    fn read(&mut self, read: ReadRequest) -> StoredRead {
        let result = match read {
            ReadRequest::History {
                room,
                recent,
                before,
                skip,
                count,
                ..
            } => self
                .database
                .history_page(&room, recent, before, skip, count)
                .map(StoredRead::History),
            ReadRequest::Variables { room } => self
                .database
                .load(&room)
                .map(|(variables, _)| StoredRead::Variables(variables)),
            ReadRequest::Rooms {
                skip,
                count,
                in_memory,
            } => self
                .database
                .rooms_page(skip, count, &in_memory)
                .map(StoredRead::Rooms),
        };
        result.unwrap_or_else(|e| {
            self.errors.log(Instant::now(), &e);
            StoredRead::Failed
        })
    }

    fn sweep(&mut self, retention: Duration) {
        let age = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        match self
            .database
            .delete_rooms_older_than(db::unix_seconds().saturating_sub(age))
        {
            Ok(0) => {}
            Ok(n) => info!("deleted {n} stored variables of rooms nobody wrote for {retention:?}"),
            Err(e) => self.errors.log(Instant::now(), &e),
        }
    }
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
