//! stratus: a cloud-variable server for Scratch 3 and TurboWarp projects.
//!
//! Layers, top to bottom (arrows point down only):
//! - [`net`]: the single-threaded mio event loop, HTTP heads and WebSocket connections;
//! - [`dialect`]: each WebSocket protocol, from parsed JSON to engine calls and back to text;
//! - [`durable`]: when the durable backend ([`store`] or [`cluster`]) is sent what, and what its
//!   answers mean, sans-IO;
//! - [`engine`]: rooms, variables, limits and fan-out, with no sockets and no protocol knowledge.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod dialect;
pub mod durable;
pub mod engine;
pub mod error_log;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod query;
pub mod store;
