//! Full-state replies (issue 20: "renders nobody reads", "renders on demand"): `cloud.get`
//! (array-RPC) and a repeated `JOIN_ROOM` (MultiStudio) share one rendering of a room like
//! joins do, so clients cannot make the server render a large room more often than its pace,
//! nor hold a private rendering each while they do not read; the client still ends up with
//! every change. Through real sockets against the real binary; renders are counted with
//! `stratus_full_renders_total`.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A WebSocket client on a raw socket: masked text frames out, whole server frames in, so a
/// test can stop reading at will and read megabytes without a client library's copies.
struct Raw {
    stream: TcpStream,
    /// Bytes read and not yet returned as a frame.
    input: Vec<u8>,
}

impl Raw {
    /// Connects to `path` and completes the upgrade. `small_window`: the socket's receive
    /// buffer is fixed small, as a client that means not to read would have it; otherwise
    /// the kernel grows it while the client reads fast (here up to 32 MB) and could take a
    /// whole 12.8 MB reply off the server, which would then hold nothing.
    fn open(server: &Server, path: &str, small_window: bool) -> Raw {
        let mut stream = server.tcp();
        if small_window {
            limit_receive_buffer(&stream);
        }
        stream
            .write_all(upgrade_request(path, "").as_bytes())
            .expect("send upgrade");
        let mut raw = Raw {
            stream,
            input: Vec::new(),
        };
        let end = loop {
            if let Some(at) = raw.input.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill(PATIENCE), "no upgrade answer");
        };
        assert!(raw.input.starts_with(b"HTTP/1.1 101"), "upgrade refused");
        raw.input.drain(..end);
        raw
    }

    /// Sends `texts` as text frames in one write.
    fn send(&mut self, texts: &[String]) {
        let bytes: Vec<u8> = texts.iter().flat_map(|t| text_frame(t)).collect();
        self.stream.write_all(&bytes).expect("send");
    }

    /// Reads more input; false on timeout or end of stream.
    fn fill(&mut self, timeout: Duration) -> bool {
        let mut buf = vec![0u8; 1 << 20];
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.input.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// The next text message, or `None` if none arrives within `timeout`.
    fn next_within(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((opcode, payload)) = self.take_frame() {
                if opcode == 0x1 {
                    return Some(String::from_utf8(payload).expect("UTF-8"));
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// The next text message; panics if none comes.
    fn next(&mut self) -> String {
        self.next_within(PATIENCE).expect("a message")
    }

    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let input = &self.input;
        let (&first, &second) = (input.first()?, input.get(1)?);
        let (len, header) = match second & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes(input.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(input.get(2..10)?.try_into().ok()?)).ok()?,
                10,
            ),
            len => (usize::from(len), 2),
        };
        let payload = input.get(header..header + len)?.to_vec();
        self.input.drain(..header + len);
        Some((first & 0x0f, payload))
    }
}

/// Fixes the socket's receive buffer at 64 KiB (no autotuning).
fn limit_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on an open socket with a valid option value of the right size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt");
}

/// An array-RPC client authenticated in `room`, its `authenticated` reply read.
fn rpc_member(server: &Server, room: &str, id: &str) -> Raw {
    rpc_client(server, room, id, false)
}

/// An array-RPC client that will stop reading (see [`Raw::open`]), authenticated in `room`,
/// its `authenticated` reply read.
fn rpc_non_reader(server: &Server, room: &str, id: &str) -> Raw {
    rpc_client(server, room, id, true)
}

fn rpc_client(server: &Server, room: &str, id: &str, small_window: bool) -> Raw {
    let mut raw = Raw::open(server, &format!("/ws/world/{room}"), small_window);
    raw.send(&[format!(r#"["authenticate",{{"client_id":"{id}"}}]"#)]);
    let reply = raw.next();
    assert!(reply.starts_with(r#"["authenticated""#), "{:.80}", reply);
    raw
}

/// A MultiStudio client that said HELLO and joined `room`, its `JOINED_ROOM` read.
fn studio_member(server: &Server, room: &str, user: &str) -> Raw {
    let mut raw = Raw::open(server, "/ws/multistudio", false);
    raw.send(&[
        format!(r#"{{"kind":"HELLO","username":"{user}"}}"#),
        format!(r#"{{"kind":"JOIN_ROOM","room":"{room}"}}"#),
    ]);
    assert!(raw.next().contains(r#""kind":"HELLO""#));
    assert!(raw.next().contains(r#""kind":"JOINED_ROOM""#));
    raw
}

fn rpc_set(name: &str, value: u64) -> String {
    format!(r#"["cloud.set",1,{{"name":"{name}","value":{value}}}]"#)
}

fn rpc_get() -> String {
    r#"["cloud.get",2,{}]"#.to_owned()
}

fn full_renders(server: &Server) -> u64 {
    server.metric("stratus_full_renders_total")
}

/// Waits until `metric` reaches `at_least`.
fn wait_for_metric(server: &Server, name: &str, at_least: u64) {
    let deadline = Instant::now() + 6 * PATIENCE;
    while server.metric(name) < at_least {
        assert!(Instant::now() < deadline, "{name} stayed below {at_least}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a message shows of variable `name`: `None` if it does not show it, `Some(None)` if it
/// shows a value that is not one of the numbers a test set (the 100 000-digit string it was
/// filled with), else `Some(Some(number))`. A message shows it in a whole-room reply (`"☁ v0":5`
/// inside its variables) or as a single change (`"name":"☁ v0","value":5`).
fn value_in(message: &str, name: &str) -> Option<Option<u64>> {
    let needles = [
        format!(r#""name":"{name}","value":"#),
        format!(r#""{name}":"#),
    ];
    let rest = needles
        .iter()
        .find_map(|needle| Some(&message[message.find(needle.as_str())? + needle.len()..]))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 12 {
        return Some(None);
    }
    Some(digits.parse().ok())
}

/// What one client knows of variable `name`: the last value shown by the messages it read, in
/// order.
struct View {
    name: &'static str,
    value: Option<u64>,
}

impl View {
    fn read(&mut self, message: &str) {
        if let Some(value) = value_in(message, self.name) {
            self.value = value;
        }
    }

    /// Reads until the view shows `value`; panics if it does not within the patience.
    fn settle(&mut self, client: &mut Raw, value: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.value != Some(value) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = client.next_within(left) else {
                panic!(
                    "{} stays at {:?}, the room has {value}",
                    self.name, self.value
                );
            };
            self.read(&message);
        }
    }
}

/// (a) Renders nobody reads: 40 array-RPC clients in a 12.8 MB room each send a set and a
/// `cloud.get` and stop reading. Each get used to render the room afresh (the room had just
/// changed) and the blocked connection kept that private copy alive: 11.6 MB each. Now the gets
/// share the rendering of the last second.
#[test]
fn forty_get_callers_that_do_not_read_share_one_rendering() {
    // Memory only: a batch for the store holds a copy of the large room's values while it is
    // written (bounded by room state), which would blur what this measures.
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    fill_large_room(&server, "big", 128);
    let mut callers: Vec<Raw> = (0..40)
        .map(|i| rpc_non_reader(&server, "big", &format!("c{i}")))
        .collect();
    let sets_before = server.metric("stratus_sets_applied_total");
    let renders_before = full_renders(&server);
    let baseline = server.rss_kib();
    for (i, caller) in callers.iter_mut().enumerate() {
        caller.send(&[rpc_set("☁ v0", i as u64), rpc_get()]);
    }
    // A set and its get arrive in one write and are handled in one turn.
    wait_for_metric(&server, "stratus_sets_applied_total", sets_before + 40);
    let (mut alice, mut bob) = (
        server.join_synced("bystanders", "alice"),
        server.join_synced("bystanders", "bob"),
    );
    alice.set("☁ b", "1");
    bob.recv_containing("\"value\":1");
    let grown = server.rss_kib().saturating_sub(baseline);
    let renders = full_renders(&server) - renders_before;
    eprintln!(
        "40 non-reading cloud.get callers in a 12.8 MB room: RSS +{grown} KiB, {renders} renders"
    );
    assert!(
        grown <= 30 * 1024,
        "RSS grew by {grown} KiB for 40 gets that are not read ({renders} renders)"
    );
    drop(callers);
}

/// (b) Renders on demand: set + `cloud.get` pairs as fast as the client reads. Each get of a
/// changed room used to render it afresh; now a large room renders at most once per reuse
/// window (a second, never shorter than the pace) per format.
#[test]
fn repeated_gets_on_a_changing_large_room_render_at_most_at_the_rooms_pace() {
    let server = Server::start(&[
        "--tick-hz",
        "2",
        "--byte-rate",
        "0",
        "--message-rate",
        "0",
        "--no-persist",
    ]);
    let pace = Duration::from_millis(500);
    // 200 kB: above the size from which a rendering is shared after a change (64 KiB).
    fill_large_room(&server, "big", 2);
    let mut client = rpc_member(&server, "big", "asker");
    renders_at_most_at_pace(
        &server,
        &mut client,
        pace,
        "gets",
        |i| [rpc_set("☁ v0", i), rpc_get()],
        |message| message.starts_with(r#"["success",2,{"variables""#),
    );
}

/// Sends `pair(i)` (a set of `☁ v0` to `i`, then a full-state request) for `BATCHES` batches of
/// `BATCH`, reading everything; `is_reply` tells the full-state replies. Asserts the room was
/// rendered at most once per `pace` interval (plus two at the edges), and that the client ends
/// up with its own last value although replies may be older than it.
fn renders_at_most_at_pace(
    server: &Server,
    client: &mut Raw,
    pace: Duration,
    what: &str,
    pair: impl Fn(u64) -> [String; 2],
    is_reply: impl Fn(&str) -> bool,
) {
    let renders_before = full_renders(server);
    let mut view = View {
        name: "☁ v0",
        value: None,
    };
    let started = Instant::now();
    let replies = in_batches(|first| {
        let requests: Vec<String> = (first..first + BATCH).flat_map(&pair).collect();
        client.send(&requests);
        let mut replies = 0;
        while replies < BATCH {
            let message = client.next();
            if is_reply(&message) {
                replies += 1;
            }
            view.read(&message);
        }
    });
    let elapsed = started.elapsed();
    let renders = full_renders(server) - renders_before;
    let intervals = elapsed.as_nanos().div_ceil(pace.as_nanos()) as u64;
    eprintln!("{replies} {what} of a changing 200 kB room in {elapsed:?} ({intervals} paces): {renders} renders");
    assert!(
        renders <= intervals + 2,
        "{renders} renders for {replies} {what} in {intervals} pace intervals"
    );
    // The replies may be shared and older than the client's own last set: the server sends
    // it what they lack, its own writes included.
    view.settle(client, replies);
}

/// Requests sent at once, then read, per batch.
const BATCH: u64 = 100;
/// Batches, with a pause between two, so the requests span several pace intervals.
const BATCHES: u64 = 4;

/// Runs `batch(first value)` for each batch, pausing between them; returns how many requests
/// were made (also the last value set).
fn in_batches(mut batch: impl FnMut(u64)) -> u64 {
    for index in 0..BATCHES {
        if index > 0 {
            std::thread::sleep(Duration::from_millis(400));
        }
        batch(1 + index * BATCH);
    }
    BATCHES * BATCH
}

/// (c) A member handed a shared, older rendering still gets every later change: another
/// member's (the room is flushed to it again from the version the rendering shows) and its own
/// writes that the rendering predates (which a member is otherwise never sent).
#[test]
fn a_member_given_an_older_shared_rendering_still_gets_every_change() {
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    fill_large_room(&server, "big", 2);
    let mut writer = rpc_member(&server, "big", "writer");
    let mut asker = rpc_member(&server, "big", "asker");
    let mut asker_v0 = View {
        name: "☁ v0",
        value: None,
    };
    let mut asker_v1 = View {
        name: "☁ v1",
        value: None,
    };
    let mut writer_v1 = View {
        name: "☁ v1",
        value: None,
    };
    let rounds = 30;
    let mut older = 0;
    for i in 1..=rounds {
        // The writer's set is applied before the asker asks.
        writer.send(&[rpc_set("☁ v0", i)]);
        loop {
            let message = writer.next();
            writer_v1.read(&message);
            if message.starts_with(r#"["success",1"#) {
                break;
            }
        }
        // The asker writes too, then asks for the whole room.
        asker.send(&[rpc_set("☁ v1", i), rpc_get()]);
        loop {
            let message = asker.next();
            if message.starts_with(r#"["success",2,{"variables""#) {
                if value_in(&message, "☁ v0") != Some(Some(i)) {
                    older += 1;
                }
                asker_v0.read(&message);
                asker_v1.read(&message);
                break;
            }
            asker_v0.read(&message);
            asker_v1.read(&message);
        }
    }
    asker_v0.settle(&mut asker, rounds);
    asker_v1.settle(&mut asker, rounds);
    writer_v1.settle(&mut writer, rounds);
    // A get with no set of the asker's around it: only the reply itself can make the room
    // send the asker what the older rendering lacks.
    let mut lone_older = 0;
    for i in rounds + 1..=rounds + 10 {
        asker.send(&[rpc_get()]);
        read_reply(&mut asker, &mut [&mut asker_v0, &mut asker_v1]);
        writer.send(&[rpc_set("☁ v0", i)]);
        asker_v0.settle(&mut asker, i);
        asker.send(&[rpc_get()]);
        if read_reply(&mut asker, &mut [&mut asker_v0, &mut asker_v1]) != Some(i) {
            lone_older += 1;
        }
        asker_v0.settle(&mut asker, i);
    }
    eprintln!(
        "{older} of {rounds} gets after a set, {lone_older} of 10 lone gets were answered with \
         an older shared rendering"
    );
    assert!(
        older + lone_older > 0,
        "every get was rendered afresh for the latest version"
    );
}

/// Reads up to the reply of a `cloud.get`, updating `views` with every message; returns the
/// reply's value of `☁ v0`.
fn read_reply(client: &mut Raw, views: &mut [&mut View]) -> Option<u64> {
    loop {
        let message = client.next();
        for view in views.iter_mut() {
            view.read(&message);
        }
        if message.starts_with(r#"["success",2,{"variables""#) {
            return value_in(&message, "☁ v0").flatten();
        }
    }
}

/// (d) MultiStudio: a `JOIN_ROOM` of a room already joined answers with the room's variables;
/// like a get, it used to render a changed room afresh every time. Now it shares like joins.
#[test]
fn repeated_join_room_on_a_changing_large_room_renders_at_most_at_the_rooms_pace() {
    let server = Server::start(&[
        "--tick-hz",
        "2",
        "--byte-rate",
        "0",
        "--message-rate",
        "0",
        "--no-persist",
    ]);
    let pace = Duration::from_millis(500);
    fill_large_room(&server, "big", 2);
    let mut client = studio_member(&server, "big", "asker");
    renders_at_most_at_pace(
        &server,
        &mut client,
        pace,
        "JOIN_ROOMs",
        |i| {
            [
                format!(r#"{{"kind":"SET","room":"big","name":"☁ v0","value":{i}}}"#),
                r#"{"kind":"JOIN_ROOM","room":"big"}"#.to_owned(),
            ]
        },
        |message| message.contains(r#""kind":"JOINED_ROOM""#),
    );
}

/// Connections that stopped reading a large whole-room reply are closed after 10 s without
/// progress, well before the 60 s write-stall timeout, also when they share the rendering (two
/// non-readers asking together would otherwise keep it for the full minute). A client that
/// reads its replies stays.
#[test]
fn clients_not_reading_a_whole_room_reply_are_closed_before_the_write_stall_timeout() {
    let server = Server::start(&["--byte-rate", "0", "--message-rate", "0", "--no-persist"]);
    // Larger than what the kernel's socket buffers take, so the replies stay half-sent.
    fill_large_room(&server, "big", 128);
    let mut callers = [
        rpc_non_reader(&server, "big", "first"),
        rpc_non_reader(&server, "big", "second"),
    ];
    let mut reader = rpc_member(&server, "big", "reader");
    for caller in &mut callers {
        caller.send(&[rpc_set("☁ v0", 1), rpc_get()]);
    }
    // The reader asks again and again and reads every answer, meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = 0;
            while !stop.load(Ordering::Relaxed) {
                reader.send(&[rpc_get()]);
                while !reader.next().starts_with(r#"["success",2,{"variables""#) {}
                answers += 1;
            }
            answers
        })
    };
    // Until only the reader is left of the array-RPC connections.
    let deadline = Instant::now() + Duration::from_secs(40);
    while server.metric(&open_series("rpc")) > 1 {
        assert!(
            Instant::now() < deadline,
            "not closed for the unread replies within 40 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The operator is told why.
    server.wait_for_log_count("stopped reading a whole-room reply", 2);
    // The clients find their connections ended before the replies did.
    for caller in &mut callers {
        let (_, ended) = read_until_eof(&mut caller.stream, PATIENCE);
        assert!(ended, "the connection stays open");
    }
    stop.store(true, Ordering::Relaxed);
    let answers = reading.join().expect("the reader was served throughout");
    assert!(answers > 0);
}

/// Renderings that only clients not reading them keep alive count against
/// `--max-state-memory`: while one holds a 12.8 MB reply, a room of 12.8 MB fills a 20 MB
/// budget and a new room is refused; once it is gone, the new room is let in.
#[test]
fn renderings_held_by_clients_that_do_not_read_count_against_the_state_budget() {
    let server = Server::start(&[
        "--byte-rate",
        "0",
        "--message-rate",
        "0",
        "--no-persist",
        "--max-state-memory",
        "20000000",
    ]);
    fill_large_room(&server, "big", 128);
    let mut caller = rpc_non_reader(&server, "big", "caller");
    caller.send(&[rpc_set("☁ v0", 1), rpc_get()]);
    // Once the room's cache lets go of the rendering (a second), only the caller holds it.
    wait_for_metric(&server, "stratus_render_bytes_held", 10_000_000);
    let mut refused = server.join("newroom", "alice");
    assert_eq!(refused.close_code(), 4003);
    drop(caller);
    let deadline = Instant::now() + PATIENCE;
    while server.metric("stratus_render_bytes_held") > 0 {
        assert!(Instant::now() < deadline, "the rendering is still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alice = server.join_synced("newroom", "alice");
    let mut bob = server.join_synced("newroom", "bob");
    alice.set("☁ a", "1");
    bob.recv_containing("\"value\":1");
}
