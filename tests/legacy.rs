//! cloud-server's older `kind` protocol (spec: legacy-v2.md): handshakes that declare the
//! room's variables, string values, and rooms shared with Scratch clients.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use common::*;

/// The lines of a frame, sorted, to compare frames whose line order is not specified.
fn sorted_lines(frame: &str) -> Vec<String> {
    let mut lines: Vec<String> = frame.split('\n').map(str::to_owned).collect();
    lines.sort();
    lines
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    lines.sort();
    lines
}

/// A legacy client that joined room `r` declaring `☁ a` = "1" and `☁ b` = "2", after taking
/// its initial frame (the room's values: the join's acknowledgement).
fn seeded(server: &Server, user: &str) -> Client {
    let mut client = server.legacy_join("r", user, r#"{"☁ a":"1","☁ b":"2"}"#);
    client.recv();
    client
}

#[test]
fn a_handshake_seeds_an_empty_room_and_gets_its_values_back() {
    let server = Server::start(&[]);
    let mut a = server.legacy_join("r", "alice", r#"{"☁ a":"1","☁ b":"2"}"#);
    assert_eq!(
        sorted_lines(&a.recv()),
        sorted(&[legacy_relayed("☁ a", "1"), legacy_relayed("☁ b", "2")])
    );
    a.expect_silence();
}

#[test]
fn a_client_declaring_the_same_names_gets_the_current_values() {
    let server = Server::start(&[]);
    let mut a = seeded(&server, "alice");
    let mut w = seeded(&server, "watcher");
    a.send(&legacy_set("☁ a", "5"));
    assert_eq!(w.recv(), legacy_relayed("☁ a", "5"));
    // Declared values do not overwrite a room that already has variables.
    let mut b = server.legacy_join("r", "bob", r#"{"☁ b":"0","☁ a":"0"}"#);
    assert_eq!(
        sorted_lines(&b.recv()),
        sorted(&[legacy_relayed("☁ a", "5"), legacy_relayed("☁ b", "2")])
    );
    b.expect_silence();
}

#[test]
fn a_client_declaring_other_names_closes_with_4001() {
    let server = Server::start(&[]);
    let mut a = seeded(&server, "alice");
    for variables in [
        r#"{"☁ a":"1"}"#,
        r#"{"☁ a":"1","☁ b":"2","☁ c":"3"}"#,
        r#"{"☁ a":"1","☁ c":"2"}"#,
        r#"{"☁ x":"1","☁ y":"2"}"#,
    ] {
        let mut other = server.legacy_join("r", "bob", variables);
        assert_eq!(other.close_code(), 4001, "{variables}");
    }
    a.expect_silence();
    // The room is unchanged.
    let mut c = server.legacy_join("r", "carol", r#"{"☁ a":"0","☁ b":"0"}"#);
    assert_eq!(
        sorted_lines(&c.recv()),
        sorted(&[legacy_relayed("☁ a", "1"), legacy_relayed("☁ b", "2")])
    );
}

#[test]
fn legacy_sets_reach_legacy_and_scratch_members_but_not_the_sender() {
    let server = Server::start(&[]);
    let mut a = seeded(&server, "alice");
    let mut b = seeded(&server, "bob");
    let mut s = server.join("r", "scratchy");
    assert_eq!(
        s.recv(),
        lines(&[relayed("☁ a", "\"1\""), relayed("☁ b", "\"2\"")])
    );
    a.send(&legacy_set("☁ a", "5"));
    assert_eq!(b.recv(), legacy_relayed("☁ a", "5"));
    assert_eq!(s.recv(), relayed("☁ a", "\"5\""));
    a.expect_silence();
}

#[test]
fn scratch_sets_reach_legacy_members_as_strings() {
    let server = Server::start(&[]);
    let mut l = seeded(&server, "alice");
    let mut s = server.join("r", "scratchy");
    // Its initial frame: it joined.
    s.recv();
    s.set("☁ a", "7");
    assert_eq!(l.recv(), legacy_relayed("☁ a", "7"));
    s.packager_set("☁ b", "-1.5");
    assert_eq!(l.recv(), legacy_relayed("☁ b", "-1.5"));
    s.set("☁ a", "\"8\"");
    assert_eq!(l.recv(), legacy_relayed("☁ a", "8"));
}

#[test]
fn a_legacy_client_may_join_a_room_scratch_clients_filled() {
    let server = Server::start(&[]);
    let mut s = server.join_synced("r", "scratchy");
    let mut w = server.join_synced("r", "watcher");
    s.send(&lines(&[set_line("☁ a", "3"), set_line("☁ b", "\"4\"")]));
    w.recv();
    let mut l = server.legacy_join("r", "alice", r#"{"☁ a":"0","☁ b":"0"}"#);
    assert_eq!(
        sorted_lines(&l.recv()),
        sorted(&[legacy_relayed("☁ a", "3"), legacy_relayed("☁ b", "4")])
    );
    l.send(&legacy_set("☁ b", "6"));
    assert_eq!(s.recv(), relayed("☁ b", "\"6\""));
    assert_eq!(w.recv(), relayed("☁ b", "\"6\""));
}

#[test]
fn protocol_violations_close_with_4000() {
    let server = Server::start(&[]);
    let _a = seeded(&server, "alice");
    // After the handshake.
    for frame in [
        legacy_set("☁ unknown", "1"),
        r#"{"kind":"rename","variable":"☁ a","value":"1"}"#.to_owned(),
        r#"{"variable":"☁ a","value":"1"}"#.to_owned(),
        r#"{"kind":"set","variable":"☁ a"}"#.to_owned(),
        r#"{"kind":"set","value":"1"}"#.to_owned(),
        r#"{"kind":"set","variable":"☁ a","value":1}"#.to_owned(),
        r#"{"kind":"set","variable":"☁ a","value":null}"#.to_owned(),
        legacy_handshake("r", "alice", r#"{"☁ a":"1","☁ b":"2"}"#),
        r#"{"method":"set","name":"☁ a","value":1}"#.to_owned(),
        "not json".to_owned(),
    ] {
        let mut client = seeded(&server, "bob");
        client.send(&frame);
        assert_eq!(client.close_code(), 4000, "{frame}");
    }
}

#[test]
fn malformed_handshakes_close_with_4000() {
    let server = Server::start(&[]);
    for frame in [
        legacy_set("☁ a", "1"),
        r#"{"kind":"hello","room":"r","username":"alice","variables":{}}"#.to_owned(),
        r#"{"kind":"handshake","room":"r","username":"alice"}"#.to_owned(),
        r#"{"kind":"handshake","username":"alice","variables":{"☁ a":"1"}}"#.to_owned(),
        r#"{"kind":"handshake","room":"r","variables":{"☁ a":"1"}}"#.to_owned(),
        r#"{"kind":"handshake","room":"r","username":"alice","variables":["☁ a"]}"#.to_owned(),
        legacy_handshake("r", "alice", r#"{"☁ a":1}"#),
        legacy_handshake("r", "alice", r#"{"☁ a":"abc"}"#),
        legacy_handshake("r", "alice", r#"{"a":"1"}"#),
        legacy_handshake("", "alice", r#"{"☁ a":"1"}"#),
    ] {
        let mut client = server.connect();
        client.send(&frame);
        assert_eq!(client.close_code(), 4000, "{frame}");
    }
}

#[test]
fn username_rules_apply_with_4002() {
    let server = Server::start(&[]);
    for user in ["", "a b", "ScratchCat", "x23456789012345678901"] {
        let mut client = server.legacy_join("r", user, r#"{"☁ a":"1"}"#);
        assert_eq!(client.close_code(), 4002, "{user:?}");
    }
}

#[test]
fn invalid_values_in_sets_are_ignored() {
    let server = Server::start(&[]);
    let mut a = seeded(&server, "alice");
    let mut b = seeded(&server, "bob");
    a.send(&legacy_set("☁ a", "abc"));
    a.send(&legacy_set("☁ a", "1e5"));
    a.send(&legacy_set("☁ b", "3"));
    assert_eq!(b.recv(), legacy_relayed("☁ b", "3"));
    b.expect_silence();
}

#[test]
fn flooding_closes_with_4004() {
    let server = Server::start(&["--message-rate", "10", "--message-burst", "20"]);
    let mut a = seeded(&server, "alice");
    let mut b = seeded(&server, "bob");
    for i in 0..100 {
        a.send(&legacy_set("☁ a", &i.to_string()));
    }
    assert_eq!(a.close_code(), 4004);
    b.drain(std::time::Duration::from_millis(300));
    let mut c = seeded(&server, "carol");
    c.send(&legacy_set("☁ b", "9"));
    assert_eq!(b.recv(), legacy_relayed("☁ b", "9"));
}

#[test]
fn a_username_change_close_is_logged() {
    let server = Server::start(&[]);
    let mut a = seeded(&server, "alice");
    a.close_with(4100);
    server.wait_for_log("\"alice\" r] client closed: 4100 (username change)");
}
