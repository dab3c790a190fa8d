//! Why a connection ends, as a type: every dialect maps a [`Reason`] to its own wire form (a
//! close code, an RPC error array, a four-character code), and the log gets its text.

use crate::engine::JoinError;
use crate::policy::UsernameProblem;

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
    /// and rate limiting in every dialect).
    pub const UNAVAILABLE: u16 = 4004;
    /// The client leaked a Scratch session cookie to the server.
    pub const SECURITY: u16 = 4005;
    /// The client sent no User-Agent while one is required.
    pub const USER_AGENT: u16 = 4006;
}

/// Why the server ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A protocol violation, described for the log and the close frame.
    Protocol(&'static str),
    InvalidJson,
    /// The room (project) id is empty, too long or not text.
    InvalidRoom,
    /// The handshake's variables do not match the room's (legacy dialect).
    Incompatible,
    InvalidDeclaration,
    Username(UsernameProblem),
    /// The authentication payload names no usable identity (array-RPC dialect).
    NoIdentity,
    /// The client's address is banned through the admin API.
    AddressBanned,
    RoomFull,
    TooManyRooms,
    ServerFull,
    /// The operator's project lists refuse the room.
    RoomRefused,
    TooManyMessages,
    TooManyBytes,
    ScratchCookie,
    NoUserAgent,
    MessageTooBig,
    InvalidUtf8,
    WebSocketProtocol,
    HandshakeTimeout,
    NoPong,
    ShuttingDown,
    /// The same user opened more connections than allowed; this, the oldest, makes way.
    Replaced,
    /// A username (array-RPC, without a client id) is already connected to the room
    /// `--max-connections-per-user` times: the newcomer is refused, nobody is replaced.
    UserAtLimit,
    /// Something failed inside the server that concerns this connection only.
    ServerFault,
    /// The room could not be loaded (its store or Redis is out); trying later may work.
    RoomUnavailable,
    /// An operator removed the client through the admin API (4002, array-RPC
    /// `auth.denied`, MultiStudio `USER`/`kicked`).
    Kicked,
}

impl Reason {
    /// The close code of the Scratch and legacy specifications (and the default elsewhere).
    pub fn close_code(self) -> u16 {
        use close_code::*;
        match self {
            Reason::Protocol(_)
            | Reason::InvalidJson
            | Reason::InvalidRoom
            | Reason::InvalidDeclaration
            | Reason::HandshakeTimeout => PROTOCOL,
            Reason::Incompatible => INCOMPATIBLE,
            Reason::Username(_) | Reason::NoIdentity | Reason::Kicked | Reason::AddressBanned => {
                USERNAME
            }
            Reason::RoomFull
            | Reason::TooManyRooms
            | Reason::ServerFull
            | Reason::UserAtLimit
            | Reason::RoomUnavailable => OVERLOADED,
            Reason::RoomRefused | Reason::TooManyMessages | Reason::TooManyBytes => UNAVAILABLE,
            Reason::ScratchCookie => SECURITY,
            Reason::NoUserAgent => USER_AGENT,
            Reason::MessageTooBig => 1009,
            Reason::InvalidUtf8 => 1007,
            Reason::WebSocketProtocol => 1002,
            Reason::NoPong | Reason::ShuttingDown => 1001,
            Reason::Replaced => 1000,
            Reason::ServerFault => 1011,
        }
    }

    /// A short name for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Protocol(_) => "protocol",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidRoom => "invalid_room",
            Reason::Incompatible => "incompatible_variables",
            Reason::InvalidDeclaration => "invalid_declaration",
            Reason::Username(_) => "username",
            Reason::NoIdentity => "no_identity",
            Reason::AddressBanned => "address_banned",
            Reason::RoomFull => "room_full",
            Reason::TooManyRooms => "too_many_rooms",
            Reason::ServerFull => "server_full",
            Reason::RoomRefused => "room_refused",
            Reason::TooManyMessages => "rate_limited_messages",
            Reason::TooManyBytes => "rate_limited_bytes",
            Reason::ScratchCookie => "scratch_cookie",
            Reason::NoUserAgent => "no_user_agent",
            Reason::MessageTooBig => "message_too_big",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::WebSocketProtocol => "websocket_protocol",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::NoPong => "no_pong",
            Reason::ShuttingDown => "shutting_down",
            Reason::Replaced => "replaced",
            Reason::UserAtLimit => "user_at_limit",
            Reason::ServerFault => "server_fault",
            Reason::RoomUnavailable => "room_unavailable",
            Reason::Kicked => "kicked",
        }
    }

    /// What the log and the close frame say.
    pub fn text(self) -> &'static str {
        match self {
            Reason::Protocol(text) => text,
            Reason::InvalidJson => "invalid JSON",
            Reason::InvalidRoom => "invalid project id",
            Reason::Incompatible => "variables do not match the room's",
            Reason::InvalidDeclaration => "invalid variables in handshake",
            Reason::Username(problem) => problem.as_str(),
            Reason::NoIdentity => {
                "authentication needs a username or a client_id of 1-64 characters"
            }
            Reason::AddressBanned => "address is banned",
            Reason::RoomFull => "room is full",
            Reason::TooManyRooms => "too many rooms",
            Reason::ServerFull => "server is full",
            Reason::RoomRefused => "project not allowed on this server",
            Reason::TooManyMessages => "too many messages",
            Reason::TooManyBytes => "too many bytes",
            Reason::ScratchCookie => "request carried a Scratch session cookie",
            Reason::NoUserAgent => "missing User-Agent",
            Reason::MessageTooBig => "message too big",
            Reason::InvalidUtf8 => "invalid UTF-8",
            Reason::WebSocketProtocol => "WebSocket protocol error",
            Reason::HandshakeTimeout => "no handshake in time",
            Reason::NoPong => "no answer to ping",
            Reason::ShuttingDown => "server shutting down",
            Reason::Replaced => "replaced by a newer connection of the same user",
            Reason::UserAtLimit => "this username has as many connections to the room as allowed",
            Reason::ServerFault => "internal server error",
            Reason::RoomUnavailable => "room cannot be loaded now, try again later",
            Reason::Kicked => "removed by an operator",
        }
    }
}

impl From<JoinError> for Reason {
    fn from(error: JoinError) -> Self {
        match error {
            JoinError::RoomFull => Reason::RoomFull,
            JoinError::TooManyRooms => Reason::TooManyRooms,
            JoinError::Incompatible => Reason::Incompatible,
            JoinError::InvalidDeclaration => Reason::InvalidDeclaration,
            // A session never closes for a room that is loading: it waits (see `Wait`).
            JoinError::Loading => Reason::ServerFault,
            JoinError::Unavailable => Reason::RoomUnavailable,
        }
    }
}
