//! The CLI side of a server's event websocket (SPEC §6): connects,
//! authenticates with a websocket token minted from the node token (with
//! `admin.websocket.transfer`, so transfer logs come too), re-authenticates
//! when the node says the token is expiring, and hands `transfer logs` and
//! `transfer status` events to the caller over a channel.
//!
//! It only adds detail: the transfer record, polled, stays the authority
//! on progress and outcome, so a websocket that fails just goes quiet.
//! `https://` nodes get `wss://`, trusting the same authorities as every
//! other HTTPS client of ferry (`trust`).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::events::TRANSFER_LOGS_PERMISSION;

/// Minted tokens live this long; the node warns a minute before the end.
const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An event worth showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Log(String),
    Status(String),
}

/// A running watcher; dropping it stops the reader thread within a second.
pub struct Watch {
    pub notes: Receiver<Note>,
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The connection under the websocket: plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TLS client session for `host`, trusting the system's authorities.
fn tls_session(host: &str) -> Result<rustls::ClientConnection, String> {
    let mut roots = rustls::RootCertStore::empty();
    match crate::trust::root_certs() {
        ureq::tls::RootCerts::Specific(certs) => {
            roots.add_parsable_certificates(
                certs
                    .iter()
                    .map(|c| rustls_pki_types::CertificateDer::from(c.der().to_vec())),
            );
        }
        _ => {
            return Err(
                "wss: no system certificate authorities to check the node against".to_string(),
            )
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("wss: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("wss: {host}: {e}"))?;
    rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| format!("wss: {e}"))
}

/// Connects and authenticates (blocking, a few seconds at most), then
/// reads on a thread of its own.
pub fn start(base: &str, server: &str, key: &str) -> Result<Watch, String> {
    let uri: ureq::http::Uri = base.parse().map_err(|e| format!("{base}: {e}"))?;
    let (ws_scheme, default_port) = match uri.scheme_str() {
        Some("http") => ("ws", 80),
        Some("https") => ("wss", 443),
        other => return Err(format!("websocket: unsupported scheme {other:?}")),
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(default_port);
    let prefix = uri.path().trim_end_matches('/');
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let url = format!("{ws_scheme}://{authority}{prefix}/api/servers/{server}/ws");

    let stream = connect(host, port)?;
    let timeouts = |d| {
        stream
            .set_read_timeout(Some(d))
            .and_then(|()| stream.set_write_timeout(Some(CONNECT_TIMEOUT)))
            .map_err(|e| format!("websocket: {e}"))
    };
    timeouts(CONNECT_TIMEOUT)?;
    let raw = stream.try_clone().map_err(|e| e.to_string())?;
    let conn = if ws_scheme == "wss" {
        Conn::Tls(Box::new(rustls::StreamOwned::new(tls_session(host)?, raw)))
    } else {
        Conn::Plain(raw)
    };
    let (mut socket, _) = tungstenite::client(url.as_str(), conn)
        .map_err(|e| format!("websocket handshake with {url}: {e}"))?;
    send_auth(&mut socket, server, key).map_err(|e| format!("websocket: {e}"))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match read_event(&mut socket) {
            Ok(Some((event, _))) if event == "auth success" => break,
            Ok(Some((event, arg))) if event == "jwt error" => {
                return Err(format!("websocket refused the token: {arg}"))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("websocket: {e}")),
        }
        if Instant::now() > deadline {
            return Err("websocket: no answer to auth".to_string());
        }
    }
    // Short reads from here on so the thread notices `stop` promptly.
    timeouts(Duration::from_millis(500))?;
    let (tx, notes) = unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let (server, key, flag) = (server.to_string(), key.to_string(), Arc::clone(&stop));
    std::thread::Builder::new()
        .name("cli-ws".into())
        .spawn(move || read_loop(socket, &server, &key, &tx, &flag))
        .map_err(|e| format!("websocket thread: {e}"))?;
    Ok(Watch { notes, stop })
}

fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("no address for {host}");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

fn send_auth(socket: &mut WebSocket<Conn>, server: &str, key: &str) -> tungstenite::Result<()> {
    let token = crate::jwt::mint_websocket_token(
        key.as_bytes(),
        server,
        // As Wings, the stream opens only with `websocket.connect`.
        &["websocket.connect", TRANSFER_LOGS_PERMISSION],
        TOKEN_TTL,
    );
    socket.send(Message::text(
        json!({"event": "auth", "args": [token]}).to_string(),
    ))
}

/// One message: `Ok(None)` on a read timeout or a non-event frame.
fn read_event(socket: &mut WebSocket<Conn>) -> tungstenite::Result<Option<(String, String)>> {
    match socket.read() {
        Ok(Message::Text(text)) => {
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                return Ok(None);
            };
            let event = value
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let arg = value
                .pointer("/args/0")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(Some((event, arg)))
        }
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            // Pongs to the node's pings are queued by reads; push them out.
            let _ = socket.flush();
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn read_loop(
    mut socket: WebSocket<Conn>,
    server: &str,
    key: &str,
    tx: &Sender<Note>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let note = match read_event(&mut socket) {
            Ok(Some((event, arg))) => match event.as_str() {
                "transfer logs" => Some(Note::Log(arg)),
                "transfer status" => Some(Note::Status(arg)),
                "token expiring" => {
                    if send_auth(&mut socket, server, key).is_err() {
                        return;
                    }
                    None
                }
                "token expired" | "jwt error" => return,
                _ => None,
            },
            Ok(None) => None,
            Err(_) => return,
        };
        if let Some(note) = note {
            if tx.send(note).is_err() {
                return;
            }
        }
    }
    let _ = socket.close(None);
    let _ = socket.flush();
}
