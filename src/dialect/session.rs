//! One connection's protocol state after the WebSocket upgrade: which dialect it speaks, which
//! room it joined, as whom, and how fast it may send.
//!
//! The event loop hands [`Session::on_text`] each text frame; the session splits it into
//! newline-separated JSON objects (scratchattach sends several per frame), rate-limits them,
//! parses each with the shared parser and calls the engine. It never touches a socket: what the
//! connection must do next comes back as an [`Outcome`].

use std::borrow::Cow;
use std::time::Instant;

use log::debug;
use simd_json::prelude::*;
use simd_json::tape::Value;

use super::json::{self, InvalidJson, JsonParser};
use super::{close_code, legacy, scratch, Dialect};
use crate::engine::rate::TokenBucket;
use crate::engine::{ClientId, Declared, Engine, Frame, JoinError, RoomKey};
use crate::policy::{Policy, MAX_ROOM_ID_CHARS};

/// What the connection should do after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The handshake succeeded in this frame; the connection is now in a room.
    Joined,
    /// Close the connection with this code; the reason goes to the log and the close frame.
    Close {
        code: u16,
        reason: &'static str,
    },
}

impl Outcome {
    pub(super) const fn close(code: u16, reason: &'static str) -> Self {
        Outcome::Close { code, reason }
    }
}

/// Everything a session borrows from the event loop while it handles a frame.
pub struct SessionContext<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a Policy,
    pub parser: &'a mut JsonParser,
    pub now: Instant,
    /// Where the session puts the room's current variables when it joins: one frame to send
    /// to this client before anything else.
    pub initial: &'a mut Option<Frame>,
}

/// A parsed handshake, in terms common to every dialect.
pub(super) struct Handshake<'a> {
    pub dialect: Dialect,
    pub room: Cow<'a, str>,
    pub user: &'a str,
    /// Legacy clients declare their variables; Scratch clients do not.
    pub variables: Option<Vec<Declared<'a>>>,
}

/// A connection's place after a successful handshake.
#[derive(Debug)]
pub(super) struct Membership {
    pub dialect: Dialect,
    pub room: RoomKey,
    pub user: Box<str>,
}

#[derive(Debug)]
pub struct Session {
    client: ClientId,
    membership: Option<Membership>,
    messages: TokenBucket,
}

impl Session {
    pub fn new(client: ClientId, policy: &Policy, now: Instant) -> Self {
        Session {
            client,
            membership: None,
            messages: TokenBucket::new(policy.message_rate, policy.message_burst, now),
        }
    }

    pub fn client(&self) -> ClientId {
        self.client
    }

    pub fn dialect(&self) -> Option<Dialect> {
        self.membership.as_ref().map(|m| m.dialect)
    }

    pub fn room(&self) -> Option<RoomKey> {
        self.membership.as_ref().map(|m| m.room)
    }

    pub fn user(&self) -> Option<&str> {
        self.membership.as_ref().map(|m| &*m.user)
    }

    /// Charges one message that carries no objects (binary, ping) against the rate limit.
    pub fn take_message_token(&mut self, now: Instant) -> bool {
        self.messages.take(1.0, now)
    }

    /// Handles one text frame: every newline-separated object in order.
    pub fn on_text(&mut self, text: &[u8], ctx: &mut SessionContext<'_>) -> Outcome {
        let mut outcome = Outcome::Continue;
        for line in text.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if !self.messages.take(1.0, ctx.now) {
                return Outcome::close(close_code::UNAVAILABLE, "too many messages");
            }
            match self.on_object(line, ctx) {
                Outcome::Continue => {}
                Outcome::Joined => outcome = Outcome::Joined,
                close @ Outcome::Close { .. } => return close,
            }
        }
        outcome
    }

    /// Leaves the room, if any. Called once when the connection closes.
    pub fn leave(&mut self, engine: &mut Engine, now: Instant) {
        if let Some(membership) = self.membership.take() {
            engine.leave(membership.room, self.client, now);
        }
    }

    fn on_object(&mut self, line: &[u8], ctx: &mut SessionContext<'_>) -> Outcome {
        let SessionContext {
            engine,
            policy,
            parser,
            now,
            initial,
        } = ctx;
        let client = self.client;
        let parsed = parser.parse(line, |doc| {
            if !doc.is_object() {
                return Outcome::close(close_code::PROTOCOL, "message is not a JSON object");
            }
            match &self.membership {
                None => match read_handshake(doc) {
                    Ok(handshake) => match join(handshake, client, engine, policy, *now, initial) {
                        Ok(membership) => {
                            self.membership = Some(membership);
                            Outcome::Joined
                        }
                        Err(close) => close,
                    },
                    Err(close) => close,
                },
                Some(membership) => match membership.dialect {
                    Dialect::Scratch => {
                        scratch::on_message(doc, membership, client, engine, policy)
                    }
                    Dialect::Legacy => legacy::on_message(doc, membership, client, engine),
                },
            }
        });
        match (parsed, &self.membership) {
            (Ok(outcome), _) => outcome,
            (Err(InvalidJson::NumberOutOfRange), Some(membership)) => {
                engine.stats.sets_rejected += 1;
                log_ignored(membership, engine, "message", "number out of range");
                Outcome::Continue
            }
            (Err(_), _) => Outcome::close(close_code::PROTOCOL, "invalid JSON"),
        }
    }
}

/// Recognises the dialect from the first message, which must be its handshake.
fn read_handshake<'v>(doc: Value<'_, 'v>) -> Result<Handshake<'v>, Outcome> {
    if json::get_str(doc, "method") == Some("handshake") {
        scratch::read_handshake(doc)
    } else if json::get_str(doc, "kind") == Some("handshake") {
        legacy::read_handshake(doc)
    } else {
        Err(Outcome::close(
            close_code::PROTOCOL,
            "first message must be a handshake",
        ))
    }
}

fn join(
    handshake: Handshake<'_>,
    client: ClientId,
    engine: &mut Engine,
    policy: &Policy,
    now: Instant,
    initial: &mut Option<Frame>,
) -> Result<Membership, Outcome> {
    let Handshake {
        dialect,
        room,
        user,
        variables,
    } = handshake;
    let room = &*room;
    if room.is_empty() || room.chars().nth(MAX_ROOM_ID_CHARS).is_some() {
        return Err(Outcome::close(close_code::PROTOCOL, "invalid project id"));
    }
    if !policy.project_allowed(room) {
        return Err(Outcome::close(
            close_code::UNAVAILABLE,
            "project not allowed on this server",
        ));
    }
    if let Err(problem) = policy.usernames.check(user) {
        return Err(Outcome::close(close_code::USERNAME, problem.as_str()));
    }
    match engine.join(room, client, dialect.format(), variables.as_deref(), now) {
        Ok((key, frame)) => {
            *initial = frame;
            Ok(Membership {
                dialect,
                room: key,
                user: user.into(),
            })
        }
        Err(error) => Err(match error {
            JoinError::RoomFull => Outcome::close(close_code::OVERLOADED, "room is full"),
            JoinError::TooManyRooms => Outcome::close(close_code::OVERLOADED, "too many rooms"),
            JoinError::Incompatible => Outcome::close(
                close_code::INCOMPATIBLE,
                "variables do not match the room's",
            ),
            JoinError::InvalidDeclaration => {
                Outcome::close(close_code::PROTOCOL, "invalid variables in handshake")
            }
        }),
    }
}

/// Reads a room id: a string, or a number written as its decimal text.
pub(super) fn room_text<'v>(value: Option<Value<'_, 'v>>) -> Result<Cow<'v, str>, Outcome> {
    let invalid = Outcome::close(close_code::PROTOCOL, "invalid project id");
    let value = value.ok_or(invalid)?;
    if let Some(text) = value.into_string() {
        return Ok(Cow::Borrowed(text));
    }
    json::number_text(value)
        .map(|number| Cow::Owned(number.as_str().to_owned()))
        .ok_or(invalid)
}

pub(super) fn log_ignored(membership: &Membership, engine: &Engine, what: &str, why: &str) {
    debug!(
        "[{} \"{}\"] ignored {what}: {why}",
        engine.room_id(membership.room).unwrap_or("?"),
        membership.user
    );
}

#[cfg(test)]
mod tests;
