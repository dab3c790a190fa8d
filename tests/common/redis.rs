//! A real `redis-server` for cluster tests: each test starts its own on a free loopback port
//! with its own directory, so tests share nothing and may restart or kill their Redis.
//!
//! `redis-server` comes from the distribution (`apt-get install redis-server`; `.ci/run`
//! installs it). Where it is missing the cluster tests are skipped with a message, unless
//! `STRATUS_REQUIRE_REDIS=1` (set by `.ci/run`), which makes its absence a failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{unique_path, PATIENCE};

/// A running `redis-server`; killed and its directory removed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// The `redis-server` binary to run (`REDIS_SERVER` overrides the one on `PATH`).
fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// Whether cluster tests can run here; prints why not when they cannot.
pub fn available() -> bool {
    let found = Command::new(binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("STRATUS_REQUIRE_REDIS").is_none(),
            "STRATUS_REQUIRE_REDIS is set but redis-server cannot be run"
        );
        eprintln!("skipped: redis-server not found (apt-get install redis-server)");
    }
    found
}

impl RedisServer {
    /// Starts a Redis on a free port, or `None` (test skipped) when there is no `redis-server`.
    pub fn start() -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let port = free_port();
        let dir = unique_path("-redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = RedisServer {
            port,
            child: None,
            dir,
        };
        redis.spawn();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().expect("utf-8 dir")])
            // Data survives a restart (appendfsync always: nothing acknowledged is lost).
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Redis at once (SIGKILL), like a crash.
    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered. `kill`
    /// ends it (a stopped process dies of SIGKILL too).
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).expect("pid");
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills Redis and starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command with inline arguments and returns the first reply line.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl RedisServer {
    /// Runs one command and returns its reply as text: a status or an integer as it is, an
    /// error with its leading `-`, a bulk string's contents; `None` for a nil reply, an array,
    /// or when Redis cannot be reached.
    pub fn query(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(PATIENCE)).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        match line.split_at_checked(1)? {
            ("+" | ":", rest) => Some(rest.to_owned()),
            ("-", _) => Some(line.to_owned()),
            ("$", len) => {
                let len: usize = len.parse().ok()?;
                let mut bytes = vec![0; len + 2];
                reader.read_exact(&mut bytes).ok()?;
                bytes.truncate(len);
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
