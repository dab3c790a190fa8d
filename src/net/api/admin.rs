//! The admin API's gate: who may ask (a bearer token of `--admin-tokens`), how large a body
//! may be, and what a request becomes once its body is in ([`route_admin`]).
//!
//! Pure functions; the connection (`net/admission.rs`, `net/conn/keep_alive.rs`) decides
//! where admin paths are answered at all (loopback listeners and `--admin-listen` only), limits
//! failed attempts per address (`admin_attempts`), reads the body, and writes the audit line.
//! No cookie is ever read: a browser attaches cookies to cross-site requests, never an
//! `Authorization` header, so no other site's page can act with an operator's rights.

use super::admin_attempts::AdminAttempts;
use super::admin_request::{self, Refusal};
use super::{Reply, Routed};
use crate::admin::tokens::AdminTokens;
use crate::admin::AdminRequest;
use crate::query::Query;

/// Largest admin request body: a variable's longest value (100 000 characters) fits even
/// JSON-escaped.
pub const MAX_ADMIN_BODY_BYTES: usize = 1 << 20;

/// The console page, `GET /admin`.
pub const ADMIN_PAGE: &str = include_str!("../pages/admin.html");

/// What the loop keeps for the admin API: the operators (`None`: the admin API is off) and
/// the failed attempts per address.
#[derive(Debug, Default)]
pub struct AdminState {
    pub tokens: Option<AdminTokens>,
    /// Where `tokens` were last read from: read again at SIGHUP even when the configuration
    /// does not load.
    pub tokens_path: Option<std::path::PathBuf>,
    pub attempts: AdminAttempts,
}

/// Which part of the admin paths a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminPath {
    /// `/admin`: the console page.
    Page,
    /// Anything under `/admin/`: the API (or a 404 once authenticated).
    Api,
}

impl AdminPath {
    /// `/admin` or `/admin/...`; `None` for any other path (`/administrator` included).
    pub fn of(target: &str) -> Option<AdminPath> {
        let path = target.split('?').next().unwrap_or_default();
        if path == "/admin" {
            Some(AdminPath::Page)
        } else if path.starts_with("/admin/") {
            Some(AdminPath::Api)
        } else {
            None
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value; `None` for any other scheme.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value.get(7..)?.trim_ascii())
}

/// An admin API request, its body read: the query for the loop once the token is an
/// operator's and the request parses, else the reply (401, 400, 404, 405). The operator is
/// given whenever the token matched, for the audit line.
pub fn route_admin<'t>(
    tokens: &'t AdminTokens,
    method: &str,
    target: &str,
    bearer: Option<&[u8]>,
    body: &[u8],
) -> (Option<&'t str>, Routed) {
    let Some(operator) = bearer.and_then(|token| tokens.operator(token)) else {
        return (None, Routed::Reply(Reply::unauthorized()));
    };
    let routed = match admin_request::parse(method, target, body) {
        Ok(request) => Routed::Query(Query::Admin {
            operator: operator.to_owned(),
            request,
        }),
        Err(refusal) => Routed::Reply(refused(&refusal)),
    };
    (Some(operator), routed)
}

fn refused(refusal: &Refusal) -> Reply {
    Reply {
        allow: refusal.allow,
        ..Reply::with_status(refusal.status, refusal.json())
    }
}

/// What an audit line says a request is about: its target, client strings quoted and
/// escaped (`{:?}`), so that no value can forge a line of its own.
pub fn audit_target(request: &AdminRequest) -> String {
    use crate::admin::{BanTarget, KickTarget};
    /// Values are cut in audit lines; history has them whole.
    const SHOWN_VALUE_CHARS: usize = 100;
    match request {
        AdminRequest::ListRooms { offset, limit } => format!("offset {offset} limit {limit}"),
        AdminRequest::Room { room } | AdminRequest::ResetRoom { room } => format!("room {room:?}"),
        AdminRequest::History {
            room,
            offset,
            limit,
        } => format!("room {room:?} offset {offset} limit {limit}"),
        AdminRequest::SetVariable {
            room,
            name,
            value_json,
        } => {
            let mut shown: String = value_json.chars().take(SHOWN_VALUE_CHARS).collect();
            if shown.len() < value_json.len() {
                shown.push('…');
            }
            format!("room {room:?} variable {name:?} value {shown:?}")
        }
        AdminRequest::DeleteVariable { room, name } => {
            format!("room {room:?} variable {name:?}")
        }
        AdminRequest::Rollback { room, to_ms } => format!("room {room:?} to {to_ms}"),
        AdminRequest::Kick(KickTarget::Connection(id)) => format!("connection {id}"),
        AdminRequest::Kick(KickTarget::User { room, user }) => {
            format!("room {room:?} user {user:?}")
        }
        AdminRequest::ListBans | AdminRequest::ListBlocks => "-".to_owned(),
        AdminRequest::Ban {
            target,
            seconds,
            reason,
        } => {
            let whom = match target {
                BanTarget::User(user) => format!("user {user:?}"),
                BanTarget::Address(address) => format!("address {address:?}"),
            };
            format!("{whom} for {seconds}s reason {reason:?}")
        }
        AdminRequest::LiftBan { id } => format!("ban {id}"),
        AdminRequest::Block { project, seconds } => match seconds {
            Some(seconds) => format!("project {project:?} for {seconds}s"),
            None => format!("project {project:?} until lifted"),
        },
        AdminRequest::Unblock { project } => format!("project {project:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "alice-token-0123456789abcdef0123456789";

    fn tokens() -> AdminTokens {
        AdminTokens::parse(&format!("alice {TOKEN}\n")).expect("tokens")
    }

    #[test]
    fn only_a_bearer_token_of_an_operator_gets_through() {
        let tokens = tokens();
        let route =
            |bearer: Option<&[u8]>| route_admin(&tokens, "GET", "/admin/api/v1/rooms", bearer, b"");
        let (operator, routed) = route(bearer_token(format!("Bearer {TOKEN}").as_bytes()));
        assert_eq!(operator, Some("alice"));
        assert!(matches!(routed, Routed::Query(Query::Admin { .. })));
        for header in [
            String::new(),
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            format!("Bearer {TOKEN}x"),
            "Bearer ".to_owned(),
        ] {
            let (operator, routed) = route(bearer_token(header.as_bytes()));
            assert_eq!(operator, None, "{header:?}");
            let Routed::Reply(reply) = routed else {
                panic!("{header:?} got through");
            };
            assert_eq!(reply.status, 401);
            let text = String::from_utf8(reply.to_bytes(true, false)).expect("text");
            assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{text}");
        }
        let (_, routed) = route(None);
        assert!(matches!(routed, Routed::Reply(Reply { status: 401, .. })));
        assert_eq!(
            bearer_token(format!("  bearer   {TOKEN} ").as_bytes()),
            Some(TOKEN.as_bytes())
        );
    }

    #[test]
    fn an_operator_s_bad_request_is_refused_with_its_operator_named() {
        let tokens = tokens();
        let bearer = Some(TOKEN.as_bytes());
        let (operator, routed) = route_admin(&tokens, "POST", "/admin/api/v1/rooms", bearer, b"");
        assert_eq!(operator, Some("alice"));
        let Routed::Reply(reply) = routed else {
            panic!("accepted")
        };
        assert_eq!((reply.status, reply.allow), (405, Some("GET, HEAD")));
        let (_, routed) = route_admin(&tokens, "GET", "/admin/nothing", bearer, b"");
        assert!(matches!(routed, Routed::Reply(Reply { status: 404, .. })));
    }

    #[test]
    fn admin_paths_and_audit_targets() {
        assert_eq!(AdminPath::of("/admin"), Some(AdminPath::Page));
        assert_eq!(AdminPath::of("/admin?x"), Some(AdminPath::Page));
        assert_eq!(AdminPath::of("/admin/"), Some(AdminPath::Api));
        assert_eq!(AdminPath::of("/admin/api/v1/rooms"), Some(AdminPath::Api));
        assert_eq!(AdminPath::of("/administrator"), None);
        assert_eq!(AdminPath::of("/"), None);
        let set = AdminRequest::SetVariable {
            room: "1\n2".to_owned(),
            name: "☁ a".to_owned(),
            value_json: format!("\"{}\"", "x".repeat(500)),
        };
        let target = audit_target(&set);
        assert!(target.starts_with("room \"1\\n2\" variable \"☁ a\" value "));
        assert!(!target.contains('\n') && target.len() < 200, "{target}");
    }
}
