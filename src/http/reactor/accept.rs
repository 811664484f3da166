//! Accepting connections: up to a batch per wake-up, a pause after an
//! accept error (a full fd table must not become a busy loop), and the
//! open-connection cap, where the longest-waiting connection makes room
//! (`Policy::victim`) or the new one is refused.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, warn};

use super::waiting::{WState, Waiting};
use super::Reactor;
use crate::http::conn::{Conn, InBuf, SlotGuard};
use crate::http::policy::{Phase, Policy};
use crate::http::transport::Transport;

/// Pause after an accept error such as EMFILE, so a full fd table doesn't
/// turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Reactor {
    pub(super) fn accept_ready(&mut self, now: Instant) {
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
}
