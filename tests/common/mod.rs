//! Shared helpers for integration tests: start the real `stratus` binary on an ephemeral
//! loopback port (or a unix socket) and talk WebSocket to it with tungstenite's blocking client.
//!
//! Each test starts its own server, so tests share no state and run in parallel. Clients send
//! frames shaped the way real clients send them (see [`gui_set`], [`packager_set`],
//! [`gui_handshake`]).
//!
//! Tests wait for what a client or `/metrics` can see: a join's acknowledgement or a ping round
//! trip ([`Client::sync`], [`Server::join_synced`]), a gauge or counter
//! ([`Server::wait_until_metric`]), a file ([`wait_until`]). The server's log is read only where
//! a log line is itself the behaviour under test ([`Server::wait_for_log`]).
#![allow(dead_code)]
// Test helpers fail loudly: panicking is how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod python;
pub mod redis;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long helpers wait for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub listen: Listen,
    log: Arc<Mutex<Vec<String>>>,
    /// The data directory this test gave the server (removed on drop), if it chose one.
    pub data_dir: Option<PathBuf>,
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A path under /tmp that no other test (in this or another test process) uses.
pub fn unique_path(suffix: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("stratus-test-{}-{n}{suffix}", std::process::id()))
}

impl Server {
    /// Starts the server on an ephemeral loopback port with extra arguments.
    pub fn start(args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", args)
    }

    /// Starts the server on a fresh unix socket path.
    pub fn start_unix(args: &[&str]) -> Server {
        let path = unique_path(".sock");
        Server::start_on(path.to_str().expect("utf-8 path"), args)
    }

    /// Starts the server with `--listen listen`.
    pub fn start_on(listen: &str, args: &[&str]) -> Server {
        Server::start_with_env(listen, &[], args)
    }

    /// Starts the server with `--listen listen`, extra environment variables and arguments.
    pub fn start_with_env(listen: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        let data_dir = own_data_dir(args);
        let mut child = stratus_command()
            .envs(env.iter().copied())
            .args(["--listen", listen, "--log-level", "debug"])
            .args(data_dir_args(&data_dir))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stratus");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let Ok(bound) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not print its address; log:\n{}",
                log.lock().expect("log lock").join("\n")
            );
        };
        let listen = if bound.starts_with('/') {
            Listen::Unix(PathBuf::from(bound))
        } else {
            Listen::Tcp(bound.parse().expect("address parses"))
        };
        Server {
            child,
            listen,
            log,
            data_dir,
        }
    }

    /// The TCP address; panics for a unix-socket server.
    pub fn addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(path) => panic!("server listens on unix socket {}", path.display()),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr())
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Whether some log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line contains `needle` and returns it.
    ///
    /// Only for a log line that is itself the behaviour under test (what an operator must be
    /// told: why a client was closed, a warning, the start-up or reload report). To wait for
    /// something to take effect, wait for what a client or `/metrics` can see instead
    /// ([`Client::sync`], [`Server::join_synced`], [`Server::wait_until_metric`]): log wording
    /// is free to change.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits until `count` log lines contain `needle`; returns the last of them. The same rule
    /// as [`Server::wait_for_log`]: for log lines that are the behaviour under test.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let matching: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if matching.len() >= count {
                return matching.into_iter().last().expect("a line");
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} log lines with {needle:?}, found {}; log:\n{}",
                matching.len(),
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for_exit()
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill with a valid pid and signal number has no memory effects.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "kill");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// A new TCP connection to the server, with a read timeout. Nagle is off, as in browsers:
    /// a small message sent right after another would otherwise wait for the server's delayed
    /// ACK (40 ms), and a test could see a later message of another client first.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Connects a WebSocket client (no handshake message yet).
    pub fn connect(&self) -> Client {
        self.connect_with(&[])
    }

    /// Connects a WebSocket client with extra request headers.
    pub fn connect_with(&self, headers: &[(&str, &str)]) -> Client {
        self.try_connect_with(&self.url(), headers)
            .unwrap_or_else(|e| panic!("upgrade failed: {e}"))
    }

    /// Connects to `url` (which may have any path) with extra headers; the upgrade may fail.
    pub fn try_connect_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let request = request_with(url, headers);
        match tungstenite::client(request, self.tcp()) {
            Ok((ws, _)) => Ok(Client::new(ws)),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking handshake"),
        }
    }

    /// Connects and sends the Scratch GUI's handshake. Does not wait for the server to take it.
    pub fn join(&self, project: &str, user: &str) -> Client {
        let mut client = self.connect();
        client.handshake(project, user);
        client
    }

    /// Joins like the Scratch GUI and returns once the join took effect (see [`Client::sync`]:
    /// a Scratch join into a room without variables has no reply of its own), so that later
    /// sets by other clients are relayed to this one rather than being part of its initial
    /// frame. Panics if the join is refused.
    pub fn join_synced(&self, project: &str, user: &str) -> Client {
        let mut client = self.join(project, user);
        client.sync();
        client
    }

    /// Two clients, `alice` and `bob`, both joined to room "1".
    pub fn pair(&self) -> (Client, Client) {
        let a = self.join_synced("1", "alice");
        let b = self.join_synced("1", "bob");
        (a, b)
    }

    /// Leaves `project` empty with `☁ a` = 1 set in it: a writer sets it, a watcher sees it
    /// arrive, both close.
    pub fn leave_room_with_a_value(&self, project: &str) {
        let mut a = self.join_synced(project, "alice");
        let mut w = self.join_synced(project, "watcher");
        a.set("☁ a", "1");
        assert_eq!(w.recv(), relayed("☁ a", "1"));
        a.close_with(1000);
        w.close_with(1000);
    }

    /// Connects and sends a legacy (`kind`) handshake with `variables` (a JSON object text).
    /// Does not wait: the join's acknowledgement is the room's values, the client's first
    /// frame (none when the room has no variables: then [`Client::sync`]).
    pub fn legacy_join(&self, room: &str, user: &str, variables: &str) -> Client {
        let mut client = self.connect();
        client.send(&legacy_handshake(room, user, variables));
        client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The server binary, with no `STRATUS_*` variables inherited from the test's environment.
pub fn stratus_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stratus"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STRATUS_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the server with `args` until it exits by itself (within 10 s); returns the exit
/// status and everything it wrote to stderr.
pub fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let data_dir = own_data_dir(args);
    let mut child = stratus_command()
        .args(data_dir_args(&data_dir))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stratus");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stratus {args:?} did not exit by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut output);
    }
    if let Some(dir) = &data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    (status, output)
}

/// A fresh data directory for a server, unless the test chose one or none (`--no-persist`).
fn own_data_dir(args: &[&str]) -> Option<PathBuf> {
    let chosen = args
        .iter()
        .any(|a| *a == "--data-dir" || *a == "--no-persist" || a.starts_with("--data-dir="));
    (!chosen).then(|| unique_path(".data"))
}

fn data_dir_args(dir: &Option<PathBuf>) -> Vec<&OsStr> {
    dir.iter()
        .flat_map(|d| [OsStr::new("--data-dir"), d.as_os_str()])
        .collect()
}

/// A client request for `url` with extra headers.
pub fn request_with(
    url: &str,
    headers: &[(&str, &str)],
) -> tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    request
}

/// Streams a client can run over.
pub trait Stream: Read + Write {
    fn set_timeout(&self, timeout: Duration);
}

impl Stream for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).expect("timeout");
    }
}

impl Stream for UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).expect("timeout");
    }
}

/// How a client's connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server sent a close frame with this code (1005 if it had none).
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped(String),
}

/// A WebSocket client, remembering what it handshook with so its sets carry `user` and
/// `project_id` like the Scratch GUI's.
pub struct Client<S: Stream = TcpStream> {
    pub ws: WebSocket<S>,
    pub user: String,
    pub project: String,
    /// Text frames that arrived while [`Client::sync`] waited for its pong; `recv` returns
    /// them first, in order.
    pending: VecDeque<String>,
}

impl<S: Stream> Client<S> {
    pub fn new(ws: WebSocket<S>) -> Self {
        Client {
            ws,
            user: String::new(),
            project: String::new(),
            pending: VecDeque::new(),
        }
    }

    /// Returns once the server has handled everything this client sent before, and what it
    /// replied to those messages has arrived: a wire round trip, no log line read.
    ///
    /// The server reads a connection's messages in order and answers a ping only after those
    /// before it (a message waiting for its room to load holds back the ones after it, the ping
    /// included), so the first pong proves the handshake joined and a set another client sends
    /// from now on is relayed to this one. Replies to one read batch (such as a join's initial
    /// frame) are written at the batch's end and a pong may overtake them; a second ping, sent
    /// once the first pong is back, is read in a later batch, so its pong comes after them.
    /// Text frames that arrive meanwhile are kept, in order, for the next `recv`. Panics if the
    /// connection ends, so a refused join fails here. Each ping counts against the client's
    /// message rate like any message.
    pub fn sync(&mut self) {
        if let Err(ending) = self.try_sync() {
            panic!("connection ended while waiting for a pong: {ending:?}");
        }
    }

    /// [`Client::sync`], or how the connection ended instead of answering.
    pub fn try_sync(&mut self) -> Result<(), Ending> {
        self.try_sync_within(PATIENCE)
    }

    /// [`Client::try_sync`] waiting at most `patience` for the pongs (a join may wait that long
    /// for its room, as in a cluster recovering from an outage).
    pub fn try_sync_within(&mut self, patience: Duration) -> Result<(), Ending> {
        let deadline = Instant::now() + patience;
        self.ping_pong(deadline)?;
        self.ping_pong(deadline)
    }

    /// Sends a ping with a fresh payload and reads until its pong, keeping text frames.
    fn ping_pong(&mut self, deadline: Instant) -> Result<(), Ending> {
        let token = format!("sync {}", UNIQUE.fetch_add(1, Ordering::Relaxed));
        self.ws
            .send(Message::Ping(token.clone().into_bytes().into()))
            .expect("send ping");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no pong in time");
            self.ws.get_ref().set_timeout(left);
            match self.ws.read() {
                Ok(Message::Pong(payload)) if payload[..] == *token.as_bytes() => return Ok(()),
                Ok(Message::Text(text)) => self.pending.push_back(text.to_string()),
                Ok(Message::Close(Some(frame))) => {
                    return Err(Ending::Closed(u16::from(frame.code)))
                }
                Ok(Message::Close(None)) => return Err(Ending::Closed(1005)),
                // Pings (answered by tungstenite), pongs to earlier pings.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(e) => return Err(Ending::Dropped(e.to_string())),
            }
        }
    }

    /// A text frame [`Client::sync`] kept, for a test that reads `ws` itself.
    pub fn take_pending(&mut self) -> Option<String> {
        self.pending.pop_front()
    }

    /// Sends one text frame.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Sends one binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).expect("send");
    }

    /// Sends the Scratch GUI's handshake: `{"method":"handshake","user":U,"project_id":P}\n`.
    pub fn handshake(&mut self, project: &str, user: &str) {
        self.user = user.to_owned();
        self.project = project.to_owned();
        self.send(&gui_handshake(project, user));
    }

    /// Sets like the Scratch GUI: `{"method":"set","user":U,"project_id":P,"name":N,"value":V}\n`
    /// where `value` is JSON text (`5` for a number, `"\"5\""` for a string).
    pub fn set(&mut self, name: &str, value: &str) {
        let text = gui_set(&self.user, &self.project, name, value);
        self.send(&text);
    }

    /// Sets like the TurboWarp packager: `{"method":"set","name":N,"value":V,"project_id":P,
    /// "user":U}` without a trailing newline.
    pub fn packager_set(&mut self, name: &str, value: &str) {
        let text = packager_set(&self.user, &self.project, name, value);
        self.send(&text);
    }

    /// The next text frame, or `None` if nothing arrives within `timeout`. Panics if the
    /// connection ends.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<String> {
        if let Some(text) = self.pending.pop_front() {
            return Some(text);
        }
        self.ws.get_ref().set_timeout(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Some(text.to_string()),
                Ok(Message::Close(frame)) => panic!("closed while waiting for text: {frame:?}"),
                Ok(_) => {
                    // Pings: keep waiting, but only for what is left of the timeout.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.ws.get_ref().set_timeout(left);
                }
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next text frame within 5 s.
    pub fn recv(&mut self) -> String {
        self.recv_within(Duration::from_secs(5))
            .expect("a text frame within 5 s")
    }

    /// Reads frames until one contains `needle`, returning it; frames before it are skipped.
    pub fn recv_containing(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Some(text) if text.contains(needle) => return text,
                Some(_) => {}
                None => panic!("no frame containing {needle:?} within {PATIENCE:?}"),
            }
        }
    }

    /// Every text frame that arrives until none comes for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv_within(quiet) {
            frames.push(frame);
        }
        frames
    }

    /// Asserts nothing arrives for a while (long enough for several ticks) and the connection
    /// stays open.
    pub fn expect_silence(&mut self) {
        if let Some(text) = self.recv_within(Duration::from_millis(300)) {
            panic!("expected nothing, got {text:?}");
        }
    }

    /// Reads until the connection ends; text frames before the end are skipped.
    pub fn ending(&mut self) -> Ending {
        self.pending.clear();
        self.ws.get_ref().set_timeout(Duration::from_secs(15));
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return Ending::Closed(u16::from(frame.code)),
                Ok(Message::Close(None)) => return Ending::Closed(1005),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    panic!("connection still open after 15 s")
                }
                Err(e) => return Ending::Dropped(e.to_string()),
            }
        }
    }

    /// Reads until the server's close frame and returns its code; panics if the connection
    /// ends without one (for example with a reset).
    pub fn close_code(&mut self) -> u16 {
        match self.ending() {
            Ending::Closed(code) => code,
            Ending::Dropped(e) => panic!("no close frame: {e}"),
        }
    }

    /// Sends a close frame with `code` (as a browser does when the page goes away).
    pub fn close_with(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .expect("close");
        // Wait for the server's reply so the close was surely read.
        let _ = self.ending();
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A JSON string literal for `text`.
pub fn json_str(text: &str) -> String {
    serde_json::to_string(text).expect("string encodes")
}

/// The Scratch GUI's handshake frame.
pub fn gui_handshake(project: &str, user: &str) -> String {
    format!(
        "{{\"method\":\"handshake\",\"user\":{},\"project_id\":{}}}\n",
        json_str(user),
        json_str(project)
    )
}

/// The Scratch GUI's set frame; `value` is JSON text.
pub fn gui_set(user: &str, project: &str, name: &str, value: &str) -> String {
    format!(
        "{{\"method\":\"set\",\"user\":{},\"project_id\":{},\"name\":{},\"value\":{value}}}\n",
        json_str(user),
        json_str(project),
        json_str(name)
    )
}

/// The TurboWarp packager's set frame; `value` is JSON text.
pub fn packager_set(user: &str, project: &str, name: &str, value: &str) -> String {
    format!(
        "{{\"method\":\"set\",\"name\":{},\"value\":{value},\"project_id\":{},\"user\":{}}}",
        json_str(name),
        json_str(project),
        json_str(user)
    )
}

/// A bare set line (no user/project), as several clients and our tests send inside one frame.
pub fn set_line(name: &str, value: &str) -> String {
    format!(
        "{{\"method\":\"set\",\"name\":{},\"value\":{value}}}",
        json_str(name)
    )
}

/// What the server sends a Scratch client for one variable: `value` is JSON text.
pub fn relayed(name: &str, value: &str) -> String {
    format!(
        "{{\"method\":\"set\",\"name\":{},\"value\":{value}}}",
        json_str(name)
    )
}

/// The legacy dialect's handshake; `variables` is a JSON object text.
pub fn legacy_handshake(room: &str, user: &str, variables: &str) -> String {
    format!(
        "{{\"kind\":\"handshake\",\"room\":{},\"username\":{},\"variables\":{variables}}}",
        json_str(room),
        json_str(user)
    )
}

/// A legacy set; values are always strings.
pub fn legacy_set(name: &str, value: &str) -> String {
    format!(
        "{{\"kind\":\"set\",\"variable\":{},\"value\":{}}}",
        json_str(name),
        json_str(value)
    )
}

/// What the server sends a legacy client for one variable.
pub fn legacy_relayed(name: &str, value: &str) -> String {
    legacy_set(name, value)
}

/// Newline-joins lines, the way the server batches them into one frame.
pub fn lines(parts: &[String]) -> String {
    parts.join("\n")
}

/// Sends raw bytes over a fresh TCP connection and returns the full response (until the
/// server closes).
pub fn http_exchange(server: &Server, request: &str) -> String {
    http_exchange_bytes(server, request.as_bytes())
}

pub fn http_exchange_bytes(server: &Server, request: &[u8]) -> String {
    let mut stream = server.tcp();
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn parse(raw: &str) -> HttpResponse {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {raw:?}"));
        let mut head_lines = head.split("\r\n");
        let status_line = head_lines.next().expect("status line");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = head_lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        HttpResponse {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` and parses the response.
pub fn http(server: &Server, request: &str) -> HttpResponse {
    HttpResponse::parse(&http_exchange(server, request))
}

/// A GET request for `path`.
pub fn get(server: &Server, path: &str) -> HttpResponse {
    http(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"),
    )
}

/// A hand-written WebSocket upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    )
}

/// Reads whatever arrives until EOF (or an error such as a reset), waiting at most `timeout`.
/// Returns the bytes and whether the stream ended with EOF.
pub fn read_until_eof(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (bytes, false);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (bytes, true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => return (bytes, false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (bytes, true),
        }
    }
}

/// The complete unmasked frames in raw server output, after the HTTP head if there is one:
/// each frame's opcode and payload.
pub fn frames_in(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    if bytes.starts_with(b"HTTP/") {
        match memchr::memmem::find(bytes, b"\r\n\r\n") {
            Some(end) => i = end + 4,
            None => return out,
        }
    }
    while let (Some(&first), Some(&second)) = (bytes.get(i), bytes.get(i + 1)) {
        let mut len = usize::from(second & 0x7f);
        let mut header = 2;
        if len == 126 {
            let Some(raw) = bytes.get(i + 2..i + 4) else {
                break;
            };
            len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
            header = 4;
        } else if len == 127 {
            let Some(raw) = bytes.get(i + 2..i + 10) else {
                break;
            };
            let raw: [u8; 8] = raw.try_into().expect("8 bytes");
            len = usize::try_from(u64::from_be_bytes(raw)).expect("length fits");
            header = 10;
        }
        let Some(payload) = bytes.get(i + header..i + header + len) else {
            break;
        };
        out.push((first & 0x0f, payload.to_vec()));
        i += header + len;
    }
    out
}

/// The opcodes of the complete frames in raw server output.
pub fn opcodes_in(bytes: &[u8]) -> Vec<u8> {
    frames_in(bytes).into_iter().map(|(op, _)| op).collect()
}

/// The texts of the complete text frames in raw server output.
pub fn texts_in(bytes: &[u8]) -> Vec<String> {
    frames_in(bytes)
        .into_iter()
        .filter(|(op, _)| *op == 0x1)
        .map(|(_, payload)| String::from_utf8(payload).expect("UTF-8 text frame"))
        .collect()
}

/// The code of the first close frame in raw server output, if any.
pub fn close_code_in(bytes: &[u8]) -> Option<u16> {
    frames_in(bytes)
        .into_iter()
        .find(|(op, _)| *op == 0x8)
        .and_then(|(_, payload)| Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?])))
}

/// Writes a temporary file and returns its path (removed by the OS's tmp cleaning; tests
/// remove it themselves when they can).
pub fn temp_file(contents: &str) -> PathBuf {
    let path = unique_path(".txt");
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// One client-to-server WebSocket frame (FIN set, masked) with `opcode` and `payload`.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A masked text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    masked_frame(0x1, text.as_bytes())
}

impl Server {
    /// A counter or gauge of the `/metrics` page (its integer part). Waits as long as a server
    /// busy rendering megabytes may take to answer (a debug build, a 12.8 MB room).
    pub fn metric(&self, name: &str) -> u64 {
        self.try_metric(name)
            .unwrap_or_else(|| panic!("no {name} on the metrics page"))
    }

    /// A counter or gauge of the `/metrics` page, `None` when the page has no such line (a
    /// series with labels, such as a dialect's open connections, appears once it has counted
    /// something).
    pub fn try_metric(&self, name: &str) -> Option<u64> {
        self.try_metric_from(name, None)
    }

    /// [`Server::try_metric`] asked as if a proxy forwarded it for `client` (a loopback
    /// address, as `/metrics` requires): behind `--trust-proxy` each request then counts
    /// against that address's `--max-connections-per-ip`, not the test's own.
    pub fn try_metric_from(&self, name: &str, client: Option<&str>) -> Option<u64> {
        let mut stream = self.tcp();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let forwarded = client.map_or_else(String::new, |ip| format!("X-Forwarded-For: {ip}\r\n"));
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n{forwarded}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .expect("ask for metrics");
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("metrics page");
        assert!(page.starts_with("HTTP/1.1 200"), "metrics page: {page}");
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    }

    /// Waits until the metric `name` reads `value` (a missing series reads 0): how a test
    /// waits for something no client is told about, such as a session parked, a room dropped
    /// or loaded, a connection gone. Polls; panics after [`PATIENCE`] with the last value.
    pub fn wait_until_metric(&self, name: &str, value: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.try_metric(name).unwrap_or(0);
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {now}, expected {value} within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Polls `condition` until it holds; panics after [`PATIENCE`] naming `what`. For conditions
/// a test can observe (a file on disk, a process state), never to wait for log lines.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `/metrics` series of open connections speaking `dialect`. A Scratch or legacy
/// connection is counted there from the moment its join took effect (its dialect is decided by
/// a handshake that joined): the way to wait for a join of a client the test does not read,
/// such as [`silent_joiner`]. (Array-RPC and MultiStudio connections are counted before they
/// join: their joins are acknowledged on the wire.)
pub fn open_series(dialect: &str) -> String {
    format!("stratus_connections_open{{dialect=\"{dialect}\",phase=\"open\"}}")
}

/// Fills room `project` with `count` variables `☁ v0`, `☁ v1`, ... of 100 000 digits each
/// (count × 100 kB of state, sent without a byte rate limit in mind: start the server with
/// `--byte-rate 0`); the filler leaves once a watcher has the last one.
pub fn fill_large_room(server: &Server, project: &str, count: usize) {
    fill_large_room_with(server, project, count, |_| '7');
}

/// [`fill_large_room`] with variable `☁ v{i}` made of the digit `digit(i)`.
pub fn fill_large_room_with(
    server: &Server,
    project: &str,
    count: usize,
    digit: impl Fn(usize) -> char,
) {
    let mut filler = server.join_synced(project, "filler");
    let mut watcher = server.join_synced(project, "watcher");
    for i in 0..count {
        let digits = format!("\"{}\"", digit(i).to_string().repeat(100_000));
        filler.packager_set(&format!("☁ v{i}"), &digits);
    }
    watcher.recv_containing(&format!("☁ v{}", count - 1));
    filler.close_with(1000);
    watcher.close_with(1000);
}

/// A client that upgrades, joins `project` as `user` (sending both at once) and then reads
/// nothing until the test reads it.
pub fn silent_joiner(server: &Server, project: &str, user: &str) -> TcpStream {
    let mut stream = server.tcp();
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(text_frame(&gui_handshake(project, user)));
    stream
        .write_all(&bytes)
        .expect("send upgrade and handshake");
    stream
}
