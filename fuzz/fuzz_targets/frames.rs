//! Arbitrary bytes as one client's TCP stream through the real connection state machine
//! (`stratus::net::conn::Conn`) over an in-memory stream: the HTTP head, the upgrade, WebSocket
//! framing (tungstenite), the dialects and the room engine, with timers and fan-out.
//!
//! Each input runs twice: once on a well-behaved network (everything arrives at once, every
//! write succeeds), once on a hostile one whose schedule comes from the input's last 8 bytes
//! (input in pieces, writes that block or fail, read errors, time jumping past deadlines,
//! another client in the room setting variables, rename/delete on or off). A second client (a
//! sans-IO session) sits in room "1234" so fan-out reaches the connection. Checks: no panic;
//! output bounded; what the server writes is one HTTP response, or a 101 followed by
//! well-formed unmasked WebSocket frames with nothing after a close, and nothing after the
//! write half is shut; once the network recovers, a client that joined "1234" has been sent
//! the room's values (its snapshot, and the latest fan-out); once released, the connection is
//! in no room.

#![no_main]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stratus::config::Config;
use stratus::dialect::json::JsonParser;
use stratus::dialect::{encode_set, Outcome, Reconnects, Route, Session, SessionContext, Users};
use stratus::engine::{ClientId, Engine, Limits};
use stratus::metrics::Metrics;
use stratus::net::conn::{Conn, ConnSettings, LoopContext, Status};
use stratus::net::http::{parse_head, Head};
use stratus::net::api::ApiState;
use stratus::net::per_ip::PerIp;
use stratus::net::transport::HalfClose;
use stratus::net::write_budget::TurnBudget;
use stratus::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};

/// Output kept for checking; more is counted but not kept.
const OUTPUT_CAP: usize = 256 * 1024;
const MAX_STEPS: usize = 48;
const PEER_HELLO: &[u8] = br#"{"method":"handshake","user":"peer","project_id":"1234"}"#;

/// What the network does; shared between the stream (owned by the connection) and the driver.
#[derive(Default)]
struct Net {
    input: Vec<u8>,
    /// Bytes read so far, and bytes the network has delivered so far. A read returns all
    /// that has arrived (as a socket does: a short read means the buffer is empty).
    pos: usize,
    available: usize,
    /// Once all input is read: end of stream instead of WouldBlock.
    eof: bool,
    /// The next read fails with a reset.
    read_error: bool,
    /// Bytes writable before WouldBlock.
    write_budget: usize,
    /// Every write fails (the peer is gone).
    write_error: bool,
    output: Vec<u8>,
    written: usize,
    half_closed: bool,
    writes_after_half_close: usize,
}

struct MemStream(Rc<RefCell<Net>>);

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        if std::mem::take(&mut net.read_error) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if net.pos < net.available {
            let n = buf.len().min(net.available - net.pos);
            buf[..n].copy_from_slice(&net.input[net.pos..net.pos + n]);
            net.pos += n;
            return Ok(n);
        }
        if net.eof && net.pos == net.input.len() {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut net = self.0.borrow_mut();
        if net.write_error {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if net.write_budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if net.half_closed {
            net.writes_after_half_close += 1;
        }
        let n = buf.len().min(net.write_budget);
        net.write_budget -= n;
        net.written += n;
        let keep = n.min(OUTPUT_CAP.saturating_sub(net.output.len()));
        net.output.extend_from_slice(&buf[..keep]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            match self.write(buf) {
                Ok(n) => {
                    total += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for MemStream {
    fn shutdown_write(&mut self) {
        self.0.borrow_mut().half_closed = true;
    }
}

/// xorshift64*, seeded from the input's last 8 bytes: the hostile schedule is a function of the
/// input, and survives `cargo fuzz tmin` removing bytes elsewhere.
struct Rng(u64);

impl Rng {
    fn seeded(data: &[u8]) -> Rng {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &data[data.len().saturating_sub(8)..] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(hash | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Shared {
    config: Config,
    policy: Policy,
    settings: ConnSettings,
    hostile_policy: Policy,
    editing_policy: Policy,
    hostile_settings: ConnSettings,
}

fn conn_settings(config: &Config) -> ConnSettings {
    ConnSettings::from_config(config)
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let config = Config::defaults();
        let usernames =
            UsernameFilter::parse(DEFAULT_USERNAME_FILTER).expect("the built-in filter parses");
        let policy = Policy {
            usernames,
            allowed_projects: None,
            blocked_projects: Default::default(),
            message_rate: config.message_rate,
            message_burst: config.message_burst,
            max_rooms_per_connection: config.max_rooms_per_connection,
            fault_rooms: Default::default(),
            relay_user: false,
            bans: Default::default(),
        };
        let hostile_policy = Policy {
            blocked_projects: ["666".to_owned()].into_iter().collect(),
            ..policy.clone()
        };
        // Rename and delete are the engine's per-room settings (see the limits below).
        let editing_policy = hostile_policy.clone();
        let settings = conn_settings(&config);
        let hostile_settings = ConnSettings {
            trusted_proxies: stratus::config::TrustedProxies::loopback(),
            anonymize_ips: true,
            allowed_origins: Some(vec!["https://turbowarp.org".to_owned()]),
            byte_burst: 2048.0,
            byte_rate: 1024.0,
            ..settings.clone()
        };
        Shared {
            config,
            policy,
            settings,
            hostile_policy,
            editing_policy,
            hostile_settings,
        }
    })
}

struct World<'a> {
    engine: Engine,
    parser: JsonParser,
    users: Users,
    reconnects: Reconnects,
    metrics: Metrics,
    policy: &'a Policy,
    settings: &'a ConnSettings,
    scratch: Vec<u8>,
    per_ip: PerIp,
    api: ApiState,
    /// The loop's per-turn write budget; each `ctx()` is one turn.
    turn: TurnBudget,
    now: Instant,
}

impl World<'_> {
    fn ctx(&mut self) -> LoopContext<'_> {
        self.turn.start_turn();
        LoopContext {
            engine: &mut self.engine,
            policy: self.policy,
            parser: &mut self.parser,
            users: &mut self.users,
            reconnects: &mut self.reconnects,
            metrics: &mut self.metrics,
            settings: self.settings,
            now: self.now,
            over_capacity: false,
            scratch: &mut self.scratch,
            per_ip: &mut self.per_ip,
            write_budget: &self.turn,
            api: &mut self.api,
        }
    }

    fn peer_says(&mut self, peer: &mut Session, text: &[u8]) -> Outcome {
        let outcome = peer.on_text(
            text,
            &mut SessionContext {
                engine: &mut self.engine,
                policy: self.policy,
                parser: &mut self.parser,
                users: &mut self.users,
                reconnects: &mut self.reconnects,
                now: self.now,
            },
        );
        // The peer has no connection: its snapshot is not written anywhere.
        peer.outbox().clear();
        outcome
    }
}

fn run(data: &[u8], hostile: bool) {
    let shared = shared();
    let mut rng = Rng::seeded(data);
    // Half the hostile runs also accept rename and delete.
    let editing = hostile && rng.below(2) == 0;
    let (policy, settings) = match (hostile, editing) {
        (false, _) => (&shared.policy, &shared.settings),
        (true, false) => (&shared.hostile_policy, &shared.hostile_settings),
        (true, true) => (&shared.editing_policy, &shared.hostile_settings),
    };
    let config = &shared.config;
    let mut world = World {
        engine: Engine::new(
            Limits {
                max_rooms: config.max_rooms,
                max_clients_per_room: config.max_clients_per_room,
                max_variables_per_room: config.max_variables_per_room,
                empty_room_ttl: Duration::from_secs(config.empty_room_ttl),
                allow_non_numeric: config.allow_non_numeric || hostile,
                max_value_chars: config.max_value_length,
                enable_rename: config.enable_rename || editing,
                enable_delete: config.enable_delete || editing,
                max_state_bytes: config.max_state_memory,
            },
            encode_set,
        ),
        parser: JsonParser::default(),
        users: Users::new(config.max_connections_per_user),
        reconnects: Reconnects::new(Duration::from_secs(config.reconnect_window), 64),
        metrics: Metrics::default(),
        policy,
        settings,
        scratch: vec![0; 16 * 1024],
        per_ip: PerIp::default(),
        api: ApiState::default(),
        turn: TurnBudget::new(),
        now: Instant::now(),
    };
    let start = world.now;

    let mut peer = Session::new(ClientId(2), Route::Sniff, policy, world.now);
    assert_eq!(world.peer_says(&mut peer, PEER_HELLO), Outcome::Joined);
    world.peer_says(
        &mut peer,
        "{\"method\":\"set\",\"name\":\"☁ peer\",\"value\":0}\n\
         {\"method\":\"set\",\"name\":\"☁ fixed\",\"value\":42}"
            .as_bytes(),
    );
    let peer_sets_applied = world.engine.stats.sets_applied;
    assert_eq!(peer_sets_applied, 2);

    let net = Rc::new(RefCell::new(Net {
        input: data.to_vec(),
        write_budget: usize::MAX,
        ..Net::default()
    }));
    let ip: IpAddr = [192, 0, 2, 7].into();
    let client = ClientId(1);
    let mut conn = Conn::new(MemStream(net.clone()), client, Some(ip), &world.ctx());
    let mut delivered_bytes = 0usize;
    let mut peer_sets = 0u32;
    let mut peer_applied = peer_sets_applied;
    let mut status = Status::Open;
    let early_eof = (hostile && rng.below(4) == 0).then(|| rng.below(MAX_STEPS as u64) as usize);

    for step in 0..if hostile { MAX_STEPS } else { 4 } {
        {
            let mut n = net.borrow_mut();
            if hostile {
                let chunk = rng.pick(&[1, 7, 64, 300, 4096, usize::MAX]);
                n.available = n.available.saturating_add(chunk).min(n.input.len());
                n.write_budget = rng.pick(&[0, 0, 5, 100, 4096, usize::MAX]);
                n.read_error |= rng.below(200) == 0;
                n.write_error |= rng.below(300) == 0;
            } else {
                n.available = n.input.len();
                n.write_budget = usize::MAX;
            }
            // Some clients hang up once everything is read; the others stay to read what they
            // are owed, and hang up at the end.
            if early_eof.is_some_and(|at| step >= at) && n.pos == n.input.len() {
                n.eof = true;
            }
        }
        let writable = !hostile || rng.below(3) != 0;
        status = conn.on_event(true, writable, &mut world.ctx());
        if status == Status::Done {
            break;
        }
        if hostile && rng.below(3) == 0 {
            // Mostly ticks; now and then a jump past a deadline (handshake 10 s, ping 30 s,
            // write stall 60 s, linger 2 s).
            world.now += if rng.below(12) == 0 {
                rng.pick(&[
                    Duration::from_secs(11),
                    Duration::from_secs(31),
                    Duration::from_secs(61),
                ])
            } else {
                rng.pick(&[
                    Duration::ZERO,
                    Duration::from_millis(100),
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                ])
            };
            status = conn.on_timer(&mut world.ctx());
            if status == Status::Done {
                break;
            }
        }
        if !hostile || rng.below(2) == 0 {
            if hostile && rng.below(2) == 0 {
                peer_sets += 1;
                let set =
                    format!("{{\"method\":\"set\",\"name\":\"☁ peer\",\"value\":{peer_sets}}}");
                world.peer_says(&mut peer, set.as_bytes());
                peer_applied += 1;
            }
            let now = world.now;
            world.engine.flush(|_room, to, frame| {
                if to != client {
                    return true;
                }
                let delivery = conn.deliver(frame, now);
                if delivery.status == Status::Done {
                    status = Status::Done;
                }
                if delivery.taken {
                    delivered_bytes += frame.len() + 14;
                }
                delivery.taken
            });
            if status == Status::Done {
                break;
            }
        }
    }
    if status != Status::Done {
        // The network recovers and the client reads everything: it must end up knowing the
        // room's values.
        {
            let mut n = net.borrow_mut();
            n.available = n.input.len();
            n.write_budget = usize::MAX;
            n.eof = false;
            n.read_error = false;
        }
        conn.on_event(true, true, &mut world.ctx());
        let now = world.now;
        world.engine.flush(|_room, to, frame| {
            if to != client {
                return true;
            }
            let taken = conn.deliver(frame, now).taken;
            if taken {
                delivered_bytes += frame.len() + 14;
            }
            taken
        });
        conn.on_event(false, true, &mut world.ctx());
        let joined = world.engine.member_count(peer.room().expect("peer")) == 2;
        let n = net.borrow();
        if conn.is_open() && joined && !n.write_error && n.written == n.output.len() {
            check_converged(&n.output, &world.engine, peer_applied, !editing);
        }
    }
    if status != Status::Done {
        // The client stops sending; deadlines pass.
        {
            let mut n = net.borrow_mut();
            n.available = n.input.len();
            n.write_budget = usize::MAX;
            n.eof = true;
        }
        for _ in 0..4 {
            if conn.on_event(true, true, &mut world.ctx()) == Status::Done {
                break;
            }
            world.now += Duration::from_secs(31);
            if conn.on_timer(&mut world.ctx()) == Status::Done {
                break;
            }
        }
    }
    conn.release(&mut world.ctx());
    assert!(
        conn.stream().is_none(),
        "a released connection holds no stream"
    );
    // A MultiStudio session whose connection ended abnormally is parked with its rooms until
    // the reconnect window runs out; then the loop leaves them for it.
    world.now += Duration::from_secs(config.reconnect_window + 1);
    world.reconnects.expire(world.now);
    for ended in world.reconnects.take_released() {
        assert_eq!(ended.client, client, "only the connection's session is parked");
        for room in ended.rooms {
            world.engine.leave(room, ended.client, world.now);
        }
        if let Some(address) = ended.address {
            world.per_ip.release(address);
        }
    }
    assert_eq!(world.reconnects.parked(), 0);

    // The released connection is in no room: once empty rooms expire, only the peer's is left.
    world.now += Duration::from_secs(config.empty_room_ttl + 1);
    world.engine.expire(world.now);
    let peer_room = peer.room().expect("the peer never leaves");
    assert_eq!(world.engine.member_count(peer_room), 1, "only the peer");
    assert_eq!(
        world.engine.room_count(),
        1,
        "rooms: {}",
        world.engine.room_count()
    );

    let net = net.borrow();
    let elapsed = world.now.saturating_duration_since(start).as_secs() as usize;
    let bound = 4096 + 4 * data.len() + delivered_bytes + 64 * (MAX_STEPS + elapsed);
    assert!(
        net.written <= bound,
        "wrote {} bytes for {} in (bound {bound})",
        net.written,
        data.len()
    );
    assert_eq!(
        net.writes_after_half_close, 0,
        "nothing written after shutdown"
    );
    if net.written == net.output.len() {
        check_output(&net.output, &route_of(data));
    }
}

/// The dialect the upgrade path asks for (the head is the input's start).
fn route_of(data: &[u8]) -> Route {
    match parse_head(data) {
        Head::Complete(request, _) => Route::from_path(&request.path),
        _ => Route::Sniff,
    }
}

/// The text frames in the server's output (after the 101), split into lines.
fn sent_lines(out: &[u8]) -> Vec<String> {
    let Some(mut at) = out.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    while let Some(&[first, second]) = out.get(at..at + 2) {
        let (length, header) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]])),
                4,
            ),
            127 => (
                u64::from_be_bytes(out[at + 2..at + 10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        let Some(payload) = out.get(at + header..at + header + length) else {
            break;
        };
        if first & 0x0f == 0x1 {
            let text = std::str::from_utf8(payload).expect("text frames are UTF-8");
            lines.extend(text.split('\n').map(str::to_owned));
        }
        at += header + length;
    }
    lines
}

/// A client in the peer's room, with everything written, knows the room's values: `☁ fixed`
/// (sent only in its snapshot) and the peer's latest `☁ peer`. Only checked when the client
/// applied no set itself and both variables are still the peer's originals (their creation
/// order shows no delete), so their values are the peer's, which it learns only from us.
/// `☁ peer` is skipped when renames are on: a client that renames a variable it is behind on
/// is not sent it back (see the README).
fn check_converged(out: &[u8], engine: &Engine, peer_applied: u64, check_peer: bool) {
    if engine.stats.sets_applied != peer_applied {
        return;
    }
    let variables = engine.variables("1234");
    let names: Vec<&str> = variables.iter().map(|(n, _)| *n).take(2).collect();
    if names != ["☁ peer", "☁ fixed"] {
        return;
    }
    let mut view = std::collections::HashMap::new();
    for line in sent_lines(out) {
        let json: serde_json::Value = serde_json::from_str(&line).expect("checked JSON");
        for (name, value) in updates_in_1234(&json) {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            view.insert(name.to_owned(), value);
        }
    }
    for (name, value) in variables.iter().take(2) {
        if *name == "☁ fixed" || check_peer {
            assert_eq!(
                view.get(*name).map(String::as_str),
                Some(value.text()),
                "the client never got the room's {name}; it was sent {view:?}"
            );
        }
    }
}

fn pair<'j>(object: &'j serde_json::Value, key: &str) -> Option<(&'j str, &'j serde_json::Value)> {
    let name = object.get(key).and_then(|n| n.as_str())?;
    Some((name, object.get("value")?))
}

fn all(variables: Option<&serde_json::Value>) -> Vec<(&str, &serde_json::Value)> {
    variables
        .and_then(|v| v.as_object())
        .map(|map| map.iter().map(|(n, v)| (n.as_str(), v)).collect())
        .unwrap_or_default()
}

/// The values of room 1234 a message tells its client, in any dialect: Scratch and legacy
/// `set` lines; RPC `authenticated`, `cloud.get` results and `cloud.set`; MultiStudio
/// `JOINED_ROOM` and `SET`.
fn updates_in_1234(json: &serde_json::Value) -> Vec<(&str, &serde_json::Value)> {
    if let Some(array) = json.as_array() {
        let action = array.first().and_then(|a| a.as_str());
        let payload = array.last().unwrap_or(json);
        return match action {
            Some("cloud.set") => pair(payload, "name").into_iter().collect(),
            Some("authenticated" | "success") => all(payload.get("variables")),
            _ => Vec::new(),
        };
    }
    let kind = json.get("kind").and_then(|k| k.as_str());
    let in_1234 = json.get("room").and_then(|r| r.as_str()) == Some("1234");
    match kind {
        Some("SET") if in_1234 => pair(json, "name").into_iter().collect(),
        Some("JOINED_ROOM") if in_1234 => all(json.get("variables")),
        Some("set") => pair(json, "variable").into_iter().collect(),
        _ => pair(json, "name").into_iter().collect(),
    }
}

/// One text message as the route's dialect writes it: RPC, one JSON array starting with a
/// string; MultiStudio (by path, or sniffed from a HELLO), one JSON object with a string
/// `kind`; Scratch and legacy, newline-joined `set` lines.
fn check_text(text: &str, route: &Route) {
    let whole = || -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON value ({e}): {text:?}"))
    };
    let studio_like = |json: &serde_json::Value| {
        json.get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k != "set")
    };
    match route {
        Route::World(_) | Route::InvalidWorld => {
            let json = whole();
            let array = json
                .as_array()
                .unwrap_or_else(|| panic!("not an array: {text}"));
            assert!(matches!(array.len(), 2 | 3), "{text}");
            assert!(array[0].is_string(), "{text}");
        }
        Route::Studio => {
            let json = whole();
            assert!(json.is_object() && studio_like(&json), "{text}");
        }
        Route::Sniff => {
            if !text.contains('\n') {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
                    if json.is_object() && studio_like(&json) {
                        return;
                    }
                }
            }
            for line in text.split('\n') {
                let json: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("sent a line that is not JSON ({e}): {line:?}"));
                let scratch = json.get("method").and_then(|m| m.as_str()) == Some("set");
                let legacy = json.get("kind").and_then(|m| m.as_str()) == Some("set");
                assert!(scratch || legacy, "not a set line: {line:?}");
            }
        }
    }
}

/// The server's bytes: one plain HTTP response, or a 101 and then WebSocket frames.
fn check_output(out: &[u8], route: &Route) {
    // Writes may have stopped anywhere (blocked, then the connection ended): check a prefix.
    if out.len() < 12 {
        assert!(
            b"HTTP/1.1 ".starts_with(&out[..out.len().min(9)]),
            "{out:?}"
        );
        return;
    }
    assert!(
        out.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(out)
    );
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let status = &out[9..out.len().min(12)];
    if status != b"101" {
        assert!(
            [
                &b"200"[..],
                b"400",
                b"403",
                b"404",
                b"405",
                b"408",
                b"426",
                b"431"
            ]
            .contains(&status),
            "status {:?}",
            String::from_utf8_lossy(status)
        );
        return;
    }
    let Some(mut at) = head_end else {
        return;
    };
    let mut closed = false;
    while at < out.len() {
        let Some(frame) = out.get(at..at + 2) else {
            return;
        };
        let (fin, rsv, opcode) = (frame[0] & 0x80 != 0, frame[0] & 0x70, frame[0] & 0x0f);
        assert!(fin && rsv == 0, "whole frames, no extensions");
        assert_eq!(frame[1] & 0x80, 0, "server frames are not masked");
        // RFC 6455 5.5.1 forbids data frames after a Close; a pong still queued by tungstenite
        // may follow it (tungstenite writes a pending pong after the frame it is asked to write).
        assert!(
            !closed || opcode == 0x9 || opcode == 0xA,
            "a data or second close frame after the close frame"
        );
        let (length, header) = match frame[1] & 0x7f {
            126 => match out.get(at + 2..at + 4) {
                Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return,
            },
            127 => match out.get(at + 2..at + 10) {
                Some(b) => (
                    usize::try_from(u64::from_be_bytes(b.try_into().expect("8 bytes")))
                        .expect("length fits"),
                    10,
                ),
                None => return,
            },
            n => (usize::from(n), 2),
        };
        let Some(payload) = out.get(at + header..at + header + length) else {
            return;
        };
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(payload).expect("text frames are UTF-8");
                check_text(text, route);
            }
            0x8 => {
                assert!(payload.len() != 1 && payload.len() <= 125);
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    // Ours are 1001, 1002, 1007, 1009 and 4000-4006; a client's own close is
                    // echoed, and tungstenite refuses codes that may not be sent (1012-1014,
                    // restart, try again later and bad gateway, may).
                    assert!(
                        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                        "close code {code}"
                    );
                    std::str::from_utf8(&payload[2..]).expect("close reasons are UTF-8");
                }
                closed = true;
            }
            0x9 | 0xA => assert!(payload.len() <= 125),
            other => panic!("unexpected opcode {other:#x}"),
        }
        at += header + length;
    }
}

fuzz_target!(|data: &[u8]| {
    run(data, false);
    run(data, true);
});
