//! Metric totals of ended transfers (SPEC §7): how many ended in each
//! status, the archive bytes they moved, the CPU time of their stages.
//! Monotonic since start; the manager adds a transfer once, when it
//! reaches its terminal status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::record::{Direction, Status};
use crate::archive::{Counters, Stage};

#[derive(Default)]
pub struct Totals {
    by_status: Mutex<HashMap<(Direction, Status), u64>>,
    wire: [AtomicU64; 2],
    /// CPU nanoseconds of ended transfers, by pipeline stage.
    stages: [AtomicU64; Stage::ALL.len()],
}

impl Totals {
    /// Counts one transfer that ended in `status`.
    pub fn add(&self, direction: Direction, status: Status, counters: &Counters) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((direction, status))
            .or_insert(0) += 1;
        self.wire[direction as usize].fetch_add(
            counters.wire_bytes.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        for stage in Stage::ALL {
            let ns = counters.stage_cpu(stage).as_nanos();
            self.stages[stage as usize]
                .fetch_add(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Transfers ended per (direction, status), in a stable order.
    pub fn by_status(&self) -> Vec<((Direction, Status), u64)> {
        let mut v: Vec<_> = self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort_by_key(|((d, s), _)| (d.as_str(), s.as_str()));
        v
    }

    /// Archive bytes moved by ended transfers in `direction`.
    pub fn wire_bytes(&self, direction: Direction) -> u64 {
        self.wire[direction as usize].load(Ordering::Relaxed)
    }

    /// CPU time ended transfers spent in `stage`.
    pub fn stage_cpu(&self, stage: Stage) -> Duration {
        Duration::from_nanos(self.stages[stage as usize].load(Ordering::Relaxed))
    }
}
