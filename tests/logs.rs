//! History read back over HTTP through the real binary: `GET /logs` and
//! `GET /api/v1/projects/<id>/variables` after changes from every dialect, across pages that
//! span the entries still in memory and those in SQLite, across restarts (SIGTERM and kill -9
//! after a save), with `--history` capping and turning it off, with hostile text, and the 503
//! answers of a store that is too slow or too busy. (Routing, validation and HTTP framing are
//! `api.rs`'s; the SQLite rows through `stratus export` are `history.rs`'s.)
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A persistent server on `dir`, with no API rate limit (the tests read many pages).
fn start_on(dir: &Path, args: &[&str]) -> Server {
    let mut all = vec![
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--api-rate",
        "0",
    ];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// One GET on its own connection, closed after the answer.
fn get_once(server: &Server, target: &str) -> HttpResponse {
    http(
        server,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A 200 JSON answer's body.
fn get_json(server: &Server, target: &str) -> Value {
    let response = get_once(server, target);
    assert_eq!(response.status, 200, "{target}: {response:?}");
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.body))
}

/// `/logs` entries as `user verb name value` lines, newest first, checking each entry's shape.
fn logs(server: &Server, query: &str) -> Vec<String> {
    let answer = get_json(server, &format!("/logs?{query}"));
    answer
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {answer}"))
        .iter()
        .map(|e| {
            let fields: Vec<&String> = e.as_object().unwrap().keys().collect();
            assert_eq!(
                fields,
                ["name", "timestamp", "user", "value", "verb"],
                "{e}"
            );
            assert!(e["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "{e}");
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

fn send_json(client: &mut Client, message: Value) {
    client.send(&message.to_string());
}

/// An array-RPC client in world `room`, authenticated with `identity`.
fn rpc_client(server: &Server, room: &str, identity: Value) -> Client {
    let url = format!("ws://{}/ws/world/{room}", server.addr());
    let mut client = server.try_connect_with(&url, &[]).expect("upgrade");
    send_json(&mut client, json!(["authenticate", identity]));
    client.recv();
    client
}

/// Waits until every change made so far is on disk, by metrics alone:
/// `stratus_store_rooms_unsaved` counts rooms no batch has taken yet (not those in the batch
/// out), and batches go out one at a time. So once it reads 0 the last batch holds every
/// change; a change in another room, taken by a later batch (0 again), proves that batch saved.
fn wait_until_saved(server: &Server) {
    server.wait_until_metric("stratus_store_rooms_unsaved", 0);
    let mut marker = server.join_synced("saved-marker", "Marker");
    let before = server.metric("stratus_store_batches_saved_total");
    marker.set("☁ m", &before.to_string());
    marker.sync();
    server.wait_until_metric("stratus_store_rooms_unsaved", 0);
}

#[test]
fn every_verb_from_every_dialect_reads_back_newest_first_with_its_user() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--enable-rename", "--enable-delete"]);

    // All four dialects share project 1's room. Legacy `kind` first: its declaration creates
    // the variables of an empty room (it must match a room's that has some).
    let mut legacy = server.legacy_join("1", "OldTimer", r#"{"☁ k": "7"}"#);
    legacy.send(&legacy_set("☁ k", "8"));
    legacy.sync();

    let mut scratch = server.join_synced("1", "Alice");
    scratch.send(r#"{"method":"create","name":"☁ a","value":"1"}"#);
    scratch.set("☁ a", "2");
    scratch.send(r#"{"method":"rename","name":"☁ a","new_name":"☁ b"}"#);
    scratch.sync();

    // Array-RPC: the username, else the client id.
    let mut named = rpc_client(&server, "1", json!({"client_id": "s1", "username": "Rita"}));
    send_json(
        &mut named,
        json!(["cloud.set", 1, {"name": "☁ r", "value": 1}]),
    );
    named.recv();
    send_json(
        &mut named,
        json!(["cloud.set", 2, {"name": "☁ r", "value": 2}]),
    );
    named.recv();
    send_json(
        &mut named,
        json!(["cloud.rename", 3, {"name": "☁ r", "new_name": "☁ q"}]),
    );
    named.recv();
    let mut anonymous = rpc_client(&server, "1", json!({"client_id": "cid-7"}));
    send_json(&mut anonymous, json!(["cloud.delete", 1, {"name": "☁ q"}]));
    anonymous.recv();

    // MultiStudio: the HELLO's username.
    let mut studio = server.connect();
    send_json(&mut studio, json!({"kind": "HELLO", "username": "Stu"}));
    studio.recv();
    send_json(&mut studio, json!({"kind": "JOIN_ROOM", "room": "1"}));
    studio.recv();
    for value in [5, 6] {
        send_json(
            &mut studio,
            json!({"kind": "SET", "room": "1", "name": "☁ s", "value": value}),
        );
    }
    studio.sync();

    // Scratch again, last: delete.
    scratch.send(r#"{"method":"delete","name":"☁ b"}"#);
    scratch.sync();

    let expected = [
        "Alice del_var ☁ b ",
        "Stu set_var ☁ s 6",
        "Stu create_var ☁ s 5",
        "cid-7 del_var ☁ q ",
        "Rita rename_var ☁ r ☁ q",
        "Rita set_var ☁ r 2",
        "Rita create_var ☁ r 1",
        "Alice rename_var ☁ a ☁ b",
        "Alice set_var ☁ a 2",
        "Alice create_var ☁ a 1",
        "OldTimer set_var ☁ k 8",
        "OldTimer create_var ☁ k 7",
    ];
    assert_eq!(logs(&server, "projectid=1"), expected);
    // Another project's log is its own.
    assert_eq!(logs(&server, "projectid=2"), Vec::<String>::new());

    // SIGTERM saves everything: the new process answers the same from the store.
    drop((scratch, legacy, named, anonymous, studio));
    assert!(server.terminate().success());
    let server = start_on(&dir, &[]);
    assert_eq!(logs(&server, "projectid=1"), expected);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest-first lines of `values` set as `☁ x` by Alice, the first one creating it.
fn expected_sets(values: std::ops::RangeInclusive<u32>) -> Vec<String> {
    values
        .rev()
        .map(|v| {
            let verb = if v == 1 { "create_var" } else { "set_var" };
            format!("Alice {verb} ☁ x {v}")
        })
        .collect()
}

#[test]
fn pages_cross_from_memory_into_the_store_without_duplicate_or_gap() {
    let dir = unique_path(".data");
    // 130 entries stored by a first process.
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("1", "Alice");
    for v in 1..=130 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    drop(a);
    assert!(server.terminate().success());

    // A second process saves its first change at once and the next ones only after a
    // minute: 131 entries on disk, 130 in memory while the test reads.
    let server = start_on(&dir, &["--persist-interval", "60s"]);
    let mut a = server.join_synced("1", "Alice");
    a.set("☁ x", "131");
    a.sync();
    // (One change: the first batch saved holds it.)
    wait_until("the first batch saved", || {
        server.metric("stratus_store_batches_saved_total") >= 1
    });
    let saved = server.metric("stratus_store_batches_saved_total");
    for v in 132..=261 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    let all = expected_sets(1..=261);

    // Pages of 100: the first from memory alone, the second across the boundary (memory's
    // last 30, then the store's), the third from the store.
    let mut read = Vec::new();
    for offset in [0, 100, 200] {
        let page = logs(&server, &format!("projectid=1&limit=100&offset={offset}"));
        assert_eq!(
            page,
            all[offset..(offset + 100).min(261)],
            "offset {offset}"
        );
        read.extend(page);
    }
    assert_eq!(read, all);
    // Small pages straddling the boundary, and the default limit of 100.
    assert_eq!(
        logs(&server, "projectid=1&offset=127&limit=6"),
        all[127..133]
    );
    assert_eq!(
        logs(&server, "projectid=1&offset=129&limit=1"),
        all[129..130]
    );
    assert_eq!(
        logs(&server, "projectid=1&offset=130&limit=1"),
        all[130..131]
    );
    assert_eq!(logs(&server, "projectid=1&offset=20"), all[20..120]);
    assert_eq!(
        logs(&server, "projectid=1&offset=261"),
        Vec::<String>::new()
    );
    // Nothing was saved meanwhile: the boundary stayed where the test put it.
    assert_eq!(server.metric("stratus_store_batches_saved_total"), saved);
    drop((a, server));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cap_keeps_the_newest_entries_also_after_a_restart() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--history", "5", "--persist-interval", "100ms"]);
    let mut a = server.join_synced("1", "Alice");
    // Two saves: the store trims what it holds (the engine alone bounds what waits for it).
    for v in 1..=4 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    wait_until_saved(&server);
    for v in 5..=8 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    wait_until_saved(&server);
    let newest = expected_sets(4..=8);
    assert_eq!(logs(&server, "projectid=1&limit=100"), newest);
    // A page past the cap is empty, one across it stops at it.
    assert_eq!(logs(&server, "projectid=1&offset=5"), Vec::<String>::new());
    assert_eq!(logs(&server, "projectid=1&offset=3&limit=10"), newest[3..]);
    drop(a);
    assert!(server.terminate().success());
    let server = start_on(&dir, &["--history", "5"]);
    assert_eq!(logs(&server, "projectid=1&limit=100"), newest);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_survives_kill_9_after_the_interval_s_save() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--persist-interval", "100ms"]);
    let mut a = server.join_synced("1", "Alice");
    for v in 1..=20 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    wait_until_saved(&server);
    server.signal(libc::SIGKILL);
    server.wait_for_exit();
    let server = start_on(&dir, &[]);
    assert_eq!(logs(&server, "projectid=1"), expected_sets(1..=20));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_variables_read_names_writer_and_time_and_leaves_a_stored_room_on_disk() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("1", "Alice");
    a.set("☁ x", "1");
    a.sync();
    let mut b = server.join_synced("1", "Bob");
    b.set("☁ y", "2");
    b.sync();

    // In memory.
    let live = get_json(&server, "/api/v1/projects/1/variables");
    assert_eq!(live["project"], "1");
    assert_eq!(live["variables"]["☁ x"]["value"], "1");
    assert_eq!(live["variables"]["☁ x"]["user"], "Alice");
    assert_eq!(live["variables"]["☁ y"]["user"], "Bob");
    for name in ["☁ x", "☁ y"] {
        let t = live["variables"][name]["timestamp"].as_u64().unwrap();
        assert!(t > 1_600_000_000_000, "{live}");
    }
    // Each variable's time is its last entry's.
    let history = get_json(&server, "/logs?projectid=1");
    assert_eq!(
        live["variables"]["☁ y"]["timestamp"],
        history[0]["timestamp"]
    );
    assert_eq!(
        live["variables"]["☁ x"]["timestamp"],
        history[1]["timestamp"]
    );

    // Only on disk: answered the same, and the room stays there.
    drop((a, b));
    assert!(server.terminate().success());
    let server = start_on(&dir, &[]);
    assert_eq!(server.metric("stratus_rooms"), 0);
    let stored = get_json(&server, "/api/v1/projects/1/variables");
    assert_eq!(stored, live);
    assert_eq!(server.metric("stratus_rooms"), 0);
    assert_eq!(server.metric("stratus_store_rooms_loaded_total"), 0);
    // A project nobody used: no variables.
    assert_eq!(
        get_json(&server, "/api/v1/projects/2/variables"),
        json!({"project": "2", "variables": {}})
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_names_values_and_users_come_back_intact() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--allow-non-numeric"]);
    let name = "☁ \"quoted\" \\ </script> 😀";
    let value = "a\"b\\c\u{1}\u{7f}\n\t</script><img src=x onerror=alert(1)> 😀 \u{2028}";
    let user = "q\"u\\o</script>😀";
    let mut a = server.join_synced("1", "Alice");
    send_json(
        &mut a,
        json!({"method": "set", "name": name, "value": value}),
    );
    a.sync();
    // An array-RPC client id may be any text: it is the user when no username is given.
    let mut rpc = rpc_client(&server, "1", json!({"client_id": user}));
    send_json(
        &mut rpc,
        json!(["cloud.set", 1, {"name": name, "value": "2"}]),
    );
    rpc.recv();

    let check = |server: &Server| {
        let history = get_json(server, "/logs?projectid=1");
        assert_eq!(history[0]["user"], user);
        assert_eq!(history[0]["name"], name);
        assert_eq!(history[0]["value"], "2");
        assert_eq!(history[1]["user"], "Alice");
        assert_eq!(history[1]["name"], name);
        assert_eq!(history[1]["value"], value);
        let variables = get_json(server, "/api/v1/projects/1/variables");
        assert_eq!(variables["variables"][name]["user"], user);
        assert_eq!(variables["variables"][name]["value"], "2");
    };
    check(&server);
    drop((a, rpc));
    assert!(server.terminate().success());
    let server = start_on(&dir, &[]);
    check(&server);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends a `/logs` request (with `headers`, each ending in CRLF) on a fresh connection and
/// returns it unread.
fn ask_logs(server: &Server, project: &str, headers: &str) -> std::net::TcpStream {
    let mut stream = server.tcp();
    let request = format!(
        "GET /logs?projectid={project} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("ask");
    stream
}

/// Everything the server writes on `stream` until it closes it.
fn read_to_close(stream: &mut std::net::TcpStream) -> String {
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        panic!(
            "{e}: not closed after {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    String::from_utf8(answer).expect("utf-8")
}

#[test]
fn a_read_the_store_does_not_answer_in_time_gets_503_and_the_connection_closes() {
    let dir = unique_path(".data");
    // Every request waits 3 s in the storage thread; answers are due within 1 s.
    let server = start_on(&dir, &["--store-delay", "3s", "--handshake-timeout", "1"]);
    // Project 9 is in no room: its history is read from the store.
    let mut stream = ask_logs(&server, "9", "");
    let answer = read_to_close(&mut stream);
    let response = HttpResponse::parse(&answer);
    assert_eq!(response.status, 503, "{answer}");
    assert_eq!(response.header("connection"), Some("close"), "{answer}");
    let error: Value = serde_json::from_str(&response.body).expect("a JSON error");
    assert!(error["error"].is_string(), "{error}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_beyond_the_store_s_queue_get_503_at_once() {
    let dir = unique_path(".data");
    // The storage thread takes 200 ms a request: reads pile up faster than it answers.
    let server = start_on(
        &dir,
        &["--store-delay", "200ms", "--handshake-timeout", "120"],
    );
    let mut waiting = Vec::new();
    let mut refused = None;
    for _ in 0..300 {
        let mut stream = ask_logs(&server, "9", "Connection: close\r\n");
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let mut first = [0u8; 12];
        if let Ok(12) = stream.read(&mut first) {
            refused = Some((stream, first));
            break;
        }
        waiting.push(stream);
    }
    let (mut stream, first) = refused.expect("a read refused before 300 were out");
    // Answered long before the 120 s deadline: the queue was full.
    let mut answer = String::from_utf8(first.to_vec()).expect("utf-8");
    answer.push_str(&read_to_close(&mut stream));
    let response = HttpResponse::parse(&answer);
    assert_eq!(response.status, 503, "{answer}");
    // At most 64 reads are out at once (the store's queue of 256 stays free for loads and
    // saves).
    assert!(
        (64..256).contains(&waiting.len()),
        "refused after {} reads",
        waiting.len()
    );
    assert!(server.metric("stratus_api_reads_refused_total") >= 1);
    drop((waiting, server));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_0_answers_an_empty_log_and_the_variables_read_still_works() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--history", "0"]);
    let mut a = server.join_synced("1", "Alice");
    a.set("☁ x", "5");
    a.sync();
    assert_eq!(get_once(&server, "/logs?projectid=1").body, "[]");
    let live = get_json(&server, "/api/v1/projects/1/variables");
    assert_eq!(live["variables"]["☁ x"]["value"], "5");
    assert_eq!(live["variables"]["☁ x"]["user"], "Alice");
    drop(a);
    assert!(server.terminate().success());
    let server = start_on(&dir, &["--history", "0"]);
    assert_eq!(get_once(&server, "/logs?projectid=1").body, "[]");
    assert_eq!(
        get_json(&server, "/api/v1/projects/1/variables"),
        live,
        "read from the store"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
