//! Durable variables through the real binary and a real SQLite database: values survive
//! SIGTERM and `kill -9`, renames and deletes are kept, rooms load on join without holding up
//! anyone else, a slow disk costs no memory, and bad data directories stop the server at start.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Starts a server on `dir` with extra arguments.
fn start_on(dir: &Path, args: &[&str]) -> Server {
    let mut all = vec!["--data-dir", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn fresh_dir() -> std::path::PathBuf {
    unique_path(".data")
}

#[test]
fn values_come_back_after_sigterm_with_their_types() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("1", "alice");
    let mut w = server.join_synced("1", "watcher");
    a.set("☁ n", "1000");
    a.set("☁ s", "\"-2.5\"");
    w.drain(Duration::from_millis(300));
    let mut legacy = server.legacy_join("2", "old", r#"{"☁ k": "7"}"#);
    assert_eq!(legacy.recv(), legacy_relayed("☁ k", "7"));
    legacy.send(&legacy_set("☁ k", "8"));
    // The set is acknowledged by a round trip of another client in the room.
    let mut peer = server.legacy_join("2", "peer", r#"{"☁ k": "0"}"#);
    assert_eq!(peer.recv(), legacy_relayed("☁ k", "8"));
    assert!(server.terminate().success());
    // The operator is told the exit lost nothing.
    assert!(server.logged("every change is saved"));

    let server = start_on(&dir, &[]);
    let mut b = server.join("1", "bob");
    let snapshot = b.recv();
    assert!(snapshot.contains(&relayed("☁ n", "1000")), "{snapshot}");
    assert!(snapshot.contains(&relayed("☁ s", "\"-2.5\"")), "{snapshot}");
    let mut legacy = server.legacy_join("2", "old", r#"{"☁ k": "0"}"#);
    assert_eq!(legacy.recv(), legacy_relayed("☁ k", "8"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn values_older_than_the_interval_survive_kill_9() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &["--persist-interval", "100ms"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ x", "42");
    assert_eq!(b.recv(), relayed("☁ x", "42"));
    // A round of the interval has written the value.
    wait_until_saved(&server, 1);
    server.signal(libc::SIGKILL);
    server.wait_for_exit();

    let server = start_on(&dir, &[]);
    let mut c = server.join("1", "carol");
    assert_eq!(c.recv(), relayed("☁ x", "42"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn renames_and_deletes_are_kept() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &["--enable-rename", "--enable-delete"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ old", "1");
    a.set("☁ gone", "2");
    a.set("☁ kept", "3");
    b.drain(Duration::from_millis(300));
    a.send(r#"{"method":"rename","name":"☁ old","new_name":"☁ new"}"#);
    a.send(r#"{"method":"delete","name":"☁ gone"}"#);
    assert_eq!(b.recv(), relayed("☁ new", "1"));
    assert!(server.terminate().success());

    let server = start_on(&dir, &[]);
    let mut c = server.join("1", "carol");
    let mut lines: Vec<String> = c.recv().lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, [relayed("☁ kept", "3"), relayed("☁ new", "1")]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_room_loading_from_a_slow_disk_holds_up_only_its_own_joiner() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("stored", "alice");
    let mut w = server.join_synced("stored", "watcher");
    a.set("☁ x", "5");
    assert_eq!(w.recv(), relayed("☁ x", "5"));
    assert!(server.terminate().success());

    let server = start_on(&dir, &["--store-delay", "1s"]);
    let (mut a, mut b) = server.pair();
    // The joiner's handshake and a set in the same frame wait, in order, for the room.
    let mut joiner = server.connect();
    joiner.send(&lines(&[
        gui_handshake("stored", "carol"),
        set_line("☁ x", "6"),
    ]));
    // Meanwhile room 1 relays as usual.
    a.set("☁ y", "1");
    assert_eq!(b.recv(), relayed("☁ y", "1"));
    assert_eq!(
        server.metric(&open_series("scratch")),
        2,
        "the relay went first: only alice and bob have joined"
    );
    // Carol's initial frame: she joined.
    assert_eq!(joiner.recv(), relayed("☁ x", "5"));
    // Carol's own set came after her join, so it applied to the loaded room.
    let mut d = server.join("stored", "dave");
    assert_eq!(d.recv(), relayed("☁ x", "6"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_disk_costs_no_memory_and_holds_up_nobody() {
    let dir = fresh_dir();
    let server = start_on(
        &dir,
        &[
            "--store-delay",
            "500ms",
            "--persist-interval",
            "10ms",
            // History waiting for the disk is capped at this many entries per room, not
            // at the number of sets (the default, 1000 × 10 KB, would be a bound of its own).
            "--history",
            "8",
            "--message-rate",
            "0",
            "--byte-rate",
            "0",
        ],
    );
    let (mut a, mut b) = server.pair();
    let big = "9".repeat(10_000);
    for i in 0..8 {
        a.set(&format!("☁ v{i}"), &format!("\"{big}\""));
    }
    b.drain(Duration::from_millis(500));
    let baseline = server.rss_kib();
    // Thousands of changes while the store takes half a second per batch.
    for round in 0..200 {
        for i in 0..8 {
            a.set(&format!("☁ v{i}"), &format!("\"{round}{big}\""));
        }
    }
    a.set("☁ done", "1");
    let frames = b.drain(Duration::from_millis(500));
    assert!(frames.iter().any(|f| f.contains("☁ done")), "relay went on");
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("grew {grown} KiB while the store was slow");
    // One batch of the room (8 × 10 KB) may be out; nothing grows with the number of sets
    // (1600 sets × 10 KB would be 16 MB).
    assert!(grown < 8 * 1024, "grew {grown} KiB");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kind_room_on_disk_is_not_new() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &[]);
    let mut first = server.legacy_join("r", "old", r#"{"☁ a": "1"}"#);
    assert_eq!(first.recv(), legacy_relayed("☁ a", "1"));
    assert!(server.terminate().success());

    let server = start_on(&dir, &[]);
    // The room is empty in memory but not on disk: its variables must match.
    let mut mismatch = server.legacy_join("r", "other", r#"{"☁ b": "1"}"#);
    assert_eq!(mismatch.close_code(), 4001);
    let mut same = server.legacy_join("r", "same", r#"{"☁ a": "9"}"#);
    assert_eq!(same.recv(), legacy_relayed("☁ a", "1"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rpc_and_studio_clients_wait_for_a_loading_room_too() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &[]);
    let mut a = server.join_synced("w", "alice");
    let mut w = server.join_synced("w", "watcher");
    a.set("☁ x", "3");
    assert_eq!(w.recv(), relayed("☁ x", "3"));
    assert!(server.terminate().success());

    let server = start_on(&dir, &["--store-delay", "200ms"]);
    let url = format!("ws://{}/ws/world/w", server.addr());
    let mut rpc = server.try_connect_with(&url, &[]).expect("upgrade");
    rpc.send(r#"["authenticate",{"client_id":"c"}]"#);
    rpc.send(r#"["cloud.get",1,{}]"#);
    let reply: serde_json::Value = serde_json::from_str(&rpc.recv()).expect("json");
    assert_eq!(reply[1]["variables"], json!({"☁ x": 3}));
    let reply: serde_json::Value = serde_json::from_str(&rpc.recv()).expect("json");
    assert_eq!(reply, json!(["success", 1, {"variables": {"☁ x": 3}}]));

    let mut studio = server.connect();
    studio.send(r#"{"kind":"HELLO","username":"s"}"#);
    studio.recv();
    studio.send(r#"{"kind":"JOIN_ROOM","room":"w"}"#);
    let joined: serde_json::Value = serde_json::from_str(&studio.recv()).expect("json");
    assert_eq!(joined["variables"], json!({"☁ x": 3}));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_data_directories_stop_the_server_at_start_with_a_clear_message() {
    // A file where the directory should be.
    let file = temp_file("not a directory");
    let (status, output) = run_to_exit(&["--data-dir", file.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(output.contains("cannot create data directory"), "{output}");

    // A database file that is not SQLite, or SQLite but not ours: never touched.
    let dir = fresh_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let db = dir.join("stratus.db");
    std::fs::write(&db, "these are my notes, not a database").expect("write");
    let (status, output) = run_to_exit(&["--data-dir", dir.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(
        output.contains("not a readable SQLite database"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(&db).expect("read"),
        "these are my notes, not a database"
    );
    std::fs::remove_file(&db).expect("rm");
    let other = rusqlite_free_sqlite_file(&db);
    let (status, output) = run_to_exit(&["--data-dir", dir.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(output.contains("not a stratus database"), "{output}");
    assert_eq!(std::fs::read(&db).expect("read"), other, "left untouched");

    // An unwritable directory (root ignores permissions, so use a path below a file).
    let below_file = file.join("data");
    let (status, output) = run_to_exit(&["--data-dir", below_file.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(output.contains("cannot create data directory"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

/// Writes a valid SQLite database that belongs to another program; returns its bytes.
fn rusqlite_free_sqlite_file(path: &Path) -> Vec<u8> {
    let bytes = foreign_database_bytes();
    std::fs::write(path, &bytes).expect("write foreign db");
    bytes
}

fn foreign_database_bytes() -> Vec<u8> {
    // Built by the server itself in a scratch directory, then marked as another program's by
    // changing the application id in the header (bytes 68..72), as `PRAGMA application_id`
    // would.
    let dir = fresh_dir();
    let mut server = Server::start(&["--data-dir", dir.to_str().expect("utf-8")]);
    assert!(server.terminate().success());
    let mut bytes = std::fs::read(dir.join("stratus.db")).expect("read db");
    bytes[68..72].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

#[test]
fn two_servers_cannot_share_a_data_directory() {
    let dir = fresh_dir();
    let _first = start_on(&dir, &[]);
    let (status, output) = run_to_exit(&["--data-dir", dir.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(
        output.contains("in use by another stratus process"),
        "{output}"
    );
    drop(_first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_and_import_move_rooms_between_data_directories() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &["--persist-interval", "50ms"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ n", "12");
    a.set("☁ s", "\"034\"");
    b.drain(Duration::from_millis(300));
    wait_until_saved(&server, 2);
    let mut other = server.join_synced("2", "carol");
    other.set("☁ z", "1");
    wait_until_saved(&server, 3);

    // Export works next to the running server.
    let export = stratus_command()
        .args(["export", "--data-dir", dir.to_str().expect("utf-8")])
        .output()
        .expect("run export");
    assert!(export.status.success(), "{export:?}");
    let exported: serde_json::Value = serde_json::from_slice(&export.stdout).expect("json");
    assert_eq!(exported["rooms"]["1"], json!({"☁ n": 12, "☁ s": "034"}));
    assert_eq!(exported["rooms"]["2"], json!({"☁ z": 1}));
    let one = stratus_command()
        .args([
            "export",
            "--room",
            "2",
            "--data-dir",
            dir.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run export");
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).expect("json");
    assert_eq!(one["rooms"], json!({"2": {"☁ z": 1}}));
    let rooms_of = |key: &str| one[key].as_object().map(|o| o.keys().cloned().collect());
    assert_eq!(rooms_of("writers"), Some(vec!["2".to_owned()]));
    assert_eq!(rooms_of("history"), Some(vec!["2".to_owned()]));

    // Import refuses a running server's directory, and fills a fresh one.
    let file = temp_file(&String::from_utf8_lossy(&export.stdout));
    let refused = stratus_command()
        .args(["import", file.to_str().expect("utf-8")])
        .args(["--data-dir", dir.to_str().expect("utf-8")])
        .output()
        .expect("run import");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    assert!(server.terminate().success());

    let target = fresh_dir();
    let imported = stratus_command()
        .args(["import", file.to_str().expect("utf-8")])
        .args(["--data-dir", target.to_str().expect("utf-8")])
        .output()
        .expect("run import");
    assert!(imported.status.success(), "{imported:?}");
    let server = start_on(&target, &[]);
    let mut c = server.join("1", "dave");
    let mut lines: Vec<String> = c.recv().lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, [relayed("☁ n", "12"), relayed("☁ s", "\"034\"")]);

    let garbage = temp_file("{\"rooms\": {\"1\": {\"no prefix\": 1}}}");
    let rejected = stratus_command()
        .args(["import", garbage.to_str().expect("utf-8")])
        .args(["--data-dir", fresh_dir().to_str().expect("utf-8")])
        .output()
        .expect("run import");
    assert!(!rejected.status.success());
    drop(server);
    for path in [&dir, &target] {
        let _ = std::fs::remove_dir_all(path);
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&garbage);
}

/// Waits until the store has written `count` variable values in all (each value of each
/// batch it confirmed).
fn wait_until_saved(server: &Server, count: u64) {
    wait_until(&format!("{count} values saved"), || {
        server.metric("stratus_store_variables_saved_total") >= count
    });
}

/// Sets the server's file size limit (what a full disk looks like to SQLite: writes fail).
fn limit_file_size(server: &Server, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on a child process with a valid rlimit value.
    let result = unsafe {
        libc::prlimit(
            server.child.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(result, 0, "prlimit");
}

#[test]
fn disk_errors_are_logged_and_retried_while_clients_are_served() {
    let dir = fresh_dir();
    let mut server = start_on(&dir, &["--persist-interval", "100ms"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ before", "1");
    assert_eq!(b.recv(), relayed("☁ before", "1"));
    wait_until_saved(&server, 1);
    // The disk is "full": no file may grow.
    limit_file_size(&server, 0);
    let big = "7".repeat(20_000);
    a.set("☁ during", &format!("\"{big}\""));
    assert_eq!(b.recv(), relayed("☁ during", &format!("\"{big}\"")));
    // The operator is told the disk failed.
    let logged = server.wait_for_log("storage: ");
    eprintln!("{logged}");
    // Still serving, from memory.
    b.set("☁ still", "2");
    assert_eq!(a.recv(), relayed("☁ still", "2"));
    // Room again on the disk: the next round writes the latest values.
    limit_file_size(&server, libc::RLIM_INFINITY);
    // "during" (owed again after its batch failed) and "still", in one round or two.
    wait_until_saved(&server, 3);
    assert!(server.terminate().success());

    let server = start_on(&dir, &[]);
    let mut c = server.join("1", "carol");
    let snapshot = c.recv();
    for name in ["☁ before", "☁ during", "☁ still"] {
        assert!(
            snapshot.contains(name),
            "{name} missing after the disk recovered"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
