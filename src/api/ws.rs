//! `GET /api/servers/:server/ws`: the server event stream (SPEC §6).
//!
//! This file owns the route (its checks and the handshake), the bounded
//! session places and the goodbye at shutdown. A session's reader thread
//! is in `session`, its writer thread in `writer`, its client messages
//! (authentication) in `auth`; unauthenticated sessions are bounded by
//! `ws_pending`.

mod auth;
mod session;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Body, Request, Response};
use crate::node::Node;
pub use auth::may_connect;
use session::session;

/// Authenticated sessions per daemon (two threads each). A session takes
/// its place when it authenticates; before that it is one of the bounded
/// pending sessions (`ws_pending`), so unauthenticated clients can never
/// take the places of clients with a token. Upgrades are refused with 503
/// while every place is taken.
pub const MAX_SESSIONS: usize = 512;
pub const TOO_MANY: &str = "Too many websocket connections are open on this node; try again later.";
static SESSIONS: AtomicUsize = AtomicUsize::new(0);
/// Set once the daemon is stopping: every session says goodbye (1001).
static CLOSING: AtomicBool = AtomicBool::new(false);

/// For shutdown, after transfers have drained: closes every session with
/// 1001 (going away, `node shutting down`) and waits up to `wait` for
/// them to end, so clients learn the node left instead of seeing a reset.
pub fn close_all(wait: Duration) {
    CLOSING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + wait;
    let open = || SESSIONS.load(Ordering::SeqCst) + super::ws_pending::count();
    while open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = open();
    if left > 0 {
        log::warn!("{left} websocket session(s) still open at exit");
    }
}

/// Holds one of the `MAX_SESSIONS` places until the session ends.
struct SessionSlot;

impl SessionSlot {
    fn take() -> Option<SessionSlot> {
        SESSIONS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SESSIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        SESSIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn upgrade(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    // A destination's server is not registered until it is installed, but
    // its incoming transfer can be watched meanwhile.
    let uuid = params.get("server").to_string();
    let watchable = node.registry.contains(&uuid)
        || node
            .transfers
            .active(&uuid, crate::transfer::Direction::Incoming)
            .is_some();
    if !watchable {
        return Err(ApiError::not_found());
    }
    let header_has = |name: &str, token: &str| {
        request
            .header(name)
            .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
    };
    if !header_has("upgrade", "websocket") || !header_has("connection", "upgrade") {
        return Err(ApiError::new(
            400,
            "This endpoint only accepts websocket connections.",
        ));
    }
    if request.header("sec-websocket-version") != Some("13") {
        return Err(ApiError::new(400, "Unsupported websocket version.")
            .with_header("Sec-WebSocket-Version", "13"));
    }
    let Some(key) = request
        .header("sec-websocket-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(ApiError::new(400, "Missing Sec-WebSocket-Key."));
    };
    if !origin_allowed(request.header("origin"), &node.config.remote) {
        log::warn!(
            "websocket for {} refused: origin {:?} is not the panel",
            uuid,
            request.header("origin")
        );
        return Err(ApiError::new(403, "Forbidden."));
    }
    if SESSIONS.load(Ordering::Acquire) >= MAX_SESSIONS {
        log::warn!("websocket for {uuid} refused: {MAX_SESSIONS} sessions already open");
        return Err(ApiError::new(503, TOO_MANY));
    }
    let peer = request.remote_addr.ip();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let node = Arc::clone(node);
    let mut response = Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", &accept);
    response.body = Body::Upgrade(Box::new(move |upgraded| {
        session(&node, &uuid, peer, upgraded)
    }));
    Ok(response)
}

/// Browsers send `Origin`; it must be the panel's (Wings' rule). Clients
/// that send none (CLI, other daemons) and standalone nodes are allowed.
pub fn origin_allowed(origin: Option<&str>, remote: &str) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if remote.is_empty() {
        return true;
    }
    origin_of(origin).eq_ignore_ascii_case(origin_of(remote))
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(None, "https://panel.example.com"));
        assert!(origin_allowed(Some("https://anything"), ""));
        assert!(origin_allowed(
            Some("https://panel.example.com"),
            "https://panel.example.com"
        ));
        assert!(origin_allowed(
            Some("https://PANEL.example.com"),
            "https://panel.example.com/"
        ));
        assert!(origin_allowed(
            Some("https://panel.example.com:8443"),
            "https://panel.example.com:8443/sub"
        ));
        assert!(!origin_allowed(
            Some("https://evil.example.com"),
            "https://panel.example.com"
        ));
        assert!(!origin_allowed(
            Some("http://panel.example.com"),
            "https://panel.example.com"
        ));
    }
}
