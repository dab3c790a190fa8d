use std::time::Instant;

use super::*;
use crate::engine::{Engine, Limits, ValueRef};
use crate::policy::UsernameFilter;

struct World {
    engine: Engine,
    policy: Policy,
    parser: JsonParser,
    users: Users,
    reconnects: Reconnects,
}

impl World {
    fn new() -> Self {
        World::with_policy(Policy {
            usernames: UsernameFilter::parse(crate::policy::DEFAULT_USERNAME_FILTER)
                .expect("default filter"),
            ..Policy::default()
        })
    }

    fn with_policy(policy: Policy) -> Self {
        World {
            engine: Engine::new(Limits::default(), super::super::encode_set),
            policy,
            parser: JsonParser::default(),
            users: Users::new(0),
            reconnects: Reconnects::new(std::time::Duration::from_secs(120), 100),
        }
    }

    fn session(&self, client: u64) -> Session {
        Session::new(ClientId(client), Route::Sniff, &self.policy, Instant::now())
    }

    /// Sends `text` and returns the outcome and the first message for the client, if any.
    fn send(&mut self, session: &mut Session, text: &str) -> (Outcome, Option<String>) {
        let (outcome, messages) = self.send_all(session, text);
        (outcome, messages.into_iter().next())
    }

    /// Sends `text` and returns the outcome and every message for the client.
    fn send_all(&mut self, session: &mut Session, text: &str) -> (Outcome, Vec<String>) {
        let mut ctx = SessionContext {
            engine: &mut self.engine,
            policy: &self.policy,
            parser: &mut self.parser,
            users: &mut self.users,
            reconnects: &mut self.reconnects,
            now: Instant::now(),
        };
        let outcome = session.on_text(text.as_bytes(), &mut ctx);
        let messages = session
            .outbox()
            .messages()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect();
        session.outbox().clear();
        (outcome, messages)
    }

    fn flush(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        self.engine.flush(|_, client, frame| {
            out.push((client.0, frame.to_string()));
            true
        });
        out.sort();
        out
    }
}

fn code(outcome: Outcome) -> Option<u16> {
    match outcome {
        Outcome::Close(reason) => Some(reason.close_code()),
        _ => None,
    }
}

const HELLO: &str = r#"{"method":"handshake","project_id":"42","user":"alice"}"#;

#[test]
fn scratch_handshake_joins_and_a_set_reaches_the_other_client_as_typed() {
    let mut w = World::new();
    let mut a = w.session(1);
    let mut b = w.session(2);
    assert_eq!(w.send(&mut a, &format!("{HELLO}\n")).0, Outcome::Joined);
    let bob = r#"{"user":"bob","project_id":42,"method":"handshake"}"#;
    assert_eq!(w.send(&mut b, bob).0, Outcome::Joined);
    assert_eq!(
        a.room(),
        b.room(),
        "number and string project ids name the same room"
    );
    let set = r#"{"method":"set","name":"☁ n","value":1000,"project_id":"42","user":"alice"}"#;
    assert_eq!(w.send(&mut a, set).0, Outcome::Continue);
    assert_eq!(
        w.flush(),
        vec![(2, r#"{"method":"set","name":"☁ n","value":1000}"#.into())]
    );
}

#[test]
fn several_objects_in_one_frame_are_handled_in_order() {
    let mut w = World::new();
    let mut a = w.session(1);
    let frame = format!(
        "{HELLO}\n{}\n{}\n\n",
        r#"{"method": "set", "name": "\u2601 a", "value": "1"}"#,
        r#"{"method": "set", "name": "\u2601 a", "value": "2"}"#
    );
    assert_eq!(w.send(&mut a, &frame).0, Outcome::Joined);
    assert_eq!(w.engine.value("42", "☁ a"), Some(ValueRef::Text("2")));
}

#[test]
fn joining_a_room_with_variables_yields_them_at_once() {
    let mut w = World::new();
    let mut a = w.session(1);
    w.send(&mut a, HELLO);
    w.send(&mut a, r#"{"method":"set","name":"☁ a","value":"5"}"#);
    let mut b = w.session(2);
    let (outcome, initial) = w.send(&mut b, HELLO);
    assert_eq!(outcome, Outcome::Joined);
    assert_eq!(
        initial.as_deref(),
        Some(r#"{"method":"set","name":"☁ a","value":"5"}"#)
    );
}

#[test]
fn handshake_violations_close_with_the_documented_codes() {
    let cases = [
        (r#"{"method":"set","name":"☁ a","value":"1"}"#, 4000),
        (r#"{"method":"handshake","user":"alice"}"#, 4000),
        (
            r#"{"method":"handshake","project_id":"","user":"alice"}"#,
            4000,
        ),
        (
            r#"{"method":"handshake","project_id":true,"user":"alice"}"#,
            4000,
        ),
        (
            r#"{"method":"handshake","project_id":"1","user":"a b"}"#,
            4002,
        ),
        (r#"{"method":"handshake","project_id":"1"}"#, 4002),
        (
            r#"{"method":"handshake","project_id":"1","user":"ScratchCat"}"#,
            4002,
        ),
        (
            r#"{"method":"handshake","project_id":"1","user":"abcdefghijklmnopqrstu"}"#,
            4002,
        ),
        ("[1]", 4000),
        ("not json", 4000),
        (r#"{"user":"alice"}"#, 4000),
    ];
    for (text, expected) in cases {
        let mut w = World::new();
        let mut s = w.session(1);
        assert_eq!(code(w.send(&mut s, text).0), Some(expected), "{text}");
    }
    let long_id = format!(
        r#"{{"method":"handshake","project_id":"{}","user":"a"}}"#,
        "1".repeat(1000)
    );
    let mut w = World::new();
    let mut s = w.session(1);
    assert_eq!(code(w.send(&mut s, &long_id).0), Some(4000));
}

#[test]
fn blocked_projects_close_with_4004() {
    let mut policy = Policy::default();
    policy.blocked_projects.insert("42".into());
    let mut w = World::with_policy(policy);
    let mut s = w.session(1);
    assert_eq!(code(w.send(&mut s, HELLO).0), Some(4004));
}

#[test]
fn after_the_handshake_protocol_errors_close_and_invalid_sets_are_ignored() {
    let mut w = World::new();
    let mut s = w.session(1);
    w.send(&mut s, HELLO);
    for ignored in [
        r#"{"method":"set","name":"no prefix","value":"1"}"#,
        r#"{"method":"set","name":"☁ a","value":"abc"}"#,
        r#"{"method":"set","name":"☁ a","value":null}"#,
        r#"{"method":"set","name":"☁ a"}"#,
        r#"{"method":"rename","name":"☁ a","new_name":"☁ b"}"#,
        r#"{"method":"delete","name":"☁ a"}"#,
    ] {
        assert_eq!(w.send(&mut s, ignored).0, Outcome::Continue, "{ignored}");
    }
    assert!(w.engine.variables("42").is_empty());
    let infinite = r#"{"method":"set","name":"☁ a","value":1e400}"#;
    assert_eq!(w.send(&mut s, infinite).0, Outcome::Continue);
    let huge = r#"{"method":"set","name":"☁ a","value":123456789012345678901234567890}"#;
    assert_eq!(w.send(&mut s, huge).0, Outcome::Continue);
    assert_eq!(
        w.engine.value("42", "☁ a"),
        Some(ValueRef::Number("1.2345678901234568e29"))
    );
    for closing in [HELLO, r#"{"method":"nope"}"#, r#"{"name":"☁ a"}"#, "{", "1"] {
        let mut w = World::new();
        let mut s = w.session(1);
        w.send(&mut s, HELLO);
        assert_eq!(code(w.send(&mut s, closing).0), Some(4000), "{closing}");
    }
}

#[test]
fn rename_and_delete_work_when_enabled() {
    let mut w = World::new();
    w.engine = Engine::new(
        Limits {
            enable_rename: true,
            enable_delete: true,
            ..Limits::default()
        },
        super::super::encode_set,
    );
    let mut s = w.session(1);
    w.send(&mut s, HELLO);
    w.send(&mut s, r#"{"method":"set","name":"☁ a","value":"5"}"#);
    let rename = r#"{"method":"rename","name":"☁ a","new_name":"☁ b"}"#;
    assert_eq!(w.send(&mut s, rename).0, Outcome::Continue);
    assert_eq!(w.engine.value("42", "☁ b"), Some(ValueRef::Text("5")));
    assert_eq!(code(w.send(&mut s, rename).0), Some(4000), "old name gone");
    let delete = r#"{"method":"delete","name":"☁ b"}"#;
    assert_eq!(w.send(&mut s, delete).0, Outcome::Continue);
    assert_eq!(code(w.send(&mut s, delete).0), Some(4000));
}

#[test]
fn the_message_rate_limit_closes_with_4004() {
    let mut w = World::with_policy(Policy {
        message_rate: 10.0,
        message_burst: 5.0,
        ..Policy::default()
    });
    let mut s = w.session(1);
    w.send(&mut s, HELLO);
    let set = r#"{"method":"set","name":"☁ a","value":"1"}"#;
    let four = [set; 4].join("\n");
    assert_eq!(w.send(&mut s, &four).0, Outcome::Continue);
    assert_eq!(code(w.send(&mut s, set).0), Some(4004));
}

#[test]
fn legacy_and_scratch_clients_share_a_room() {
    let mut w = World::new();
    let mut legacy = w.session(1);
    let hello = r#"{"kind":"handshake","room":"42","username":"old","variables":{"☁ a":"1"}}"#;
    assert_eq!(w.send(&mut legacy, hello).0, Outcome::Joined);
    let mut modern = w.session(2);
    let (outcome, initial) = w.send(&mut modern, HELLO);
    assert_eq!(outcome, Outcome::Joined);
    assert_eq!(
        initial.as_deref(),
        Some(r#"{"method":"set","name":"☁ a","value":"1"}"#)
    );
    w.send(&mut modern, r#"{"method":"set","name":"☁ a","value":7}"#);
    assert_eq!(
        w.flush(),
        vec![(1, r#"{"kind":"set","variable":"☁ a","value":"7"}"#.into())]
    );
    w.send(
        &mut legacy,
        r#"{"kind":"set","variable":"☁ a","value":"8"}"#,
    );
    assert_eq!(
        w.flush(),
        vec![(2, r#"{"method":"set","name":"☁ a","value":"8"}"#.into())]
    );
}

#[test]
fn legacy_violations() {
    let hello = r#"{"kind":"handshake","room":"42","username":"old","variables":{"☁ a":"1"}}"#;
    let cases = [
        (r#"{"kind":"handshake","room":"42","username":"old"}"#, 4000),
        (r#"{"kind":"set","variable":"☁ a","value":"1"}"#, 4000),
        (
            r#"{"kind":"handshake","room":"42","username":"old","variables":{"☁ a":1}}"#,
            4000,
        ),
    ];
    for (text, expected) in cases {
        let mut w = World::new();
        let mut s = w.session(1);
        assert_eq!(code(w.send(&mut s, text).0), Some(expected), "{text}");
    }
    for (text, expected) in [
        (r#"{"kind":"set","variable":"☁ missing","value":"1"}"#, 4000),
        (r#"{"kind":"set","variable":"☁ a","value":1}"#, 4000),
        (r#"{"kind":"nope"}"#, 4000),
        (hello, 4000),
    ] {
        let mut w = World::new();
        let mut s = w.session(1);
        w.send(&mut s, hello);
        assert_eq!(code(w.send(&mut s, text).0), Some(expected), "{text}");
    }
    let mut w = World::new();
    let mut first = w.session(1);
    w.send(&mut first, hello);
    let mut other = w.session(2);
    let mismatch = r#"{"kind":"handshake","room":"42","username":"new","variables":{"☁ b":"1"}}"#;
    assert_eq!(code(w.send(&mut other, mismatch).0), Some(4001));
}
