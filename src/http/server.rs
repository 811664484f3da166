//! Server lifecycle: bind (listener, TLS config, wake pipe), run (worker
//! pool plus the head reader on the calling thread), and graceful shutdown
//! (stop accepting at once, let in-flight requests finish for up to the
//! grace period, then tear down what is left).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use rustls::ServerConfig;

use super::head::Limits;
use super::reactor::{Reactor, Shared};
use super::sys;
use super::worker::{spawn_worker, WorkerCtx};
use super::{tls, Handler, ServerOptions};

/// Kernel accept backlog: bursts of connects wait here, not in SYN retries.
const BACKLOG: libc::c_int = 1024;

pub(crate) struct Bound {
    listener: TcpListener,
    local_addr: SocketAddr,
    options: ServerOptions,
    tls: Option<Arc<ServerConfig>>,
    pub shared: Arc<Shared>,
    wake_read: OwnedFd,
    /// Open connections, kept by the reactor; read for metrics.
    pub open: Arc<AtomicUsize>,
}

fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    sys::pipe()
}

pub(crate) fn bind(addr: SocketAddr, options: ServerOptions) -> io::Result<Bound> {
    // TLS first: a bad certificate should fail before the port is taken.
    let tls = options.tls.as_ref().map(tls::load).transpose()?;
    let listener = TcpListener::bind(addr)?;
    // std listens with a backlog of 128; a second listen() raises it.
    // Best effort: the smaller backlog still works.
    let _ = sys::set_backlog(listener.as_fd(), BACKLOG);
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let (wake_read, wake_write) = wake_pipe()?;
    Ok(Bound {
        listener,
        local_addr,
        options,
        tls,
        shared: Arc::new(Shared::new(wake_write)),
        wake_read,
        open: Arc::new(AtomicUsize::new(0)),
    })
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn run(self, handler: Arc<dyn Handler>, grace: Duration) -> io::Result<()> {
        let Bound {
            listener,
            options,
            tls,
            shared,
            wake_read,
            open,
            ..
        } = self;
        let opts = Arc::new(options);
        let (job_tx, job_rx) = crossbeam_channel::unbounded();
        let (back_tx, back_rx) = crossbeam_channel::unbounded();
        let ctx = Arc::new(WorkerCtx {
            handler,
            shared: Arc::clone(&shared),
            back: back_tx,
            limits: Limits {
                max_header_bytes: opts.max_header_bytes.max(64),
                max_headers: opts.max_headers.max(1),
            },
            body_timeout: opts.body_timeout,
            next_worker: AtomicUsize::new(0),
        });
        for _ in 0..opts.workers.max(1) {
            spawn_worker(Arc::clone(&ctx), job_rx.clone())?;
        }
        drop(job_rx);
        drop(ctx);

        let mut reactor = Reactor::new(
            listener,
            wake_read,
            tls,
            opts,
            Arc::clone(&shared),
            job_tx,
            back_rx,
            Arc::clone(&open),
        );
        raise_priority();
        reactor.run();
        // Closes the listener, every waiting connection and the job queue
        // (idle workers exit once it is drained).
        drop(reactor);

        let deadline = Instant::now() + grace;
        loop {
            let remaining = shared.inflight().len();
            if remaining == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                warn!(
                    "http: {remaining} request(s) still running after the {} ms grace period; closing their connections",
                    grace.as_millis()
                );
                for sock in shared.inflight().values().filter_map(|w| w.upgrade()) {
                    let _ = sock.shutdown(Shutdown::Both);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Nice value of the reactor and the workers when the daemon may raise it
/// (as root): a request is answered within milliseconds even when every
/// core is busy with transfers, whose threads run at nice 0 in
/// `SCHED_BATCH` (see `archive::sched`). Handlers are short; the one
/// that receives a transfer drops to the transfer class while it does.
const API_NICE: libc::c_int = -10;

/// Raises the calling thread to `API_NICE`; without the privilege it
/// stays where it is.
pub(crate) fn raise_priority() {
    if !sys::set_thread_nice(API_NICE) {
        debug!(
            "http: API threads keep the default priority: {}",
            io::Error::last_os_error()
        );
    }
}
