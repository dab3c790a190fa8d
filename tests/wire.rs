//! WebSocket framing as it arrives on the wire: requests and frames pipelined into one write,
//! frames split into single bytes or fragments, control frames, and malformed frames.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tungstenite::Message;

/// Writes `bytes` to a fresh connection in one write and returns the stream.
fn send_raw(server: &Server, bytes: &[u8]) -> TcpStream {
    let mut raw = server.tcp();
    raw.write_all(bytes).expect("write");
    raw
}

/// Reads raw output until `done` holds for it or `timeout` passes.
fn read_raw_until(raw: &mut TcpStream, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = std::time::Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !done(&bytes) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "timed out; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        raw.set_read_timeout(Some(left)).expect("timeout");
        match std::io::Read::read(raw, &mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    bytes
}

#[test]
fn frames_sent_with_the_upgrade_request_are_handled_at_once() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut w = server.join_synced("1", "watcher");
    a.set("☁ a", "1");
    assert_eq!(w.recv(), relayed("☁ a", "1"));
    // Upgrade, handshake and a set in a single write: no further readiness event comes for
    // them, and the initial frame must still be written.
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(text_frame(&gui_handshake("1", "pipelined")));
    bytes.extend(text_frame(&gui_set("pipelined", "1", "☁ b", "2")));
    let mut raw = send_raw(&server, &bytes);
    let output = read_raw_until(&mut raw, Duration::from_secs(5), |b| {
        !texts_in(b).is_empty()
    });
    assert!(output.starts_with(b"HTTP/1.1 101 "));
    assert_eq!(texts_in(&output), vec![relayed("☁ a", "1")]);
    assert_eq!(a.recv(), relayed("☁ b", "2"));
    assert_eq!(w.recv(), relayed("☁ b", "2"));
}

#[test]
fn a_message_trickling_in_byte_by_byte_is_read_whole() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let mut raw = send_raw(&server, upgrade_request("/", "").as_bytes());
    raw.set_nodelay(true).expect("nodelay");
    let mut frames = text_frame(&gui_handshake("1", "slowpoke"));
    frames.extend(text_frame(&gui_set("slowpoke", "1", "☁ slow", "3")));
    for byte in frames {
        raw.write_all(&[byte]).expect("write");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Its set reached alice: the handshake before it joined.
    assert_eq!(a.recv(), relayed("☁ slow", "3"));
}

#[test]
fn a_fragmented_message_is_reassembled() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    let handshake = gui_handshake("1", "fragments");
    let set = gui_set("fragments", "1", "☁ f", "4");
    let (h1, h2) = handshake.as_bytes().split_at(10);
    let (s1, rest) = set.as_bytes().split_at(5);
    let (s2, s3) = rest.split_at(20);
    let mut bytes = upgrade_request("/", "").into_bytes();
    // Text without FIN, then continuation with FIN.
    let mut first = masked_frame(0x1, h1);
    first[0] &= 0x7f;
    bytes.extend(first);
    bytes.extend(masked_frame(0x0, h2));
    let mut first = masked_frame(0x1, s1);
    first[0] &= 0x7f;
    bytes.extend(first);
    let mut middle = masked_frame(0x0, s2);
    middle[0] &= 0x7f;
    bytes.extend(middle);
    bytes.extend(masked_frame(0x0, s3));
    let _raw = send_raw(&server, &bytes);
    assert_eq!(a.recv(), relayed("☁ f", "4"));
}

#[test]
fn a_client_ping_is_answered_with_a_pong() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    a.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .expect("ping");
    a.ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    match a.ws.read().expect("read") {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    let mut b = server.join_synced("1", "bob");
    b.set("☁ a", "1");
    assert_eq!(a.recv(), relayed("☁ a", "1"));
}

#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = Server::start(&[]);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(masked_frame(
        0x1,
        b"{\"method\":\"handshake\",\"user\":\"\xff\xfe\"}",
    ));
    let mut raw = send_raw(&server, &bytes);
    let (output, eof) = read_until_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(close_code_in(&output), Some(1007));
    assert!(eof);
}

#[test]
fn an_unmasked_client_frame_closes_with_1002() {
    let server = Server::start(&[]);
    let mut bytes = upgrade_request("/", "").into_bytes();
    let text = gui_handshake("1", "alice");
    bytes.push(0x81);
    bytes.push(text.len() as u8);
    bytes.extend(text.as_bytes());
    let mut raw = send_raw(&server, &bytes);
    let (output, eof) = read_until_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(close_code_in(&output), Some(1002));
    assert!(eof);
    // Closed before its handshake was read: it never joined.
    assert_eq!(
        server.metric("stratus_handshakes_refused_total{reason=\"websocket_protocol\"}"),
        1
    );
}

#[test]
fn the_close_frame_arrives_intact_while_the_client_keeps_sending() {
    let server = Server::start(&[]);
    let mut a = server.join_synced("1", "alice");
    a.send("not json");
    for i in 0..200 {
        // The server may already have closed; later sends are drained, not answered with a
        // reset, so they all succeed.
        a.set("☁ after", &i.to_string());
    }
    assert_eq!(a.close_code(), 4000);
}

#[test]
fn the_close_reason_names_the_problem() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send("[1]");
    a.ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    loop {
        match a.ws.read().expect("read") {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4000);
                assert!(!frame.reason.is_empty());
                break;
            }
            Message::Close(None) => panic!("close frame without a code"),
            _ => {}
        }
    }
}

#[test]
fn a_fragmented_message_over_the_size_limit_closes_with_1009() {
    let server = Server::start(&["--max-message-size", "1000"]);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(text_frame(&gui_handshake("1", "alice")));
    // Each fragment is under the limit; the message is not.
    let mut first = masked_frame(0x1, &[b'1'; 600]);
    first[0] &= 0x7f;
    bytes.extend(first);
    bytes.extend(masked_frame(0x0, &[b'1'; 600]));
    let mut raw = send_raw(&server, &bytes);
    let (output, eof) = read_until_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(close_code_in(&output), Some(1009));
    assert!(eof);
}

#[test]
fn a_frame_announcing_an_enormous_length_closes_with_1009_at_once() {
    let server = Server::start(&[]);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(text_frame(&gui_handshake("1", "alice")));
    // A header claiming 2^62 bytes, and none of them.
    bytes.extend([0x81, 0x80 | 127]);
    bytes.extend((1u64 << 62).to_be_bytes());
    bytes.extend([1, 2, 3, 4]);
    let mut raw = send_raw(&server, &bytes);
    let (output, eof) = read_until_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(close_code_in(&output), Some(1009));
    assert!(eof);
    assert!(server.rss_kib() < 64 * 1024);
}

#[test]
fn an_oversized_control_frame_closes_with_1002() {
    let server = Server::start(&[]);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(text_frame(&gui_handshake("1", "alice")));
    bytes.extend(masked_frame(0x9, &[0u8; 200]));
    let mut raw = send_raw(&server, &bytes);
    let (output, eof) = read_until_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(close_code_in(&output), Some(1002));
    assert!(eof);
}
