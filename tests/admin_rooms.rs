//! The admin API's rooms side through the real binary: an operator's set reaching a Scratch
//! and an array-RPC client, delete, reset, rollback to a time before three sets, a kick in each
//! dialect (its close code and form), the rooms list paging over a room only on disk, and a
//! room's members with anonymized addresses.
//!
//! Ignored until the admin HTTP side (tokens, routing, bodies) is merged: they are written
//! against the documented API (`Authorization: Bearer`, `--admin-tokens FILE`).
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-root";

/// A tokens file naming operator `root`.
fn tokens_file() -> PathBuf {
    let path = unique_path(".tokens");
    std::fs::write(&path, format!("root {TOKEN}\n")).expect("write tokens");
    path
}

fn start(args: &[&str]) -> Server {
    let tokens = tokens_file();
    let mut all = vec!["--admin-tokens", tokens.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn start_on(dir: &Path, args: &[&str]) -> Server {
    let mut all = vec!["--data-dir", dir.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    start(&all)
}

/// One admin request with `body` (JSON text, or empty); the parsed response.
fn admin(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} /admin/api/v1/{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = HttpResponse::parse(&http_exchange(server, &request));
    let json = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body));
    (response.status, json)
}

fn world(server: &Server, room: &str, client_id: &str) -> Client {
    let url = format!("ws://{}/ws/world/{room}", server.addr());
    let mut client = server.try_connect_with(&url, &[]).expect("upgrade");
    client.send(&json!(["authenticate", {"username": client_id}]).to_string());
    assert!(client.recv().contains("authenticated"));
    client
}

fn studio(server: &Server, user: &str, room: &str) -> Client {
    let mut client = server.connect();
    client.send(&json!({"kind": "HELLO", "username": user}).to_string());
    assert!(client.recv().contains("HELLO"));
    client.send(&json!({"kind": "JOIN_ROOM", "room": room}).to_string());
    assert!(client.recv().contains("JOINED_ROOM"));
    client
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("ms")
}

#[test]
fn a_set_by_the_api_reaches_scratch_and_array_rpc_clients_and_is_recorded() {
    let server = start(&[]);
    let mut scratch = server.join_synced("123", "alice");
    let mut rpc = world(&server, "123", "bob");
    rpc.sync();
    let (status, body) = admin(
        &server,
        "PUT",
        "rooms/123/variables/%E2%98%81%20score",
        r#"{"value": 42}"#,
    );
    assert_eq!((status, &body), (200, &json!({"ok": true})));
    assert_eq!(scratch.recv(), set_line("☁ score", "42"));
    let update = rpc.recv_containing("☁ score");
    assert!(update.contains("42"), "{update}");
    // History records the operator.
    let logs = http_exchange(
        &server,
        "GET /logs?projectid=123&limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(logs.contains("\"user\":\"@root\""), "{logs}");
    // A value the project refuses is a 400 with why.
    let (status, body) = admin(
        &server,
        "PUT",
        "rooms/123/variables/%E2%98%81%20score",
        r#"{"value": "text"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("numbers"),
        "{body}"
    );
}

#[test]
fn delete_and_reset_remove_variables() {
    let server = start(&[]);
    let mut client = server.join_synced("5", "alice");
    client.set("☁ a", "1");
    client.set("☁ b", "2");
    client.sync();
    let (status, _) = admin(&server, "DELETE", "rooms/5/variables/%E2%98%81%20a", "");
    assert_eq!(status, 200);
    let (status, _) = admin(&server, "DELETE", "rooms/5/variables/%E2%98%81%20a", "");
    assert_eq!(status, 404);
    let (_, room) = admin(&server, "GET", "rooms/5", "");
    assert_eq!(room["variables"].as_array().unwrap().len(), 1);
    let (status, body) = admin(&server, "POST", "rooms/5/reset", "");
    assert_eq!((status, &body), (200, &json!({"ok": true, "variables": 1})));
    let (_, room) = admin(&server, "GET", "rooms/5", "");
    assert_eq!(room["variables"], json!([]));
}

#[test]
fn rollback_to_a_time_before_three_sets() {
    let server = start(&["--history", "100", "--persist-interval", "100ms"]);
    let mut writer = server.join_synced("9", "alice");
    let mut watcher = server.join_synced("9", "bob");
    writer.set("☁ hi", "10");
    watcher.recv_containing("10");
    std::thread::sleep(Duration::from_millis(20));
    let before = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    for value in ["20", "30", "99999"] {
        writer.set("☁ hi", value);
        watcher.recv_containing(value);
    }
    let (status, body) = admin(
        &server,
        "POST",
        "rooms/9/rollback",
        &json!({"to": before}).to_string(),
    );
    assert_eq!((status, &body), (200, &json!({"ok": true, "variables": 1})));
    assert_eq!(watcher.recv(), set_line("☁ hi", "10"));
    let (_, room) = admin(&server, "GET", "rooms/9", "");
    assert_eq!(room["variables"][0]["value"], "10");
    assert_eq!(room["variables"][0]["user"], "@root");
    // Before the history's first entry: 409.
    let (status, body) = admin(&server, "POST", "rooms/9/rollback", r#"{"to": 1}"#);
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_kick_closes_each_dialect_in_its_denied_form() {
    let server = start(&[]);
    let mut scratch = server.join_synced("k", "Mallory");
    let mut legacy = server.legacy_join("k", "mallory", "{}");
    legacy.sync();
    let mut rpc = world(&server, "k", "MALLORY");
    let mut multi = studio(&server, "mallory", "k");
    let mut innocent = server.join_synced("k", "alice");
    let (status, body) = admin(
        &server,
        "POST",
        "kick",
        r#"{"room": "k", "user": "mallory"}"#,
    );
    assert_eq!((status, &body), (200, &json!({"ok": true, "kicked": 4})));
    assert_eq!(scratch.close_code(), 4002);
    assert_eq!(legacy.close_code(), 4002);
    assert_eq!(
        serde_json::from_str::<Value>(&rpc.recv()).unwrap(),
        json!(["error", {"code": "auth.denied"}])
    );
    assert_eq!(rpc.close_code(), 4002);
    assert_eq!(
        serde_json::from_str::<Value>(&multi.recv()).unwrap(),
        json!({"kind": "USER", "why": "kicked"})
    );
    assert_eq!(multi.close_code(), 4002);
    innocent.sync();
    // One connection by its id, as the room's member list shows it.
    let (_, room) = admin(&server, "GET", "rooms/k", "");
    // A string of digits (ids go beyond 2^53, where a browser's JSON.parse would round a
    // number), given back as it came.
    let id = room["members"][0]["connection"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    let (status, body) = admin(
        &server,
        "POST",
        "kick",
        &json!({"connection": id}).to_string(),
    );
    assert_eq!((status, &body), (200, &json!({"ok": true, "kicked": 1})));
    assert_eq!(innocent.close_code(), 4002);
    // The same id as a number is accepted too (here: gone now).
    let number: u64 = id.parse().unwrap();
    let (status, _) = admin(
        &server,
        "POST",
        "kick",
        &json!({"connection": number}).to_string(),
    );
    assert_eq!(status, 404);
}

#[test]
fn the_rooms_list_pages_over_rooms_in_memory_and_on_disk() {
    let dir = unique_path(".data");
    {
        let mut server = start_on(&dir, &["--persist-interval", "100ms"]);
        let mut client = server.join_synced("disk", "alice");
        client.set("☁ a", "12");
        client.sync();
        drop(client);
        server.terminate();
    }
    let server = start_on(&dir, &[]);
    let _a = server.join_synced("mem1", "alice");
    let _b = server.join_synced("mem2", "bob");
    let (status, page) = admin(&server, "GET", "rooms?offset=0&limit=2", "");
    assert_eq!(status, 200);
    let ids: Vec<_> = page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("mem1"), json!("mem2")]);
    let (_, page) = admin(&server, "GET", "rooms?offset=2&limit=2", "");
    assert_eq!(
        page["rooms"],
        json!([{"id": "disk", "members": 0, "variables": 1, "bytes": 7,
                "last_change": page["rooms"][0]["last_change"], "in_memory": false}])
    );
    assert_eq!(
        (page["offset"].clone(), page["limit"].clone()),
        (json!(2), json!(2))
    );
    // A room only on disk is shown from its stored variables; a change loads it first.
    let (_, room) = admin(&server, "GET", "rooms/disk", "");
    assert_eq!(
        (
            room["in_memory"].clone(),
            room["variables"][0]["value"].clone()
        ),
        (json!(false), json!("12"))
    );
    let (status, _) = admin(
        &server,
        "PUT",
        "rooms/disk/variables/%E2%98%81%20a",
        r#"{"value": 13}"#,
    );
    assert_eq!(status, 200);
    let (_, room) = admin(&server, "GET", "rooms/disk", "");
    assert_eq!(
        (
            room["in_memory"].clone(),
            room["variables"][0]["value"].clone()
        ),
        (json!(true), json!("13"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_rooms_members_show_their_anonymized_address() {
    let server = start(&["--anonymize-ips"]);
    let _client = server.join_synced("m", "Alice");
    let (status, room) = admin(&server, "GET", "rooms/m", "");
    assert_eq!(status, 200);
    let member = &room["members"][0];
    assert_eq!(member["user"], "Alice");
    assert_eq!(member["dialect"], "scratch");
    // The network the anonymized address stands for, so that a ban made from it covers it.
    assert_eq!(member["address"], "127.0.0.0/24");
    assert!(member["since"].as_u64().unwrap() > 0);
    let (status, _) = admin(&server, "GET", "rooms/nothing-here", "");
    assert_eq!(status, 404);
}

/// The address of a member at `index` of room `room`.
fn member_address(server: &Server, room: &str, index: usize) -> Value {
    let (status, answer) = admin(server, "GET", &format!("rooms/{room}"), "");
    assert_eq!(status, 200, "{answer}");
    answer["members"][index]["address"].clone()
}

#[test]
fn behind_a_trusted_proxy_members_show_the_client_it_names() {
    let server = start(&["--trust-proxy", "127.0.0.1"]);
    let mut client = server.connect_with(&[("X-Forwarded-For", "203.0.113.7")]);
    client.handshake("p", "alice");
    client.sync();
    assert_eq!(member_address(&server, "p", 0), "203.0.113.7");
}

#[test]
fn behind_a_trusted_proxy_a_ban_of_an_anonymized_member_address_covers_its_network() {
    let server = start(&["--trust-proxy", "127.0.0.1", "--anonymize-ips"]);
    let mut v4 = server.connect_with(&[("X-Forwarded-For", "203.0.113.7")]);
    v4.handshake("p", "alice");
    v4.sync();
    let mut v6 = server.connect_with(&[("X-Forwarded-For", "2001:db8:1:2::5")]);
    v6.handshake("p", "bob");
    v6.sync();
    let address = member_address(&server, "p", 0);
    assert_eq!(address, "203.0.113.0/24");
    assert_eq!(member_address(&server, "p", 1), "2001:db8:1::/48");
    let body = json!({"address": address, "seconds": 60}).to_string();
    let (status, answer) = admin(&server, "POST", "bans", &body);
    assert_eq!(status, 200, "{answer}");
    let mut neighbour = server.connect_with(&[("X-Forwarded-For", "203.0.113.200")]);
    assert_eq!(neighbour.close_code(), 4002);
}

/// Every store request waits 2 s, an answer is due within 1 s: an admin change that waits
/// for the store is answered 503.
fn slow_store_server(dir: &Path) -> Server {
    start_on(dir, &["--store-delay", "2s", "--handshake-timeout", "1"])
}

#[test]
fn a_set_answered_503_while_its_room_loads_is_not_made_later() {
    let dir = unique_path(".data");
    let server = slow_store_server(&dir);
    // Room "late" is not in memory: the set waits for its load, longer than the deadline.
    let (status, _) = admin(
        &server,
        "PUT",
        "rooms/late/variables/%E2%98%81%20a",
        r#"{"value": 7}"#,
    );
    assert_eq!(status, 503);
    // The load came back (and the set that waited for it was resumed, or dropped).
    server.wait_until_metric("stratus_store_rooms_loaded_total", 1);
    let (status, room) = admin(&server, "GET", "rooms/late", "");
    assert_eq!(status, 200);
    assert_eq!(room["variables"], json!([]), "{room}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rollback_answered_503_while_its_history_is_read_is_not_made_later() {
    let dir = unique_path(".data");
    // Every store request waits 1 s, an answer is due within 2 s.
    let server = start_on(&dir, &["--store-delay", "1s", "--handshake-timeout", "2"]);
    let mut writer = server.join_synced("r", "alice");
    writer.set("☁ hi", "10");
    writer.sync();
    std::thread::sleep(Duration::from_millis(20));
    let before = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    writer.set("☁ hi", "20");
    writer.sync();
    // Two loads ahead of it in the store's queue: the history read is back after 3 s.
    let _queued = [server.join("q1", "bob"), server.join("q2", "bob")];
    // An ordering aid only (the joins reach the loop before the rollback does): were they
    // late, the read would be back in time and the 503 assertion would fail, not pass.
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = admin(
        &server,
        "POST",
        "rooms/r/rollback",
        &json!({"to": before}).to_string(),
    );
    assert_eq!(status, 503);
    // The store answers in order: a load asked after the read comes back after it.
    let _after = server.join("after", "carol");
    server.wait_until_metric("stratus_store_rooms_loaded_total", 4);
    assert_eq!(server.metric("stratus_rooms"), 4);
    let (_, room) = admin(&server, "GET", "rooms/r", "");
    assert_eq!(room["variables"][0]["value"], "20", "{room}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The body of the public `/logs?{query}` as JSON, and its status.
fn public_logs(server: &Server, query: &str) -> (u16, Value) {
    let response = get(server, &format!("/logs?{query}"));
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[test]
fn a_rooms_history_pages_like_logs_and_stays_readable_for_a_blocked_project() {
    let server = start(&["--history", "100"]);
    let mut writer = server.join_synced("55", "alice");
    for value in ["1", "2", "3"] {
        writer.set("☁ hi", value);
    }
    writer.sync();
    let (status, history) = admin(&server, "GET", "rooms/55/history", "");
    assert_eq!(status, 200, "{history}");
    assert_eq!(history.as_array().map(Vec::len), Some(3), "{history}");
    assert_eq!(public_logs(&server, "projectid=55"), (200, history.clone()));
    let (status, page) = admin(&server, "GET", "rooms/55/history?offset=1&limit=1", "");
    assert_eq!(status, 200);
    assert_eq!(
        public_logs(&server, "projectid=55&offset=1&limit=1"),
        (200, page.clone())
    );
    assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
    // A blocked project's `/logs` is 404; its history is still the operator's to read.
    let body = json!({"project": "55"}).to_string();
    let (status, answer) = admin(&server, "POST", "blocks", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(public_logs(&server, "projectid=55").0, 404);
    assert_eq!(
        admin(&server, "GET", "rooms/55/history", ""),
        (200, history)
    );
}
