//! The admin API's requests: method, path and JSON body into an [`AdminRequest`], validated.
//!
//! A pure function, run only for an operator whose token matched. A path that is not an
//! endpoint is 404, a method an endpoint does not answer 405 (with `Allow`), and anything
//! malformed (a path segment, a query parameter, the body, one of its fields) 400 naming what
//! is wrong. Path segments are percent-decoded (`+` is a plus). Bodies are JSON objects whose
//! fields are all known: a misspelt field is refused rather than silently ignored, since these
//! requests change things.

use serde_json::{Map, Value};

use super::{percent_decode, whole_number, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET};
use crate::admin::{AdminRequest, BanTarget, KickTarget};
use crate::engine::value::{is_valid_name, MAX_VALUE_CHARS};
use crate::policy::MAX_ROOM_ID_CHARS;

/// Where the admin API's paths start.
pub const API_PREFIX: &str = "/admin/api/v1/";
/// Longest ban or block accepted: 100 years, in seconds.
pub const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;
/// Longest user name a kick or ban names.
pub const MAX_USER_CHARS: usize = 100;
/// Longest reason of a ban.
pub const MAX_REASON_CHARS: usize = 200;

/// Why a request is not carried out: its status, a message of ours, and the part at fault
/// (a field or parameter name; from the client when it is an unknown field, so escaped when
/// rendered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
    pub parameter: Option<String>,
    /// The methods the path answers (405).
    pub allow: Option<&'static str>,
}

impl Refusal {
    fn bad(parameter: &str, message: &'static str) -> Self {
        Refusal {
            status: 400,
            message,
            parameter: Some(parameter.to_owned()),
            allow: None,
        }
    }

    fn not_found() -> Self {
        Refusal {
            status: 404,
            message: "no such admin API path",
            parameter: None,
            allow: None,
        }
    }

    fn method(allow: &'static str) -> Self {
        Refusal {
            status: 405,
            message: "this path does not answer this method",
            parameter: None,
            allow: Some(allow),
        }
    }

    /// `{"error": message, "parameter": parameter}`.
    pub fn json(&self) -> String {
        let mut object = Map::new();
        object.insert("error".to_owned(), Value::from(self.message));
        if let Some(parameter) = &self.parameter {
            object.insert("parameter".to_owned(), Value::from(parameter.as_str()));
        }
        Value::Object(object).to_string()
    }
}

const READS: &str = "GET, HEAD";

/// Parses one admin API request. `target` is the request target as sent (path and query),
/// `body` what its `Content-Length` announced (empty when none).
pub fn parse(method: &str, target: &str, body: &[u8]) -> Result<AdminRequest, Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return Err(Refusal::not_found());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err(Refusal::not_found());
    }
    let reads = matches!(method, "GET" | "HEAD");
    match segments.as_slice() {
        ["rooms"] => {
            if !reads {
                return Err(Refusal::method(READS));
            }
            no_body(body)?;
            let (offset, limit) = paging(query)?;
            Ok(AdminRequest::ListRooms { offset, limit })
        }
        ["rooms", room] => {
            if !reads {
                return Err(Refusal::method(READS));
            }
            no_body(body)?;
            Ok(AdminRequest::Room {
                room: room_id(room, "room")?,
            })
        }
        ["rooms", room, "history"] => {
            if !reads {
                return Err(Refusal::method(READS));
            }
            no_body(body)?;
            let room = room_id(room, "room")?;
            let (offset, limit) = paging(query)?;
            Ok(AdminRequest::History {
                room,
                offset,
                limit,
            })
        }
        ["rooms", room, "variables", name] => match method {
            "PUT" => {
                let room = room_id(room, "room")?;
                let name = variable_name(name)?;
                let mut fields = object(body, &["value"])?;
                let value_json = match fields.remove("value") {
                    Some(value @ Value::Number(_)) => value.to_string(),
                    Some(Value::String(text)) if text.chars().nth(MAX_VALUE_CHARS).is_none() => {
                        Value::String(text).to_string()
                    }
                    Some(Value::String(_)) => {
                        return Err(Refusal::bad("value", "the value is too long"))
                    }
                    _ => return Err(Refusal::bad("value", "value must be a number or a string")),
                };
                Ok(AdminRequest::SetVariable {
                    room,
                    name,
                    value_json,
                })
            }
            "DELETE" => {
                no_body(body)?;
                Ok(AdminRequest::DeleteVariable {
                    room: room_id(room, "room")?,
                    name: variable_name(name)?,
                })
            }
            _ => Err(Refusal::method("PUT, DELETE")),
        },
        ["rooms", room, "reset"] => {
            if method != "POST" {
                return Err(Refusal::method("POST"));
            }
            let room = room_id(room, "room")?;
            optional_object(body, &[])?;
            Ok(AdminRequest::ResetRoom { room })
        }
        ["rooms", room, "rollback"] => {
            if method != "POST" {
                return Err(Refusal::method("POST"));
            }
            let room = room_id(room, "room")?;
            let mut fields = object(body, &["to"])?;
            let to_ms = whole(fields.remove("to"), "to", u64::MAX)?.ok_or_else(|| {
                Refusal::bad("to", "to (milliseconds since the epoch) is required")
            })?;
            Ok(AdminRequest::Rollback { room, to_ms })
        }
        ["kick"] => {
            if method != "POST" {
                return Err(Refusal::method("POST"));
            }
            let mut fields = object(body, &["connection", "room", "user"])?;
            let connection = connection_id(fields.remove("connection"))?;
            let room = fields.remove("room");
            let user = fields.remove("user");
            match (connection, room, user) {
                (Some(id), None, None) => Ok(AdminRequest::Kick(KickTarget::Connection(id))),
                (None, Some(room), Some(user)) => Ok(AdminRequest::Kick(KickTarget::User {
                    room: room_id_value(room)?,
                    user: user_name(user)?,
                })),
                _ => Err(Refusal::bad(
                    "connection",
                    "give either connection, or room and user",
                )),
            }
        }
        ["bans"] => match method {
            "GET" | "HEAD" => {
                no_body(body)?;
                Ok(AdminRequest::ListBans)
            }
            "POST" => ban(body),
            _ => Err(Refusal::method("GET, HEAD, POST")),
        },
        ["bans", id] => {
            if method != "DELETE" {
                return Err(Refusal::method("DELETE"));
            }
            no_body(body)?;
            // Ban ids are milliseconds × 1000 (16 digits today), below 2^53.
            let id = Some(*id)
                .filter(|id| {
                    !id.is_empty() && id.len() <= 16 && id.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|&id| id < 1 << 53)
                .ok_or_else(|| Refusal::bad("id", "the ban id must be a whole number"))?;
            Ok(AdminRequest::LiftBan { id })
        }
        ["blocks"] => match method {
            "GET" | "HEAD" => {
                no_body(body)?;
                Ok(AdminRequest::ListBlocks)
            }
            "POST" => {
                let mut fields = object(body, &["project", "seconds"])?;
                let project = match fields.remove("project") {
                    Some(project) => room_id_value(project).map_err(|mut refusal| {
                        refusal.parameter = Some("project".to_owned());
                        refusal
                    })?,
                    None => return Err(Refusal::bad("project", "project is required")),
                };
                let seconds = seconds(fields.remove("seconds"))?;
                Ok(AdminRequest::Block { project, seconds })
            }
            _ => Err(Refusal::method("GET, HEAD, POST")),
        },
        ["blocks", project] => {
            if method != "DELETE" {
                return Err(Refusal::method("DELETE"));
            }
            no_body(body)?;
            Ok(AdminRequest::Unblock {
                project: room_id(project, "project")?,
            })
        }
        _ => Err(Refusal::not_found()),
    }
}

/// `POST /bans`: a user or an address, how long, and why.
fn ban(body: &[u8]) -> Result<AdminRequest, Refusal> {
    let mut fields = object(body, &["user", "address", "seconds", "reason"])?;
    let target = match (fields.remove("user"), fields.remove("address")) {
        (Some(user), None) => BanTarget::User(user_name(user)?),
        (None, Some(Value::String(address))) if is_address_or_network(&address) => {
            BanTarget::Address(address)
        }
        (None, Some(_)) => {
            return Err(Refusal::bad(
                "address",
                "address must be an IP address or a network (10.0.0.0/8)",
            ))
        }
        _ => return Err(Refusal::bad("user", "give either user or address")),
    };
    let seconds = seconds(fields.remove("seconds"))?
        .ok_or_else(|| Refusal::bad("seconds", "seconds (how long the ban lasts) is required"))?;
    let reason = match fields.remove("reason") {
        None => String::new(),
        Some(Value::String(reason)) if reason.chars().nth(MAX_REASON_CHARS).is_none() => reason,
        Some(_) => {
            return Err(Refusal::bad(
                "reason",
                "reason must be a string of at most 200 characters",
            ))
        }
    };
    Ok(AdminRequest::Ban {
        target,
        seconds,
        reason,
    })
}

/// `offset` and `limit` of the rooms list or a room's history; other parameters are ignored.
fn paging(query: &str) -> Result<(usize, usize), Refusal> {
    let mut offset = None;
    let mut limit = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, parameter) = match name {
            "offset" => (&mut offset, "offset"),
            "limit" => (&mut limit, "limit"),
            _ => continue,
        };
        if slot.is_some() {
            return Err(Refusal::bad(
                parameter,
                "a parameter may be given only once",
            ));
        }
        *slot = Some(value);
    }
    let offset = match offset {
        None => 0,
        Some(text) => whole_number(text, 0, MAX_OFFSET).ok_or_else(|| {
            Refusal::bad(
                "offset",
                "offset must be a whole number from 0 to 1000000000",
            )
        })?,
    };
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => whole_number(text, 1, MAX_LIMIT)
            .ok_or_else(|| Refusal::bad("limit", "limit must be a whole number from 1 to 1000"))?,
    };
    Ok((offset, limit))
}

/// A room (project) id from a path segment: 1 to 999 characters once decoded.
fn room_id(segment: &str, parameter: &str) -> Result<String, Refusal> {
    percent_decode(segment, false)
        .filter(|id| valid_room_id(id))
        .ok_or_else(|| {
            Refusal::bad(
                parameter,
                "the project id must be 1 to 999 characters (percent-encoded UTF-8)",
            )
        })
}

fn valid_room_id(id: &str) -> bool {
    !id.is_empty() && id.chars().nth(MAX_ROOM_ID_CHARS).is_none()
}

/// A room id given in a body.
fn room_id_value(value: Value) -> Result<String, Refusal> {
    match value {
        Value::String(id) if valid_room_id(&id) => Ok(id),
        _ => Err(Refusal::bad(
            "room",
            "the project id must be a string of 1 to 999 characters",
        )),
    }
}

/// A cloud variable's name from a path segment (`%E2%98%81%20score`).
fn variable_name(segment: &str) -> Result<String, Refusal> {
    percent_decode(segment, false)
        .filter(|name| is_valid_name(name))
        .ok_or_else(|| {
            Refusal::bad(
                "name",
                "the variable name must be a cloud variable's (\"☁ name\", percent-encoded)",
            )
        })
}

fn user_name(value: Value) -> Result<String, Refusal> {
    match value {
        Value::String(user)
            if !user.is_empty()
                && user.chars().nth(MAX_USER_CHARS).is_none()
                && !user.chars().any(char::is_control) =>
        {
            Ok(user)
        }
        _ => Err(Refusal::bad(
            "user",
            "user must be a string of 1 to 100 printable characters",
        )),
    }
}

/// `seconds`, when given: 1 to 100 years.
fn seconds(value: Option<Value>) -> Result<Option<u64>, Refusal> {
    match whole(value, "seconds", MAX_SECONDS)? {
        Some(0) => Err(Refusal::bad(
            "seconds",
            "seconds must be a whole number from 1 to 3153600000",
        )),
        other => Ok(other),
    }
}

/// A whole JSON number from 0 to `max`, when given.
fn whole(value: Option<Value>, parameter: &str, max: u64) -> Result<Option<u64>, Refusal> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().filter(|n| *n <= max) {
            Some(n) => Ok(Some(n)),
            None => Err(Refusal::bad(parameter, "must be a whole number in range")),
        },
        Some(_) => Err(Refusal::bad(parameter, "must be a whole number")),
    }
}

/// A connection id: a string of digits (as the room answer gives it, exact beyond 2^53) or a
/// whole number.
fn connection_id(value: Option<Value>) -> Result<Option<u64>, Refusal> {
    match value {
        Some(Value::String(text)) => {
            let digits =
                !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
            match text.parse::<u64>() {
                Ok(id) if digits => Ok(Some(id)),
                _ => Err(Refusal::bad(
                    "connection",
                    "must be a whole number in range, or one as a string of digits",
                )),
            }
        }
        other => whole(other, "connection", u64::MAX),
    }
}

/// `1.2.3.4`, `2001:db8::1`, or either with `/prefix` (at most 32 or 128).
fn is_address_or_network(text: &str) -> bool {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let most = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| whole_number(p, 0, most).is_some())
}

/// The body must be empty (reads and deletes take none).
fn no_body(body: &[u8]) -> Result<(), Refusal> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Refusal::bad("body", "this request takes no body"))
    }
}

/// An empty body, or an object with only `known` fields.
fn optional_object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    object(body, known)
}

/// The body as a JSON object whose fields are all `known`.
fn object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, Refusal> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::bad("body", "the body must be a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(Refusal {
            parameter: Some(unknown.clone()),
            ..Refusal::bad("body", "unknown field in the body")
        });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: &str, path: &str, body: &str) -> AdminRequest {
        match parse(method, path, body.as_bytes()) {
            Ok(request) => request,
            Err(refusal) => panic!("{method} {path} {body}: {refusal:?}"),
        }
    }

    /// The status and the part named.
    fn refused(method: &str, path: &str, body: &str) -> (u16, Option<String>) {
        match parse(method, path, body.as_bytes()) {
            Err(refusal) => (refusal.status, refusal.parameter),
            Ok(request) => panic!("{method} {path} {body}: accepted as {request:?}"),
        }
    }

    fn bad(method: &str, path: &str, body: &str) -> String {
        match refused(method, path, body) {
            (400, Some(parameter)) => parameter,
            other => panic!("{method} {path} {body}: {other:?}"),
        }
    }

    const V: &str = "/admin/api/v1/";

    fn p(rest: &str) -> String {
        format!("{V}{rest}")
    }

    #[test]
    fn every_endpoint_parses() {
        assert_eq!(
            ok("GET", &p("rooms"), ""),
            AdminRequest::ListRooms {
                offset: 0,
                limit: 100
            }
        );
        assert_eq!(
            ok("HEAD", &p("rooms?limit=1000&offset=5&x=y"), ""),
            AdminRequest::ListRooms {
                offset: 5,
                limit: 1000
            }
        );
        assert_eq!(
            ok("GET", &p("rooms/caf%C3%A9%2F1/history"), ""),
            AdminRequest::History {
                room: "café/1".to_owned(),
                offset: 0,
                limit: 100
            }
        );
        assert_eq!(
            ok(
                "HEAD",
                &p("rooms/1/history?offset=50&limit=1000&projectid=2"),
                ""
            ),
            AdminRequest::History {
                room: "1".to_owned(),
                offset: 50,
                limit: 1000
            }
        );
        assert_eq!(
            ok("GET", &p("rooms/caf%C3%A9%2F1"), ""),
            AdminRequest::Room {
                room: "café/1".to_owned()
            }
        );
        assert_eq!(
            ok(
                "PUT",
                &p("rooms/1/variables/%E2%98%81%20a"),
                r#"{"value": 1.5}"#
            ),
            AdminRequest::SetVariable {
                room: "1".to_owned(),
                name: "☁ a".to_owned(),
                value_json: "1.5".to_owned()
            }
        );
        assert_eq!(
            ok(
                "PUT",
                &p("rooms/1/variables/%E2%98%81%20a"),
                r#"{"value":"<b>\"x\"</b>"}"#
            ),
            AdminRequest::SetVariable {
                room: "1".to_owned(),
                name: "☁ a".to_owned(),
                value_json: r#""<b>\"x\"</b>""#.to_owned()
            }
        );
        assert_eq!(
            ok("DELETE", &p("rooms/1/variables/%E2%98%81%20a"), ""),
            AdminRequest::DeleteVariable {
                room: "1".to_owned(),
                name: "☁ a".to_owned()
            }
        );
        assert_eq!(
            ok("POST", &p("rooms/1/reset"), ""),
            AdminRequest::ResetRoom {
                room: "1".to_owned()
            }
        );
        assert_eq!(
            ok("POST", &p("rooms/1/reset"), "{}"),
            AdminRequest::ResetRoom {
                room: "1".to_owned()
            }
        );
        assert_eq!(
            ok("POST", &p("rooms/1/rollback"), r#"{"to":1733400000000}"#),
            AdminRequest::Rollback {
                room: "1".to_owned(),
                to_ms: 1_733_400_000_000
            }
        );
        assert_eq!(
            ok("POST", &p("kick"), r#"{"connection":17}"#),
            AdminRequest::Kick(KickTarget::Connection(17))
        );
        // As the room answer gives it: a string, exact beyond 2^53.
        assert_eq!(
            ok("POST", &p("kick"), r#"{"connection":"17"}"#),
            AdminRequest::Kick(KickTarget::Connection(17))
        );
        assert_eq!(
            ok("POST", &p("kick"), r#"{"connection":"9007199254740993"}"#),
            AdminRequest::Kick(KickTarget::Connection((1 << 53) + 1))
        );
        assert_eq!(
            ok(
                "POST",
                &p("kick"),
                r#"{"connection":"18446744073709551615"}"#
            ),
            AdminRequest::Kick(KickTarget::Connection(u64::MAX))
        );
        assert_eq!(
            ok("POST", &p("kick"), r#"{"room":"1","user":"bob"}"#),
            AdminRequest::Kick(KickTarget::User {
                room: "1".to_owned(),
                user: "bob".to_owned()
            })
        );
        assert_eq!(ok("GET", &p("bans"), ""), AdminRequest::ListBans);
        assert_eq!(
            ok(
                "POST",
                &p("bans"),
                r#"{"user":"bob","seconds":3600,"reason":"spam"}"#
            ),
            AdminRequest::Ban {
                target: BanTarget::User("bob".to_owned()),
                seconds: 3600,
                reason: "spam".to_owned()
            }
        );
        for address in ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::1/128"] {
            assert_eq!(
                ok(
                    "POST",
                    &p("bans"),
                    &format!(r#"{{"address":"{address}","seconds":60}}"#)
                ),
                AdminRequest::Ban {
                    target: BanTarget::Address(address.to_owned()),
                    seconds: 60,
                    reason: String::new()
                }
            );
        }
        assert_eq!(
            ok("DELETE", &p("bans/3"), ""),
            AdminRequest::LiftBan { id: 3 }
        );
        assert_eq!(
            ok("DELETE", &p("bans/1796500821647123"), ""),
            AdminRequest::LiftBan {
                id: 1_796_500_821_647_123
            }
        );
        assert_eq!(ok("GET", &p("blocks"), ""), AdminRequest::ListBlocks);
        assert_eq!(
            ok("POST", &p("blocks"), r#"{"project":"123"}"#),
            AdminRequest::Block {
                project: "123".to_owned(),
                seconds: None
            }
        );
        assert_eq!(
            ok("POST", &p("blocks"), r#"{"project":"123","seconds":60}"#),
            AdminRequest::Block {
                project: "123".to_owned(),
                seconds: Some(60)
            }
        );
        assert_eq!(
            ok("DELETE", &p("blocks/123"), ""),
            AdminRequest::Unblock {
                project: "123".to_owned()
            }
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in [
            "/admin",
            "/admin/",
            "/admin/api/v1",
            "/admin/api/v1/",
            "/admin/api/v2/rooms",
            "/admin/api/v1/room",
            "/admin/api/v1/rooms/",
            "/admin/api/v1/rooms/1/variables",
            "/admin/api/v1/rooms/1/variables/a/b",
            "/admin/api/v1/rooms/1/other",
            "/admin/api/v1/rooms/1/history/1",
            "/admin/api/v1/bans/1/2",
            "/admin/api/v1/kick/1",
        ] {
            assert_eq!(refused("GET", path, ""), (404, None), "{path}");
        }
        for (method, path, allow) in [
            ("POST", "rooms", READS),
            ("DELETE", "rooms/1", READS),
            ("POST", "rooms/1/history", READS),
            ("GET", "rooms/1/variables/%E2%98%81%20a", "PUT, DELETE"),
            ("POST", "rooms/1/variables/%E2%98%81%20a", "PUT, DELETE"),
            ("GET", "rooms/1/reset", "POST"),
            ("PUT", "rooms/1/rollback", "POST"),
            ("GET", "kick", "POST"),
            ("PUT", "bans", "GET, HEAD, POST"),
            ("GET", "bans/1", "DELETE"),
            ("DELETE", "blocks", "GET, HEAD, POST"),
            ("POST", "blocks/1", "DELETE"),
        ] {
            let refusal = parse(method, &p(path), b"").expect_err("refused");
            assert_eq!(
                (refusal.status, refusal.allow),
                (405, Some(allow)),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn malformed_requests_are_400_naming_the_part_at_fault() {
        let set = p("rooms/1/variables/%E2%98%81%20a");
        for (method, path, body, parameter) in [
            ("GET", p("rooms?limit=0"), "", "limit"),
            ("GET", p("rooms?limit=1001"), "", "limit"),
            ("GET", p("rooms?limit=1&limit=2"), "", "limit"),
            ("GET", p("rooms?offset=-1"), "", "offset"),
            ("GET", p("rooms?offset=1000000001"), "", "offset"),
            ("GET", p("rooms/1/history?limit=0"), "", "limit"),
            ("GET", p("rooms/1/history?limit=1001"), "", "limit"),
            ("GET", p("rooms/1/history?offset=x"), "", "offset"),
            ("GET", p("rooms/1/history?offset=1&offset=1"), "", "offset"),
            ("GET", p("rooms/1/history"), "{}", "body"),
            ("GET", p("rooms/%zz/history"), "", "room"),
            ("GET", p("rooms"), "{}", "body"),
            ("GET", p("rooms/%zz"), "", "room"),
            ("GET", p(&format!("rooms/{}", "9".repeat(1000))), "", "room"),
            ("PUT", p("rooms/1/variables/a"), r#"{"value":1}"#, "name"),
            (
                "PUT",
                p("rooms/1/variables/%E2%98%81%20"),
                r#"{"value":1}"#,
                "name",
            ),
            (
                "PUT",
                p("rooms/%ff/variables/%E2%98%81%20a"),
                r#"{"value":1}"#,
                "room",
            ),
            ("PUT", set.clone(), "", "body"),
            ("PUT", set.clone(), "[1]", "body"),
            ("PUT", set.clone(), "{", "body"),
            ("PUT", set.clone(), "{}", "value"),
            ("PUT", set.clone(), r#"{"value":null}"#, "value"),
            ("PUT", set.clone(), r#"{"value":true}"#, "value"),
            ("PUT", set.clone(), r#"{"value":[1]}"#, "value"),
            ("PUT", set.clone(), r#"{"value":1,"valeu":2}"#, "valeu"),
            ("PUT", set.clone(), r#"{"value":1e400}"#, "body"),
            ("DELETE", set.clone(), "x", "body"),
            ("POST", p("rooms/1/reset"), "[]", "body"),
            ("POST", p("rooms/1/reset"), r#"{"all":true}"#, "all"),
            ("POST", p("rooms/1/rollback"), "{}", "to"),
            ("POST", p("rooms/1/rollback"), r#"{"to":-1}"#, "to"),
            ("POST", p("rooms/1/rollback"), r#"{"to":1.5}"#, "to"),
            ("POST", p("rooms/1/rollback"), r#"{"to":"1"}"#, "to"),
            ("POST", p("kick"), "{}", "connection"),
            (
                "POST",
                p("kick"),
                r#"{"connection":1,"room":"1"}"#,
                "connection",
            ),
            ("POST", p("kick"), r#"{"room":"1"}"#, "connection"),
            ("POST", p("kick"), r#"{"connection":""}"#, "connection"),
            ("POST", p("kick"), r#"{"connection":"+1"}"#, "connection"),
            ("POST", p("kick"), r#"{"connection":"1.0"}"#, "connection"),
            ("POST", p("kick"), r#"{"connection":" 1"}"#, "connection"),
            (
                "POST",
                p("kick"),
                r#"{"connection":"18446744073709551616"}"#,
                "connection",
            ),
            ("POST", p("kick"), r#"{"connection":true}"#, "connection"),
            ("POST", p("kick"), r#"{"room":"","user":"bob"}"#, "room"),
            ("POST", p("kick"), r#"{"room":"1","user":""}"#, "user"),
            ("POST", p("kick"), r#"{"room":"1","user":"a\nb"}"#, "user"),
            ("POST", p("bans"), r#"{"seconds":60}"#, "user"),
            (
                "POST",
                p("bans"),
                r#"{"user":"a","address":"::1","seconds":60}"#,
                "user",
            ),
            ("POST", p("bans"), r#"{"user":"bob"}"#, "seconds"),
            (
                "POST",
                p("bans"),
                r#"{"user":"bob","seconds":0}"#,
                "seconds",
            ),
            (
                "POST",
                p("bans"),
                r#"{"user":"bob","seconds":99999999999}"#,
                "seconds",
            ),
            ("POST", p("bans"), r#"{"user":7,"seconds":60}"#, "user"),
            (
                "POST",
                p("bans"),
                r#"{"address":"10.0.0.0/33","seconds":60}"#,
                "address",
            ),
            (
                "POST",
                p("bans"),
                r#"{"address":"host","seconds":60}"#,
                "address",
            ),
            (
                "POST",
                p("bans"),
                r#"{"address":"::1/129","seconds":60}"#,
                "address",
            ),
            (
                "POST",
                p("bans"),
                r#"{"user":"b","seconds":1,"reason":1}"#,
                "reason",
            ),
            ("DELETE", p("bans/x"), "", "id"),
            ("DELETE", p("bans/-1"), "", "id"),
            ("POST", p("blocks"), "{}", "project"),
            ("POST", p("blocks"), r#"{"project":1}"#, "project"),
            (
                "POST",
                p("blocks"),
                r#"{"project":"1","seconds":0}"#,
                "seconds",
            ),
            ("DELETE", p("blocks/%zz"), "", "project"),
        ] {
            assert_eq!(
                bad(method, &path, body),
                parameter,
                "{method} {path} {body}"
            );
        }
        let long = format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_VALUE_CHARS + 1));
        assert_eq!(bad("PUT", &set, &long), "value");
        let refusal = parse("PUT", &set, br#"{"value":1,"a\"b":2}"#).expect_err("refused");
        assert_eq!(
            refusal.json(),
            r#"{"error":"unknown field in the body","parameter":"a\"b"}"#
        );
    }
}
