//! The HTTP/1.1 server: types shared by the connection loop and handlers.
//!
//! Owns request/response types, the `Handler` trait, server options and the
//! upgrade hand-off. The server core is split by job: `head` and `chunked`
//! (sans-I/O protocol), `transport` (plain/TLS bytes, shareable across
//! threads), `reactor` (accept + poll-based head reading, timeouts, the
//! connection cap), `worker` (handler pool, responses, access log), `body`
//! (the request body `Read`), `server` (bind/run/shutdown). Routing,
//! authentication and the JSON error envelope live in `router.rs`,
//! `auth.rs` and `reply.rs`.
//!
//! Threads: the caller of [`HttpServer::run`] becomes the head reader;
//! `workers` threads run handlers; each upgraded connection gets its own
//! thread.

pub mod auth;
pub mod reply;
pub mod router;

/// Entry points for `fuzz/` only; not API.
#[doc(hidden)]
pub mod fuzzing;

mod body;
/// Also decodes the Docker Engine's chunked answers (`environment::docker`).
pub(crate) mod chunked;
mod conn;
mod head;
mod lograte;
mod policy;
mod reactor;
mod response;
mod server;
#[allow(unsafe_code)]
mod sys;
mod tls;
mod transport;
mod worker;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use body::BodyReader;
pub use tls::TlsFile;

/// A parsed request whose body is still on the wire.
pub struct Request {
    pub method: String,
    /// Path without the query string, as sent (not percent-decoded).
    pub path: String,
    /// Raw query string without `?`, empty when absent.
    pub query: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub remote_addr: SocketAddr,
    /// Short random id, echoed in error envelopes and the access log.
    pub request_id: String,
    body: RequestBody,
    content_length: Option<u64>,
    handle: ConnectionHandle,
}

enum RequestBody {
    /// Streaming from the connection.
    Conn(Box<BodyReader>),
    /// Supplied by [`Request::detached`].
    Detached(Box<dyn Read + Send>),
    /// Nothing (the connection was taken back).
    Gone(io::Empty),
}

impl Request {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a stream (Content-Length or chunked). The first read
    /// sends `100 Continue` when the client asked for it. Ends with EOF at
    /// the end of the body; a truncated body is an `UnexpectedEof` error, a
    /// read waiting longer than `body_timeout` a `TimedOut` error, bad
    /// chunked framing `InvalidData`. A body not read to the end makes the
    /// server close the connection after the response (it is never drained).
    pub fn body(&mut self) -> &mut (dyn Read + Send) {
        match &mut self.body {
            RequestBody::Conn(b) => &mut **b,
            RequestBody::Detached(r) => &mut **r,
            RequestBody::Gone(e) => e,
        }
    }

    /// Declared body length, if the request used Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// A handle that can tear the connection down from another thread.
    pub fn connection(&self) -> ConnectionHandle {
        self.handle.clone()
    }

    /// For a handler that will run for long (receiving a transfer): hands
    /// this thread's seat in the worker pool to a new thread, so the pool
    /// keeps `workers` threads for short requests; this thread ends with
    /// the request. False when there was nothing to hand over (a detached
    /// request, already handed over, or no thread could be started).
    pub fn leave_worker_pool(&self) -> bool {
        worker::leave_pool()
    }

    /// A request not tied to a connection, for tests and in-process callers:
    /// `target` is the path with an optional `?query`; header names are
    /// lower-cased; `content_length` comes from a `content-length` header
    /// when there is a valid one; `connection()` does nothing.
    pub fn detached(
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: Box<dyn Read + Send>,
    ) -> Request {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.trim().parse().ok());
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        Request {
            method: method.to_string(),
            path,
            query,
            headers,
            remote_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            request_id: new_request_id(),
            body: RequestBody::Detached(body),
            content_length,
            handle: ConnectionHandle { sock: Weak::new() },
        }
    }

    fn from_conn(
        head: head::Head,
        remote_addr: SocketAddr,
        request_id: String,
        body: BodyReader,
        handle: ConnectionHandle,
    ) -> Request {
        Request {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            remote_addr,
            request_id,
            body: RequestBody::Conn(Box::new(body)),
            content_length: head.content_length,
            handle,
        }
    }

    fn take_body_reader(&mut self) -> Option<BodyReader> {
        match std::mem::replace(&mut self.body, RequestBody::Gone(io::empty())) {
            RequestBody::Conn(b) => Some(*b),
            _ => None,
        }
    }
}

/// A short random hex id for a request (12 hex digits).
pub(crate) fn new_request_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: a time-and-counter id is still unique enough to
        // correlate log lines.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) ^ (u64::from(nanos) << 16);
        bytes.copy_from_slice(&n.to_le_bytes()[..6]);
    }
    hex::encode(bytes)
}

/// Tears a connection down from another thread (used to cancel a transfer
/// whose body is still arriving). It names the connection, not the request:
/// used after its request has finished, it would end whatever that
/// keep-alive connection carries next, so drop it when the request ends.
#[derive(Clone)]
pub struct ConnectionHandle {
    // Weak: a handle kept around must not keep a closed connection's socket
    // open.
    sock: Weak<TcpStream>,
}

impl ConnectionHandle {
    /// Shuts the socket down both ways: a body read blocked in a worker
    /// returns at once (EOF, so `UnexpectedEof`), and writes fail. Does
    /// nothing once the connection is gone.
    pub fn shutdown(&self) {
        if let Some(sock) = self.sock.upgrade() {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }

    /// Shuts the reading half only: a body read blocked in a worker
    /// returns at once, and the handler can still write its answer.
    pub fn shutdown_read(&self) {
        if let Some(sock) = self.sock.upgrade() {
            let _ = sock.shutdown(Shutdown::Read);
        }
    }
}

/// What a handler answers.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Streamed with chunked transfer encoding.
    Stream(Box<dyn Read + Send>),
    /// After `101 Switching Protocols` is written, the connection is handed
    /// to this function on its own thread.
    Upgrade(Box<dyn FnOnce(Upgraded) + Send>),
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn bytes(mut self, body: Vec<u8>) -> Self {
        self.body = Body::Bytes(body);
        self
    }
}

/// A raw bidirectional stream handed over after an upgrade.
pub trait Stream: Read + Write + Send {
    /// A second handle on the same connection so reading and writing can run
    /// on different threads.
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn shutdown(&self) -> io::Result<()>;
}

/// The connection after `101 Switching Protocols`.
pub struct Upgraded {
    pub stream: Box<dyn Stream>,
    /// Bytes the client sent after the request head that were already read.
    pub leftover: Vec<u8>,
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &mut Request) -> Response;
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Loads both files as [`HttpServer::bind`] will (readable, PEM, a key
    /// that belongs to the certificate), for a pre-flight: the error says
    /// which file is wrong.
    pub fn check(&self) -> Result<(), (TlsFile, io::Error)> {
        tls::load_named(self).map(drop)
    }
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Requests being handled at once.
    pub workers: usize,
    /// Open connections at once.
    pub max_connections: usize,
    /// Time allowed to send a complete request head.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time a body read may wait for the next byte.
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub tls: Option<TlsFiles>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 32,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            tls: None,
        }
    }
}

/// A bound listener, not yet serving.
pub struct HttpServer {
    inner: server::Bound,
}

/// Asks a running server to stop accepting and finish.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<reactor::Shared>,
}

impl ShutdownHandle {
    /// Stops accepting at once (wakes the head reader); `run` then waits for
    /// in-flight requests up to its grace period. Safe from any thread, any
    /// number of times, also before `run`.
    pub fn shutdown(&self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake();
    }
}

impl HttpServer {
    /// Binds the listener and loads TLS material. A bad certificate or key
    /// is an error naming the file.
    pub fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<HttpServer> {
        Ok(HttpServer {
            inner: server::bind(addr, options)?,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Connections open now (for metrics), live while the server runs.
    pub fn open_connections(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::clone(&self.inner.open)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// Serves until `shutdown` is called, then waits up to `grace` for
    /// requests in flight and returns. After the grace period the
    /// connections still running a request are shut down (their handlers
    /// see I/O errors) and `run` returns without waiting for them.
    pub fn run(self, handler: Arc<dyn Handler>, grace: Duration) -> io::Result<()> {
        self.inner.run(handler, grace)
    }
}
