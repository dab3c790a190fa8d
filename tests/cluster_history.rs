//! History and the HTTP API's reads in a cluster (`--cluster`), through real sockets: two
//! stratus processes and one `redis-server` per test. What one node's clients change is stored
//! in Redis by the node's atomic write (entries, and each variable's last writer), so any node
//! answers `/logs` and the variables read with it, also for rooms it never loaded, and after
//! every node restarted.
//!
//! Each test is skipped when `redis-server` is missing, unless `STRATUS_REQUIRE_REDIS=1` (set by
//! `.ci/run`). Nothing here asserts timing: tests wait (with patience) for what a round brings.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::Value;

/// How long a round may take to reach Redis and the other node.
const ROUND_PATIENCE: Duration = Duration::from_secs(15);

/// A node of the cluster held by `redis`, named `name`, with no API rate limit (the tests
/// poll).
fn node(redis: &RedisServer, name: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec![
        "--cluster",
        url.as_str(),
        "--cluster-node",
        name,
        "--api-rate",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A key of `room` in Redis (see the layout in src/cluster/mod.rs).
fn room_key(room: &str, what: &str) -> String {
    format!("stratus:{{{room}}}:{what}")
}

/// `GET path` on `server` (one request, then the connection closes): status and JSON body.
fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let response = http(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let body = if response.status == 200 {
        serde_json::from_str(&response.body).expect("a JSON body")
    } else {
        Value::Null
    };
    (response.status, body)
}

/// `/logs` of `project` on `server` as `user verb name value` lines, newest first, checking
/// that timestamps never go up.
fn logs(server: &Server, project: &str, offset: usize, limit: usize) -> Vec<String> {
    let path = format!("/logs?projectid={project}&offset={offset}&limit={limit}");
    let (status, body) = get_json(server, &path);
    assert_eq!(status, 200, "{path}");
    let entries = body.as_array().expect("an array");
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["timestamp"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{body}");
    assert!(times.iter().all(|&t| t > 1_600_000_000_000), "{body}");
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["user"].as_str().unwrap(),
                e["verb"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect()
}

/// Waits until `probe` returns `want`.
fn wait_until_equal<T: PartialEq + std::fmt::Debug>(what: &str, want: T, probe: impl Fn() -> T) {
    let deadline = Instant::now() + ROUND_PATIENCE;
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

/// The length of `room`'s history list in Redis.
fn redis_history_len(redis: &RedisServer, room: &str) -> u64 {
    redis
        .query(&["LLEN", &room_key(room, "history")])
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_set_on_one_node_is_in_the_other_nodes_logs_newest_first_across_pages() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);

    // Alice on A creates and sets; B never loads the room: its log comes from Redis alone.
    let mut alice = a.join_synced("101", "Alice");
    for value in 1..=5 {
        alice.set("☁ score", &value.to_string());
    }
    alice.sync();
    let expected: Vec<String> = (1..=5)
        .rev()
        .map(|v| {
            let verb = if v == 1 { "create_var" } else { "set_var" };
            format!("Alice {verb} ☁ score {v}")
        })
        .collect();
    wait_until_equal("B's log of A's sets", expected.clone(), || {
        logs(&b, "101", 0, 100)
    });
    assert_eq!(logs(&b, "101", 0, 3), expected[..3]);
    assert_eq!(logs(&b, "101", 3, 3), expected[3..]);
    assert_eq!(logs(&b, "101", 5, 3), Vec::<String>::new());
    assert_eq!(b.metric("stratus_rooms"), 0, "a log read loads no room");

    // Bob on B joins the room; his set merges with A's entries in every node's log.
    let mut bob = b.join_synced("101", "Bob");
    bob.set("☁ score", "6");
    bob.sync();
    let mut all = vec!["Bob set_var ☁ score 6".to_owned()];
    all.extend(expected);
    for server in [&a, &b] {
        wait_until_equal("both writers in the log", all.clone(), || {
            logs(server, "101", 0, 100)
        });
    }
    assert_eq!(logs(&a, "101", 1, 2), all[1..3]);

    // A room in memory on B knows A's writer from the channel.
    alice.set("☁ score", "7");
    alice.sync();
    wait_until_equal(
        "A's writer on B",
        ("7".to_owned(), "Alice".to_owned()),
        || {
            let (_, body) = get_json(&b, "/api/v1/projects/101/variables");
            let score = &body["variables"]["☁ score"];
            (
                score["value"].as_str().unwrap_or_default().to_owned(),
                score["user"].as_str().unwrap_or_default().to_owned(),
            )
        },
    );
}

#[test]
fn the_variables_of_a_room_another_node_wrote_are_read_without_loading_it() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &[]);
    let b = node(&redis, "b", &[]);

    let mut alice = a.join_synced("202", "Alice");
    alice.set("☁ x", "7");
    alice.sync();
    wait_until_equal("A's write in Redis", true, || {
        redis
            .query(&["HGET", &room_key("202", "meta"), "☁ x"])
            .is_some()
    });
    let rooms_before = b.metric("stratus_rooms");
    let (status, body) = get_json(&b, "/api/v1/projects/202/variables");
    assert_eq!(status, 200);
    assert_eq!(body["project"], "202");
    let x = &body["variables"]["☁ x"];
    assert_eq!(x["value"], "7", "{body}");
    assert_eq!(x["user"], "Alice", "{body}");
    assert!(
        x["timestamp"].as_u64().unwrap() > 1_600_000_000_000,
        "{body}"
    );
    assert_eq!(
        b.metric("stratus_rooms"),
        rooms_before,
        "the read loads no room"
    );

    // A project nobody wrote: no variables.
    let (status, body) = get_json(&b, "/api/v1/projects/203/variables");
    assert_eq!(status, 200);
    assert_eq!(body["variables"], serde_json::json!({}));
}

#[test]
fn the_history_list_in_redis_is_trimmed_to_history() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node(&redis, "a", &["--history", "5"]);
    let b = node(&redis, "b", &["--history", "5"]);

    // One set per round, so that each write to Redis pushes one entry and trims.
    let mut alice = a.join_synced("303", "Alice");
    for value in 1..=8 {
        alice.set("☁ n", &value.to_string());
        alice.sync();
        let value = value.to_string();
        wait_until_equal("the set in Redis", Some(format!("n{value}")), || {
            redis.query(&["HGET", &room_key("303", "vars"), "☁ n"])
        });
    }
    assert_eq!(redis_history_len(&redis, "303"), 5);
    let newest: Vec<String> = (4..=8)
        .rev()
        .map(|v| format!("Alice set_var ☁ n {v}"))
        .collect();
    assert_eq!(logs(&b, "303", 0, 100), newest);
}

#[test]
fn history_and_writers_survive_both_nodes_restarting() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = node(&redis, "a", &[]);
    let mut b = node(&redis, "b", &[]);
    let mut alice = a.join_synced("404", "Alice");
    let mut bob = b.join_synced("404", "Bob");
    alice.set("☁ v", "1");
    alice.sync();
    wait_until_equal("Alice's set on B", true, || {
        get_json(&b, "/api/v1/projects/404/variables").1["variables"]["☁ v"]["value"] == "1"
    });
    bob.set("☁ v", "2");
    bob.sync();
    drop((alice, bob));
    // SIGTERM: each node sends what it still owes before it exits.
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert_eq!(redis_history_len(&redis, "404"), 2);

    let a = node(&redis, "a2", &[]);
    let b = node(&redis, "b2", &[]);
    let expected = vec![
        "Bob set_var ☁ v 2".to_owned(),
        "Alice create_var ☁ v 1".to_owned(),
    ];
    for server in [&a, &b] {
        assert_eq!(logs(server, "404", 0, 10), expected);
        let (_, body) = get_json(server, "/api/v1/projects/404/variables");
        assert_eq!(body["variables"]["☁ v"]["value"], "2", "{body}");
        assert_eq!(body["variables"]["☁ v"]["user"], "Bob", "{body}");
    }
    // A node that loads the room for a member keeps the writers too.
    let _carol = a.join_synced("404", "Carol");
    let (_, body) = get_json(&a, "/api/v1/projects/404/variables");
    assert_eq!(body["variables"]["☁ v"]["user"], "Bob", "{body}");
    assert_eq!(logs(&a, "404", 0, 10), expected);
}
