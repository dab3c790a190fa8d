//! The MultiStudio dialect through the real binary: HELLO, rooms, request ids, every row of the
//! error table, reconnect tokens, and rooms shared with Scratch clients.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn connect_to(server: &Server, path: &str) -> Client {
    let url = format!("ws://{}{path}", server.addr());
    server
        .try_connect_with(&url, &[])
        .unwrap_or_else(|e| panic!("upgrade failed: {e}"))
}

fn send(client: &mut Client, message: Value) {
    client.send(&message.to_string());
}

fn next(client: &mut Client) -> Value {
    let text = client.recv();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Connects on `/`, says HELLO as `username`, returns the client and the server's HELLO.
fn hello(server: &Server, username: &str) -> (Client, Value) {
    hello_with(server, json!({"kind": "HELLO", "username": username}))
}

fn hello_with(server: &Server, message: Value) -> (Client, Value) {
    let mut client = server.connect();
    send(&mut client, message);
    let reply = next(&mut client);
    assert_eq!(reply["kind"], "HELLO", "{reply}");
    (client, reply)
}

fn join(client: &mut Client, room: &str) -> Value {
    send(client, json!({"kind": "JOIN_ROOM", "room": room}));
    let reply = next(client);
    assert_eq!(reply["kind"], "JOINED_ROOM", "{reply}");
    reply
}

fn err(code: &str, why: &str) -> Value {
    json!({"kind": code, "why": why})
}

fn err_rid(code: &str, why: &str, rid: &str) -> Value {
    json!({"kind": code, "why": why, "rid": rid})
}

#[test]
fn hello_on_any_path_or_on_ws_multistudio_starts_a_session() {
    let server = Server::start(&[]);
    let (_a, reply) = hello_with(
        &server,
        json!({"kind": "HELLO", "username": "alice", "rid": "r1"}),
    );
    assert_eq!(reply["user"]["username"], "alice");
    assert_eq!(reply["reconnected"], false);
    assert_eq!(reply["rid"], "r1");
    let token = reply["reconnect_token"].as_str().expect("token");
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "URL-safe");
    let mut b = connect_to(&server, "/ws/multistudio");
    send(&mut b, json!({"kind": "HELLO", "username": "bob"}));
    let reply = next(&mut b);
    assert_eq!(reply["kind"], "HELLO");
    assert!(reply.get("rid").is_none(), "no rid asked, none given");
    assert_ne!(reply["user"]["id"], json!(null));
}

#[test]
fn rooms_sets_and_replies_with_request_ids() {
    let server = Server::start(&[]);
    let (mut a, _) = hello(&server, "alice");
    let (mut b, _) = hello(&server, "bob");
    send(
        &mut a,
        json!({"kind": "JOIN_ROOM", "room": "r", "rid": "j"}),
    );
    assert_eq!(
        next(&mut a),
        json!({"kind": "JOINED_ROOM", "room": "r", "variables": {}, "rid": "j"})
    );
    join(&mut b, "r");
    send(
        &mut a,
        json!({"kind": "SET", "room": "r", "name": "☁ x", "value": 5, "rid": "s1"}),
    );
    assert_eq!(next(&mut a), json!({"kind": "OK", "rid": "s1"}));
    assert_eq!(
        next(&mut b),
        json!({"kind": "SET", "room": "r", "name": "☁ x", "value": 5})
    );
    // Without a rid a set is not answered.
    send(
        &mut b,
        json!({"kind": "SET", "room": "r", "name": "☁ x", "value": "6"}),
    );
    assert_eq!(
        next(&mut a),
        json!({"kind": "SET", "room": "r", "name": "☁ x", "value": "6"})
    );
    b.expect_silence();
    let (mut c, _) = hello(&server, "carol");
    assert_eq!(join(&mut c, "r")["variables"], json!({"☁ x": "6"}));
    send(
        &mut c,
        json!({"kind": "LEAVE_ROOM", "room": "r", "rid": "l"}),
    );
    assert_eq!(
        next(&mut c),
        json!({"kind": "LEFT_ROOM", "room": "r", "rid": "l"})
    );
    send(
        &mut a,
        json!({"kind": "SET", "room": "r", "name": "☁ x", "value": 7}),
    );
    assert_eq!(next(&mut b)["value"], 7);
    c.expect_silence();
}

#[test]
fn one_connection_in_two_rooms_gets_each_rooms_sets_named_by_room() {
    let server = Server::start(&[]);
    let (mut a, _) = hello(&server, "alice");
    join(&mut a, "one");
    join(&mut a, "two");
    let mut in_one = server.join_synced("one", "scratch1");
    let mut in_two = server.join_synced("two", "scratch2");
    in_one.set("☁ v", "1");
    in_two.set("☁ v", "2");
    let mut got = vec![next(&mut a), next(&mut a)];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        [
            json!({"kind": "SET", "room": "one", "name": "☁ v", "value": 1}),
            json!({"kind": "SET", "room": "two", "name": "☁ v", "value": 2}),
        ]
    );
    send(
        &mut a,
        json!({"kind": "SET", "room": "two", "name": "☁ w", "value": 3}),
    );
    assert_eq!(in_two.recv(), relayed("☁ w", "3"));
    in_one.expect_silence();
}

#[test]
fn a_scratch_client_and_a_studio_client_share_a_room() {
    let server = Server::start(&[]);
    let mut scratch = server.join_synced("42", "alice");
    scratch.set("☁ a", "1");
    // The set is in the room once the server has answered a ping sent after it.
    scratch.sync();
    let (mut studio, _) = hello(&server, "bob");
    assert_eq!(join(&mut studio, "42")["variables"], json!({"☁ a": 1}));
    send(
        &mut studio,
        json!({"kind": "SET", "room": "42", "name": "☁ a", "value": "2"}),
    );
    assert_eq!(scratch.recv(), relayed("☁ a", "\"2\""));
    scratch.set("☁ a", "3");
    assert_eq!(
        next(&mut studio),
        json!({"kind": "SET", "room": "42", "name": "☁ a", "value": 3})
    );
}

#[test]
fn prot_errors_leave_the_connection_open() {
    let server = Server::start(&[]);
    let mut client = connect_to(&server, "/ws/multistudio");
    send(
        &mut client,
        json!({"kind": "JOIN_ROOM", "room": "r", "rid": "1"}),
    );
    assert_eq!(next(&mut client), err_rid("PROT", "hello_required", "1"));
    send(&mut client, json!({"kind": "HELLO", "username": "alice"}));
    assert_eq!(next(&mut client)["kind"], "HELLO");
    let long_rid = "x".repeat(129);
    let cases = [
        (
            json!({"kind": "HELLO", "username": "alice", "rid": "2"}),
            err_rid("PROT", "hello_repeated", "2"),
        ),
        (
            json!({"kind": "DANCE", "rid": "3"}),
            err_rid("PROT", "unknown_kind", "3"),
        ),
        (json!({"rid": "4"}), err_rid("PROT", "missing_kind", "4")),
        (json!([1, 2]), err("PROT", "not_an_object")),
        (
            json!({"kind": "JOIN_ROOM", "rid": long_rid}),
            err("PROT", "invalid_rid"),
        ),
        (
            json!({"kind": "JOIN_ROOM", "rid": 5}),
            err("PROT", "invalid_rid"),
        ),
        (
            json!({"kind": "JOIN_ROOM", "rid": "6"}),
            err_rid("PROT", "missing_room", "6"),
        ),
        (
            json!({"kind": "JOIN_ROOM", "room": "", "rid": "7"}),
            err_rid("PROT", "invalid_room", "7"),
        ),
        (
            json!({"kind": "LEAVE_ROOM", "rid": "8"}),
            err_rid("PROT", "missing_room", "8"),
        ),
        (
            json!({"kind": "SET", "room": "r", "value": 1, "rid": "9"}),
            err_rid("PROT", "missing_name", "9"),
        ),
        (
            json!({"kind": "SET", "room": "r", "name": "☁ a", "rid": "10"}),
            err_rid("PROT", "missing_value", "10"),
        ),
        (
            json!({"kind": "SET", "name": "☁ a", "value": 1, "rid": "11"}),
            err_rid("PROT", "missing_room", "11"),
        ),
    ];
    for (message, reply) in cases {
        send(&mut client, message.clone());
        assert_eq!(next(&mut client), reply, "{message}");
    }
    let rid = "y".repeat(128);
    send(
        &mut client,
        json!({"kind": "JOIN_ROOM", "room": "r", "rid": rid}),
    );
    assert_eq!(
        next(&mut client)["rid"],
        json!(rid),
        "128 characters are fine"
    );
}

#[test]
fn invalid_json_is_prot_and_closes_4000() {
    let server = Server::start(&[]);
    let (mut client, _) = hello(&server, "alice");
    client.send("{not json");
    assert_eq!(next(&mut client), err("PROT", "invalid_json"));
    assert_eq!(client.close_code(), 4000);
}

#[test]
fn a_refused_username_is_user_with_the_rid_and_closes_4002() {
    let server = Server::start(&[]);
    for (username, why) in [
        ("ScratchCat", "username_refused"),
        ("a b", "username_characters"),
        ("", "username_length"),
    ] {
        let mut client = server.connect();
        send(
            &mut client,
            json!({"kind": "HELLO", "username": username, "rid": "h"}),
        );
        assert_eq!(next(&mut client), err_rid("USER", why, "h"), "{username:?}");
        assert_eq!(client.close_code(), 4002);
    }
}

#[test]
fn a_full_room_is_full_and_stays_open_a_full_server_closes_4003() {
    let server = Server::start(&["--max-clients-per-room", "1"]);
    let (mut a, _) = hello(&server, "alice");
    join(&mut a, "r");
    let (mut b, _) = hello(&server, "bob");
    send(
        &mut b,
        json!({"kind": "JOIN_ROOM", "room": "r", "rid": "j"}),
    );
    assert_eq!(next(&mut b), err_rid("FULL", "room_full", "j"));
    join(&mut b, "other");

    let server = Server::start(&["--max-connections", "1"]);
    let (_a, _) = hello(&server, "alice");
    let mut b = connect_to(&server, "/ws/multistudio");
    assert_eq!(next(&mut b), err("FULL", "server_full"));
    assert_eq!(b.close_code(), 4003);
}

#[test]
fn too_many_messages_is_rate_and_closes_4004() {
    let server = Server::start(&["--message-rate", "1", "--message-burst", "3"]);
    let (mut client, _) = hello(&server, "alice");
    for i in 0..10 {
        send(
            &mut client,
            json!({"kind": "JOIN_ROOM", "room": "r", "rid": i.to_string()}),
        );
    }
    let mut joined = 0;
    loop {
        let reply = next(&mut client);
        if reply["kind"] == "RATE" {
            assert_eq!(reply, err("RATE", "too_many_messages"));
            break;
        }
        joined += 1;
    }
    assert!((2..10).contains(&joined), "{joined}");
    assert_eq!(client.close_code(), 4004);
}

#[test]
fn refused_rooms_and_too_many_rooms_are_room() {
    let server = Server::start(&[
        "--blocked-projects",
        "secret",
        "--max-rooms-per-connection",
        "2",
        "--fault-rooms",
        "broken",
    ]);
    let (mut a, _) = hello(&server, "alice");
    send(
        &mut a,
        json!({"kind": "JOIN_ROOM", "room": "secret", "rid": "1"}),
    );
    assert_eq!(next(&mut a), err_rid("ROOM", "room_not_allowed", "1"));
    send(
        &mut a,
        json!({"kind": "JOIN_ROOM", "room": "broken", "rid": "2"}),
    );
    assert_eq!(next(&mut a), err_rid("ROOM", "room_unavailable", "2"));
    join(&mut a, "one");
    join(&mut a, "two");
    // Joining a room again is not one more room.
    join(&mut a, "two");
    send(
        &mut a,
        json!({"kind": "JOIN_ROOM", "room": "three", "rid": "3"}),
    );
    assert_eq!(next(&mut a), err_rid("ROOM", "too_many_rooms", "3"));
    send(&mut a, json!({"kind": "LEAVE_ROOM", "room": "one"}));
    assert_eq!(next(&mut a)["kind"], "LEFT_ROOM");
    join(&mut a, "three");
}

#[test]
fn not_a_member_is_norm() {
    let server = Server::start(&[]);
    let (mut a, _) = hello(&server, "alice");
    send(
        &mut a,
        json!({"kind": "SET", "room": "r", "name": "☁ a", "value": 1, "rid": "1"}),
    );
    assert_eq!(next(&mut a), err_rid("NORM", "not_in_room", "1"));
    send(
        &mut a,
        json!({"kind": "LEAVE_ROOM", "room": "r", "rid": "2"}),
    );
    assert_eq!(next(&mut a), err_rid("NORM", "not_in_room", "2"));
}

#[test]
fn invalid_names_and_values_are_valu_too_many_variables_is_vars() {
    let server = Server::start(&["--max-variables-per-room", "1"]);
    let (mut a, _) = hello(&server, "alice");
    join(&mut a, "r");
    let set = |name: &str, value: Value, rid: &str| json!({"kind": "SET", "room": "r", "name": name, "value": value, "rid": rid});
    let cases = [
        (
            set("no prefix", json!(1), "1"),
            err_rid("VALU", "invalid_name", "1"),
        ),
        (
            set("☁ a", json!("abc"), "2"),
            err_rid("VALU", "invalid_value", "2"),
        ),
        (
            set("☁ a", json!([1]), "3"),
            err_rid("VALU", "invalid_value", "3"),
        ),
        (set("☁ a", json!(1), "4"), json!({"kind": "OK", "rid": "4"})),
        (
            set("☁ b", json!(1), "5"),
            err_rid("VARS", "too_many_variables", "5"),
        ),
    ];
    for (message, reply) in cases {
        send(&mut a, message.clone());
        assert_eq!(next(&mut a), reply, "{message}");
    }
}

#[test]
fn no_hello_in_time_is_time_and_closes_4000() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut client = connect_to(&server, "/ws/multistudio");
    assert_eq!(next(&mut client), err("TIME", "hello_timeout"));
    assert_eq!(client.close_code(), 4000);
}

/// HELLO with `token`; returns the client and the server's HELLO.
fn reconnect(server: &Server, username: &str, token: &Value) -> (Client, Value) {
    hello_with(
        server,
        json!({"kind": "HELLO", "username": username, "reconnect_token": token}),
    )
}

#[test]
fn a_broken_connection_resumes_with_its_token_and_gets_what_it_missed() {
    let server = Server::start(&["--max-clients-per-room", "2"]);
    let (mut a, first) = hello(&server, "alice");
    join(&mut a, "r1");
    join(&mut a, "r2");
    let mut other = server.join_synced("r1", "bob");
    // The TCP connection dies without a close frame.
    drop(a);
    server.wait_until_metric("stratus_parked_sessions", 1);
    other.set("☁ x", "9");
    // Alice's places are kept for her while no live client needs them (tests/parked.rs).
    // A member that is away receives nothing, and costs the others nothing.
    let (mut a, again) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(again["reconnected"], true);
    assert_eq!(again["user"], first["user"]);
    assert_ne!(again["reconnect_token"], first["reconnect_token"]);
    let mut rooms = vec![next(&mut a), next(&mut a)];
    rooms.sort_by_key(|v| v["room"].to_string());
    assert_eq!(
        rooms,
        [
            json!({"kind": "JOINED_ROOM", "room": "r1", "variables": {"☁ x": 9}}),
            json!({"kind": "JOINED_ROOM", "room": "r2", "variables": {}}),
        ]
    );
    other.set("☁ x", "10");
    assert_eq!(
        next(&mut a),
        json!({"kind": "SET", "room": "r1", "name": "☁ x", "value": 10})
    );
}

#[test]
fn a_token_works_once() {
    let server = Server::start(&[]);
    let (a, first) = hello(&server, "alice");
    drop(a);
    server.wait_until_metric("stratus_parked_sessions", 1);
    let (b, second) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(second["reconnected"], true);
    // Taken back by the reconnect, parked again when b drops.
    assert_eq!(server.metric("stratus_parked_sessions"), 0);
    drop(b);
    server.wait_until_metric("stratus_parked_sessions", 1);
    let (_c, third) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(third["reconnected"], false, "a used token is worthless");
    assert_ne!(third["user"]["id"], first["user"]["id"]);
    let (_d, fourth) = reconnect(&server, "alice", &json!("not a token"));
    assert_eq!(fourth["reconnected"], false);
}

#[test]
fn a_token_after_the_window_starts_a_fresh_session_and_frees_the_rooms() {
    let server = Server::start(&["--reconnect-window", "1", "--max-clients-per-room", "1"]);
    let (mut a, first) = hello(&server, "alice");
    join(&mut a, "r");
    drop(a);
    server.wait_until_metric("stratus_parked_sessions", 1);
    // Waits out the reconnect window (1 s), which is what this test is about.
    std::thread::sleep(Duration::from_millis(2500));
    let (mut b, again) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(again["reconnected"], false);
    b.expect_silence();
    join(&mut b, "r");
}

#[test]
fn a_normal_close_ends_the_session_at_once() {
    let server = Server::start(&[]);
    let (mut a, first) = hello(&server, "alice");
    a.close_with(1000);
    let (_b, again) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(again["reconnected"], false);
}

#[test]
fn a_half_dead_connection_is_closed_and_replaced_by_the_reconnect() {
    let server = Server::start(&[]);
    let (mut old, first) = hello(&server, "alice");
    join(&mut old, "r");
    let (mut new, again) = reconnect(&server, "alice", &first["reconnect_token"]);
    assert_eq!(again["reconnected"], true);
    assert_eq!(next(&mut new)["room"], "r");
    assert_eq!(old.close_code(), 1000);
    let mut bob = server.join_synced("r", "bob");
    bob.set("☁ a", "1");
    assert_eq!(next(&mut new)["value"], 1);
}
