//! The worker pool: runs the handler for one complete head at a time,
//! writes the response, logs the access line, and decides what happens to
//! the connection next (next pipelined request, back to the head reader,
//! lingering close, or an upgrade thread).
//!
//! Replies are written without blocking; what the socket does not take
//! goes back to the head reader with the connection, so a client that
//! doesn't read its answers never holds a worker, and the next pipelined
//! request is only read once the reply is out. A streamed body is sent a
//! piece at a time the same way: the worker reads from the body while the
//! socket takes what it reads, parks the connection with the head reader
//! when it is full (or after `STREAM_PER_JOB` bytes, so other requests get
//! their turn), and a worker picks it up again once the piece is out.

use std::any::Any;
use std::cell::RefCell;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};

use super::body::BodyReader;
use super::chunked::encode_chunk_header;
use super::conn::Conn;
use super::head::{self, Head, Limits, Parsed};
use super::lograte::budgeted;
use super::reactor::{Back, Job, Shared, Work};
use super::response::{
    asks_close, encode_head, error_body, error_response, status_has_no_body, RespFraming,
};
use super::transport::{Transport, UpgradedStream};
use super::{new_request_id, Body, ConnectionHandle, Handler, Request, Response, Upgraded};

/// Requests served back to back from one connection's buffer before it goes
/// back to the head reader, so one pipelining client can't keep a worker.
const MAX_PIPELINED: usize = 16;
/// Chunk size for streamed response bodies.
const STREAM_CHUNK: usize = 64 * 1024;
/// Bytes of a streamed body sent in one turn on a worker before the
/// connection goes back through the head reader's queue.
const STREAM_PER_JOB: u64 = 1024 * 1024;

pub(crate) struct WorkerCtx {
    pub handler: Arc<dyn Handler>,
    pub shared: Arc<Shared>,
    pub back: Sender<Back>,
    pub limits: Limits,
    pub body_timeout: Duration,
    /// Number for the next worker thread's name.
    pub next_worker: AtomicUsize,
}

thread_local! {
    /// The pool this thread serves, until it hands its seat over
    /// (`leave_pool`) to run one long request.
    static SEAT: RefCell<Option<(Arc<WorkerCtx>, Receiver<Job>)>> = const { RefCell::new(None) };
}

/// Starts one pool worker thread.
pub(crate) fn spawn_worker(ctx: Arc<WorkerCtx>, jobs: Receiver<Job>) -> io::Result<()> {
    let n = ctx.next_worker.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(format!("http-worker-{n}"))
        .spawn(move || {
            super::server::raise_priority();
            worker_loop(ctx, jobs)
        })
        .map(drop)
}

/// Called on a worker thread by a handler that will run for long (a whole
/// incoming transfer): a new worker takes this thread's place in the pool,
/// so API requests never queue behind transfers, and this thread ends when
/// its connection is done. False (and the thread stays a pool worker) when
/// not on a pool thread, already left, or no thread could be started.
pub(crate) fn leave_pool() -> bool {
    let Some((ctx, jobs)) = SEAT.with(|s| s.borrow_mut().take()) else {
        return false;
    };
    match spawn_worker(Arc::clone(&ctx), jobs.clone()) {
        Ok(()) => true,
        Err(e) => {
            warn!("http: cannot start a replacement worker ({e}); this one keeps its seat");
            SEAT.with(|s| *s.borrow_mut() = Some((ctx, jobs)));
            false
        }
    }
}

enum Next {
    KeepAlive(Conn),
    Close(Conn),
    /// The reply's tail did not fit in the socket; the head reader sends it
    /// (then a worker continues the stream, when there is one).
    Park(Conn, Vec<u8>, bool, Option<Box<Streaming>>),
    /// Connection dropped or handed off.
    Done,
}

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Removes a connection from the in-flight registry when its job ends,
/// however it ends.
struct InflightGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.shared.inflight().remove(&self.id);
    }
}

pub(crate) fn worker_loop(ctx: Arc<WorkerCtx>, jobs: Receiver<Job>) {
    SEAT.with(|s| *s.borrow_mut() = Some((Arc::clone(&ctx), jobs.clone())));
    while let Ok(job) = jobs.recv() {
        let _guard = InflightGuard {
            shared: &ctx.shared,
            id: job.conn.id,
        };
        // Handler panics are caught closer in; this only guards the pool
        // against a bug in the server itself.
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| serve(&ctx, job))) {
            error!(
                "http: worker recovered from an internal panic: {}",
                panic_message(&*p)
            );
        }
        if SEAT.with(|s| s.borrow().is_none()) {
            // Its seat went to a replacement while it ran a long request.
            return;
        }
    }
}

fn prepare_blocking(conn: &Conn, timeout: Duration) -> io::Result<()> {
    let sock = conn.transport.sock();
    let timeout = Some(timeout).filter(|t| !t.is_zero());
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(timeout)?;
    sock.set_write_timeout(timeout)
}

fn serve(ctx: &WorkerCtx, job: Job) {
    let Job {
        conn,
        work,
        received,
    } = job;
    let mut next = match work {
        Work::Head(head) => request(ctx, conn, head, received),
        Work::Stream(stream) => pump(conn, Vec::new(), stream),
    };
    let mut served = 0;
    loop {
        match next {
            Next::Done => return,
            Next::Close(c) => return send_back(ctx, Back::Linger(c)),
            Next::Park(conn, out, close, stream) => {
                return send_back(
                    ctx,
                    Back::Flush {
                        conn,
                        out,
                        close,
                        stream,
                    },
                )
            }
            Next::KeepAlive(mut c) => {
                served += 1;
                let skip = head::leading_empty_lines(c.buf.pending());
                c.buf.consume(skip);
                if !c.buf.is_empty() && served < MAX_PIPELINED {
                    match head::parse_head(c.buf.pending(), &ctx.limits) {
                        Ok(Parsed::Complete(h, n)) => {
                            c.buf.consume(n);
                            next = request(ctx, c, h, Instant::now());
                            continue;
                        }
                        Ok(Parsed::Partial) => {}
                        Err(e) => {
                            let request_id = new_request_id();
                            let remote = c.remote;
                            budgeted(|| info!("- - {} 0 0 {request_id} {remote} ({e})", e.status));
                            let out = error_response(e.status, e.message, &request_id);
                            return send_back(
                                ctx,
                                Back::Flush {
                                    conn: c,
                                    out,
                                    close: true,
                                    stream: None,
                                },
                            );
                        }
                    }
                }
                c.buf.release_if_empty();
                return send_back(ctx, Back::Idle(c));
            }
        }
    }
}

/// One request on a connection made blocking for the body's reads.
fn request(ctx: &WorkerCtx, conn: Conn, head: Head, started: Instant) -> Next {
    if let Err(e) = prepare_blocking(&conn, ctx.body_timeout) {
        debug!("http: dropping {}: {e}", conn.remote);
        return Next::Done;
    }
    handle_one(ctx, conn, head, started)
}

fn send_back(ctx: &WorkerCtx, back: Back) {
    if ctx.shared.is_stopping() {
        // Nobody is reading heads any more; closing is the answer.
        return;
    }
    if ctx.back.send(back).is_ok() {
        ctx.shared.wake();
    }
}

/// `started`: when the head was complete (for the access log).
fn handle_one(ctx: &WorkerCtx, conn: Conn, head: Head, started: Instant) -> Next {
    let request_id = new_request_id();
    let remote = conn.remote;
    let method = head.method.clone();
    let path = head.path.clone();
    let is_head = method == "HEAD";
    let minor = head.minor_version;
    let keep_alive = head.keep_alive;
    let handle = ConnectionHandle {
        sock: Arc::downgrade(conn.transport.sock()),
    };
    let body = BodyReader::new(conn, head.framing, head.expect_continue);
    let mut req = Request::from_conn(head, remote, request_id.clone(), body, handle);

    let result = catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(&mut req)));
    let Some(mut body) = req.take_body_reader() else {
        error!("http: request {request_id}: the handler replaced the request body; closing");
        return Next::Done;
    };
    drop(req);
    let (response, panicked) = match result {
        Ok(r) => (r, false),
        Err(p) => {
            error!(
                "http: handler panicked on {method} {path} (request {request_id}): {}",
                panic_message(&*p)
            );
            let r = Response::new(500)
                .header("Content-Type", "application/json")
                .bytes(error_body("internal server error", &request_id));
            (r, true)
        }
    };
    body.finish_from_buffer();
    let complete = body.is_complete();
    let conn = body.into_conn();
    // An unread body is never drained (it may be endless): close instead.
    let mut close = !keep_alive || !complete || panicked || ctx.shared.is_stopping();
    let Response {
        status,
        headers,
        body,
    } = response;
    close |= asks_close(&headers);

    let access = Access {
        method,
        path,
        status,
        started,
        bytes: 0,
        request_id,
        remote,
    };
    if let Body::Upgrade(f) = body {
        let result = write_upgrade(&conn, status, &headers);
        access.log();
        let request_id = access.request_id;
        if let Err(e) = result {
            debug!("http: request {request_id}: writing the upgrade response failed: {e}");
            return Next::Done;
        }
        hand_off(conn, f, &request_id);
        return Next::Done;
    }

    let body = match body {
        Body::Stream(reader) if !is_head && !status_has_no_body(status) => {
            // No chunked coding for HTTP/1.0: the close ends the body.
            let chunked = minor != 0;
            close |= !chunked;
            let framing = if chunked {
                RespFraming::Chunked
            } else {
                RespFraming::UntilClose
            };
            let (out, dropped) = encode_head(status, &headers, framing, close, false);
            log_dropped(&dropped);
            let stream = Streaming {
                reader,
                chunked,
                close,
                ended: false,
                access,
            };
            return pump(conn, out, Box::new(stream));
        }
        other => other,
    };
    let mut bytes_out = 0u64;
    let result = write_response(
        &conn,
        status,
        &headers,
        body,
        is_head,
        minor,
        close,
        &mut bytes_out,
    );
    let access = Access {
        bytes: bytes_out,
        ..access
    };
    access.log();
    match result {
        Ok(Some(rest)) => Next::Park(conn, rest, close, None),
        Ok(None) if close => Next::Close(conn),
        Ok(None) => Next::KeepAlive(conn),
        Err(e) => {
            debug!(
                "http: request {}: sending the response failed: {e}",
                access.request_id
            );
            Next::Done
        }
    }
}

/// What the access line of one request says; written when its response
/// is out (a streamed one's at its end, with every byte counted).
struct Access {
    method: String,
    path: String,
    status: u16,
    /// When the head was complete.
    started: Instant,
    bytes: u64,
    request_id: String,
    remote: std::net::SocketAddr,
}

impl Access {
    fn log(&self) {
        let Access {
            method,
            path,
            status,
            started,
            bytes,
            request_id,
            remote,
        } = self;
        // Never headers or query strings: they can carry credentials.
        // Fields are labelled so a journal or grep reads them without a
        // legend; Prometheus scrapes (every 15 s) only at debug.
        let level = if path == "/metrics" {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        budgeted(|| {
            log::log!(
                level,
                "access method={method} path={path} status={status} ms={} bytes={bytes} id={request_id} remote={remote}",
                started.elapsed().as_millis()
            )
        });
    }
}

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

/// Sends `out`, then reads and sends the body a chunk at a time without
/// blocking on the socket: parks the connection with the head reader when
/// the socket is full or after `STREAM_PER_JOB` bytes; at the end, writes
/// the access line and keeps the connection alive or closes it.
fn pump(conn: Conn, mut out: Vec<u8>, mut s: Box<Streaming>) -> Next {
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

fn log_dropped(dropped: &[String]) {
    for name in dropped {
        warn!("http: dropped response header {name:?} (framing header or invalid characters)");
    }
}

/// A reply held in memory (or a streamed one that has no body: HEAD, 204,
/// 304), written without blocking; returns what the socket did not take.
#[allow(clippy::too_many_arguments)]
fn write_response(
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
fn send_or_park(t: &Transport, out: &[u8]) -> io::Result<Option<Vec<u8>>> {
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

/// A failing body stream can't be reported in-band once the head is out;
/// the connection is dropped without the last chunk, which clients see as
/// a truncated response.
fn stream_failed(e: io::Error) {
    warn!("http: response body stream failed: {e}; aborting the response");
}

fn write_upgrade(conn: &Conn, status: u16, headers: &[(String, String)]) -> io::Result<()> {
    let (out, dropped) = encode_head(status, headers, RespFraming::NoBody, false, false);
    log_dropped(&dropped);
    conn.transport.write_all(&out)?;
    conn.transport.flush()
}

fn hand_off(conn: Conn, f: Box<dyn FnOnce(Upgraded) + Send>, request_id: &str) {
    let Conn {
        transport,
        mut buf,
        slot,
        ..
    } = conn;
    let leftover = buf.take_pending();
    // The upgraded protocol sets its own read timeout; writes keep the body
    // timeout so a peer that stops reading can't hold a thread forever.
    let _ = transport.sock().set_read_timeout(None);
    let stream = UpgradedStream {
        transport,
        slot: Arc::new(slot),
    };
    let id = request_id.to_string();
    let spawned = std::thread::Builder::new()
        .name("http-upgrade".into())
        .spawn(move || {
            let upgraded = Upgraded {
                stream: Box::new(stream),
                leftover,
            };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(upgraded))) {
                error!(
                    "http: upgrade handler for request {id} panicked: {}",
                    panic_message(&*p)
                );
            }
        });
    if let Err(e) = spawned {
        error!("http: request {request_id}: cannot start the upgrade thread: {e}");
    }
}
