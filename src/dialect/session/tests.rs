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

/// A policy with `bob` banned and project 43 blocked through the admin API.
fn admin_policy() -> Policy {
    use crate::admin::bans::{Ban, Banned, Block, Change};
    let mut policy = Policy::default();
    let ban = Ban {
        id: 1,
        who: Banned::User("BoB".into()),
        until_ms: u64::MAX,
        reason: String::new(),
        by: "op".into(),
    };
    let block = Block {
        project: "43".into(),
        until_ms: None,
        by: "op".into(),
    };
    for change in [Change::Ban(ban), Change::Block(block)] {
        policy.bans.apply(change).expect("room in the book");
    }
    policy
}

#[test]
fn a_banned_user_is_refused_in_each_dialects_denied_form() {
    let mut w = World::with_policy(admin_policy());
    let scratch = r#"{"method":"handshake","project_id":"42","user":"bob"}"#;
    let legacy = r#"{"kind":"handshake","room":"42","username":"Bob","variables":{}}"#;
    for hello in [scratch, legacy] {
        let mut s = w.session(1);
        let (outcome, _) = w.send(&mut s, hello);
        assert_eq!(
            outcome,
            Outcome::Close(Reason::Username(crate::policy::UsernameProblem::Banned))
        );
        assert_eq!(
            s.farewell(Reason::Username(crate::policy::UsernameProblem::Banned)),
            4002
        );
    }
    let mut s = Session::new(
        ClientId(2),
        Route::World("42".into()),
        &w.policy,
        Instant::now(),
    );
    let (outcome, _) = w.send(&mut s, r#"["authenticate",1,{"username":"BOB"}]"#);
    let Outcome::Close(reason) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(s.farewell(reason), 4002);
    let told: Vec<String> = s
        .outbox()
        .messages()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect();
    assert_eq!(told, [r#"["error",{"code":"auth.denied"}]"#]);
    let mut s = w.session(3);
    let (outcome, _) = w.send(&mut s, r#"{"kind":"HELLO","username":"bob"}"#);
    let Outcome::Close(reason) = outcome else {
        panic!("{outcome:?}")
    };
    s.farewell(reason);
    let told: Vec<String> = s
        .outbox()
        .messages()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect();
    assert!(
        told.iter()
            .any(|m| m.contains(r#""kind":"USER""#) && m.contains("username_banned")),
        "{told:?}"
    );
    assert!(w.engine.variables("42").is_empty() && w.engine.room_key("42").is_none());
    let mut s = w.session(4);
    let alice = r#"{"method":"handshake","project_id":"42","user":"alice"}"#;
    assert_eq!(
        w.send(&mut s, alice).0,
        Outcome::Joined,
        "others still join"
    );
}

#[test]
fn a_project_blocked_at_runtime_is_refused_like_a_configured_block() {
    let mut w = World::with_policy(admin_policy());
    let mut s = w.session(1);
    let hello = r#"{"method":"handshake","project_id":"43","user":"alice"}"#;
    assert_eq!(code(w.send(&mut s, hello).0), Some(4004));
    let mut s = Session::new(
        ClientId(2),
        Route::World("43".into()),
        &w.policy,
        Instant::now(),
    );
    let mut ctx = SessionContext {
        engine: &mut w.engine,
        policy: &w.policy,
        parser: &mut w.parser,
        users: &mut w.users,
        reconnects: &mut w.reconnects,
        now: Instant::now(),
    };
    assert_eq!(s.on_open(&mut ctx), Outcome::Close(Reason::RoomRefused));
}
