//! Regressions found by the fuzz targets (fuzz/): `frames` and `session`.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Instant;

use stratus::config::Config;
use stratus::dialect::encode_set;
use stratus::dialect::json::JsonParser;
use stratus::dialect::{Reconnects, Route, Session, SessionContext, Users};
use stratus::engine::{ClientId, Engine, Format, Limits, ValueRef};
use stratus::metrics::Metrics;
use stratus::net::api::ApiState;
use stratus::net::conn::{Conn, ConnSettings, LoopContext};
use stratus::net::per_ip::PerIp;
use stratus::net::transport::HalfClose;
use stratus::net::write_budget::TurnBudget;
use stratus::policy::Policy;

/// An in-memory socket: serves `input`, takes output only while `writable`.
#[derive(Default)]
struct Net {
    input: Vec<u8>,
    pos: usize,
    writable: bool,
    out: Vec<u8>,
}

struct Mem(Rc<RefCell<Net>>);

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        let n = buf.len().min(net.input.len() - net.pos);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let at = net.pos;
        buf[..n].copy_from_slice(&net.input[at..at + n]);
        net.pos += n;
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        if !net.writable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        net.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for Mem {}

fn masked_text(text: &str) -> Vec<u8> {
    masked(0x81, text.as_bytes())
}

/// A masked client frame with a payload under 126 bytes.
fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    assert!(payload.len() < 126);
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// What the event loop lends a connection, owned here so a test can lend it as a `LoopContext`.
struct Fixture {
    settings: ConnSettings,
    policy: Policy,
    engine: Engine,
    parser: JsonParser,
    users: Users,
    reconnects: Reconnects,
    metrics: Metrics,
    scratch: Vec<u8>,
    per_ip: PerIp,
    api: ApiState,
    turn: TurnBudget,
    now: Instant,
}

impl Fixture {
    fn new(config: &Config) -> Self {
        Fixture {
            settings: ConnSettings::from_config(config),
            policy: Policy::default(),
            engine: Engine::new(Limits::default(), encode_set),
            parser: JsonParser::default(),
            users: Users::new(0),
            reconnects: Reconnects::new(std::time::Duration::from_secs(120), 100),
            metrics: Metrics::default(),
            scratch: vec![0u8; 16 * 1024],
            per_ip: PerIp::default(),
            api: ApiState::default(),
            turn: TurnBudget::new(),
            now: Instant::now(),
        }
    }

    fn ctx(&mut self) -> LoopContext<'_> {
        self.turn.start_turn();
        LoopContext {
            engine: &mut self.engine,
            policy: &self.policy,
            parser: &mut self.parser,
            users: &mut self.users,
            reconnects: &mut self.reconnects,
            metrics: &mut self.metrics,
            settings: &self.settings,
            now: self.now,
            over_capacity: false,
            scratch: &mut self.scratch,
            per_ip: &mut self.per_ip,
            write_budget: &self.turn,
            api: &mut self.api,
        }
    }
}

const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// fuzz/frames: a ping answered in the same read that tripped the byte limit left tungstenite's
/// pong queued, and closing wrote it after the close frame.
#[test]
fn a_pending_pong_goes_out_before_the_close_frame() {
    let mut config = Config::defaults();
    config.byte_burst = 400.0;
    config.byte_rate = 1.0;
    let mut fixture = Fixture::new(&config);
    let net = Rc::new(RefCell::new(Net {
        input: UPGRADE.to_vec(),
        writable: true,
        ..Net::default()
    }));
    let mut ctx = fixture.ctx();
    let mut conn = Conn::new(Mem(net.clone()), ClientId(1), None, &ctx);
    conn.on_event(true, true, &mut ctx);
    assert!(
        conn.is_open(),
        "the request head is not charged to the byte limit"
    );
    // One read brings a ping and more bytes than the burst allows.
    let mut frames = masked(0x89, b"are you there");
    for _ in 0..4 {
        frames.extend(masked(0x82, &[0u8; 100]));
    }
    net.borrow_mut().input.extend(frames);
    conn.on_event(true, true, &mut ctx);
    assert!(!conn.is_open(), "the byte limit closed the connection");
    let out = net.borrow().out.clone();
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .expect("a 101 response");
    let frames = &out[head_end..];
    let pong = frames.iter().position(|&b| b == 0x8A).expect("a pong");
    let close = frames
        .iter()
        .position(|&b| b == 0x88)
        .expect("a close frame");
    assert!(pong < close, "pong after close: {frames:?}");
    // Close code 4004 (0x0FA4), and nothing after the close frame.
    assert_eq!(&frames[close + 2..close + 4], &[0x0F, 0xA4]);
    let close_len = usize::from(frames[close + 1]);
    assert_eq!(
        frames.len(),
        close + 2 + close_len,
        "bytes after the close frame"
    );
}

/// fuzz/frames: the join snapshot was dropped when the socket could not take the pending
/// output (the 101 response here) at the moment the handshake was handled.
#[test]
fn the_join_snapshot_survives_a_full_socket() {
    let mut fixture = Fixture::new(&Config::defaults());
    let now = fixture.now;
    // Someone is in room 1 and has set ☁ x = 7.
    let mut other = Session::new(ClientId(2), Route::Sniff, &fixture.policy, now);
    other.on_text(
        "{\"method\":\"handshake\",\"user\":\"a\",\"project_id\":\"1\"}\n\
         {\"method\":\"set\",\"name\":\"☁ x\",\"value\":7}"
            .as_bytes(),
        &mut SessionContext {
            engine: &mut fixture.engine,
            policy: &fixture.policy,
            parser: &mut fixture.parser,
            users: &mut fixture.users,
            reconnects: &mut fixture.reconnects,
            now,
        },
    );

    // The upgrade and the handshake arrive together while the socket takes no output.
    let mut input = UPGRADE.to_vec();
    input.extend(masked_text(
        r#"{"method":"handshake","user":"b","project_id":"1"}"#,
    ));
    let net = Rc::new(RefCell::new(Net {
        input,
        ..Net::default()
    }));
    let mut ctx = fixture.ctx();
    let mut conn = Conn::new(Mem(net.clone()), ClientId(1), None, &ctx);
    conn.on_event(true, true, &mut ctx);
    assert!(conn.is_open());

    // The socket drains; everything owed goes out.
    net.borrow_mut().writable = true;
    conn.on_event(false, true, &mut ctx);
    ctx.engine.flush(|_, _, _| true);
    let out = String::from_utf8_lossy(&net.borrow().out).into_owned();
    assert!(out.starts_with("HTTP/1.1 101 "), "{out:?}");
    assert!(
        out.contains(r#"{"method":"set","name":"☁ x","value":7}"#),
        "the joining client was never sent ☁ x: {out:?}"
    );
}

/// fuzz/session: a client renamed a variable it was behind on; as the rename's "writer" it was
/// never sent the current value under the new name, so it kept its stale one.
#[test]
fn a_renamer_that_is_behind_gets_the_current_value() {
    let mut engine = Engine::new(Limits::default(), encode_set);
    let now = Instant::now();
    let room = engine
        .join("1", ClientId(1), Format(0), None, now)
        .expect("join");
    engine
        .join("1", ClientId(2), Format(0), None, now)
        .expect("join");
    engine.set(room, ClientId(2), "☁ x", ValueRef::Number("0"), true);
    engine.flush(|_, _, _| true);
    // Client 1 is behind and misses ☁ x = 1.
    engine.set(room, ClientId(2), "☁ x", ValueRef::Number("1"), true);
    engine.flush(|_, client, _| client != ClientId(1));
    // Its connection drains (the loop resumes it), but no flush has run yet.
    engine.resume(room, ClientId(1));
    // Client 1 renames its ☁ x, which it still holds as 0.
    engine
        .rename(room, ClientId(1), "☁ x", "☁ y")
        .expect("rename");
    let mut to_client_1 = Vec::new();
    engine.flush(|_, client, frame| {
        if client == ClientId(1) {
            to_client_1.push(frame.to_string());
        }
        true
    });
    assert_eq!(
        to_client_1,
        [r#"{"method":"set","name":"☁ y","value":1}"#],
        "client 1 must learn ☁ y = 1"
    );
}

/// fuzz/parse_message: a three-element ping whose id or payload nests too deeply to echo was
/// refused with an error that carried no id, although an array-RPC reply carries the id exactly
/// when the request had three elements (an id too deep to echo is sent as `null`).
#[test]
fn a_ping_too_deep_to_echo_is_refused_with_its_id() {
    let mut fixture = Fixture::new(&Config::defaults());
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let cases = [
        (
            format!(r#"["ping",7,{deep}]"#),
            r#"["error",7,{"code":"protocol.invalid"}]"#,
        ),
        (
            format!(r#"["ping",{deep},1]"#),
            r#"["error",null,{"code":"protocol.invalid"}]"#,
        ),
    ];
    for (request, expected) in cases {
        let mut session = Session::new(
            ClientId(1),
            Route::World("1".into()),
            &fixture.policy,
            fixture.now,
        );
        session.on_text(
            request.as_bytes(),
            &mut SessionContext {
                engine: &mut fixture.engine,
                policy: &fixture.policy,
                parser: &mut fixture.parser,
                users: &mut fixture.users,
                reconnects: &mut fixture.reconnects,
                now: fixture.now,
            },
        );
        let replies: Vec<String> = session
            .outbox()
            .messages()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect();
        assert_eq!(replies, [expected], "reply to {request}");
    }
}
