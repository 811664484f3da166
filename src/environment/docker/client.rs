//! A minimal HTTP/1.1 client for the Docker Engine API over its unix socket.
//!
//! One connection per request (`Connection: close`): the Engine is local and
//! the calls are few, so pooling would buy nothing. Request formatting and
//! head parsing are plain functions over bytes; chunked answers go through
//! the server's sans-I/O decoder (`http::chunked`), so one implementation
//! serves both. The socket wrapper around them stays thin. `hijack` hands back the raw stream after
//! an `Upgrade: tcp` answer, which `attach` needs to write to stdin.

use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::environment::EnvError;
use crate::http::chunked::ChunkedDecoder;

/// Head size limit: the Engine's heads are a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Body limit for buffered answers (inspect, version, errors).
const MAX_BODY: usize = 32 * 1024 * 1024;

pub(crate) struct Client {
    socket: PathBuf,
    /// `/v1.41` once negotiated; empty for the unversioned ping and version.
    prefix: String,
    timeout: Duration,
}

/// A buffered answer.
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Result<Value, EnvError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| EnvError::Runtime(format!("Docker answered with invalid JSON ({e})")))
    }

    /// The Engine's `message`, else the body text, else the status.
    pub fn message(&self) -> String {
        engine_message(self.status, &self.body)
    }
}

/// The error text of an Engine answer: its JSON `message` field when there is one.
pub fn engine_message(status: u16, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return m.trim().to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        text.chars().take(500).collect()
    }
}

/// The parsed status line and the headers ferry cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// Formats a request. `body` is sent with `Content-Type: application/json`.
pub fn format_request(method: &str, target: &str, body: Option<&[u8]>, upgrade: bool) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: ferry/{}\r\n",
        crate::VERSION
    );
    if upgrade {
        out.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
    } else {
        out.push_str("Connection: close\r\n");
    }
    match body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )),
        None if method == "POST" || method == "PUT" => out.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// Parses a response head from the start of `buf`: `Ok(None)` while incomplete,
/// else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP answer from Docker: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad Content-Length from Docker: {value:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Ok(Some((head, len)))
}

/// Decodes a chunked body from a buffered reader with [`ChunkedDecoder`]
/// (the server's own decoder); ends right after the last chunk's trailer
/// section, leaving what follows unread.
pub struct ChunkedReader<R> {
    inner: R,
    decoder: ChunkedDecoder,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkedReader {
            inner,
            decoder: ChunkedDecoder::new(),
        }
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Framing alone yields no data: keep going until data or the end.
        while !self.decoder.is_done() {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked body ended early",
                ));
            }
            let (framing, data) = self
                .decoder
                .next(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let n = data.min(buf.len());
            buf[..n].copy_from_slice(&input[framing..framing + n]);
            self.inner.consume(framing + n);
            self.decoder.consume_data(n);
            if n > 0 {
                return Ok(n);
            }
        }
        Ok(0)
    }
}

type Conn = BufReader<Chain<Cursor<Vec<u8>>, UnixStream>>;

/// A response body being read from the socket.
pub(crate) enum Body {
    Empty,
    Length(io::Take<Conn>),
    Chunked(ChunkedReader<Conn>),
    UntilEof(Conn),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Empty => Ok(0),
            Body::Length(r) => r.read(buf),
            Body::Chunked(r) => r.read(buf),
            Body::UntilEof(r) => r.read(buf),
        }
    }
}

impl Client {
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Client {
            socket: socket.to_path_buf(),
            prefix: String::new(),
            timeout,
        }
    }

    pub fn set_api_version(&mut self, version: &str) {
        self.prefix = format!("/v{version}");
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> EnvError {
        EnvError::Unavailable(format!(
            "cannot reach Docker at {}: {e}",
            self.socket.display()
        ))
    }

    fn open(&self, read_timeout: Duration) -> Result<UnixStream, EnvError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        stream
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.unreachable(e))?;
        Ok(stream)
    }

    /// Sends a request and reads the head; the body is left on the socket.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        upgrade: bool,
        read_timeout: Duration,
    ) -> Result<(Head, Vec<u8>, UnixStream), EnvError> {
        let payload =
            match body {
                Some(v) => Some(serde_json::to_vec(v).map_err(|e| {
                    EnvError::Runtime(format!("cannot encode a Docker request: {e}"))
                })?),
                None => None,
            };
        let target = format!("{}{}", self.prefix, path);
        let mut stream = self.open(read_timeout)?;
        stream
            .write_all(&format_request(
                method,
                &target,
                payload.as_deref(),
                upgrade,
            ))
            .map_err(|e| self.io_failed(method, path, e))?;

        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .map_err(|e| self.io_failed(method, path, e))?;
            if n == 0 {
                return Err(self.io_failed(method, path, "connection closed before an answer"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_head(&buf).map_err(EnvError::Runtime)? {
                Some((head, len)) if head.status == 100 => {
                    // An interim answer: drop it and read the real one.
                    buf.drain(..len);
                }
                Some((head, len)) => {
                    let rest = buf.split_off(len);
                    return Ok((head, rest, stream));
                }
                None if buf.len() > MAX_HEAD => {
                    return Err(EnvError::Runtime(
                        "Docker's answer head is too large".into(),
                    ))
                }
                None => {}
            }
        }
    }

    fn io_failed(&self, method: &str, path: &str, e: impl std::fmt::Display) -> EnvError {
        EnvError::Unavailable(format!(
            "Docker at {} failed during {method} {path}: {e}",
            self.socket.display()
        ))
    }

    /// Sends a request and returns the status and a reader over the body.
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        read_timeout: Duration,
    ) -> Result<(u16, Body), EnvError> {
        let (head, rest, stream) = self.send(method, path, body, false, read_timeout)?;
        let conn = BufReader::new(Cursor::new(rest).chain(stream));
        let body = if method == "HEAD" || head.status == 204 || head.status == 304 {
            Body::Empty
        } else if head.chunked {
            Body::Chunked(ChunkedReader::new(conn))
        } else if let Some(len) = head.content_length {
            Body::Length(conn.take(len))
        } else {
            Body::UntilEof(conn)
        };
        Ok((head.status, body))
    }

    /// Sends a request and reads the whole (bounded) answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, EnvError> {
        let (status, reader) = self.stream(method, path, body, self.timeout)?;
        let mut out = Vec::new();
        reader
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.io_failed(method, path, e))?;
        if out.len() > MAX_BODY {
            return Err(EnvError::Runtime(format!(
                "Docker's answer to {method} {path} is too large"
            )));
        }
        Ok(Response { status, body: out })
    }

    /// Upgrades the connection (`Upgrade: tcp`) and returns the raw stream.
    /// On a refusal, returns the Engine's answer as an error.
    pub fn hijack(&self, path: &str) -> Result<UnixStream, EnvError> {
        let (head, rest, mut stream) = self.send("POST", path, None, true, self.timeout)?;
        // 101 is the upgrade; engines before API 1.x answered 200 and then
        // streamed raw anyway.
        if head.status == 101 || head.status == 200 {
            return Ok(stream);
        }
        let mut body = rest;
        let _ = (&mut stream).take(64 * 1024).read_to_end(&mut body);
        Err(EnvError::Runtime(format!(
            "Docker refused POST {path}: {}",
            engine_message(head.status, &body)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_format() {
        let r = format_request("POST", "/v1.41/containers/x/start", None, false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("POST /v1.41/containers/x/start HTTP/1.1\r\nHost: docker\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));

        let r = format_request("POST", "/c", Some(b"{}"), false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Content-Type: application/json\r\nContent-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));

        let r = format_request("POST", "/attach", None, true);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Connection: Upgrade\r\nUpgrade: tcp\r\n"));
        let get = String::from_utf8(format_request("GET", "/_ping", None, false)).unwrap();
        assert!(!get.contains("Content-Length"));
    }

    #[test]
    fn head_parsing() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"message\":";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.content_length, Some(12));
        assert!(!head.chunked);
        assert_eq!(&raw[len..], b"{\"message\":");
        let (head, _) = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.chunked);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_decoding() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        let mut r = ChunkedReader::new(Cursor::new(&raw[..]));
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello, world");
        // Reading stops at the end of the body, leaving what follows unread.
        let mut rest = String::new();
        r.inner.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn chunked_truncated_is_an_error() {
        let mut r = ChunkedReader::new(Cursor::new(&b"a\r\nshort"[..]));
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        let mut r = ChunkedReader::new(Cursor::new(&b"zz\r\n"[..]));
        assert!(r.read_to_end(&mut out).is_err());
    }

    #[test]
    fn engine_messages() {
        assert_eq!(
            engine_message(404, br#"{"message":"No such container: abc"}"#),
            "No such container: abc"
        );
        assert_eq!(engine_message(500, b"plain failure\n"), "plain failure");
        assert_eq!(engine_message(502, b""), "HTTP 502");
    }

    #[test]
    fn missing_socket_is_unavailable() {
        let c = Client::new(Path::new("/nonexistent/ferry.sock"), Duration::from_secs(1));
        match c.request("GET", "/_ping", None) {
            Err(EnvError::Unavailable(m)) => {
                assert!(
                    m.contains("cannot reach Docker at /nonexistent/ferry.sock"),
                    "{m}"
                )
            }
            other => panic!("expected Unavailable, got {:?}", other.map(|r| r.status)),
        }
    }
}
