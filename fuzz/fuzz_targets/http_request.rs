//! Arbitrary bytes as an HTTP request head: `parse_head`, then what the server answers
//! (`page`, `switching_protocols`) and the client address it would log (`client_ip`,
//! `anonymize`). Must never panic; a complete head never claims more bytes than it was given,
//! and answers are well-formed HTTP. The server reads heads through `HeadReader`, which must
//! answer the same however the bytes are split, and as `parse_head` does. A request to the
//! HTTP API is routed and validated (`api::route`) and its answer rendered, kept alive or not.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use stratus::net::api::{self, Body, Endpoint, Routed};
use stratus::net::head_reader::HeadReader;
use stratus::net::http::{
    anonymize, client_ip, page, parse_head, switching_protocols, Head, Request, Response,
    MAX_HEAD_BYTES,
};

fn check_response(response: &Response, include_body: bool) {
    assert!((200..600).contains(&response.status));
    let bytes = response.to_bytes(include_body);
    let text = std::str::from_utf8(&bytes).expect("responses are text");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a blank line ends the head");
    assert!(head.starts_with(&format!("HTTP/1.1 {} ", response.status)));
    let length = format!("\r\nContent-Length: {}\r\n", response.body.len());
    assert!(head.contains(&length), "{head:?}");
    assert!(head.contains("\r\nConnection: close"));
    assert_eq!(body, if include_body { response.body } else { "" });
}

/// The API's routing never panics, and what it answers is well-formed HTTP.
fn check_api(request: &Request) {
    let Some(endpoint) = Endpoint::of(&request.path) else {
        return;
    };
    let policy = stratus::policy::Policy {
        blocked_projects: ["7".to_owned()].into_iter().collect(),
        ..Default::default()
    };
    match api::route(endpoint, &request.method, &request.path, &policy) {
        Routed::Query(query) => {
            let project = match &query {
                stratus::query::Query::Logs { project, .. }
                | stratus::query::Query::Variables { project } => project,
                stratus::query::Query::Admin { .. } => panic!("the public API routed to admin"),
            };
            assert!(!project.is_empty() && policy.project_allowed(project));
            if let stratus::query::Query::Logs { limit, .. } = query {
                assert!((1..=api::MAX_LIMIT).contains(&limit));
            }
        }
        Routed::Reply(reply) => {
            for (include_body, keep_alive) in [(true, true), (false, false)] {
                let bytes = reply.to_bytes(include_body, keep_alive);
                let text = std::str::from_utf8(&bytes).expect("answers are text");
                let (head, body) = text
                    .split_once("\r\n\r\n")
                    .expect("a blank line ends the head");
                assert!(head.starts_with(&format!("HTTP/1.1 {} ", reply.status)));
                assert!(head.contains(if keep_alive {
                    "Connection: keep-alive"
                } else {
                    "Connection: close"
                }));
                if !include_body || reply.body == Body::Preflight {
                    assert_eq!(body, "");
                }
            }
        }
    }
}

fn check_request(request: &Request, head: &[u8]) {
    check_api(request);
    // Parsed strings come from the head.
    let text = String::from_utf8_lossy(head);
    assert!(text.contains(&request.method) || request.method.is_empty());
    if let Some(key) = &request.websocket_key {
        assert!(request.bad_upgrade.is_none());
        assert_eq!(request.method, "GET");
        assert!(!key.is_empty() && key.len() <= 64);
        assert_eq!(key.trim(), key);
        let response = switching_protocols(key);
        let response = std::str::from_utf8(&response).expect("101 is text");
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        let accept = response
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Accept: "))
            .expect("an accept header");
        assert_eq!(accept.len(), 28, "base64 of a SHA-1");
    } else {
        let response = request.bad_upgrade.clone().unwrap_or_else(|| page(request));
        check_response(&response, request.method != "HEAD");
        check_response(&response, true);
    }
    if let Some(bad) = &request.bad_upgrade {
        assert!(bad.status == 400 || bad.status == 426);
    }

    // Addresses: the socket's unless the proxy is trusted and its last entry parses.
    let socket: IpAddr = [10, 1, 2, 3].into();
    let forwarded = request.forwarded_for.as_deref();
    assert_eq!(client_ip(Some(socket), forwarded, false), Some(socket));
    assert_eq!(client_ip(None, forwarded, false), None);
    let trusted = client_ip(Some(socket), forwarded, true);
    let from_header = client_ip(None, forwarded, true);
    match from_header {
        Some(ip) => {
            assert_eq!(trusted, Some(ip));
            let last = forwarded.and_then(|f| f.rsplit(',').next()).unwrap_or("");
            assert_eq!(last.trim().parse::<IpAddr>().ok(), Some(ip));
        }
        None => assert_eq!(trusted, Some(socket)),
    }
    if let Some(ip) = trusted {
        let hidden = anonymize(ip);
        assert_eq!(anonymize(hidden), hidden, "anonymizing is idempotent");
        match hidden {
            IpAddr::V4(v4) => assert_eq!(v4.octets()[3], 0),
            IpAddr::V6(v6) => assert_eq!(&v6.segments()[3..], &[0; 5]),
        }
        assert_eq!(hidden.is_ipv4(), ip.is_ipv4());
    }
}

/// `HeadReader` answers the same whole or a byte at a time, and as `parse_head` does, except
/// that it stops at the size limit, and leaves two refusals to the end of the head: a target
/// that is not UTF-8, and too many headers.
fn check_reader(data: &[u8]) {
    let whole = HeadReader::default().receive(data);
    let mut reader = HeadReader::default();
    let mut bytewise = Head::Partial;
    for byte in data {
        bytewise = reader.receive(std::slice::from_ref(byte));
        if bytewise != Head::Partial {
            break;
        }
    }
    assert_eq!(whole, bytewise);
    let parsed = parse_head(data);
    match &whole {
        Head::Complete(..) => assert_eq!(whole, parsed),
        Head::Partial => match &parsed {
            Head::Partial => {}
            Head::Invalid(response) if response.status == 431 => {}
            Head::Invalid(_) => assert!(data.iter().any(|&b| b >= 0x80), "{parsed:?}"),
            Head::Complete(..) => panic!("httparse completed a head the reader waits on"),
        },
        Head::Invalid(response) if response.status == 431 => match &parsed {
            Head::Complete(_, length) => assert!(*length > MAX_HEAD_BYTES),
            _ => assert!(matches!(parsed, Head::Invalid(_)), "{parsed:?}"),
        },
        Head::Invalid(_) => assert!(matches!(parsed, Head::Invalid(_)), "{parsed:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check_reader(data);
    match parse_head(data) {
        Head::Complete(request, length) => {
            assert!(
                length > 0 && length <= data.len(),
                "{length} > {}",
                data.len()
            );
            check_request(&request, &data[..length]);
            // The head alone parses the same; trailing bytes are WebSocket data.
            assert_eq!(parse_head(&data[..length]), Head::Complete(request, length));
            // Every shorter prefix is still incomplete, so a head sent in pieces reads the same
            // (once the pieces are below the size limit).
            for cut in [length - 1, length / 2] {
                if cut < MAX_HEAD_BYTES {
                    assert_eq!(parse_head(&data[..cut]), Head::Partial, "cut at {cut}");
                }
            }
        }
        Head::Partial => {
            assert!(data.len() < MAX_HEAD_BYTES);
        }
        Head::Invalid(response) => {
            assert!(matches!(response.status, 400 | 431), "{response:?}");
            check_response(&response, true);
        }
    }
});
