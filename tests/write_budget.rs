//! One turn of the loop writes a bounded number of bytes in total (issue 20): bulk writes such
//! as snapshots of a large room are cut to the turn's budget and continue in the next turns,
//! so a burst of joins cannot hold back everyone else's frames for the whole copy. What the
//! budget changes is time (measured in `benches/attacks.py join-burst`); these tests check
//! that it loses nothing: every joiner still gets its whole snapshot, in order, and clients
//! elsewhere are served meanwhile.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Reads the 101 response and the first WebSocket message; returns its payload.
fn read_snapshot(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = &bytes[end + 4..];
            if body.len() >= 10 {
                let length = match body[1] & 0x7f {
                    127 => u64::from_be_bytes(body[2..10].try_into().expect("8 bytes")) as usize,
                    126 => usize::from(u16::from_be_bytes([body[2], body[3]])),
                    n => usize::from(n),
                };
                let header = match body[1] & 0x7f {
                    127 => 10,
                    126 => 4,
                    _ => 2,
                };
                if body.len() >= header + length {
                    return body[header..header + length].to_vec();
                }
            }
        }
        let n = stream.read(&mut chunk).expect("read the snapshot");
        assert!(n > 0, "closed after {} bytes", bytes.len());
        bytes.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_burst_of_joiners_to_a_large_room_each_get_the_whole_snapshot_while_others_are_served() {
    // The filler sends 12.8 MB at once: no byte rate limit.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0"]);
    fill_large_room_with(&server, "large", 128, |i| char::from(b'1' + (i % 9) as u8));
    let (mut writer, mut reader) = (
        server.join_synced("bystanders", "w"),
        server.join_synced("bystanders", "r"),
    );
    let mut joiners: Vec<TcpStream> = (0..20)
        .map(|i| silent_joiner(&server, "large", &format!("j{i}")))
        .collect();
    // While twenty 12.8 MB snapshots are owed, the bystanders' sets still go round.
    for round in 0..5 {
        writer.set("☁ b", &round.to_string());
        reader.recv_containing(&format!("\"value\":{round}}}"));
    }
    for (i, stream) in joiners.iter_mut().enumerate() {
        let snapshot = read_snapshot(stream);
        let text = String::from_utf8(snapshot).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 128, "joiner {i}");
        for (v, line) in lines.iter().enumerate() {
            let digits = (v % 9 + 1).to_string().repeat(100_000);
            assert!(
                line.contains(&format!("\"☁ v{v}\"")) && line.contains(&digits),
                "joiner {i}, line {v} is not variable v{v}"
            );
        }
    }
    assert!(
        server.metric("stratus_writes_deferred_total") > 0,
        "the snapshots went out over several turns"
    );
}
