//! Arbitrary bytes as WebSocket text through the dialect layer (`Session::on_text`): as the first
//! message of a fresh connection, and after a valid Scratch and a valid legacy handshake. Runs
//! against a strict server (numbers only, rename/delete off) and a permissive one (any string,
//! rename/delete on). Must never panic; limits hold, and every frame the engine builds from what
//! the input stored is one valid JSON `set` line per variable.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stratus::dialect::json::JsonParser;
use stratus::dialect::{encode_set, Outcome, Session, SessionContext};
use stratus::engine::{ClientId, Engine, Frame, Limits, ValueRef};
use stratus::policy::{Policy, UsernameFilter, DEFAULT_USERNAME_FILTER};

const SCRATCH_HELLO: &[u8] = br#"{"method":"handshake","user":"griffpatch","project_id":"1234"}"#;
const LEGACY_HELLO: &[u8] =
    "{\"kind\":\"handshake\",\"room\":\"1\",\"username\":\"u\",\"variables\":{\"☁ a\":\"1\"}}"
        .as_bytes();

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
            ..Policy::default()
        };
        let permissive = Policy {
            usernames,
            enable_rename: true,
            enable_delete: true,
            ..Policy::default()
        };
        [(strict, false), (permissive, true)]
    })
}

fn limits(allow_non_numeric: bool) -> Limits {
    Limits {
        max_rooms: 4,
        max_clients_per_room: 3,
        max_variables_per_room: 8,
        empty_room_ttl: Duration::from_secs(60),
        allow_non_numeric,
        max_state_bytes: 1 << 20,
    }
}

struct World<'p> {
    engine: Engine,
    policy: &'p Policy,
    parser: JsonParser,
    now: Instant,
}

impl World<'_> {
    fn send(&mut self, session: &mut Session, text: &[u8]) -> (Outcome, Option<Frame>) {
        let mut initial = None;
        let outcome = session.on_text(
            text,
            &mut SessionContext {
                engine: &mut self.engine,
                policy: self.policy,
                parser: &mut self.parser,
                now: self.now,
                initial: &mut initial,
            },
        );
        self.check(session, outcome, initial.as_ref());
        if matches!(outcome, Outcome::Close { .. }) {
            // What the connection does on any close.
            let room = session.room();
            let before = room.map(|r| self.engine.member_count(r));
            session.leave(&mut self.engine, self.now);
            if let (Some(room), Some(before)) = (room, before) {
                assert_eq!(self.engine.member_count(room), before - 1, "leave removes");
            }
            assert!(session.room().is_none());
        }
        (outcome, initial)
    }

    fn check(&self, session: &Session, outcome: Outcome, initial: Option<&Frame>) {
        let limits = self.engine.limits();
        assert!(self.engine.room_count() <= limits.max_rooms);
        if let Outcome::Close { code, reason } = outcome {
            assert!((4000..=4006).contains(&code), "close code {code}");
            assert!(
                !reason.is_empty() && reason.len() <= 123,
                "close reason fits a frame"
            );
        }
        if outcome == Outcome::Joined {
            assert!(session.room().is_some() && session.dialect().is_some());
        }
        if initial.is_some() {
            // A later object in the same frame may still close the connection.
            assert_ne!(
                outcome,
                Outcome::Continue,
                "a snapshot only comes with a join"
            );
            assert!(session.room().is_some());
        }
        let Some(room) = session.room() else {
            return;
        };
        assert!(self.engine.member_count(room) >= 1);
        assert!(self.engine.member_count(room) <= limits.max_clients_per_room);
        assert!(self.engine.variable_count(room) <= limits.max_variables_per_room);
        let room_id = self.engine.room_id(room).expect("a member's room exists");
        let user = session.user().expect("a member has a user");
        assert!(!user.is_empty() && user.len() <= 20);
        let variables = self.engine.variables(room_id);
        assert_eq!(variables.len(), self.engine.variable_count(room));
        for (name, value) in &variables {
            assert!(stratus::engine::value::is_valid_name(name), "{name:?}");
            assert!(
                stratus::engine::value::is_valid_value(*value, limits.allow_non_numeric),
                "{value:?}"
            );
        }
        if let Some(frame) = initial {
            let legacy = session.dialect() == Some(stratus::dialect::Dialect::Legacy);
            check_frame(frame, &variables, legacy);
        }
    }
}

/// `frame` is exactly `variables` (all of them, in order), one JSON line each.
fn check_frame(frame: &str, variables: &[(&str, ValueRef<'_>)], legacy: bool) {
    let lines: Vec<&str> = frame.split('\n').collect();
    assert_eq!(lines.len(), variables.len(), "{frame:?}");
    for (line, (name, value)) in lines.iter().zip(variables) {
        check_line(line, name, *value, legacy);
    }
}

fn check_line(line: &str, name: &str, value: ValueRef<'_>, legacy: bool) {
    let json: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("frame line is not JSON ({e}): {line:?}"));
    let object = json.as_object().expect("a set line is an object");
    assert_eq!(object.len(), 3, "{line:?}");
    let (kind, name_key) = if legacy {
        (("kind", "set"), "variable")
    } else {
        (("method", "set"), "name")
    };
    assert_eq!(object.get(kind.0).and_then(|v| v.as_str()), Some(kind.1));
    assert_eq!(object.get(name_key).and_then(|v| v.as_str()), Some(name));
    let sent = object.get("value").expect("a set line has a value");
    match value {
        ValueRef::Number(text) if !legacy => {
            assert!(sent.is_number(), "{line:?}");
            let suffix = format!(",\"value\":{text}}}");
            assert!(line.ends_with(&suffix), "number sent as typed: {line:?}");
        }
        _ => assert_eq!(sent.as_str(), Some(value.text()), "{line:?}"),
    }
    // Our own encoder produces the same line.
    let mut again = String::new();
    let format = stratus::engine::Format(u8::from(legacy));
    encode_set(format, name, value, &mut again);
    assert_eq!(again, line);
}

/// Flushes and checks every frame: each line is a current variable of the room.
fn flush(world: &mut World<'_>, observer: &Session, observer_legacy: bool) {
    let room = observer.room();
    let room_id = room
        .and_then(|r| world.engine.room_id(r))
        .map(str::to_owned);
    let mut frames = Vec::new();
    world.engine.flush(|client, frame| {
        frames.push((client, frame.clone()));
        true
    });
    assert!(!world.engine.has_pending(), "everything was delivered");
    let Some(room_id) = room_id else {
        return;
    };
    let variables = world.engine.variables(&room_id);
    for (client, frame) in &frames {
        if *client != observer.client() {
            continue;
        }
        for line in frame.split('\n') {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("frame line is not JSON ({e}): {line:?}"));
            let key = if observer_legacy { "variable" } else { "name" };
            let name = json.get(key).and_then(|n| n.as_str()).expect("named");
            let (_, value) = variables
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("sent a variable the room does not have: {line:?}"));
            check_line(line, name, *value, observer_legacy);
        }
    }
}

fn run(data: &[u8], policy: &Policy, permissive: bool) {
    let mut world = World {
        engine: Engine::new(limits(permissive), encode_set),
        policy,
        parser: JsonParser::default(),
        now: Instant::now(),
    };
    let now = world.now;

    // 1. A Scratch client after its handshake, with a second Scratch client watching the room.
    let mut watcher = Session::new(ClientId(10), policy, now);
    let mut scratch = Session::new(ClientId(1), policy, now);
    assert_eq!(world.send(&mut watcher, SCRATCH_HELLO).0, Outcome::Joined);
    assert_eq!(world.send(&mut scratch, SCRATCH_HELLO).0, Outcome::Joined);
    world.send(&mut scratch, data);
    flush(&mut world, &watcher, false);

    // 2. A legacy client after its handshake, watched by a legacy client in the same room.
    let mut legacy_watcher = Session::new(ClientId(20), policy, now);
    let mut legacy = Session::new(ClientId(2), policy, now);
    assert_eq!(
        world.send(&mut legacy_watcher, LEGACY_HELLO).0,
        Outcome::Joined
    );
    assert_eq!(world.send(&mut legacy, LEGACY_HELLO).0, Outcome::Joined);
    world.send(&mut legacy, data);
    flush(&mut world, &legacy_watcher, true);

    // 3. A fresh connection whose first message is the input, then the input again (a second
    //    handshake, or messages in whichever dialect it chose).
    let mut fresh = Session::new(ClientId(3), policy, now);
    let (first, _) = world.send(&mut fresh, data);
    if first == Outcome::Joined {
        world.send(&mut fresh, data);
        flush(&mut world, &watcher, false);
    }

    // 4. The input split into frames at every 0 byte: later pieces act on what earlier ones did.
    let mut pieces = Session::new(ClientId(4), policy, now);
    if data.contains(&0) {
        for piece in data.split(|&b| b == 0) {
            world.now += Duration::from_millis(1);
            if let (Outcome::Close { .. }, _) = world.send(&mut pieces, piece) {
                break;
            }
        }
    }

    for mut session in [watcher, scratch, legacy_watcher, legacy, fresh, pieces] {
        session.leave(&mut world.engine, world.now);
    }
    world.now += Duration::from_secs(61);
    world.engine.expire(world.now);
    assert_eq!(world.engine.room_count(), 0, "empty rooms expire");
    assert_eq!(world.engine.heap_bytes(), 0);
}

fuzz_target!(|data: &[u8]| {
    for (policy, permissive) in policies() {
        run(data, policy, *permissive);
    }
});
