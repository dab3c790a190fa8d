//! Configuration as an operator writes it: a TOML file under flags and environment variables,
//! `--print-config`, values with units, boolean environment variables, `--listen` shortcuts.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;

/// Runs `stratus --print-config` with `args` and `env`; returns the printed lines.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let output = stratus_command()
        .envs(env.iter().copied())
        .arg("--print-config")
        .args(args)
        .output()
        .expect("run stratus");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn line<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let file = temp_file(
        "tick-hz = 60\ntick-burst = 2\nmax_rooms = 5\ntrust-proxy = true\nmax-message-size = \"64KiB\"\n\
         allowed-origins = [\"https://turbowarp.org\"]\n",
    );
    let lines = print_config(
        &[
            "--config",
            file.to_str().expect("utf-8"),
            "--max-rooms",
            "7",
        ],
        &[("STRATUS_TICK_HZ", "20")],
    );
    assert_eq!(line(&lines, "tick-hz"), "tick-hz = 20  # env");
    assert_eq!(line(&lines, "max-rooms"), "max-rooms = 7  # flag");
    assert_eq!(line(&lines, "tick-burst"), "tick-burst = 2  # file");
    assert_eq!(line(&lines, "trust-proxy"), "trust-proxy = true  # file");
    assert_eq!(
        line(&lines, "max-message-size"),
        "max-message-size = \"64KiB\"  # file"
    );
    assert_eq!(
        line(&lines, "allowed-origins"),
        "allowed-origins = [\"https://turbowarp.org\"]  # file"
    );
    assert_eq!(
        line(&lines, "listen"),
        "listen = \"127.0.0.1:9080\"  # default"
    );
    // What it prints is itself a valid configuration file.
    let again = temp_file(
        &lines
            .iter()
            .map(|l| l.split("  #").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let reread = print_config(&["--config", again.to_str().expect("utf-8")], &[]);
    assert_eq!(line(&reread, "tick-hz"), "tick-hz = 20  # file");
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(again);
}

#[test]
fn a_bad_configuration_file_stops_the_server_naming_the_file_and_the_setting() {
    for (text, needle) in [
        (
            "no-such-setting = 1\n",
            "unknown setting \"no-such-setting\"",
        ),
        ("tick-hz = \"fast\"\n", "--tick-hz"),
        ("tick-burst = 0\n", "--tick-burst"),
        (
            "trust-proxy = \"maybe\"\n",
            "\"maybe\" is not an address or network",
        ),
        ("this is not toml", "TOML"),
    ] {
        let file = temp_file(text);
        let (status, output) = run_to_exit(&["--config", file.to_str().expect("utf-8")]);
        assert!(!status.success(), "{text}");
        assert!(output.contains(file.to_str().expect("utf-8")), "{output}");
        assert!(
            output.to_lowercase().contains(&needle.to_lowercase()),
            "{text}: {output}"
        );
        let _ = std::fs::remove_file(file);
    }
    let (status, output) = run_to_exit(&["--config", "/no/such/file.toml"]);
    assert!(!status.success());
    assert!(
        output.contains("cannot read /no/such/file.toml"),
        "{output}"
    );
}

#[test]
fn nonsense_limits_are_refused_at_start() {
    let (status, output) = run_to_exit(&["--max-connections", "0"]);
    assert!(!status.success());
    assert!(output.contains("must be at least 1"), "{output}");
    let (status, output) = run_to_exit(&["--max-message-size", "12 parsecs"]);
    assert!(!status.success());
    assert!(output.contains("unknown unit"), "{output}");
}

#[test]
fn sizes_and_durations_take_units() {
    let server = Server::start(&["--max-message-size", "1KiB", "--ping-interval", "1m"]);
    let mut client = server.join_synced("1", "alice");
    client.send(&format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)));
    assert_eq!(client.close_code(), 1009);
    let lines = print_config(&["--empty-room-ttl", "2h", "--byte-rate", "1MiB"], &[]);
    assert_eq!(
        line(&lines, "empty-room-ttl"),
        "empty-room-ttl = \"2h\"  # flag"
    );
}

#[test]
fn boolean_environment_variables_take_the_usual_words() {
    for (value, required) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("no", false),
    ] {
        let server =
            Server::start_with_env("127.0.0.1:0", &[("STRATUS_REQUIRE_USER_AGENT", value)], &[]);
        let mut client = server.connect();
        client.handshake("1", "alice");
        if required {
            assert_eq!(client.close_code(), 4006, "{value}");
        } else {
            client.sync();
        }
    }
}

#[test]
fn listen_takes_a_bare_port_or_a_host_name() {
    for listen in ["0", "localhost:0"] {
        let server = Server::start_on(listen, &[]);
        assert!(
            server.addr().ip().is_loopback(),
            "{listen}: {}",
            server.addr()
        );
        let mut client = server.join_synced("1", "alice");
        client.expect_silence();
    }
}

#[test]
fn print_config_hides_the_redis_password() {
    let lines = print_config(
        &["--cluster", "redis://:s3cret@127.0.0.1:6379/0"],
        &[("STRATUS_CLUSTER_NODE", "node-a")],
    );
    assert_eq!(
        line(&lines, "cluster"),
        "cluster = \"redis://:***@127.0.0.1:6379/0\"  # flag"
    );
    assert_eq!(
        line(&lines, "cluster-node"),
        "cluster-node = \"node-a\"  # env"
    );
    assert!(lines.iter().all(|l| !l.contains("s3cret")), "{lines:?}");
}
