//! One connection waiting in the head reader, and how each of its states
//! is served when poll says the socket is ready: collecting a head,
//! lingering after a close, or flushing a parked reply. Each call says
//! what the reactor does next (`Step`); the bookkeeping is the reactor's.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use crate::http::conn::Conn;
use crate::http::head::{self, Head, HeadError, Limits};
use crate::http::policy::Phase;
use crate::http::worker::Streaming;

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Read size while collecting a head.
const HEAD_READ: usize = 8 * 1024;

pub(super) enum WState {
    /// Collecting a head; `idle` until the first byte of the next request,
    /// `scanned` bytes already searched for the blank line.
    Head {
        idle: bool,
        scanned: usize,
    },
    Linger {
        budget: usize,
        write_shut: bool,
    },
    /// Sending `out[sent..]`; nothing is read meanwhile.
    Flush {
        out: Vec<u8>,
        sent: usize,
        close: bool,
        stream: Option<Box<Streaming>>,
    },
}

impl WState {
    pub(super) fn phase(&self) -> Phase {
        match self {
            WState::Head { idle: true, .. } => Phase::Idle,
            WState::Head { .. } => Phase::Head,
            WState::Flush { .. } => Phase::Flush,
            WState::Linger { .. } => Phase::Linger,
        }
    }

    pub(super) fn linger() -> WState {
        WState::Linger {
            budget: LINGER_BYTES,
            write_shut: false,
        }
    }
}

pub(super) struct Waiting {
    pub(super) conn: Conn,
    pub(super) deadline: Instant,
    /// When it started waiting here; the oldest is evicted first.
    pub(super) since: Instant,
    pub(super) state: WState,
}

pub(super) enum Step {
    Keep,
    /// A parked reply is out.
    Flushed {
        close: bool,
    },
    /// A parked piece of a streamed body is out: a worker reads the next.
    StreamOn,
    Close,
    Dispatch(Head),
    Reject(HeadError),
}

/// Looks for a complete head in what is buffered, searching only bytes not
/// searched before.
fn check_buffered(conn: &mut Conn, scanned: &mut usize, limits: &Limits) -> Option<Step> {
    let (skip, scan) = head::scan_buffered(conn.buf.pending(), scanned, limits);
    conn.buf.consume(skip);
    match scan {
        head::Scan::NeedMore => None,
        head::Scan::Complete(head, n) => {
            conn.buf.consume(n);
            Some(Step::Dispatch(head))
        }
        head::Scan::Reject(e) => Some(Step::Reject(e)),
    }
}

pub(super) fn service_head(
    w: &mut Waiting,
    limits: &Limits,
    header_timeout: Duration,
    now: Instant,
) -> Step {
    let WState::Head { idle, scanned } = &mut w.state else {
        return Step::Keep;
    };
    let conn = &mut w.conn;
    if conn.transport.wants_write() && conn.transport.flush_pending().is_err() {
        return Step::Close;
    }
    // A connection back from a worker may hold a whole pipelined head.
    if let Some(step) = check_buffered(conn, scanned, limits) {
        return step;
    }
    loop {
        let room = limits.max_header_bytes.saturating_sub(conn.buf.len());
        if room == 0 {
            // Full and not complete (checked after every read): too large,
            // unless the head ends exactly at the limit.
            return match head::scan_full(conn.buf.pending(), limits) {
                Ok((head, n)) => {
                    conn.buf.consume(n);
                    Step::Dispatch(head)
                }
                Err(e) => Step::Reject(e),
            };
        }
        // Start small and double: a slowloris connection that sent a few
        // bytes should cost ~1 KiB, a normal head one or two reads.
        let step = room.min(HEAD_READ.min(conn.buf.len().max(1024)));
        match conn.buf.fill(&conn.transport, step) {
            Ok(0) => return Step::Close,
            Ok(_) => {
                if *idle {
                    *idle = false;
                    w.deadline = now + header_timeout;
                }
                if let Some(step) = check_buffered(conn, scanned, limits) {
                    return step;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("http: closing {}: {e}", conn.remote);
                return Step::Close;
            }
        }
    }
}

/// Lingering close: flush what we said, half-close, then discard what the
/// client still sends for a bounded time and amount.
pub(super) fn service_linger(w: &mut Waiting, scratch: &mut [u8]) -> Step {
    let WState::Linger { budget, write_shut } = &mut w.state else {
        return Step::Keep;
    };
    let sock = Arc::clone(w.conn.transport.sock());
    if !*write_shut {
        match w.conn.transport.flush_pending() {
            Ok(true) => {
                let _ = sock.shutdown(Shutdown::Write);
                *write_shut = true;
            }
            Ok(false) => return Step::Keep,
            Err(_) => return Step::Close,
        }
    }
    // Bounded per call so one fast client can't hold the loop.
    let mut this_call = 0;
    while this_call < 1024 * 1024 {
        match (&*sock).read(scratch) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                this_call += n;
                *budget = budget.saturating_sub(n);
                if *budget == 0 {
                    return Step::Close;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    Step::Keep
}

/// Sends what is left of a parked reply; `Flushed` once it is all out.
pub(super) fn service_flush(w: &mut Waiting) -> Step {
    let WState::Flush {
        out,
        sent,
        close,
        stream,
    } = &mut w.state
    else {
        return Step::Keep;
    };
    let t = &w.conn.transport;
    while *sent < out.len() {
        match t.write(&out[*sent..]) {
            Ok(0) => return Step::Close,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    match t.flush_pending() {
        Ok(true) if stream.is_some() => Step::StreamOn,
        Ok(true) => Step::Flushed { close: *close },
        Ok(false) => Step::Keep,
        Err(_) => Step::Close,
    }
}
