//! The request body as a `Read` over the connection: Content-Length or
//! chunked framing, `100 Continue` on first read, and the bookkeeping that
//! tells the worker whether the body was consumed (keep-alive) or not
//! (close). Nothing here allocates in proportion to what the client
//! declares.

use std::io::{self, Read};

use super::chunked::ChunkedDecoder;
use super::conn::{Conn, BODY_READ};
use super::head::Framing;

enum Kind {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

pub(crate) struct BodyReader {
    conn: Conn,
    kind: Kind,
    continue_pending: bool,
    failed: bool,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Socket read timeouts surface as `WouldBlock`; name them for handlers.
fn map_read_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "timed out reading the request body",
        )
    } else {
        e
    }
}

impl BodyReader {
    pub fn new(conn: Conn, framing: Framing, expect_continue: bool) -> BodyReader {
        let kind = match framing {
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked(ChunkedDecoder::new()),
        };
        let has_body = framing != Framing::Length(0);
        BodyReader {
            conn,
            kind,
            continue_pending: expect_continue && has_body,
            failed: false,
        }
    }

    /// The whole body was read and the connection is positioned at the next
    /// request.
    pub fn is_complete(&self) -> bool {
        !self.failed
            && match &self.kind {
                Kind::Length(n) => *n == 0,
                Kind::Chunked(d) => d.is_done(),
            }
    }

    /// Tries to finish the body from bytes already buffered, without reading
    /// the socket: a handler that ignored a small body need not cost the
    /// keep-alive. Never waits and never reads more than is buffered.
    pub fn finish_from_buffer(&mut self) {
        if self.failed || self.is_complete() {
            return;
        }
        match &mut self.kind {
            Kind::Length(remaining) => {
                if (self.conn.buf.len() as u64) >= *remaining {
                    self.conn.buf.consume(*remaining as usize);
                    *remaining = 0;
                }
            }
            Kind::Chunked(dec) => loop {
                // Each step consumes at least one byte while input remains.
                if dec.is_done() || self.conn.buf.is_empty() {
                    return;
                }
                match dec.next(self.conn.buf.pending()) {
                    Ok((framing, data)) => {
                        self.conn.buf.consume(framing + data);
                        dec.consume_data(data);
                    }
                    Err(_) => {
                        self.failed = true;
                        return;
                    }
                }
            },
        }
    }

    pub fn into_conn(self) -> Conn {
        self.conn
    }

    fn send_continue(&mut self) -> io::Result<()> {
        self.continue_pending = false;
        self.conn.transport.write_all(CONTINUE)?;
        self.conn.transport.flush()
    }

    fn read_inner(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.continue_pending {
            self.send_continue()?;
        }
        match &mut self.kind {
            Kind::Length(0) => Ok(0),
            Kind::Length(remaining) => {
                let want = (*remaining).min(out.len() as u64) as usize;
                let n = if self.conn.buf.is_empty() {
                    // Straight into the caller's buffer, never past the body.
                    self.conn
                        .transport
                        .read(&mut out[..want])
                        .map_err(map_read_error)?
                } else {
                    let pending = self.conn.buf.pending();
                    let n = pending.len().min(want);
                    out[..n].copy_from_slice(&pending[..n]);
                    self.conn.buf.consume(n);
                    n
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("request body truncated: {remaining} bytes missing"),
                    ));
                }
                *remaining -= n as u64;
                Ok(n)
            }
            Kind::Chunked(dec) => loop {
                let (framing, data) = dec
                    .next(self.conn.buf.pending())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                self.conn.buf.consume(framing);
                if data > 0 {
                    let n = data.min(out.len());
                    out[..n].copy_from_slice(&self.conn.buf.pending()[..n]);
                    self.conn.buf.consume(n);
                    dec.consume_data(n);
                    return Ok(n);
                }
                if dec.is_done() {
                    return Ok(0);
                }
                let n = self
                    .conn
                    .buf
                    .fill(&self.conn.transport, BODY_READ)
                    .map_err(map_read_error)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunked request body truncated",
                    ));
                }
            },
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.failed {
            return Err(io::Error::other(
                "request body unavailable after an earlier error",
            ));
        }
        match self.read_inner(out) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}
