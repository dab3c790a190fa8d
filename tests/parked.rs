//! Parked MultiStudio sessions under hostile load: one address that opens sessions and drops
//! them without a close frame must not lock honest clients out (issue 20). A parked session
//! stays charged to its address, parked sessions have their own budget, and a live client that
//! needs a connection slot, a room place or its address's place ends the oldest parked session
//! holding it.
//!
//! Addresses are told apart with `--trust-proxy` and `X-Forwarded-For`, since every test
//! client connects from loopback.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use serde_json::{json, Value};

const ATTACKER: &str = "192.0.2.1";
const HONEST: &str = "192.0.2.2";

fn send(client: &mut Client, message: Value) {
    client.send(&message.to_string());
}

fn next(client: &mut Client) -> Value {
    let text = client.recv();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn from(server: &Server, path: &str, address: &str) -> Client {
    let url = format!("ws://{}{path}", server.addr());
    server
        .try_connect_with(&url, &[("X-Forwarded-For", address)])
        .unwrap_or_else(|e| panic!("upgrade failed: {e}"))
}

/// A MultiStudio session from `address`; returns the client and its reconnect token.
fn hello(server: &Server, address: &str, username: &str, token: Option<&Value>) -> (Client, Value) {
    let mut client = from(server, "/ws/multistudio", address);
    let mut message = json!({"kind": "HELLO", "username": username});
    if let Some(token) = token {
        message["reconnect_token"] = token.clone();
    }
    send(&mut client, message);
    let reply = next(&mut client);
    assert_eq!(reply["kind"], "HELLO", "{reply}");
    (client, reply)
}

/// Parked sessions so far, counting those ended since (each parking adds one); one request,
/// since with `--trust-proxy` the test's own address has a connection limit too.
fn parkings(server: &Server) -> u64 {
    let page = http_exchange(server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    [
        "stratus_parked_sessions ",
        "stratus_parked_sessions_ended_total ",
    ]
    .iter()
    .map(|name| {
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name}in {page}"))
    })
    .sum()
}

/// A MultiStudio session from `address` in `rooms`, its connection dropped without a close
/// frame; returns its reconnect token once the server has parked it.
fn park(server: &Server, address: &str, username: &str, rooms: &[&str]) -> Value {
    let before = parkings(server);
    let (mut client, reply) = hello(server, address, username, None);
    for room in rooms {
        send(&mut client, json!({"kind": "JOIN_ROOM", "room": room}));
        assert_eq!(next(&mut client)["kind"], "JOINED_ROOM");
    }
    drop(client);
    wait_until("the session is parked", || parkings(server) == before + 1);
    reply["reconnect_token"].clone()
}

/// Open WebSocket connections, by the `/metrics` gauges.
fn open_sockets(server: &Server) -> u64 {
    let page = http_exchange(server, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    page.lines()
        .filter(|line| line.starts_with("stratus_connections_open{") && !line.contains("http"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Opens `count` MultiStudio sessions from the attacker, each in `rooms` as far as they have
/// places, and drops them all without a close frame.
fn park_sessions(server: &Server, count: usize, rooms: &[&str]) {
    let mut clients = Vec::new();
    for i in 0..count {
        let (mut client, _) = hello(server, ATTACKER, &format!("parker{i}"), None);
        for room in rooms {
            send(&mut client, json!({"kind": "JOIN_ROOM", "room": room}));
            // JOINED_ROOM, or a ROOM error once the room is full.
            next(&mut client);
        }
        clients.push(client);
    }
    drop(clients);
    wait_until("the attacker's connections are gone", || {
        open_sockets(server) == 0
    });
}

#[test]
fn honest_clients_of_every_dialect_join_while_one_address_parks_sessions() {
    let server = Server::start(&[
        "--trust-proxy",
        "--max-connections",
        "40",
        "--max-connections-per-ip",
        "12",
        "--max-clients-per-room",
        "6",
    ]);
    {
        let (mut seed, _) = hello(&server, HONEST, "seed", None);
        send(&mut seed, json!({"kind": "JOIN_ROOM", "room": "game"}));
        next(&mut seed);
        send(
            &mut seed,
            json!({"kind": "SET", "room": "game", "name": "☁ x", "value": 1}),
        );
        seed.close_with(1000);
    }
    for round in 0..5 {
        park_sessions(&server, 12, &["game", "g1", "g2", "g3"]);

        let mut scratch = from(&server, "/", HONEST);
        scratch.handshake("game", "scratcher");
        let snapshot = scratch.recv();
        assert!(snapshot.contains("☁ x"), "round {round}: {snapshot}");

        let mut rpc = from(&server, "/ws/world/game", HONEST);
        rpc.send(r#"["authenticate",1,{"username":"rpcuser"}]"#);
        let reply = rpc.recv();
        assert!(
            reply.starts_with(r#"["authenticated""#),
            "round {round}: {reply}"
        );

        let (mut studio, _) = hello(&server, HONEST, "studier", None);
        send(&mut studio, json!({"kind": "JOIN_ROOM", "room": "game"}));
        let joined = next(&mut studio);
        assert_eq!(joined["kind"], "JOINED_ROOM", "round {round}: {joined}");

        for mut client in [scratch, rpc, studio] {
            client.close_with(1000);
        }
        let parked = server.metric("stratus_parked_sessions");
        assert!(parked <= 4, "round {round}: {parked} parked, budget 4");
    }
    assert!(server.metric("stratus_parked_sessions_ended_total") > 0);
}

#[test]
fn a_parked_session_stays_charged_to_its_address_until_a_live_client_from_it_needs_the_place() {
    let server = Server::start(&["--trust-proxy", "--max-connections-per-ip", "3"]);
    let tokens: Vec<Value> = (0..3)
        .map(|i| park(&server, ATTACKER, &format!("user{i}"), &[]))
        .collect();
    // Another address is not affected by the first one's parked sessions.
    let (_other, _) = hello(&server, HONEST, "other", None);
    assert_eq!(metric(&server, "stratus_parked_sessions"), 3);
    // The address is at its limit: a new connection from it ends its oldest parked session
    // and takes over that charge; the session it resumes frees its own.
    let (_second, again) = hello(&server, ATTACKER, "user1", Some(&tokens[1]));
    assert_eq!(again["reconnected"], true, "{again}");
    let (_first, lost) = hello(&server, ATTACKER, "user0", Some(&tokens[0]));
    assert_eq!(lost["reconnected"], false, "the oldest was ended: {lost}");
    assert_eq!(metric(&server, "stratus_parked_sessions_ended_total"), 1);
    assert_eq!(metric(&server, "stratus_parked_sessions"), 1);
    // Two live connections and one parked session: the address is full again, and its
    // parked session gives way to a third.
    let _third = from(&server, "/", ATTACKER);
    assert_eq!(metric(&server, "stratus_parked_sessions"), 0);
    assert_eq!(metric(&server, "stratus_parked_sessions_ended_total"), 2);
}

#[test]
fn parked_sessions_have_their_own_budget_and_the_oldest_gives_way() {
    let server = Server::start(&["--max-parked-sessions", "2"]);
    let tokens: Vec<Value> = (0..3)
        .map(|i| park(&server, HONEST, &format!("user{i}"), &[]))
        .collect();
    assert_eq!(server.metric("stratus_parked_sessions"), 2);
    assert_eq!(server.metric("stratus_parked_sessions_ended_total"), 1);
    let (_a, first) = hello(&server, HONEST, "user0", Some(&tokens[0]));
    assert_eq!(first["reconnected"], false, "the oldest was ended: {first}");
    let (_b, third) = hello(&server, HONEST, "user2", Some(&tokens[2]));
    assert_eq!(third["reconnected"], true, "{third}");
}

#[test]
fn a_live_client_takes_the_connection_slot_of_the_oldest_parked_session() {
    // Twelve slots, ten parked sessions: a parked session holds a slot until a live client
    // (a test connection, a /metrics request) needs it.
    let server = Server::start(&["--max-connections", "12", "--max-parked-sessions", "10"]);
    let tokens: Vec<Value> = (0..10)
        .map(|i| park(&server, HONEST, &format!("user{i}"), &[]))
        .collect();
    let mut live = Vec::new();
    for i in 0..5 {
        let (client, _) = hello(&server, HONEST, &format!("live{i}"), None);
        live.push(client);
    }
    // Live connections beyond the free slots each ended one parked session.
    assert!(server.metric("stratus_parked_sessions") < 10);
    assert!(server.metric("stratus_parked_sessions_ended_total") >= 3);
    let (_c, newest) = hello(&server, HONEST, "user9", Some(&tokens[9]));
    assert_eq!(newest["reconnected"], true, "{newest}");
    let (_d, oldest) = hello(&server, HONEST, "user0", Some(&tokens[0]));
    assert_eq!(oldest["reconnected"], false, "{oldest}");
}

#[test]
fn a_join_to_a_full_room_takes_the_place_of_the_oldest_parked_session_in_it() {
    let server = Server::start(&["--max-clients-per-room", "2"]);
    let parked: Vec<Value> = ["r1", "r2", "r1"]
        .iter()
        .enumerate()
        .map(|(i, room)| park(&server, HONEST, &format!("user{i}"), &[room]))
        .collect();
    // r1 holds two parked sessions: a live join ends the older of them, not the one in r2.
    let (mut carol, _) = hello(&server, HONEST, "carol", None);
    send(&mut carol, json!({"kind": "JOIN_ROOM", "room": "r1"}));
    assert_eq!(next(&mut carol)["kind"], "JOINED_ROOM");
    let (_a, user0) = hello(&server, HONEST, "user0", Some(&parked[0]));
    assert_eq!(user0["reconnected"], false, "{user0}");
    let (_b, user1) = hello(&server, HONEST, "user1", Some(&parked[1]));
    assert_eq!(user1["reconnected"], true, "{user1}");
}

/// A metric asked through the proxy for a loopback address of its own each time: with
/// `--trust-proxy --max-connections-per-ip 3`, requests from the test's own address would
/// count against that limit while the server still drains the earlier ones (a 429).
fn metric(server: &Server, name: &str) -> u64 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(2);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let client = format!("127.0.{}.{}", (n >> 8) & 255, n & 255);
    server
        .try_metric_from(name, Some(&client))
        .unwrap_or_else(|| panic!("no {name} on the metrics page"))
}
