//! The array-RPC dialect on `/ws/world/<room>`, through the real binary: authentication, every
//! action and error code, rooms shared with the Scratch and legacy dialects, limits, and a
//! client that behaves like the reference (venueless) client.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Connects to `/ws/world/<room>` (the room as it appears in the path).
fn world(server: &Server, room_path: &str) -> Client {
    let url = format!("ws://{}/ws/world/{room_path}", server.addr());
    server
        .try_connect_with(&url, &[])
        .unwrap_or_else(|e| panic!("upgrade failed: {e}"))
}

/// Sends one JSON value as one message.
fn call(client: &mut Client, message: Value) {
    client.send(&message.to_string());
}

/// The next message, parsed.
fn next(client: &mut Client) -> Value {
    let text = client.recv();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Connects and authenticates with `client_id`; returns the client and the `authenticated`
/// payload (the reply is the join's acknowledgement).
fn authenticated(server: &Server, room: &str, client_id: &str) -> (Client, Value) {
    let mut client = world(server, room);
    call(
        &mut client,
        json!(["authenticate", {"client_id": client_id}]),
    );
    let reply = next(&mut client);
    assert_eq!(reply[0], "authenticated", "{reply}");
    (client, reply[1].clone())
}

fn error(code: &str) -> Value {
    json!(["error", {"code": code}])
}

fn error_for(id: Value, code: &str) -> Value {
    json!(["error", id, {"code": code}])
}

#[test]
fn a_refused_room_is_told_unknown_world_and_closed_4004() {
    let server = Server::start(&["--blocked-projects", "7"]);
    let mut client = world(&server, "7");
    assert_eq!(next(&mut client), error("world.unknown_world"));
    assert_eq!(client.close_code(), 4004);
    let mut client = world(&server, "8");
    call(&mut client, json!(["authenticate", {"client_id": "c"}]));
    assert_eq!(next(&mut client)[0], "authenticated");
}

#[test]
fn a_malformed_room_path_is_told_unknown_world_and_closed_4000() {
    let server = Server::start(&[]);
    for path in ["%zz", "%ff"] {
        let mut client = world(&server, path);
        assert_eq!(next(&mut client), error("world.unknown_world"), "{path}");
        assert_eq!(client.close_code(), 4000, "{path}");
    }
}

#[test]
fn the_room_is_percent_decoded_and_shared_with_scratch_clients() {
    let server = Server::start(&[]);
    let mut scratch = server.join_synced("a b", "alice");
    let (mut rpc, payload) = authenticated(&server, "a%20b", "c1");
    assert_eq!(payload, json!({"room": "a b", "variables": {}}));
    call(
        &mut rpc,
        json!(["cloud.set", 1, {"name": "☁ x", "value": 5}]),
    );
    assert_eq!(next(&mut rpc), json!(["success", 1, {}]));
    assert_eq!(scratch.recv(), relayed("☁ x", "5"));
    scratch.set("☁ y", "\"6\"");
    assert_eq!(
        next(&mut rpc),
        json!(["cloud.set", {"name": "☁ y", "value": "6"}])
    );
}

#[test]
fn a_legacy_client_and_an_rpc_client_share_a_room() {
    let server = Server::start(&[]);
    let mut legacy = server.legacy_join("r", "old", r#"{"☁ a": "1"}"#);
    assert_eq!(legacy.recv(), legacy_relayed("☁ a", "1"));
    let (mut rpc, payload) = authenticated(&server, "r", "c1");
    assert_eq!(payload["variables"], json!({"☁ a": "1"}));
    call(
        &mut rpc,
        json!(["cloud.set", 9, {"name": "☁ a", "value": 2}]),
    );
    assert_eq!(next(&mut rpc), json!(["success", 9, {}]));
    assert_eq!(legacy.recv(), legacy_relayed("☁ a", "2"));
    legacy.send(&legacy_set("☁ a", "3"));
    assert_eq!(
        next(&mut rpc),
        json!(["cloud.set", {"name": "☁ a", "value": "3"}])
    );
}

#[test]
fn ping_is_answered_with_the_same_value_before_and_after_authentication() {
    let server = Server::start(&[]);
    let mut client = world(&server, "1");
    for payload in [
        json!(1501676765),
        json!("x"),
        json!({"a": [1, null, true]}),
        json!(null),
    ] {
        call(&mut client, json!(["ping", payload]));
        assert_eq!(next(&mut client), json!(["pong", payload]));
    }
    call(&mut client, json!(["ping", 4, 1.5]));
    assert_eq!(next(&mut client), json!(["pong", 4, 1.5]));
    call(&mut client, json!(["authenticate", {"username": "alice"}]));
    assert_eq!(next(&mut client)[0], "authenticated");
    call(&mut client, json!(["ping", 99]));
    assert_eq!(next(&mut client), json!(["pong", 99]));
}

#[test]
fn authentication_takes_a_client_id_or_a_username() {
    let server = Server::start(&[]);
    let mut by_name = world(&server, "1");
    call(
        &mut by_name,
        json!(["authenticate", 1, {"username": "alice", "token": "ignored"}]),
    );
    assert_eq!(
        next(&mut by_name),
        json!(["authenticated", 1, {"room": "1", "variables": {}}])
    );
    // What the operator reads: the client is known by its username, or by its client id.
    server.wait_for_log("\"alice\" 1] joined (rpc)");
    let max_id = "i".repeat(64);
    let (_client, _) = authenticated(&server, "1", &max_id);
    server.wait_for_log(&format!("\"{max_id}\" 1] joined (rpc)"));
}

#[test]
fn refused_authentication_is_auth_denied_and_closes_4002() {
    let server = Server::start(&[]);
    for payload in [
        json!({"token": "t"}),
        json!({}),
        json!({"username": "ScratchCat"}),
        json!({"username": "has space"}),
        json!({"username": 5}),
        json!({"client_id": ""}),
        json!({"client_id": "i".repeat(65)}),
        json!({"client_id": 7}),
    ] {
        let mut client = world(&server, "1");
        call(&mut client, json!(["authenticate", payload]));
        assert_eq!(next(&mut client), error("auth.denied"), "{payload}");
        assert_eq!(client.close_code(), 4002, "{payload}");
    }
}

#[test]
fn requests_before_authentication_are_refused_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let mut client = world(&server, "1");
    call(
        &mut client,
        json!(["cloud.set", 3, {"name": "☁ x", "value": 1}]),
    );
    assert_eq!(
        next(&mut client),
        error_for(json!(3), "protocol.unauthenticated")
    );
    call(&mut client, json!(["cloud.get", {}]));
    assert_eq!(next(&mut client), error("protocol.unauthenticated"));
    call(&mut client, json!(["authenticate", {"client_id": "c"}]));
    assert_eq!(next(&mut client)[0], "authenticated");
}

#[test]
fn sets_reach_other_members_typed_and_the_setter_gets_success_only() {
    let server = Server::start(&[]);
    let (mut a, _) = authenticated(&server, "1", "a");
    let (mut b, _) = authenticated(&server, "1", "b");
    call(
        &mut a,
        json!(["cloud.set", 1, {"name": "☁ n", "value": 10}]),
    );
    call(
        &mut a,
        json!(["cloud.set", 2, {"name": "☁ s", "value": "-2.5"}]),
    );
    assert_eq!(next(&mut a), json!(["success", 1, {}]));
    assert_eq!(next(&mut a), json!(["success", 2, {}]));
    let mut seen = vec![next(&mut b), next(&mut b)];
    seen.sort_by_key(|v| v.to_string());
    assert_eq!(
        seen,
        [
            json!(["cloud.set", {"name": "☁ n", "value": 10}]),
            json!(["cloud.set", {"name": "☁ s", "value": "-2.5"}]),
        ]
    );
    a.expect_silence();
    // Requests without an id get their reply without one.
    call(&mut b, json!(["cloud.set", {"name": "☁ n", "value": 11}]));
    assert_eq!(next(&mut b), json!(["success", {}]));
    assert_eq!(
        next(&mut a),
        json!(["cloud.set", {"name": "☁ n", "value": 11}])
    );
}

#[test]
fn a_joiner_gets_the_current_values_and_cloud_get_returns_them() {
    let server = Server::start(&[]);
    let (mut a, _) = authenticated(&server, "1", "a");
    call(&mut a, json!(["cloud.set", 1, {"name": "☁ n", "value": 1}]));
    call(
        &mut a,
        json!(["cloud.set", 2, {"name": "☁ m", "value": "2"}]),
    );
    next(&mut a);
    next(&mut a);
    let (mut b, payload) = authenticated(&server, "1", "b");
    assert_eq!(payload["variables"], json!({"☁ n": 1, "☁ m": "2"}));
    call(&mut b, json!(["cloud.get", "q", {}]));
    assert_eq!(
        next(&mut b),
        json!(["success", "q", {"variables": {"☁ n": 1, "☁ m": "2"}}])
    );
}

#[test]
fn invalid_sets_get_their_error_code_and_the_connection_stays_open() {
    let server = Server::start(&["--max-variables-per-room", "1"]);
    let (mut a, _) = authenticated(&server, "1", "a");
    let cases = [
        (
            json!({"name": "no prefix", "value": 1}),
            "cloud.invalid_name",
        ),
        (
            json!({"name": "☁ x", "value": "abc"}),
            "cloud.invalid_value",
        ),
        (json!({"name": "☁ x", "value": true}), "cloud.invalid_value"),
        (
            json!({"name": "☁ x", "value": "9".repeat(100_001)}),
            "cloud.invalid_value",
        ),
    ];
    for (i, (payload, code)) in cases.into_iter().enumerate() {
        call(&mut a, json!(["cloud.set", i, payload]));
        assert_eq!(next(&mut a), error_for(json!(i), code), "{payload}");
    }
    call(
        &mut a,
        json!(["cloud.set", 10, {"name": "☁ x", "value": 1}]),
    );
    assert_eq!(next(&mut a), json!(["success", 10, {}]));
    call(
        &mut a,
        json!(["cloud.set", 11, {"name": "☁ y", "value": 1}]),
    );
    assert_eq!(
        next(&mut a),
        error_for(json!(11), "cloud.too_many_variables")
    );
    // A number too large for a double makes the message unreadable: no id to answer with.
    a.send(r#"["cloud.set", 12, {"name": "☁ x", "value": 1e400}]"#);
    assert_eq!(next(&mut a), error("cloud.invalid_value"));
    call(&mut a, json!(["cloud.get", 13, {}]));
    assert_eq!(
        next(&mut a),
        json!(["success", 13, {"variables": {"☁ x": 1}}])
    );
}

#[test]
fn wrong_shapes_are_protocol_invalid_with_the_id_exactly_when_there_were_three_elements() {
    let server = Server::start(&[]);
    let (mut a, _) = authenticated(&server, "1", "a");
    let cases = [
        (json!([]), error("protocol.invalid")),
        (json!(["cloud.set"]), error("protocol.invalid")),
        (json!([1, {}]), error("protocol.invalid")),
        (json!([1, 2, {}]), error_for(json!(2), "protocol.invalid")),
        (json!(["cloud.set", 1, 2, 3]), error("protocol.invalid")),
        (
            json!(["cloud.set", 5, "not an object"]),
            error_for(json!(5), "protocol.invalid"),
        ),
        (
            json!(["cloud.set", {"value": 1}]),
            error("protocol.invalid"),
        ),
        (
            json!(["cloud.set", [1], {"name": 1, "value": 1}]),
            error_for(json!([1]), "protocol.invalid"),
        ),
        (
            json!(["authenticate", 6, {"client_id": "again"}]),
            error_for(json!(6), "protocol.invalid"),
        ),
        (
            json!(["chat.send", 7, {}]),
            error_for(json!(7), "protocol.unknown_command"),
        ),
        (json!(["chat.send", {}]), error("protocol.unknown_command")),
    ];
    for (request, reply) in cases {
        call(&mut a, request.clone());
        assert_eq!(next(&mut a), reply, "{request}");
    }
    call(&mut a, json!(["ping", 0]));
    assert_eq!(next(&mut a), json!(["pong", 0]), "still open");
}

#[test]
fn text_that_is_not_a_json_array_closes_4000() {
    let server = Server::start(&[]);
    for text in ["not json", r#"{"method":"handshake"}"#, "5", "[1,"] {
        let mut client = world(&server, "1");
        client.send(text);
        assert_eq!(client.close_code(), 4000, "{text}");
    }
}

#[test]
fn several_requests_in_one_read_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut stream = server.tcp();
    stream
        .write_all(upgrade_request("/ws/world/1", "").as_bytes())
        .expect("write");
    let mut burst = text_frame(r#"["authenticate",{"client_id":"c"}]"#);
    for id in 1..=20 {
        burst.extend(text_frame(&format!(r#"["ping",{id},{id}]"#)));
    }
    stream.write_all(&burst).expect("write");
    let (bytes, _) = read_until_eof(&mut stream, Duration::from_millis(1500));
    let texts = texts_in(&bytes);
    assert_eq!(texts.len(), 21, "{texts:?}");
    assert!(texts[0].starts_with(r#"["authenticated""#));
    for (i, text) in texts.iter().skip(1).enumerate() {
        let id = i + 1;
        assert_eq!(text, &format!(r#"["pong",{id},{id}]"#));
    }
}

#[test]
fn rename_and_delete_answer_when_enabled_and_say_disabled_otherwise() {
    let server = Server::start(&[]);
    let (mut a, _) = authenticated(&server, "1", "a");
    call(
        &mut a,
        json!(["cloud.rename", 1, {"name": "☁ a", "new_name": "☁ b"}]),
    );
    assert_eq!(next(&mut a), error_for(json!(1), "cloud.disabled"));
    call(&mut a, json!(["cloud.delete", 2, {"name": "☁ a"}]));
    assert_eq!(next(&mut a), error_for(json!(2), "cloud.disabled"));

    let server = Server::start(&["--enable-rename", "--enable-delete"]);
    let (mut a, _) = authenticated(&server, "1", "a");
    let (mut b, _) = authenticated(&server, "1", "b");
    call(&mut a, json!(["cloud.set", 1, {"name": "☁ a", "value": 1}]));
    call(&mut a, json!(["cloud.set", 2, {"name": "☁ c", "value": 3}]));
    next(&mut a);
    next(&mut a);
    b.drain(Duration::from_millis(300));
    let cases = [
        (
            json!(["cloud.rename", 3, {"name": "☁ zz", "new_name": "☁ b"}]),
            error_for(json!(3), "cloud.unknown_variable"),
        ),
        (
            json!(["cloud.rename", 4, {"name": "☁ a", "new_name": "☁ c"}]),
            error_for(json!(4), "cloud.name_taken"),
        ),
        (
            json!(["cloud.rename", 5, {"name": "☁ a", "new_name": "bad"}]),
            error_for(json!(5), "cloud.invalid_name"),
        ),
        (
            json!(["cloud.rename", 6, {"name": "☁ a"}]),
            error_for(json!(6), "protocol.invalid"),
        ),
        (
            json!(["cloud.delete", 7, {"name": "☁ zz"}]),
            error_for(json!(7), "cloud.unknown_variable"),
        ),
        (
            json!(["cloud.rename", 8, {"name": "☁ a", "new_name": "☁ b"}]),
            json!(["success", 8, {}]),
        ),
        (
            json!(["cloud.delete", 9, {"name": "☁ c"}]),
            json!(["success", 9, {}]),
        ),
    ];
    for (request, reply) in cases {
        call(&mut a, request.clone());
        assert_eq!(next(&mut a), reply, "{request}");
    }
    assert_eq!(
        next(&mut b),
        json!(["cloud.set", {"name": "☁ b", "value": 1}])
    );
    call(&mut b, json!(["cloud.get", 1, {}]));
    assert_eq!(
        next(&mut b),
        json!(["success", 1, {"variables": {"☁ b": 1}}])
    );
}

#[test]
fn too_many_messages_is_rate_limited_then_closed_4004_while_others_go_on() {
    let server = Server::start(&["--message-rate", "1", "--message-burst", "5"]);
    let (mut calm, _) = authenticated(&server, "1", "calm");
    let mut flood = world(&server, "1");
    for i in 0..10 {
        call(&mut flood, json!(["ping", i]));
    }
    let mut replies = Vec::new();
    loop {
        let reply = next(&mut flood);
        if reply[0] == "error" {
            assert_eq!(reply, error("connection.rate_limited"));
            break;
        }
        replies.push(reply);
    }
    assert!(
        (5..10).contains(&replies.len()),
        "the burst is answered, then the limit applies: {replies:?}"
    );
    assert_eq!(flood.close_code(), 4004);
    call(&mut calm, json!(["ping", 1]));
    assert_eq!(next(&mut calm), json!(["pong", 1]));
}

#[test]
fn a_full_room_or_server_is_world_full_and_closes_4003() {
    let server = Server::start(&["--max-clients-per-room", "1"]);
    let (_first, _) = authenticated(&server, "1", "first");
    let mut second = world(&server, "1");
    call(
        &mut second,
        json!(["authenticate", {"client_id": "second"}]),
    );
    assert_eq!(next(&mut second), error("world.full"));
    assert_eq!(second.close_code(), 4003);

    let server = Server::start(&["--max-rooms", "1"]);
    let (_first, _) = authenticated(&server, "1", "first");
    let mut other = world(&server, "2");
    call(&mut other, json!(["authenticate", {"client_id": "other"}]));
    assert_eq!(next(&mut other), error("world.full"));
    assert_eq!(other.close_code(), 4003);
}

#[test]
fn a_failure_inside_the_server_is_server_fatal_with_1011_for_that_connection_only() {
    let server = Server::start(&["--fault-rooms", "broken"]);
    let (mut fine, _) = authenticated(&server, "ok", "fine");
    let mut client = world(&server, "broken");
    call(&mut client, json!(["authenticate", {"client_id": "c"}]));
    assert_eq!(next(&mut client), error("server.fatal"));
    assert_eq!(client.close_code(), 1011);
    call(&mut fine, json!(["ping", 1]));
    assert_eq!(next(&mut fine), json!(["pong", 1]));
}

#[test]
fn a_users_oldest_connection_is_replaced_beyond_the_per_user_limit() {
    let server = Server::start(&["--max-connections-per-user", "1"]);
    let (mut old, _) = authenticated(&server, "1", "same");
    let (mut other_user, _) = authenticated(&server, "1", "other");
    let (mut other_room, _) = authenticated(&server, "2", "same");
    let (mut new, _) = authenticated(&server, "1", "same");
    assert_eq!(next(&mut old), error("connection.replaced"));
    assert_eq!(old.close_code(), 1000);
    for client in [&mut new, &mut other_user, &mut other_room] {
        call(client, json!(["ping", 1]));
        assert_eq!(next(client), json!(["pong", 1]));
    }
    // Without the option nobody is replaced.
    let server = Server::start(&[]);
    let (mut first, _) = authenticated(&server, "1", "same");
    let (_second, _) = authenticated(&server, "1", "same");
    call(&mut first, json!(["ping", 2]));
    assert_eq!(next(&mut first), json!(["pong", 2]));
}

/// Connects and authenticates with `payload`; `shown` is the name the log gives the client
/// (asserted: which name the operator reads for a client is what these tests are about, the
/// join itself is acknowledged by the reply).
fn authenticated_as(server: &Server, room: &str, payload: Value, shown: &str) -> Client {
    let mut client = world(server, room);
    call(&mut client, json!(["authenticate", payload]));
    let reply = next(&mut client);
    assert_eq!(reply[0], "authenticated", "{reply}");
    server.wait_for_log(&format!("\"{shown}\" {room}] joined (rpc)"));
    client
}

#[test]
fn a_client_id_equal_to_a_username_replaces_nobody_but_its_own_older_connection() {
    let server = Server::start(&["--max-connections-per-user", "1"]);
    let mut alice = authenticated_as(&server, "1", json!({"username": "alice"}), "alice");
    let mut previous: Option<Client> = None;
    for round in 0..6 {
        // Half of the rounds also borrow the username: the client id still decides.
        let payload = if round % 2 == 0 {
            json!({"client_id": "alice"})
        } else {
            json!({"client_id": "alice", "username": "alice"})
        };
        let mut spoofer = authenticated_as(&server, "1", payload, "alice");
        if let Some(mut older) = previous.take() {
            assert_eq!(next(&mut older), error("connection.replaced"));
            assert_eq!(older.close_code(), 1000);
        }
        call(
            &mut spoofer,
            json!(["cloud.set", round, {"name": "☁ n", "value": round}]),
        );
        assert_eq!(next(&mut spoofer), json!(["success", round, {}]));
        assert_eq!(
            next(&mut alice),
            json!(["cloud.set", {"name": "☁ n", "value": round}]),
            "round {round}: the user named alice keeps receiving"
        );
        previous = Some(spoofer);
    }
    call(&mut alice, json!(["ping", 1]));
    assert_eq!(next(&mut alice), json!(["pong", 1]));
}

#[test]
fn a_username_alone_over_the_per_user_limit_is_refused_and_the_first_stays() {
    let server = Server::start(&["--max-connections-per-user", "1"]);
    let mut first = authenticated_as(&server, "1", json!({"username": "bob"}), "bob");
    let mut second = world(&server, "1");
    call(&mut second, json!(["authenticate", 7, {"username": "bob"}]));
    assert_eq!(next(&mut second), error("connection.limit_reached"));
    assert_eq!(second.close_code(), 4003);
    call(&mut first, json!(["ping", 1]));
    assert_eq!(next(&mut first), json!(["pong", 1]), "the first bob stays");
    // The limit is per room, and a client id is counted on its own.
    let _elsewhere = authenticated_as(&server, "2", json!({"username": "bob"}), "bob");
    let _with_id = authenticated_as(
        &server,
        "1",
        json!({"client_id": "c", "username": "bob"}),
        "bob",
    );
    // Once the first bob is gone, the name is free again.
    first.close_with(1000);
    let _again = authenticated_as(&server, "1", json!({"username": "bob"}), "bob");
}

#[test]
fn shutdown_asks_rpc_clients_to_reload_then_closes_1001() {
    let mut server = Server::start(&[]);
    let (mut rpc, _) = authenticated(&server, "1", "c");
    let mut scratch = server.join_synced("1", "alice");
    server.signal(libc::SIGTERM);
    assert_eq!(next(&mut rpc), json!(["connection.reload", {}]));
    assert_eq!(rpc.close_code(), 1001);
    assert_eq!(scratch.close_code(), 1001);
    assert!(server.wait_for_exit().success());
}

#[test]
fn a_client_that_pipelines_requests_without_reading_is_paused_not_buffered() {
    let server = Server::start(&["--message-rate", "0", "--byte-rate", "0"]);
    let (mut a, _) = authenticated(&server, "1", "a");
    let big = "9".repeat(100_000);
    call(
        &mut a,
        json!(["cloud.set", 1, {"name": "☁ big", "value": big}]),
    );
    assert_eq!(next(&mut a), json!(["success", 1, {}]));
    let baseline = server.rss_kib();

    // Each cloud.get is answered with ~100 KB. Send thousands without reading any.
    let mut greedy = server.tcp();
    greedy
        .write_all(upgrade_request("/ws/world/1", "").as_bytes())
        .expect("write");
    greedy
        .write_all(&text_frame(r#"["authenticate",{"client_id":"greedy"}]"#))
        .expect("write");
    greedy
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let request = text_frame(r#"["cloud.get",1,{}]"#);
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while sent < 3_000 && Instant::now() < deadline {
        if write_some(&mut greedy, &request).is_err() {
            break;
        }
        sent += 1;
    }
    // Give the server time to read everything it is willing to read (3000 replies would be
    // 300 MB): a window for it to grow, which no poll can replace (nothing announces that it
    // did not).
    std::thread::sleep(Duration::from_secs(1));
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("sent {sent} requests; server grew {grown} KiB");
    assert!(sent > 100, "the server read some requests");
    assert!(
        grown < 40 * 1024,
        "a client that does not read its replies made the server grow by {grown} KiB"
    );
    // Everyone else is still served.
    let (mut b, payload) = authenticated(&server, "1", "b");
    assert_eq!(
        payload["variables"]["☁ big"].as_str().map(str::len),
        Some(100_000)
    );
    call(&mut b, json!(["cloud.set", 2, {"name": "☁ n", "value": 1}]));
    assert_eq!(next(&mut b), json!(["success", 2, {}]));
    assert_eq!(
        next(&mut a),
        json!(["cloud.set", {"name": "☁ n", "value": 1}])
    );
}

/// Writes `bytes` whole, or fails if the peer stops taking them.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)
}

#[test]
fn a_client_like_the_reference_client_calls_pings_and_reconnects() {
    let server = Server::start(&[]);
    let (mut watcher, _) = authenticated(&server, "game", "watcher");
    // Authenticate as soon as the socket opens, number calls from 1, ping with a timestamp.
    let mut client = world(&server, "game");
    call(&mut client, json!(["authenticate", {"client_id": "ref"}]));
    assert_eq!(next(&mut client)[0], "authenticated");
    let mut id = 0;
    for round in 0..3 {
        id += 1;
        call(
            &mut client,
            json!(["cloud.set", id, {"name": "☁ score", "value": round}]),
        );
        assert_eq!(next(&mut client), json!(["success", id, {}]));
        call(&mut client, json!(["ping", 1_700_000_000_000u64 + round]));
        assert_eq!(
            next(&mut client),
            json!(["pong", 1_700_000_000_000u64 + round])
        );
    }
    assert_eq!(
        watcher
            .drain(Duration::from_millis(300))
            .last()
            .map(String::as_str),
        Some(r#"["cloud.set",{"name":"☁ score","value":2}]"#)
    );
    // The connection dies without a close frame; the client reconnects a second later,
    // numbering its calls from 1 again, and finds the room as it was.
    drop(client);
    std::thread::sleep(Duration::from_secs(1));
    let mut client = world(&server, "game");
    call(&mut client, json!(["authenticate", {"client_id": "ref"}]));
    let reply = next(&mut client);
    assert_eq!(
        reply,
        json!(["authenticated", {"room": "game", "variables": {"☁ score": 2}}])
    );
    call(&mut client, json!(["cloud.get", 1, {}]));
    assert_eq!(
        next(&mut client),
        json!(["success", 1, {"variables": {"☁ score": 2}}])
    );
}

#[test]
fn the_server_still_sends_websocket_pings() {
    let server = Server::start(&["--ping-interval", "1"]);
    let mut stream = server.tcp();
    stream
        .write_all(upgrade_request("/ws/world/1", "").as_bytes())
        .expect("write");
    stream
        .write_all(&text_frame(r#"["authenticate",{"client_id":"c"}]"#))
        .expect("write");
    let (bytes, _) = read_until_eof(&mut stream, Duration::from_millis(2500));
    let opcodes = opcodes_in(&bytes);
    assert_eq!(opcodes.first(), Some(&0x1), "the authenticated reply first");
    assert!(opcodes.contains(&0x9), "a WebSocket ping: {opcodes:?}");
}
