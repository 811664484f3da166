//! How transfers come into the manager: `begin` for a new one (one active
//! per server and direction, finished records bounded), `resume` for one a
//! killed daemon left to settle, the orphans crash state holds, and the
//! ids they get.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Manager, Transfer};
use crate::transfer::finish::Phase;
use crate::transfer::persist::Saved;
use crate::transfer::record::{Direction, Status};

/// Finished records kept for `GET /api/transfers` beyond the active ones.
const KEEP_FINISHED: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyActive;

impl Manager {
    /// Creates a `pending` transfer unless one is active for the server in
    /// that direction.
    pub fn begin(
        &self,
        server: &str,
        direction: Direction,
        peer: &str,
    ) -> Result<Arc<Transfer>, AlreadyActive> {
        let mut list = self.list();
        if list
            .iter()
            .any(|t| t.server == server && t.direction == direction && !t.status().is_terminal())
        {
            return Err(AlreadyActive);
        }
        let transfer = Arc::new(Transfer::new(
            new_uuid(),
            server,
            direction,
            peer,
            Status::Pending,
            Phase::Streaming,
        ));
        list.push(Arc::clone(&transfer));
        // Forget the oldest finished records beyond the bound.
        let finished = list.iter().filter(|t| t.status().is_terminal()).count();
        if finished > KEEP_FINISHED {
            let mut excess = finished - KEEP_FINISHED;
            list.retain(|t| {
                if excess > 0 && t.status().is_terminal() {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        drop(list);
        self.persist(&transfer, Status::Pending, Phase::Streaming);
        self.audit_line(&transfer, "", Status::Pending, None, None);
        Ok(transfer)
    }

    /// Takes up a transfer a killed daemon left whose end the panel still
    /// has to settle: the same id, `processing`, in its saved phase.
    pub fn resume(&self, saved: &Saved) -> Arc<Transfer> {
        let transfer = Arc::new(Transfer::new(
            saved.id.clone(),
            &saved.server,
            saved.direction,
            &saved.peer,
            Status::Processing,
            saved.phase,
        ));
        {
            let mut state = transfer.lock();
            state.config = saved.config.clone();
            state.cancel_reason = saved.cancel_reason.clone();
            state.session = saved.session.clone();
        }
        self.list().push(Arc::clone(&transfer));
        self.persist(&transfer, Status::Processing, saved.phase);
        transfer
    }

    /// Transfers a previous daemon left in flight (their state files stay
    /// until each is settled with `forget_orphan` or ends as a resumed
    /// transfer). One this daemon took up again (`take_up`) is no longer
    /// an orphan: recovery must not settle it too.
    pub fn orphans(&self) -> Vec<Saved> {
        let taken = self.taken_up.lock().unwrap_or_else(|p| p.into_inner());
        let mut orphans = self.crash.orphans();
        orphans.retain(|o| !taken.contains(&o.id));
        orphans
    }

    /// `resume` for a transfer that goes on where it stood (a source
    /// resuming its segmented session): its state file stays the one it
    /// had, rewritten as it goes, and `orphans` no longer lists it.
    pub fn take_up(&self, saved: &Saved) -> Arc<Transfer> {
        self.taken_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(saved.id.clone());
        self.resume(saved)
    }

    /// Where a source's ack lines of its segmented session are kept.
    pub fn acks_file(&self, id: &str) -> std::path::PathBuf {
        self.crash.acks_file(id)
    }

    pub fn forget_orphan(&self, id: &str) {
        self.crash.forget(id);
    }
}

/// A random (v4) UUID.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to time and a counter, still unique
        // within this process.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        b[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
