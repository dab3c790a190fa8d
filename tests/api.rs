//! The HTTP API through the real socket: `/logs`, `/api/v1/projects/<id>/variables` and
//! `/cloudmonitor/<id>` — validation (400 naming the parameter), projects the operator blocks
//! (404), CORS and no-store headers whatever `--allowed-origins` says, the per-address rate
//! limit (429), keep-alive (sequential and pipelined requests, `Connection: close`, HTTP/1.0,
//! the per-connection cap, the idle timeout), answers the loop gives a turn later reaching the
//! connection that asked, HEAD, and a WebSocket upgrade after API requests. Also what a client
//! must not get: a request body read as a next request, `/metrics` behind a proxy for a client
//! it does not name as local, CORS on a refused write, one rate bucket for every IPv4 client of
//! a dual-stack listener, a server started with a nonsense `--api-rate`, a half-written answer
//! replaced by a 408.
//!
//! Servers run with `--no-persist`: a project nobody wrote has no history (`[]`) and no
//! variables (`{}`), which is what the answers are checked against.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::*;

fn start(args: &[&str]) -> Server {
    let mut all = vec!["--no-persist"];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn request(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n{extra}\r\n")
}

/// One connection that reads responses one at a time (by Content-Length), so several can
/// follow each other on it.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(server: &Server) -> Conn {
        Conn {
            reader: BufReader::new(server.tcp()),
        }
    }

    fn send(&mut self, text: &str) {
        self.reader
            .get_mut()
            .write_all(text.as_bytes())
            .expect("write");
    }

    /// The next response; `head_only` for a HEAD request or a 204, whose length says nothing
    /// of a body.
    fn response(&mut self, head_only: bool) -> HttpResponse {
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
        if !head_only {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).expect("the body");
            response.body = String::from_utf8(body).expect("utf-8");
        }
        response
    }

    fn get(&mut self, target: &str) -> HttpResponse {
        self.send(&request("GET", target, ""));
        self.response(false)
    }

    /// True when the server has closed the connection and everything before was read.
    fn at_end(&mut self) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(PATIENCE))
            .expect("timeout");
        self.reader.fill_buf().map_or(true, |rest| rest.is_empty())
    }

    /// True when the server closes the connection (EOF) with nothing more to say.
    fn closed(&mut self) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(PATIENCE))
            .expect("timeout");
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(_) => false,
        }
    }
}

fn assert_public_json(response: &HttpResponse) {
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn bad_parameters_get_400_naming_the_parameter() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    for (query, parameter) in [
        ("", "projectid"),
        ("limit=5", "projectid"),
        ("projectid=", "projectid"),
        ("projectid=%zz", "projectid"),
        ("projectid=1&projectid=2", "projectid"),
        ("projectid=1&limit=0", "limit"),
        ("projectid=1&limit=1001", "limit"),
        ("projectid=1&limit=", "limit"),
        ("projectid=1&limit=ten", "limit"),
        ("projectid=1&limit=2&limit=2", "limit"),
        ("projectid=1&offset=-1", "offset"),
        ("projectid=1&offset=", "offset"),
        ("projectid=1&offset=x", "offset"),
        ("projectid=1&offset=0&offset=0", "offset"),
    ] {
        let response = conn.get(&format!("/logs?{query}"));
        assert_eq!(response.status, 400, "{query:?}: {}", response.body);
        assert_public_json(&response);
        assert!(
            response
                .body
                .contains(&format!("\"parameter\":\"{parameter}\"")),
            "{query:?}: {}",
            response.body
        );
    }
    // The bounds themselves, and parameters nobody asked about, are fine.
    for query in [
        "projectid=1&limit=1000",
        "projectid=1&limit=1&offset=0",
        "projectid=1&offset=999&utm=x",
        "projectid=caf%C3%A9+1",
    ] {
        let response = conn.get(&format!("/logs?{query}"));
        assert_eq!(response.status, 200, "{query:?}: {}", response.body);
        assert_eq!(response.body, "[]");
    }
}

#[test]
fn blocked_not_allowed_and_unknown_are_404() {
    let server = start(&["--blocked-projects", "7"]);
    let mut conn = Conn::open(&server);
    for target in [
        "/logs?projectid=7",
        "/api/v1/projects/7/variables",
        "/api/v1/projects/%37/variables",
        "/api/v2/projects/1/variables",
        "/api/v1/projects/1",
        "/api/v1/projects//variables",
    ] {
        let response = conn.get(target);
        assert_eq!(response.status, 404, "{target}");
        assert_public_json(&response);
        assert!(response.body.starts_with("{\"error\":"), "{target}");
    }
    assert_eq!(conn.get("/cloudmonitor/7").status, 404);
    assert_eq!(conn.get("/logs?projectid=8").status, 200);
    drop(server);

    let server = start(&["--allowed-projects", "1"]);
    let mut conn = Conn::open(&server);
    assert_eq!(conn.get("/logs?projectid=2").status, 404);
    assert_eq!(conn.get("/api/v1/projects/2/variables").status, 404);
    assert_eq!(conn.get("/cloudmonitor/2").status, 404);
    assert_eq!(conn.get("/logs?projectid=1").status, 200);
    let variables = conn.get("/api/v1/projects/1/variables");
    assert_eq!(variables.status, 200);
    assert_public_json(&variables);
    assert_eq!(variables.body, "{\"project\":\"1\",\"variables\":{}}");
    assert_eq!(conn.get("/cloudmonitor/1").status, 200);
}

#[test]
fn reads_are_public_whatever_allowed_origins_says() {
    let server = start(&["--allowed-origins", "https://scratch.example"]);
    let mut conn = Conn::open(&server);
    conn.send(&request(
        "GET",
        "/logs?projectid=1",
        "Origin: https://elsewhere.example\r\n",
    ));
    let response = conn.response(false);
    assert_eq!(response.status, 200);
    assert_public_json(&response);
    conn.send(&request(
        "OPTIONS",
        "/api/v1/projects/1/variables",
        "Origin: https://elsewhere.example\r\nAccess-Control-Request-Method: GET\r\n",
    ));
    let preflight = conn.response(true);
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    conn.send(&request(
        "POST",
        "/logs?projectid=1",
        "Content-Length: 0\r\n",
    ));
    let post = conn.response(false);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));
    // Upgrades still obey it.
    let refused = http(
        &server,
        &upgrade_request("/", "Origin: https://elsewhere.example\r\n"),
    );
    assert_eq!(refused.status, 403);
}

#[test]
fn head_has_no_body_and_the_next_answer_follows_it() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    conn.send(&format!(
        "{}{}",
        request("HEAD", "/api/v1/projects/1/variables", ""),
        request("GET", "/logs?projectid=1", "")
    ));
    let head = conn.response(true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(
            "{\"project\":\"1\",\"variables\":{}}"
                .len()
                .to_string()
                .as_str()
        )
    );
    // Had the HEAD answer carried a body, this would read it as a status line.
    let next = conn.response(false);
    assert_eq!(next.status, 200);
    assert_eq!(next.body, "[]");
}

#[test]
fn the_monitor_page_is_self_contained_and_not_cached() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    let page = conn.get("/cloudmonitor/123");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("http"), "no external source: {csp}");
    assert!(page.body.to_ascii_lowercase().contains("<html"));
    // Kept alive like the API.
    assert_eq!(page.header("connection"), Some("keep-alive"));
    assert_eq!(conn.get("/logs?projectid=123").status, 200);
}

#[test]
fn keep_alive_serves_sequential_and_pipelined_requests_in_order() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    // Logs are answered a loop turn later, variables at once: the order is still the order
    // asked, and each answer is this connection's.
    for _ in 0..3 {
        assert_eq!(conn.get("/logs?projectid=a").body, "[]");
        assert_eq!(
            conn.get("/api/v1/projects/a/variables").body,
            "{\"project\":\"a\",\"variables\":{}}"
        );
    }
    let mut other = Conn::open(&server);
    let pipelined = |project: &str| {
        format!(
            "{}{}{}",
            request("GET", &format!("/logs?projectid={project}"), ""),
            request("GET", &format!("/api/v1/projects/{project}/variables"), ""),
            request("GET", &format!("/logs?projectid={project}&limit=5"), ""),
        )
    };
    conn.send(&pipelined("a"));
    other.send(&pipelined("b"));
    for (conn, project) in [(&mut conn, "a"), (&mut other, "b")] {
        assert_eq!(conn.response(false).body, "[]");
        assert_eq!(
            conn.response(false).body,
            format!("{{\"project\":\"{project}\",\"variables\":{{}}}}")
        );
        let last = conn.response(false);
        assert_eq!(last.body, "[]");
        assert_eq!(last.header("connection"), Some("keep-alive"));
    }
    assert_eq!(
        server.metric("stratus_api_requests_total{path=\"logs\",status=\"200\"}"),
        7
    );
    assert_eq!(
        server.metric("stratus_api_requests_total{path=\"api\",status=\"200\"}"),
        5
    );
}

#[test]
fn connection_close_and_http_1_0_end_the_connection() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    conn.send(&request(
        "GET",
        "/logs?projectid=1",
        "Connection: close\r\n",
    ));
    let response = conn.response(false);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closed());

    let mut conn = Conn::open(&server);
    conn.send("GET /api/v1/projects/1/variables HTTP/1.0\r\nHost: x\r\n\r\n");
    let response = conn.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.closed());

    // Other plain answers close as before.
    let mut conn = Conn::open(&server);
    let health = conn.get("/healthz");
    assert_eq!(health.header("connection"), Some("close"));
    assert!(conn.closed());
}

#[test]
fn a_connection_serves_at_most_100_requests() {
    let server = start(&["--api-rate", "0"]);
    let mut conn = Conn::open(&server);
    let many: String = (0..101)
        .map(|_| request("GET", "/api/v1/projects/1/variables", ""))
        .collect();
    conn.send(&many);
    for n in 1..=100 {
        let response = conn.response(false);
        assert_eq!(response.status, 200, "request {n}");
        let expected = if n == 100 { "close" } else { "keep-alive" };
        assert_eq!(response.header("connection"), Some(expected), "request {n}");
    }
    assert!(conn.closed(), "the 101st request is not answered");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let server = start(&["--handshake-timeout", "1"]);
    let mut conn = Conn::open(&server);
    assert_eq!(conn.get("/logs?projectid=1").status, 200);
    assert!(
        conn.closed(),
        "closed after the idle timeout, with no answer"
    );
}

#[test]
fn the_rate_limit_is_per_address_and_behind_a_proxy_per_forwarded_address() {
    let server = start(&["--api-rate", "0.01", "--api-burst", "3"]);
    let mut conn = Conn::open(&server);
    for _ in 0..3 {
        assert_eq!(conn.get("/logs?projectid=1").status, 200);
    }
    let limited = conn.get("/api/v1/projects/1/variables");
    assert_eq!(limited.status, 429);
    assert_public_json(&limited);
    assert_eq!(limited.header("retry-after"), Some("100"));
    assert!(limited.body.starts_with("{\"error\":"));
    // Still kept alive, and WebSocket clients are not affected.
    assert_eq!(conn.get("/cloudmonitor/1").status, 429);
    let mut client = server.connect();
    client.sync();
    assert_eq!(
        server.metric("stratus_api_requests_total{path=\"api\",status=\"429\"}"),
        1
    );
    drop(server);

    let server = start(&["--api-rate", "0.01", "--api-burst", "2", "--trust-proxy"]);
    let mut proxy = Conn::open(&server);
    let from = |ip: &str| {
        request(
            "GET",
            "/logs?projectid=1",
            &format!("X-Forwarded-For: {ip}\r\n"),
        )
    };
    for expected in [200, 200, 429] {
        proxy.send(&from("203.0.113.1"));
        assert_eq!(proxy.response(false).status, expected);
    }
    // Another client through the same proxy, even on the same connection.
    proxy.send(&from("203.0.113.2"));
    assert_eq!(proxy.response(false).status, 200);
    let mut other = Conn::open(&server);
    other.send(&from("203.0.113.3"));
    assert_eq!(other.response(false).status, 200);
}

#[test]
fn a_websocket_upgrade_may_follow_api_requests() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    assert_eq!(conn.get("/logs?projectid=1").status, 200);
    conn.send(&upgrade_request("/", "User-Agent: test\r\n"));
    let switching = conn.response(true);
    assert_eq!(switching.status, 101);
    let stream = conn.reader.into_inner();
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    ws.send(tungstenite::Message::text(
        "{\"method\":\"handshake\",\"project_id\":\"1\",\"user\":\"alice\"}",
    ))
    .expect("handshake");
    ws.send(tungstenite::Message::Ping(Default::default()))
        .expect("ping");
    loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Pong(_) => break,
            tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
    assert_eq!(server.metric("stratus_rooms"), 1);
}

/// What a proxy that reuses its connection to us would pass on from a client: a POST (or a GET)
/// whose body is a whole second request, claiming to come from a local client.
fn smuggling(method: &str, framing: &str, hidden: &str) -> String {
    let body = if framing.starts_with("Transfer-Encoding") {
        format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len())
    } else {
        hidden.to_owned()
    };
    let framing = framing.replace("LENGTH", &body.len().to_string());
    format!(
        "{}{body}",
        request(
            method,
            "/logs?projectid=1",
            &format!("X-Forwarded-For: 203.0.113.9\r\n{framing}")
        )
    )
}

#[test]
fn a_request_with_a_body_is_answered_and_closed_never_read_as_the_next_request() {
    let server = start(&["--trust-proxy"]);
    let hidden = request("GET", "/metrics", "X-Forwarded-For: 127.0.0.1\r\n");
    for (method, framing, status) in [
        ("POST", "Content-Length: LENGTH\r\n", 405),
        ("GET", "Content-Length: LENGTH\r\n", 200),
        ("GET", "Transfer-Encoding: chunked\r\n", 200),
        (
            "OPTIONS",
            "Expect: 100-continue\r\nContent-Length: LENGTH\r\n",
            204,
        ),
        ("DELETE", "", 405),
    ] {
        let mut proxy = Conn::open(&server);
        proxy.send(&smuggling(method, framing, &hidden));
        let answer = proxy.response(status == 204);
        assert_eq!(answer.status, status, "{method} {framing:?}");
        assert_eq!(
            answer.header("connection"),
            Some("close"),
            "{method} {framing:?}"
        );
        assert!(
            proxy.closed(),
            "{method} {framing:?}: the body is not answered as a request"
        );
    }
    assert_eq!(
        server.metric("stratus_api_requests_total{path=\"logs\",status=\"405\"}"),
        2
    );
}

#[test]
fn behind_a_proxy_metrics_are_local_only_for_a_named_local_client() {
    let server = start(&["--trust-proxy"]);
    let mut proxy = Conn::open(&server);
    proxy.send(&request(
        "GET",
        "/logs?projectid=1",
        "X-Forwarded-For: 127.0.0.1\r\n",
    ));
    assert_eq!(
        proxy.response(false).header("connection"),
        Some("keep-alive")
    );
    // The next client on the same connection does not inherit the local one's right, and an
    // address the server cannot read is not taken for the proxy's own.
    for forwarded in [
        "203.0.113.5",
        "203.0.113.5:4711",
        "unknown",
        "127.0.0.1, [::1]:x",
    ] {
        let mut proxy = Conn::open(&server);
        proxy.send(&request(
            "GET",
            "/logs?projectid=1",
            "X-Forwarded-For: 127.0.0.1\r\n",
        ));
        assert_eq!(proxy.response(false).status, 200);
        proxy.send(&request(
            "GET",
            "/metrics",
            &format!("X-Forwarded-For: {forwarded}\r\n"),
        ));
        assert_eq!(proxy.response(false).status, 403, "{forwarded:?}");
    }
    for forwarded in ["X-Forwarded-For: 203.0.113.5, 127.0.0.1\r\n", ""] {
        let mut local = Conn::open(&server);
        local.send(&request("GET", "/metrics", forwarded));
        assert_eq!(local.response(false).status, 200, "{forwarded:?}");
    }
}

#[test]
fn refused_writes_get_no_cors_headers() {
    let server = start(&[]);
    let mut conn = Conn::open(&server);
    conn.send(&request(
        "POST",
        "/api/v1/projects/1/variables",
        "Content-Length: 0\r\n",
    ));
    let refused = conn.response(false);
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_eq!(refused.header("content-type"), Some("application/json"));
}

#[test]
fn ipv4_clients_named_in_ipv6_form_are_limited_each_on_their_own() {
    let server = start(&["--api-rate", "0.01", "--api-burst", "1", "--trust-proxy"]);
    let mut proxy = Conn::open(&server);
    let mut status = |ip: &str| {
        proxy.send(&request(
            "GET",
            "/logs?projectid=1",
            &format!("X-Forwarded-For: {ip}\r\n"),
        ));
        proxy.response(false).status
    };
    assert_eq!(status("::ffff:192.0.2.1"), 200);
    assert_eq!(status("::ffff:192.0.2.2"), 200, "not one bucket for all");
    assert_eq!(status("::ffff:192.0.2.1"), 429);
    assert_eq!(status("192.0.2.1"), 429, "the same client in either form");
}

#[test]
fn api_rate_and_burst_out_of_range_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--api-rate", "nan"),
        ("--api-rate", "1e-300"),
        ("--api-rate", "-1"),
        ("--api-burst", "inf"),
        ("--api-burst", "0"),
    ] {
        let (status, output) = run_to_exit(&["--no-persist", &format!("{flag}={value}")]);
        assert!(!status.success(), "{flag} {value}");
        assert!(output.contains(flag), "{flag} {value}: {output}");
    }
}

#[test]
fn an_unread_answer_is_finished_not_replaced_when_the_deadline_passes() {
    let server = start(&[
        "--handshake-timeout",
        "1",
        "--byte-rate",
        "1GiB",
        "--byte-burst",
        "1GiB",
        "--allow-non-numeric",
    ]);
    // Answers larger together than the socket buffers of both sides hold while the client
    // does not read (some MiB on loopback; one answer stops near 1 MiB, so several
    // pipelined requests): one of them is being written when the deadline passes.
    let value = format!("\"{}\"", "x".repeat(100_000));
    let mut client = server.join("big", "alice");
    for n in 0..64 {
        client.set(&format!("☁ v{n}"), &value);
    }
    client.sync();
    let mut conn = Conn::open(&server);
    // The requests, and the first byte of a next request that never completes.
    let one = request("GET", "/api/v1/projects/big/variables", "");
    conn.send(&format!("{}G", one.repeat(12)));
    server.wait_until_metric(
        "stratus_connections_open{dialect=\"none\",phase=\"closing\"}",
        1,
    );
    let mut answers = 0;
    while !conn.at_end() {
        let answer = conn.response(false);
        assert_eq!(answer.status, 200, "after {answers} answers");
        assert!(answer.body.ends_with("}}"), "each answer whole");
        answers += 1;
    }
    assert!(
        answers >= 1,
        "the answer being written was finished, then nothing (no 408)"
    );
}
