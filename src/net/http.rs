//! HTTP/1.1 request heads: parsing, the few plain pages, and the WebSocket upgrade decision.
//!
//! Pure functions over bytes. Every connection starts here; only a valid upgrade continues to
//! WebSocket framing, everything else gets a short response and is closed.

use std::net::{IpAddr, SocketAddr};

/// Largest request head accepted; browsers send well under 2 KiB.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;

const SECURITY_HEADERS: &str =
    "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

const INDEX_PAGE: &str =
    "stratus is a cloud variable server for Scratch 3 and TurboWarp projects.\n\
Projects connect to it with WebSockets; there is nothing to see here in a browser.\n";

/// A parsed request head, keeping only what the server uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Sec-WebSocket-Key` of a well-formed upgrade request.
    pub websocket_key: Option<String>,
    /// The request asked for a WebSocket but is not a valid upgrade.
    pub bad_upgrade: Option<Response>,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    /// The `Cookie` header holds a Scratch session id anywhere in it.
    pub leaks_scratch_session: bool,
    pub forwarded_for: Option<String>,
    /// The connection ends after this request: `Connection: close`, or HTTP/1.0.
    pub closes: bool,
    /// A body may follow the head (`Content-Length` other than 0, any `Transfer-Encoding`), or
    /// the client waits to send one (`Expect`). The server reads no bodies, so the connection
    /// must close after the answer: kept open, the body would be read as the next request.
    pub carries_body: bool,
    /// The `Authorization: Bearer` token (the admin API's), never printed.
    pub bearer: Option<Secret>,
    /// The body's length (`Content-Length`), when announced and readable.
    pub content_length: Option<usize>,
    /// A body announced in a way the admin API does not read: `Transfer-Encoding` (chunked),
    /// or a `Content-Length` that is not one decimal number.
    pub unreadable_body: bool,
    /// `Expect` (`100-continue`): the client waits before sending its body.
    pub expects: bool,
    /// The `Host` header names something other than this machine's loopback (`localhost`,
    /// `127.x.x.x`, `[::1]`, any port): on a loopback listener, a page whose name was rebound
    /// to 127.0.0.1 (DNS rebinding). False without a `Host` header (no browser sends none).
    pub host_not_loopback: bool,
}

/// Bytes that must not appear in logs or debug output (a bearer token).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The result of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// More bytes are needed.
    Partial,
    /// A complete head, and how many bytes it took (anything after it is WebSocket data).
    Complete(Request, usize),
    /// The head is malformed or too large: answer with this response and close.
    Invalid(Response),
}

/// A plain response; always `Connection: close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub body: &'static str,
    pub extra_headers: &'static str,
}

impl Response {
    const fn new(status: u16, reason: &'static str, body: &'static str) -> Self {
        Response {
            status,
            reason,
            body,
            extra_headers: "",
        }
    }

    pub const BAD_REQUEST: Response = Response::new(400, "Bad Request", "bad request\n");
    pub const FORBIDDEN: Response = Response::new(403, "Forbidden", "origin not allowed\n");
    pub const NOT_FOUND: Response = Response::new(404, "Not Found", "not found\n");
    pub const METHOD_NOT_ALLOWED: Response = Response {
        extra_headers: "Allow: GET, HEAD\r\n",
        ..Response::new(405, "Method Not Allowed", "method not allowed\n")
    };
    pub const TOO_LARGE: Response = Response::new(
        431,
        "Request Header Fields Too Large",
        "request head too large\n",
    );
    pub const UPGRADE_REQUIRED: Response = Response {
        extra_headers: "Sec-WebSocket-Version: 13\r\n",
        ..Response::new(426, "Upgrade Required", "unsupported WebSocket version\n")
    };
    pub const TOO_MANY_CONNECTIONS: Response = Response::new(
        429,
        "Too Many Requests",
        "too many connections from your address\n",
    );
    pub const TIMEOUT: Response = Response::new(408, "Request Timeout", "request timeout\n");

    /// The response bytes; `HEAD` requests get the headers only.
    pub fn to_bytes(&self, include_body: bool) -> Vec<u8> {
        response_bytes(
            self.status,
            self.reason,
            "text/plain; charset=utf-8",
            self.extra_headers,
            self.body,
            include_body,
        )
    }

    pub const METRICS_FORBIDDEN: Response = Response::new(
        403,
        "Forbidden",
        "metrics are answered only to local clients (see --metrics-listen)\n",
    );
}

/// A whole response; `Connection: close` always.
pub fn response_bytes(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &str,
    include_body: bool,
) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{SECURITY_HEADERS}{extra_headers}\r\n{}",
        body.len(),
        if include_body { body } else { "" }
    )
    .into_bytes()
}

/// The Prometheus text page.
pub fn metrics_page(body: &str, include_body: bool) -> Vec<u8> {
    response_bytes(
        200,
        "OK",
        "text/plain; version=0.0.4; charset=utf-8",
        "",
        body,
        include_body,
    )
}

/// Parses what has arrived of a request head.
pub fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => Head::Complete(read_request(&request), length),
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD_BYTES => {
            Head::Invalid(Response::TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Invalid(Response::TOO_LARGE),
        Err(_) => Head::Invalid(Response::BAD_REQUEST),
    }
}

fn read_request(request: &httparse::Request<'_, '_>) -> Request {
    let mut parsed = Request {
        method: request.method.unwrap_or_default().to_owned(),
        path: request.path.unwrap_or_default().to_owned(),
        closes: request.version != Some(1),
        ..Request::default()
    };
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut version_13 = false;
    let mut key = None;
    for header in request.headers.iter() {
        // Looked at before the value must be UTF-8: a body announced in any bytes is one.
        parsed.carries_body |= announces_body(header);
        read_body_header(header, &mut parsed);
        let Ok(value) = std::str::from_utf8(header.value) else {
            continue;
        };
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
            parsed.closes |= has_token(value, "close");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_13 = value == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("origin") {
            parsed.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("user-agent") {
            parsed.user_agent = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("cookie") {
            parsed.leaks_scratch_session |= value.contains("scratchsessionsid=");
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            parsed.forwarded_for = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("host") {
            parsed.host_not_loopback = !is_loopback_host(value);
        }
    }
    if upgrade_websocket {
        if parsed.method != "GET" || !connection_upgrade {
            parsed.bad_upgrade = Some(Response::BAD_REQUEST);
        } else if !version_13 {
            parsed.bad_upgrade = Some(Response::UPGRADE_REQUIRED);
        } else if key.as_deref().is_none_or(|k| k.is_empty() || k.len() > 64) {
            parsed.bad_upgrade = Some(Response::BAD_REQUEST);
        } else {
            parsed.websocket_key = key;
        }
    }
    parsed
}

/// Whether a `Host` value names the loopback: `localhost` or a loopback address, with or
/// without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or("", |(address, _)| address),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Content-Length` other than 0 (or not a number), any `Transfer-Encoding`, any `Expect`.
fn announces_body(header: &httparse::Header<'_>) -> bool {
    let name = header.name;
    if name.eq_ignore_ascii_case("content-length") {
        header.value.trim_ascii() != b"0"
    } else {
        name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("expect")
    }
}

/// What the admin API needs to read a body, and its bearer token. A repeated
/// `Content-Length` is unreadable unless every copy says the same.
fn read_body_header(header: &httparse::Header<'_>, parsed: &mut Request) {
    let name = header.name;
    if name.eq_ignore_ascii_case("content-length") {
        let value = header.value.trim_ascii();
        let length =
            (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                .flatten()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        match (length, parsed.content_length) {
            (Some(n), None) if !parsed.unreadable_body => parsed.content_length = Some(n),
            (Some(n), Some(before)) if n == before => {}
            _ => {
                parsed.unreadable_body = true;
                parsed.content_length = None;
            }
        }
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        parsed.unreadable_body = true;
    } else if name.eq_ignore_ascii_case("expect") {
        parsed.expects = true;
    } else if name.eq_ignore_ascii_case("authorization") {
        if let Some(token) = crate::net::api::admin::bearer_token(header.value) {
            parsed.bearer = Some(Secret(token.to_vec()));
        }
    }
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// The answer to a request that is not a WebSocket upgrade.
pub fn page(request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::METHOD_NOT_ALLOWED;
    }
    let path = request.path.split('?').next().unwrap_or_default();
    match path {
        "/" => Response::new(200, "OK", INDEX_PAGE),
        "/robots.txt" => Response::new(200, "OK", "User-agent: *\nDisallow: /\n"),
        "/healthz" => Response::new(200, "OK", "ok\n"),
        _ => Response::NOT_FOUND,
    }
}

/// The `101 Switching Protocols` response for an accepted upgrade.
pub fn switching_protocols(key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{SECURITY_HEADERS}\r\n"
    )
    .into_bytes()
}

/// The client's address: the socket's, or with `trust_proxy` the last `X-Forwarded-For` entry
/// (the one the operator's own proxy appended).
pub fn client_ip(
    socket_ip: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trust_proxy: bool,
) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = forwarded_for.and_then(forwarded_client);
        if forwarded.is_some() {
            return forwarded;
        }
    }
    socket_ip
}

/// The address an `X-Forwarded-For` list ends with, the one the operator's proxy appended:
/// a bare address, or one with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`) as some proxies
/// write it. `None` when it is neither (`unknown`, garbage).
pub fn forwarded_client(list: &str) -> Option<IpAddr> {
    let last = list.rsplit(',').next()?.trim();
    last.parse()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

/// Hides the host part of an address for logs: the last octet of IPv4, all but the first three
/// groups of IPv6.
pub fn anonymize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /any/path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn complete(text: &str) -> Request {
        match parse_head(text.as_bytes()) {
            Head::Complete(request, length) => {
                assert_eq!(length, text.len());
                request
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn only_loopback_names_and_addresses_are_loopback_hosts() {
        for host in [
            "localhost",
            "LocalHost:9080",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:9080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:9080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.0.2.1",
            "[2001:db8::1]:80",
            "[::1",
            "::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let rebound = complete("GET / HTTP/1.1\r\nHost: evil.example:9080\r\n\r\n");
        assert!(rebound.host_not_loopback);
        assert!(!complete("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").host_not_loopback);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").host_not_loopback);
    }

    #[test]
    fn a_valid_upgrade_on_any_path_yields_its_key() {
        let request = complete(UPGRADE);
        assert_eq!(
            request.websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(request.bad_upgrade, None);
        let response =
            String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")).unwrap_or_default();
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_are_refused() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse_head(huge.as_bytes()),
            Head::Invalid(Response::TOO_LARGE)
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Head::Invalid(Response::BAD_REQUEST)
        );
    }

    #[test]
    fn bad_upgrades_are_explained() {
        let old_version = UPGRADE.replace("Version: 13", "Version: 8");
        assert_eq!(
            complete(&old_version).bad_upgrade,
            Some(Response::UPGRADE_REQUIRED)
        );
        let no_key = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(complete(&no_key).bad_upgrade, Some(Response::BAD_REQUEST));
        let post = UPGRADE.replace("GET", "POST");
        assert_eq!(complete(&post).bad_upgrade, Some(Response::BAD_REQUEST));
    }

    #[test]
    fn session_cookies_are_found_anywhere_in_the_header() {
        let with_cookie =
            UPGRADE.replace("\r\n\r\n", "\r\nCookie: a=b; scratchsessionsid=x\r\n\r\n");
        assert!(complete(&with_cookie).leaks_scratch_session);
        assert!(!complete(UPGRADE).leaks_scratch_session);
    }

    #[test]
    fn pages() {
        let get = |path: &str| page(&complete(&format!("GET {path} HTTP/1.1\r\n\r\n"))).status;
        assert_eq!(get("/"), 200);
        assert_eq!(get("/healthz"), 200);
        assert_eq!(get("/robots.txt"), 200);
        assert_eq!(get("/nope"), 404);
        assert_eq!(page(&complete("DELETE / HTTP/1.1\r\n\r\n")).status, 405);
        let bytes = String::from_utf8(Response::NOT_FOUND.to_bytes(true)).unwrap_or_default();
        assert!(bytes.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(bytes.contains("X-Frame-Options: DENY\r\n"));
        assert!(bytes.ends_with("\r\n\r\nnot found\n"));
    }

    #[test]
    fn requests_that_announce_a_body_are_marked() {
        let get = |extra: &[u8]| {
            let mut text = b"GET /logs HTTP/1.1\r\nHost: x\r\n".to_vec();
            text.extend_from_slice(extra);
            text.extend_from_slice(b"\r\n");
            match parse_head(&text) {
                Head::Complete(request, _) => request.carries_body,
                other => panic!("expected a complete head, got {other:?}"),
            }
        };
        assert!(!get(b""));
        assert!(!get(b"Content-Length: 0\r\n"));
        assert!(!get(b"Content-Length:  0 \r\n"));
        assert!(get(b"Content-Length: 5\r\n"));
        assert!(get(b"Content-Length: 0\r\nContent-Length: 7\r\n"));
        assert!(get(b"Content-Length: 00\r\n"), "not plainly 0: a body");
        assert!(get(b"Transfer-Encoding: chunked\r\n"));
        assert!(get(b"transfer-encoding: \xff\r\n"), "whatever its bytes");
        assert!(get(b"Expect: 100-continue\r\n"));
    }

    #[test]
    fn client_addresses() {
        let socket: IpAddr = [127, 0, 0, 1].into();
        let header = Some("1.2.3.4, 5.6.7.8");
        assert_eq!(client_ip(Some(socket), header, false), Some(socket));
        assert_eq!(
            client_ip(Some(socket), header, true),
            Some([5, 6, 7, 8].into())
        );
        assert_eq!(client_ip(Some(socket), Some("junk"), true), Some(socket));
        assert_eq!(
            forwarded_client("1.1.1.1, 203.0.113.5:4711"),
            Some([203, 0, 113, 5].into())
        );
        assert_eq!(
            forwarded_client("[2001:db8::1]:80"),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(forwarded_client("127.0.0.1, unknown"), None);
        assert_eq!(anonymize([5, 6, 7, 8].into()), IpAddr::from([5, 6, 7, 0]));
    }
}
