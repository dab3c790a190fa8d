//! The HTTP API's responses: JSON with CORS for any origin (reads only) and no caching, the
//! monitor and admin pages with a Content-Security-Policy that allows nothing from outside, and
//! whether the connection stays open after them. Admin answers never carry CORS headers.

use super::admin::ADMIN_PAGE;
use super::{Endpoint, MONITOR_PAGE};

/// Headers every API response has: nothing is cached (the values change), nothing is sniffed
/// or framed, no referrer leaves.
const COMMON_HEADERS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";

/// Reads are public: any page may fetch them (no credentials are involved).
const CORS_HEADERS: &str = "Access-Control-Allow-Origin: *\r\n";

/// A preflight's answer: GET and HEAD, with any request headers, remembered for a day.
const PREFLIGHT_HEADERS: &str = "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\n";

/// The monitor page may run its own inline script and style and talk to this server only.
const MONITOR_CSP: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/// The admin console may run its own inline script and style and talk to this server only;
/// no frame may hold it (clickjacking), no form may leave it.
const ADMIN_CSP: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/// A 401's challenge: the admin API takes bearer tokens.
const CHALLENGE: &str = "WWW-Authenticate: Bearer\r\n";

/// An API response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
    /// Seconds to wait before asking again (429).
    pub retry_after: Option<u64>,
    /// The methods allowed (405).
    pub allow: Option<&'static str>,
    /// A JSON answer any page may read (CORS): the answers to reads (GET, HEAD, OPTIONS)
    /// only, see [`Reply::for_method`].
    pub public: bool,
    /// A 401 of the admin API: says which scheme it takes (`WWW-Authenticate: Bearer`).
    pub challenge: bool,
}

/// What a reply carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A JSON document, with CORS headers when public.
    Json(String),
    /// The monitor page.
    Monitor,
    /// The admin console page.
    AdminPage,
    /// Plain text (the monitor path's 404 and 405).
    Text(&'static str),
    /// Nothing: a preflight's 204.
    Preflight,
}

impl Reply {
    fn new(status: u16, body: Body) -> Self {
        Reply {
            status,
            body,
            retry_after: None,
            allow: None,
            public: true,
            challenge: false,
        }
    }

    /// The reply as answered to `method`: no CORS headers unless it is a read.
    pub fn for_method(self, method: &str) -> Self {
        Reply {
            public: self.public && matches!(method, "GET" | "HEAD" | "OPTIONS"),
            ..self
        }
    }

    /// 200 with this JSON.
    pub fn json(body: String) -> Self {
        Reply::new(200, Body::Json(body))
    }

    /// A JSON answer with another status than 200 (the admin API's).
    pub fn with_status(status: u16, body: String) -> Self {
        Reply::new(status, Body::Json(body))
    }

    /// An error as JSON: `{"error": message, "parameter": parameter}`. The texts are ours
    /// (never a client's), so they need no escaping.
    pub fn json_error(status: u16, message: &str, parameter: Option<&str>) -> Self {
        let body = match parameter {
            Some(parameter) => format!("{{\"error\":\"{message}\",\"parameter\":\"{parameter}\"}}"),
            None => format!("{{\"error\":\"{message}\"}}"),
        };
        Reply::new(status, Body::Json(body))
    }

    /// 503: the backend could not answer, or not in time.
    pub fn unavailable() -> Self {
        Reply::json_error(
            503,
            "history and values are unavailable, try again later",
            None,
        )
    }

    /// 429 with how long to wait.
    pub fn too_many_requests(retry_after: u64) -> Self {
        Reply {
            retry_after: Some(retry_after),
            ..Reply::json_error(429, "too many requests from your address", None)
        }
    }

    /// 401 of the admin API: no operator's token.
    pub fn unauthorized() -> Self {
        Reply {
            challenge: true,
            public: false,
            ..Reply::json_error(401, "an operator's bearer token is required", None)
        }
    }

    /// The admin console.
    pub fn admin_page() -> Self {
        Reply {
            public: false,
            ..Reply::new(200, Body::AdminPage)
        }
    }

    pub fn preflight() -> Self {
        Reply::new(204, Body::Preflight)
    }

    pub fn monitor_page() -> Self {
        Reply::new(200, Body::Monitor)
    }

    pub fn page_not_found() -> Self {
        Reply::new(404, Body::Text("not found\n"))
    }

    pub fn method_not_allowed(endpoint: Endpoint) -> Self {
        let reply = match endpoint {
            Endpoint::Monitor | Endpoint::Admin => {
                Reply::new(405, Body::Text("method not allowed\n"))
            }
            Endpoint::Logs | Endpoint::Api => {
                Reply::json_error(405, "only GET, HEAD and OPTIONS are answered", None)
            }
        };
        Reply {
            allow: Some(match endpoint {
                Endpoint::Monitor | Endpoint::Admin => "GET, HEAD",
                Endpoint::Logs | Endpoint::Api => "GET, HEAD, OPTIONS",
            }),
            ..reply
        }
    }

    /// The response bytes (`HEAD` gets the headers only), saying whether the connection stays
    /// open for another request.
    pub fn to_bytes(&self, include_body: bool, keep_alive: bool) -> Vec<u8> {
        let (content_type, extra, body) = match &self.body {
            Body::Json(json) => (
                "application/json",
                if self.public { CORS_HEADERS } else { "" },
                json.as_str(),
            ),
            Body::Monitor => ("text/html; charset=utf-8", MONITOR_CSP, MONITOR_PAGE),
            Body::AdminPage => ("text/html; charset=utf-8", ADMIN_CSP, ADMIN_PAGE),
            Body::Text(text) => ("text/plain; charset=utf-8", "", *text),
            Body::Preflight => ("", PREFLIGHT_HEADERS, ""),
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        });
        head.push_str(COMMON_HEADERS);
        head.push_str(extra);
        if let Some(seconds) = self.retry_after {
            head.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        if self.challenge {
            head.push_str(CHALLENGE);
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if include_body && self.status != 204 {
            bytes.extend_from_slice(body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(reply: &Reply, include_body: bool, keep_alive: bool) -> String {
        String::from_utf8(reply.to_bytes(include_body, keep_alive)).unwrap_or_default()
    }

    #[test]
    fn json_answers_are_public_and_not_cached() {
        let reply = Reply::json("[]".to_owned());
        let full = text(&reply, true, true);
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(full.contains("\r\nContent-Type: application/json\r\n"));
        assert!(full.contains("\r\nAccess-Control-Allow-Origin: *\r\n"));
        assert!(full.contains("\r\nCache-Control: no-store\r\n"));
        assert!(full.contains("\r\nConnection: keep-alive\r\n"));
        assert!(full.ends_with("\r\n\r\n[]"));
        let head = text(&reply, false, false);
        assert!(
            head.contains("\r\nContent-Length: 2\r\n"),
            "HEAD tells the length"
        );
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(head.ends_with("\r\n\r\n"), "and has no body");
    }

    #[test]
    fn errors_name_their_parameter_and_limits_say_when_to_retry() {
        let error = text(&Reply::json_error(400, "bad", Some("limit")), true, true);
        assert!(error.ends_with("{\"error\":\"bad\",\"parameter\":\"limit\"}"));
        let limited = text(&Reply::too_many_requests(2), true, true);
        assert!(limited.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(limited.contains("\r\nRetry-After: 2\r\n"));
        let preflight = text(&Reply::preflight(), true, true);
        assert!(preflight.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!preflight.contains("Content-Length"));
        assert!(preflight.contains("Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"));
        let refused = Reply::method_not_allowed(Endpoint::Logs).for_method("POST");
        assert!(!text(&refused, true, false).contains("Access-Control-Allow-Origin"));
        let read = Reply::json_error(400, "bad", None).for_method("GET");
        assert!(text(&read, true, false).contains("Access-Control-Allow-Origin: *\r\n"));
        let page = text(&Reply::monitor_page(), true, true);
        assert!(page.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("connect-src 'self'"));
        assert!(!page.contains("Access-Control-Allow-Origin"));
    }
}
