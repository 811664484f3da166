//! Status and finish-phase changes: each is checked against its machine
//! (`Status::can_become`, `Phase::can_become`), audited, persisted and
//! published before it becomes visible, under the transfer's `changing`
//! lock. `apply` is the one place a status changes.

use std::time::SystemTime;

use super::{Manager, Transfer};
use crate::events::Event;
use crate::server::ServerConfig;
use crate::timefmt;
use crate::transfer::finish::Phase;
use crate::transfer::record::{Direction, Status};

/// Why a finish step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseRefused {
    /// The transfer was cancelled before the step that cannot be undone.
    Cancelled,
    /// Not a step of the machine (a bug, logged).
    NoSuchStep,
}

impl Manager {
    /// Moves the finish to `next`, persisting it before it is visible:
    /// the step after it cannot be undone, so recovery must find it. The
    /// step into `reporting` is refused once the transfer was cancelled,
    /// and from then on a cancel is refused (`finish::cancel`): both are
    /// decided under the same lock, so exactly one of them wins.
    pub fn enter_phase(&self, transfer: &Transfer, next: Phase) -> Result<(), PhaseRefused> {
        let _changing = transfer.lock_changes();
        let from = transfer.phase();
        if !from.can_become(transfer.direction, next) {
            log::error!(
                "bug: transfer {} of {} cannot go from phase {} to {}",
                transfer.id,
                transfer.server,
                from.as_str(),
                next.as_str()
            );
            return Err(PhaseRefused::NoSuchStep);
        }
        if next == Phase::Reporting && transfer.is_cancelled() {
            return Err(PhaseRefused::Cancelled);
        }
        let status = transfer.status();
        if !status.is_terminal() {
            self.persist(transfer, status, next);
        }
        transfer.lock().phase = next;
        log::debug!(
            "transfer {} ({} {}): phase {} -> {}",
            transfer.id,
            transfer.direction.as_str(),
            transfer.server,
            from.as_str(),
            next.as_str()
        );
        crate::transfer::finish::failpoint::reached(next);
        Ok(())
    }

    /// Keeps the destination's configuration with the transfer's state
    /// (persisted with the next phase change).
    pub fn set_config(&self, transfer: &Transfer, config: &ServerConfig) {
        transfer.lock().config = Some(config.clone());
    }

    /// Keeps a source's segmented session with the transfer's state and
    /// persists it at once: the sender notes held segments only after
    /// this, so a restarted source that finds ack lines finds the session
    /// they belong to.
    pub fn set_outgoing_session(
        &self,
        transfer: &Transfer,
        session: crate::transfer::persist::OutgoingSession,
    ) {
        let _changing = transfer.lock_changes();
        transfer.lock().session = Some(session);
        let status = transfer.status();
        if !status.is_terminal() {
            self.persist(transfer, status, transfer.phase());
        }
    }

    /// Moves a transfer to `next`. Returns false (and logs a bug) for a
    /// transition the status machine does not have.
    pub fn transition(&self, transfer: &Transfer, next: Status, error: Option<String>) -> bool {
        let _changing = transfer.lock_changes();
        self.apply(transfer, next, error, None)
    }

    /// Ends a transfer with the status `Status::end` gives for `outcome`.
    /// Returns the terminal status.
    pub fn finish(&self, transfer: &Transfer, outcome: Result<(), String>) -> Status {
        let _changing = transfer.lock_changes();
        let current = transfer.status();
        let Some((next, error)) = current.end(outcome) else {
            return current;
        };
        self.apply(transfer, next, error, None);
        next
    }

    /// The one place a status changes; the caller holds `changing`.
    /// `new_reason` is the cancel reason, set together with `cancelling`.
    pub(super) fn apply(
        &self,
        transfer: &Transfer,
        next: Status,
        error: Option<String>,
        new_reason: Option<Option<String>>,
    ) -> bool {
        let from = transfer.status();
        if !from.can_become(next) {
            log::error!(
                "bug: transfer {} of {} cannot go from {} to {}",
                transfer.id,
                transfer.server,
                from.as_str(),
                next.as_str()
            );
            return false;
        }
        let finished_at = next
            .is_terminal()
            .then(|| timefmt::rfc3339(SystemTime::now()));
        let reason = match &new_reason {
            Some(r) => r.clone(),
            None => transfer.cancel_reason(),
        };
        // The audit line, counters and persisted state are written before
        // the new status is visible, so whoever sees it also finds them.
        if next.is_terminal() {
            self.totals
                .add(transfer.direction, next, &transfer.counters);
            crate::histogram::observe(transfer.direction, transfer.started.elapsed());
            self.crash.forget(&transfer.id);
        } else {
            self.persist_with_reason(transfer, next, transfer.phase(), reason.clone());
        }
        let reason_for_audit = if matches!(next, Status::Cancelling | Status::Cancelled) {
            reason.as_deref()
        } else {
            None
        };
        self.audit_line(
            transfer,
            from.as_str(),
            next,
            reason_for_audit,
            error.as_deref(),
        );
        {
            let mut state = transfer.lock();
            state.status = next;
            if next.is_terminal() {
                state.phase = Phase::Settled;
            }
            if error.is_some() {
                state.error = error.clone();
            }
            if finished_at.is_some() {
                state.finished_at = finished_at;
            }
            if let Some(r) = new_reason {
                state.cancel_reason = r;
            }
        }
        match next {
            Status::Failed => log::warn!(
                "transfer {} ({} {}): {} -> failed: {}",
                transfer.id,
                transfer.direction.as_str(),
                transfer.server,
                from.as_str(),
                error.as_deref().unwrap_or("")
            ),
            _ => log::info!(
                "transfer {} ({} {}): {} -> {}",
                transfer.id,
                transfer.direction.as_str(),
                transfer.server,
                from.as_str(),
                next.as_str()
            ),
        }
        if next.is_terminal() {
            let stages = transfer.counters.stage_summary();
            if !stages.is_empty() {
                log::info!("transfer {}: CPU by stage: {stages}", transfer.id);
            }
        }
        let arg = match transfer.direction {
            Direction::Outgoing => Some(next.as_str()),
            // The destination speaks Wings' three words.
            Direction::Incoming => match next {
                Status::Processing => Some("processing"),
                Status::Completed => Some("success"),
                Status::Failed | Status::Cancelled => Some("failure"),
                _ => None,
            },
        };
        if let Some(arg) = arg {
            self.events.publish(
                &transfer.server,
                Event::new("transfer status", arg.to_string()),
            );
        }
        true
    }
}
