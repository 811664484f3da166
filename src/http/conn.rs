//! One accepted connection as it moves between the head reader and the
//! workers: its transport, the bytes read ahead of the parser, and the slot
//! it holds in the open-connection count.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::transport::Transport;

/// Holds one unit of the open-connection count until dropped.
pub(crate) struct SlotGuard(Arc<AtomicUsize>);

impl SlotGuard {
    pub fn take(open: &Arc<AtomicUsize>) -> SlotGuard {
        open.fetch_add(1, Ordering::AcqRel);
        SlotGuard(Arc::clone(open))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes read from the transport and not yet consumed: `data[start..end]`.
/// `data` only grows (zeroed once), so refills don't re-initialise memory.
#[derive(Default)]
pub(crate) struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// Read size while streaming a body through the buffer.
pub(crate) const BODY_READ: usize = 64 * 1024;

impl InBuf {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Frees the allocation when nothing is pending (idle connections should
    /// cost a socket, not a buffer).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            *self = InBuf::default();
        }
    }

    /// Takes everything pending.
    pub fn take_pending(&mut self) -> Vec<u8> {
        let out = self.pending().to_vec();
        *self = InBuf::default();
        out
    }

    /// Reads once from `t`, appending at most `max_read` bytes. Returns what
    /// the read returned (0 = EOF).
    pub fn fill(&mut self, t: &Transport, max_read: usize) -> io::Result<usize> {
        if self.start > 0 && self.data.len() - self.end < max_read {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = self.end + max_read;
        if self.data.len() < need {
            self.data.resize(need, 0);
        }
        let n = t.read(&mut self.data[self.end..need])?;
        self.end += n;
        Ok(n)
    }
}

pub(crate) struct Conn {
    pub transport: Transport,
    pub buf: InBuf,
    pub remote: SocketAddr,
    pub slot: SlotGuard,
    /// Unique per connection, for the in-flight registry and logs.
    pub id: u64,
}
