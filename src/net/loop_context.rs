//! What a connection borrows from the loop: the settings every connection shares
//! ([`ConnSettings`], from the configuration) and, while it handles one event, the loop's
//! state ([`LoopContext`]: the engine, the policy, the per-address counts, the turn's write
//! budget). Shared by the connection (`conn.rs`) and its admission (`admission.rs`).

use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;

use super::api::ApiState;
use super::per_ip::PerIp;
use super::write_budget::TurnBudget;
use crate::config::{Config, TrustedProxies};
use crate::dialect::json::JsonParser;
use crate::dialect::{Reconnects, Users};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// Bounds tungstenite's buffer for control frames; see `ConnSettings::from_config`.
const CONTROL_BUFFER_BYTES: usize = 1024;

/// Most HTTP API requests on one kept-alive connection.
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 100;

/// Connection settings that come from the configuration.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub websocket: WebSocketConfig,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub write_stall_timeout: Duration,
    /// How long a closing connection is drained before the socket is dropped.
    pub close_linger: Duration,
    pub byte_rate: f64,
    pub byte_burst: f64,
    /// Peers whose `X-Forwarded-For` names the client (`--trust-proxy`).
    pub trusted_proxies: TrustedProxies,
    pub anonymize_ips: bool,
    pub allowed_origins: Option<Vec<String>>,
    pub require_user_agent: bool,
    /// Most HTTP API requests one connection may send (keep-alive); the last is answered with
    /// `Connection: close`.
    pub max_requests_per_connection: u32,
}

impl ConnSettings {
    pub fn from_config(config: &Config) -> Self {
        let websocket = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size.max(64))
            // Data frames bypass tungstenite's output buffer (see `frame_writer`); it only
            // holds control frames (pongs, our pings, the close). Bounded: when it is full,
            // tungstenite keeps only the latest pong pending, which RFC 6455 allows.
            .write_buffer_size(CONTROL_BUFFER_BYTES)
            .max_write_buffer_size(2 * CONTROL_BUFFER_BYTES)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        ConnSettings {
            websocket,
            handshake_timeout: Duration::from_secs(config.handshake_timeout),
            ping_interval: Duration::from_secs(config.ping_interval),
            write_stall_timeout: Duration::from_secs(config.write_stall_timeout),
            close_linger: Duration::from_secs(2),
            byte_rate: config.byte_rate,
            byte_burst: config.byte_burst,
            trusted_proxies: config.trusted_proxies(),
            anonymize_ips: config.anonymize_ips,
            allowed_origins: config.allowed_origins.clone(),
            require_user_agent: config.require_user_agent,
            max_requests_per_connection: MAX_REQUESTS_PER_CONNECTION,
        }
    }
}

/// What a connection borrows from the loop while it handles one event.
pub struct LoopContext<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a Policy,
    pub parser: &'a mut JsonParser,
    pub users: &'a mut Users,
    pub reconnects: &'a mut Reconnects,
    pub metrics: &'a mut Metrics,
    pub settings: &'a ConnSettings,
    pub now: Instant,
    /// More connections are open than the configured maximum: refuse this one with 4003.
    pub over_capacity: bool,
    /// Loop-wide buffer for reading request heads and draining closed connections.
    pub scratch: &'a mut [u8],
    /// Open connections per client address (`--max-connections-per-ip`).
    pub per_ip: &'a mut PerIp,
    /// Bytes this turn may still write, shared by every connection's transport.
    pub write_budget: &'a TurnBudget,
    /// The HTTP API's per-address rate limit and request counts.
    pub api: &'a mut ApiState,
}
