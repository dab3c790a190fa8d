//! The WebSocket protocols ("dialects") and the per-connection session that speaks them.
//!
//! A dialect turns one parsed JSON object into engine calls, and writes the engine's variables
//! back as its own `set` lines. The [`Session`] picks the dialect from the first message and
//! owns what a connection knows after its handshake (room, user). No sockets here: the event
//! loop hands a session text and gets back an [`Outcome`].

pub mod json;
mod legacy;
mod scratch;
mod session;

pub use session::{Outcome, Session, SessionContext};

use crate::engine::{Format, ValueRef};

/// WebSocket close codes the server sends, shared by the dialects' specifications.
pub mod close_code {
    /// The client violated the protocol.
    pub const PROTOCOL: u16 = 4000;
    /// The client's variables do not match the room's (legacy dialect).
    pub const INCOMPATIBLE: u16 = 4001;
    /// The username is malformed or refused.
    pub const USERNAME: u16 = 4002;
    /// The server or the room is full.
    pub const OVERLOADED: u16 = 4003;
    /// The project is unavailable (Scratch), or the client must try again later (legacy,
    /// and rate limiting in both).
    pub const UNAVAILABLE: u16 = 4004;
    /// The client leaked a Scratch session cookie to the server.
    pub const SECURITY: u16 = 4005;
    /// The client sent no User-Agent while one is required.
    pub const USER_AGENT: u16 = 4006;
}

/// The protocols stratus speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Scratch 3 / TurboWarp: `{"method": ...}`.
    Scratch,
    /// cloud-server's older protocol: `{"kind": ...}`.
    Legacy,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Scratch => "scratch",
            Dialect::Legacy => "legacy",
        }
    }

    fn format(self) -> Format {
        match self {
            Dialect::Scratch => Format(0),
            Dialect::Legacy => Format(1),
        }
    }
}

/// Writes one `set` line in the format a member reads; the engine calls this to build frames.
pub fn encode_set(format: Format, name: &str, value: ValueRef<'_>, out: &mut String) {
    if format == Dialect::Legacy.format() {
        legacy::encode_set(name, value, out);
    } else {
        scratch::encode_set(name, value, out);
    }
}
