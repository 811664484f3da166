//! The transfer manager: every transfer since start, keyed by id and by
//! server, with the audit log, crash state (`persist`), token replay guard
//! (`replay`) and metric totals (`totals`) that its changes write to. What
//! a cancel may do is the finish machine's call (`finish::cancel`); which
//! status an end gives is the record's (`Status::end`).
//!
//! - this file: the manager and the writes every change makes (the
//!   transfer's crash state, its audit line);
//! - `transfer.rs`: one transfer as its threads and the API share it;
//! - `start.rs`: new and resumed transfers, orphans, ids;
//! - `status.rs`: status and phase changes (the one place a status changes);
//! - `cancel.rs`: cancelling one transfer or many;
//! - `queries.rs`: lookups, records and totals.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::audit::{AuditLine, AuditLog};
use super::finish::Phase;
use super::persist::{CrashState, Saved};
use super::record::Status;
use super::replay::ReplayGuard;
use super::totals::Totals;
use crate::events::EventBus;
use crate::timefmt;

mod cancel;
mod queries;
mod start;
mod status;
mod transfer;

pub use cancel::{CancelFilter, CancelRefused};
pub use start::{new_uuid, AlreadyActive};
pub use status::PhaseRefused;
pub use transfer::{CopyPhase, Transfer};

pub struct Manager {
    transfers: Mutex<Vec<Arc<Transfer>>>,
    audit: AuditLog,
    events: Arc<EventBus>,
    crash: CrashState,
    pub replay: ReplayGuard,
    totals: Totals,
    /// Ids of transfers taken up again at start-up (`take_up`).
    taken_up: Mutex<Vec<String>>,
}

impl Manager {
    /// `state_dir` is `<root>/ferry`; audit log and persisted transfers live there.
    pub fn new(state_dir: &Path, events: Arc<EventBus>) -> std::io::Result<Manager> {
        Ok(Manager {
            transfers: Mutex::new(Vec::new()),
            audit: AuditLog::open(&state_dir.join("audit.log")),
            events,
            crash: CrashState::open(state_dir)?,
            replay: ReplayGuard::open(state_dir),
            totals: Totals::default(),
            taken_up: Mutex::new(Vec::new()),
        })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Transfer>>> {
        self.transfers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a recovered orphan's end to the audit log.
    pub fn audit_orphan(&self, orphan: &Saved, to: Status, error: Option<&str>) {
        self.audit.write(&AuditLine {
            time: timefmt::rfc3339(SystemTime::now()),
            transfer: &orphan.id,
            server: &orphan.server,
            direction: orphan.direction.as_str(),
            from: orphan.status.as_str(),
            to: to.as_str(),
            reason: None,
            error,
        });
    }

    fn persist(&self, transfer: &Transfer, status: Status, phase: Phase) {
        self.persist_with_reason(transfer, status, phase, transfer.cancel_reason());
    }

    fn persist_with_reason(
        &self,
        transfer: &Transfer,
        status: Status,
        phase: Phase,
        cancel_reason: Option<String>,
    ) {
        let (config, session) = {
            let state = transfer.lock();
            (state.config.clone(), state.session.clone())
        };
        let saved = Saved {
            id: transfer.id.clone(),
            server: transfer.server.clone(),
            direction: transfer.direction,
            peer: transfer.peer.clone(),
            status,
            phase,
            config,
            cancel_reason,
            session,
        };
        if let Err(e) = self.crash.save(&saved) {
            log::warn!("cannot persist the state of transfer {}: {e}", transfer.id);
        }
    }

    fn audit_line(
        &self,
        transfer: &Transfer,
        from: &str,
        to: Status,
        reason: Option<&str>,
        error: Option<&str>,
    ) {
        self.audit.write(&AuditLine {
            time: timefmt::rfc3339(SystemTime::now()),
            transfer: &transfer.id,
            server: &transfer.server,
            direction: transfer.direction.as_str(),
            from,
            to: to.as_str(),
            reason,
            error,
        });
    }
}

#[cfg(test)]
mod tests;
