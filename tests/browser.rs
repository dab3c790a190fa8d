//! The cloud monitor page (`/cloudmonitor/<id>`) in a real browser: headless Chromium, driven
//! by tests/browser/monitor.py (selenium with the system chromedriver), watches a project
//! while a Scratch client sets values over a WebSocket.
//!
//! Skipped with a loud line when python3, selenium, chromium or chromedriver is missing,
//! unless `STRATUS_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes that a failure.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::python::PythonScript;
use common::{json_str, Server};
use serde_json::json;

const REQUIRE: &str = "STRATUS_REQUIRE_BROWSER";
const PROJECT: &str = "4242";

/// Asks the page to show `name` = `value` written by `user` (the history's `action`: "set",
/// or "create" for a set that made the variable), and checks it shows it as plain text: in the
/// variables table and the history, with no element or alert from the value.
fn assert_shown(page: &mut PythonScript, name: &str, value: &str, user: &str, action: &str) {
    let seen = page
        .ask(&json!({"expect": {"name": name, "value": value, "user": user, "action": action}}));
    assert_eq!(
        seen["variable"], true,
        "variables table lacks {name}={value}: {seen}"
    );
    assert_eq!(
        seen["history"], true,
        "history lacks {user} {action} {name}={value}: {seen}"
    );
    assert_eq!(seen["img_elements"], 0, "an <img> on the page: {seen}");
    assert_eq!(
        seen["unexpected_elements"],
        json!([]),
        "elements from a value: {seen}"
    );
    assert_eq!(seen["alerts"], json!([]), "an alert ran: {seen}");
}

#[test]
fn monitor_shows_live_sets_and_values_as_text() {
    let server = Server::start(&["--allow-non-numeric"]);
    let url = format!("http://{}/cloudmonitor/{PROJECT}", server.addr());
    let mut alice = server.join_synced(PROJECT, "alice");

    let Some((mut page, ready)) = PythonScript::start("browser/monitor.py", &[&url], REQUIRE)
    else {
        return;
    };
    assert_eq!(ready["ready"], true, "the page never went live: {ready}");

    // Set after the page loaded: it must arrive by the page's own polling.
    alice.set("☁ score", "12");
    alice.sync();
    assert_shown(&mut page, "☁ score", "12", "alice", "create");
    alice.set("☁ score", "13");
    alice.sync();
    assert_shown(&mut page, "☁ score", "13", "alice", "set");

    let attack = "<img src=x onerror=alert(1)>";
    let mut mallory = server.join_synced(PROJECT, "mallory");
    mallory.set("☁ note", &json_str(attack));
    mallory.sync();
    assert_shown(&mut page, "☁ note", attack, "mallory", "create");
}
