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
//!
//! - this file: the poll loop, connections coming back from workers,
//!   heads handed to workers;
//! - `reactor/accept.rs`: accepting and the open-connection cap;
//! - `reactor/waiting.rs`: one waiting connection and how each of its
//!   states (head, linger, flush) is served.

use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info};
use rustls::ServerConfig;

use super::conn::{Conn, InBuf};
use super::head::{Head, Limits};
use super::lograte::budgeted;
use super::policy::{Phase, Policy};
use super::response::error_response;
use super::sys;
use super::worker::Streaming;
use super::{new_request_id, ServerOptions};

mod accept;
mod waiting;

use waiting::{service_flush, service_head, service_linger, Step, WState, Waiting};

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
