//! Websocket sessions that have not authenticated yet (SPEC §6): bounded
//! per peer address and in total, apart from authenticated sessions, so
//! unauthenticated upgrades can never crowd out a client with a token.
//!
//! When a bound is reached the *oldest* pending session of that peer (or
//! of all) is closed to make room: a new client always gets its chance to
//! authenticate, and an attacker has to out-race the client's own auth
//! message to keep it out. [`Pending`] is the policy (pure, unit-tested);
//! [`PendingGuard`] applies it to live connections.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::http::Stream;

/// Unauthenticated sessions per peer address.
pub const PER_PEER: usize = 16;
/// Unauthenticated sessions in all (two threads each).
pub const TOTAL: usize = 128;

struct Entry {
    id: u64,
    peer: IpAddr,
    since: Instant,
}

/// The pending sessions in arrival order.
pub struct Pending {
    per_peer: usize,
    total: usize,
    entries: Vec<Entry>,
}

impl Pending {
    pub const fn new(per_peer: usize, total: usize) -> Pending {
        Pending {
            per_peer,
            total,
            entries: Vec::new(),
        }
    }

    /// Admits session `id` from `peer`; returns the ids to close so both
    /// bounds hold (oldest of the same peer first, then oldest overall).
    pub fn admit(&mut self, id: u64, peer: IpAddr, now: Instant) -> Vec<u64> {
        let mut evicted = Vec::new();
        let per_peer = self.per_peer.max(1);
        while self.entries.iter().filter(|e| e.peer == peer).count() >= per_peer {
            let Some(i) = self.oldest(|e| e.peer == peer) else {
                break;
            };
            evicted.push(self.entries.remove(i).id);
        }
        while self.entries.len() >= self.total.max(1) {
            let Some(i) = self.oldest(|_| true) else {
                break;
            };
            evicted.push(self.entries.remove(i).id);
        }
        self.entries.push(Entry {
            id,
            peer,
            since: now,
        });
        evicted
    }

    /// Forgets `id` (authenticated or closed).
    pub fn remove(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn oldest(&self, pick: impl Fn(&Entry) -> bool) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| pick(e))
            .min_by_key(|(_, e)| (e.since, e.id))
            .map(|(i, _)| i)
    }
}

struct Table {
    policy: Pending,
    closers: BTreeMap<u64, Box<dyn Stream>>,
    next_id: u64,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    policy: Pending::new(PER_PEER, TOTAL),
    closers: BTreeMap::new(),
    next_id: 0,
});

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A live pending session's place; dropping it (or [`authenticated`])
/// gives the place back.
///
/// [`authenticated`]: PendingGuard::authenticated
pub struct PendingGuard {
    id: Option<u64>,
}

impl PendingGuard {
    /// Registers a session from `peer`; `closer` shuts its socket when the
    /// session is evicted to make room.
    pub fn enter(peer: IpAddr, closer: Box<dyn Stream>) -> PendingGuard {
        let mut t = table();
        t.next_id += 1;
        let id = t.next_id;
        let evicted = t.policy.admit(id, peer, Instant::now());
        t.closers.insert(id, closer);
        let closers: Vec<_> = evicted.iter().filter_map(|e| t.closers.remove(e)).collect();
        drop(t);
        if !closers.is_empty() {
            log::info!(
                "websocket: closing {} unauthenticated session(s) to make room (from {peer} or oldest)",
                closers.len()
            );
        }
        for c in closers {
            let _ = c.shutdown();
        }
        PendingGuard { id: Some(id) }
    }

    /// The session authenticated: it no longer counts as pending.
    pub fn authenticated(&mut self) {
        if let Some(id) = self.id.take() {
            let mut t = table();
            t.policy.remove(id);
            t.closers.remove(&id);
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// Pending sessions open now (for tests and metrics).
pub fn count() -> usize {
    table().policy.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_peer_over_its_bound_loses_its_oldest() {
        let mut p = Pending::new(2, 10);
        let t = Instant::now();
        assert!(p.admit(1, ip(1), t).is_empty());
        assert!(p.admit(2, ip(1), t + Duration::from_millis(1)).is_empty());
        assert!(p.admit(3, ip(2), t).is_empty());
        assert_eq!(p.admit(4, ip(1), t + Duration::from_millis(2)), vec![1]);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn the_total_bound_closes_the_oldest_of_anyone() {
        let mut p = Pending::new(5, 3);
        let t = Instant::now();
        for (id, last) in [(1, 1), (2, 2), (3, 3)] {
            assert!(p
                .admit(id, ip(last), t + Duration::from_millis(id))
                .is_empty());
        }
        assert_eq!(p.admit(4, ip(9), t + Duration::from_millis(9)), vec![1]);
        p.remove(2);
        assert!(p.admit(5, ip(9), t + Duration::from_millis(10)).is_empty());
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_newcomer_is_always_admitted() {
        let mut p = Pending::new(1, 1);
        let t = Instant::now();
        for id in 0..100 {
            p.admit(id, ip(1), t);
            assert_eq!(p.len(), 1);
        }
        assert!(!p.is_empty());
    }
}
