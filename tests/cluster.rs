//! Several nodes sharing rooms through Redis (`--cluster`), through real sockets: two stratus
//! processes and one `redis-server` per test, clients of every dialect on both nodes.
//!
//! Each test starts its own Redis on a free loopback port (tests/common/redis.rs) and is
//! skipped when `redis-server` is missing, unless `STRATUS_REQUIRE_REDIS=1` (set by
//! `.ci/run`). Nothing here asserts timing: tests wait (with patience) for values to arrive and
//! then assert what every client holds and what Redis holds.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// How long a node may take to notice Redis came back (it reconnects with backoff) and to
/// re-sync its rooms, or to learn the cluster's member counts again.
const RECOVERY: Duration = Duration::from_secs(30);

/// Variables a room with legacy members uses: a legacy client declares the room's names in
/// its handshake (they must be exactly the room's) and may set only those.
const NAMES: [&str; 6] = ["☁ a", "☁ b", "☁ c", "☁ d", "☁ e", "☁ f"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Scratch,
    Legacy,
    Rpc,
    Studio,
}

const DIALECTS: [Dialect; 4] = [
    Dialect::Scratch,
    Dialect::Legacy,
    Dialect::Rpc,
    Dialect::Studio,
];

/// A stratus node of the cluster held by `redis`, named `name` in Redis.
fn node(redis: &RedisServer, name: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--cluster", url.as_str(), "--cluster-node", name];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A key of `room` in Redis (see the layout in src/cluster/mod.rs).
fn room_key(room: &str, what: &str) -> String {
    format!("stratus:{{{room}}}:{what}")
}

/// The value Redis holds for a variable, as text (without its type letter).
fn redis_value(redis: &RedisServer, room: &str, name: &str) -> Option<String> {
    let stored = redis.query(&["HGET", &room_key(room, "vars"), name])?;
    let value = stored
        .strip_prefix('n')
        .or_else(|| stored.strip_prefix('t'))
        .unwrap_or_else(|| panic!("stored value without a type letter: {stored:?}"));
    Some(value.to_owned())
}

/// A node's member count of `room` as Redis holds it.
fn redis_members(redis: &RedisServer, room: &str, node: &str) -> Option<String> {
    redis.query(&["HGET", &room_key(room, "members"), node])
}

/// Waits until Redis holds the variables a legacy member declared in `room` (all `0`). A
/// node that loads the room before they are in Redis finds it empty and lets its own legacy
/// joiner declare them again, and that second declaration, ordered after other nodes' sets,
/// would win; tests wait so that each room is declared once.
fn wait_for_declaration(redis: &RedisServer, room: &str) {
    for name in NAMES {
        wait_until_equal(name, Some("0".to_owned()), || {
            redis_value(redis, room, name)
        });
    }
}

/// Each node's count of rooms read from Redis.
fn room_reads(nodes: &[&Server]) -> Vec<u64> {
    nodes
        .iter()
        .map(|node| node.metric("stratus_cluster_room_reads_total"))
        .collect()
}

/// Waits until every node has read a room from Redis again since `before` (its
/// [`room_reads`]): what a node does when its subscription comes back.
fn wait_for_room_reads_after(nodes: &[&Server], before: &[u64]) {
    for (node, before) in nodes.iter().zip(before) {
        wait_until_equal("a room read again", true, || {
            node.metric("stratus_cluster_room_reads_total") > *before
        });
    }
}

/// Waits until `probe` returns `want` (Redis converging on something a node sends).
fn wait_until_equal<T: PartialEq + std::fmt::Debug>(what: &str, want: T, probe: impl Fn() -> T) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A variable's value as text: a number's JSON text, a string's contents (legacy clients get
/// strings, the others keep the type the writer gave).
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// How a join was refused: the error message the dialect sends first, if any, and the close
/// code, if the connection is closed.
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    error: Option<String>,
    close: Option<u16>,
}

/// What each dialect tells a joiner when the room cannot be read from Redis (a server fault).
fn unavailable(dialect: Dialect) -> Refused {
    match dialect {
        Dialect::Scratch | Dialect::Legacy => Refused {
            error: None,
            close: Some(4003),
        },
        Dialect::Rpc => Refused {
            error: Some("server.fatal".into()),
            close: Some(1011),
        },
        Dialect::Studio => Refused {
            error: Some("ROOM room_unavailable".into()),
            close: None,
        },
    }
}

/// What each dialect tells a joiner when the room has `--max-clients-per-room` members.
fn room_full(dialect: Dialect) -> Refused {
    match dialect {
        Dialect::Scratch | Dialect::Legacy => Refused {
            error: None,
            close: Some(4003),
        },
        Dialect::Rpc => Refused {
            error: Some("world.full".into()),
            close: Some(4003),
        },
        Dialect::Studio => Refused {
            error: Some("FULL room_full".into()),
            close: None,
        },
    }
}

/// What one read brought.
enum Read {
    Text,
    Quiet,
    Closed(u16),
}

/// A client of some dialect in one room, keeping the values it was told (and set itself), as
/// a Scratch project keeps its cloud variables.
struct Member {
    client: Client,
    dialect: Dialect,
    user: String,
    room: String,
    view: BTreeMap<String, String>,
    next_id: u64,
}

impl Member {
    fn new(client: Client, dialect: Dialect, room: &str, user: &str) -> Member {
        Member {
            client,
            dialect,
            user: user.to_owned(),
            room: room.to_owned(),
            view: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn send_json(&mut self, message: Value) {
        self.client.send(&message.to_string());
    }

    /// Sets `name` to the number `value` (a string for legacy clients, which send only
    /// strings).
    fn set(&mut self, name: &str, value: &str) {
        let number: Value = serde_json::from_str(value).expect("a number");
        match self.dialect {
            Dialect::Scratch => self.client.set(name, value),
            Dialect::Legacy => self.client.send(&legacy_set(name, value)),
            Dialect::Rpc => {
                let id = self.next_id;
                self.next_id += 1;
                self.send_json(json!(["cloud.set", id, {"name": name, "value": number}]));
            }
            Dialect::Studio => {
                let room = self.room.clone();
                self.send_json(json!({"kind": "SET", "room": room, "name": name, "value": number}));
            }
        }
        self.view.insert(name.to_owned(), value.to_owned());
    }

    /// Reads one message (waiting at most `timeout`) and applies the values in it.
    fn read(&mut self, timeout: Duration) -> Read {
        if let Some(text) = self.client.take_pending() {
            self.apply_frame(&text);
            return Read::Text;
        }
        self.client.ws.get_ref().set_timeout(timeout);
        match self.client.ws.read() {
            Ok(Message::Text(text)) => {
                self.apply_frame(&text);
                Read::Text
            }
            Ok(Message::Close(frame)) => Read::Closed(frame.map_or(1005, |f| u16::from(f.code))),
            Ok(_) => Read::Quiet,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Read::Quiet
            }
            Err(e) => panic!("{} ({:?}): read failed: {e}", self.user, self.dialect),
        }
    }

    /// The next message as JSON (for replies read before the member is in the room).
    fn next_json(&mut self) -> Value {
        let text = self.client.recv();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    fn apply_frame(&mut self, text: &str) {
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let message: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.user));
            self.apply(&message);
        }
    }

    /// Applies one message of any dialect: sets, initial values; replies are skipped and
    /// errors are failures.
    fn apply(&mut self, message: &Value) {
        let mut put = |name: &Value, value: &Value| {
            let name = name.as_str().expect("a name").to_owned();
            self.view.insert(name, plain(value));
        };
        match message {
            Value::Object(fields) => match fields.get("kind").and_then(Value::as_str) {
                Some("set") => put(&message["variable"], &message["value"]),
                Some("SET") => {
                    assert_eq!(message["room"], self.room.as_str(), "{message}");
                    put(&message["name"], &message["value"]);
                }
                Some("JOINED_ROOM") => {
                    let variables = message["variables"].as_object().expect("variables");
                    for (name, value) in variables {
                        put(&Value::from(name.as_str()), value);
                    }
                }
                Some("OK" | "HELLO") => {}
                Some(_) => panic!("{}: unexpected message {message}", self.user),
                None if message["method"] == "set" => put(&message["name"], &message["value"]),
                None => panic!("{}: unexpected message {message}", self.user),
            },
            Value::Array(parts) => match parts.first().and_then(Value::as_str) {
                Some("cloud.set") => put(&parts[1]["name"], &parts[1]["value"]),
                Some("authenticated") => {
                    let variables = parts[1]["variables"].as_object().expect("variables");
                    for (name, value) in variables {
                        put(&Value::from(name.as_str()), value);
                    }
                }
                Some("success" | "pong") => {}
                _ => panic!("{}: unexpected message {message}", self.user),
            },
            _ => panic!("{}: unexpected message {message}", self.user),
        }
    }

    /// Reads until `done` holds for the values this member has, within `patience`.
    fn wait_until(
        &mut self,
        patience: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, String>) -> bool,
    ) {
        let deadline = Instant::now() + patience;
        while !done(&self.view) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} ({:?}) never saw {what}; it has {:?}",
                self.user,
                self.dialect,
                self.view
            );
            if let Read::Closed(code) = self.read(left.min(Duration::from_millis(200))) {
                panic!("{} ({:?}) closed with {code}", self.user, self.dialect);
            }
        }
    }

    /// Waits until this member's `name` is `value`.
    fn wait_for(&mut self, name: &str, value: &str) {
        self.wait_for_within(RECOVERY, name, value);
    }

    fn wait_for_within(&mut self, patience: Duration, name: &str, value: &str) {
        let what = format!("{name} = {value}");
        self.wait_until(patience, &what, |view| {
            view.get(name).map(String::as_str) == Some(value)
        });
    }

    /// Waits until this member has every one of `values`.
    fn wait_for_all(&mut self, values: &BTreeMap<String, String>) {
        let what = format!("{values:?}");
        self.wait_until(RECOVERY, &what, |view| {
            values
                .iter()
                .all(|(name, value)| view.get(name) == Some(value))
        });
    }

    /// Reads until nothing arrives for a while (several ticks).
    fn settle(&mut self) {
        loop {
            match self.read(Duration::from_millis(300)) {
                Read::Text => {}
                Read::Quiet => return,
                Read::Closed(code) => panic!("{} closed with {code}", self.user),
            }
        }
    }
}

/// Joins `room` on `node`, or says how the join was refused. Legacy clients declare [`NAMES`]
/// (all `0`); array-RPC clients authenticate with `user` as their client id.
fn try_join(node: &Server, dialect: Dialect, room: &str, user: &str) -> Result<Member, Refused> {
    match dialect {
        Dialect::Scratch | Dialect::Legacy => {
            let mut client = node.connect();
            if dialect == Dialect::Scratch {
                client.handshake(room, user);
            } else {
                let declared: serde_json::Map<String, Value> = NAMES
                    .iter()
                    .map(|name| (name.to_string(), Value::from("0")))
                    .collect();
                client.send(&legacy_handshake(
                    room,
                    user,
                    &Value::Object(declared).to_string(),
                ));
            }
            // Joined once a ping after the handshake is answered (its room may first have to
            // be read from Redis); refused if the connection closes instead.
            let mut client = client;
            match client.try_sync_within(RECOVERY) {
                Ok(()) => {
                    // Its initial frame counts as received before it sets anything.
                    let mut member = Member::new(client, dialect, room, user);
                    while let Some(frame) = member.client.take_pending() {
                        member.apply_frame(&frame);
                    }
                    Ok(member)
                }
                Err(Ending::Closed(code)) => Err(Refused {
                    error: None,
                    close: Some(code),
                }),
                Err(Ending::Dropped(e)) => panic!("{user} ({dialect:?}) dropped: {e}"),
            }
        }
        Dialect::Rpc => {
            let url = format!("ws://{}/ws/world/{room}", node.addr());
            let client = node
                .try_connect_with(&url, &[])
                .unwrap_or_else(|e| panic!("upgrade failed: {e}"));
            let mut member = Member::new(client, dialect, room, user);
            member.send_json(json!(["authenticate", {"client_id": user}]));
            let reply = member.next_json();
            match reply[0].as_str() {
                Some("authenticated") => {
                    member.apply(&reply);
                    Ok(member)
                }
                Some("error") => {
                    let error = reply[1]["code"].as_str().map(str::to_owned);
                    let close = Some(member.client.close_code());
                    Err(Refused { error, close })
                }
                _ => panic!("{user}: unexpected reply {reply}"),
            }
        }
        Dialect::Studio => {
            let client = node.connect();
            let mut member = Member::new(client, dialect, room, user);
            member.send_json(json!({"kind": "HELLO", "username": user}));
            let hello = member.next_json();
            assert_eq!(hello["kind"], "HELLO", "{hello}");
            member.send_json(json!({"kind": "JOIN_ROOM", "room": room}));
            let reply = member.next_json();
            match reply["kind"].as_str() {
                Some("JOINED_ROOM") => {
                    member.apply(&reply);
                    Ok(member)
                }
                Some(kind) => Err(Refused {
                    error: Some(format!("{kind} {}", reply["why"].as_str().unwrap_or("?"))),
                    close: None,
                }),
                None => panic!("{user}: unexpected reply {reply}"),
            }
        }
    }
}

fn join(node: &Server, dialect: Dialect, room: &str, user: &str) -> Member {
    try_join(node, dialect, room, user)
        .unwrap_or_else(|refused| panic!("{user} ({dialect:?}) refused from {room}: {refused:?}"))
}

/// Joins, retrying while the node refuses (it has yet to reconnect to Redis or to learn the
/// cluster's member counts again).
fn join_eventually(node: &Server, dialect: Dialect, room: &str, user: &str) -> Member {
    let deadline = Instant::now() + RECOVERY;
    loop {
        match try_join(node, dialect, room, user) {
            Ok(member) => return member,
            Err(refused) => assert!(
                Instant::now() < deadline,
                "{user} ({dialect:?}) still refused from {room}: {refused:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn expected(values: &[(&str, &str)]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn members_of_each_dialect_on_two_nodes_see_each_others_sets() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    for dialect in DIALECTS {
        let room = format!("pair-{dialect:?}");
        let mut on_a = join(&a, dialect, &room, "alice");
        if dialect == Dialect::Legacy {
            wait_for_declaration(&redis, &room);
        }
        let mut on_b = join(&b, dialect, &room, "bob");
        on_a.set("☁ a", "1");
        on_b.wait_for("☁ a", "1");
        on_b.set("☁ b", "2");
        on_a.wait_for("☁ b", "2");
        on_a.set("☁ a", "3");
        on_b.wait_for("☁ a", "3");
        assert_eq!(redis_value(&redis, &room, "☁ a").as_deref(), Some("3"));
        assert_eq!(redis_value(&redis, &room, "☁ b").as_deref(), Some("2"));
        // Nothing else arrives: each set reached the other node once, as its latest value.
        on_a.settle();
        on_b.settle();
        assert_eq!(on_a.view, on_b.view, "{dialect:?}");
    }
}

#[test]
fn a_room_mixing_every_dialect_on_two_nodes_sees_every_set() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    // The legacy member on B joins first: it declares the room's variables.
    let places = [
        (&b, Dialect::Legacy),
        (&a, Dialect::Scratch),
        (&b, Dialect::Rpc),
        (&a, Dialect::Studio),
        (&b, Dialect::Scratch),
        (&a, Dialect::Legacy),
        (&b, Dialect::Studio),
        (&a, Dialect::Rpc),
    ];
    let mut members: Vec<Member> = Vec::new();
    for (i, (node, dialect)) in places.into_iter().enumerate() {
        members.push(join(node, dialect, "mixed", &format!("m{i}")));
        if i == 0 {
            wait_for_declaration(&redis, "mixed");
        }
    }
    // Each member in turn sets the same variable; every member, on either node and of any
    // dialect, sees each value.
    for i in 0..members.len() {
        let value = (100 + i).to_string();
        members[i].set("☁ a", &value);
        for member in &mut members {
            member.wait_for("☁ a", &value);
        }
    }
    // Five of them at once set a variable each, all of which everyone ends up with.
    let mut all = expected(&[("☁ a", "107")]);
    for (i, member) in members.iter_mut().take(5).enumerate() {
        let value = (200 + i).to_string();
        member.set(NAMES[1 + i], &value);
        all.insert(NAMES[1 + i].to_owned(), value);
    }
    for member in &mut members {
        member.wait_for_all(&all);
    }
    for (name, value) in &all {
        assert_eq!(
            redis_value(&redis, "mixed", name).as_ref(),
            Some(value),
            "{name}"
        );
    }
}

#[test]
fn clients_of_a_killed_node_reconnect_to_the_other_and_find_every_value() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut keeper = join(&b, Dialect::Legacy, "k", "keeper");
    wait_for_declaration(&redis, "k");
    let mut on_a: Vec<Member> = DIALECTS
        .iter()
        .map(|&dialect| join(&a, dialect, "k", &format!("k{}", dialect as u8)))
        .collect();
    let mut all = expected(&[("☁ e", "0")]);
    for (i, member) in on_a.iter_mut().enumerate() {
        let value = (10 + i).to_string();
        member.set(NAMES[i], &value);
        all.insert(NAMES[i].to_owned(), value);
    }
    keeper.set("☁ f", "99");
    all.insert("☁ f".to_owned(), "99".to_owned());
    // Once B's member has A's values, Redis has them: the kill loses nothing acknowledged.
    keeper.wait_for_all(&all);

    a.signal(libc::SIGKILL);
    a.wait_for_exit();
    for member in &mut on_a {
        let ending = member.client.ending();
        assert!(
            matches!(ending, Ending::Dropped(_)),
            "{}: {ending:?}",
            member.user
        );
    }
    let mut back: Vec<Member> = DIALECTS
        .iter()
        .map(|&dialect| join(&b, dialect, "k", &format!("k{}", dialect as u8)))
        .collect();
    for member in &mut back {
        member.wait_for_all(&all);
    }
    // The room goes on on B.
    back[0].set("☁ e", "5");
    all.insert("☁ e".to_owned(), "5".to_owned());
    keeper.wait_for_all(&all);
    for member in &mut back {
        member.wait_for_all(&all);
    }
}

#[test]
fn redis_restarted_under_load_both_nodes_recover_and_converge() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut writer_a = join(&a, Dialect::Scratch, "load", "wa");
    let mut writer_b = join(&b, Dialect::Rpc, "load", "wb");
    let mut watcher_a = join(&a, Dialect::Studio, "load", "oa");
    let mut watcher_b = join(&b, Dialect::Scratch, "load", "ob");
    let reads = room_reads(&[&a, &b]);
    for i in 0..200 {
        writer_a.set("☁ a", &i.to_string());
        writer_b.set("☁ b", &i.to_string());
        if i == 100 {
            redis.restart();
        }
        // Sets keep coming while Redis restarts.
        std::thread::sleep(Duration::from_millis(5));
    }
    // Both nodes lost their subscription and read every room again.
    wait_for_room_reads_after(&[&a, &b], &reads);
    // Both nodes keep their clients through the restart; new sets reach everyone once the
    // nodes are back in Redis, and everyone agrees with Redis.
    writer_a.set("☁ a", "1000");
    writer_b.set("☁ b", "2000");
    writer_a.set("☁ c", "3000");
    let all = expected(&[("☁ a", "1000"), ("☁ b", "2000"), ("☁ c", "3000")]);
    for member in [&mut writer_a, &mut writer_b, &mut watcher_a, &mut watcher_b] {
        member.wait_for_all(&all);
    }
    for (name, value) in &all {
        assert_eq!(
            redis_value(&redis, "load", name).as_ref(),
            Some(value),
            "{name}"
        );
    }
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let mut newcomer = join(node, Dialect::Scratch, "load", &format!("new{i}"));
        newcomer.wait_for_all(&all);
        newcomer.settle();
        assert_eq!(newcomer.view, all);
    }
}

#[test]
fn while_redis_is_down_a_node_fans_out_locally_and_sends_the_changes_once_it_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut writer = join(&a, Dialect::Scratch, "down", "writer");
    let mut local = join(&a, Dialect::Rpc, "down", "local");
    let mut remote = join(&b, Dialect::Studio, "down", "remote");
    writer.set("☁ a", "1");
    remote.wait_for("☁ a", "1");

    redis.kill();
    writer.set("☁ a", "2");
    writer.set("☁ b", "7");
    local.wait_for_all(&expected(&[("☁ a", "2"), ("☁ b", "7")]));
    remote.set("☁ c", "9");

    let reads = room_reads(&[&a, &b]);
    redis.restart();
    wait_for_room_reads_after(&[&a, &b], &reads);
    let all = expected(&[("☁ a", "2"), ("☁ b", "7"), ("☁ c", "9")]);
    for member in [&mut writer, &mut local, &mut remote] {
        member.wait_for_all(&all);
    }
    for (name, value) in &all {
        wait_until_equal(name, Some(value.clone()), || {
            redis_value(&redis, "down", name)
        });
    }
}

#[test]
fn concurrent_sets_of_one_variable_on_both_nodes_end_with_redis_s_value_everywhere() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    // Watchers of every dialect on both nodes (the legacy one on A declares the names), then
    // two writers on each node. Only the watchers' views are compared: a writer is never sent
    // its own sets, so a value it reads while its own later set is on the wire leaves it with
    // an older value than the room's, on one server as on several.
    let mut watchers: Vec<Member> = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        for dialect in DIALECTS {
            watchers.push(join(node, dialect, "race", &format!("w{n}{dialect:?}")));
        }
        if n == 0 {
            wait_for_declaration(&redis, "race");
        }
    }
    let mut writers = [
        join(&a, Dialect::Scratch, "race", "sa"),
        join(&a, Dialect::Rpc, "race", "ra"),
        join(&b, Dialect::Studio, "race", "sb"),
        join(&b, Dialect::Legacy, "race", "lb"),
    ];
    for i in 0..300 {
        for (w, writer) in writers.iter_mut().enumerate() {
            writer.set("☁ a", &((w + 1) * 100_000 + i).to_string());
        }
    }
    // Each writer then marks its end on a variable of its own, on the same connection: a
    // marker seen on the other node means all of that writer's sets are in Redis.
    for (w, writer) in writers.iter_mut().enumerate() {
        writer.set(NAMES[w + 1], "1");
    }
    let markers = expected(&[("☁ b", "1"), ("☁ c", "1"), ("☁ d", "1"), ("☁ e", "1")]);
    for watcher in &mut watchers {
        watcher.wait_for_all(&markers);
    }
    let last = redis_value(&redis, "race", "☁ a").expect("Redis holds the variable");
    assert!(
        (1..=4).any(|w| last == (w * 100_000 + 299).to_string()),
        "Redis ends with {last}, which is no writer's last value"
    );
    for watcher in &mut watchers {
        watcher.wait_for("☁ a", &last);
        watcher.settle();
        assert_eq!(
            watcher.view.get("☁ a"),
            Some(&last),
            "{} moved on after Redis's last value",
            watcher.user
        );
    }
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let mut newcomer = join(node, Dialect::Rpc, "race", &format!("late{n}"));
        newcomer.settle();
        assert_eq!(newcomer.view.get("☁ a"), Some(&last), "node {n}");
    }
}

#[test]
fn the_member_limit_holds_across_nodes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = ["--max-clients-per-room", "2"];
    let a = node(&redis, "a", &limit);
    let b = node(&redis, "b", &limit);
    let mut first = join(&a, Dialect::Scratch, "full", "first");
    let _second = join(&a, Dialect::Rpc, "full", "second");
    wait_until_equal("A's member count in Redis", Some("2".to_owned()), || {
        redis_members(&redis, "full", "a")
    });
    for dialect in DIALECTS {
        let refused = try_join(&b, dialect, "full", &format!("third{dialect:?}"))
            .err()
            .unwrap_or_else(|| panic!("{dialect:?}: a third member joined on B"));
        assert_eq!(refused, room_full(dialect), "{dialect:?}");
    }
    // A place frees on A: B admits one member, once it has learnt so.
    first.client.close_with(1000);
    wait_until_equal("A's member count in Redis", Some("1".to_owned()), || {
        redis_members(&redis, "full", "a")
    });
    let _third = join_eventually(&b, Dialect::Studio, "full", "third");
    wait_until_equal("B's member count in Redis", Some("1".to_owned()), || {
        redis_members(&redis, "full", "b")
    });
    let refused = try_join(&b, Dialect::Scratch, "full", "fourth")
        .err()
        .expect("a fourth member is refused");
    assert_eq!(refused, room_full(Dialect::Scratch));
}

#[test]
fn with_redis_down_at_start_joins_are_refused_until_it_is_up() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    for dialect in DIALECTS {
        let refused = try_join(&a, dialect, "late", &format!("early{dialect:?}"))
            .err()
            .unwrap_or_else(|| panic!("{dialect:?}: joined while Redis is down"));
        assert_eq!(refused, unavailable(dialect), "{dialect:?}");
    }
    redis.restart();
    let mut on_a: Vec<Member> = DIALECTS
        .iter()
        .map(|&dialect| join_eventually(&a, dialect, "late", &format!("a{dialect:?}")))
        .collect();
    wait_for_declaration(&redis, "late");
    let mut on_b = join_eventually(&b, Dialect::Scratch, "late", "b");
    on_b.set("☁ a", "4");
    for member in &mut on_a {
        member.wait_for("☁ a", "4");
    }
    on_a[2].set("☁ b", "5");
    on_b.wait_for("☁ b", "5");
}

#[test]
fn after_redis_loses_its_data_the_nodes_write_their_rooms_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);
    let mut on_a = join(&a, Dialect::Scratch, "lost", "wa");
    let mut on_b = join(&b, Dialect::Rpc, "lost", "wb");
    on_a.set("☁ a", "1");
    on_b.wait_for("☁ a", "1");
    on_b.set("☁ b", "2");
    on_a.wait_for("☁ b", "2");

    // Redis forgets everything (as after a restart without its data); the next set starts
    // the room again at version 1, which tells the nodes to give Redis the room back.
    assert_eq!(redis.command(&["FLUSHALL"]).as_deref(), Some("+OK"));
    on_a.set("☁ c", "3");
    on_b.wait_for("☁ c", "3");
    let all = expected(&[("☁ a", "1"), ("☁ b", "2"), ("☁ c", "3")]);
    for (name, value) in &all {
        wait_until_equal(name, Some(value.clone()), || {
            redis_value(&redis, "lost", name)
        });
    }
    // A node that joins the cluster now reads the whole room from Redis.
    let c = node(&redis, "c", &[]);
    let mut newcomer = join(&c, Dialect::Studio, "lost", "late");
    newcomer.wait_for_all(&all);
    newcomer.settle();
    assert_eq!(newcomer.view, all);
    on_a.settle();
    on_b.settle();
    assert_eq!(on_a.view, all);
    assert_eq!(on_b.view, all);
}

#[test]
fn kind_declarations_racing_on_two_nodes_do_not_undo_a_set() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    // B sends to Redis at most once a second, so its member's declaration reaches Redis after
    // A's declaration and set although B read the room first (when it was still empty).
    let b = node(&redis, "b", &["--tick-hz", "1"]);
    let mut warm = join(&b, Dialect::Scratch, "warm", "warm");
    warm.set("☁ a", "1");
    wait_until_equal("B's first batch", Some("1".to_owned()), || {
        redis_value(&redis, "warm", "☁ a")
    });
    let mut second = join(&b, Dialect::Legacy, "decl", "second");
    let mut first = join(&a, Dialect::Legacy, "decl", "first");
    first.set("☁ a", "5");
    wait_until_equal("A's set", Some("5".to_owned()), || {
        redis_value(&redis, "decl", "☁ a")
    });
    // B's declaration goes out within its second; it must not undo the set.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(redis_value(&redis, "decl", "☁ a").as_deref(), Some("5"));
    let mut all = expected(&NAMES.map(|name| (name, "0")));
    all.insert("☁ a".to_owned(), "5".to_owned());
    second.wait_for_all(&all);
    for node in [&a, &b] {
        let mut newcomer = join(node, Dialect::Scratch, "decl", "newcomer");
        newcomer.wait_for_all(&all);
    }
}

#[test]
fn a_room_another_node_floods_is_read_once_per_join() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Node a publishes a batch for the room at up to 1 000 Hz, so reads of the room on node b
    // are overtaken by batches: they are applied over the read, not read again.
    let a = node(&redis, "a", &["--tick-hz", "1000", "--message-rate", "0"]);
    // One room at a time: each join to the other room drops the busy one from memory, so
    // every join to it reads it from Redis again.
    let b = node(&redis, "b", &["--max-rooms", "1"]);
    // A room of 3 MB: its read takes node b milliseconds to receive and parse, so batches
    // published after the read always arrive before it is done.
    let big = format!("t{}", "x".repeat(100_000));
    for i in 0..30 {
        let name = format!("☁ big{i}");
        assert_eq!(
            redis
                .query(&["HSET", &room_key("busy", "vars"), &name, &big])
                .as_deref(),
            Some("1")
        );
    }
    let mut flooder = join(&a, Dialect::Scratch, "busy", "flooder");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                flooder.set("☁ a", &i.to_string());
                std::thread::sleep(Duration::from_micros(200));
            }
            flooder.set("☁ a", "-1");
            flooder
        })
    };
    let reads_before = b.metric("stratus_cluster_room_reads_total");
    const JOINS: u64 = 10;
    for i in 0..JOINS {
        let mut member = join(&b, Dialect::Scratch, "busy", &format!("j{i}"));
        // The joiner gets a value of the flood.
        member.wait_until(RECOVERY, "a value of the flood", |view| {
            view.get("☁ a")
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0))
        });
        drop(member);
        drop(join(&b, Dialect::Scratch, "other", &format!("o{i}")));
    }
    let reads = b.metric("stratus_cluster_room_reads_total") - reads_before;
    assert_eq!(reads, 2 * JOINS, "one read per room brought into memory");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut flooder = flooding.join().expect("flooder");
    let last = expected(&[("☁ a", "-1")]);
    let mut watcher = join(&b, Dialect::Rpc, "busy", "late");
    for member in [&mut watcher, &mut flooder] {
        member.wait_for_all(&last);
    }
}

#[test]
fn a_join_waiting_for_redis_is_refused_when_redis_goes_away() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    // A handshake timeout far beyond the test's patience: only the outage may end the wait.
    let a = node(&redis, "a", &["--handshake-timeout", "300"]);
    let mut present = join(&a, Dialect::Scratch, "present", "p");
    present.set("☁ a", "1");
    // Redis stops answering: the join's subscription (then its read) waits...
    redis.freeze();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        // ...and then Redis is gone: the node notices an outage and must not keep the join
        // waiting for a room it cannot read until Redis comes back.
        redis.kill();
        redis
    });
    let refused = try_join(&a, Dialect::Scratch, "frozen", "late").err();
    let _redis = killer.join().expect("killer");
    assert_eq!(refused, Some(unavailable(Dialect::Scratch)));
    // The room in memory is still served locally.
    present.set("☁ a", "2");
    present.wait_for("☁ a", "2");
}

#[test]
fn each_node_checks_its_own_clients_sets_against_the_same_rules() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let file = temp_file("[projects.\"ruled\".variables.\"☁ a\"]\nmax = 10\n");
    let config = file.to_str().expect("utf-8");
    let a = node(&redis, "a", &["--config", config]);
    let b = node(&redis, "b", &["--config", config]);
    let mut on_a = join(&a, Dialect::Scratch, "ruled", "alice");
    let mut on_b = join(&b, Dialect::Scratch, "ruled", "bob");
    on_a.set("☁ a", "3");
    on_b.wait_for("☁ a", "3");
    // Refused on b: it reaches neither Redis nor a, and bob is sent the value back; a later
    // set from b does travel.
    on_b.set("☁ a", "11");
    on_b.set("☁ marker", "1");
    on_a.wait_for("☁ marker", "1");
    assert_eq!(redis_value(&redis, "ruled", "☁ a").as_deref(), Some("3"));
    on_a.settle();
    on_b.settle();
    assert_eq!(on_a.view.get("☁ a").map(String::as_str), Some("3"));
    assert_eq!(on_b.view.get("☁ a").map(String::as_str), Some("3"));
    on_b.set("☁ a", "10");
    on_a.wait_for("☁ a", "10");
    let refused = "stratus_rule_refusals_total{project=\"ruled\",rule=\"max\"}";
    assert_eq!(b.metric(refused), 1);
    assert_eq!(a.try_metric(refused), None);
}
