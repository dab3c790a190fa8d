//! The Redis link of a cluster node (`stratus::cluster`), through its public API against a
//! real `redis-server`: rounds write, publish, read and count members; a second node's
//! subscription receives the batches in version order; an outage is announced, rounds fail
//! fast during it, and everything flows again after Redis comes back.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use mio::{Events, Poll, Token, Waker};
use stratus::cluster::{Cluster, ClusterSettings, Event, RemoteBatch, Round, RoundResult};
use stratus::dialect::encode_set;
use stratus::engine::{
    Backend, Batch, ClientId, Engine, Format, HistoryEntry, Limits, ReadRequest, RoomChanges,
    SavedVariable, StoredRead, ValueRef, Verb, Want,
};
use stratus::net::{drain, BackendLink};

/// Long enough for a reconnect after the backoff has grown.
const PATIENCE: Duration = Duration::from_secs(30);

/// One node's link, with the mio poll its waker wakes.
struct Node {
    cluster: Option<Cluster>,
    poll: Poll,
    backlog: VecDeque<Event>,
}

impl Node {
    fn start(url: &str, id: &str) -> Node {
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let cluster = Cluster::start(settings(url, id), waker).expect("start");
        Node {
            cluster: Some(cluster),
            poll,
            backlog: VecDeque::new(),
        }
    }

    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("running")
    }

    /// Events up to and including the first that `wanted` accepts; the ones after it wait
    /// for the next call.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let mut events = Events::with_capacity(4);
        loop {
            while let Some(event) = self.backlog.pop_front() {
                let found = wanted(&event);
                seen.push(event);
                if found {
                    return seen;
                }
            }
            assert!(Instant::now() < deadline, "no {what}; saw {seen:?}");
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            // The bans read at each connection are the admin API's (tests/admin_bans.rs).
            let new = self.cluster().take_events();
            self.backlog
                .extend(new.into_iter().filter(|e| !matches!(e, Event::Bans(..))));
        }
    }

    fn subscribe(&mut self, room: &str) {
        assert!(self.cluster().subscribe(room.into()));
        let room = room.to_owned();
        self.wait_for(
            "Subscribed",
            |e| matches!(e, Event::Subscribed(r) if **r == *room),
        );
    }

    /// Sends a round (waiting while one is out) and returns its answer.
    fn round(&mut self, mut round: Round) -> RoundResult {
        let deadline = Instant::now() + PATIENCE;
        while let Err(back) = self.cluster().send_round(round) {
            assert!(Instant::now() < deadline, "round never taken");
            round = back;
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut seen = self.wait_for("RoundDone", |e| matches!(e, Event::RoundDone(_)));
        // Other events seen on the way stay for later waits, in order.
        let Some(Event::RoundDone(result)) = seen.pop() else {
            unreachable!()
        };
        for event in seen.into_iter().rev() {
            self.backlog.push_front(event);
        }
        result
    }

    /// The next batch received for `room`.
    fn message(&mut self, room: &str) -> RemoteBatch {
        let room = room.to_owned();
        let seen = self.wait_for(
            "Message",
            |e| matches!(e, Event::Message(b) if *b.room == *room),
        );
        match seen.into_iter().last() {
            Some(Event::Message(batch)) => batch,
            _ => unreachable!(),
        }
    }

    fn finish(&mut self) -> usize {
        let mut engine = Engine::new(Limits::default(), encode_set);
        let cluster = self.cluster.take().expect("running");
        drain(BackendLink::Cluster(cluster), &mut engine, PATIENCE)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.cluster.is_some() {
            self.finish();
        }
    }
}

fn settings(url: &str, id: &str) -> ClusterSettings {
    ClusterSettings {
        url: url.into(),
        node_id: id.into(),
        retention: Some(Duration::from_secs(3600)),
        history: 1000,
    }
}

fn number(name: &str, value: &str) -> SavedVariable {
    SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: name.into(),
        value: value.into(),
        is_number: true,
    }
}

fn text(name: &str, value: &str) -> SavedVariable {
    SavedVariable {
        user: Default::default(),
        changed_ms: 0,
        name: name.into(),
        value: value.into(),
        is_number: false,
    }
}

fn write(changes: RoomChanges) -> Round {
    Round {
        batch: Batch {
            rooms: vec![changes],
        },
        ..Round::default()
    }
}

fn load(room: &str) -> Round {
    Round {
        loads: vec![room.into()],
        ..Round::default()
    }
}

fn members(room: &str, count: u32) -> Round {
    Round {
        members: vec![(room.into(), count)],
        ..Round::default()
    }
}

fn sorted(mut variables: Vec<SavedVariable>) -> Vec<SavedVariable> {
    variables.sort_by(|a, b| a.name.cmp(&b.name));
    variables
}

/// A batch the way the engine makes one: with the room's local version.
fn engine_batch(room: &str) -> Batch {
    let mut engine = Engine::new(texts_allowed(), encode_set);
    let now = Instant::now();
    let key = engine
        .join(room, ClientId(1), Format(0), None, now)
        .expect("join");
    engine.set_backend(Backend::Store);
    engine.set(key, ClientId(1), "☁ n", ValueRef::Number("5"), true);
    engine.set(
        key,
        ClientId(1),
        "☁ t",
        ValueRef::Text("12 apples: 1:2\n"),
        true,
    );
    let batch = engine
        .poll_work(Want {
            batch: true,
            ..Want::default()
        })
        .batch;
    assert_eq!(batch.variable_count(), 2, "both sets applied");
    batch
}

fn texts_allowed() -> Limits {
    Limits {
        allow_non_numeric: true,
        ..Limits::default()
    }
}

#[test]
fn a_round_saves_and_publishes_and_a_load_reads_it_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut b = Node::start(&redis.url(), "node-b");
    assert!(b.cluster().subscribe("lobby".into()));

    // Nothing stored yet: version 0, no variables.
    let result = a.round(load("lobby"));
    assert!(result.load_failed.is_empty());
    assert_eq!(result.loaded.len(), 1);
    assert_eq!(result.loaded[0].version, 0);
    assert!(result.loaded[0].variables.is_empty());

    let batch = engine_batch("lobby");
    let local_version = batch.rooms[0].local_version();
    assert!(local_version > 0);
    let expected = sorted(batch.rooms[0].variables.clone());
    // The subscription is confirmed before anything is published.
    let seen = b.wait_for("Subscribed", |e| matches!(e, Event::Subscribed(_)));
    assert!(matches!(&seen[..], [Event::Subscribed(room)] if &**room == "lobby"));
    let result = a.round(Round {
        batch,
        ..Round::default()
    });
    assert!(result.saved);
    assert_eq!(result.batch.rooms.len(), 1, "the batch is given back");

    let message = b.message("lobby");
    assert_eq!(message.version, 1);
    assert_eq!(&*message.node, "node-a");
    assert_eq!(message.local_version, local_version);
    assert!(!message.replace_all);
    assert_eq!(sorted(message.variables), expected);

    let result = a.round(load("lobby"));
    assert_eq!(result.loaded[0].version, 1);
    assert_eq!(sorted(result.loaded[0].variables.clone()), expected);

    // Replacing every variable removes the others; numbers and texts keep their kind.
    let replacing =
        RoomChanges::replacing("lobby".into(), vec![text("☁ x", "7"), number("☁ y", "7")]);
    assert!(a.round(write(replacing)).saved);
    let message = b.message("lobby");
    assert_eq!(message.version, 2);
    assert!(message.replace_all);
    let result = a.round(load("lobby"));
    assert_eq!(result.loaded[0].version, 2);
    assert_eq!(
        sorted(result.loaded[0].variables.clone()),
        [text("☁ x", "7"), number("☁ y", "7")]
    );
    assert_eq!(a.cluster().stats().batches_out, 2);
    assert_eq!(b.cluster().stats().batches_in, 2);
    assert!(a.cluster().stats().rounds >= 4);
}

#[test]
fn versions_go_up_by_one_per_batch_whichever_node_writes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut b = Node::start(&redis.url(), "node-b");
    a.subscribe("race");
    b.subscribe("race");
    for i in 0..6 {
        let writer = if i % 2 == 0 { &mut a } else { &mut b };
        let value = i.to_string();
        let changes = RoomChanges::upserting("race".into(), vec![number("☁ v", &value)]);
        assert!(writer.round(write(changes)).saved);
    }
    for node in [&mut a, &mut b] {
        let received: Vec<(u64, String, String)> = (0..6)
            .map(|_| {
                let m = node.message("race");
                (m.version, m.node.to_string(), m.variables[0].value.clone())
            })
            .collect();
        let expected: Vec<(u64, String, String)> = (0..6)
            .map(|i| {
                let writer = if i % 2 == 0 { "node-a" } else { "node-b" };
                (i as u64 + 1, writer.to_owned(), i.to_string())
            })
            .collect();
        assert_eq!(received, expected);
    }
}

#[test]
fn member_totals_count_live_nodes_only() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut b = Node::start(&redis.url(), "node-b");
    let total = |result: RoundResult| {
        assert_eq!(result.member_totals.len(), 1);
        result.member_totals[0].1
    };
    assert_eq!(total(a.round(members("hall", 3))), 3);
    assert_eq!(total(b.round(members("hall", 2))), 5);
    assert_eq!(total(a.round(members("hall", 4))), 6);

    // A node whose heartbeat expired (here: never existed) does not count, and is cleaned up.
    assert_eq!(
        redis
            .command(&["HSET", "stratus:{hall}:members", "ghost", "100"])
            .as_deref(),
        Some(":1")
    );
    assert_eq!(total(b.round(members("hall", 2))), 6);
    assert_eq!(
        redis
            .command(&["HEXISTS", "stratus:{hall}:members", "ghost"])
            .as_deref(),
        Some(":0")
    );

    // A node that finishes takes its members and heartbeat with it.
    assert_eq!(b.finish(), 0);
    assert_eq!(
        redis.command(&["EXISTS", "stratus:node:node-b"]).as_deref(),
        Some(":0")
    );
    assert_eq!(total(a.round(members("hall", 4))), 4);
    assert_eq!(total(a.round(members("hall", 0))), 0);
}

#[test]
fn an_outage_is_announced_and_everything_flows_again_after_it() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    a.subscribe("room");
    let changes = || RoomChanges::upserting("room".into(), vec![number("☁ v", "1")]);
    assert!(a.round(write(changes())).saved);
    assert_eq!(a.message("room").version, 1);

    redis.kill();
    // Rounds fail (the first may be the one that finds the connection gone), and keep failing
    // without waiting while Redis is away.
    let mut round = write(changes());
    round.loads.push("room".into());
    round.members.push(("room".into(), 1));
    let result = a.round(round);
    assert!(!result.saved);
    assert_eq!(result.load_failed, [Box::<str>::from("room")]);
    assert!(result.loaded.is_empty() && result.member_totals.is_empty());
    a.wait_for("Outage", |e| matches!(e, Event::Outage));
    assert!(!a.round(write(changes())).saved);
    assert!(!a.cluster().stats().connected);
    assert_eq!(a.cluster().stats().outages, 1);

    // A room asked for during the outage is subscribed (and confirmed) once Redis is back.
    assert!(a.cluster().subscribe("late".into()));

    redis.restart();
    // The two threads reconnect on their own: the events come in either thread's order.
    let late = |e: &Event| matches!(e, Event::Subscribed(r) if &**r == "late");
    let (mut restored, mut resubscribed, mut subscribed) = (false, false, false);
    while !(restored && resubscribed && subscribed) {
        let seen = a.wait_for("Restored, Resubscribed and Subscribed", |e| {
            matches!(e, Event::Restored | Event::Resubscribed) || late(e)
        });
        restored |= seen.iter().any(|e| matches!(e, Event::Restored));
        resubscribed |= seen.iter().any(|e| matches!(e, Event::Resubscribed));
        subscribed |= seen.iter().any(late);
    }
    let result = a.round(write(changes()));
    assert!(result.saved);
    // The data survived the restart (append-only file): the version goes on.
    assert_eq!(a.message("room").version, 2);
    let stats = a.cluster().stats();
    assert!(stats.connected);
    assert!(stats.outage_seconds > 0.0);
}

#[test]
fn an_unreachable_redis_at_start_is_an_outage_not_an_error() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // A port where nothing listens (the test's Redis is elsewhere).
    let port = redis.port;
    drop(redis);
    let mut a = Node::start(&format!("redis://127.0.0.1:{port}/0"), "node-a");
    a.wait_for("Outage", |e| matches!(e, Event::Outage));
    assert!(!a.round(load("room")).load_failed.is_empty());
    // Subscribing is remembered until Redis answers.
    assert!(a.cluster().subscribe("room".into()));
}

#[test]
fn a_password_in_the_url_is_used() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    assert_eq!(
        redis
            .command(&["CONFIG", "SET", "requirepass", "s3cret"])
            .as_deref(),
        Some("+OK")
    );
    let url = format!("redis://:s3cret@127.0.0.1:{}/0", redis.port);
    let mut a = Node::start(&url, "node-a");
    a.subscribe("room");
    let changes = RoomChanges::upserting("room".into(), vec![text("☁ v", "x")]);
    assert!(a.round(write(changes)).saved);
    assert_eq!(a.message("room").variables, [text("☁ v", "x")]);

    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    let mut b = Node::start(&wrong, "node-b");
    b.wait_for("Outage", |e| matches!(e, Event::Outage));
}

#[test]
fn bad_urls_are_refused_at_start_and_tls_urls_are_accepted() {
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    for url in [
        "",
        "garbage",
        "http://127.0.0.1:6379",
        "redis:/127.0.0.1",
        "redis://127.0.0.1:notaport/0",
        "rediss://",
        "redis://127.0.0.1:6379/notadb",
    ] {
        match Cluster::start(settings(url, "n"), Arc::clone(&waker)) {
            Err(e) => assert!(e.starts_with("--cluster: "), "{url}: {e}"),
            Ok(_) => panic!("{url} accepted"),
        }
    }
    // The error never repeats a password.
    let e = Cluster::start(
        settings("redis://:hunter2@127.0.0.1:x/0", "n"),
        Arc::clone(&waker),
    )
    .err()
    .expect("refused");
    assert!(!e.contains("hunter2"), "{e}");
    // TLS is built in: a rediss URL starts (and connects in the background).
    let cluster = Cluster::start(settings("rediss://:pw@127.0.0.1:1/0", "n"), waker).expect("tls");
    let mut engine = Engine::new(Limits::default(), encode_set);
    assert_eq!(
        drain(
            BackendLink::Cluster(cluster),
            &mut engine,
            Duration::from_secs(5)
        ),
        0
    );
}

#[test]
fn large_batches_and_lost_scripts_still_apply() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    a.subscribe("big");
    // More variables than one HSET call takes in the script (chunks of 500 pairs).
    let variables: Vec<SavedVariable> = (0..1500)
        .map(|i| number(&format!("☁ v{i}"), &i.to_string()))
        .collect();
    let changes = RoomChanges::upserting("big".into(), variables.clone());
    assert!(a.round(write(changes)).saved);
    assert_eq!(
        sorted(a.message("big").variables),
        sorted(variables.clone())
    );
    let result = a.round(load("big"));
    assert_eq!(
        sorted(result.loaded[0].variables.clone()),
        sorted(variables)
    );

    // Redis forgot the scripts (as after a failover): the round reloads them and goes through.
    assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).as_deref(), Some("+OK"));
    let mut round = write(RoomChanges::upserting("big".into(), vec![text("☁ t", "x")]));
    round.loads.push("big".into());
    round.members.push(("big".into(), 1));
    let result = a.round(round);
    assert!(result.saved);
    assert_eq!(result.loaded[0].version, 2);
    assert_eq!(result.member_totals, [(Box::<str>::from("big"), 1)]);
    assert_eq!(a.message("big").version, 2);
}

#[test]
fn a_subscriber_that_falls_behind_is_dropped_and_resubscribes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Redis drops a subscriber as soon as 256 KB wait for it.
    assert_eq!(
        redis
            .command(&[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "pubsub 256kb 256kb 0"
            ])
            .as_deref(),
        Some("+OK")
    );
    let mut behind = Node::start(&redis.url(), "behind");
    behind.subscribe("flood");
    let mut writer = Node::start(&redis.url(), "writer");
    // The node that subscribed takes no events meanwhile: its channel fills, its thread
    // waits, the socket buffers fill, and Redis's buffer for it passes the limit.
    let value = "x".repeat(1000);
    let mut dropped = false;
    for _ in 0..400 {
        let rooms = (0..100)
            .map(|_| RoomChanges::upserting("flood".into(), vec![text("☁ v", &value)]))
            .collect();
        let result = writer.round(Round {
            batch: Batch { rooms },
            ..Round::default()
        });
        assert!(result.saved);
        if nobody_subscribed(&redis) {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "Redis never dropped the subscriber");
    // Once the loop catches up, the subscription comes back, and the loop is told to reload.
    behind.wait_for("Resubscribed", |e| matches!(e, Event::Resubscribed));
    let changes = RoomChanges::upserting("flood".into(), vec![text("☁ v", "last")]);
    assert!(writer.round(write(changes)).saved);
    let seen = behind.wait_for(
        "the last batch",
        |e| matches!(e, Event::Message(b) if b.variables[0].value == "last"),
    );
    assert!(!seen.is_empty());
}

/// Whether nobody is subscribed to the flood room: `PUBLISH` answers how many subscribers
/// received the message (a subscriber drops this one as malformed, and logs it).
fn nobody_subscribed(redis: &RedisServer) -> bool {
    redis
        .command(&["PUBLISH", "stratus:{flood}", "ping"])
        .as_deref()
        == Some(":0")
}

#[test]
fn unsubscribed_rooms_stop_arriving() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    a.subscribe("gone");
    a.subscribe("kept");
    assert!(a.cluster().unsubscribe("gone".into()));
    // No event confirms an unsubscribe: wait until Redis has nobody on the channel.
    let deadline = Instant::now() + PATIENCE;
    while redis
        .command(&["PUBLISH", "stratus:{gone}", "x"])
        .as_deref()
        != Some(":0")
    {
        assert!(Instant::now() < deadline, "still subscribed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone = RoomChanges::upserting("gone".into(), vec![number("☁ g", "1")]);
    let kept = RoomChanges::upserting("kept".into(), vec![number("☁ k", "1")]);
    let result = a.round(Round {
        batch: Batch {
            rooms: vec![gone, kept],
        },
        ..Round::default()
    });
    assert!(result.saved);
    let seen = a.wait_for("Message", |e| matches!(e, Event::Message(_)));
    assert!(
        matches!(seen.last(), Some(Event::Message(b)) if &*b.room == "kept"),
        "{seen:?}"
    );
}

#[test]
fn an_idle_node_keeps_its_heartbeat() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "idle");
    assert!(a.round(members("hall", 1)).member_totals == [(Box::<str>::from("hall"), 1)]);
    // The heartbeat key goes (as if it expired); the thread sets it again on its own.
    assert_eq!(
        redis.command(&["DEL", "stratus:node:idle"]).as_deref(),
        Some(":1")
    );
    let deadline = Instant::now() + PATIENCE;
    while redis.command(&["EXISTS", "stratus:node:idle"]).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "heartbeat not refreshed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ttl = redis.command(&["TTL", "stratus:node:idle"]);
    let ttl: i64 = ttl
        .as_deref()
        .and_then(|t| t.strip_prefix(':'))
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1);
    assert!((1..=15).contains(&ttl), "heartbeat must expire: ttl {ttl}");
}

/// An engine that owes one room's two variables.
fn engine_owing(room: &str) -> Engine {
    let mut engine = Engine::new(texts_allowed(), encode_set);
    let key = engine
        .join(room, ClientId(1), Format(0), None, Instant::now())
        .expect("join");
    engine.set_backend(Backend::Store);
    engine.set(key, ClientId(1), "☁ a", ValueRef::Number("1"), true);
    engine.set(key, ClientId(1), "☁ b", ValueRef::Text("two"), true);
    engine
}

#[test]
fn finish_sends_what_the_engine_owes_or_counts_it() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut engine = engine_owing("last");
    let cluster = a.cluster.take().expect("running");
    assert_eq!(
        drain(BackendLink::Cluster(cluster), &mut engine, PATIENCE),
        0
    );
    assert!(!engine.has_unsaved());
    let mut b = Node::start(&redis.url(), "node-b");
    let result = b.round(load("last"));
    assert_eq!(
        sorted(result.loaded[0].variables.clone()),
        [number("☁ a", "1"), text("☁ b", "two")]
    );

    // Redis gone: finish gives up and says how much was not sent.
    redis.kill();
    let mut c = Node::start(&redis.url(), "node-c");
    c.wait_for("Outage", |e| matches!(e, Event::Outage));
    let mut engine = engine_owing("lost");
    let cluster = c.cluster.take().expect("running");
    assert_eq!(
        drain(BackendLink::Cluster(cluster), &mut engine, PATIENCE),
        2
    );
}

#[test]
fn a_round_redis_does_not_answer_before_the_drain_gives_up_counts_as_unsent() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    // A first round proves the link is up, so the next one is written to a live connection.
    a.round(load("warm-up"));
    let mut engine = engine_owing("unanswered");
    let batch = engine
        .poll_work(Want {
            batch: true,
            ..Want::default()
        })
        .batch;
    assert_eq!(batch.variable_count(), 2);
    // Redis stops answering with the round out: the engine no longer owes its variables (the
    // round has them), and no answer will say whether they were written.
    redis.freeze();
    let round = Round {
        batch,
        ..Round::default()
    };
    a.cluster().send_round(round).expect("round taken");
    let cluster = a.cluster.take().expect("running");
    // Once the drain has given up, Redis goes away so that the threads stop at once.
    let killer = std::thread::spawn(move || {
        let mut redis = redis;
        std::thread::sleep(Duration::from_millis(1500));
        redis.kill();
    });
    let unsent = drain(
        BackendLink::Cluster(cluster),
        &mut engine,
        Duration::from_millis(500),
    );
    killer.join().expect("killer");
    assert_eq!(
        unsent, 2,
        "the round out was given up on: its variables are not known saved"
    );
}

/// A proxy to Redis that passes Redis's replies on 16 bytes at a time, 20 ms apart: every
/// reply arrives in pieces, with read timeouts of the subscriber between them.
fn trickling_proxy(redis_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                continue;
            };
            let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
            std::thread::spawn(move || {
                let mut piece = [0u8; 16];
                while let Ok(n @ 1..) = server.read(&mut piece) {
                    if client.write_all(&piece[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
    });
    port
}

#[test]
fn messages_cut_by_read_timeouts_arrive_whole() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let port = trickling_proxy(redis.port);
    let mut slow = Node::start(&format!("redis://127.0.0.1:{port}/0"), "slow");
    let mut a = Node::start(&redis.url(), "node-a");
    slow.subscribe("cut");
    let mut sent = Vec::new();
    for i in 0..3 {
        let variables = vec![
            text("☁ long", &format!("{i} {}", "y".repeat(40))),
            number("☁ n", &i.to_string()),
        ];
        let changes = RoomChanges::upserting("cut".into(), variables.clone());
        assert!(a.round(write(changes)).saved);
        sent.push(variables);
    }
    for (i, variables) in sent.into_iter().enumerate() {
        let message = slow.message("cut");
        assert_eq!(message.version, i as u64 + 1);
        assert_eq!(message.variables, variables);
    }
    assert!(slow.cluster().stats().connected);
}

#[test]
fn a_dropped_connection_is_not_an_outage_when_redis_answers_a_new_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    a.subscribe("blip");
    let changes = || RoomChanges::upserting("blip".into(), vec![number("☁ v", "1")]);
    assert!(a.round(write(changes())).saved);
    // Redis closes the command connection (the subscription is of another type).
    assert_eq!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .as_deref(),
        Some(":1")
    );
    // The round on the closed connection fails; the thread reconnects at once.
    assert!(!a.round(write(changes())).saved);
    assert!(a.round(write(changes())).saved);
    let seen = a.wait_for(
        "Message",
        |e| matches!(e, Event::Message(b) if b.version == 2),
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Outage | Event::Restored)),
        "{seen:?}"
    );
    assert_eq!(a.cluster().stats().outages, 0);
}

#[test]
fn a_declaration_seeds_only_what_the_room_does_not_have() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut b = Node::start(&redis.url(), "node-b");
    b.subscribe("decl");
    // Node A's member declared the room and set a value; node B, which read the room before
    // that reached Redis, lets its own member declare it again.
    let mut first = RoomChanges::upserting("decl".into(), vec![number("☁ x", "5")]);
    first.seeds = vec![number("☁ y", "0")];
    assert!(a.round(write(first)).saved);
    let mut second = RoomChanges::upserting("decl".into(), Vec::new());
    second.seeds = vec![number("☁ x", "0"), number("☁ y", "0"), number("☁ z", "0")];
    assert!(b.round(write(second)).saved);
    let published: Vec<Vec<(String, String)>> = (0..2)
        .map(|_| {
            b.message("decl")
                .variables
                .iter()
                .map(|v| (v.name.to_string(), v.value.clone()))
                .collect()
        })
        .collect();
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    assert_eq!(
        published,
        vec![
            vec![pair("☁ x", "5"), pair("☁ y", "0")],
            vec![pair("☁ z", "0")],
        ],
        "the second declaration publishes only the name that was missing"
    );
    let loaded = a.round(load("decl")).loaded;
    let mut values: Vec<(String, String)> = loaded[0]
        .variables
        .iter()
        .map(|v| (v.name.to_string(), v.value.clone()))
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![pair("☁ x", "5"), pair("☁ y", "0"), pair("☁ z", "0")],
        "the set made after the first declaration survives the second"
    );
}

#[test]
fn a_new_connection_subscribes_every_room_again_many_per_command() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // More rooms than one SUBSCRIBE carries, with messages arriving while they resubscribe.
    const ROOMS: usize = 1_200;
    let mut many = Node::start(&redis.url(), "many");
    let mut pending: Vec<String> = (0..ROOMS).map(|i| format!("room-{i}")).collect();
    let deadline = Instant::now() + PATIENCE;
    while let Some(room) = pending.pop() {
        if !many.cluster().subscribe(room.clone().into()) {
            pending.push(room);
            assert!(Instant::now() < deadline, "subscriptions never taken");
            many.backlog
                .extend(many.cluster.as_mut().expect("running").take_events());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut confirmed = 0;
    while confirmed < ROOMS {
        many.wait_for("Subscribed", |e| matches!(e, Event::Subscribed(_)));
        confirmed += 1;
    }
    let mut writer = Node::start(&redis.url(), "writer");
    assert_eq!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .as_deref(),
        Some(":1")
    );
    // Batches published while the connection comes back; all of them or none may arrive.
    for i in (0..ROOMS).step_by(100) {
        let changes = RoomChanges::upserting(format!("room-{i}").into(), vec![number("☁ a", "1")]);
        assert!(writer.round(write(changes)).saved);
    }
    many.wait_for("Resubscribed", |e| matches!(e, Event::Resubscribed));
    for room in ["room-0", "room-599", "room-1199"] {
        let changes = RoomChanges::upserting(room.into(), vec![text("☁ a", "after")]);
        assert!(writer.round(write(changes)).saved);
        let seen = many.wait_for(
            "a batch after resubscribing",
            |e| matches!(e, Event::Message(b) if *b.room == *room && b.variables[0].value == "after"),
        );
        assert!(!seen.is_empty());
    }
}

fn entry(user: &str, value: &str, seq: u64) -> HistoryEntry {
    HistoryEntry {
        user: user.into(),
        verb: Verb::Set,
        name: "☁ h".into(),
        value: value.into(),
        timestamp_ms: 1_733_400_000_000 + seq,
        seq,
    }
}

fn written_by(mut variable: SavedVariable, user: &str, ms: u64) -> SavedVariable {
    variable.user = user.into();
    variable.changed_ms = ms;
    variable
}

#[test]
fn reads_come_after_the_rounds_sent_before_them_with_entries_and_writers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::start(&redis.url(), "node-a");
    let mut changes = RoomChanges::upserting(
        "logged".into(),
        vec![written_by(number("☁ h", "2"), "Al:ice", 7)],
    );
    changes.history = vec![entry("Al:ice", "1", 1), entry("Bob", "2", 2)];
    changes.history_seq = 2;
    assert!(a.cluster().send_round(write(changes)).is_ok());
    // Asked before the round is answered: it still sees what the round wrote.
    let history = ReadRequest::History {
        room: "logged".into(),
        recent: None,
        before: u64::MAX,
        skip: 0,
        count: 10,
        newest: 10,
    };
    assert!(a.cluster().request_read(7, history));
    let seen = a.wait_for("Read", |e| matches!(e, Event::Read(..)));
    assert!(
        matches!(&seen[0], Event::RoundDone(result) if result.saved),
        "the round's answer first: {seen:?}"
    );
    let Some(Event::Read(7, StoredRead::History(entries))) = seen.last() else {
        panic!("{seen:?}");
    };
    assert_eq!(entries, &[entry("Bob", "2", 2), entry("Al:ice", "1", 1)]);

    // The variables read has the writers; replacing every variable drops the old writers.
    let variables = || ReadRequest::Variables {
        room: "logged".into(),
    };
    assert!(a.cluster().request_read(8, variables()));
    let seen = a.wait_for("Read", |e| matches!(e, Event::Read(..)));
    let Some(Event::Read(8, StoredRead::Variables(read))) = seen.last() else {
        panic!("{seen:?}");
    };
    assert_eq!(read, &[written_by(number("☁ h", "2"), "Al:ice", 7)]);
    let replacing = RoomChanges::replacing("logged".into(), vec![number("☁ z", "1")]);
    assert!(a.round(write(replacing)).saved);
    // Redis lost its scripts meanwhile: the read loads them again.
    assert_eq!(redis.query(&["SCRIPT", "FLUSH"]).as_deref(), Some("OK"));
    assert!(a.cluster().request_read(9, variables()));
    let seen = a.wait_for("Read", |e| matches!(e, Event::Read(..)));
    let Some(Event::Read(9, StoredRead::Variables(read))) = seen.last() else {
        panic!("{seen:?}");
    };
    assert_eq!(read, &[number("☁ z", "1")]);
    assert_eq!(
        redis.query(&["HGET", "stratus:{logged}:meta", "☁ h"]),
        None,
        "the old variable's writer went with it"
    );
    let ttl: u64 = redis
        .query(&["TTL", "stratus:{logged}:history"])
        .and_then(|ttl| ttl.parse().ok())
        .expect("the history follows the retention");
    assert!((3000..=3600).contains(&ttl), "{ttl}");
}
