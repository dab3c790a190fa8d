//! The admin console (`/admin`) in a real browser: headless Chromium, driven by
//! tests/browser/admin.py (selenium with the system chromedriver), signs in with an operator's
//! token, sees a room appear when a Scratch client joins, sets a variable that the client then
//! receives, and shows a client's value as text.
//!
//! Skipped with a loud line when python3, selenium, chromium or chromedriver is missing,
//! unless `STRATUS_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes that a failure. The
//! browser is started before the server, so a skip needs nothing from the server.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::python::PythonScript;
use common::{http, json_str, relayed, temp_file, Server};
use serde_json::{json, Value};

const REQUIRE: &str = "STRATUS_REQUIRE_BROWSER";
const PROJECT: &str = "777";
const OPERATOR: &str = "ops";
/// At least 32 characters, as `--admin-tokens` requires.
const TOKEN: &str = "console-test-token-0123456789abcdefghij";

/// Asserts the token is nowhere a page or another site could read it back from the browser:
/// not in a cookie, not in the address, not in localStorage.
fn assert_token_not_kept(seen: &Value) {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    assert!(
        !text(&seen["cookie"]).contains(TOKEN),
        "token in document.cookie: {seen}"
    );
    assert!(
        !text(&seen["browser_cookies"]).contains(TOKEN),
        "token in a cookie: {seen}"
    );
    assert!(
        !text(&seen["href"]).contains(TOKEN),
        "token in the address: {seen}"
    );
    assert!(
        !text(&seen["local_storage"]).contains(TOKEN),
        "token in localStorage: {seen}"
    );
}

/// Asks the page to show `name` = `value` written by `user` in the room's variables and
/// history, and checks it shows it as plain text: no element or alert from the value.
fn assert_shown(page: &mut PythonScript, name: &str, value: &str, user: &str) {
    let seen = page.ask(&json!({"expect": {"name": name, "value": value, "user": user}}));
    assert_eq!(
        seen["variable"], true,
        "variables lack {name}={value} by {user}: {seen}"
    );
    assert_eq!(
        seen["history"], true,
        "history lacks {user} {name}={value}: {seen}"
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
fn console_signs_in_follows_a_room_sets_a_variable_and_shows_values_as_text() {
    let Some((mut page, ready)) = PythonScript::start("browser/admin.py", &[], REQUIRE) else {
        return;
    };
    assert_eq!(ready["ready"], true, "the browser did not start: {ready}");

    let tokens = temp_file(&format!("{OPERATOR} {TOKEN}\n"));
    let server = Server::start(&[
        "--admin-tokens",
        tokens.to_str().unwrap(),
        "--allow-non-numeric",
    ]);
    let url = format!("http://{}/admin", server.addr());

    // A wrong token is refused and the page asks again.
    let refused = page.ask(&json!({"login": {"url": url, "token": "x".repeat(40)}}));
    assert_eq!(
        refused["signed_in"], false,
        "signed in with a wrong token: {refused}"
    );

    let login = page.ask(&json!({"login": {"url": url, "token": TOKEN}}));
    assert_eq!(login["signed_in"], true, "could not sign in: {login}");
    assert_token_not_kept(&login);

    // The room appears while the page is open: by the page's own polling.
    let mut alice = server.join_synced(PROJECT, "alice");
    let rooms = page.ask(&json!({"expect_room": PROJECT}));
    assert_eq!(rooms["room"], true, "room {PROJECT} never listed: {rooms}");
    let opened = page.ask(&json!({"open": PROJECT}));
    assert_eq!(
        opened["opened"], true,
        "room {PROJECT} did not open: {opened}"
    );

    // A set from the page reaches the client, as a number.
    let set = page.ask(&json!({"set": {"name": "☁ score", "value": "42"}}));
    assert_eq!(set["done"], true, "the page's set failed: {set}");
    alice.recv_containing(&relayed("☁ score", "42"));
    assert_shown(&mut page, "☁ score", "42", &format!("@{OPERATOR}"));

    // A client's value that is HTML shows as its characters.
    let attack = "<img src=x onerror=alert(1)>";
    alice.set("☁ note", &json_str(attack));
    alice.sync();
    assert_shown(&mut page, "☁ note", attack, "alice");

    // Blocked, the project's public /logs is 404: the page reads history through the admin
    // API, so a change made now still shows there.
    let body = json!({"project": PROJECT}).to_string();
    let blocked = http(
        &server,
        &format!(
            "POST /admin/api/v1/blocks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(blocked.status, 200, "{}", blocked.body);
    let set = page.ask(&json!({"set": {"name": "☁ score", "value": "7"}}));
    assert_eq!(set["done"], true, "the page's set failed: {set}");
    assert_shown(&mut page, "☁ score", "7", &format!("@{OPERATOR}"));

    let after = page.ask(&json!({"expect_room": PROJECT}));
    assert_token_not_kept(&after);
    let _ = std::fs::remove_file(tokens);
}
