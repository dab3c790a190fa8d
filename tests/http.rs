//! Plain HTTP on the WebSocket port: the few pages, security headers, refused requests, the
//! upgrade's checks (version, origin), client addresses behind a proxy, and unix sockets.
// A test fails by panicking: unwrap, expect, indexing and panic are how it reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;

fn assert_security_headers(response: &HttpResponse) {
    assert_eq!(
        response.header("X-Frame-Options"),
        Some("DENY"),
        "{response:?}"
    );
    assert_eq!(
        response.header("X-Content-Type-Options"),
        Some("nosniff"),
        "{response:?}"
    );
    assert_eq!(
        response.header("Referrer-Policy"),
        Some("no-referrer"),
        "{response:?}"
    );
}

#[test]
fn the_index_page_describes_the_server_in_plain_text() {
    let server = Server::start(&[]);
    let response = get(&server, "/");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{response:?}"
    );
    assert!(
        response.body.contains("cloud variable server"),
        "{response:?}"
    );
    assert_eq!(
        response.header("Content-Length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_security_headers(&response);
}

#[test]
fn robots_are_told_to_stay_away() {
    let server = Server::start(&[]);
    let response = get(&server, "/robots.txt");
    assert_eq!(response.status, 200);
    assert!(
        response.body.lines().any(|l| l.trim() == "Disallow: /"),
        "{response:?}"
    );
    assert_security_headers(&response);
}

#[test]
fn healthz_answers_ok() {
    let server = Server::start(&[]);
    let response = get(&server, "/healthz");
    assert_eq!(response.status, 200);
    assert_eq!(response.body.trim(), "ok");
    assert_security_headers(&response);
    let with_query = get(&server, "/healthz?probe=1");
    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.body.trim(), "ok");
}

#[test]
fn other_paths_are_not_found() {
    let server = Server::start(&[]);
    for path in ["/other", "/index.html", "/healthz/x", "/robots.txt/"] {
        let response = get(&server, path);
        assert_eq!(response.status, 404, "{path}");
        assert_security_headers(&response);
    }
}

#[test]
fn methods_other_than_get_and_head_are_not_allowed() {
    let server = Server::start(&[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let response = http(
            &server,
            &format!("{method} / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
        );
        assert_eq!(response.status, 405, "{method}");
        assert!(response.header("Allow").is_some_and(|a| a.contains("GET")));
        assert_security_headers(&response);
    }
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let server = Server::start(&[]);
    let response = http(&server, "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "");
}

#[test]
fn a_garbage_request_gets_400() {
    let server = Server::start(&[]);
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ] {
        let response = HttpResponse::parse(&http_exchange_bytes(&server, garbage));
        assert_eq!(response.status, 400, "{garbage:?}");
        assert_security_headers(&response);
    }
}

/// Bytes that look random, without CR or LF, the same on every run.
fn garbage_without_line_end(length: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(length);
    while bytes.len() < length {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend(
            x.to_le_bytes()
                .into_iter()
                .filter(|b| !matches!(b, b'\r' | b'\n')),
        );
    }
    bytes.truncate(length);
    bytes
}

/// Binary garbage cannot be the start of a request head: it is answered 400 when it arrives,
/// not when the handshake deadline (30 s here) or the 8 KiB head limit is reached.
#[test]
fn binary_garbage_without_a_line_end_gets_400_at_once() {
    let server = Server::start(&["--handshake-timeout", "30"]);
    for garbage in [
        garbage_without_line_end(2_000),
        // What a TLS client sends first on the plain port: a ClientHello record.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ] {
        let mut raw = server.tcp();
        raw.write_all(&garbage).expect("write");
        let (bytes, ended) = read_until_eof(&mut raw, Duration::from_secs(5));
        assert!(
            bytes.starts_with(b"HTTP/1.1 400 "),
            "answer within 5 s to {} bytes of garbage: {:?}",
            garbage.len(),
            String::from_utf8_lossy(&bytes)
        );
        assert!(ended, "the connection is closed after the answer");
        assert_security_headers(&HttpResponse::parse(&String::from_utf8_lossy(&bytes)));
    }
}

/// Header values may hold obs-text (bytes 0x80 and above: UTF-8 or Latin-1), and the target
/// raw UTF-8, as some clients send them: such a request still upgrades.
#[test]
fn an_upgrade_with_utf8_and_obs_text_in_the_head_is_accepted() {
    let server = Server::start(&["--handshake-timeout", "30"]);
    let mut request = upgrade_request(
        "/caf\u{e9}",
        "User-Agent: Br\u{f6}wser \u{2603}\r\nX-Title: \u{1f600} d\u{e9}j\u{e0} vu\r\n",
    )
    .into_bytes();
    let end = request.len() - 2;
    request.splice(end..end, b"X-Latin1: caf\xe9 \xff\r\n".iter().copied());
    upgrade_with(&server, &request);
}

#[test]
fn an_oversized_request_head_is_refused() {
    let server = Server::start(&[]);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let response = http(&server, &request);
    assert_eq!(response.status, 431);
}

#[test]
fn a_wrong_websocket_version_gets_426() {
    let server = Server::start(&[]);
    let request = upgrade_request("/", "").replace("Version: 13", "Version: 8");
    let response = http(&server, &request);
    assert_eq!(response.status, 426);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
    assert_security_headers(&response);
}

#[test]
fn an_upgrade_without_a_key_or_with_post_gets_400() {
    let server = Server::start(&[]);
    let no_key =
        upgrade_request("/", "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(http(&server, &no_key).status, 400);
    let post = upgrade_request("/", "").replacen("GET", "POST", 1);
    assert_eq!(http(&server, &post).status, 400);
}

#[test]
fn a_valid_upgrade_is_accepted_with_security_headers() {
    let server = Server::start(&[]);
    let mut raw = server.tcp();
    raw.write_all(upgrade_request("/", "").as_bytes())
        .expect("write");
    let (bytes, _) = read_until_eof(&mut raw, Duration::from_millis(500));
    let text = String::from_utf8_lossy(&bytes);
    let response = HttpResponse::parse(&text);
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_security_headers(&response);
}

#[test]
fn a_browser_style_upgrade_is_accepted() {
    let server = Server::start(&[]);
    // Firefox sends `Connection: keep-alive, Upgrade`; header names and tokens vary in case.
    let request = "GET /cloud HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\nAccept: */*\r\nSec-WebSocket-Version: 13\r\nOrigin: https://turbowarp.org\r\nSec-WebSocket-Extensions: permessage-deflate\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: keep-alive, Upgrade\r\nCookie: a=1\r\nPragma: no-cache\r\nUpgrade: WebSocket\r\n\r\n";
    let response = upgrade_with(&server, request.as_bytes());
    // No extension was negotiated: frames stay uncompressed.
    assert_eq!(response.header("Sec-WebSocket-Extensions"), None);
}

#[test]
fn upgrades_are_accepted_on_any_path() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut a = server
        .try_connect_with(&format!("ws://{addr}/some/path"), &[])
        .expect("upgrade on a path");
    a.handshake("1", "alice");
    a.sync();
    let mut b = server
        .try_connect_with(&format!("ws://{addr}/?project=1&x=y"), &[])
        .expect("upgrade with a query");
    b.handshake("1", "bob");
    b.sync();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
}

#[test]
fn a_disallowed_origin_gets_403_before_the_upgrade() {
    let server = Server::start(&["--allowed-origins", "https://a.example,https://b.example"]);
    let raw = http(
        &server,
        &upgrade_request("/", "Origin: https://evil.example\r\n"),
    );
    assert_eq!(raw.status, 403);
    assert_security_headers(&raw);
    match server.try_connect_with(&server.url(), &[("Origin", "https://evil.example")]) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a disallowed origin was upgraded"),
    }
}

#[test]
fn allowed_origins_and_requests_without_an_origin_connect() {
    let server = Server::start(&["--allowed-origins", "https://a.example,https://b.example"]);
    let mut a = server.connect_with(&[("Origin", "https://a.example")]);
    a.handshake("1", "alice");
    a.sync();
    let mut b = server.connect_with(&[("Origin", "https://b.example")]);
    b.handshake("1", "bob");
    b.sync();
    let mut c = server.join_synced("1", "carol");
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    assert_eq!(c.recv(), relayed("☁ a", "1"));
}

#[test]
fn any_origin_connects_by_default() {
    let server = Server::start(&[]);
    let mut a = server.connect_with(&[("Origin", "https://evil.example")]);
    a.handshake("1", "alice");
    a.sync();
}

#[test]
fn a_trusted_proxys_forwarded_address_is_logged() {
    let server = Server::start(&["--trust-proxy"]);
    let mut a = server.connect_with(&[("X-Forwarded-For", "1.2.3.4")]);
    server.wait_for_log("[1.2.3.4] connected");
    a.handshake("1", "alice");
    server.wait_for_log("[1.2.3.4 \"alice\" 1] joined");
    // The last entry is the one the proxy appended.
    let _b = server.connect_with(&[("X-Forwarded-For", "9.9.9.9, 5.6.7.8")]);
    server.wait_for_log("[5.6.7.8] connected");
    assert!(!server.logged("9.9.9.9"));
    // HTTP requests are logged with it too.
    let response = http(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:db8::1\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    server.wait_for_log("[2001:db8::1] GET /healthz 200");
}

#[test]
fn forwarded_addresses_are_anonymized_when_asked() {
    let server = Server::start(&["--trust-proxy", "--anonymize-ips"]);
    let mut a = server.connect_with(&[("X-Forwarded-For", "1.2.3.4")]);
    server.wait_for_log("[1.2.3.0] connected");
    a.handshake("1", "alice");
    server.wait_for_log("[1.2.3.0 \"alice\" 1] joined");
    assert!(!server.logged("1.2.3.4"));
}

#[test]
fn socket_addresses_are_anonymized_when_asked() {
    let server = Server::start(&["--anonymize-ips"]);
    let _a = server.join("1", "alice");
    server.wait_for_log("[127.0.0.0 \"alice\" 1] joined");
    assert!(!server.logged("[127.0.0.1"));
}

#[test]
fn forwarded_addresses_are_ignored_without_trust_proxy() {
    let server = Server::start(&[]);
    let mut a = server.connect_with(&[("X-Forwarded-For", "1.2.3.4")]);
    a.handshake("1", "alice");
    server.wait_for_log("[127.0.0.1 \"alice\" 1] joined");
    assert!(!server.logged("1.2.3.4"));
}

/// Connects a WebSocket client over the server's unix socket.
fn unix_client(path: &std::path::Path) -> Client<UnixStream> {
    let stream = UnixStream::connect(path).expect("connect unix socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (ws, _) = tungstenite::client("ws://localhost/", stream).expect("upgrade");
    Client::new(ws)
}

#[test]
fn clients_can_connect_over_a_unix_socket() {
    let server = Server::start_unix(&[]);
    let Listen::Unix(path) = server.listen.clone() else {
        panic!("not a unix socket: {:?}", server.listen);
    };
    let mut a = unix_client(&path);
    a.handshake("1", "alice");
    a.sync();
    // The log says where a client came from: the unix socket.
    server.wait_for_log("[unix \"alice\" 1] joined");
    let mut b = unix_client(&path);
    b.handshake("1", "bob");
    b.sync();
    a.set("☁ a", "1");
    assert_eq!(b.recv(), relayed("☁ a", "1"));
    b.packager_set("☁ b", "\"2\"");
    assert_eq!(a.recv(), relayed("☁ b", "\"2\""));
    let mut c = unix_client(&path);
    c.handshake("1", "carol");
    assert_eq!(
        c.recv(),
        lines(&[relayed("☁ a", "1"), relayed("☁ b", "\"2\"")])
    );
    // Plain HTTP works there too.
    let mut raw = UnixStream::connect(&path).expect("connect");
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut raw, &mut response).expect("read");
    assert_eq!(HttpResponse::parse(&response).body.trim(), "ok");
    drop((a, b, c));
    let mut server = server;
    assert!(server.terminate().success());
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn a_stale_unix_socket_file_is_replaced() {
    let path = unique_path(".sock");
    let stale = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    drop(stale);
    assert!(path.exists());
    let _server = Server::start_on(path.to_str().expect("path"), &[]);
    let mut a = unix_client(&path);
    a.handshake("1", "alice");
    a.sync();
}

/// Sends a hand-written upgrade `request` and checks it is accepted (101 with the key's
/// accept value); returns the response.
fn upgrade_with(server: &Server, request: &[u8]) -> HttpResponse {
    let mut raw = server.tcp();
    raw.write_all(request).expect("write");
    let (bytes, _) = read_until_eof(&mut raw, Duration::from_millis(500));
    let response = HttpResponse::parse(&String::from_utf8_lossy(&bytes));
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    response
}
