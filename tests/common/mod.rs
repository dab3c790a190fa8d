//! Shared helpers for integration tests: start the real `stratus` binary on an ephemeral
//! loopback port and talk WebSocket to it with tungstenite's blocking client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
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
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server printed its address")
            .parse()
            .expect("address parses");
        Server { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
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
        // SAFETY: kill with a valid pid and signal number has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Ws = WebSocket<TcpStream>;

/// Connects a WebSocket client with extra request headers.
pub fn connect_with(server: &Server, headers: &[(&str, &str)]) -> Ws {
    let mut request = server.url().into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (ws, _) = tungstenite::client(request, stream).expect("upgrade");
    ws
}

pub fn connect(server: &Server) -> Ws {
    connect_with(server, &[])
}

/// Connects and handshakes into `room` as `user` the way the Scratch GUI does.
pub fn join(server: &Server, room: &str, user: &str) -> Ws {
    let mut ws = connect(server);
    send(
        &mut ws,
        &(format!(r#"{{"method":"handshake","user":"{user}","project_id":"{room}"}}"#) + "\n"),
    );
    ws
}

pub fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// Sends a set like the TurboWarp packager (number value, extra keys, no newline).
pub fn set(ws: &mut Ws, name: &str, value: &str) {
    send(
        ws,
        &format!(r#"{{"method":"set","name":"{name}","value":{value}}}"#),
    );
}

/// Sets the read timeout for the next reads.
pub fn set_timeout(ws: &Ws, timeout: Duration) {
    ws.get_ref()
        .set_read_timeout(Some(timeout))
        .expect("timeout");
}

/// The next text frame, or `None` if nothing arrives within `timeout`.
pub fn recv_within(ws: &mut Ws, timeout: Duration) -> Option<String> {
    set_timeout(ws, timeout);
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(frame)) => panic!("closed while waiting for text: {frame:?}"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

pub fn recv(ws: &mut Ws) -> String {
    recv_within(ws, Duration::from_secs(5)).expect("a text frame within 5 s")
}

/// Asserts nothing arrives for a while (long enough for several ticks).
pub fn expect_silence(ws: &mut Ws) {
    if let Some(text) = recv_within(ws, Duration::from_millis(300)) {
        panic!("expected nothing, got {text:?}");
    }
}

/// Reads until the server's close frame and returns its code.
pub fn close_code(ws: &mut Ws) -> u16 {
    set_timeout(ws, Duration::from_secs(15));
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

pub fn code_of(code: CloseCode) -> u16 {
    u16::from(code)
}

/// Sends raw bytes over a fresh TCP connection and returns the full response.
pub fn http_exchange(server: &Server, request: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
