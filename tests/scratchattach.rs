//! scratchattach (the Python Scratch library most cloud bots use) reading our `/logs`: its own
//! `ScratchCloud.logs` builds `CloudActivity` objects from our answer, and its cloud-request
//! handler finds who sent a request (`CloudRequests.get_requester`), which on a server without
//! history logs is `None`. Driven by tests/scratchattach/requester.py (how it points the
//! library at this server is described there).
//!
//! Skipped with a loud line when python3 or scratchattach is missing, unless
//! `STRATUS_REQUIRE_SCRATCHATTACH=1` (set by `.ci/run`), which makes that a failure.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::python::PythonScript;
use common::Server;
use serde_json::json;

const REQUIRE: &str = "STRATUS_REQUIRE_SCRATCHATTACH";
const PROJECT: &str = "5151";

#[test]
fn scratchattach_parses_our_logs_and_finds_the_requester() {
    let server = Server::start(&[]);
    let mut watcher = server.join_synced(PROJECT, "watcher");
    let mut alice = server.join_synced(PROJECT, "alice");
    let mut bob = server.join_synced(PROJECT, "bob");

    // Two cloud requests to a bot, as a project sends them on TO_HOST: strings (a request is
    // built with `join`; scratchattach's request parser reads only string values).
    alice.set("☁ TO_HOST", "\"1234.5678901\"");
    alice.sync();
    let from_alice = watcher.recv_containing("1234.5678901");
    bob.set("☁ TO_HOST", "\"999.1111111\"");
    bob.sync();
    let from_bob = watcher.recv_containing("999.1111111");

    let base = format!("http://{}", server.addr());
    let frames = json!([from_alice, from_bob]).to_string();
    let Some((_script, seen)) = PythonScript::start(
        "scratchattach/requester.py",
        &[&base, PROJECT, &frames],
        REQUIRE,
    ) else {
        return;
    };

    assert!(seen.get("error").is_none(), "scratchattach failed: {seen}");
    let activities = seen["activities"].as_array().expect("activities");
    let summary: Vec<_> = activities
        .iter()
        .map(|a| {
            json!([
                a["type"],
                a["name"],
                a["var"],
                a["value"],
                a["user"],
                a["username"],
                a["timestamp_is_int"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!([
                "set",
                "☁ TO_HOST",
                "☁ TO_HOST",
                "999.1111111",
                "bob",
                "bob",
                true
            ]),
            // The set that made the variable is logged as its creation.
            json!([
                "create",
                "☁ TO_HOST",
                "☁ TO_HOST",
                "1234.5678901",
                "alice",
                "alice",
                true
            ]),
        ],
        "scratchattach's CloudActivity objects, newest first: {seen}"
    );
    assert_eq!(
        seen["requesters"],
        json!(["alice", "bob"]),
        "who scratchattach says sent each request: {seen}"
    );
    assert_eq!(seen["get_var"], json!({"TO_HOST": "999.1111111"}), "{seen}");
}
