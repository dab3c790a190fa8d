//! Safe and familiar defaults through the real binary: `--trust-proxy` believes only the
//! proxies it names and warns about listeners others can reach, `PORT` is honoured when nothing
//! else sets the address, a name that does not resolve is reported as such, every setting a
//! reload changes is logged, and `--print-config --all` is a complete configuration file.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = stratus_command()
        .env_remove("PORT")
        .envs(env.iter().copied())
        .arg("--print-config")
        .args(args)
        .output()
        .expect("run stratus");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

fn listen_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("listen = "))
        .unwrap_or_else(|| panic!("no listen line in {text}"))
}

/// A peer that is not a trusted proxy is its own address, whatever `X-Forwarded-For` says: it
/// cannot pass for a local client to read `/metrics`, nor for other clients to get around the
/// per-address limit.
#[test]
fn forwarded_addresses_from_untrusted_peers_are_ignored() {
    // The test connects from 127.0.0.1, which is not in the trusted network.
    let server = Server::start(&["--trust-proxy", "10.0.0.0/8"]);
    let metrics = http(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n",
    );
    // Local as it really is: allowed, though the header names a remote address.
    assert_eq!(metrics.status, 200);
    drop(server);

    // A server of its own, so that no earlier connection of the test still holds a place.
    let server = Server::start(&[
        "--trust-proxy",
        "10.0.0.0/8",
        "--max-connections-per-ip",
        "2",
    ]);
    let connect = |ip: &str| server.try_connect_with(&server.url(), &[("X-Forwarded-For", ip)]);
    let _a = connect("10.0.0.1").expect("first");
    let _b = connect("10.0.0.2").expect("second");
    assert!(
        connect("10.0.0.3").is_err(),
        "a third connection from one real address is refused whatever it claims"
    );
    // And logged under its real address.
    server.wait_for_log("[127.0.0.1] connected");
    assert!(!server.logged("10.0.0.1"), "{:?}", server.log());
}

/// The bare switch still means "a proxy on this machine": the test's loopback connection names
/// its client.
#[test]
fn bare_trust_proxy_trusts_loopback() {
    let server = Server::start(&["--trust-proxy", "--max-connections-per-ip", "1"]);
    let connect = |ip: &str| server.try_connect_with(&server.url(), &[("X-Forwarded-For", ip)]);
    let _a = connect("198.51.100.1").expect("first");
    let _b = connect("198.51.100.2").expect("another forwarded address has its own place");
    server.wait_for_log("[198.51.100.2] connected");
    let metrics = http(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n",
    );
    assert_eq!(metrics.status, 403);
    // The file's switch form reads the same.
    let file = temp_file("trust-proxy = true\n");
    let text = print_config(&["--config", file.to_str().expect("utf-8")], &[]);
    assert!(text.contains("trust-proxy = true  # file"), "{text}");
    let _ = std::fs::remove_file(file);
}

/// Trusting a proxy on a listener that other machines can reach is worth a warning.
#[test]
fn trust_proxy_on_a_reachable_listener_warns() {
    let server = Server::start_on("0.0.0.0:0", &["--trust-proxy"]);
    server.wait_for_log("--trust-proxy with a listener on 0.0.0.0:");
    let quiet = Server::start(&["--trust-proxy"]);
    quiet.join("1", "alice").sync();
    assert!(!quiet.logged("--trust-proxy with a listener"));
}

/// `PORT`, as TurboWarp's cloud-server reads it, when nothing else sets the address.
#[test]
fn port_is_honoured_when_listen_is_not_set() {
    let text = print_config(&[], &[("PORT", "8123")]);
    assert_eq!(listen_line(&text), "listen = 8123  # env PORT");
    let text = print_config(
        &[],
        &[("PORT", "8123"), ("STRATUS_LISTEN", "127.0.0.1:7000")],
    );
    assert_eq!(listen_line(&text), "listen = \"127.0.0.1:7000\"  # env");
    let text = print_config(&["--listen", "7001"], &[("PORT", "8123")]);
    assert_eq!(listen_line(&text), "listen = 7001  # flag");
    let file = temp_file("listen = \"127.0.0.1:7002\"\n");
    let text = print_config(
        &["--config", file.to_str().expect("utf-8")],
        &[("PORT", "8123")],
    );
    assert_eq!(listen_line(&text), "listen = \"127.0.0.1:7002\"  # file");
    let _ = std::fs::remove_file(file);

    // And the server really listens there (port 0: a free one, on loopback).
    let mut child = stratus_command()
        .env("PORT", "0")
        .args(["--no-persist", "--log-level", "info"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start stratus");
    let stderr = child.stderr.take().expect("stderr");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("listening on "));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a listening line");
    assert!(line.contains("listening on 127.0.0.1:"), "{line}");
    assert!(!line.contains(":9080"), "{line}");

    let (status, output) = {
        let out = stratus_command()
            .env("PORT", "eighty")
            .arg("--no-persist")
            .output()
            .expect("run stratus");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!status.success());
    assert!(
        output.contains("PORT=\"eighty\" is not a port number"),
        "{output}"
    );
}

/// A well-formed address whose name does not resolve says so.
#[test]
fn a_listen_name_that_does_not_resolve_says_so() {
    let (status, output) = run_to_exit(&["--no-persist", "--listen", "nosuchhost.invalid:9080"]);
    assert!(!status.success());
    assert!(
        output.contains("the name \"nosuchhost.invalid\" does not resolve"),
        "{output}"
    );
    let (status, output) = run_to_exit(&["--no-persist", "--listen", "nosuchhost:port"]);
    assert!(!status.success());
    assert!(output.contains("is not HOST:PORT"), "{output}");
}

/// A reload that gives an option a value it did not have (or takes it away) logs it, and the
/// settings after it in the list are not reported as changed.
#[test]
fn a_reload_logs_settings_that_gain_or_lose_a_value() {
    let file = temp_file("tick-hz = 30\n");
    let server = Server::start(&["--config", file.to_str().expect("utf-8")]);
    std::fs::write(&file, "tick-hz = 30\nblocked-projects = [\"9\"]\n").expect("write config");
    server.signal(libc::SIGHUP);
    server.wait_for_log("reloaded the configuration: 1 settings changed");
    assert!(
        server.logged("reload: blocked-projects (unset) -> [9]"),
        "{:?}",
        server.log()
    );
    std::fs::write(&file, "tick-hz = 30\n").expect("write config");
    server.signal(libc::SIGHUP);
    server.wait_for_log_count("reloaded the configuration: 1 settings changed", 2);
    assert!(
        server.logged("reload: blocked-projects [9] -> (unset)"),
        "{:?}",
        server.log()
    );
    let _ = std::fs::remove_file(file);
}

/// `--print-config --all` names every option, those without a value commented out, and reads
/// back as a configuration file giving the same settings.
#[test]
fn print_config_all_is_a_complete_template() {
    let all = print_config(&["--all"], &[]);
    let help = stratus_command().arg("--help").output().expect("help");
    let help = String::from_utf8(help.stdout).expect("utf-8");
    let mut options = 0;
    for word in help.split_whitespace() {
        let Some(name) = word.strip_prefix("--") else {
            continue;
        };
        let name = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if ["config", "print-config", "all", "help", "version", ""].contains(&name) {
            continue;
        }
        if !help.contains(&format!("  --{name}")) {
            continue; // mentioned in another option's text, not an option line
        }
        options += 1;
        assert!(
            all.contains(&format!("\n{name} = ")) || all.contains(&format!("\n# {name} = ")),
            "--{name} missing from:\n{all}"
        );
    }
    assert!(options > 40, "found only {options} options in --help");
    assert!(all.contains("\n# tls-cert = \"FILE\"  # unset"), "{all}");
    assert!(all.contains("\n# cluster = \"URL\"  # unset"), "{all}");
    assert!(
        all.contains("\nlisten = \"127.0.0.1:9080\"  # default"),
        "{all}"
    );

    let file = temp_file(&all);
    let reread = print_config(&["--config", file.to_str().expect("utf-8")], &[]);
    let plain = print_config(&[], &[]);
    assert_eq!(
        reread.replace("  # file", "  # default"),
        plain,
        "the template reads back as the same settings"
    );
    let _ = std::fs::remove_file(file);
}
