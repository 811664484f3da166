//! One websocket session after the upgrade: the connection's thread
//! becomes the reader (auth, re-auth, pings, token expiry, liveness) and a
//! writer thread (`writer`) owns every write, so frames never interleave.
//! The bus queue per connection is bounded; a client too slow to drain it
//! is dropped and its socket shut, never slowing a transfer.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::auth::{on_message, send, AuthState};
use super::writer::{write_loop, Control};
use super::CLOSING;
use crate::api::ws_pending::PendingGuard;
use crate::http::{Stream, Upgraded};
use crate::node::Node;

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

pub(super) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

pub(super) fn session(node: &Arc<Node>, server: &str, peer: IpAddr, upgraded: Upgraded) {
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
