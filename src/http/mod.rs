//! The HTTP/1.1 server: types shared by the connection loop and handlers.
//!
//! Owns request/response types, the `Handler` trait, server options and the
//! upgrade hand-off. The connection loop lives in `server.rs`; routing,
//! authentication and the JSON error envelope in `router.rs`, `auth.rs`
//! and `reply.rs`.

pub mod auth;
pub mod reply;
pub mod router;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Request {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a stream (Content-Length or chunked). The first call sends
    /// `100 Continue` when the client asked for it. Ends with EOF at the end
    /// of the body; a truncated body is an `UnexpectedEof` error.
    pub fn body(&mut self) -> &mut (dyn Read + Send) {
        unimplemented!("http server core")
    }

    /// Declared body length, if the request used Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        unimplemented!("http server core")
    }

    /// A handle that can tear the connection down from another thread.
    pub fn connection(&self) -> ConnectionHandle {
        unimplemented!("http server core")
    }
}

/// Tears a connection down from another thread (used to cancel a transfer
/// whose body is still arriving).
#[derive(Clone)]
pub struct ConnectionHandle {
    _private: (),
}

impl ConnectionHandle {
    pub fn shutdown(&self) {
        unimplemented!("http server core")
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
    _private: (),
}

/// Asks a running server to stop accepting and finish.
#[derive(Clone)]
pub struct ShutdownHandle {
    _private: (),
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        unimplemented!("http server core")
    }
}

impl HttpServer {
    pub fn bind(_addr: SocketAddr, _options: ServerOptions) -> io::Result<HttpServer> {
        unimplemented!("http server core")
    }

    pub fn local_addr(&self) -> SocketAddr {
        unimplemented!("http server core")
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        unimplemented!("http server core")
    }

    /// Serves until `shutdown` is called, then waits up to `grace` for
    /// requests in flight and returns.
    pub fn run(self, _handler: Arc<dyn Handler>, _grace: Duration) -> io::Result<()> {
        unimplemented!("http server core")
    }
}
