//! Streamed response bodies: the worker reads from the handler's body while
//! the socket takes what it reads, parks the connection with the head
//! reader when the socket is full (or after `STREAM_PER_JOB` bytes, so
//! other requests get their turn), and a worker picks it up again once the
//! piece is out.

use std::io::{self, Read};

use log::{debug, warn};

use super::access::Access;
use super::write::send_or_park;
use super::Next;
use crate::http::chunked::encode_chunk_header;
use crate::http::conn::Conn;

/// Chunk size for streamed response bodies.
const STREAM_CHUNK: usize = 64 * 1024;
/// Bytes of a streamed body sent in one turn on a worker before the
/// connection goes back through the head reader's queue.
const STREAM_PER_JOB: u64 = 1024 * 1024;

/// A streamed response body still being sent: the handler's reader, its
/// framing, and the access line to write at its end.
pub(crate) struct Streaming {
    reader: Box<dyn Read + Send>,
    /// Chunked coding (HTTP/1.1); else the close ends the body (HTTP/1.0).
    chunked: bool,
    /// Close the connection once the body is out.
    close: bool,
    /// The reader said EOF; only the last bytes remain to be sent.
    ended: bool,
    access: Access,
}

impl Streaming {
    /// A body not yet begun: `chunked` for HTTP/1.1 (else the close ends
    /// it), `close` to close the connection once it is out.
    pub(super) fn new(
        reader: Box<dyn Read + Send>,
        chunked: bool,
        close: bool,
        access: Access,
    ) -> Streaming {
        Streaming {
            reader,
            chunked,
            close,
            ended: false,
            access,
        }
    }
}

/// Sends `out`, then reads and sends the body a chunk at a time without
/// blocking on the socket: parks the connection with the head reader when
/// the socket is full or after `STREAM_PER_JOB` bytes; at the end, writes
/// the access line and keeps the connection alive or closes it.
pub(super) fn pump(conn: Conn, mut out: Vec<u8>, mut s: Box<Streaming>) -> Next {
    // [room for the size line][data][CRLF], encoded in place.
    const ROOM: usize = 18;
    let mut this_job = 0u64;
    let mut buf = Vec::new();
    loop {
        match send_or_park(&conn.transport, &out) {
            Ok(None) => {}
            Ok(Some(rest)) => {
                let close = s.close;
                if s.ended {
                    s.access.log();
                    return Next::Park(conn, rest, close, None);
                }
                return Next::Park(conn, rest, close, Some(s));
            }
            Err(e) => {
                debug!(
                    "http: request {}: sending the response failed: {e}",
                    s.access.request_id
                );
                s.access.log();
                return Next::Done;
            }
        }
        if s.ended {
            s.access.log();
            return if s.close {
                Next::Close(conn)
            } else {
                Next::KeepAlive(conn)
            };
        }
        if this_job >= STREAM_PER_JOB {
            // Others' turn: through the head reader's queue and back.
            let close = s.close;
            return Next::Park(conn, Vec::new(), close, Some(s));
        }
        if buf.is_empty() {
            buf = vec![0u8; ROOM + STREAM_CHUNK + 2];
        }
        let n = match s.reader.read(&mut buf[ROOM..ROOM + STREAM_CHUNK]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                stream_failed(e);
                s.access.log();
                return Next::Done;
            }
        };
        out.clear();
        if n == 0 {
            s.ended = true;
            if s.chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            continue;
        }
        if s.chunked {
            let mut size = [0u8; 18];
            let h = encode_chunk_header(n, &mut size);
            buf[ROOM - h..ROOM].copy_from_slice(&size[..h]);
            buf[ROOM + n..ROOM + n + 2].copy_from_slice(b"\r\n");
            out.extend_from_slice(&buf[ROOM - h..ROOM + n + 2]);
        } else {
            out.extend_from_slice(&buf[ROOM..ROOM + n]);
        }
        s.access.bytes += n as u64;
        this_job += n as u64;
    }
}

/// A failing body stream can't be reported in-band once the head is out;
/// the connection is dropped without the last chunk, which clients see as
/// a truncated response.
fn stream_failed(e: io::Error) {
    warn!("http: response body stream failed: {e}; aborting the response");
}
