//! The subscriber thread: owns a second Redis connection in (RESP2) pub/sub mode, subscribes
//! to the rooms the loop asks for and turns every message into an [`Event::Message`].
//!
//! How it waits for both Redis and the loop: `PubSub::get_message` reads with a short socket
//! timeout ([`POLL`]); between reads the thread takes the loop's requests. A timed-out read
//! loses nothing: the crate's parser keeps a partly received reply in its buffer (combine's
//! partial-state decoder) and `get_message` reads without the crate's "skip the late reply"
//! bookkeeping. Subscribing is different: `PubSub::subscribe` waits for the confirmation as
//! a command reply, and a timeout there would make the crate skip the next reply later, so
//! while subscribing the timeout is long and any error drops the connection (then everything
//! is resubscribed). Messages of other rooms that arrive before the confirmation are kept by
//! the crate and handed out after it (one round trip's worth). One channel per `SUBSCRIBE`
//! here: with several, the crate returns at the first confirmation and the others would be
//! taken for the next command's. A new connection subscribes to every room before it becomes
//! a `PubSub`, many channels per command, counting confirmations itself (see `resubscribe`).
//!
//! Events go to the loop on a bounded channel: if the loop falls behind, this thread blocks,
//! Redis's output buffer limit for pub/sub clients closes the connection, and the reconnect
//! ends with [`Event::Resubscribed`] (the loop reloads every room: state, not queues).

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use redis::{Client, Connection, PubSub, RedisResult};

use super::commands::CONNECT_TIMEOUT;
use super::keys;
use super::retry::Backoff;
use super::{codec, Event, SharedStats};
use crate::admin::control::ControlMessage;
use crate::error_log::ErrorLog;

/// How long one read waits for a message before the thread looks at the loop's requests.
const POLL: Duration = Duration::from_millis(10);
/// How long a subscribe, unsubscribe or ping may take before the connection counts as lost.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Channels per `SUBSCRIBE` when a new connection subscribes to every room.
const SUBSCRIBE_CHUNK: usize = 500;
/// A quiet connection is pinged this often, so a dead one is noticed.
const PING_PERIOD: Duration = Duration::from_secs(5);

pub enum Request {
    Subscribe(Box<str>),
    Unsubscribe(Box<str>),
}

/// Why the thread stops serving a connection.
enum Stop {
    /// The connection failed: reconnect.
    Lost(redis::RedisError),
    /// The loop is gone: end the thread.
    Finish,
}

pub struct Subscriber {
    client: Client,
    /// Rooms the loop wants (subscribed or to subscribe when connected).
    rooms: HashSet<Box<str>>,
    /// Rooms whose [`Event::Subscribed`] was sent.
    confirmed: HashSet<Box<str>>,
    /// A connection was up before: the next one must announce [`Event::Resubscribed`].
    was_connected: bool,
    backoff: Backoff,
    events: SyncSender<Event>,
    waker: Arc<mio::Waker>,
    shared: Arc<SharedStats>,
    errors: ErrorLog,
    bad_messages: ErrorLog,
}

impl Subscriber {
    pub fn new(
        client: Client,
        events: SyncSender<Event>,
        waker: Arc<mio::Waker>,
        shared: Arc<SharedStats>,
    ) -> Self {
        Subscriber {
            client,
            rooms: HashSet::new(),
            confirmed: HashSet::new(),
            was_connected: false,
            backoff: Backoff::default(),
            events,
            waker,
            shared,
            errors: ErrorLog::new("cluster: redis subscription"),
            bad_messages: ErrorLog::new("cluster: dropped a malformed batch"),
        }
    }

    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            let stop = match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                Ok(mut connection) => self.serve(&mut connection, &requests),
                Err(e) => Stop::Lost(e),
            };
            let Stop::Lost(error) = stop else {
                return;
            };
            self.errors.log(Instant::now(), &error);
            // Wait before the next attempt, taking requests meanwhile.
            let deadline = Instant::now() + self.backoff.next_delay();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match requests.recv_timeout(left) {
                    Ok(request) => self.note(request),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }

    /// Remembers a request while disconnected.
    fn note(&mut self, request: Request) {
        match request {
            Request::Subscribe(room) => {
                self.rooms.insert(room);
            }
            Request::Unsubscribe(room) => {
                self.confirmed.remove(&room);
                self.rooms.remove(&room);
            }
        }
    }

    fn serve(&mut self, connection: &mut Connection, requests: &Receiver<Request>) -> Stop {
        if let Err(e) = self.resubscribe(connection) {
            return Stop::Lost(e);
        }
        let mut pubsub = connection.as_pubsub();
        let stop = self.serve_pubsub(&mut pubsub, requests);
        // Dropping the PubSub unsubscribes (a round trip): on a lost connection it must not
        // wait long.
        if matches!(stop, Stop::Lost(_)) {
            let _ = pubsub.set_read_timeout(Some(POLL));
        }
        stop
    }

    fn serve_pubsub(&mut self, pubsub: &mut PubSub<'_>, requests: &Receiver<Request>) -> Stop {
        if let Err(e) = pubsub.set_read_timeout(Some(POLL)) {
            return Stop::Lost(e);
        }
        let mut last_traffic = Instant::now();
        loop {
            loop {
                match requests.try_recv() {
                    Ok(request) => {
                        if let Err(e) = self.handle(pubsub, request) {
                            return Stop::Lost(e);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Stop::Finish,
                }
            }
            match pubsub.get_message() {
                Ok(message) => {
                    last_traffic = Instant::now();
                    if !self.deliver(&message) {
                        return Stop::Finish;
                    }
                }
                Err(e) if e.is_timeout() => {
                    if last_traffic.elapsed() >= PING_PERIOD {
                        if let Err(e) = with_long_timeout(pubsub, |p| p.ping::<redis::Value>()) {
                            return Stop::Lost(e);
                        }
                        last_traffic = Instant::now();
                    }
                }
                Err(e) => return Stop::Lost(e),
            }
        }
    }

    /// On a new connection: subscribes to every room wanted, then tells the loop.
    ///
    /// Done on the plain connection, many channels per `SUBSCRIBE`, counting the confirmations
    /// ourselves (the crate's `PubSub::subscribe` would take one round trip per room, and keep
    /// every message that arrives meanwhile in an unbounded queue). Messages that arrive
    /// before the last confirmation are dropped: the loop reads every room again after
    /// [`Event::Resubscribed`], and rooms new to it are read after [`Event::Subscribed`].
    fn resubscribe(&mut self, connection: &mut Connection) -> RedisResult<()> {
        let rooms: Vec<Box<str>> = self.rooms.iter().cloned().collect();
        connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        // The admin actions' channel, on every connection (the command thread reads the
        // bans again at its own reconnect, for what was missed meanwhile).
        let command = redis::cmd("SUBSCRIBE")
            .arg(keys::CONTROL_CHANNEL)
            .get_packed_command();
        connection.send_packed_command(&command)?;
        loop {
            let reply = connection.recv_response()?;
            if is_subscribe_confirmation(&reply) {
                break;
            } else if let redis::Value::ServerError(error) = reply {
                return Err(error.into());
            }
        }
        for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
            let mut command = redis::cmd("SUBSCRIBE");
            for room in chunk {
                command.arg(keys::channel(room));
            }
            connection.send_packed_command(&command.get_packed_command())?;
            let mut confirmed = 0;
            while confirmed < chunk.len() {
                let reply = connection.recv_response()?;
                if is_subscribe_confirmation(&reply) {
                    confirmed += 1;
                } else if let redis::Value::ServerError(error) = reply {
                    return Err(error.into());
                }
            }
        }
        self.backoff.reset();
        for room in rooms.iter() {
            // Rooms asked for while disconnected; the others had theirs before.
            if self.confirmed.insert(room.clone()) {
                self.emit(Event::Subscribed(room.clone()));
            }
        }
        if std::mem::replace(&mut self.was_connected, true) {
            info!("cluster: subscription restored ({} rooms)", rooms.len());
            self.emit(Event::Resubscribed);
        }
        Ok(())
    }

    fn handle(&mut self, pubsub: &mut PubSub<'_>, request: Request) -> RedisResult<()> {
        match request {
            Request::Subscribe(room) => {
                if self.confirmed.contains(&room) {
                    // Already subscribed: the loop still waits for its confirmation.
                    self.emit(Event::Subscribed(room));
                    return Ok(());
                }
                // Wanted first: if subscribing fails, the reconnect subscribes and confirms it.
                self.rooms.insert(room.clone());
                with_long_timeout(pubsub, |p| p.subscribe(keys::channel(&room)))?;
                self.confirmed.insert(room.clone());
                self.emit(Event::Subscribed(room));
            }
            Request::Unsubscribe(room) => {
                if self.rooms.remove(&room) {
                    self.confirmed.remove(&room);
                    with_long_timeout(pubsub, |p| p.unsubscribe(keys::channel(&room)))?;
                }
            }
        }
        Ok(())
    }

    /// Decodes a message and hands it to the loop; false when the loop is gone.
    fn deliver(&mut self, message: &redis::Msg) -> bool {
        let channel = match message.get_channel::<Vec<u8>>() {
            Ok(channel) => channel,
            Err(e) => {
                self.bad_messages.log(Instant::now(), &e);
                return true;
            }
        };
        if channel == keys::CONTROL_CHANNEL.as_bytes() {
            return match ControlMessage::decode(message.get_payload_bytes()) {
                Some(control) => self.emit(Event::Control(control)),
                None => {
                    self.bad_messages
                        .log(Instant::now(), &"malformed control message");
                    true
                }
            };
        }
        let Some(room) = keys::room_of_channel(&channel) else {
            self.bad_messages
                .log(Instant::now(), &"message on a channel that is not a room's");
            return true;
        };
        match codec::decode(room, message.get_payload_bytes()) {
            Ok(batch) => {
                self.shared.count_batch_in();
                self.emit(Event::Message(batch))
            }
            Err(e) => {
                self.bad_messages
                    .log(Instant::now(), &format!("room {room:?}: {e}"));
                true
            }
        }
    }

    /// Sends an event to the loop (waiting while the channel is full); false when it is gone.
    fn emit(&self, event: Event) -> bool {
        let sent = self.events.send(event).is_ok();
        let _ = self.waker.wake();
        sent
    }
}

/// Whether `reply` confirms a `SUBSCRIBE` (RESP2: `["subscribe", channel, count]`), rather
/// than being a message.
fn is_subscribe_confirmation(reply: &redis::Value) -> bool {
    let redis::Value::Array(parts) = reply else {
        return false;
    };
    matches!(parts.first(), Some(redis::Value::BulkString(kind)) if kind.eq_ignore_ascii_case(b"subscribe"))
}

/// Runs a command on the pub/sub connection with the long timeout, then polls again.
fn with_long_timeout<T>(
    pubsub: &mut PubSub<'_>,
    command: impl FnOnce(&mut PubSub<'_>) -> RedisResult<T>,
) -> RedisResult<T> {
    pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let result = command(pubsub)?;
    pubsub.set_read_timeout(Some(POLL))?;
    Ok(result)
}
