//! Arbitrary bytes as WebSocket text through the dialect layer (`Session::on_text`), in every
//! dialect: as the first message of a fresh connection; after a valid Scratch and a valid
//! legacy handshake; on `/ws/world/1` (array-RPC) before and after authenticating; and as
//! MultiStudio, both on `/ws/multistudio` and sniffed from a HELLO on any path, before and
//! after the HELLO. Runs against a strict server (numbers only, rename/delete off) and a
//! permissive one (any string, rename/delete on). Must never panic; limits hold; close codes
//! are documented ones; every outbox message is valid JSON of its dialect's shape (Scratch and
//! legacy snapshots: one `set` line per variable; RPC: an array, carrying the request's id
//! exactly when the request had three elements; MultiStudio: an object with a string `kind`,
//! echoing no `rid` but the request's); and every fan-out line is the room's current value,
//! encoded for the member's dialect.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stratus::dialect::json::{JsonParser, MAX_ECHO_DEPTH};
use stratus::dialect::{
    encode_set, Dialect, Outcome, Reason, Reconnects, Route, Session, SessionContext, Users,
};
use stratus::engine::{ClientId, Engine, Format, Limits, SetLine, ValueRef};
use stratus::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};

const SCRATCH_HELLO: &[u8] = br#"{"method":"handshake","user":"griffpatch","project_id":"1234"}"#;
const LEGACY_HELLO: &[u8] =
    "{\"kind\":\"handshake\",\"room\":\"1\",\"username\":\"u\",\"variables\":{\"☁ a\":\"1\"}}"
        .as_bytes();
const RPC_AUTH: &[u8] = br#"["authenticate",1,{"username":"rpc"}]"#;
const STUDIO_HELLO: &[u8] = br#"{"kind":"HELLO","username":"studio","rid":"h"}"#;
const STUDIO_JOIN: &[u8] = br#"{"kind":"JOIN_ROOM","room":"1","rid":"j"}"#;

/// Strict and permissive servers; the username filter is compiled once.
fn policies() -> &'static [(Policy, bool); 2] {
    static POLICIES: OnceLock<[(Policy, bool); 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let usernames =
            UsernameFilter::parse(DEFAULT_USERNAME_FILTER).expect("the built-in filter parses");
        let strict = Policy {
            usernames: usernames.clone(),
            message_rate: 500.0,
            message_burst: 1000.0,
            max_rooms_per_connection: 2,
            ..Policy::default()
        };
        let permissive = Policy {
            usernames,
            max_rooms_per_connection: 3,
            ..Policy::default()
        };
        [(strict, false), (permissive, true)]
    })
}

/// The permissive world also accepts text values, rename and delete.
fn limits(permissive: bool) -> Limits {
    Limits {
        max_rooms: 4,
        max_clients_per_room: 3,
        max_variables_per_room: 8,
        empty_room_ttl: Duration::from_secs(60),
        allow_non_numeric: permissive,
        max_value_chars: stratus::engine::value::MAX_VALUE_CHARS,
        enable_rename: permissive,
        enable_delete: permissive,
        max_state_bytes: 1 << 20,
    }
}

fn format(dialect: Dialect) -> Format {
    Format(dialect as u8)
}

struct World<'p> {
    engine: Engine,
    policy: &'p Policy,
    parser: JsonParser,
    users: Users,
    reconnects: Reconnects,
    now: Instant,
}

impl<'p> World<'p> {
    fn new(policy: &'p Policy, permissive: bool) -> Self {
        World {
            engine: Engine::new(limits(permissive), encode_set),
            policy,
            parser: JsonParser::default(),
            users: Users::new(2),
            reconnects: Reconnects::new(Duration::from_secs(60), 8),
            now: Instant::now(),
        }
    }

    fn ctx(&mut self) -> SessionContext<'_> {
        SessionContext {
            engine: &mut self.engine,
            policy: self.policy,
            parser: &mut self.parser,
            users: &mut self.users,
            reconnects: &mut self.reconnects,
            now: self.now,
        }
    }

    fn open(&mut self, client: u64, route: Route) -> Session {
        let mut session = Session::new(ClientId(client), route, self.policy, self.now);
        let outcome = session.on_open(&mut self.ctx());
        assert_eq!(outcome, Outcome::Continue, "room 1 is a valid room");
        session
    }

    /// Sends one message, checks what the session did and said, and empties its outbox; on a
    /// close, does what the connection does (farewell, leave).
    fn send(&mut self, session: &mut Session, text: &[u8]) -> Outcome {
        let outcome = session.on_text(text, &mut self.ctx());
        self.check(session, outcome, text);
        if let Outcome::Close(reason) = outcome {
            self.close(session, reason);
        }
        outcome
    }

    fn close(&mut self, session: &mut Session, reason: Reason) {
        let code = session.farewell(reason);
        assert!(
            (4000..=4006).contains(&code) || code == 1011,
            "close code {code} for {reason:?}"
        );
        assert_eq!(code, reason.close_code());
        let text = reason.text();
        assert!(
            !text.is_empty() && text.len() <= 123,
            "close reason fits a frame"
        );
        // The farewell's last message, if any, is in the dialect's form.
        check_outbox_shapes(session);
        session.outbox().clear();
        let room = session.room();
        let before = room.map(|r| self.engine.member_count(r));
        session.leave(&mut self.ctx(), false, None);
        if let (Some(room), Some(before)) = (room, before) {
            assert_eq!(self.engine.member_count(room), before - 1, "leave removes");
        }
        assert!(session.room().is_none());
    }

    fn check(&self, session: &mut Session, outcome: Outcome, text: &[u8]) {
        let limits = self.engine.limits();
        assert!(self.engine.room_count() <= limits.max_rooms);
        if outcome == Outcome::Joined {
            assert!(session.dialect().is_some());
            if session.dialect() != Some(Dialect::Studio) {
                assert!(session.room().is_some());
            }
        }
        check_outbox_shapes(session);
        let dialect = session.dialect();
        match dialect {
            Some(Dialect::Rpc) if !matches!(outcome, Outcome::Close(_)) => {
                check_rpc_reply(session, text)
            }
            Some(Dialect::Studio) => check_studio_rids(session, text),
            _ => {}
        }
        let one_object = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .count()
            == 1;
        if let Some(room) = session.room() {
            assert!(self.engine.member_count(room) >= 1);
            assert!(self.engine.member_count(room) <= limits.max_clients_per_room);
            assert!(self.engine.variable_count(room) <= limits.max_variables_per_room);
            let room_id = self.engine.room_id(room).expect("a member's room exists");
            let user = session.user().expect("a member has a user");
            assert!(!user.is_empty());
            if matches!(dialect, Some(Dialect::Scratch | Dialect::Legacy)) {
                assert!(user.len() <= 20);
            }
            let variables = self.engine.variables(room_id);
            assert_eq!(variables.len(), self.engine.variable_count(room));
            for (name, value) in &variables {
                assert!(stratus::engine::value::is_valid_name(name), "{name:?}");
                assert!(
                    stratus::engine::value::is_valid_value(*value, limits.allow_non_numeric),
                    "{value:?}"
                );
            }
            if let Some(d @ (Dialect::Scratch | Dialect::Legacy)) = dialect {
                let snapshots: Vec<String> = session
                    .outbox()
                    .messages()
                    .map(|m| String::from_utf8(m.to_vec()).expect("snapshots are text"))
                    .collect();
                // A later object in the same message may have changed the room since the
                // snapshot: the exact contents are only known for a lone handshake.
                assert!(snapshots.len() <= 1, "one snapshot per join");
                for snapshot in &snapshots {
                    if one_object {
                        check_frame(snapshot, room_id, &variables, d);
                    }
                }
            }
        }
        if matches!(dialect, None | Some(Dialect::Scratch | Dialect::Legacy)) {
            let has_snapshot = !session.outbox().is_empty();
            if has_snapshot {
                assert_ne!(
                    outcome,
                    Outcome::Continue,
                    "a snapshot only comes with a join"
                );
            }
        }
        session.outbox().clear();
    }
}

/// Every outbox message is JSON in the session's dialect's shape.
fn check_outbox_shapes(session: &mut Session) {
    let dialect = session.dialect();
    for message in session.outbox().messages() {
        let text = std::str::from_utf8(&message).expect("messages are text");
        match dialect {
            Some(Dialect::Rpc) => {
                let json = parse(text);
                let array = json
                    .as_array()
                    .unwrap_or_else(|| panic!("not an array: {text}"));
                assert!(matches!(array.len(), 2 | 3), "{text}");
                assert!(array[0].is_string(), "{text}");
            }
            Some(Dialect::Studio) => {
                let json = parse(text);
                let object = json
                    .as_object()
                    .unwrap_or_else(|| panic!("not an object: {text}"));
                assert!(object.get("kind").is_some_and(|k| k.is_string()), "{text}");
                if let Some(rid) = object.get("rid") {
                    assert!(rid.is_string(), "{text}");
                }
            }
            Some(Dialect::Scratch | Dialect::Legacy) | None => {
                for line in text.split('\n') {
                    assert!(parse(line).is_object(), "{line}");
                }
            }
        }
    }
}

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// Values on the longest path from `value` to a leaf, as `push_json` counts its depth.
fn echo_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(echo_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(echo_depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// Equal JSON, numbers compared by value (the echo may write `1.0` as `1`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        // simd-json reads an integer beyond 64 bits as a float that may be one unit in the
        // last place off serde_json's correctly rounded one (seen: 2555…5 with 39 digits); the
        // server echoes simd-json's reading, so such numbers match within that unit.
        (J::Number(x), J::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(a), Some(b)) => {
                        a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
                    }
                    _ => false,
                }
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// An RPC request gets exactly one reply, which carries the request's id exactly when the
/// request had three elements. Checked when serde_json reads the request as simd-json does.
fn check_rpc_reply(session: &mut Session, text: &[u8]) {
    let replies: Vec<serde_json::Value> = session
        .outbox()
        .messages()
        .map(|m| parse(std::str::from_utf8(&m).expect("text")))
        .collect();
    assert_eq!(replies.len(), 1, "one reply per request: {replies:?}");
    let reply = replies[0].as_array().expect("checked array");
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    let Some(request) = request.as_array() else {
        return;
    };
    if request.len() == 3 {
        let id = &request[1];
        assert_eq!(
            reply.len(),
            3,
            "a 3-element request's reply has its id: {reply:?}"
        );
        // An id nested deeper than the server echoes comes back as `null`.
        let echoed = if echo_depth(id) > MAX_ECHO_DEPTH {
            serde_json::Value::Null
        } else {
            id.clone()
        };
        assert!(
            same_json(&reply[1], &echoed),
            "reply id {:?} for request id {id:?}",
            reply[1]
        );
    } else {
        assert_eq!(
            reply.len(),
            2,
            "a reply without id: {reply:?} to {request:?}"
        );
    }
}

/// A MultiStudio reply echoes no `rid` but the request's (a resumed session's rooms carry none).
fn check_studio_rids(session: &mut Session, text: &[u8]) {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    // With duplicate keys, serde_json and simd-json may read different rids.
    if text.windows(5).filter(|w| w == b"\"rid\"").count() > 1 || text.contains(&b'\\') {
        return;
    }
    let rid = request
        .get("rid")
        .and_then(|r| r.as_str())
        .filter(|r| r.chars().count() <= 128);
    for message in session.outbox().messages() {
        let reply = parse(std::str::from_utf8(&message).expect("text"));
        if let Some(echoed) = reply.get("rid") {
            assert_eq!(echoed.as_str(), rid, "{reply} for {request}");
        }
    }
}

/// `frame` is exactly `variables` (all of them, in order), one JSON line each.
fn check_frame(frame: &str, room: &str, variables: &[(&str, ValueRef<'_>)], dialect: Dialect) {
    let lines: Vec<&str> = frame.split('\n').collect();
    assert_eq!(lines.len(), variables.len(), "{frame:?}");
    for (line, (name, value)) in lines.iter().zip(variables) {
        check_line(line, room, name, *value, dialect);
    }
}

/// One `set` line: valid JSON in the dialect's shape, naming `name` with `value`.
fn check_line(line: &str, room: &str, name: &str, value: ValueRef<'_>, dialect: Dialect) {
    let json = parse(line);
    let (object, kind) = match dialect {
        Dialect::Scratch => (json.as_object(), ("method", "set")),
        Dialect::Legacy => (json.as_object(), ("kind", "set")),
        Dialect::Studio => (json.as_object(), ("kind", "SET")),
        Dialect::Rpc => {
            let array = json.as_array().expect("an RPC set is an array");
            assert_eq!(array.len(), 2, "{line:?}");
            assert_eq!(array[0].as_str(), Some("cloud.set"));
            (array[1].as_object(), ("", ""))
        }
    };
    let object = object.unwrap_or_else(|| panic!("no object: {line:?}"));
    if !kind.0.is_empty() {
        assert_eq!(object.get(kind.0).and_then(|v| v.as_str()), Some(kind.1));
    }
    if dialect == Dialect::Studio {
        assert_eq!(object.get("room").and_then(|v| v.as_str()), Some(room));
    }
    let name_key = if dialect == Dialect::Legacy {
        "variable"
    } else {
        "name"
    };
    assert_eq!(object.get(name_key).and_then(|v| v.as_str()), Some(name));
    let sent = object.get("value").expect("a set line has a value");
    match value {
        ValueRef::Number(text) if dialect != Dialect::Legacy => {
            assert!(sent.is_number(), "{line:?}");
            assert!(
                line.contains(&format!("\"value\":{text}}}")),
                "number sent as typed: {line:?}"
            );
        }
        _ => assert_eq!(sent.as_str(), Some(value.text()), "{line:?}"),
    }
    // Our own encoder produces the same line.
    let mut again = String::new();
    let set = SetLine {
        name,
        value,
        user: "",
        changed_ms: 0,
    };
    encode_set(format(dialect), room, set, &mut again);
    assert_eq!(again, line);
}

/// Flushes and checks every line sent to the observers: each is a current variable of the
/// room the frame is for, encoded for the observer's dialect.
fn flush(world: &mut World<'_>, observers: &[(ClientId, Dialect)]) {
    let mut frames = Vec::new();
    world.engine.flush(|room, client, frame| {
        frames.push((room, client, frame.clone()));
        true
    });
    assert!(!world.engine.has_pending(), "everything was delivered");
    for (room, client, frame) in &frames {
        let Some(&(_, dialect)) = observers.iter().find(|(c, _)| c == client) else {
            continue;
        };
        let room_id = world.engine.room_id(*room).expect("a frame's room exists");
        let variables = world.engine.variables(room_id);
        for line in frame.split('\n') {
            let json = parse(line);
            let named = if dialect == Dialect::Rpc {
                json.get(1).unwrap_or(&json)
            } else {
                &json
            };
            let key = if dialect == Dialect::Legacy {
                "variable"
            } else {
                "name"
            };
            let name = named.get(key).and_then(|n| n.as_str()).expect("named");
            let (_, value) = variables
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("sent a variable the room does not have: {line:?}"));
            check_line(line, room_id, name, *value, dialect);
        }
    }
}

/// The input split into frames at every 0 byte (the whole input when it has none), sent until
/// the session closes: later pieces act on what earlier ones did.
fn send_pieces(world: &mut World<'_>, session: &mut Session, data: &[u8]) {
    for piece in data.split(|&b| b == 0) {
        world.now += Duration::from_millis(1);
        if let Outcome::Close(_) = world.send(session, piece) {
            break;
        }
    }
}

fn finish(mut world: World<'_>, sessions: Vec<Session>) {
    for mut session in sessions {
        session.leave(&mut world.ctx(), false, None);
    }
    assert_eq!(world.reconnects.parked(), 0, "nothing was parked");
    world.now += Duration::from_secs(61);
    world.engine.expire(world.now);
    assert_eq!(world.engine.room_count(), 0, "empty rooms expire");
    assert_eq!(world.engine.heap_bytes(), 0);
}

/// Scratch and legacy sessions, and a fresh connection sniffing its dialect (Scratch, legacy
/// or a MultiStudio HELLO) from the input.
fn run_sniffed(data: &[u8], policy: &Policy, permissive: bool) {
    let mut world = World::new(policy, permissive);

    // 1. A Scratch client after its handshake, with a second Scratch client watching the room.
    let mut watcher = world.open(10, Route::Sniff);
    let mut scratch = world.open(1, Route::Sniff);
    assert_eq!(world.send(&mut watcher, SCRATCH_HELLO), Outcome::Joined);
    assert_eq!(world.send(&mut scratch, SCRATCH_HELLO), Outcome::Joined);
    world.send(&mut scratch, data);
    flush(&mut world, &[(ClientId(10), Dialect::Scratch)]);

    // 2. A legacy client after its handshake, watched by a legacy client in the same room.
    let mut legacy_watcher = world.open(20, Route::Sniff);
    let mut legacy = world.open(2, Route::Sniff);
    assert_eq!(
        world.send(&mut legacy_watcher, LEGACY_HELLO),
        Outcome::Joined
    );
    assert_eq!(world.send(&mut legacy, LEGACY_HELLO), Outcome::Joined);
    world.send(&mut legacy, data);
    flush(&mut world, &[(ClientId(20), Dialect::Legacy)]);

    // 3. A fresh connection whose first message is the input, then the input again (a second
    //    handshake, or messages in whichever dialect it chose).
    let mut fresh = world.open(3, Route::Sniff);
    if world.send(&mut fresh, data) == Outcome::Joined {
        world.send(&mut fresh, data);
        flush(
            &mut world,
            &[
                (ClientId(10), Dialect::Scratch),
                (ClientId(20), Dialect::Legacy),
            ],
        );
    }

    // 4. The input split into frames at every 0 byte.
    let mut pieces = world.open(4, Route::Sniff);
    if data.contains(&0) {
        send_pieces(&mut world, &mut pieces, data);
    }
    let observers = [
        (ClientId(10), Dialect::Scratch),
        (ClientId(20), Dialect::Legacy),
    ];
    flush(&mut world, &observers);

    finish(
        world,
        vec![watcher, scratch, legacy_watcher, legacy, fresh, pieces],
    );
}

/// Array-RPC sessions on `/ws/world/1`: one fed the input before authenticating, one after,
/// with an authenticated member of room 1 watching.
fn run_rpc(data: &[u8], policy: &Policy, permissive: bool) {
    let mut world = World::new(policy, permissive);
    let mut watcher = world.open(30, Route::World("1".into()));
    assert_eq!(world.send(&mut watcher, RPC_AUTH), Outcome::Joined);

    let mut member = world.open(31, Route::World("1".into()));
    assert_eq!(world.send(&mut member, RPC_AUTH), Outcome::Joined);
    world.send(&mut member, data);
    flush(&mut world, &[(ClientId(30), Dialect::Rpc)]);

    let mut fresh = world.open(32, Route::World("1".into()));
    send_pieces(&mut world, &mut fresh, data);
    flush(&mut world, &[(ClientId(30), Dialect::Rpc)]);

    finish(world, vec![watcher, member, fresh]);
}

/// MultiStudio sessions: on `/ws/multistudio` before and after HELLO (and joining room 1), and
/// sniffed from a HELLO on another path, with a member of room 1 watching.
fn run_studio(data: &[u8], policy: &Policy, permissive: bool) {
    let mut world = World::new(policy, permissive);
    let mut watcher = world.open(40, Route::Studio);
    assert_eq!(world.send(&mut watcher, STUDIO_HELLO), Outcome::Joined);
    assert_eq!(world.send(&mut watcher, STUDIO_JOIN), Outcome::Continue);
    assert!(watcher.room().is_some(), "the watcher is in room 1");

    let mut member = world.open(41, Route::Studio);
    assert_eq!(world.send(&mut member, STUDIO_HELLO), Outcome::Joined);
    assert_eq!(world.send(&mut member, STUDIO_JOIN), Outcome::Continue);
    send_pieces(&mut world, &mut member, data);
    flush(&mut world, &[(ClientId(40), Dialect::Studio)]);

    let mut fresh = world.open(42, Route::Studio);
    send_pieces(&mut world, &mut fresh, data);

    let mut sniffed = world.open(43, Route::Sniff);
    assert_eq!(world.send(&mut sniffed, STUDIO_HELLO), Outcome::Joined);
    assert_eq!(sniffed.dialect(), Some(Dialect::Studio));
    world.send(&mut sniffed, data);
    flush(&mut world, &[(ClientId(40), Dialect::Studio)]);

    finish(world, vec![watcher, member, fresh, sniffed]);
}

fuzz_target!(|data: &[u8]| {
    for (policy, permissive) in policies() {
        run_sniffed(data, policy, *permissive);
        run_rpc(data, policy, *permissive);
        run_studio(data, policy, *permissive);
    }
});
