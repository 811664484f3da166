//! The worker pool: its threads and their seats, the job loop, and what
//! happens to a connection after each request (the next pipelined request,
//! back to the head reader, lingering close, or done).
//!
//! Replies are written without blocking; what the socket does not take
//! goes back to the head reader with the connection, so a client that
//! doesn't read its answers never holds a worker, and the next pipelined
//! request is only read once the reply is out.
//!
//! One request's handling is in `exchange`; writing a reply held in memory
//! in `write`, a streamed one in `stream`, an upgrade in `upgrade`, the
//! access line in `access`.

mod access;
mod exchange;
mod stream;
mod upgrade;
mod write;

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};

use super::conn::Conn;
use super::head::{self, Head, Limits, Parsed};
use super::lograte::budgeted;
use super::reactor::{Back, Job, Shared, Work};
use super::response::error_response;
use super::{new_request_id, Handler};
use exchange::handle_one;
use stream::pump;
pub(crate) use stream::Streaming;

/// Requests served back to back from one connection's buffer before it goes
/// back to the head reader, so one pipelining client can't keep a worker.
const MAX_PIPELINED: usize = 16;

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
