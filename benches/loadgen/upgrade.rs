//! The client side of the HTTP/1.1 WebSocket upgrade, done by hand on a non-blocking socket so
//! that any bytes the server sends right behind its `101` response stay with us: they are
//! the first WebSocket frames. Key and accept value come from tungstenite.

use std::io::{ErrorKind, Read, Write};

use memchr::memmem;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;

/// A response head larger than this is not a WebSocket server talking.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

pub struct Upgrade {
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    expected_accept: String,
}

/// Result of driving the upgrade as far as the socket allows.
pub enum Progress {
    /// Waiting for the socket to become writable or readable again.
    Pending,
    /// Upgrade accepted; the bytes that followed the response head.
    Done(Vec<u8>),
}

impl Upgrade {
    pub fn new(host: &str, path: &str) -> Self {
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\nUser-Agent: stratus-loadgen\r\n\r\n"
        );
        Upgrade {
            request: request.into_bytes(),
            written: 0,
            response: Vec::new(),
            expected_accept: derive_accept_key(key.as_bytes()),
        }
    }

    /// Writes what is left of the request, then reads the response head.
    pub fn advance(
        &mut self,
        stream: &mut (impl Read + Write),
        buf: &mut [u8],
    ) -> Result<Progress, String> {
        while self.written < self.request.len() {
            match stream.write(&self.request[self.written..]) {
                Ok(0) => return Err("io: WriteZero".into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Pending),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("io: {:?}", e.kind())),
            }
        }
        loop {
            match stream.read(buf) {
                Ok(0) => return Err("closed during upgrade".into()),
                Ok(n) => {
                    self.response.extend_from_slice(&buf[..n]);
                    if let Some(end) = memmem::find(&self.response, b"\r\n\r\n") {
                        check_response(&self.response[..end], &self.expected_accept)?;
                        return Ok(Progress::Done(self.response.split_off(end + 4)));
                    }
                    if self.response.len() > MAX_RESPONSE_HEAD {
                        return Err("response head too large".into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Pending),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("io: {:?}", e.kind())),
            }
        }
    }
}

fn check_response(head: &[u8], expected_accept: &str) -> Result<(), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().splitn(3, ' ');
    if !status_line
        .next()
        .is_some_and(|version| version.starts_with("HTTP/1."))
    {
        return Err("not an HTTP response".into());
    }
    let status = status_line.next().unwrap_or_default();
    if status != "101" {
        return Err(format!("http {status}"));
    }
    let accept = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| value.trim());
    if accept != Some(expected_accept) {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    Ok(())
}
