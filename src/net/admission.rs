//! Whether an HTTP request is admitted, and with what answer.
//!
//! Everything a connection decides about its request before (and right after) the WebSocket
//! upgrade lives here: who the client is behind a trusted proxy (`X-Forwarded-For`), its place
//! against `--max-connections-per-ip`, who may read `/metrics`, plain pages, the origin check,
//! and the refusals that are told as a close code once upgraded (a leaked Scratch session
//! cookie, no user agent, a full server). The connection ([`super::conn`]) acts on the
//! [`Verdict`]; it keeps the phases, the close and the keepalive.

use std::net::IpAddr;

use log::{debug, info};

use super::api::admin::{self as admin_api, AdminPath, MAX_ADMIN_BODY_BYTES};
use super::api::{self, Endpoint, Reply, Routed};
use super::http::{self, Request, Response};
use super::loop_context::{ConnSettings, LoopContext};
use crate::dialect::{Need, Reason};
use crate::policy::Policy;
use crate::query::Query;

/// Who a connection's client is, as far as admission goes.
#[derive(Debug)]
pub(super) struct Admission {
    /// The address the connection is logged under (anonymized when asked); behind a trusted
    /// proxy, the one the proxy names.
    ip: Option<IpAddr>,
    /// The address counted against `--max-connections-per-ip`, released at removal.
    counted_ip: Option<IpAddr>,
    /// The socket's peer address (`None` for a unix socket).
    socket_ip: Option<IpAddr>,
    /// The client's real address (behind a trusted proxy, the one the last request named):
    /// the one the API's rate limit counts.
    client_ip: Option<IpAddr>,
    /// Whether this client may read `/metrics` (a local address, or the metrics listener).
    metrics_allowed: bool,
    /// Plain pages only (the metrics listener): no WebSocket upgrade.
    pages_only: bool,
    /// The peer is a trusted proxy (`--trust-proxy`): the request names the client.
    from_proxy: bool,
    /// Whether the listener that accepted it answers admin paths.
    admin_listener: AdminListener,
}

/// Whether a listener answers admin paths (`/admin`, `/admin/...`); elsewhere they are 404.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminListener {
    /// A public address (or a unix socket, which is usually a proxy's way in): never.
    #[default]
    No,
    /// A loopback listener: to local clients (a client a trusted or untrusted local proxy
    /// names by `X-Forwarded-For` counts as that client: a proxied request from elsewhere is
    /// not local).
    Loopback,
    /// `--admin-listen`: admin paths only (plain pages besides, no WebSocket); `loopback`
    /// when bound to a loopback address (then, like `Loopback`, only loopback `Host` names).
    Dedicated { loopback: bool },
}

impl AdminListener {
    /// Reached by any page a local browser opens, so open to DNS rebinding: admin requests
    /// must name a loopback `Host`.
    fn on_loopback(self) -> bool {
        matches!(
            self,
            AdminListener::Loopback | AdminListener::Dedicated { loopback: true }
        )
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict<'r> {
    /// Answer with a plain response (its body unless `false`) and close.
    Respond(Response, bool),
    /// Answer a request of the HTTP API now (with the body, unless HEAD); the connection may
    /// stay open for more (keep-alive).
    Api {
        reply: Reply,
        endpoint: Endpoint,
        include_body: bool,
    },
    /// Something only the loop can answer: `/metrics`, or a read of the HTTP API.
    Ask(Ask),
    /// Upgrade to WebSocket, answering this `Sec-WebSocket-Key`.
    Upgrade(&'r str),
    /// An operator's admin request with a body of this many bytes: read it, then
    /// [`Admission::admin_with_body`].
    AdminBody(usize),
}

/// A request only the loop can answer; the connection holds it until the loop takes it
/// (`Status::Asks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// A client allowed to read `/metrics` asked for it (with the body, unless HEAD): the loop
    /// renders the page.
    Metrics { include_body: bool },
    /// A read of the HTTP API, validated and allowed: the loop starts answering it
    /// (`start_query`). The connection remembers how to send the answer.
    Query {
        query: Query,
        endpoint: Endpoint,
        include_body: bool,
    },
}

impl Admission {
    /// `ip`: the socket's peer address (`None` for a unix socket).
    pub(super) fn new(ip: Option<IpAddr>, settings: &ConnSettings) -> Self {
        Admission {
            ip: logged_ip(ip, settings),
            counted_ip: None,
            socket_ip: ip,
            client_ip: ip,
            metrics_allowed: ip.is_none_or(|ip| ip.is_loopback()),
            pages_only: false,
            from_proxy: settings.trusted_proxies.trusts(ip),
            admin_listener: AdminListener::No,
        }
    }

    /// Where the listener that accepted this connection stands on admin paths.
    pub(super) fn set_admin_listener(&mut self, listener: AdminListener) {
        self.admin_listener = listener;
        if matches!(listener, AdminListener::Dedicated { .. }) {
            self.pages_only = true;
        }
    }

    /// A connection of the metrics listener: it may read `/metrics` wherever it comes from,
    /// and may not upgrade to WebSocket.
    pub(super) fn for_metrics_only(&mut self) {
        self.metrics_allowed = true;
        self.pages_only = true;
    }

    /// The loop admitted this connection's address against `--max-connections-per-ip`.
    pub(super) fn set_counted_ip(&mut self, ip: IpAddr) {
        self.counted_ip = Some(ip);
    }

    /// The address this connection is counted under, if any.
    pub(super) fn counted_ip(&self) -> Option<IpAddr> {
        self.counted_ip
    }

    /// The client's real address (behind a trusted proxy, the one its latest request named);
    /// `None` on a unix socket.
    pub(super) fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// Hands the address charge over (to a parked session, or back to the loop at removal).
    pub(super) fn take_counted_ip(&mut self) -> Option<IpAddr> {
        self.counted_ip.take()
    }

    /// The client's address for log lines.
    pub(super) fn ip_text(&self) -> String {
        self.ip
            .map_or_else(|| "unix".to_owned(), |ip| ip.to_string())
    }

    /// Decides what a complete request gets, in order: the proxy's client address and its
    /// place, `/metrics`, plain pages, the HTTP API, then the origin of an upgrade. Called for
    /// each request of a kept-alive connection.
    pub(super) fn decide<'r>(
        &mut self,
        request: &'r Request,
        ctx: &mut LoopContext<'_>,
    ) -> Verdict<'r> {
        let settings = ctx.settings;
        if self.from_proxy {
            let forwarded_for = request.forwarded_for.as_deref();
            let ip = http::client_ip(self.socket_ip, forwarded_for, true);
            if !self.pages_only {
                self.metrics_allowed = local_behind_proxy(self.socket_ip, forwarded_for);
            }
            self.ip = logged_ip(ip, settings);
            self.client_ip = ip;
            // A proxy may send several clients' requests over one kept-alive connection: the
            // connection counts as its latest client's.
            if let Some(ip) = ip.filter(|&ip| self.counted_ip != Some(ip)) {
                if !ctx.admit_address(ip) {
                    info!(
                        "[{}] too many connections from this address",
                        self.ip_text()
                    );
                    return Verdict::Respond(Response::TOO_MANY_CONNECTIONS, true);
                }
                if let Some(previous) = self.counted_ip.replace(ip) {
                    ctx.per_ip.release(previous);
                }
            }
        }
        if request.path.split('?').next() == Some("/metrics")
            && matches!(request.method.as_str(), "GET" | "HEAD")
        {
            if self.metrics_allowed {
                debug!("[{}] {} /metrics", self.ip_text(), request.method);
                return Verdict::Ask(Ask::Metrics {
                    include_body: request.method != "HEAD",
                });
            }
            info!("[{}] /metrics refused: not a local client", self.ip_text());
            return Verdict::Respond(Response::METRICS_FORBIDDEN, request.method != "HEAD");
        }
        let upgrade = request.websocket_key.is_some() || request.bad_upgrade.is_some();
        if let Some(path) = AdminPath::of(&request.path).filter(|_| !upgrade) {
            return self.admin(path, request, ctx);
        }
        if self.pages_only {
            let response = http::page(request);
            debug!(
                "[{}] metrics listener: {} {}",
                self.ip_text(),
                request.method,
                request.path
            );
            return Verdict::Respond(response, request.method != "HEAD");
        }
        if let Some(endpoint) = Endpoint::of(&request.path).filter(|_| !upgrade) {
            return self.api(endpoint, request, ctx);
        }
        let Some(key) = request.websocket_key.as_deref() else {
            let response = request
                .bad_upgrade
                .clone()
                .unwrap_or_else(|| http::page(request));
            // Pages and health checks are routine; refused upgrades are worth an operator's eye.
            let level = if request.bad_upgrade.is_some() {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "[{}] {} {} {}",
                self.ip_text(),
                request.method,
                request.path,
                response.status
            );
            return Verdict::Respond(response, request.method != "HEAD");
        };
        if let (Some(allowed), Some(origin)) = (&settings.allowed_origins, &request.origin) {
            if !allowed.iter().any(|a| a == origin) {
                info!("[{}] origin {origin:?} not allowed: 403", self.ip_text());
                return Verdict::Respond(Response::FORBIDDEN, true);
            }
        }
        Verdict::Upgrade(key)
    }
}

impl Admission {
    /// A request of the HTTP API: the address's rate first (bad requests count too), then
    /// routing and validation. `--allowed-origins` does not apply: these are public reads.
    fn api<'r>(
        &mut self,
        endpoint: Endpoint,
        request: &Request,
        ctx: &mut LoopContext<'_>,
    ) -> Verdict<'r> {
        let include_body = request.method != "HEAD";
        if let Some(ip) = self.client_ip {
            if let Err(retry_after) = ctx.api.rate.admit(ip, ctx.now) {
                debug!("[{}] API rate exceeded: 429", self.ip_text());
                return Verdict::Api {
                    reply: Reply::too_many_requests(retry_after).for_method(&request.method),
                    endpoint,
                    include_body,
                };
            }
        }
        debug!("[{}] {} {}", self.ip_text(), request.method, request.path);
        match api::route(endpoint, &request.method, &request.path, ctx.policy) {
            Routed::Query(query) => Verdict::Ask(Ask::Query {
                query,
                endpoint,
                include_body,
            }),
            Routed::Reply(reply) => Verdict::Api {
                reply: reply.for_method(&request.method),
                endpoint,
                include_body,
            },
        }
    }
}

impl Admission {
    /// Whether the client's address (behind a trusted proxy, the one it names) is banned
    /// through the admin API: the only place a connection's address is known.
    pub(super) fn address_banned(&self, policy: &Policy) -> bool {
        self.client_ip
            .is_some_and(|ip| policy.bans.refuses_address(ip))
    }

    /// Whether this request may reach the admin paths: on `--admin-listen`, or on a loopback
    /// listener from a local client.
    fn admin_reachable(&self, request: &Request) -> bool {
        match self.admin_listener {
            AdminListener::No => false,
            AdminListener::Dedicated { .. } => true,
            AdminListener::Loopback => {
                self.socket_ip.is_some_and(|ip| ip.is_loopback())
                    && request.forwarded_for.as_deref().is_none_or(|list| {
                        http::forwarded_client(list).is_some_and(|ip| ip.is_loopback())
                    })
            }
        }
    }

    /// An admin path: 404 where admin is off or not served, the console page, or the API
    /// (the address's lockout, the token, the body's framing and size, in that order). A
    /// request with a body is read first (`Verdict::AdminBody`) and routed then.
    fn admin<'r>(
        &mut self,
        path: AdminPath,
        request: &Request,
        ctx: &mut LoopContext<'_>,
    ) -> Verdict<'r> {
        let include_body = request.method != "HEAD";
        let enabled = ctx.api.admin.tokens.is_some();
        if !enabled || !self.admin_reachable(request) {
            debug!(
                "[{}] {} {}: 404 (admin {})",
                self.ip_text(),
                request.method,
                request.path,
                if enabled {
                    "not on this listener"
                } else {
                    "off"
                }
            );
            return Verdict::Respond(Response::NOT_FOUND, include_body);
        }
        let answer = |reply: Reply| Verdict::Api {
            reply,
            endpoint: Endpoint::Admin,
            include_body,
        };
        // A loopback listener is reached by any page the operator's browser opens, under any
        // name that resolves to 127.0.0.1 (DNS rebinding): only loopback names are served.
        if self.admin_listener.on_loopback() && request.host_not_loopback {
            info!(
                "[{}] admin {} {:?}: Host is not a loopback name: 421",
                self.ip_text(),
                request.method,
                request.path
            );
            return answer(Reply {
                public: false,
                ..Reply::json_error(
                    421,
                    "the admin API answers only to localhost, 127.0.0.1 or [::1]",
                    None,
                )
            });
        }
        if path == AdminPath::Page {
            debug!("[{}] {} /admin", self.ip_text(), request.method);
            return answer(if matches!(request.method.as_str(), "GET" | "HEAD") {
                Reply::admin_page()
            } else {
                Reply::method_not_allowed(Endpoint::Admin)
            });
        }
        if let Some(retry_after) = self
            .client_ip
            .and_then(|ip| ctx.api.admin.attempts.locked(ip, ctx.now))
        {
            info!(
                "[{}] admin request refused: too many failed attempts: 429",
                self.ip_text()
            );
            return answer(Reply::too_many_requests(retry_after));
        }
        let tokens = ctx.api.admin.tokens.as_ref();
        let bearer = request.bearer.as_ref().map(|secret| secret.0.as_slice());
        if tokens
            .zip(bearer)
            .and_then(|(tokens, token)| tokens.operator(token))
            .is_none()
        {
            // Only a presented token is a guess: a request without one is what any page can
            // make a browser send (`no-cors` fetches, CORS preflights), and counting it would
            // let that page lock the operator out.
            if let Some(ip) = self.client_ip.filter(|_| bearer.is_some()) {
                ctx.api.admin.attempts.fail(ip, ctx.now);
            }
            info!(
                "[{}] admin {} {:?}: {}: 401",
                self.ip_text(),
                request.method,
                request.path,
                if bearer.is_some() {
                    "wrong token"
                } else {
                    "no bearer token"
                }
            );
            return answer(Reply::unauthorized());
        }
        if let Some(ip) = self.client_ip {
            ctx.api.admin.attempts.succeed(ip, ctx.now);
        }
        let refuse = |status: u16, message: &str| {
            debug!(
                "[{}] admin request body: {message}: {status}",
                self.ip_text()
            );
            answer(Reply {
                public: false,
                ..Reply::json_error(status, message, None)
            })
        };
        if request.expects {
            return refuse(
                417,
                "Expect is not supported: send the body with the request",
            );
        }
        if request.unreadable_body {
            return refuse(
                400,
                "the body must come with one Content-Length (no Transfer-Encoding)",
            );
        }
        match request.content_length {
            Some(length) if length > MAX_ADMIN_BODY_BYTES => {
                refuse(413, "the body is larger than 1 MiB")
            }
            Some(length) if length > 0 => Verdict::AdminBody(length),
            _ => self.admin_with_body(request, &[], ctx),
        }
    }

    /// An operator's admin request with its body (empty when none): the query for the loop,
    /// or the reply to a request that does not parse (logged with its operator).
    pub(super) fn admin_with_body<'r>(
        &mut self,
        request: &Request,
        body: &[u8],
        ctx: &mut LoopContext<'_>,
    ) -> Verdict<'r> {
        let include_body = request.method != "HEAD";
        let Some(tokens) = ctx.api.admin.tokens.as_ref() else {
            return Verdict::Respond(Response::NOT_FOUND, include_body);
        };
        let bearer = request.bearer.as_ref().map(|secret| secret.0.as_slice());
        let (operator, routed) =
            admin_api::route_admin(tokens, &request.method, &request.path, bearer, body);
        match routed {
            Routed::Query(query) => Verdict::Ask(Ask::Query {
                query,
                endpoint: Endpoint::Admin,
                include_body,
            }),
            Routed::Reply(reply) => {
                info!(
                    "[{}] admin {} {} {:?}: {}",
                    self.ip_text(),
                    operator.unwrap_or("(token no longer valid)"),
                    request.method,
                    request.path,
                    reply.status
                );
                Verdict::Api {
                    reply,
                    endpoint: Endpoint::Admin,
                    include_body,
                }
            }
        }
    }
}

/// Why an upgraded connection is closed at once, told as a close code rather than an HTTP
/// status (the clients show close codes to their users), checked in this order.
pub(super) fn refusal(
    request: &Request,
    settings: &ConnSettings,
    over_capacity: bool,
    address_banned: bool,
) -> Option<Reason> {
    if request.leaks_scratch_session {
        return Some(Reason::ScratchCookie);
    }
    if address_banned {
        return Some(Reason::AddressBanned);
    }
    let has_user_agent = request
        .user_agent
        .as_deref()
        .is_some_and(|ua| !ua.is_empty());
    if settings.require_user_agent && !has_user_agent {
        return Some(Reason::NoUserAgent);
    }
    if over_capacity {
        return Some(Reason::ServerFull);
    }
    None
}

impl LoopContext<'_> {
    /// Counts one more connection from `ip` against `--max-connections-per-ip`. An address at
    /// its limit that has sessions parked gets the place by ending its oldest parked session,
    /// whose charge the new connection takes over: its live clients come first.
    pub fn admit_address(&mut self, ip: IpAddr) -> bool {
        if self.per_ip.is_full(ip) {
            if let Some((client, rooms)) = self.reconnects.end_oldest_for(Need::AddressPlace(ip)) {
                self.engine.leave_rooms(client, rooms, self.now);
                return true;
            }
        }
        self.per_ip.admit(ip)
    }
}

/// Whether a request a trusted proxy passed on comes from a local client, decided afresh for
/// each request of a kept-alive connection (a proxy sends many clients' requests over one).
/// Behind a proxy every request comes from the proxy's address, so it is the address the
/// proxy names that counts; a request that names none is the proxy's own (a health check). A
/// name that cannot be read (`unknown`, garbage) is not local: falling back to the proxy's
/// address would let anyone behind it pass for a local client.
fn local_behind_proxy(socket_ip: Option<IpAddr>, forwarded_for: Option<&str>) -> bool {
    match forwarded_for {
        None => socket_ip.is_none_or(|ip| ip.is_loopback()),
        Some(list) => http::forwarded_client(list).is_some_and(|ip| ip.is_loopback()),
    }
}

/// The address a connection is logged under: anonymized when the operator asked for it.
fn logged_ip(ip: Option<IpAddr>, settings: &ConnSettings) -> Option<IpAddr> {
    ip.map(|ip| {
        if settings.anonymize_ips {
            http::anonymize(ip)
        } else {
            ip
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn behind_a_proxy_only_a_named_local_client_is_local() {
        let proxy = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(local_behind_proxy(proxy, None), "the proxy's own request");
        assert!(local_behind_proxy(proxy, Some("127.0.0.1")));
        assert!(local_behind_proxy(proxy, Some("203.0.113.5, ::1")));
        assert!(!local_behind_proxy(proxy, Some("127.0.0.1, 203.0.113.5")));
        assert!(!local_behind_proxy(proxy, Some("203.0.113.5:4711")));
        assert!(!local_behind_proxy(proxy, Some("unknown")));
        assert!(!local_behind_proxy(proxy, Some("")));
        let remote_proxy = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(!local_behind_proxy(remote_proxy, None));
    }

    #[test]
    fn refusals_after_the_upgrade_come_in_order() {
        let mut settings = ConnSettings::from_config(&Config::defaults());
        settings.require_user_agent = true;
        let mut request = Request {
            leaks_scratch_session: true,
            ..Request::default()
        };
        assert_eq!(
            refusal(&request, &settings, true, false),
            Some(Reason::ScratchCookie)
        );
        request.leaks_scratch_session = false;
        assert_eq!(
            refusal(&request, &settings, true, false),
            Some(Reason::NoUserAgent)
        );
        request.user_agent = Some(String::new());
        assert_eq!(
            refusal(&request, &settings, true, false),
            Some(Reason::NoUserAgent),
            "an empty user agent is none"
        );
        request.user_agent = Some("Scratch".to_owned());
        assert_eq!(
            refusal(&request, &settings, true, false),
            Some(Reason::ServerFull)
        );
        assert_eq!(refusal(&request, &settings, false, false), None);
        assert_eq!(
            refusal(&request, &settings, true, true),
            Some(Reason::AddressBanned),
            "a banned address is told so before a full server"
        );
        settings.require_user_agent = false;
        request.user_agent = None;
        assert_eq!(refusal(&request, &settings, false, false), None);
    }
}
