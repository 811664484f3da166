//! Channel helpers shared by the pack and extract pipelines: every wait on
//! a bounded channel also watches the cancel flag, so a stage blocked on a
//! full or empty channel still stops within a few milliseconds.

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a waiting stage looks at the cancel flag.
const POLL: Duration = Duration::from_millis(5);

/// Why a stage stopped waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Halt {
    Cancelled,
    /// The other side is gone: a stage before or after us stopped.
    Closed,
}

pub fn recv<T>(rx: &Receiver<T>, cancel: &AtomicBool) -> Result<T, Halt> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Halt::Cancelled);
        }
        match rx.recv_timeout(POLL) {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(Halt::Closed),
        }
    }
}

pub fn send<T>(tx: &Sender<T>, mut value: T, cancel: &AtomicBool) -> Result<(), Halt> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Halt::Cancelled);
        }
        match tx.send_timeout(value, POLL) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => value = back,
            Err(SendTimeoutError::Disconnected(_)) => return Err(Halt::Closed),
        }
    }
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// True when `data` is all zero bytes (slice equality compiles to memcmp,
/// which stops at the first non-zero byte).
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}
