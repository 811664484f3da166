//! Writing replies without blocking: a reply held in memory goes out as far
//! as the socket takes it, and what it does not take goes back to the head
//! reader with the connection, so a client that doesn't read its answers
//! never holds a worker.

use std::io;

use log::warn;

use crate::http::conn::Conn;
use crate::http::response::{encode_head, status_has_no_body, RespFraming};
use crate::http::transport::Transport;
use crate::http::Body;

pub(super) fn log_dropped(dropped: &[String]) {
    for name in dropped {
        warn!("http: dropped response header {name:?} (framing header or invalid characters)");
    }
}

/// A reply held in memory (or a streamed one that has no body: HEAD, 204,
/// 304), written without blocking; returns what the socket did not take.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_response(
    conn: &Conn,
    status: u16,
    headers: &[(String, String)],
    body: Body,
    is_head: bool,
    minor: u8,
    close: bool,
    bytes_out: &mut u64,
) -> io::Result<Option<Vec<u8>>> {
    let no_body = status_has_no_body(status);
    let (framing, bytes) = match body {
        // A stream with no body to send (HEAD, or a status without one).
        Body::Stream(_) if no_body => (RespFraming::NoBody, Vec::new()),
        Body::Stream(_) => (RespFraming::Chunked, Vec::new()),
        Body::Bytes(b) if !no_body => (RespFraming::Length(b.len() as u64), b),
        Body::Empty | Body::Upgrade(_) if !no_body => (RespFraming::Length(0), Vec::new()),
        _ => (RespFraming::NoBody, Vec::new()),
    };
    let (mut out, dropped) = encode_head(status, headers, framing, close, minor == 0);
    log_dropped(&dropped);
    if !no_body && !is_head {
        out.extend_from_slice(&bytes);
        *bytes_out = bytes.len() as u64;
    }
    send_or_park(&conn.transport, &out)
}

/// Writes `out` without blocking; returns what the socket did not take
/// (possibly empty when TLS still holds encrypted bytes), for the head
/// reader to send.
pub(super) fn send_or_park(t: &Transport, out: &[u8]) -> io::Result<Option<Vec<u8>>> {
    t.sock().set_nonblocking(true)?;
    let mut sent = 0;
    while sent < out.len() {
        match t.write(&out[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if sent == out.len() && t.flush_pending()? {
        return Ok(None);
    }
    Ok(Some(out[sent..].to_vec()))
}
