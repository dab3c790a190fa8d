//! Flood protection and bounded resources: message and byte rates, message size, and clients
//! that read slower than others write.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn flooding_past_the_message_rate_closes_with_4004_and_spares_the_others() {
    let server = Server::start(&["--message-rate", "10", "--message-burst", "20"]);
    let (mut a, mut b) = server.pair();
    for i in 0..100 {
        a.packager_set("☁ flood", &i.to_string());
    }
    assert_eq!(a.close_code(), 4004);
    // The operator is told who was closed and why.
    server.wait_for_log("\"alice\" 1] closing: 4004");
    // bob got some of the flood and is still connected: he can set and receive.
    let flood = b.drain(Duration::from_millis(300));
    assert!(!flood.is_empty());
    let mut c = server.join_synced("1", "carol");
    assert!(c.recv().contains("☁ flood"));
    b.set("☁ b", "1");
    assert_eq!(c.recv(), relayed("☁ b", "1"));
    c.set("☁ c", "2");
    assert_eq!(b.recv(), relayed("☁ c", "2"));
}

#[test]
fn every_object_in_a_frame_counts_against_the_message_rate() {
    let server = Server::start(&["--message-rate", "10", "--message-burst", "20"]);
    let (mut a, mut b) = server.pair();
    let sets: Vec<String> = (0..25).map(|i| set_line("☁ v", &i.to_string())).collect();
    a.send(&lines(&sets));
    assert_eq!(a.close_code(), 4004);
    // Within the burst, a frame of several objects is fine.
    let mut c = server.join_synced("1", "carol");
    let sets: Vec<String> = (0..15).map(|i| set_line("☁ w", &i.to_string())).collect();
    c.send(&lines(&sets));
    assert_eq!(b.recv_containing("☁ w"), relayed("☁ w", "14"));
}

#[test]
fn the_message_allowance_refills_at_the_rate() {
    let server = Server::start(&["--message-rate", "10", "--message-burst", "20"]);
    let (mut a, mut b) = server.pair();
    // The handshake, its two sync pings and 15 sets leave 2 of the 20; 1.5 s later 10 more
    // are allowed.
    for i in 0..15 {
        a.packager_set("☁ v", &i.to_string());
    }
    assert_eq!(
        b.recv_containing("☁ v\",\"value\":14"),
        relayed("☁ v", "14")
    );
    std::thread::sleep(Duration::from_millis(1500));
    for i in 15..25 {
        a.packager_set("☁ v", &i.to_string());
    }
    assert_eq!(
        b.recv_containing("☁ v\",\"value\":24"),
        relayed("☁ v", "24")
    );
    b.set("☁ w", "1");
    assert_eq!(a.recv(), relayed("☁ w", "1"));
}

#[test]
fn a_packaged_project_setting_100_times_a_second_is_not_limited() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(2) || i < 200 {
        a.packager_set("☁ x", &i.to_string());
        if i % 3 == 0 {
            a.packager_set("☁ y", &(-i).to_string());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    a.packager_set("☁ done", "1");
    let last = b.recv_containing("☁ done");
    assert!(last.ends_with(&relayed("☁ done", "1")), "{last}");
    b.set("☁ reply", "1");
    assert_eq!(a.recv(), relayed("☁ reply", "1"));
    assert_eq!(server.metric("stratus_rate_limit_closes_total"), 0);
}

#[test]
fn too_many_bytes_closes_with_4004() {
    let server = Server::start(&["--byte-rate", "1000", "--byte-burst", "2000"]);
    let (mut a, mut b) = server.pair();
    a.set("☁ small", "1");
    assert_eq!(b.recv(), relayed("☁ small", "1"));
    let big = json_str(&"5".repeat(5000));
    a.set("☁ big", &big);
    assert_eq!(a.close_code(), 4004);
    b.expect_silence();
}

#[test]
fn a_message_over_the_size_limit_closes_with_1009() {
    let server = Server::start(&["--max-message-size", "1000"]);
    let (mut a, mut b) = server.pair();
    let fits = json_str(&"5".repeat(800));
    a.set("☁ v", &fits);
    assert_eq!(b.recv(), relayed("☁ v", &fits));
    let too_big = json_str(&"6".repeat(2000));
    a.set("☁ v", &too_big);
    assert_eq!(a.close_code(), 1009);
    b.expect_silence();
}

/// A value of `len` digits that starts with the sequence number `seq`.
fn numbered_value(seq: usize, len: usize) -> String {
    let head = format!("{seq:09}");
    format!("\"{head}{}\"", "0".repeat(len - head.len()))
}

/// The sequence number at the start of the value in a relayed frame's last line.
fn last_sequence(frame: &str) -> usize {
    let line = frame.lines().last().expect("a line");
    let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON");
    let value = parsed["value"].as_str().expect("string value");
    value[..9].parse().expect("sequence number")
}

/// The last number of a `/proc/sys` file with several numbers.
fn sysctl_max(path: &str) -> usize {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}

#[test]
fn a_slow_reader_costs_bounded_memory_and_then_gets_the_latest_value() {
    const VALUE_LEN: usize = 100_000;
    const BOUND_KIB: u64 = 16 * 1024;
    // What the kernel may hold between the server and a client that does not read: the
    // server's send buffer (which grows up to tcp_wmem's maximum) and the client's receive
    // buffer (which stays near tcp_rmem's default while the client does not read).
    let kernel_buffers = sysctl_max("/proc/sys/net/ipv4/tcp_wmem") + 256 * 1024;
    let flood_bytes = (64 * 1024 * 1024).max(8 * kernel_buffers);
    // History off: it is room state of its own (up to `--history` values per room, counted
    // against `--max-state-memory`), not what a slow reader costs.
    let server = Server::start(&["--message-rate", "0", "--byte-rate", "0", "--history", "0"]);
    let mut writer = server.join_synced("1", "writer");
    let mut slow = server.join_synced("1", "slow");
    let baseline = server.rss_kib();
    let start = Instant::now();
    let mut peak = baseline;
    let mut sent = 0;
    let mut seq = 0;
    while sent < flood_bytes {
        seq += 1;
        let value = numbered_value(seq, VALUE_LEN);
        writer.packager_set("☁ big", &value);
        sent += value.len();
        if seq % 16 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    peak = peak.max(server.rss_kib());
    eprintln!(
        "flooded {} MiB in {:?}; RSS {baseline} KiB -> peak {peak} KiB",
        sent / (1024 * 1024),
        start.elapsed(),
    );
    assert!(
        peak < baseline + BOUND_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB while {} MiB went to a client that does not read",
        sent / (1024 * 1024)
    );
    // The writer was never held up or closed.
    writer.set("☁ after", "1");
    // The server has handled that set before the slow client reads a byte: the catch-up it is
    // then sent carries both latest values (otherwise the room's token could send the big value
    // alone the moment the client drains, before the server reads the writer's set).
    writer.sync();
    // Now the slow client reads everything there is: what the kernel buffered, then the
    // latest values in one frame.
    let frames = slow.drain(Duration::from_millis(1500));
    let count = frames.len();
    eprintln!("slow reader got {count} frames for {seq} sets");
    let last = frames.last().expect("the slow reader gets frames");
    assert!(
        last.contains("☁ after"),
        "the last frame lacks the last set"
    );
    let big_line = last
        .lines()
        .find(|l| l.contains("☁ big"))
        .expect("the latest big value in the last frame");
    assert_eq!(last_sequence(big_line), seq);
    // Twice the nominal buffer sizes, as the kernel's accounting is approximate.
    let most = 2 * kernel_buffers / VALUE_LEN + 4;
    assert!(
        count <= most,
        "{count} frames for {seq} sets (kernel buffers hold at most {most}): a backlog, not the latest state"
    );
    writer.expect_silence();
}

#[test]
fn a_client_that_never_reads_is_disconnected_after_the_write_stall_timeout() {
    let server = Server::start(&[
        "--write-stall-timeout",
        "2",
        "--message-rate",
        "0",
        "--byte-rate",
        "0",
    ]);
    let mut writer = server.join_synced("1", "writer");
    let mut reader = server.join_synced("1", "reader");
    let mut stalled = server.join_synced("1", "stalled");
    let start = Instant::now();
    let mut seq = 0;
    // Keep writing until the server gives up on the stalled client (the writer and the
    // reader are left); the others keep up.
    while server.metric(&open_series("scratch")) > 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled client never dropped"
        );
        seq += 1;
        writer.packager_set("☁ big", &numbered_value(seq, 100_000));
        let frame = reader.recv();
        assert_eq!(last_sequence(&frame), seq);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The stalled client's connection is gone: once it reads what reached it, the stream
    // ends (`ending` panics if it is still open after 15 s).
    let ending = stalled.ending();
    eprintln!("stalled client: {ending:?} after {seq} sets");
    // The operator is told who was dropped and why.
    server.wait_for_log("\"stalled\" 1] closed: client stopped reading");
    // The writer and the reader carry on.
    writer.set("☁ after", "1");
    assert_eq!(reader.recv(), relayed("☁ after", "1"));
    reader.set("☁ back", "2");
    assert_eq!(writer.recv(), relayed("☁ back", "2"));
}

#[test]
fn a_slow_client_that_keeps_reading_is_not_disconnected() {
    // Every set is sent at once, so output piles up in the kernel quickly.
    let server = Server::start(&[
        "--write-stall-timeout",
        "2",
        "--tick-hz",
        "0",
        "--message-rate",
        "0",
        "--byte-rate",
        "0",
    ]);
    let mut writer = server.join_synced("1", "writer");
    let mut pacer = server.join_synced("1", "pacer");
    let mut slow = server.join_synced("1", "slow");
    // Fill the kernel buffers towards the slow client so that the server holds output back.
    // Waiting for each set to reach the pacer makes each one a frame of its own.
    let kernel_buffers = sysctl_max("/proc/sys/net/ipv4/tcp_wmem") + 256 * 1024;
    let mut seq = 0;
    while 2 * seq * 100_000 < 3 * kernel_buffers {
        seq += 1;
        writer.packager_set("☁ big", &numbered_value(seq, 100_000));
        assert_eq!(last_sequence(&pacer.recv()), seq);
    }
    drop(pacer);
    // Then read slowly but steadily, for longer than the stall timeout, while sets go on.
    let mut latest = 0;
    let mut take = |frame: String| {
        for line in frame.lines().filter(|l| l.contains("☁ big")) {
            latest = last_sequence(line);
        }
        frame.contains("☁ done")
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        seq += 1;
        writer.packager_set("☁ big", &numbered_value(seq, 100_000));
        take(slow.recv());
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.set("☁ done", "1");
    // It catches up: the latest value arrives, and it was never disconnected.
    while !take(slow.recv()) {}
    assert_eq!(latest, seq);
    // The writer and the slow client are still there (the pacer left).
    assert_eq!(server.metric(&open_series("scratch")), 2);
}
