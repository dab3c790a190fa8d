//! One connection's protocol state after the WebSocket upgrade: which dialect it speaks, which
//! rooms it is in, as whom, how fast it may send, and what it has to say back.
//!
//! The event loop hands [`Session::on_text`] each text message. In the Scratch and legacy
//! dialects a message may hold several newline-separated JSON objects (scratchattach sends
//! several per frame); in the array-RPC dialect a message is one JSON array. Each object is
//! rate-limited, parsed with the shared parser and handed to its dialect. The session never
//! touches a socket: what the connection must do next comes back as an [`Outcome`], and what
//! the client must be sent waits in the session's [`Outbox`] for the connection to write.

use std::net::IpAddr;
use std::time::Instant;

use simd_json::tape::Value;

use super::json::{self, InvalidJson, JsonParser};
use super::{
    join_with_handshake, legacy, rpc, scratch, studio, Dialect, Env, Framing, Outbox, Outcome,
    Peer, Reason, Reconnects, Refusal, Route, Users,
};
use crate::engine::rate::TokenBucket;
use crate::engine::{ClientId, Engine, RoomKey};
use crate::policy::Policy;

/// Everything a session borrows from the event loop while it handles a message.
pub struct SessionContext<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a Policy,
    pub parser: &'a mut JsonParser,
    pub users: &'a mut Users,
    pub reconnects: &'a mut Reconnects,
    pub now: Instant,
}

/// The dialect and its own state.
#[derive(Debug)]
enum Speaking {
    /// The first message will tell (Scratch or legacy).
    Undecided,
    Scratch,
    Legacy,
    Rpc(rpc::World),
    Studio(studio::Studio),
}

#[derive(Debug)]
pub struct Session {
    peer: Peer,
    speaking: Speaking,
    messages: TokenBucket,
    /// Text not handled yet because it needs a room that is being loaded.
    waiting: Option<Vec<u8>>,
}

impl Session {
    pub fn new(client: ClientId, route: Route, policy: &Policy, now: Instant) -> Self {
        let speaking = match route {
            Route::Sniff => Speaking::Undecided,
            Route::World(room) => Speaking::Rpc(rpc::World::new(Some(room))),
            Route::InvalidWorld => Speaking::Rpc(rpc::World::new(None)),
            Route::Studio => Speaking::Studio(studio::Studio::default()),
        };
        let wanted_room = match &speaking {
            Speaking::Rpc(world) => world.room().map(Into::into),
            _ => None,
        };
        Session {
            peer: Peer {
                client,
                user: None,
                wanted_room,
                memberships: Default::default(),
                outbox: Outbox::default(),
            },
            speaking,
            messages: TokenBucket::new(policy.message_rate, policy.message_burst, now),
            waiting: None,
        }
    }

    /// Called once right after the upgrade: a dialect chosen by the path may refuse at once.
    pub fn on_open(&mut self, ctx: &mut SessionContext<'_>) -> Outcome {
        match &self.speaking {
            Speaking::Rpc(world) => rpc::on_open(world, ctx.policy),
            _ => Outcome::Continue,
        }
    }

    pub fn client(&self) -> ClientId {
        self.peer.client
    }

    pub fn dialect(&self) -> Option<Dialect> {
        match self.speaking {
            Speaking::Undecided => None,
            Speaking::Scratch => Some(Dialect::Scratch),
            Speaking::Legacy => Some(Dialect::Legacy),
            Speaking::Rpc(_) => Some(Dialect::Rpc),
            Speaking::Studio(_) => Some(Dialect::Studio),
        }
    }

    /// How long the client has for its first message, when its dialect says so (MultiStudio
    /// wants its HELLO within 5 s).
    pub fn hello_window(&self) -> Option<std::time::Duration> {
        match self.speaking {
            Speaking::Studio(_) => Some(studio::HELLO_WINDOW),
            _ => None,
        }
    }

    /// Whether the client expects a reply to each request; such a client that stops reading
    /// is not read from either, so unread replies cannot pile up.
    pub fn answers_requests(&self) -> bool {
        matches!(self.speaking, Speaking::Rpc(_) | Speaking::Studio(_))
    }

    /// How fan-out frames reach this client.
    pub fn framing(&self) -> Framing {
        self.dialect().map_or(Framing::Joined, Dialect::framing)
    }

    /// Every room the session is in.
    pub fn rooms(&self) -> impl Iterator<Item = RoomKey> + '_ {
        self.peer.memberships.iter().map(|m| m.room)
    }

    /// The first room the session is in, for logs.
    pub fn room(&self) -> Option<RoomKey> {
        self.peer.room()
    }

    /// For logs: the first room the session is in, else the one it asked for.
    pub fn room_name<'a>(&'a self, engine: &'a Engine) -> Option<&'a str> {
        self.peer
            .room()
            .and_then(|room| engine.room_id(room))
            .or(self.peer.wanted_room.as_deref())
    }

    pub fn user(&self) -> Option<&str> {
        self.peer.user.as_deref()
    }

    /// Messages for the client, to be written in this loop iteration.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.peer.outbox
    }

    /// Charges one message that carries no objects (binary, ping) against the rate limit.
    pub fn take_message_token(&mut self, now: Instant) -> bool {
        self.messages.take(1.0, now)
    }

    /// Handles one text message.
    pub fn on_text(&mut self, text: &[u8], ctx: &mut SessionContext<'_>) -> Outcome {
        self.handle(text, true, ctx)
    }

    /// Whether the session waits for a room to be loaded; its connection reads nothing more
    /// meanwhile, so later messages keep their order.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// The room the session waited for is in memory (or could not be loaded): handles the
    /// text that waited.
    pub fn resume(&mut self, ctx: &mut SessionContext<'_>) -> Outcome {
        match self.waiting.take() {
            // Its first message was charged to the rate limit when it arrived.
            Some(text) => self.handle(&text, false, ctx),
            None => Outcome::Continue,
        }
    }

    fn handle(&mut self, text: &[u8], charge_first: bool, ctx: &mut SessionContext<'_>) -> Outcome {
        if let Speaking::Rpc(_) | Speaking::Studio(_) = self.speaking {
            if charge_first && !self.messages.take(1.0, ctx.now) {
                return Outcome::Close(Reason::TooManyMessages);
            }
            let outcome = self.on_object(text, ctx);
            if outcome == Outcome::Wait {
                self.waiting = Some(text.to_vec());
            }
            return outcome;
        }
        let mut outcome = Outcome::Continue;
        let mut charge = charge_first;
        let mut start = 0;
        for raw in text.split(|&b| b == b'\n') {
            let line_start = start;
            start += raw.len() + 1;
            let line = raw.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if charge && !self.messages.take(1.0, ctx.now) {
                return Outcome::Close(Reason::TooManyMessages);
            }
            charge = true;
            match self.on_object(line, ctx) {
                Outcome::Continue => {}
                Outcome::Joined => outcome = Outcome::Joined,
                Outcome::Wait => {
                    self.waiting = Some(text.get(line_start..).unwrap_or_default().to_vec());
                    return Outcome::Wait;
                }
                close @ Outcome::Close(_) => return close,
            }
        }
        outcome
    }

    /// What the client is told as the connection ends for `reason`: the dialect may queue a
    /// last message in the outbox; the return value is the close code.
    pub fn farewell(&mut self, reason: Reason) -> u16 {
        match &mut self.speaking {
            Speaking::Rpc(_) => rpc::farewell(reason, &mut self.peer.outbox),
            Speaking::Studio(studio) => studio::farewell(reason, studio, &mut self.peer.outbox),
            _ => reason.close_code(),
        }
    }

    /// Ends the session as its connection ends. A MultiStudio session whose connection ended
    /// `abnormally` (without a close frame from the client) is parked with its rooms for a
    /// reconnect, charged to the connection's `address`; every other session leaves its rooms
    /// at once. Returns whether it was parked (the address charge then went with it).
    pub fn leave(
        &mut self,
        ctx: &mut SessionContext<'_>,
        abnormally: bool,
        address: Option<IpAddr>,
    ) -> bool {
        let parked = match &mut self.speaking {
            Speaking::Rpc(world) => {
                world.depart(&self.peer, ctx.users);
                false
            }
            Speaking::Studio(studio) if abnormally => {
                studio::park(studio, ctx.reconnects, ctx.now, address)
            }
            Speaking::Studio(studio) => {
                studio::end(studio, ctx.reconnects);
                false
            }
            _ => false,
        };
        if parked {
            // A parked session keeps its memberships in the engine.
            self.peer.memberships.clear();
        } else {
            self.peer.leave_all(ctx.engine, ctx.now);
        }
        parked
    }

    /// A newer connection of the same user replaces this one: it stops counting for its user
    /// and is told so; the loop closes it shortly after.
    pub fn replace(&mut self, users: &mut Users) {
        if let Speaking::Rpc(world) = &mut self.speaking {
            world.depart(&self.peer, users);
            rpc::replaced(&mut self.peer.outbox);
        }
    }

    fn on_object(&mut self, text: &[u8], ctx: &mut SessionContext<'_>) -> Outcome {
        let SessionContext {
            engine,
            policy,
            parser,
            users,
            reconnects,
            now,
        } = ctx;
        let mut env = Env {
            engine,
            policy,
            users,
            reconnects,
            now: *now,
        };
        let peer = &mut self.peer;
        let speaking = &mut self.speaking;
        let parsed = parser.parse(text, |doc| dispatch(doc, speaking, peer, &mut env));
        match parsed {
            Ok(outcome) => outcome,
            Err(InvalidJson::NumberOutOfRange) => match speaking {
                Speaking::Undecided => Outcome::Close(Reason::InvalidJson),
                Speaking::Rpc(_) => rpc::on_number_out_of_range(peer, env.engine),
                Speaking::Studio(_) => studio::on_number_out_of_range(peer),
                Speaking::Scratch | Speaking::Legacy => {
                    env.engine.stats.sets_rejected += 1;
                    peer.log_ignored(env.engine, "message", "number out of range");
                    Outcome::Continue
                }
            },
            Err(InvalidJson::Syntax) => Outcome::Close(Reason::InvalidJson),
        }
    }
}

fn dispatch(
    doc: Value<'_, '_>,
    speaking: &mut Speaking,
    peer: &mut Peer,
    env: &mut Env<'_>,
) -> Outcome {
    match speaking {
        Speaking::Rpc(world) => return rpc::on_message(doc, world, peer, env),
        Speaking::Studio(studio) => return studio::on_message(doc, studio, peer, env),
        _ => {}
    }
    if !doc.is_object() {
        return Outcome::Close(Reason::Protocol("message is not a JSON object"));
    }
    match speaking {
        Speaking::Undecided => {
            if json::get_str(doc, "kind") == Some("HELLO") {
                let mut studio = studio::Studio::default();
                let outcome = studio::on_message(doc, &mut studio, peer, env);
                *speaking = Speaking::Studio(studio);
                return outcome;
            }
            let (dialect, handshake) = if json::get_str(doc, "method") == Some("handshake") {
                (Dialect::Scratch, scratch::read_handshake(doc))
            } else if json::get_str(doc, "kind") == Some("handshake") {
                (Dialect::Legacy, legacy::read_handshake(doc))
            } else {
                return Outcome::Close(Reason::Protocol("first message must be a handshake"));
            };
            let joined = handshake
                .map_err(Refusal::from)
                .and_then(|h| join_with_handshake(h, dialect, peer, env));
            match joined {
                Ok(()) => {
                    *speaking = if dialect == Dialect::Scratch {
                        Speaking::Scratch
                    } else {
                        Speaking::Legacy
                    };
                    Outcome::Joined
                }
                Err(refusal) => refusal.outcome(),
            }
        }
        Speaking::Scratch => scratch::on_message(doc, peer, env),
        Speaking::Legacy => legacy::on_message(doc, peer, env),
        Speaking::Rpc(_) | Speaking::Studio(_) => Outcome::Continue,
    }
}

#[cfg(test)]
mod tests;
