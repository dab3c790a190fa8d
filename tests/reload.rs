//! SIGHUP through the real binary: the server keeps running and every connection stays, log
//! files are reopened, the configuration is read again, and a broken one is refused.
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
fn sighup_rereads_the_configuration_while_clients_stay_connected() {
    let filter = temp_file("");
    let file = temp_file(&format!(
        "username-filter = {:?}\ntick-hz = 30\n",
        filter.to_str().expect("utf-8")
    ));
    let mut server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    let (mut a, mut b) = server.pair();
    // Before the reload, both the room and the name are allowed.
    let _mallory = server.join_synced("9", "mallory");

    std::fs::write(&filter, "^mallory\n").expect("write filter");
    std::fs::write(
        &file,
        format!(
            "username-filter = {:?}\ntick-hz = 60\nblocked-projects = [\"9\"]\n",
            filter.to_str().expect("utf-8")
        ),
    )
    .expect("write config");
    server.signal(libc::SIGHUP);
    // The reload took effect once a new handshake for room 9 is refused.
    wait_until("room 9 blocked", || {
        server.join("9", "probe").try_sync() == Err(Ending::Closed(4004))
    });
    // The operator is told what changed and what waits for a restart.
    server.wait_for_log("reloaded the configuration: 2 settings changed");
    assert!(server.logged("reload: blocked-projects"));
    assert!(server.logged("reload: tick-hz 30 -> 60 takes effect after a restart"));
    assert!(server.is_running(), "SIGHUP does not stop the server");

    // The connected clients never noticed.
    a.set("☁ x", "1");
    assert_eq!(b.recv(), relayed("☁ x", "1"));
    // New handshakes see the new lists and filter.
    let mut blocked = server.join("9", "alice");
    assert_eq!(blocked.close_code(), 4004);
    let mut filtered = server.join("1", "mallory2");
    assert_eq!(filtered.close_code(), 4002);

    // A broken configuration is refused and the running one kept.
    std::fs::write(&file, "tick-hz = \"fast\"\n").expect("write config");
    server.signal(libc::SIGHUP);
    // The operator is told the file was refused.
    server.wait_for_log("reload failed, keeping the running configuration");
    let mut still_blocked = server.join("9", "bob");
    assert_eq!(still_blocked.close_code(), 4004);
    a.set("☁ x", "2");
    assert_eq!(b.recv(), relayed("☁ x", "2"));
    assert!(server.terminate().success());
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(filter);
}

#[test]
fn sighup_reopens_the_log_file_after_logrotate_moved_it() {
    let dir = unique_path(".logs");
    let server = Server::start(&["--log-dir", dir.to_str().expect("utf-8")]);
    let mut a = server.join_synced("1", "alice");
    let current = || {
        std::fs::read_dir(&dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a log file")
    };
    let log = current();
    let rotated = dir.join("rotated.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    server.signal(libc::SIGHUP);
    wait_until("a new file under the old name", || log.exists());
    // The operator is told (in the new file).
    server.wait_for_log("SIGHUP: log files reopened");
    a.close_with(1000);
    wait_until("the close is written to the new file", || {
        std::fs::read_to_string(&log).is_ok_and(|fresh| fresh.contains("client closed"))
    });
    assert!(!std::fs::read_to_string(&rotated)
        .expect("rotated")
        .contains("client closed"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
