//! `GET /api/servers/:server/ws`: the server event stream (SPEC §6).
//!
//! After the upgrade, the connection's thread becomes the reader (auth,
//! re-auth, pings, token expiry) and a writer thread owns every write:
//! events from the bus, replies, and the control frames the reader's
//! protocol state produces (pongs, close), so frames never interleave.
//! The bus queue per connection is bounded; a client too slow to drain it
//! is dropped and its socket shut, never slowing a transfer.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::events::{Event, TRANSFER_LOGS_PERMISSION};
use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Body, Request, Response, Stream, Upgraded};
use crate::node::Node;

use super::ws_pending::PendingGuard;

/// Largest message a client may send (an auth message with a JWT).
const MAX_MESSAGE: usize = 64 * 1024;
/// Events queued for one client before it counts as too slow.
const QUEUE: usize = 256;
const PING_EVERY: Duration = Duration::from_secs(30);
/// A client silent (no message, no pong) this long is disconnected.
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// A client that has not authenticated this long after the upgrade is
/// disconnected (`FERRY_WS_AUTH_TIMEOUT_MS` overrides it, for tests).
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
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

fn auth_deadline() -> Duration {
    std::env::var("FERRY_WS_AUTH_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(AUTH_DEADLINE, Duration::from_millis)
}

/// How often the reader wakes to check expiry, pings and liveness.
const TICK: Duration = Duration::from_millis(250);
/// How long a closing session lets the writer deliver what is queued (a
/// `jwt error`, `token expired`) and the close frame before cutting the
/// socket; a writer stuck on a client that stopped reading is cut then.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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

/// What the reader tells the writer.
enum Control {
    /// A text message to send.
    Text(String),
    /// Frame bytes the protocol produced while reading (pong, close echo).
    Raw(Vec<u8>),
    /// Authenticated (again): deliver events; logs only with permission.
    Authorized {
        logs: bool,
    },
    /// The token expired: stop delivering events.
    Unauthorized,
    Ping,
    Close,
    /// The node is shutting down: close with 1001.
    GoingAway,
}

/// The read half as tungstenite sees it: reads from the socket; anything
/// it writes is handed to the writer thread whole at flush.
struct ReadHalf {
    stream: Box<dyn Stream>,
    pending: Vec<u8>,
    to_writer: Sender<Control>,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.to_writer
                .send(Control::Raw(bytes))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))?;
        }
        Ok(())
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

fn session(node: &Arc<Node>, server: &str, peer: IpAddr, upgraded: Upgraded) {
    let Upgraded { stream, leftover } = upgraded;
    let pending = match stream.try_clone_stream() {
        Ok(s) => PendingGuard::enter(peer, s),
        Err(e) => {
            log::warn!("websocket {server}: cannot split the connection: {e}");
            return;
        }
    };
    let write_stream = match stream.try_clone_stream() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("websocket {server}: cannot split the connection: {e}");
            return;
        }
    };
    let closer = match stream.try_clone_stream() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("websocket {server}: cannot split the connection: {e}");
            return;
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(TICK)) {
        log::warn!("websocket {server}: {e}");
        return;
    }
    let (to_writer, controls) = bounded::<Control>(64);
    // Disconnects when the writer ends.
    let (writer_done, writer_ended) = bounded::<()>(0);
    let subscription = node.events.subscribe(server, QUEUE);
    let sub_id = subscription.id;
    let events = subscription.receiver;
    let writer = {
        let server = server.to_string();
        std::thread::Builder::new()
            .name("ws-write".into())
            .spawn(move || {
                write_loop(&server, write_stream, &controls, &events);
                drop(writer_done);
            })
    };
    let Ok(writer) = writer else {
        node.events.unsubscribe(server, sub_id);
        return;
    };
    let read_half = ReadHalf {
        stream,
        pending: Vec::new(),
        to_writer: to_writer.clone(),
    };
    let mut socket =
        WebSocket::from_partially_read(read_half, leftover, Role::Server, Some(config()));
    let mut auth = AuthState {
        expires_at: None,
        warned: false,
        pending,
        slot: None,
    };
    read_loop(node, server, &mut socket, &to_writer, sub_id, &mut auth);
    // try_send: a full queue means the writer is stuck, and the grace
    // below ends it anyway.
    let _ = to_writer.try_send(Control::Close);
    drop(to_writer);
    let _ = writer_ended.recv_timeout(CLOSE_GRACE);
    let _ = closer.shutdown();
    let _ = writer.join();
    node.events.unsubscribe(server, sub_id);
    log::debug!("websocket {server}: closed");
}

fn read_loop(
    node: &Arc<Node>,
    server: &str,
    socket: &mut WebSocket<ReadHalf>,
    to_writer: &Sender<Control>,
    sub_id: u64,
    auth: &mut AuthState,
) {
    let opened = Instant::now();
    let auth_deadline = auth_deadline();
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => {
                last_heard = Instant::now();
                if !on_message(node, server, text.as_str(), to_writer, auth) {
                    return;
                }
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => last_heard = Instant::now(),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return,
            Err(e) => {
                log::debug!("websocket {server}: {e}");
                return;
            }
        }
        // Flush protocol replies (pong, close echo) the read produced.
        let _ = socket.flush();
        let now_unix = crate::timefmt::now_unix();
        if let Some(exp) = auth.expires_at {
            if now_unix >= exp {
                send(to_writer, "token expired", "");
                let _ = to_writer.send(Control::Unauthorized);
                return;
            }
            if !auth.warned && now_unix + 60 >= exp {
                auth.warned = true;
                send(to_writer, "token expiring", "");
            }
        }
        if auth.expires_at.is_none() && opened.elapsed() >= auth_deadline {
            log::info!("websocket {server}: no authentication within {auth_deadline:?}, closing");
            send(to_writer, "jwt error", "jwt: authentication required");
            return;
        }
        if CLOSING.load(Ordering::Relaxed) {
            let _ = to_writer.send(Control::GoingAway);
            return;
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            let _ = to_writer.send(Control::Ping);
        }
        if last_heard.elapsed() >= IDLE_LIMIT {
            log::debug!("websocket {server}: idle for {IDLE_LIMIT:?}, closing");
            return;
        }
        // Dropped by the bus as too slow: end the session.
        if !node.events.is_subscribed(server, sub_id) {
            log::info!("websocket {server}: client too slow, disconnected");
            return;
        }
    }
}

/// A session's authentication: the token's expiry once authenticated,
/// its pending place before, its session place after.
struct AuthState {
    expires_at: Option<u64>,
    warned: bool,
    pending: PendingGuard,
    slot: Option<SessionSlot>,
}

/// Whether a token's permissions allow opening the event stream (as Wings).
pub fn may_connect(permissions: &[String]) -> bool {
    permissions
        .iter()
        .any(|p| p == WEBSOCKET_CONNECT_PERMISSION || p == "*")
}

const WEBSOCKET_CONNECT_PERMISSION: &str = "websocket.connect";

/// Handles one client message; false ends the session.
fn on_message(
    node: &Node,
    server: &str,
    text: &str,
    to_writer: &Sender<Control>,
    auth: &mut AuthState,
) -> bool {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(text) else {
        return true;
    };
    if message.get("event").and_then(|e| e.as_str()) != Some("auth") {
        // Other events (console commands, stats) are not ferry's business.
        return true;
    }
    let token = message
        .pointer("/args/0")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    match crate::jwt::verify_websocket_token(token, node.config.token.as_bytes(), server) {
        Ok(claims) if !may_connect(&claims.permissions) => {
            log::info!("websocket {server}: auth refused: the token lacks websocket.connect");
            send(to_writer, "jwt error", "jwt: token lacks websocket.connect");
            false
        }
        Ok(claims) => {
            if auth.slot.is_none() {
                let Some(slot) = SessionSlot::take() else {
                    log::warn!("websocket {server}: refused: {MAX_SESSIONS} sessions already open");
                    send(to_writer, "jwt error", TOO_MANY);
                    return false;
                };
                auth.slot = Some(slot);
                auth.pending.authenticated();
            }
            auth.expires_at = Some(claims.expires_at);
            auth.warned = false;
            let logs = claims
                .permissions
                .iter()
                .any(|p| p == TRANSFER_LOGS_PERMISSION || p == "*");
            let _ = to_writer.send(Control::Authorized { logs });
            send(to_writer, "auth success", "");
            true
        }
        Err(why) => {
            log::info!("websocket {server}: auth refused: {why}");
            send(to_writer, "jwt error", "jwt: invalid or expired token");
            false
        }
    }
}

fn send(to_writer: &Sender<Control>, event: &str, arg: &str) {
    let text = serde_json::to_string(&Event::new(event, arg.to_string())).unwrap_or_default();
    let _ = to_writer.send(Control::Text(text));
}

fn write_loop(
    server: &str,
    stream: Box<dyn Stream>,
    controls: &Receiver<Control>,
    events: &Receiver<Event>,
) {
    let mut socket = WebSocket::from_raw_socket(stream, Role::Server, Some(config()));
    let mut authorized = false;
    let mut logs = false;
    loop {
        let result = select! {
            recv(controls) -> control => match control {
                Ok(Control::Text(text)) => socket.send(Message::text(text)),
                Ok(Control::Raw(bytes)) => socket.get_mut().write_all(&bytes).and_then(|()| socket.get_mut().flush()).map_err(tungstenite::Error::Io),
                Ok(Control::Authorized { logs: l }) => { authorized = true; logs = l; Ok(()) }
                Ok(Control::Unauthorized) => { authorized = false; Ok(()) }
                Ok(Control::Ping) => socket.send(Message::Ping(Vec::new().into())),
                Ok(Control::Close) => {
                    let _ = socket.close(None);
                    let _ = socket.flush();
                    return;
                }
                Ok(Control::GoingAway) => {
                    let _ = socket.close(Some(tungstenite::protocol::CloseFrame {
                        code: tungstenite::protocol::frame::coding::CloseCode::Away,
                        reason: "node shutting down".into(),
                    }));
                    let _ = socket.flush();
                    return;
                }
                Err(_) => return,
            },
            recv(events) -> event => match event {
                Ok(event) if authorized && (logs || event.event != "transfer logs") => {
                    match serde_json::to_string(&event) {
                        Ok(text) => socket.send(Message::text(text)),
                        Err(_) => Ok(()),
                    }
                }
                Ok(_) => Ok(()),
                // The bus dropped us (too slow); the reader notices and ends.
                Err(_) => return,
            },
        };
        if let Err(e) = result {
            log::debug!("websocket {server}: write failed: {e}");
            return;
        }
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
