//! Starting the server: options from the command line and the environment, log files, and
//! startup failures an operator must see.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use common::*;

#[test]
fn options_can_come_from_the_environment() {
    let server = Server::start_with_env(
        "127.0.0.1:0",
        &[
            ("STRATUS_MAX_CLIENTS_PER_ROOM", "1"),
            ("STRATUS_ALLOW_NON_NUMERIC", "true"),
        ],
        &[],
    );
    let mut a = server.join_synced("1", "alice");
    let mut b = server.join("1", "bob");
    assert_eq!(b.close_code(), 4003);
    let mut c = server.join_synced("2", "carol");
    let mut d = server.join("2", "dave");
    assert_eq!(d.close_code(), 4003);
    // Non-numeric values are allowed: a newcomer to room 1 after alice leaves sees hers.
    a.set("☁ v", "\"hello\"");
    a.set("☁ w", "1");
    a.close_with(1000);
    // Carol is left.
    server.wait_until_metric(&open_series("scratch"), 1);
    let mut e = server.join("1", "erin");
    assert_eq!(
        e.recv(),
        lines(&[relayed("☁ v", "\"hello\""), relayed("☁ w", "1")])
    );
    c.expect_silence();
}

#[test]
fn logs_can_also_go_to_daily_files() {
    let dir = unique_path("-logs");
    let server = Server::start(&["--log-dir", dir.to_str().expect("path")]);
    let _a = server.join_synced("1", "alice");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("log directory created")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("stratus.") && name.ends_with(".log"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).expect("read log");
    assert!(text.contains("listening on"), "{text}");
    assert!(text.contains("\"alice\" 1] joined"), "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_busy_address_is_reported_and_the_server_exits_with_failure() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let (status, output) = run_to_exit(&["--listen", &addr]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("cannot listen on"), "{output}");
}

#[test]
fn an_unparsable_listen_address_is_reported() {
    let (status, output) = run_to_exit(&["--listen", "not-an-address"]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("not-an-address"), "{output}");
}

#[test]
fn an_invalid_username_filter_is_reported_with_its_line() {
    let filter = temp_file("# comment\nok\n(unclosed\n");
    let (status, output) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--username-filter",
        filter.to_str().expect("path"),
    ]);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("invalid username filter: line 3"),
        "{output}"
    );
    let _ = std::fs::remove_file(filter);
}

#[test]
fn a_missing_username_filter_file_is_reported() {
    let missing = unique_path(".missing");
    let (status, output) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--username-filter",
        missing.to_str().expect("path"),
    ]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("cannot read username filter"), "{output}");
}

#[test]
fn unknown_options_are_refused() {
    let (status, output) = run_to_exit(&["--no-such-option"]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("--no-such-option"), "{output}");
}

#[test]
fn version_and_help_are_printed() {
    let (status, output) = run_to_exit(&["--version"]);
    assert!(status.success());
    assert!(output.starts_with("stratus "), "{output}");
    let (status, output) = run_to_exit(&["--help"]);
    assert!(status.success());
    for option in [
        "--listen",
        "--tick-hz",
        "--max-clients-per-room",
        "STRATUS_LISTEN",
    ] {
        assert!(output.contains(option), "help lacks {option}");
    }
}

#[test]
fn an_existing_but_unwritable_log_dir_is_refused_at_start() {
    // /proc exists and takes no new files, even from root.
    let (status, output) = run_to_exit(&["--listen", "127.0.0.1:0", "--log-dir", "/proc"]);
    assert!(!status.success());
    assert!(
        output.contains("cannot write log files in /proc"),
        "{output}"
    );
    assert_eq!(
        output.lines().count(),
        1,
        "one clear message, not a dump per line: {output}"
    );
}

#[test]
fn a_unix_socket_a_live_server_answers_on_is_not_taken_over() {
    let first = Server::start_unix(&[]);
    let Listen::Unix(path) = &first.listen else {
        panic!("unix socket");
    };
    let path = path.to_str().expect("utf-8").to_owned();
    let (status, output) = run_to_exit(&["--listen", &path]);
    assert!(!status.success());
    assert!(output.contains("in use by a running server"), "{output}");
    // The first server is still reachable.
    let stream = std::os::unix::net::UnixStream::connect(&path).expect("still answering");
    drop(stream);
    assert!(std::path::Path::new(&path).exists());
}

#[test]
fn a_very_low_open_file_limit_still_serves_one_connection_and_says_so() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let dir = unique_path(".data");
    let mut command = stratus_command();
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and only changes the child's own limit.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 40,
                rlim_max: 40,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start stratus");
    let stderr = child.stderr.take().expect("stderr");
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("serving at most") || l.contains("listening on"))
        .expect("a line about the limit");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(line.contains("serving at most 1 "), "{line}");
}

#[test]
fn refusals_name_the_user_and_the_project() {
    let server = Server::start(&["--blocked-projects", "666"]);
    let mut filtered = server.join("5", "ScratchCat");
    assert_eq!(filtered.close_code(), 4002);
    server.wait_for_log("\"ScratchCat\" 5] closing: 4002");
    let mut blocked = server.join("666", "alice");
    assert_eq!(blocked.close_code(), 4004);
    server.wait_for_log("\"alice\" 666] closing: 4004");
    let url = format!("ws://{}/ws/world/7", server.addr());
    let mut rpc = server.try_connect_with(&url, &[]).expect("upgrade");
    rpc.send(r#"["authenticate",{"username":"ScratchTeam"}]"#);
    assert_eq!(rpc.close_code(), 4002);
    server.wait_for_log("\"ScratchTeam\" 7] closing: 4002");
}

#[test]
fn old_daily_log_files_are_deleted() {
    let dir = unique_path(".logs");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let old = dir.join("stratus.2001-02-03.log");
    let notes = dir.join("notes.txt");
    std::fs::write(&old, "old\n").expect("write");
    std::fs::write(&notes, "mine\n").expect("write");
    let server = Server::start(&[
        "--log-dir",
        dir.to_str().expect("utf-8"),
        "--log-keep-days",
        "7",
    ]);
    wait_until("the old log file is deleted", || !old.exists());
    // The operator is told.
    server.wait_for_log("deleted 1 log files older than 7 days");
    assert!(notes.exists(), "other files are left alone");
    let today = std::fs::read_dir(&dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stratus."))
        .count();
    assert_eq!(today, 1, "today's file stays");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unix_socket_gets_the_configured_mode() {
    use std::os::unix::fs::PermissionsExt;
    for (args, mode) in [
        (&[][..], 0o660),
        (&["--unix-socket-mode", "0600"][..], 0o600),
    ] {
        let server = Server::start_unix(args);
        let Listen::Unix(path) = &server.listen else {
            panic!("unix socket");
        };
        let actual = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(actual, mode, "{args:?}");
    }
}
