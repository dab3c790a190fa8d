//! Hostile load (issue 10): one attacker must not hurt the other clients. Each test runs an
//! attack through real sockets against the real binary while a bystander pair in another room
//! exchanges sets, and asserts bounds (memory, CPU, work done for the attacker between two of
//! the bystander's messages) and that the bystander's sets still arrive while the attack runs.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A masked client frame of any length.
fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![first_byte];
    match payload.len() {
        0..=125 => frame.push(0x80 | payload.len() as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn text_frame(text: &str) -> Vec<u8> {
    masked(0x81, text.as_bytes())
}

/// Reads `stream` a little at a time until `needle` has arrived: the start of a reply whose
/// rest the test leaves unread.
fn read_until(stream: &mut TcpStream, needle: &[u8]) {
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while memchr::memmem::find(&seen, needle).is_none() {
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "connection ended before {:?}",
                String::from_utf8_lossy(needle)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no {:?} within {PATIENCE:?}: {e}",
                String::from_utf8_lossy(needle)
            ),
        }
    }
}

/// Server CPU time (user + system) so far.
fn cpu_time(server: &Server) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A bystander pair in room "bystanders": `rounds` sets from one, each awaited by the other.
fn bystander_round(writer: &mut Client, reader: &mut Client, round: usize) {
    writer.set("☁ b", &round.to_string());
    reader.recv_containing(&format!("\"value\":{round}}}"));
}

/// Item 1: clients that connect, upgrade into a large room, and reset, as fast as they can,
/// used to keep the accept queue non-empty: the loop accepted and served them (snapshot
/// included) without ever reading anyone else. Now one turn accepts a bounded number, so
/// between a bystander's set and its arrival only a few turns' worth of attackers are served.
#[test]
fn a_connect_and_reset_storm_does_not_starve_the_other_clients() {
    let server = Server::start(&["--tick-hz", "0", "--byte-rate", "0", "--message-rate", "0"]);
    fill_large_room(&server, "big", 8);
    let mut alice = server.join_synced("bystanders", "alice");
    let mut bob = server.join_synced("bystanders", "bob");
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (served, stop, addr) = (served.clone(), stop.clone(), server.addr());
            std::thread::spawn(move || {
                let mut request = UPGRADE.as_bytes().to_vec();
                request.extend(text_frame(&gui_handshake("big", "attacker")));
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = stream.write_all(&request);
                    let mut head = [0u8; 64];
                    if matches!(stream.read(&mut head), Ok(n) if head[..n].starts_with(b"HTTP/1.1 101")) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    // Reset instead of closing: nothing is left for the server to drain.
                    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                    use std::os::fd::AsRawFd;
                    // SAFETY: setsockopt on an open socket with a valid option value.
                    unsafe {
                        libc::setsockopt(
                            stream.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
            })
        })
        .collect();
    // Let the storm get going.
    while served.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut worst = 0;
    for round in 1..=10 {
        let before = served.load(Ordering::Relaxed);
        bystander_round(&mut alice, &mut bob, round);
        worst = worst.max(served.load(Ordering::Relaxed) - before);
    }
    let total = served.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("attacker");
    }
    eprintln!("attackers served: {total}; at most {worst} during one bystander round trip");
    assert!(
        total >= 60,
        "the storm did not run ({total} attackers served)"
    );
    // One turn accepts at most 32; a round trip spans a couple of turns.
    assert!(
        worst <= 8 * 32,
        "{worst} attackers were served between a bystander's set and its arrival"
    );
}

/// Item 2: a member that stopped reading while behind on a large room had its frame rebuilt
/// and thrown away every tick until the stall timeout. Now it costs nothing until it drains.
#[test]
fn a_member_that_is_behind_on_a_large_room_costs_no_cpu_while_it_does_not_read() {
    // Memory only: a batch for the store holds a copy of the large room's values while it is
    // written (bounded by room state), which would blur what these tests measure.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    fill_large_room(&server, "big", 64);
    // The joiner reads nothing: its snapshot (6.4 MB) fills the kernel buffers.
    let mut stuck = silent_joiner(&server, "big", "stuck");
    // The fillers have left: the one Scratch member is the stuck one.
    server.wait_until_metric(&open_series("scratch"), 1);
    // Every variable changes again, so the stuck member is megabytes behind.
    fill_large_room(&server, "big", 64);
    let (mut alice, mut bob) = (
        server.join_synced("bystanders", "alice"),
        server.join_synced("bystanders", "bob"),
    );
    bystander_round(&mut alice, &mut bob, 1);
    let before = cpu_time(&server);
    let started = Instant::now();
    for round in 2..=20 {
        bystander_round(&mut alice, &mut bob, round);
        // Time for ticks: rebuilding the stuck member's frame would cost CPU at each.
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_time(&server) - before;
    let elapsed = started.elapsed();
    eprintln!("server CPU {used:?} over {elapsed:?} with a stuck member megabytes behind");
    // Rebuilding megabytes 30 times a second takes most of a core (a debug build more than one).
    assert!(
        used < elapsed / 5,
        "the server used {used:?} of CPU in {elapsed:?} for a member that does not read"
    );
    // Once it reads, it gets everything, ending with the latest values.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while got < 2 * 6_400_000 {
        match stuck.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got >= 2 * 6_400_000,
        "the stuck member got {got} bytes once it read"
    );
}

/// Item 3: each joiner of a large room got its own rendering of the whole room, kept while it
/// did not read. Now joiners share one rendering and keep a reference to it.
#[test]
fn joiners_that_do_not_read_share_one_snapshot_instead_of_a_copy_each() {
    // Memory only: a batch for the store holds a copy of the large room's values while it is
    // written (bounded by room state), which would blur what these tests measure.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    fill_large_room(&server, "big", 128);
    let (mut alice, mut bob) = (
        server.join_synced("bystanders", "alice"),
        server.join_synced("bystanders", "bob"),
    );
    let baseline = server.rss_kib();
    let joiners: Vec<TcpStream> = (0..20)
        .map(|i| silent_joiner(&server, "big", &format!("j{i}")))
        .collect();
    // The joiners and the bystanders.
    server.wait_until_metric(&open_series("scratch"), 20 + 2);
    bystander_round(&mut alice, &mut bob, 1);
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("20 silent joiners of a 12.8 MB room: RSS +{grown} KiB");
    // One shared rendering (12.8 MB) and slack; a private copy each was 20 × 12.8 MB less
    // what the kernel buffers took.
    assert!(
        grown < 40 * 1024,
        "RSS grew by {grown} KiB for 20 joiners that do not read"
    );
    drop(joiners);
}

/// Item 3 in the array-RPC dialect: the `authenticated` reply embeds the room's variables; it is
/// one shared rendering too, not a copy per joiner.
#[test]
fn array_rpc_joiners_that_do_not_read_share_one_rendering_of_the_variables() {
    // Memory only: a batch for the store holds a copy of the large room's values while it is
    // written (bounded by room state), which would blur what these tests measure.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    fill_large_room(&server, "big", 128);
    let baseline = server.rss_kib();
    let mut joiners: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut stream = server.tcp();
            let mut bytes = UPGRADE
                .replacen("GET / ", "GET /ws/world/big ", 1)
                .into_bytes();
            bytes.extend(text_frame(&format!(
                r#"["authenticate",{{"client_id":"j{i}"}}]"#
            )));
            stream.write_all(&bytes).expect("send");
            stream
        })
        .collect();
    // Each joined once the start of its reply arrived; the megabytes after it stay unread.
    for joiner in &mut joiners {
        read_until(joiner, b"[\"authenticated\"");
    }
    let (mut alice, mut bob) = (
        server.join_synced("bystanders", "alice"),
        server.join_synced("bystanders", "bob"),
    );
    bystander_round(&mut alice, &mut bob, 1);
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("20 silent array-RPC joiners of a 12.8 MB room: RSS +{grown} KiB");
    assert!(
        grown < 40 * 1024,
        "RSS grew by {grown} KiB for 20 joiners that do not read"
    );
    drop(joiners);
}

/// Item 4: pongs for a client that does not read piled up in an unbounded buffer. Now at most
/// one (the latest) is pending, and pings count against the message rate.
#[test]
fn pings_from_a_client_that_does_not_read_cost_bounded_memory_and_get_the_latest_pong() {
    let server = Server::start(&[
        "--message-rate",
        "100000",
        "--message-burst",
        "100000",
        "--byte-rate",
        "0",
        "--no-persist",
    ]);
    fill_large_room(&server, "big", 128);
    let mut clients: Vec<TcpStream> = (0..10)
        .map(|i| silent_joiner(&server, "big", &format!("p{i}")))
        .collect();
    server.wait_until_metric(&open_series("scratch"), 10);
    let baseline = server.rss_kib();
    let payload = [b'p'; 121];
    for round in 0..10_000u32 {
        let mut ping = payload;
        ping[..4].copy_from_slice(&round.to_be_bytes());
        let frame = masked(0x89, &ping);
        for client in &mut clients {
            client.write_all(&frame).expect("ping");
        }
    }
    let (mut alice, mut bob) = (
        server.join_synced("bystanders", "alice"),
        server.join_synced("bystanders", "bob"),
    );
    bystander_round(&mut alice, &mut bob, 1);
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("10 clients × 10000 pings unread: RSS +{grown} KiB");
    // 10 × 10000 pongs of 123 bytes would be 12 MB.
    assert!(grown < 3 * 1024, "RSS grew by {grown} KiB");
    // The client reads: after its snapshot it gets few pongs, the last for the last ping.
    let mut client = clients.swap_remove(0);
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let pongs = pong_payloads(&bytes);
    eprintln!("the reader got {} pongs", pongs.len());
    // Pongs written before its socket filled were the kernel's to hold: how many fit depends
    // on the kernel's buffers and on how many pings were still unread when the snapshot had
    // gone out (a turn reads at most 128 messages of a connection; seen: 17 to about 5 000).
    // Without the bound all 10 000 would come; our memory is what the RSS check above bounds.
    assert!(
        pongs.len() < 10_000,
        "{} pongs were kept for it",
        pongs.len()
    );
    let last = pongs.last().expect("a pong");
    assert_eq!(
        &last[..4],
        &9_999u32.to_be_bytes(),
        "the last pong answers the last ping"
    );
}

/// The payloads of pong frames in server output (after the HTTP head).
fn pong_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let start = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + 4);
    let mut at = start;
    let mut pongs = Vec::new();
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (length, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                4,
            ),
            127 if at + 10 <= bytes.len() => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&bytes[at + 2..at + 10]);
                (u64::from_be_bytes(len) as usize, 10)
            }
            short @ 0..=125 => (usize::from(short), 2),
            _ => break,
        };
        let Some(payload) = bytes.get(at + header..at + header + length) else {
            break;
        };
        if opcode == 0xA {
            pongs.push(payload.to_vec());
        }
        at += header + length;
    }
    pongs
}

/// Item 5: after one large message, a connection kept tungstenite's grown read buffer and the
/// loop's JSON parser kept buffers for the largest message. Now both are given back.
#[test]
fn connections_that_sent_one_large_message_give_its_buffers_back() {
    // Memory only: a batch for the store holds a copy of the large room's values while it is
    // written (bounded by room state), which would blur what these tests measure.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    let mut watcher = server.join_synced("large", "watcher");
    let mut senders: Vec<Client> = (0..100)
        .map(|i| server.join_synced("large", &format!("s{i}")))
        .collect();
    watcher.drain(Duration::from_millis(200));
    let baseline = server.rss_kib();
    // Ten sets of 100 000 digits in one message of about 1 MB, then one small set. The large
    // sets name no cloud variable: they are read and parsed whole, then ignored. (Sets the
    // room took would be sent to the 100 senders, who do not read: what the server then holds
    // for them, 100 × the latest values, is not what this test measures.)
    let digits = format!("\"{}\"", "3".repeat(100_000));
    for (i, sender) in senders.iter_mut().enumerate() {
        let message: String = (0..10)
            .map(|_| gui_set("s", "large", "big", &digits))
            .collect();
        sender.send(&message);
        sender.set("☁ done", &i.to_string());
        watcher.recv_containing(&format!("\"value\":{i}}}"));
    }
    let grown = server.rss_kib().saturating_sub(baseline);
    eprintln!("100 connections after one 1 MB message each: RSS +{grown} KiB");
    // 100 × 289 KiB of read buffer and ~15 MB of parser buffers were kept before.
    assert!(grown < 12 * 1024, "RSS grew by {grown} KiB");
    // The connections still work.
    senders[0].set("☁ after", "1");
    watcher.recv_containing("☁ after");
}

/// One address cannot take every slot; closing one of its connections frees a slot for it.
#[test]
fn connections_per_address_are_limited() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let mut held: Vec<Client> = (0..3)
        .map(|i| server.join_synced("1", &format!("u{i}")))
        .collect();
    let refused = server.try_connect_with(&server.url(), &[]);
    assert!(
        refused.is_err(),
        "a fourth connection from one address was accepted"
    );
    held.pop().expect("one").close_with(1000);
    // The slot is released when the connection is removed.
    let deadline = Instant::now() + PATIENCE;
    while server.try_connect_with(&server.url(), &[]).is_err() {
        assert!(Instant::now() < deadline, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Behind a trusted proxy, the forwarded address is what is counted, and refusals say why.
#[test]
fn behind_a_proxy_the_forwarded_address_is_limited() {
    let server = Server::start(&["--max-connections-per-ip", "2", "--trust-proxy"]);
    let from = |ip: &str| vec![("X-Forwarded-For", ip.to_owned())];
    let connect = |ip: &str| {
        let headers = from(ip);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.try_connect_with(&server.url(), &headers)
    };
    let _a = connect("10.0.0.1").expect("first");
    let _b = connect("10.0.0.1").expect("second");
    match connect("10.0.0.1") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| ())),
    }
    let _c = connect("10.0.0.2").expect("another address");
}

/// Over --max-state-memory: new variables are ignored while no room is empty; once one is,
/// it is evicted to make space.
#[test]
fn room_state_is_bounded_by_the_memory_budget() {
    // Memory only: with persistence an emptied room may leave memory only once it is on disk,
    // which the engine's unit tests cover (`may_drop`).
    let server = Server::start(&[
        "--max-state-memory",
        "350000",
        "--byte-rate",
        "0",
        "--no-persist",
    ]);
    let digits = format!("\"{}\"", "9".repeat(100_000));
    let mut a = server.join_synced("1", "a");
    let mut b = server.join_synced("1", "b");
    for i in 0..3 {
        a.packager_set(&format!("☁ v{i}"), &digits);
        b.recv_containing(&format!("☁ v{i}"));
    }
    // A fourth large variable does not fit: ignored; existing ones still change.
    a.packager_set("☁ v3", &digits);
    a.set("☁ v0", "1");
    let next = b.recv();
    assert!(
        next.contains("☁ v0") && !next.contains("☁ v3"),
        "{next:.80}"
    );
    server.wait_for_log("memory budget");
    // Room 1 empties: its state is evicted to make space for room 2's.
    a.close_with(1000);
    b.close_with(1000);
    server.wait_until_metric(&open_series("scratch"), 0);
    let mut c = server.join_synced("2", "c");
    let mut d = server.join_synced("2", "d");
    for i in 0..3 {
        c.packager_set(&format!("☁ w{i}"), &digits);
        d.recv_containing(&format!("☁ w{i}"));
    }
}

/// With no space for even an empty room, joining is refused with 4003.
#[test]
fn without_space_for_a_room_a_join_is_refused_with_4003() {
    let server = Server::start(&["--max-state-memory", "1"]);
    let mut c = server.join("1", "c");
    assert_eq!(c.close_code(), 4003);
}

/// A request head that arrives a byte at a time is still answered (it is parsed once, when
/// its empty line arrives).
#[test]
fn a_head_sent_a_byte_at_a_time_upgrades() {
    let server = Server::start(&[]);
    let mut stream = server.tcp();
    for byte in UPGRADE.as_bytes() {
        stream.write_all(&[*byte]).expect("byte");
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("response");
    assert_eq!(&head, b"HTTP/1.1 101");
}
