//! The WebSocket protocols ("dialects") and the per-connection session that speaks them.
//!
//! A dialect turns one parsed JSON message into engine calls and replies, and writes the engine's
//! variables back as its own `set` lines. The [`Session`] learns its dialect from the upgrade
//! path ([`Route`]) or from the first message, and owns what a connection knows after its
//! handshake (user, rooms, replies not yet written). No sockets here: the event loop hands a
//! session text and gets back an [`Outcome`] and whatever the session put in its [`Outbox`].
//!
//! This file is the shared vocabulary (routes, typed reasons, the outbox, memberships); the
//! dialect modules import it and never each other or the session.

pub mod json;
mod legacy;
mod outbox;
mod reason;
mod resume;
mod route;
mod rpc;
mod scratch;
mod session;
mod studio;
mod users;

pub use outbox::{Outbox, Piece};
pub use reason::{close_code, Reason};
pub use resume::{Need, Reconnects};
pub use route::Route;
pub use session::{Session, SessionContext};
pub use users::Users;

use std::borrow::Cow;
use std::time::Instant;

use log::debug;
use simd_json::prelude::*;
use simd_json::tape::Value;
use smallvec::SmallVec;

use crate::engine::{ClientId, Declared, Engine, Format, Frame, JoinError, RoomKey, Rule, SetLine};
use crate::policy::{Policy, MAX_ROOM_ID_CHARS};

/// The protocols stratus speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Scratch 3 / TurboWarp: `{"method": ...}`.
    Scratch,
    /// cloud-server's older protocol: `{"kind": ...}`.
    Legacy,
    /// Arrays with correlation ids on `/ws/world/<room>`: `["cloud.set", 1, {...}]`.
    Rpc,
    /// MultiStudio: `{"kind": "HELLO" | "JOIN_ROOM" | "SET" | ...}`, several rooms per connection.
    Studio,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Scratch => "scratch",
            Dialect::Legacy => "legacy",
            Dialect::Rpc => "rpc",
            Dialect::Studio => "studio",
        }
    }

    fn format(self) -> Format {
        Format(self as u8)
    }

    /// The name of the dialect whose members read `format` (the admin API's member list).
    pub fn name_of(format: Format) -> &'static str {
        [
            Dialect::Scratch,
            Dialect::Legacy,
            Dialect::Rpc,
            Dialect::Studio,
        ]
        .into_iter()
        .find(|d| d.format() == format)
        .map_or("unknown", Dialect::name)
    }
}

/// The engine's shared rendering of a room's variables as one JSON object (`{"☁ a":1,...}`),
/// embedded in array-RPC and MultiStudio replies.
pub(crate) const VARIABLES_OBJECT: Format = Format(u8::MAX);

/// The room's variables as one JSON object for `member`, which will be sent it in a full-state
/// reply: rendered once and shared (for a large room it may be up to a second old; the member
/// then catches up from the version it shows, see `Engine::shared_rendering`).
pub(crate) fn variables_object(
    engine: &mut Engine,
    room: RoomKey,
    member: ClientId,
    now: Instant,
) -> Frame {
    engine
        .shared_rendering(room, member, VARIABLES_OBJECT, now, |engine, room, out| {
            json::push_variables(out, engine.variables_of(room))
        })
        .unwrap_or_else(|| Frame::from_static("{}"))
}

impl Dialect {
    /// How a frame of newline-joined lines travels to a member speaking this dialect.
    pub fn framing(self) -> Framing {
        match self {
            Dialect::Scratch | Dialect::Legacy => Framing::Joined,
            Dialect::Rpc | Dialect::Studio => Framing::MessagePerLine,
        }
    }
}

/// How the lines of a fan-out frame become WebSocket messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One message holding every line (scratchattach and TurboWarp split on newlines).
    Joined,
    /// One message per line: the protocol allows one JSON value per message.
    MessagePerLine,
}

/// What the connection should do after a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The handshake succeeded in this message: the connection is now in a room.
    Joined,
    /// Close the connection; the session's dialect decides what the client is told.
    Close(Reason),
    /// The message needs a room that is being loaded: it, and everything after it, waits
    /// until the room is in memory ([`Session::resume`]).
    Wait,
}

/// Why a session could not enter a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The room is being loaded; try again when it is in.
    Wait,
    Refused(Reason),
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        Refusal::Refused(reason)
    }
}

impl From<JoinError> for Refusal {
    fn from(error: JoinError) -> Self {
        match error {
            JoinError::Loading => Refusal::Wait,
            other => Refusal::Refused(other.into()),
        }
    }
}

impl Refusal {
    /// What the session does about it.
    pub fn outcome(self) -> Outcome {
        match self {
            Refusal::Wait => Outcome::Wait,
            Refusal::Refused(reason) => Outcome::Close(reason),
        }
    }
}

/// Scratch `set` lines that also name the variable's last writer and when it wrote
/// (`--relay-user`): the format Scratch-dialect members join in while the option is on.
const SCRATCH_WITH_WRITER: Format = Format(u8::MAX - 1);

/// The format a member speaking `dialect` reads under `policy`. Members of one room in one
/// format share their frames, so the option picks a format rather than changing lines per member.
fn member_format(dialect: Dialect, policy: &Policy) -> Format {
    if dialect == Dialect::Scratch && policy.relay_user {
        SCRATCH_WITH_WRITER
    } else {
        dialect.format()
    }
}

/// Writes one `set` line in the format a member reads; the engine calls this to build frames.
pub fn encode_set(format: Format, room: &str, line: SetLine<'_>, out: &mut String) {
    let SetLine { name, value, .. } = line;
    if format == Dialect::Legacy.format() {
        legacy::encode_set(name, value, out);
    } else if format == Dialect::Rpc.format() {
        rpc::encode_set(name, value, out);
    } else if format == Dialect::Studio.format() {
        studio::encode_set(room, name, value, out);
    } else if format == SCRATCH_WITH_WRITER {
        scratch::encode_set_with_writer(line, out);
    } else {
        scratch::encode_set(name, value, out);
    }
}

/// A parsed handshake, in terms common to the dialects that join one room with it.
pub(crate) struct Handshake<'a> {
    pub room: Cow<'a, str>,
    pub user: &'a str,
    /// Legacy clients declare their variables; Scratch clients do not.
    pub variables: Option<Vec<Declared<'a>>>,
}

/// A connection's place in one room.
#[derive(Debug)]
pub(crate) struct Membership {
    pub room: RoomKey,
}

/// What every dialect may change about the connection it speaks for.
#[derive(Debug)]
pub(crate) struct Peer {
    pub client: ClientId,
    /// The name shown in logs, once known (also when it is refused).
    pub user: Option<Box<str>>,
    /// The room a handshake asked for, for logs about its refusal.
    pub wanted_room: Option<Box<str>>,
    pub memberships: SmallVec<[Membership; 1]>,
    pub outbox: Outbox,
}

impl Peer {
    /// The room of a one-room dialect.
    pub fn room(&self) -> Option<RoomKey> {
        self.memberships.first().map(|m| m.room)
    }

    pub fn log_ignored(&self, engine: &Engine, what: &str, why: &str) {
        let room = self.room().and_then(|r| engine.room_id(r)).unwrap_or("-");
        let user = self.user.as_deref().unwrap_or("");
        debug!("[{room} \"{user}\"] ignored {what}: {why}");
    }

    /// Joins `room` in `dialect`'s format as `user` (the name the client gave, empty if none;
    /// the project's `writers` rules compare it) and records the membership.
    pub fn enter(
        &mut self,
        room: &str,
        user: &str,
        dialect: Dialect,
        declared: Option<&[Declared<'_>]>,
        env: &mut Env<'_>,
    ) -> Result<RoomKey, Refusal> {
        if env.policy.fault_rooms.contains(room) {
            return Err(Reason::ServerFault.into());
        }
        let format = member_format(dialect, env.policy);
        // History shows the name the dialect knows (`peer.user`), in its original case.
        let shown = self.user.as_deref().unwrap_or(user);
        let mut joined =
            env.engine
                .join_shown(room, self.client, user, shown, format, declared, env.now);
        // A live client comes before a parked session: the oldest one holding a place in the
        // full room gives it up. (Parked sessions cannot hold every room: their budget times
        // `--max-rooms-per-connection` is far below `--max-rooms`.)
        if let (Err(JoinError::RoomFull), Some(key)) = (joined, env.engine.room_key(room)) {
            if let Some((client, rooms)) = env.reconnects.end_oldest_for(Need::Place(key)) {
                env.engine.leave_rooms(client, rooms, env.now);
                joined = env.engine.join_shown(
                    room,
                    self.client,
                    user,
                    shown,
                    format,
                    declared,
                    env.now,
                );
            }
        }
        let key = joined?;
        self.memberships.push(Membership { room: key });
        Ok(key)
    }

    /// A set of `name` refused by a rule of the room's project: logged at debug, at most
    /// about once a second, with how many refusals went unlogged since.
    pub fn log_rule_refusal(&self, env: &mut Env<'_>, name: &str, rule: Rule) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        if let Some(unlogged) = env.engine.refusals.log_permit(env.now) {
            let room = self
                .room()
                .and_then(|r| env.engine.room_id(r))
                .unwrap_or("-");
            let user = self.user.as_deref().unwrap_or("");
            let name: String = name.chars().take(64).collect();
            debug!(
                "[{room} \"{user}\"] refused set of {name:?}: rule {} ({unlogged} refusals not logged before this one)",
                rule.name()
            );
        }
    }

    /// Leaves every room. Called once when the connection ends.
    pub fn leave_all(&mut self, engine: &mut Engine, now: Instant) {
        for membership in self.memberships.drain(..) {
            engine.leave(membership.room, self.client, now);
        }
    }
}

/// What a dialect borrows from the event loop while it handles one message.
pub(crate) struct Env<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a Policy,
    pub users: &'a mut Users,
    pub reconnects: &'a mut Reconnects,
    pub now: Instant,
}

/// Checks a room id against the protocol's form and the operator's project lists.
pub(crate) fn check_room(room: &str, policy: &Policy) -> Result<(), Reason> {
    if room.is_empty() || room.chars().nth(MAX_ROOM_ID_CHARS).is_some() {
        return Err(Reason::InvalidRoom);
    }
    if !policy.project_allowed(room) {
        return Err(Reason::RoomRefused);
    }
    Ok(())
}

/// The one-room handshake of the Scratch and legacy dialects: checks, joins, and queues the
/// room's current variables as the first message the client gets.
pub(crate) fn join_with_handshake(
    handshake: Handshake<'_>,
    dialect: Dialect,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Result<(), Refusal> {
    let Handshake {
        room,
        user,
        variables,
    } = handshake;
    // Logs of a refusal name who asked for what.
    peer.user = Some(user.into());
    peer.wanted_room = Some(room.chars().take(64).collect::<String>().into());
    check_room(&room, env.policy)?;
    env.policy.check_username(user).map_err(Reason::Username)?;
    let key = peer.enter(&room, user, dialect, variables.as_deref(), env)?;
    if let Some(snapshot) = env.engine.snapshot_for(
        key,
        peer.client,
        member_format(dialect, env.policy),
        env.now,
    ) {
        peer.outbox.push_frame(snapshot);
    }
    Ok(())
}

/// Reads a room id: a string, or a number written as its decimal text.
pub(crate) fn room_text<'v>(value: Option<Value<'_, 'v>>) -> Result<Cow<'v, str>, Reason> {
    let value = value.ok_or(Reason::InvalidRoom)?;
    if let Some(text) = value.into_string() {
        return Ok(Cow::Borrowed(text));
    }
    json::number_text(value)
        .map(|number| Cow::Owned(number.as_str().to_owned()))
        .ok_or(Reason::InvalidRoom)
}
