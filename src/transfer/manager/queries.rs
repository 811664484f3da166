//! What the API and metrics read from the manager: transfers by server,
//! id or activity, their records, the totals of ended ones, and the token
//! replay guard's answers. Nothing here changes a transfer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Manager, Transfer};
use crate::archive::Stage;
use crate::transfer::record::{Direction, Record, Status};

impl Manager {
    pub fn active(&self, server: &str, direction: Direction) -> Option<Arc<Transfer>> {
        self.list()
            .iter()
            .find(|t| t.server == server && t.direction == direction && !t.status().is_terminal())
            .cloned()
    }

    pub fn all_active(&self) -> Vec<Arc<Transfer>> {
        self.list()
            .iter()
            .filter(|t| !t.status().is_terminal())
            .cloned()
            .collect()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Transfer>> {
        self.list().iter().find(|t| t.id == id).cloned()
    }

    /// The newest transfer of a server, either direction.
    pub fn latest(&self, server: &str) -> Option<Arc<Transfer>> {
        self.list()
            .iter()
            .rev()
            .find(|t| t.server == server)
            .cloned()
    }

    /// Every record, newest first.
    pub fn records(&self) -> Vec<Record> {
        self.list().iter().rev().map(|t| t.record()).collect()
    }

    /// Monotonic count of transfers that ended in each status.
    pub fn totals(&self) -> Vec<((Direction, Status), u64)> {
        self.totals.by_status()
    }

    /// CPU time ended transfers spent in `stage`, since start.
    pub fn stage_cpu(&self, stage: Stage) -> Duration {
        self.totals.stage_cpu(stage)
    }

    /// Archive bytes moved per direction, counting finished transfers and
    /// the progress of active ones.
    pub fn wire_bytes(&self, direction: Direction) -> u64 {
        let active: u64 = self
            .all_active()
            .iter()
            .filter(|t| t.direction == direction)
            .map(|t| t.counters.wire_bytes.load(Ordering::Relaxed))
            .sum();
        self.totals.wire_bytes(direction) + active
    }

    /// True when a finished transfer already used this token.
    pub fn token_used(&self, key: &str) -> bool {
        self.replay.is_used(key)
    }

    /// Remembers a token that served a transfer until it expires.
    pub fn remember_token(&self, key: &str, expires_at: u64) {
        self.replay.remember(key, expires_at)
    }
}
