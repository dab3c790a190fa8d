//! The admin API's HTTP side through the real socket: off without `--admin-tokens` (404), a
//! bad tokens file stops the start naming its line, 401 with `WWW-Authenticate: Bearer` for no
//! token, a wrong one, a token in a cookie, or the token of an operator SIGHUP removed (a bad
//! file at SIGHUP keeps the operators), the failed-attempt limit per address (429, another
//! address unaffected), 404 on a public address and for a request a local proxy forwards from
//! elsewhere, `--admin-listen`, bodies (read to their `Content-Length`, kept alive; too large
//! 413, chunked 400, `Expect` 417, each closed), the audit line, no CORS and no caching;
//! requests without a token never locking an address out, 421 for a non-loopback `Host` on a
//! loopback listener (DNS rebinding), `--admin-listen` off loopback refused without TLS or
//! `--admin-plain-http`, and SIGHUP re-reading the tokens file when the config is broken.
//!
//! The actions themselves are carried out elsewhere: here the loop's stubs may answer 501, so
//! an authenticated request is recognised by not being 401/404/429.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use common::*;

const ALICE: &str = "alice-0123456789abcdef0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef0123456789abcdef-bob";
const ROOMS: &str = "/admin/api/v1/rooms";

fn tokens_file(text: &str) -> PathBuf {
    let path = unique_path(".tokens");
    std::fs::write(&path, text).expect("write tokens");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A server with alice and bob as operators (and `args`); the tokens file, to rewrite.
fn start(args: &[&str]) -> (Server, PathBuf) {
    start_on("127.0.0.1:0", args)
}

fn start_on(listen: &str, args: &[&str]) -> (Server, PathBuf) {
    let path = tokens_file(&format!("alice {ALICE}\nbob {BOB}\n"));
    let mut all = vec!["--no-persist", "--admin-tokens", path.to_str().unwrap()];
    all.extend_from_slice(args);
    (Server::start_on(listen, &all), path)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// One connection, reading responses one at a time (by Content-Length).
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    fn response(&mut self) -> HttpResponse {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a head line");
            assert!(n > 0, "connection closed after {head:?}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut response = HttpResponse::parse(&head);
        let length: usize = response
            .header("content-length")
            .map_or(0, |l| l.parse().expect("a length"));
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("the body");
        response.body = String::from_utf8(body).expect("utf-8");
        response
    }

    /// True when the server closes the connection with nothing more to say.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

fn head(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n{extra}\r\n")
}

/// One request on a fresh connection.
fn ask(addr: SocketAddr, method: &str, target: &str, extra: &str, body: &str) -> HttpResponse {
    let mut conn = Conn::open(addr);
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    conn.send(
        format!(
            "{}{body}",
            head(method, target, &format!("{extra}{length}"))
        )
        .as_bytes(),
    );
    conn.response()
}

fn assert_private(response: &HttpResponse) {
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert!(
        !response
            .headers
            .iter()
            .any(|(name, _)| name.starts_with("access-control-")),
        "no CORS headers on admin answers: {response:?}"
    );
}

fn assert_unauthorized(response: &HttpResponse) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_private(response);
}

/// Passed the gate: the stubs of this branch answer 501 (the real actions 200/4xx).
fn assert_authenticated(response: &HttpResponse) {
    assert!(
        ![401, 404, 429].contains(&response.status),
        "not authenticated: {response:?}"
    );
    assert_private(response);
}

#[test]
fn admin_is_off_without_tokens() {
    let server = Server::start(&["--no-persist"]);
    for path in ["/admin", ROOMS] {
        let response = ask(server.addr(), "GET", path, &bearer(ALICE), "");
        assert_eq!(response.status, 404, "{path}");
    }
}

#[test]
fn a_short_token_or_a_malformed_line_stops_the_start_naming_the_line() {
    let short = "only-31-characters-long-token!!";
    assert_eq!(short.len(), 31);
    for (text, line) in [
        (
            format!("# operators\nalice {ALICE}\nbob {short}\n"),
            "line 3",
        ),
        (format!("alice {ALICE}\nbob\n"), "line 2"),
    ] {
        let path = tokens_file(&text);
        let (status, output) = run_to_exit(&[
            "--no-persist",
            "--listen",
            "127.0.0.1:0",
            "--admin-tokens",
            path.to_str().unwrap(),
        ]);
        assert!(!status.success(), "{output}");
        assert!(output.contains(line), "{output}");
        assert!(!output.contains(short), "the token is not echoed: {output}");
        assert!(!output.contains("listening on"), "{output}");
    }
}

#[test]
fn no_token_a_wrong_one_or_one_in_a_cookie_is_401_and_logged_with_the_address() {
    let (server, _) = start(&[]);
    let addr = server.addr();
    assert_unauthorized(&ask(addr, "GET", ROOMS, "", ""));
    assert_unauthorized(&ask(addr, "GET", ROOMS, &bearer(&ALICE[1..]), ""));
    assert_unauthorized(&ask(
        addr,
        "GET",
        ROOMS,
        &format!("Authorization: Basic {ALICE}\r\n"),
        "",
    ));
    assert_unauthorized(&ask(
        addr,
        "GET",
        ROOMS,
        &format!("Cookie: token={ALICE}; authorization=Bearer%20{ALICE}\r\n"),
        "",
    ));
    assert_unauthorized(&ask(addr, "GET", "/admin/anything", "", ""));
    server.wait_for_log("[127.0.0.1] admin GET \"/admin/api/v1/rooms\": wrong token: 401");
    server.wait_for_log("[127.0.0.1] admin GET \"/admin/api/v1/rooms\": no bearer token: 401");
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(ALICE), ""));
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(BOB), ""));
    // The page asks for the token itself: it is served to anyone who can reach it.
    let page = ask(addr, "GET", "/admin", "", "");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_private(&page);
}

#[test]
fn each_authenticated_request_is_audited_with_its_operator_action_target_and_status() {
    let (server, _) = start(&[]);
    let set = "/admin/api/v1/rooms/123/variables/%E2%98%81%20score";
    let response = ask(
        server.addr(),
        "PUT",
        set,
        &bearer(ALICE),
        r#"{"value":"5\nx"}"#,
    );
    assert_authenticated(&response);
    let line = server.wait_for_log(
        "[127.0.0.1] admin alice set-variable room \"123\" variable \"☁ score\" value \"\\\"5\\\\nx\\\"\": ",
    );
    assert!(
        line.contains(" INFO "),
        "changes are audited at info: {line}"
    );
    assert!(line.ends_with(&format!(": {}", response.status)), "{line}");
    let listed = ask(server.addr(), "GET", ROOMS, &bearer(BOB), "");
    let line = server.wait_for_log("admin bob list-rooms offset 0 limit 100: ");
    assert!(line.contains(" DEBUG "), "reads at debug: {line}");
    assert!(line.ends_with(&format!(": {}", listed.status)), "{line}");
    // A request that does not parse: the operator and what was wrong.
    let bad = ask(server.addr(), "PUT", set, &bearer(ALICE), r#"{"valeu":5}"#);
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        r#"{"error":"unknown field in the body","parameter":"valeu"}"#
    );
    assert_private(&bad);
    server.wait_for_log(&format!("admin alice PUT {set:?}: 400"));
}

#[test]
fn sighup_removes_an_operator_and_a_bad_file_keeps_the_operators() {
    let (server, path) = start(&[]);
    let addr = server.addr();
    // A connection kept alive across the reload is checked again at its next request.
    let mut kept = Conn::open(addr);
    kept.send(head("GET", ROOMS, &bearer(BOB)).as_bytes());
    assert_authenticated(&kept.response());
    std::fs::write(&path, format!("alice {ALICE}\n")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("reload: admin operators: alice");
    assert_unauthorized(&ask(addr, "GET", ROOMS, &bearer(BOB), ""));
    kept.send(head("GET", ROOMS, &bearer(BOB)).as_bytes());
    assert_unauthorized(&kept.response());
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(ALICE), ""));
    std::fs::write(&path, format!("alice {ALICE}\nbob short\n")).unwrap();
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("keeping the admin operators in force");
    assert!(line.contains("line 2"), "{line}");
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(ALICE), ""));
    assert_unauthorized(&ask(addr, "GET", ROOMS, &bearer(BOB), ""));
}

#[test]
fn ten_failed_attempts_a_minute_lock_an_address_out_and_no_other() {
    // Behind a local proxy the forwarded address is the one limited.
    let (server, _) = start(&["--trust-proxy"]);
    let addr = server.addr();
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    for _ in 0..10 {
        let wrong = ask(
            addr,
            "GET",
            ROOMS,
            &format!("{}{}", from("127.0.0.2"), bearer("nope")),
            "",
        );
        assert_unauthorized(&wrong);
    }
    let locked = ask(
        addr,
        "GET",
        ROOMS,
        &format!("{}{}", from("127.0.0.2"), bearer(ALICE)),
        "",
    );
    assert_eq!(locked.status, 429, "a good token too: {locked:?}");
    assert!(locked.header("retry-after").is_some());
    assert_private(&locked);
    server.wait_for_log("[127.0.0.2] admin request refused: too many failed attempts: 429");
    assert_authenticated(&ask(
        addr,
        "GET",
        ROOMS,
        &format!("{}{}", from("127.0.0.3"), bearer(ALICE)),
        "",
    ));
}

/// The machine's first non-loopback IPv4 address, if it has one.
fn public_address() -> Option<String> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8(output.stdout)
        .ok()?
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
}

#[test]
fn admin_on_a_public_address_or_forwarded_from_elsewhere_is_404() {
    if let Some(ip) = public_address() {
        let (server, _) = start_on(&format!("{ip}:0"), &[]);
        for path in ["/admin", ROOMS] {
            let response = ask(server.addr(), "GET", path, &bearer(ALICE), "");
            assert_eq!(response.status, 404, "{path} on {ip}");
        }
    } else {
        eprintln!("no non-loopback address: the public listener case is skipped");
    }
    // Every address: public, even to a client on this machine.
    let (server, _) = start_on("0.0.0.0:0", &[]);
    let local = SocketAddr::from(([127, 0, 0, 1], server.addr().port()));
    assert_eq!(ask(local, "GET", ROOMS, &bearer(ALICE), "").status, 404);
    assert_eq!(ask(local, "GET", "/admin", "", "").status, 404);
    // A local proxy passing on a request from elsewhere: not a local client.
    let (server, _) = start(&["--trust-proxy"]);
    let from_afar = format!("X-Forwarded-For: 203.0.113.7\r\n{}", bearer(ALICE));
    assert_eq!(ask(server.addr(), "GET", ROOMS, &from_afar, "").status, 404);
    let (untrusted, _) = start(&[]);
    assert_eq!(
        ask(untrusted.addr(), "GET", ROOMS, &from_afar, "").status,
        404
    );
    assert_authenticated(&ask(untrusted.addr(), "GET", ROOMS, &bearer(ALICE), ""));
}

#[test]
fn admin_listen_serves_the_admin_api_and_nothing_else() {
    let (server, _) = start(&["--admin-listen", "127.0.0.1:0"]);
    let line = server.wait_for_log("admin API on http://");
    let admin: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/admin"))
        .expect("the admin address")
        .parse()
        .expect("an address");
    assert_ne!(admin, server.addr());
    assert_authenticated(&ask(admin, "GET", ROOMS, &bearer(ALICE), ""));
    assert_eq!(ask(admin, "GET", "/admin", "", "").status, 200);
    assert_unauthorized(&ask(admin, "GET", ROOMS, "", ""));
    assert_eq!(ask(admin, "GET", "/logs?projectid=1", "", "").status, 404);
    let mut conn = Conn::open(admin);
    conn.send(upgrade_request("/", "").as_bytes());
    assert_ne!(conn.response().status, 101, "no WebSocket there");
}

#[test]
fn bodies_are_read_to_their_length_and_bounded() {
    let (server, _) = start(&[]);
    let addr = server.addr();
    let set = "/admin/api/v1/rooms/1/variables/%E2%98%81%20a";
    // A body, then the next request in the same write: both answered on one connection.
    let mut conn = Conn::open(addr);
    let body = r#"{"value": 5}"#;
    let extra = format!("{}Content-Length: {}\r\n", bearer(ALICE), body.len());
    conn.send(
        format!(
            "{}{body}{}",
            head("PUT", set, &extra),
            head("GET", ROOMS, &bearer(ALICE))
        )
        .as_bytes(),
    );
    let first = conn.response();
    assert_authenticated(&first);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert_authenticated(&conn.response());
    // A body sent in pieces.
    let mut slow = Conn::open(addr);
    slow.send(head("PUT", set, &extra).as_bytes());
    slow.send(&body.as_bytes()[..4]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    slow.send(&body.as_bytes()[4..]);
    assert_authenticated(&slow.response());
    for (framing, status) in [
        ("Content-Length: 1048577\r\n", 413),
        ("Transfer-Encoding: chunked\r\n", 400),
        ("Expect: 100-continue\r\nContent-Length: 12\r\n", 417),
        ("Content-Length: 12\r\nContent-Length: 13\r\n", 400),
    ] {
        let mut conn = Conn::open(addr);
        let extra = format!("{}{framing}", bearer(ALICE));
        conn.send(format!("{}{body}", head("PUT", set, &extra)).as_bytes());
        let response = conn.response();
        assert_eq!(response.status, status, "{framing:?}");
        assert_eq!(response.header("connection"), Some("close"), "{framing:?}");
        assert_private(&response);
        assert!(conn.closed(), "{framing:?}: closed, the body never read");
    }
    // Without a token the body is not waited for: 401 and closed.
    let mut stranger = Conn::open(addr);
    stranger.send(head("PUT", set, "Content-Length: 1000000\r\n").as_bytes());
    assert_unauthorized(&stranger.response());
    assert!(stranger.closed());
}

/// One request on a fresh connection with the given `Host` header.
fn ask_as_host(addr: SocketAddr, host: &str, target: &str, extra: &str) -> HttpResponse {
    let mut conn = Conn::open(addr);
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes());
    conn.response()
}

#[test]
fn requests_without_a_token_never_lock_an_address_out() {
    // What any page in the operator's browser can send to 127.0.0.1: `no-cors` fetches and
    // CORS preflights, which carry no `Authorization`.
    let (server, _) = start(&[]);
    let addr = server.addr();
    for _ in 0..15 {
        assert_unauthorized(&ask(addr, "GET", ROOMS, "", ""));
        let preflight = ask(
            addr,
            "OPTIONS",
            ROOMS,
            "Origin: https://evil.example\r\nAccess-Control-Request-Method: DELETE\r\n\
             Access-Control-Request-Headers: authorization\r\n",
            "",
        );
        assert_ne!(preflight.status, 429, "{preflight:?}");
        assert_private(&preflight);
    }
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(ALICE), ""));
}

#[test]
fn loopback_admin_listeners_answer_only_loopback_host_names() {
    let (server, _) = start(&["--admin-listen", "127.0.0.1:0"]);
    let line = server.wait_for_log("admin API on http://");
    let admin: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/admin"))
        .expect("the admin address")
        .parse()
        .expect("an address");
    for addr in [server.addr(), admin] {
        let port = addr.port();
        // A page whose name was rebound to 127.0.0.1 sends its own name as Host.
        for host in ["evil.example".to_owned(), format!("evil.example:{port}")] {
            for target in [ROOMS, "/admin"] {
                let rebound = ask_as_host(addr, &host, target, &bearer(ALICE));
                assert_eq!(rebound.status, 421, "{host} {target}: {rebound:?}");
                assert_private(&rebound);
            }
        }
        for host in [
            "localhost".to_owned(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ] {
            assert_authenticated(&ask_as_host(addr, &host, ROOMS, &bearer(ALICE)));
        }
    }
    server.wait_for_log("admin GET \"/admin/api/v1/rooms\": Host is not a loopback name: 421");
}

#[test]
fn admin_listen_off_loopback_needs_tls_or_admin_plain_http() {
    let path = tokens_file(&format!("alice {ALICE}\n"));
    let base = [
        "--no-persist",
        "--listen",
        "127.0.0.1:0",
        "--admin-tokens",
        path.to_str().unwrap(),
        "--admin-listen",
        "0.0.0.0:0",
    ];
    let (status, output) = run_to_exit(&base);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("--admin-listen 0.0.0.0:0") && output.contains("--admin-plain-http"),
        "{output}"
    );
    assert!(!output.contains("listening on"), "{output}");
    // Behind a proxy that terminates TLS, the operator says so.
    let server = Server::start(&[
        "--no-persist",
        "--admin-tokens",
        path.to_str().unwrap(),
        "--admin-listen",
        "0.0.0.0:0",
        "--admin-plain-http",
    ]);
    server.wait_for_log("admin API on http://0.0.0.0:");
}

#[test]
fn sighup_with_a_broken_config_file_still_rereads_the_tokens_file() {
    let tokens = tokens_file(&format!("alice {ALICE}\nbob {BOB}\n"));
    let config = unique_path(".toml");
    std::fs::write(
        &config,
        format!("admin-tokens = {:?}\n", tokens.to_str().unwrap()),
    )
    .unwrap();
    let server = Server::start(&["--no-persist", "--config", config.to_str().unwrap()]);
    let addr = server.addr();
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(BOB), ""));
    // Bob is revoked while the configuration file is being edited (and broken).
    std::fs::write(
        &config,
        format!(
            "admin-tokens = {:?}\nmax-connections = \n",
            tokens.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(&tokens, format!("alice {ALICE}\n")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("reload failed, keeping the running configuration");
    server.wait_for_log("reload: admin operators: alice");
    assert_unauthorized(&ask(addr, "GET", ROOMS, &bearer(BOB), ""));
    assert_authenticated(&ask(addr, "GET", ROOMS, &bearer(ALICE), ""));
}
