//! Cancelling: one transfer if the finish machine allows it
//! (`finish::cancel`), or every active one matching the selectors of
//! `POST /api/transfers/cancel`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Manager, Transfer};
use crate::transfer::finish::{self, CancelAnswer};
use crate::transfer::record::{Direction, Status};

/// Selectors of `POST /api/transfers/cancel`.
#[derive(Debug, Default, Clone)]
pub struct CancelFilter {
    pub direction: Option<Direction>,
    pub destination: Option<String>,
    pub servers: Option<Vec<String>>,
}

/// Why a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    /// None active, or already cancelling.
    NotActive,
    /// The finish machine says no (`finish::FINALIZING`).
    Finalizing,
}

impl Manager {
    /// Cancels an active transfer if the finish machine allows it:
    /// `cancelling`, the flag, the hooks.
    pub fn cancel(&self, transfer: &Transfer, reason: Option<String>) -> Result<(), CancelRefused> {
        let changing = transfer.lock_changes();
        if !transfer.status().is_cancellable() {
            return Err(CancelRefused::NotActive);
        }
        if finish::cancel(transfer.direction, transfer.phase()) == CancelAnswer::Finalizing {
            return Err(CancelRefused::Finalizing);
        }
        if !self.apply(transfer, Status::Cancelling, None, Some(reason)) {
            return Err(CancelRefused::NotActive);
        }
        // The flag is set under the lock the finish takes to enter
        // `reporting`: once this cancel is accepted, no success report
        // can start (a flag set after the lock let one slip through).
        transfer.cancel.store(true, Ordering::SeqCst);
        // Hooks may end the transfer from this thread: not under the lock.
        drop(changing);
        finish::failpoint::point("cancel-accepted");
        transfer.run_cancel_hooks();
        Ok(())
    }

    /// Cancels every active transfer matching all given selectors.
    pub fn cancel_matching(&self, filter: &CancelFilter, reason: &str) -> Vec<String> {
        let candidates: Vec<Arc<Transfer>> = self
            .list()
            .iter()
            .filter(|t| t.status().is_cancellable())
            .filter(|t| filter.direction.is_none_or(|d| t.direction == d))
            .filter(|t| {
                filter.destination.as_deref().is_none_or(|prefix| {
                    t.direction == Direction::Outgoing && t.peer.starts_with(prefix)
                })
            })
            .filter(|t| {
                filter
                    .servers
                    .as_ref()
                    .is_none_or(|servers| servers.iter().any(|s| *s == t.server))
            })
            .cloned()
            .collect();
        candidates
            .into_iter()
            .filter(|t| self.cancel(t, Some(reason.to_string())).is_ok())
            .map(|t| t.id.clone())
            .collect()
    }
}
