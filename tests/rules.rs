//! Per-project settings and variable rules through the real binary: each override changes its
//! project only, each rule refuses what it should in every dialect (and tells the setter in its
//! dialect's way), refusals are counted, SIGHUP applies new rules to connected clients, and a
//! broken project table is refused with its line at start and at reload.
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

/// Rules on several variables of project 10 (the README's high-score table, spread out).
const RULES: &str = r#"
tick-hz = 0

[projects."10".variables."☁ bounded"]
integer = true
min = 0
max = 100

[projects."10".variables."☁ up"]
only-increase = true

[projects."10".variables."☁ step"]
max-step = 10

[projects."10".variables."☁ admin"]
writers = ["Alice"]

[projects."10".variables."☁ slow"]
max-sets-per-minute = 2
"#;

fn start(config: &str) -> (Server, std::path::PathBuf) {
    let file = temp_file(config);
    let server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    (server, file)
}

/// A Scratch set that must be applied: the watcher gets it.
fn accepted(setter: &mut Client, watcher: &mut Client, name: &str, value: &str) {
    setter.set(name, value);
    assert_eq!(watcher.recv(), relayed(name, value), "{name} = {value}");
}

/// A Scratch set that must be refused: the setter's next frame carries `current` (when the
/// variable has one), and the watcher gets nothing: its next frame is a later set of `☁ marker`.
fn refused(
    setter: &mut Client,
    watcher: &mut Client,
    name: &str,
    value: &str,
    current: Option<&str>,
) {
    // What other members' sets brought the setter is read first.
    setter.sync();
    while setter.take_pending().is_some() {}
    setter.set(name, value);
    match current {
        // A catch-up frame: the current value, with whatever else changed since it.
        Some(current) => {
            let frame = setter.recv();
            let wanted = relayed(name, current);
            assert!(
                frame.lines().any(|line| line == wanted),
                "{name} = {value}: {frame}"
            );
        }
        None => setter.sync(),
    }
    setter.set("☁ marker", value);
    assert_eq!(
        watcher.recv(),
        relayed("☁ marker", value),
        "{name} = {value}"
    );
}

/// Joins a room that has variables: the first frame, their values, is read.
fn joined_with_values(server: &Server, project: &str, user: &str) -> Client {
    let mut client = server.join(project, user);
    client.recv();
    client
}

#[test]
fn each_rule_refuses_what_it_should_and_accepts_the_rest() {
    let (server, _file) = start(RULES);
    let mut alice = server.join_synced("10", "alice");
    let mut watcher = server.join_synced("10", "watcher");
    let w = &mut watcher;

    // integer, min and max: both bounds are allowed. A first value creates the variable
    // only if it passes (there is nothing to send back then).
    refused(&mut alice, w, "☁ bounded", "-1", None);
    accepted(&mut alice, w, "☁ bounded", "0");
    accepted(&mut alice, w, "☁ bounded", "100");
    refused(&mut alice, w, "☁ bounded", "101", Some("100"));
    refused(&mut alice, w, "☁ bounded", "-1", Some("100"));
    refused(&mut alice, w, "☁ bounded", "5.5", Some("100"));
    // A value that is not a number (the empty string is one Scratch may send) fails too.
    refused(&mut alice, w, "☁ bounded", "\"\"", Some("100"));
    accepted(&mut alice, w, "☁ bounded", "\"50\"");

    // only-increase: an equal value is accepted.
    accepted(&mut alice, w, "☁ up", "10");
    accepted(&mut alice, w, "☁ up", "10");
    refused(&mut alice, w, "☁ up", "9", Some("10"));

    // max-step, in both directions.
    accepted(&mut alice, w, "☁ step", "100");
    accepted(&mut alice, w, "☁ step", "90");
    refused(&mut alice, w, "☁ step", "79", Some("90"));
    accepted(&mut alice, w, "☁ step", "100");
    refused(&mut alice, w, "☁ step", "111", Some("100"));

    // writers, case-insensitive.
    accepted(&mut alice, w, "☁ admin", "1");
    let mut bob = joined_with_values(&server, "10", "bob");
    refused(&mut bob, w, "☁ admin", "2", Some("1"));
    let mut shouting = joined_with_values(&server, "10", "ALICE");
    accepted(&mut shouting, w, "☁ admin", "3");

    // max-sets-per-minute, per user: Alice's two connections share hers, Bob has his own.
    accepted(&mut alice, w, "☁ slow", "1");
    accepted(&mut shouting, w, "☁ slow", "2");
    refused(&mut alice, w, "☁ slow", "3", Some("2"));
    refused(&mut shouting, w, "☁ slow", "3", Some("2"));
    accepted(&mut bob, w, "☁ slow", "4");

    // Variables without a rule, and other projects, are not limited.
    accepted(&mut alice, w, "☁ free", "-5");
    let mut other = server.join_synced("11", "alice");
    let mut other_watcher = server.join_synced("11", "watcher");
    accepted(&mut other, &mut other_watcher, "☁ up", "10");
    accepted(&mut other, &mut other_watcher, "☁ up", "1");

    // Counted per project and rule.
    let count = |rule: &str| {
        server
            .try_metric(&format!(
                "stratus_rule_refusals_total{{project=\"10\",rule=\"{rule}\"}}"
            ))
            .unwrap_or(0)
    };
    assert_eq!(count("max"), 1);
    assert_eq!(count("min"), 2);
    assert_eq!(count("integer"), 2);
    assert_eq!(count("only-increase"), 1);
    assert_eq!(count("max-step"), 2);
    assert_eq!(count("writers"), 1);
    assert_eq!(count("max-sets-per-minute"), 2);
    assert_eq!(
        server.metric("stratus_sets_ignored_total{reason=\"rule_violated\"}"),
        11
    );
    assert!(server.logged("refused set of \"☁ bounded\": rule max"));
}

#[test]
fn a_legacy_client_whose_set_was_refused_gets_the_current_value() {
    let (server, _file) = start(RULES);
    let mut old = server.legacy_join("10", "old", r#"{"☁ up":"5"}"#);
    old.recv();
    let mut watcher = server.join("10", "watcher");
    assert_eq!(watcher.recv(), relayed("☁ up", "\"5\""), "its first frame");
    old.send(&legacy_set("☁ up", "4"));
    assert_eq!(old.recv(), legacy_relayed("☁ up", "5"));
    old.send(&legacy_set("☁ up", "6"));
    assert_eq!(watcher.recv(), relayed("☁ up", "\"6\""));
}

/// Connects to `/ws/world/<room>` and authenticates as `username`.
fn rpc_client(server: &Server, room: &str, username: &str) -> Client {
    let url = format!("ws://{}/ws/world/{room}", server.addr());
    let mut client = server.try_connect_with(&url, &[]).expect("upgrade");
    client.send(&json!(["authenticate", {"username": username}]).to_string());
    assert_eq!(next(&mut client)[0], "authenticated");
    client
}

fn next(client: &mut Client) -> Value {
    let text = client.recv();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn call(client: &mut Client, message: Value) -> Value {
    client.send(&message.to_string());
    next(client)
}

#[test]
fn array_rpc_clients_are_told_which_rule_refused_their_set() {
    let (server, _file) = start(RULES);
    let mut a = rpc_client(&server, "10", "alice");
    let mut b = rpc_client(&server, "10", "bob");
    let set = |id: u32, name: &str, value: Value| json!(["cloud.set", id, {"name": name, "value": value}]);
    assert_eq!(
        call(&mut a, set(1, "☁ up", json!(10))),
        json!(["success", 1, {}])
    );
    assert_eq!(
        next(&mut b),
        json!(["cloud.set", {"name": "☁ up", "value": 10}])
    );
    assert_eq!(
        call(&mut a, set(2, "☁ up", json!(3))),
        json!(["error", 2, {"code": "cloud.rule_violated", "rule": "only-increase"}])
    );
    assert_eq!(
        call(&mut b, set(3, "☁ admin", json!(3))),
        json!(["error", 3, {"code": "cloud.rule_violated", "rule": "writers"}])
    );
    // Nothing of the refused sets reached the other member.
    assert_eq!(
        call(&mut a, set(4, "☁ up", json!(11))),
        json!(["success", 4, {}])
    );
    assert_eq!(
        next(&mut b),
        json!(["cloud.set", {"name": "☁ up", "value": 11}])
    );
}

#[test]
fn multistudio_clients_get_a_rule_error() {
    let (server, _file) = start(RULES);
    let mut a = server.connect();
    a.send(&json!({"kind": "HELLO", "username": "alice"}).to_string());
    assert_eq!(next(&mut a)["kind"], "HELLO");
    a.send(&json!({"kind": "JOIN_ROOM", "room": "10"}).to_string());
    assert_eq!(next(&mut a)["kind"], "JOINED_ROOM");
    let set = |value: u32, rid: &str| json!({"kind": "SET", "room": "10", "name": "☁ step", "value": value, "rid": rid});
    assert_eq!(
        call(&mut a, set(50, "1")),
        json!({"kind": "OK", "rid": "1"})
    );
    assert_eq!(
        call(&mut a, set(61, "2")),
        json!({"kind": "RULE", "why": "max_step", "rule": "max-step", "rid": "2"})
    );
    assert_eq!(
        call(&mut a, set(60, "3")),
        json!({"kind": "OK", "rid": "3"})
    );
}

#[test]
fn each_override_changes_its_project_only() {
    let config = r#"
tick-hz = 0

[projects."20"]
allow-non-numeric = true
max-value-length = 3
max-variables-per-room = 1
enable-rename = true
enable-delete = false

[projects."21"]
read-only = true

[projects."22"]
max-clients-per-room = 1
"#;
    let file = temp_file(config);
    let server = Server::start(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--max-value-length",
        "8",
        "--enable-delete",
    ]);
    let set = |id: u32, name: &str, value: Value| json!(["cloud.set", id, {"name": name, "value": value}]);
    let ok = |id: u32| json!(["success", id, {}]);
    let err = |id: u32, code: &str| json!(["error", id, {"code": code}]);

    let mut special = rpc_client(&server, "20", "a");
    let mut plain = rpc_client(&server, "30", "a");
    // allow-non-numeric and max-value-length (a project's own, and the global flag).
    assert_eq!(call(&mut special, set(1, "☁ a", json!("abc"))), ok(1));
    assert_eq!(
        call(&mut special, set(2, "☁ a", json!("abcd"))),
        err(2, "cloud.invalid_value")
    );
    assert_eq!(
        call(&mut plain, set(1, "☁ a", json!("abc"))),
        err(1, "cloud.invalid_value")
    );
    assert_eq!(call(&mut plain, set(2, "☁ a", json!("12345678"))), ok(2));
    assert_eq!(
        call(&mut plain, set(3, "☁ a", json!("123456789"))),
        err(3, "cloud.invalid_value")
    );
    // max-variables-per-room.
    assert_eq!(
        call(&mut special, set(3, "☁ b", json!(1))),
        err(3, "cloud.too_many_variables")
    );
    assert_eq!(call(&mut plain, set(4, "☁ b", json!(1))), ok(4));
    // enable-rename and enable-delete (the latter on for every project but 20, by flag).
    let rename = json!(["cloud.rename", 5, {"name": "☁ a", "new_name": "☁ c"}]);
    assert_eq!(call(&mut special, rename.clone()), ok(5));
    assert_eq!(call(&mut plain, rename), err(5, "cloud.disabled"));
    let delete = |id: u32, name: &str| json!(["cloud.delete", id, {"name": name}]);
    assert_eq!(
        call(&mut special, delete(6, "☁ c")),
        err(6, "cloud.disabled")
    );
    assert_eq!(call(&mut plain, delete(6, "☁ b")), ok(6));

    // read-only: no set, no delete, whatever the global settings.
    let mut frozen = rpc_client(&server, "21", "a");
    assert_eq!(
        call(&mut frozen, set(1, "☁ a", json!(1))),
        json!(["error", 1, {"code": "cloud.rule_violated", "rule": "read-only"}])
    );
    assert_eq!(
        call(&mut frozen, delete(2, "☁ a")),
        err(2, "cloud.disabled")
    );

    // max-clients-per-room.
    let _first = server.join_synced("22", "one");
    let mut second = server.join("22", "two");
    assert_eq!(second.close_code(), 4003);
    let _others = [
        server.join_synced("30", "one"),
        server.join_synced("30", "two"),
    ];
}

#[test]
fn sighup_applies_new_rules_to_connected_clients_and_keeps_them_when_the_file_is_broken() {
    let (server, file) = start("tick-hz = 0\n");
    let mut a = server.join_synced("1", "alice");
    let mut watcher = server.join_synced("1", "watcher");
    accepted(&mut a, &mut watcher, "☁ s", "50");

    std::fs::write(
        &file,
        "tick-hz = 0\n[projects.\"1\".variables.\"☁ s\"]\nmax = 10\n",
    )
    .expect("write config");
    server.signal(libc::SIGHUP);
    server.wait_for_log("reload: project tables changed: 1 projects, 1 variable rules");
    server.wait_for_log("reloaded the configuration");
    refused(&mut a, &mut watcher, "☁ s", "11", Some("50"));
    accepted(&mut a, &mut watcher, "☁ s", "10");

    // A broken table is refused with its line; the rule in force stays.
    std::fs::write(
        &file,
        "tick-hz = 0\n[projects.\"1\".variables.\"☁ s\"]\nmax = 10\nmaximum = 5\n",
    )
    .expect("write config");
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("reload failed, keeping the running configuration");
    assert!(line.contains("line 4:"), "{line}");
    assert!(line.contains("maximum: unknown key"), "{line}");
    refused(&mut a, &mut watcher, "☁ s", "11", Some("10"));
}

#[test]
fn a_broken_project_table_stops_the_start_with_one_line_naming_its_line() {
    let file = temp_file("tick-hz = 30\n\n[projects.\"1\"]\nread-only = \"yes\"\n");
    let (status, output) = run_to_exit(&["--config", file.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(output.lines().count(), 1, "{output}");
    assert!(output.contains("line 4:"), "{output}");
    assert!(
        output.contains("read-only: expected true or false"),
        "{output}"
    );

    let file = temp_file("[projects.\"1\"]\nhistory = 500\n");
    let (status, output) = run_to_exit(&["--config", file.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("line 2:"), "{output}");
    assert!(output.contains("history is kept server-wide"), "{output}");
}

#[test]
fn print_config_shows_project_tables_with_their_sources() {
    let file = temp_file(RULES);
    let (status, output) = run_to_exit(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--print-config",
        "--max-clients-per-room",
        "64",
    ]);
    assert!(status.success(), "{output}");
    assert!(output.contains("\n[projects.\"10\"]  # file\n"), "{output}");
    assert!(
        output.contains("# max-clients-per-room = 64  # global"),
        "{output}"
    );
    assert!(
        output.contains(
            "[projects.\"10\".variables.\"☁ admin\"]  # file\nwriters = [\"Alice\"]  # file"
        ),
        "{output}"
    );
    assert!(output.contains("max = 100.0  # file"), "{output}");
    // The output is a configuration file that reads back.
    let echoed = temp_file(&output);
    let (status, again) = run_to_exit(&[
        "--config",
        echoed.to_str().expect("utf-8"),
        "--print-config",
        "--max-clients-per-room",
        "64",
    ]);
    assert!(status.success(), "{again}");
    let projects = |text: &str| text.split_once("\n[projects.").map(|(_, p)| p.to_owned());
    assert_eq!(projects(&again), projects(&output));
}

#[test]
fn a_variable_under_a_rule_is_neither_renamed_nor_deleted_nor_renamed_onto() {
    // Renaming and deleting are on: a rename could otherwise carry a value no rule checked onto
    // a protected name, and a delete then create would skip only-increase.
    let config = r#"
enable-rename = true
enable-delete = true

[projects."40".variables."☁ score"]
only-increase = true
writers = ["alice"]
"#;
    let file = temp_file(config);
    let server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    let set = |id: u32, name: &str, value: Value| json!(["cloud.set", id, {"name": name, "value": value}]);
    let rename = |id: u32, name: &str, new_name: &str| json!(["cloud.rename", id, {"name": name, "new_name": new_name}]);
    let delete = |id: u32, name: &str| json!(["cloud.delete", id, {"name": name}]);
    let ok = |id: u32| json!(["success", id, {}]);
    let disabled = |id: u32| json!(["error", id, {"code": "cloud.disabled"}]);

    let mut alice = rpc_client(&server, "40", "alice");
    let mut mallory = rpc_client(&server, "40", "mallory");
    assert_eq!(answer(&mut alice, set(1, "☁ score", json!(10))), ok(1));
    assert_eq!(answer(&mut mallory, set(1, "☁ mine", json!(5))), ok(1));
    // Not even its writer may rename or delete it.
    assert_eq!(
        answer(&mut alice, rename(2, "☁ score", "☁ old")),
        disabled(2)
    );
    assert_eq!(answer(&mut alice, delete(3, "☁ score")), disabled(3));
    // Nobody may rename another variable onto its name.
    assert_eq!(
        answer(&mut mallory, rename(2, "☁ mine", "☁ score")),
        disabled(2)
    );
    // Variables without a rule are renamed and deleted as before.
    assert_eq!(answer(&mut mallory, rename(3, "☁ mine", "☁ yours")), ok(3));
    assert_eq!(answer(&mut mallory, delete(4, "☁ yours")), ok(4));
    // The rule still holds.
    assert_eq!(
        answer(&mut alice, set(4, "☁ score", json!(9))),
        json!(["error", 4, {"code": "cloud.rule_violated", "rule": "only-increase"}])
    );
}

/// The reply to `message`, skipping the other members' changes relayed meanwhile.
fn answer(client: &mut Client, message: Value) -> Value {
    client.send(&message.to_string());
    loop {
        let reply = next(client);
        if reply[0] == "success" || reply[0] == "error" {
            return reply;
        }
    }
}

#[test]
fn refused_sets_from_a_client_that_does_not_read_cost_no_memory() {
    // Each refused set of a Scratch client is answered with the variable's current value.
    // A client that sends them without reading must not make the server queue one copy of a
    // large value per refusal: the answer is state (its next frame), like any catch-up.
    const VALUE_LEN: usize = 100_000;
    const REFUSALS: usize = 1_000;
    let config = r#"
[projects."50".variables."☁ big"]
writers = ["alice"]
"#;
    let file = temp_file(config);
    let server = Server::start(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--message-rate",
        "0",
        "--byte-rate",
        "0",
    ]);
    let mut alice = server.join_synced("50", "alice");
    let big = format!("\"{}\"", "7".repeat(VALUE_LEN));
    alice.set("☁ big", &big);
    alice.sync();
    // Mallory never reads: it takes the room's values at join, then only sends.
    let mut mallory = server.join("50", "mallory");
    let baseline = server.rss_kib();
    for i in 0..REFUSALS {
        mallory.set("☁ big", &i.to_string());
    }
    // Every refusal has been handled (counted) before memory is looked at.
    server.wait_until_metric(
        "stratus_sets_ignored_total{reason=\"rule_violated\"}",
        REFUSALS as u64,
    );
    let grown = server.rss_kib().saturating_sub(baseline);
    assert!(
        grown < 16 * 1024,
        "{REFUSALS} refused sets of a {VALUE_LEN}-byte variable grew the server by {grown} KiB"
    );
}
