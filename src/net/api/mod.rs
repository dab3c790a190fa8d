//! The HTTP API's requests: which paths are the API's, and what each request is, validated.
//!
//! Pure functions of the method, the request target and the operator's project lists: a
//! request becomes a [`Query`] for the loop to answer, or a [`Reply`] to send at once (the
//! monitor page, a CORS preflight, or a JSON error that names the parameter at fault). The
//! project id is the one the client sends in the Scratch handshake, which is the engine's room
//! id as it is: `/logs?projectid=123` reads room `123`.

pub mod admin;
pub mod admin_attempts;
pub mod admin_request;
pub mod counts;
pub mod rate;
pub mod reply;

use crate::policy::{Policy, MAX_ROOM_ID_CHARS};
use crate::query::Query;
pub use counts::ApiCounts;
pub use rate::ApiRate;
pub use reply::{Body, Reply};

/// What the loop keeps for the API: the per-address limit, the request counts, and the admin
/// API's operators and failed attempts.
#[derive(Debug, Default)]
pub struct ApiState {
    pub rate: ApiRate,
    pub counts: ApiCounts,
    pub admin: admin::AdminState,
}

/// The page `/cloudmonitor/<id>` serves, one file with everything inline.
pub const MONITOR_PAGE: &str = include_str!("../pages/cloudmonitor.html");

/// Most entries one `/logs` request may ask for.
pub const MAX_LIMIT: usize = 1000;
/// Entries `/logs` answers when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `offset` accepted; history is capped far below it (`--history`).
pub const MAX_OFFSET: usize = 1_000_000_000;

/// Which part of the API a path is, for routing and for the metrics' `path` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/logs`.
    Logs,
    /// Anything under `/api/`.
    Api,
    /// `/cloudmonitor/<id>`.
    Monitor,
    /// `/admin` and `/admin/...` (see `admin::AdminPath`; never returned by [`Endpoint::of`]:
    /// admin paths are routed before the public API's).
    Admin,
}

impl Endpoint {
    /// The API part a request target is in, or `None` for a path that is not the API's.
    pub fn of(target: &str) -> Option<Endpoint> {
        let path = target.split('?').next().unwrap_or_default();
        if path == "/logs" {
            Some(Endpoint::Logs)
        } else if path == "/api" || path.starts_with("/api/") {
            Some(Endpoint::Api)
        } else if path.starts_with("/cloudmonitor/") {
            Some(Endpoint::Monitor)
        } else {
            None
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Logs => "logs",
            Endpoint::Api => "api",
            Endpoint::Monitor => "cloudmonitor",
            Endpoint::Admin => "admin",
        }
    }
}

/// What an API request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// A read for the loop to answer (`start_query`).
    Query(Query),
    /// An answer to send at once.
    Reply(Reply),
}

/// Routes and validates a request to `endpoint` (see [`Endpoint::of`]).
pub fn route(endpoint: Endpoint, method: &str, target: &str, policy: &Policy) -> Routed {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let reads = matches!(method, "GET" | "HEAD");
    match endpoint {
        Endpoint::Logs | Endpoint::Api if method == "OPTIONS" => Routed::Reply(Reply::preflight()),
        Endpoint::Logs | Endpoint::Api if !reads => {
            Routed::Reply(Reply::method_not_allowed(endpoint))
        }
        Endpoint::Monitor if !reads => Routed::Reply(Reply::method_not_allowed(endpoint)),
        // Routed by `admin::route_admin`, behind its token.
        Endpoint::Admin => Routed::Reply(Reply::page_not_found()),
        Endpoint::Logs => match logs_query(query) {
            Ok(logs) => allowed(logs, policy),
            Err(error) => Routed::Reply(error.reply()),
        },
        Endpoint::Api => {
            let project = path
                .strip_prefix("/api/v1/projects/")
                .and_then(|rest| rest.strip_suffix("/variables"))
                .filter(|id| !id.is_empty() && !id.contains('/'));
            match project.map(|id| project_id(id, "project", false)) {
                None => Routed::Reply(Reply::json_error(404, "no such API path", None)),
                Some(Ok(project)) => allowed(Query::Variables { project }, policy),
                Some(Err(error)) => Routed::Reply(error.reply()),
            }
        }
        Endpoint::Monitor => {
            let id = path
                .strip_prefix("/cloudmonitor/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .and_then(|id| project_id(id, "project", false).ok());
            match id {
                Some(id) if policy.project_allowed(&id) => Routed::Reply(Reply::monitor_page()),
                _ => Routed::Reply(Reply::page_not_found()),
            }
        }
    }
}

/// The query, or 404 when the operator blocks its project or does not allow it.
fn allowed(query: Query, policy: &Policy) -> Routed {
    let project = match &query {
        Query::Logs { project, .. } | Query::Variables { project } => project,
        // The admin API reaches every room, blocked ones included.
        Query::Admin { .. } => return Routed::Query(query),
    };
    if policy.project_allowed(project) {
        Routed::Query(query)
    } else {
        Routed::Reply(Reply::json_error(404, "no such project", None))
    }
}

/// A parameter that is missing, repeated or malformed: 400 naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadParameter {
    pub parameter: &'static str,
    pub message: &'static str,
}

impl BadParameter {
    fn reply(self) -> Reply {
        Reply::json_error(400, self.message, Some(self.parameter))
    }
}

const PROJECT_MESSAGE: &str =
    "projectid must be a project id of 1 to 999 characters (percent-encoded UTF-8)";
const PATH_PROJECT_MESSAGE: &str =
    "the project id must be 1 to 999 characters (percent-encoded UTF-8)";
const LIMIT_MESSAGE: &str = "limit must be a whole number from 1 to 1000";
const OFFSET_MESSAGE: &str = "offset must be a whole number from 0 to 1000000000";

/// `projectid`, `limit` and `offset` of a `/logs` query string; other parameters are ignored.
pub fn logs_query(query: &str) -> Result<Query, BadParameter> {
    let mut project = None;
    let mut limit = None;
    let mut offset = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name, true);
        let (slot, parameter) = match name.as_deref() {
            Some("projectid") => (&mut project, "projectid"),
            Some("limit") => (&mut limit, "limit"),
            Some("offset") => (&mut offset, "offset"),
            _ => continue,
        };
        if slot.is_some() {
            return Err(BadParameter {
                parameter,
                message: "a parameter may be given only once",
            });
        }
        *slot = Some(value);
    }
    let project = project_id(project.unwrap_or_default(), "projectid", true)?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => whole_number(text, 1, MAX_LIMIT).ok_or(BadParameter {
            parameter: "limit",
            message: LIMIT_MESSAGE,
        })?,
    };
    let offset = match offset {
        None => 0,
        Some(text) => whole_number(text, 0, MAX_OFFSET).ok_or(BadParameter {
            parameter: "offset",
            message: OFFSET_MESSAGE,
        })?,
    };
    Ok(Query::Logs {
        project,
        offset,
        limit,
    })
}

/// A project id as sent, percent-decoded: 1 to `MAX_ROOM_ID_CHARS` characters, as the
/// handshake accepts. `plus_is_space` in query strings (form encoding), not in paths.
fn project_id(
    encoded: &str,
    parameter: &'static str,
    plus_is_space: bool,
) -> Result<String, BadParameter> {
    let message = if parameter == "projectid" {
        PROJECT_MESSAGE
    } else {
        PATH_PROJECT_MESSAGE
    };
    percent_decode(encoded, plus_is_space)
        .filter(|id| !id.is_empty() && id.chars().nth(MAX_ROOM_ID_CHARS).is_none())
        .ok_or(BadParameter { parameter, message })
}

/// Decimal digits only (no sign, no spaces), within `min..=max`.
fn whole_number(text: &str, min: usize, max: usize) -> Option<usize> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (min..=max).contains(n))
}

/// `%XX` escapes decoded (and `+` as a space when asked); `None` for a broken escape or text
/// that is not UTF-8 once decoded.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'%' => {
                let (high, low) = match rest {
                    [high, low, ..] => (hex(*high)?, hex(*low)?),
                    _ => return None,
                };
                bytes.push(high << 4 | low);
                rest = rest.get(2..).unwrap_or_default();
            }
            b'+' if plus_is_space => bytes.push(b' '),
            _ => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(query: &str) -> Result<Query, BadParameter> {
        logs_query(query)
    }

    fn bad(query: &str) -> &'static str {
        match logs(query) {
            Err(error) => error.parameter,
            Ok(ok) => panic!("{query:?} was accepted: {ok:?}"),
        }
    }

    fn query(project: &str, offset: usize, limit: usize) -> Query {
        Query::Logs {
            project: project.to_owned(),
            offset,
            limit,
        }
    }

    #[test]
    fn logs_parameters_have_defaults_and_bounds() {
        assert_eq!(logs("projectid=123"), Ok(query("123", 0, 100)));
        assert_eq!(
            logs("projectid=123&limit=1000&offset=0"),
            Ok(query("123", 0, 1000))
        );
        assert_eq!(
            logs("offset=1000000000&limit=1&projectid=1"),
            Ok(query("1", 1_000_000_000, 1))
        );
        assert_eq!(
            logs("projectid=1&unknown=x&&other"),
            Ok(query("1", 0, 100)),
            "unknown parameters are ignored"
        );
        for (case, parameter) in [
            ("", "projectid"),
            ("limit=5", "projectid"),
            ("projectid=", "projectid"),
            ("projectid", "projectid"),
            ("projectid=%zz", "projectid"),
            ("projectid=%ff", "projectid"),
            ("projectid=1&projectid=2", "projectid"),
            ("projectid=1&limit=0", "limit"),
            ("projectid=1&limit=1001", "limit"),
            ("projectid=1&limit=", "limit"),
            ("projectid=1&limit=ten", "limit"),
            ("projectid=1&limit=-1", "limit"),
            ("projectid=1&limit=+5", "limit"),
            ("projectid=1&limit=99999999999999999999999", "limit"),
            ("projectid=1&limit=5&limit=5", "limit"),
            ("projectid=1&offset=-1", "offset"),
            ("projectid=1&offset=", "offset"),
            ("projectid=1&offset=1000000001", "offset"),
            ("projectid=1&offset=1.5", "offset"),
            ("projectid=1&offset=0&offset=0", "offset"),
        ] {
            assert_eq!(bad(case), parameter, "{case:?}");
        }
        let long = "9".repeat(MAX_ROOM_ID_CHARS + 1);
        assert_eq!(bad(&format!("projectid={long}")), "projectid");
        assert!(logs(&format!("projectid={}", &long[1..])).is_ok());
    }

    #[test]
    fn project_ids_are_percent_decoded() {
        assert_eq!(
            logs("projectid=caf%C3%A9+1&limit=2"),
            Ok(query("caf\u{e9} 1", 0, 2))
        );
        assert_eq!(percent_decode("a+b%2B", false).as_deref(), Some("a+b+"));
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%C3", false), None, "not UTF-8");
    }

    #[test]
    fn routes() {
        let policy = Policy {
            blocked_projects: ["7".to_owned()].into_iter().collect(),
            ..Policy::default()
        };
        let route = |method: &str, target: &str| {
            let endpoint = Endpoint::of(target).expect("an API path");
            route(endpoint, method, target, &policy)
        };
        let status = |method: &str, target: &str| match route(method, target) {
            Routed::Reply(reply) => reply.status,
            Routed::Query(_) => 0,
        };
        assert_eq!(Endpoint::of("/"), None);
        assert_eq!(Endpoint::of("/logsx"), None);
        assert_eq!(Endpoint::of("/apix"), None);
        assert_eq!(Endpoint::of("/cloudmonitor"), None);
        assert_eq!(
            route("GET", "/api/v1/projects/a%20b/variables"),
            Routed::Query(Query::Variables {
                project: "a b".to_owned()
            })
        );
        assert_eq!(
            route("HEAD", "/logs?projectid=1"),
            Routed::Query(query("1", 0, 100))
        );
        assert_eq!(status("GET", "/logs?projectid=7"), 404, "blocked");
        assert_eq!(status("GET", "/api/v1/projects/7/variables"), 404);
        assert_eq!(status("GET", "/cloudmonitor/7"), 404);
        assert_eq!(status("GET", "/cloudmonitor/1"), 200);
        assert_eq!(status("GET", "/cloudmonitor/1/"), 404);
        assert_eq!(status("GET", "/cloudmonitor/%zz"), 404);
        assert_eq!(status("GET", "/api/v1/projects//variables"), 404);
        assert_eq!(status("GET", "/api/v1/projects/1/2/variables"), 404);
        assert_eq!(status("GET", "/api/v1/projects/1"), 404);
        assert_eq!(status("GET", "/api"), 404);
        assert_eq!(status("GET", "/api/v1/projects/%ff/variables"), 400);
        assert_eq!(status("OPTIONS", "/logs"), 204);
        assert_eq!(status("OPTIONS", "/api/v1/projects/1/variables"), 204);
        assert_eq!(status("POST", "/logs?projectid=1"), 405);
        assert_eq!(status("OPTIONS", "/cloudmonitor/1"), 405);
        let allow_list = Policy {
            allowed_projects: Some(["1".to_owned()].into_iter().collect()),
            ..Policy::default()
        };
        let endpoint = Endpoint::Logs;
        assert!(matches!(
            super::route(endpoint, "GET", "/logs?projectid=2", &allow_list),
            Routed::Reply(Reply { status: 404, .. })
        ));
        assert!(matches!(
            super::route(endpoint, "GET", "/logs?projectid=1", &allow_list),
            Routed::Query(_)
        ));
    }
}
