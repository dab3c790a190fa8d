//! History through the real binary: every verb from every dialect is stored with the user the
//! dialect knows, in the same SQLite database as the values, and survives SIGTERM and kill -9
//! within the persistence interval; read back with `stratus export`. (The HTTP reads are the
//! API's tests.)
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn start_on(dir: &Path, args: &[&str]) -> Server {
    let mut all = vec!["--data-dir", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn export(dir: &Path) -> Value {
    let out = stratus_command()
        .args(["export", "--data-dir", dir.to_str().expect("utf-8")])
        .output()
        .expect("run export");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The room's history as `user verb name value` lines, oldest first.
fn history(export: &Value, room: &str) -> Vec<String> {
    export["history"][room]
        .as_array()
        .unwrap_or_else(|| panic!("no history for {room}: {export}"))
        .iter()
        .map(|e| {
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

#[test]
fn every_verb_from_every_dialect_is_stored_with_its_user() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--enable-rename", "--enable-delete"]);

    // Scratch: the handshake's user, original case.
    let mut scratch = server.join_synced("1", "Alice");
    scratch.send(r#"{"method":"create","name":"☁ a","value":"1"}"#);
    scratch.set("☁ a", "2");
    scratch.set("☁ a", "3");
    scratch.send(r#"{"method":"rename","name":"☁ a","new_name":"☁ b"}"#);
    scratch.send(r#"{"method":"delete","name":"☁ b"}"#);
    scratch.sync();

    // Legacy `kind`: the handshake's username; its declaration creates the variables.
    let mut legacy = server.legacy_join("2", "OldTimer", r#"{"☁ k": "7"}"#);
    legacy.send(&legacy_set("☁ k", "8"));
    legacy.sync();

    // Array-RPC: the username, else the client id.
    let url = format!("ws://{}/ws/world/3", server.addr());
    let mut named = server.try_connect_with(&url, &[]).expect("upgrade");
    send_json(
        &mut named,
        json!(["authenticate", {"client_id": "secret-1", "username": "Rita"}]),
    );
    named.recv();
    send_json(
        &mut named,
        json!(["cloud.set", 1, {"name": "☁ r", "value": 1}]),
    );
    named.recv();
    send_json(
        &mut named,
        json!(["cloud.rename", 2, {"name": "☁ r", "new_name": "☁ q"}]),
    );
    named.recv();
    let mut anonymous = server.try_connect_with(&url, &[]).expect("upgrade");
    send_json(
        &mut anonymous,
        json!(["authenticate", {"client_id": "cid-7"}]),
    );
    anonymous.recv();
    send_json(
        &mut anonymous,
        json!(["cloud.set", 1, {"name": "☁ q", "value": 2}]),
    );
    anonymous.recv();
    send_json(&mut anonymous, json!(["cloud.delete", 2, {"name": "☁ q"}]));
    anonymous.recv();

    // MultiStudio: the HELLO's username.
    let mut studio = server.connect();
    send_json(&mut studio, json!({"kind": "HELLO", "username": "Stu"}));
    studio.recv();
    send_json(&mut studio, json!({"kind": "JOIN_ROOM", "room": "4"}));
    studio.recv();
    send_json(
        &mut studio,
        json!({"kind": "SET", "room": "4", "name": "☁ s", "value": 5}),
    );
    studio.sync();

    assert!(server.terminate().success());
    let exported = export(&dir);
    assert_eq!(
        history(&exported, "1"),
        [
            "Alice create_var ☁ a 1",
            "Alice set_var ☁ a 2",
            "Alice set_var ☁ a 3",
            "Alice rename_var ☁ a ☁ b",
            "Alice del_var ☁ b ",
        ]
    );
    assert_eq!(
        history(&exported, "2"),
        ["OldTimer create_var ☁ k 7", "OldTimer set_var ☁ k 8"]
    );
    assert_eq!(
        history(&exported, "3"),
        [
            "Rita create_var ☁ r 1",
            "Rita rename_var ☁ r ☁ q",
            "cid-7 set_var ☁ q 2",
            "cid-7 del_var ☁ q ",
        ]
    );
    assert_eq!(history(&exported, "4"), ["Stu create_var ☁ s 5"]);
    // Each variable keeps its last writer and time.
    assert_eq!(exported["writers"]["2"]["☁ k"]["user"], "OldTimer");
    assert!(
        exported["writers"]["2"]["☁ k"]["timestamp"]
            .as_u64()
            .unwrap()
            > 1_600_000_000_000
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_survives_kill_9_after_a_persistence_round_and_is_capped() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &["--persist-interval", "100ms", "--history", "3"]);
    let mut a = server.join_synced("1", "Alice");
    for v in 1..=5 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    wait_until("the last value saved", || {
        server.metric("stratus_store_variables_saved_total") >= 1
            && export(&dir)["rooms"]["1"]["☁ x"] == json!(5)
    });
    server.signal(libc::SIGKILL);
    server.wait_for_exit();
    let exported = export(&dir);
    assert_eq!(
        history(&exported, "1"),
        [
            "Alice set_var ☁ x 3",
            "Alice set_var ☁ x 4",
            "Alice set_var ☁ x 5",
        ]
    );
    // After a restart the room's sequence numbers continue.
    let mut server = start_on(&dir, &["--history", "3"]);
    let mut b = server.join_synced("1", "Bob");
    b.set("☁ x", "6");
    b.sync();
    assert!(server.terminate().success());
    let exported = export(&dir);
    let entries = exported["history"]["1"].as_array().unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(entries[2]["user"], "Bob");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_export_carries_history_into_another_data_directory_and_old_exports_still_import() {
    let dir = unique_path(".data");
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("1", "Alice");
    a.set("☁ x", "1");
    a.sync();
    assert!(server.terminate().success());
    let exported = export(&dir);
    let file = unique_path(".json");
    std::fs::write(&file, exported.to_string()).expect("write");
    let other = unique_path(".data");
    let imported = stratus_command()
        .args([
            "import",
            file.to_str().unwrap(),
            "--data-dir",
            other.to_str().unwrap(),
        ])
        .output()
        .expect("import");
    assert!(imported.status.success(), "{imported:?}");
    let again = export(&other);
    assert_eq!(again["history"], exported["history"]);
    assert_eq!(again["writers"], exported["writers"]);

    // The previous release's format: rooms only.
    let old = unique_path(".json");
    std::fs::write(&old, r#"{"rooms": {"9": {"☁ y": 4}}}"#).expect("write");
    let third = unique_path(".data");
    let imported = stratus_command()
        .args([
            "import",
            old.to_str().unwrap(),
            "--data-dir",
            third.to_str().unwrap(),
        ])
        .output()
        .expect("import");
    assert!(imported.status.success(), "{imported:?}");
    assert_eq!(export(&third)["rooms"]["9"]["☁ y"], json!(4));
    for path in [&dir, &other, &third] {
        let _ = std::fs::remove_dir_all(path);
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&old);
}

#[test]
fn entries_waiting_for_a_slow_store_are_capped_oldest_first_and_counted() {
    let dir = unique_path(".data");
    // The first change goes out at once; the next batch only after a minute.
    let mut server = start_on(&dir, &["--persist-interval", "60s", "--history", "2"]);
    let mut a = server.join_synced("1", "Alice");
    a.set("☁ x", "1");
    a.sync();
    wait_until("the first batch saved", || {
        server.metric("stratus_store_variables_saved_total") >= 1
    });
    for v in 2..=6 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    assert_eq!(server.metric("stratus_history_dropped_total"), 3);
    assert!(server.terminate().success());
    assert_eq!(
        history(&export(&dir), "1"),
        ["Alice set_var ☁ x 5", "Alice set_var ☁ x 6"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `/logs` page's values, newest first.
fn logs_values(server: &Server, query: &str) -> Vec<String> {
    let response = get(server, &format!("/logs?{query}"));
    assert_eq!(response.status, 200, "{}", response.body);
    let page: Value = serde_json::from_str(&response.body).expect("json");
    page.as_array()
        .expect("array")
        .iter()
        .map(|e| e["value"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_page_across_memory_and_disk_has_no_gap_while_a_save_crosses_its_read() {
    let dir = unique_path(".data");
    // The first change goes out at once; the store takes 2 s per request, so that batch is
    // still out when the page is asked, and is written before the page's read.
    let mut server = start_on(
        &dir,
        &[
            "--persist-interval",
            "60s",
            "--store-delay",
            "2s",
            "--api-rate",
            "0",
        ],
    );
    let mut a = server.join_synced("1", "Alice");
    for v in 1..=5 {
        a.set("☁ x", &v.to_string());
    }
    a.sync();
    assert_eq!(
        server.metric("stratus_store_batches_saved_total"),
        0,
        "the first batch is still out"
    );
    // Entries 5..1 are in memory, 1 of them in the batch out; the page's last two positions
    // (entries 2 and 1) are asked by sequence number, and 1 is on disk when they are read.
    assert_eq!(
        logs_values(&server, "projectid=1&offset=3&limit=3"),
        ["2", "1"]
    );
    assert_eq!(server.metric("stratus_store_batches_saved_total"), 1);
    assert_eq!(
        logs_values(&server, "projectid=1&offset=0&limit=10"),
        ["5", "4", "3", "2", "1"]
    );
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_answer_stops_near_one_mebibyte_and_is_still_valid_json() {
    let server = Server::start(&["--api-rate", "0", "--allow-non-numeric"]);
    let mut a = server.join_synced("1", "Alice");
    let big = format!("\"{}\"", "a".repeat(100_000));
    for i in 0..30 {
        a.set(&format!("☁ v{i}"), &big);
    }
    a.sync();
    let response = get(&server, "/logs?projectid=1&limit=30");
    assert_eq!(response.status, 200);
    assert!(
        response.body.len() <= 1 << 20,
        "{} bytes",
        response.body.len()
    );
    let page: Value = serde_json::from_str(&response.body).expect("json");
    let names: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!((5..30).contains(&names.len()), "{}", names.len());
    assert_eq!(names[0], "☁ v29", "newest first");

    // The variables read of a room with more than fits: the first in the room's order.
    let response = get(&server, "/api/v1/projects/1/variables");
    assert_eq!(response.status, 200);
    assert!(
        response.body.len() <= 1 << 20,
        "{} bytes",
        response.body.len()
    );
    let read: Value = serde_json::from_str(&response.body).expect("json");
    let variables = read["variables"].as_object().unwrap();
    assert!((5..30).contains(&variables.len()), "{}", variables.len());
    assert!(variables.contains_key("☁ v0"));
    assert!(!variables.contains_key("☁ v29"));
}

#[test]
fn reads_beyond_64_out_are_refused_and_counted() {
    use std::io::{BufRead, BufReader, Write};
    let dir = unique_path(".data");
    // Each read takes the store 50 ms: the 80 are all asked long before 16 are answered.
    let server = start_on(&dir, &["--store-delay", "50ms", "--api-rate", "0"]);
    // 80 reads of a room not in memory, all asked before the first is answered.
    let mut conns: Vec<_> = (0..80)
        .map(|_| {
            let mut tcp = server.tcp();
            // The last of 64 reads at 50 ms each comes after about 3 s.
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .expect("timeout");
            tcp.write_all(
                b"GET /api/v1/projects/5/variables HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .expect("write");
            tcp
        })
        .collect();
    let mut statuses = Vec::new();
    for tcp in &mut conns {
        let mut line = String::new();
        BufReader::new(tcp)
            .read_line(&mut line)
            .expect("status line");
        statuses.push(line.split(' ').nth(1).unwrap_or_default().to_owned());
    }
    let refused = statuses.iter().filter(|s| *s == "503").count();
    assert!(refused >= 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| *s == "200").count() + refused,
        80,
        "{statuses:?}"
    );
    assert_eq!(
        server.metric("stratus_api_reads_refused_total"),
        refused as u64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_above_its_bound_is_refused_with_a_clear_message() {
    let (status, output) = run_to_exit(&["--history", "100001"]);
    assert!(!status.success());
    assert!(output.contains("at most 100000"), "{output}");
}
