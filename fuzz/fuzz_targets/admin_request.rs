//! Arbitrary bytes as an admin API request, head then body: `parse_head`, then the admin gate
//! (`route_admin`: the bearer token, then `admin_request::parse` over the method, the target
//! and the body). Must never panic; nothing becomes a `Query::Admin` unless the request carried
//! an operator's token exactly, and then it names that operator; every refusal renders as
//! well-formed HTTP, a 401 with its `WWW-Authenticate: Bearer` challenge. The same bytes split
//! at their first NUL are also given to the parser directly as target and body, so the paths
//! and bodies are explored without a head around them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus::admin::tokens::AdminTokens;
use stratus::net::api::admin::{route_admin, AdminPath, MAX_ADMIN_BODY_BYTES};
use stratus::net::api::admin_request;
use stratus::net::api::Routed;
use stratus::net::http::{parse_head, Head};
use stratus::query::Query;

/// The operators the target knows; the seeds carry `ALICE`.
const ALICE: &str = "alice-0123456789abcdef0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef0123456789abcdef-bob";

fn check(tokens: &AdminTokens, method: &str, target: &str, bearer: Option<&[u8]>, body: &[u8]) {
    let (operator, routed) = route_admin(tokens, method, target, bearer, body);
    let expected = match bearer {
        Some(token) if token == ALICE.as_bytes() => Some("alice"),
        Some(token) if token == BOB.as_bytes() => Some("bob"),
        _ => None,
    };
    assert_eq!(operator, expected, "the operator is the token's, and only then");
    match routed {
        Routed::Query(Query::Admin { operator, request }) => {
            assert_eq!(Some(operator.as_str()), expected, "no query without a valid token");
            let _ = (request.action(), request.changes());
            let _ = stratus::net::api::admin::audit_target(&request);
        }
        Routed::Query(other) => panic!("the admin gate routed to {other:?}"),
        Routed::Reply(reply) => {
            assert!((400..600).contains(&reply.status), "{}", reply.status);
            assert_eq!(reply.status == 401, expected.is_none());
            let bytes = reply.to_bytes(true, false);
            let text = std::str::from_utf8(&bytes).expect("answers are text");
            let (head, _) = text.split_once("\r\n\r\n").expect("a blank line ends the head");
            assert!(head.starts_with(&format!("HTTP/1.1 {} ", reply.status)));
            if reply.status == 401 {
                assert!(format!("{head}\r\n").contains("\r\nWWW-Authenticate: Bearer\r\n"));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let tokens = AdminTokens::parse(&format!("alice {ALICE}\nbob {BOB}\n")).expect("tokens");
    if let Head::Complete(request, length) = parse_head(data) {
        if AdminPath::of(&request.path) == Some(AdminPath::Api) {
            let rest = data.get(length..).unwrap_or_default();
            let body_length = request.content_length.unwrap_or(0).min(MAX_ADMIN_BODY_BYTES);
            let body = rest.get(..body_length.min(rest.len())).unwrap_or_default();
            let bearer = request.bearer.as_ref().map(|secret| secret.0.as_slice());
            check(&tokens, &request.method, &request.path, bearer, body);
        }
    }
    // The parser alone: `METHOD target` NUL body.
    let (line, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (data.get(..at).unwrap_or_default(), data.get(at + 1..).unwrap_or_default()),
        None => (data, &[][..]),
    };
    if let Ok(line) = std::str::from_utf8(line) {
        let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
        let _ = admin_request::parse(method, target, body);
        check(&tokens, method, target, Some(ALICE.as_bytes()), body);
        check(&tokens, method, target, Some(b"alice-0123456789abcdef0123456789abcdeX"), body);
    }
});
