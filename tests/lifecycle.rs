//! A connection's life and the server's: deadlines, keepalive pings, leaving, rooms outliving
//! their members, client close codes in the log, and shutting down on a signal.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

/// Reads a response head (up to its empty line, a little at a time) and returns its bytes.
fn read_head(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            other => panic!(
                "no complete head ({other:?}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    bytes
}

#[test]
fn a_websocket_without_a_handshake_is_closed_with_4000_after_the_deadline() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut idle = server.connect();
    assert_eq!(idle.close_code(), 4000);
    // The operator is told why.
    server.wait_for_log("closing: 4000 no handshake in time");
}

#[test]
fn a_tcp_connection_without_a_request_is_closed_after_the_deadline() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut silent = server.tcp();
    let (bytes, eof) = read_until_eof(&mut silent, Duration::from_secs(8));
    assert!(eof, "the server kept a silent connection open");
    let response = String::from_utf8_lossy(&bytes);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408 "),
        "{response:?}"
    );
}

#[test]
fn a_partial_request_is_closed_after_the_deadline() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut slow = server.tcp();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let (bytes, eof) = read_until_eof(&mut slow, Duration::from_secs(8));
    assert!(eof, "the server kept a slow request open");
    let response = String::from_utf8_lossy(&bytes);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408 "),
        "{response:?}"
    );
}

#[test]
fn a_joined_client_has_no_handshake_deadline() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut a = server.join_synced("1", "alice");
    let mut idle = server.connect();
    // Once the idle client's deadline has passed, alice's has too, had she one.
    assert_eq!(idle.close_code(), 4000);
    let mut b = server.join_synced("1", "bob");
    b.set("☁ a", "1");
    assert_eq!(a.recv(), relayed("☁ a", "1"));
    assert_eq!(
        server.metric("stratus_handshakes_refused_total{reason=\"handshake_timeout\"}"),
        1,
        "only the idle client missed the deadline"
    );
}

#[test]
fn a_client_that_answers_the_servers_pings_stays_connected() {
    let server = Server::start(&["--ping-interval", "1"]);
    let mut a = server.join_synced("1", "alice");
    let start = Instant::now();
    let mut pings = 0;
    // tungstenite answers each ping with a pong on the next read.
    while pings < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {pings} pings in 10 s at one a second"
        );
        a.ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match a.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(frame)) => panic!("closed after {pings} pings: {frame:?}"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    // Answering kept the connection open across three intervals.
    assert_eq!(
        server.try_metric("stratus_connections_closed_total{code=\"1001\"}"),
        None,
        "a connection was closed for not answering pings"
    );
    let mut b = server.join_synced("1", "bob");
    b.set("☁ a", "1");
    assert_eq!(a.recv(), relayed("☁ a", "1"));
}

#[test]
fn a_client_that_never_answers_pings_is_closed() {
    let server = Server::start(&["--ping-interval", "1"]);
    let mut raw = server.tcp();
    raw.write_all(upgrade_request("/", "").as_bytes())
        .expect("write");
    // Nothing more is written until the server gives up on the client (reading raw bytes
    // answers no ping).
    let (bytes, eof) = read_until_eof(&mut raw, PATIENCE);
    assert!(
        bytes.starts_with(b"HTTP/1.1 101 "),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    let opcodes = opcodes_in(&bytes);
    assert!(
        opcodes.contains(&0x9),
        "no ping before the close: {opcodes:?}"
    );
    assert_eq!(opcodes.last(), Some(&0x8), "{opcodes:?}");
    assert_eq!(close_code_in(&bytes), Some(1001));
    assert!(eof, "the connection stayed open after the close frame");
    // The operator is told why.
    server.wait_for_log("closing: 1001 no answer to ping");
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_cleanly() {
    let mut server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join_synced("2", "bob");
    let mut idle = server.connect();
    server.signal(libc::SIGTERM);
    assert_eq!(a.close_code(), 1001);
    assert_eq!(b.close_code(), 1001);
    assert_eq!(idle.close_code(), 1001);
    drop((a, b, idle));
    let status = server.wait_for_exit();
    assert!(status.success(), "{status:?}");
    assert_eq!(status.code(), Some(0));
    server.wait_for_log("shutting down: closing 3 connections with 1001");
}

#[test]
fn sigint_with_no_clients_exits_cleanly() {
    let mut server = Server::start(&[]);
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_exits_even_if_clients_never_answer_the_close() {
    let mut server = Server::start(&[]);
    let mut raw = server.tcp();
    raw.write_all(upgrade_request("/", "").as_bytes())
        .expect("write");
    // Upgraded: the server's 101 has arrived.
    let mut bytes = read_head(&mut raw);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let (rest, _) = read_until_eof(&mut raw, Duration::from_secs(5));
    bytes.extend(rest);
    assert_eq!(close_code_in(&bytes), Some(1001));
}

#[test]
fn client_close_codes_are_logged_with_their_meaning() {
    let server = Server::start(&[]);
    for (user, code, meaning) in [
        ("u4100", 4100, "4100 (username change)"),
        ("u1000", 1000, "1000 (normal closure)"),
        ("u1001", 1001, "1001 (going away)"),
    ] {
        let mut client = server.join_synced("1", user);
        client.close_with(code);
        server.wait_for_log(&format!("\"{user}\" 1] client closed: {meaning}"));
    }
}

#[test]
fn a_client_that_drops_its_connection_leaves_its_room() {
    let server = Server::start(&["--max-clients-per-room", "2"]);
    let a = server.join_synced("1", "alice");
    let mut b = server.join_synced("1", "bob");
    drop(a);
    // Bob is left.
    server.wait_until_metric(&open_series("scratch"), 1);
    let mut c = server.join_synced("1", "carol");
    c.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    b.set("☁ b", "2");
    assert_eq!(c.recv(), relayed("☁ b", "2"));
}

#[test]
fn an_empty_room_keeps_its_variables_for_the_next_visitor() {
    let server = Server::start(&[]);
    server.leave_room_with_a_value("1");
    server.wait_until_metric(&open_series("scratch"), 0);
    let mut c = server.join("1", "carol");
    assert_eq!(c.recv(), relayed("☁ a", "1"));
}

#[test]
fn without_persistence_an_empty_room_forgets_its_variables_after_the_ttl() {
    let server = Server::start(&["--empty-room-ttl", "1", "--no-persist"]);
    server.leave_room_with_a_value("1");
    server.wait_until_metric("stratus_rooms", 0);
    let mut c = server.join("1", "carol");
    c.expect_silence();
}

#[test]
fn with_persistence_an_empty_room_leaves_memory_after_the_ttl_and_comes_back_from_disk() {
    let server = Server::start(&["--empty-room-ttl", "1"]);
    server.leave_room_with_a_value("1");
    server.wait_until_metric("stratus_rooms", 0);
    let mut c = server.join("1", "carol");
    assert_eq!(c.recv(), relayed("☁ a", "1"));
}

#[test]
fn a_room_with_members_is_never_expired() {
    let server = Server::start(&["--empty-room-ttl", "1"]);
    let mut a = server.join_synced("1", "alice");
    let mut w = server.join_synced("1", "watcher");
    a.set("☁ a", "1");
    assert_eq!(w.recv(), relayed("☁ a", "1"));
    w.close_with(1000);
    // Another room empties and expires; room 1, with alice still in it, does not.
    let mut other = server.join_synced("2", "bob");
    other.close_with(1000);
    server.wait_until_metric("stratus_rooms", 1);
    let mut c = server.join("1", "carol");
    assert_eq!(c.recv(), relayed("☁ a", "1"));
    a.expect_silence();
    // Room 1 was read from the store once, at alice's join: it never left memory (it would
    // have come back from disk with its value).
    assert_eq!(server.metric("stratus_store_rooms_loaded_total"), 2);
}
