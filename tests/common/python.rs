//! A Python script driven by a test over JSON lines: the browser test (tests/browser/) and the
//! scratchattach test use tools that only exist in Python.
//!
//! The script prints one JSON object per line. Its first line is either `{"skip": reason}`
//! (a tool it needs is missing: selenium, chromium, scratchattach…) or anything else, its
//! first answer. A skip, or a missing `python3`, skips the test with a loud line unless the
//! test's `require` variable is set (`.ci/run` sets them), which makes it a failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// How long a script may take for one answer (it has its own patience inside: this only ends
/// a test whose script hung).
const SCRIPT_PATIENCE: Duration = Duration::from_secs(90);

/// A running script; killed when dropped.
pub struct PythonScript {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    name: String,
}

/// Reports a missing tool: a loud skip line, or a failure when `require` is set.
fn skip(require: &str, why: &str) {
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {why}"
    );
    // Written to the stderr handle itself, not with eprintln!, which the test harness
    // captures and shows only for failing tests: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED: {why} (set {require}=1 to make this a failure) !!!!!\n"
    );
}

impl PythonScript {
    /// Starts `tests/<script>` with `args`; returns it with its first line, or `None` when the
    /// test is skipped.
    pub fn start(
        script: &str,
        args: &[&str],
        require: &str,
    ) -> Option<(PythonScript, serde_json::Value)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(script);
        let spawned = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                skip(require, &format!("python3 cannot be run ({e})"));
                return None;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut script = PythonScript {
            child,
            stdin,
            lines,
            name: script.to_owned(),
        };
        let first = script.answer();
        if let Some(why) = first.get("skip").and_then(|w| w.as_str()) {
            skip(require, why);
            return None;
        }
        Some((script, first))
    }

    /// The script's next line, parsed.
    pub fn answer(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(SCRIPT_PATIENCE)
            .unwrap_or_else(|e| panic!("{} gave no answer: {e}", self.name));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} answered {line:?}, not JSON: {e}", self.name))
    }

    /// Sends one request line and returns the answer.
    pub fn ask(&mut self, request: &serde_json::Value) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("script stdin open");
        writeln!(stdin, "{request}").expect("write to script");
        stdin.flush().expect("flush script stdin");
        self.answer()
    }
}

impl Drop for PythonScript {
    fn drop(&mut self) {
        // Closing stdin lets the script end cleanly (quitting its browser); kill it if it
        // has not after a moment.
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
