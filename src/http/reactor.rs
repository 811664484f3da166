//! The head reader: one thread that accepts connections and reads request
//! heads from all of them with poll(2), handing complete heads to the
//! worker pool.
//!
//! Connections that are not running a handler live here: new ones, idle
//! keep-alive ones, and ones being closed after an error (lingering close,
//! so the client sees the response instead of a reset). Each costs a socket
//! and at most `max_header_bytes` of buffer, and no thread, so thousands of
//! slow or idle clients cannot starve the workers. Limits enforced here:
//! the whole head within `header_timeout` (TLS handshake included), idle
//! keep-alive within `idle_timeout`, head size and header count, and the
//! open-connection cap: when full, the connection that has waited here the
//! longest (lingering ones first) is closed to admit the new one; when
//! every connection is running a handler, the new one is closed instead.
//!
//! A reply a worker could not write without blocking is parked here
//! (`Flush`) and sent as the socket drains; the connection is not read
//! until it is out, so each connection has at most one response in flight
//! and a client that never reads holds a buffer, not a worker. A streamed
//! body goes the same way a piece at a time: once a parked piece is out,
//! the connection goes back to a worker to read the next one. The
//! deadlines and the eviction order are `policy.rs`'s.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use rustls::ServerConfig;

use super::conn::{Conn, InBuf, SlotGuard};
use super::head::{self, Head, HeadError, Limits};
use super::lograte::budgeted;
use super::policy::{Phase, Policy};
use super::response::error_response;
use super::sys;
use super::transport::Transport;
use super::worker::Streaming;
use super::{new_request_id, ServerOptions};

/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Pause after an accept error such as EMFILE, so a full fd table doesn't
/// turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read size while collecting a head.
const HEAD_READ: usize = 8 * 1024;

/// State shared by the acceptor, the workers and the shutdown handle.
pub(crate) struct Shared {
    pub stopping: std::sync::atomic::AtomicBool,
    wake_write: OwnedFd,
    /// Connections whose request is queued or running, by connection id.
    pub inflight: Mutex<HashMap<u64, Weak<TcpStream>>>,
}

impl Shared {
    pub fn new(wake_write: OwnedFd) -> Shared {
        Shared {
            stopping: std::sync::atomic::AtomicBool::new(false),
            wake_write,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Interrupts the poll. A full pipe already guarantees a wake-up, so a
    /// failed write is fine.
    pub fn wake(&self) {
        let _ = sys::write_byte(self.wake_write.as_fd());
    }

    pub fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        // The map stays consistent whatever panicked while holding it.
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Work for a worker, with its connection.
pub(crate) struct Job {
    pub conn: Conn,
    pub work: Work,
    /// When the head was complete: the access log's duration counts the
    /// wait for a free worker too.
    pub received: Instant,
}

pub(crate) enum Work {
    /// A complete head: run the handler.
    Head(Head),
    /// The socket took the last piece of a streamed body: read and send
    /// the next.
    Stream(Box<Streaming>),
}

/// A connection coming back from a worker.
pub(crate) enum Back {
    /// Keep-alive: wait for the next request.
    Idle(Conn),
    /// The response said close: drain briefly, then close.
    Linger(Conn),
    /// The reply's tail `out` did not fit in the socket: send it, then
    /// wait for the next request (or linger when `close`), or, with a
    /// `stream` still to send, hand the connection back to a worker.
    Flush {
        conn: Conn,
        out: Vec<u8>,
        close: bool,
        stream: Option<Box<Streaming>>,
    },
}

enum WState {
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
    fn phase(&self) -> Phase {
        match self {
            WState::Head { idle: true, .. } => Phase::Idle,
            WState::Head { .. } => Phase::Head,
            WState::Flush { .. } => Phase::Flush,
            WState::Linger { .. } => Phase::Linger,
        }
    }

    fn linger() -> WState {
        WState::Linger {
            budget: LINGER_BYTES,
            write_shut: false,
        }
    }
}

struct Waiting {
    conn: Conn,
    deadline: Instant,
    /// When it started waiting here; the oldest is evicted first.
    since: Instant,
    state: WState,
}

enum Step {
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

pub(crate) struct Reactor {
    pub listener: TcpListener,
    pub wake_read: OwnedFd,
    pub tls: Option<Arc<ServerConfig>>,
    pub opts: Arc<ServerOptions>,
    pub shared: Arc<Shared>,
    pub jobs: Sender<Job>,
    pub back: Receiver<Back>,
    pub open: Arc<AtomicUsize>,
    waiting: Vec<Waiting>,
    next_id: u64,
    accept_paused_until: Option<Instant>,
    last_full_warning: Option<Instant>,
    last_accept_error_log: Option<Instant>,
    accept_errors: u64,
    scratch: Box<[u8]>,
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Reactor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: TcpListener,
        wake_read: OwnedFd,
        tls: Option<Arc<ServerConfig>>,
        opts: Arc<ServerOptions>,
        shared: Arc<Shared>,
        jobs: Sender<Job>,
        back: Receiver<Back>,
        open: Arc<AtomicUsize>,
    ) -> Reactor {
        Reactor {
            listener,
            wake_read,
            tls,
            opts,
            shared,
            jobs,
            back,
            open,
            waiting: Vec::new(),
            next_id: 0,
            accept_paused_until: None,
            last_full_warning: None,
            last_accept_error_log: None,
            accept_errors: 0,
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            header_timeout: self.opts.header_timeout,
            idle_timeout: self.opts.idle_timeout,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.opts.max_header_bytes.max(64),
            max_headers: self.opts.max_headers.max(1),
        }
    }

    /// Runs until shutdown is requested; then every waiting connection is
    /// closed and the listener dropped (by the caller dropping `self`).
    pub fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !self.shared.is_stopping() {
            let now = Instant::now();
            self.expire(now);

            let accepting = match self.accept_paused_until {
                Some(t) if t > now => false,
                _ => {
                    self.accept_paused_until = None;
                    true
                }
            };
            fds.clear();
            fds.push(pollfd(self.wake_read.as_raw_fd(), libc::POLLIN));
            if accepting {
                fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            }
            let base = fds.len();
            for w in &self.waiting {
                let mut events = match w.state {
                    // Not read until the reply is out: one in flight.
                    WState::Flush { .. } => libc::POLLOUT,
                    _ => libc::POLLIN,
                };
                if w.conn.transport.wants_write() {
                    events |= libc::POLLOUT;
                }
                fds.push(pollfd(w.conn.transport.sock().as_raw_fd(), events));
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = sys::poll(&mut fds, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("http: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            // Highest index first: swap_remove only moves already-visited
            // entries.
            for i in (0..fds.len() - base).rev() {
                if fds[base + i].revents != 0 && i < self.waiting.len() {
                    self.service_at(i, now);
                }
            }
            if fds[0].revents != 0 {
                self.drain_wake();
                self.take_back(now);
            }
            if accepting && fds[1].revents != 0 {
                self.accept_ready(now);
            }
        }
        self.waiting.clear();
    }

    fn poll_timeout(&self, now: Instant) -> libc::c_int {
        Policy::poll_timeout(
            now,
            self.waiting.iter().map(|w| w.deadline),
            self.accept_paused_until,
        )
    }

    fn expire(&mut self, now: Instant) {
        self.waiting.retain(|w| {
            let live = w.deadline > now;
            if !live {
                match w.state.phase() {
                    Phase::Head => debug!(
                        "http: closing {}: request head not received in time",
                        w.conn.remote
                    ),
                    Phase::Flush => debug!(
                        "http: closing {}: the client did not read its reply in time",
                        w.conn.remote
                    ),
                    Phase::Idle | Phase::Linger => {}
                }
            }
            live
        });
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            if !matches!(sys::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {
                break;
            }
        }
    }

    fn take_back(&mut self, now: Instant) {
        while let Ok(back) = self.back.try_recv() {
            let (conn, state) = match back {
                Back::Idle(c) => {
                    let idle = c.buf.is_empty();
                    (c, WState::Head { idle, scanned: 0 })
                }
                Back::Linger(c) => {
                    c.transport.close_notify();
                    (c, WState::linger())
                }
                Back::Flush {
                    conn,
                    out,
                    close,
                    stream,
                } => (
                    conn,
                    WState::Flush {
                        out,
                        sent: 0,
                        close,
                        stream,
                    },
                ),
            };
            if conn.transport.sock().set_nonblocking(true).is_err() {
                continue;
            }
            let deadline = self.policy().deadline(state.phase(), now);
            self.waiting.push(Waiting {
                conn,
                deadline,
                since: now,
                state,
            });
            // Bytes may already be buffered (pipelining, TLS plaintext held
            // by rustls) and the socket would never signal them.
            let i = self.waiting.len() - 1;
            self.service_at(i, now);
        }
    }

    fn accept_ready(&mut self, now: Instant) {
        for _ in 0..256 {
            match self.listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted =>
                {
                    continue
                }
                Err(e) => {
                    self.accept_errors += 1;
                    // One line per 5 s at most: the retry runs 10 times a second.
                    let due = self
                        .last_accept_error_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5));
                    if due {
                        let hint = if is_resource_exhaustion(&e) {
                            " (raise the open-files limit or lower max connections)"
                        } else {
                            ""
                        };
                        error!(
                            "http: accept failed: {e}{hint}; pausing accepts for {} ms ({} accept errors so far)",
                            ACCEPT_BACKOFF.as_millis(),
                            self.accept_errors
                        );
                        self.last_accept_error_log = Some(now);
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, sock: TcpStream, remote: SocketAddr, now: Instant) {
        if self.open.load(Ordering::Acquire) >= self.opts.max_connections.max(1)
            && !self.evict_one()
        {
            self.warn_full(now, "every connection is running a request; refusing");
            return;
        }
        if let Err(e) = sock.set_nonblocking(true) {
            debug!("http: dropping {remote}: {e}");
            return;
        }
        let _ = sock.set_nodelay(true);
        let transport = match &self.tls {
            Some(cfg) => match rustls::ServerConnection::new(Arc::clone(cfg)) {
                Ok(c) => Transport::tls(sock, c),
                Err(e) => {
                    warn!("http: TLS session setup failed: {e}");
                    return;
                }
            },
            None => Transport::plain(sock),
        };
        self.next_id += 1;
        let conn = Conn {
            transport,
            buf: InBuf::default(),
            remote,
            slot: SlotGuard::take(&self.open),
            id: self.next_id,
        };
        self.waiting.push(Waiting {
            conn,
            deadline: self.policy().deadline(Phase::Head, now),
            since: now,
            state: WState::Head {
                idle: false,
                scanned: 0,
            },
        });
    }

    /// Closes the connection that has waited longest (lingering first).
    fn evict_one(&mut self) -> bool {
        let victim = Policy::victim(
            self.waiting
                .iter()
                .map(|w| (w.state.phase(), w.since, w.conn.id)),
        );
        match victim {
            Some(i) => {
                let w = self.waiting.swap_remove(i);
                debug!(
                    "http: connection limit reached; closing waiting connection from {}",
                    w.conn.remote
                );
                self.warn_full(Instant::now(), "closing the longest-waiting connection");
                true
            }
            None => false,
        }
    }

    fn warn_full(&mut self, now: Instant, what: &str) {
        let due = self
            .last_full_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if due {
            self.last_full_warning = Some(now);
            warn!(
                "http: {} open connections (the limit); {what}",
                self.opts.max_connections
            );
        }
    }

    fn service_at(&mut self, i: usize, now: Instant) {
        let limits = self.limits();
        let header_timeout = self.opts.header_timeout;
        let step = {
            let Some(w) = self.waiting.get_mut(i) else {
                return;
            };
            match w.state {
                WState::Head { .. } => service_head(w, &limits, header_timeout, now),
                WState::Linger { .. } => service_linger(w, &mut self.scratch),
                WState::Flush { .. } => service_flush(w),
            }
        };
        match step {
            Step::Keep => {}
            Step::Flushed { close } => {
                let policy = self.policy();
                let Some(w) = self.waiting.get_mut(i) else {
                    return;
                };
                w.since = now;
                if close {
                    w.conn.transport.close_notify();
                    w.state = WState::linger();
                } else {
                    w.conn.buf.release_if_empty();
                    w.state = WState::Head {
                        idle: w.conn.buf.is_empty(),
                        scanned: 0,
                    };
                }
                w.deadline = policy.deadline(w.state.phase(), now);
                // Pipelined bytes may be buffered already; or linger now.
                self.service_at(i, now);
            }
            Step::StreamOn => {
                let Waiting { conn, state, .. } = self.waiting.swap_remove(i);
                if let WState::Flush {
                    stream: Some(stream),
                    ..
                } = state
                {
                    self.send_job(conn, Work::Stream(stream));
                }
            }
            Step::Close => {
                self.waiting.swap_remove(i);
            }
            Step::Dispatch(head) => {
                let w = self.waiting.swap_remove(i);
                self.dispatch(w.conn, head);
            }
            Step::Reject(e) => {
                let policy = self.policy();
                let request_id = new_request_id();
                let Some(w) = self.waiting.get_mut(i) else {
                    return;
                };
                let remote = w.conn.remote;
                budgeted(|| info!("- - {} 0 0 {request_id} {remote} ({e})", e.status));
                // Best effort on a nonblocking socket: a small response into
                // an empty send buffer; TLS keeps any rest pending.
                let _ = w
                    .conn
                    .transport
                    .write(&error_response(e.status, e.message, &request_id));
                w.conn.transport.close_notify();
                w.conn.buf = InBuf::default();
                w.state = WState::linger();
                w.deadline = policy.deadline(Phase::Linger, now);
                if let Step::Close = service_linger(w, &mut self.scratch) {
                    self.waiting.swap_remove(i);
                }
            }
        }
    }

    fn dispatch(&mut self, conn: Conn, head: Head) {
        self.send_job(conn, Work::Head(head));
    }

    fn send_job(&mut self, conn: Conn, work: Work) {
        let id = conn.id;
        self.shared
            .inflight()
            .insert(id, Arc::downgrade(conn.transport.sock()));
        if self
            .jobs
            .send(Job {
                conn,
                work,
                received: Instant::now(),
            })
            .is_err()
        {
            self.shared.inflight().remove(&id);
        }
    }
}

fn pollfd(fd: libc::c_int, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
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

fn service_head(w: &mut Waiting, limits: &Limits, header_timeout: Duration, now: Instant) -> Step {
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
fn service_linger(w: &mut Waiting, scratch: &mut [u8]) -> Step {
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
fn service_flush(w: &mut Waiting) -> Step {
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
