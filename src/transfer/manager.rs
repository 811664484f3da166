//! The transfer manager: every transfer since start, keyed by id and by
//! server; status changes (audited, evented, persisted) go through here;
//! cancel flags and hooks; the token replay guard; crash-recovery state.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::audit::{AuditLine, AuditLog};
use super::progress::rate_and_eta;
use super::record::{Direction, Progress, Record, Status};
use crate::archive::{Counters, Stage};
use crate::events::{Event, EventBus};
use crate::timefmt;

/// Finished records kept for `GET /api/transfers` beyond the active ones.
const KEEP_FINISHED: usize = 1000;

type Hook = Box<dyn Fn() + Send + Sync>;

struct State {
    status: Status,
    finished_at: Option<String>,
    error: Option<String>,
    cancel_reason: Option<String>,
    /// The pipeline is done with it: terminal, reported, mark released.
    finalized: bool,
}

/// One transfer, shared by its pipeline threads and the API.
pub struct Transfer {
    pub id: String,
    pub server: String,
    pub direction: Direction,
    pub peer: String,
    started_at: String,
    started: Instant,
    /// What readers (the API, events) see. Held only to copy or assign:
    /// never across disk I/O, so a slow disk cannot stall `GET` requests.
    state: Mutex<State>,
    /// Serialises status changes, including their audit and persistence
    /// writes, which happen before the new status becomes visible.
    changing: Mutex<()>,
    cancel: Arc<AtomicBool>,
    pub counters: Counters,
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    /// The source has handed its whole archive to the network.
    archive_sent: AtomicBool,
    cancel_hooks: Mutex<Vec<Hook>>,
    ended: Condvar,
}

impl Transfer {
    pub fn status(&self) -> Status {
        self.lock().status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub fn cancel_reason(&self) -> Option<String> {
        self.lock().cancel_reason.clone()
    }

    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }

    pub fn mark_archive_sent(&self) {
        self.archive_sent.store(true, Ordering::SeqCst);
    }

    pub fn archive_sent(&self) -> bool {
        self.archive_sent.load(Ordering::SeqCst)
    }

    /// Runs `hook` when the transfer is cancelled (at once if it already
    /// was): tears down sockets so blocked reads and writes return.
    pub fn on_cancel(&self, hook: impl Fn() + Send + Sync + 'static) {
        if self.is_cancelled() {
            hook();
            return;
        }
        self.cancel_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
        // Cancelled between the check and the push: run it now.
        if self.is_cancelled() {
            self.run_cancel_hooks();
        }
    }

    fn run_cancel_hooks(&self) {
        let hooks =
            std::mem::take(&mut *self.cancel_hooks.lock().unwrap_or_else(|p| p.into_inner()));
        for hook in hooks {
            hook();
        }
    }

    pub fn progress(&self) -> Progress {
        let bytes_done = self.counters.bytes_done.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed).max(bytes_done);
        let (rate, eta) = rate_and_eta(bytes_done, bytes_total, self.started.elapsed());
        let finished = self.status().is_terminal();
        Progress {
            files_total: self.files_total.load(Ordering::Relaxed),
            files_done: self.counters.files_done.load(Ordering::Relaxed),
            bytes_total,
            bytes_done,
            wire_bytes: self.counters.wire_bytes.load(Ordering::Relaxed),
            rate_bytes_per_sec: if finished { 0 } else { rate },
            eta_seconds: if finished { None } else { eta },
        }
    }

    pub fn record(&self) -> Record {
        let state = self.lock();
        let (status, finished_at, error, cancel_reason) = (
            state.status,
            state.finished_at.clone(),
            state.error.clone(),
            state.cancel_reason.clone(),
        );
        drop(state);
        Record {
            id: self.id.clone(),
            server: self.server.clone(),
            direction: self.direction,
            status,
            peer: self.peer.clone(),
            started_at: self.started_at.clone(),
            finished_at,
            progress: self.progress(),
            error,
            cancel_reason,
        }
    }

    /// Called by the pipeline once nothing is left to do (terminal status
    /// written, panel told, server released).
    pub fn finalize(&self) {
        self.lock().finalized = true;
        self.ended.notify_all();
    }

    /// Waits until the pipeline finalized the transfer; false on timeout.
    pub fn wait_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.finalized {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.ended.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// What is persisted of an active transfer so a restart can finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedTransfer {
    pub id: String,
    pub server: String,
    pub direction: String,
    pub peer: String,
    pub status: String,
}

/// Selectors of `POST /api/transfers/cancel`.
#[derive(Debug, Default, Clone)]
pub struct CancelFilter {
    pub direction: Option<Direction>,
    pub destination: Option<String>,
    pub servers: Option<Vec<String>>,
}

pub struct Manager {
    transfers: Mutex<Vec<Arc<Transfer>>>,
    audit: AuditLog,
    events: Arc<EventBus>,
    state_dir: PathBuf,
    used_tokens: Mutex<HashMap<String, u64>>,
    totals: Mutex<HashMap<(Direction, Status), u64>>,
    wire_totals: [AtomicU64; 2],
    /// CPU nanoseconds of ended transfers, by pipeline stage.
    stage_totals: [AtomicU64; Stage::ALL.len()],
}

#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyActive;

impl Manager {
    /// `state_dir` is `<root>/ferry`; audit log and persisted transfers live there.
    pub fn new(state_dir: &Path, events: Arc<EventBus>) -> std::io::Result<Manager> {
        fs::create_dir_all(state_dir.join("transfers"))?;
        let used_tokens = fs::read(state_dir.join("used-tokens.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Manager {
            transfers: Mutex::new(Vec::new()),
            audit: AuditLog::open(&state_dir.join("audit.log")),
            events,
            state_dir: state_dir.to_path_buf(),
            used_tokens: Mutex::new(used_tokens),
            totals: Mutex::new(HashMap::new()),
            wire_totals: [AtomicU64::new(0), AtomicU64::new(0)],
            stage_totals: Default::default(),
        })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Transfer>>> {
        self.transfers.lock().unwrap_or_else(|p| p.into_inner())
    }

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
        let transfer = Arc::new(Transfer {
            id: new_uuid(),
            server: server.to_string(),
            direction,
            peer: peer.to_string(),
            started_at: timefmt::rfc3339(SystemTime::now()),
            started: Instant::now(),
            state: Mutex::new(State {
                status: Status::Pending,
                finished_at: None,
                error: None,
                cancel_reason: None,
                finalized: false,
            }),
            changing: Mutex::new(()),
            cancel: Arc::new(AtomicBool::new(false)),
            counters: Counters::default(),
            files_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            archive_sent: AtomicBool::new(false),
            cancel_hooks: Mutex::new(Vec::new()),
            ended: Condvar::new(),
        });
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
        self.persist(&transfer, Status::Pending);
        self.audit_line(&transfer, "", Status::Pending, None, None);
        Ok(transfer)
    }

    /// Moves a transfer to `next`. Returns false (and logs a bug) for a
    /// transition the status machine does not have.
    pub fn transition(&self, transfer: &Transfer, next: Status, error: Option<String>) -> bool {
        let _changing = transfer.lock_changes();
        self.apply(transfer, next, error, None)
    }

    /// Ends a transfer: `completed` on success; on error `cancelled` if it
    /// was being cancelled, else `failed`. Returns the terminal status.
    pub fn finish(&self, transfer: &Transfer, outcome: Result<(), String>) -> Status {
        let _changing = transfer.lock_changes();
        let current = transfer.status();
        let (next, error) = match (current, outcome) {
            (s, _) if s.is_terminal() => return s,
            (Status::Cancelling, Ok(())) | (Status::Cancelling, Err(_)) => {
                (Status::Cancelled, None)
            }
            (Status::Pending, Ok(())) => {
                // Nothing ran: an empty success is still a failure to transfer.
                (
                    Status::Failed,
                    Some("the transfer ended before it started".to_string()),
                )
            }
            (_, Ok(())) => (Status::Completed, None),
            (_, Err(e)) => (Status::Failed, Some(e)),
        };
        self.apply(transfer, next, error, None);
        next
    }

    /// The one place a status changes; the caller holds `changing`.
    /// `new_reason` is the cancel reason, set together with `cancelling`.
    fn apply(
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
            *self
                .totals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((transfer.direction, next))
                .or_insert(0) += 1;
            crate::histogram::observe(transfer.direction, transfer.started.elapsed());
            self.wire_totals[transfer.direction as usize].fetch_add(
                transfer.counters.wire_bytes.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            for stage in Stage::ALL {
                let ns = transfer.counters.stage_cpu(stage).as_nanos();
                self.stage_totals[stage as usize]
                    .fetch_add(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            let _ = fs::remove_file(self.record_file(&transfer.id));
        } else {
            self.persist(transfer, next);
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

    /// Cancels an active transfer: `cancelling`, the flag, the hooks.
    /// False when it is not cancellable (already cancelling or finished).
    pub fn cancel(&self, transfer: &Transfer, reason: Option<String>) -> bool {
        let changing = transfer.lock_changes();
        if !transfer.status().is_cancellable() {
            return false;
        }
        if !self.apply(transfer, Status::Cancelling, None, Some(reason)) {
            return false;
        }
        // Hooks may end the transfer from this thread: not under the lock.
        drop(changing);
        transfer.cancel.store(true, Ordering::SeqCst);
        transfer.run_cancel_hooks();
        true
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
            .filter(|t| self.cancel(t, Some(reason.to_string())))
            .map(|t| t.id.clone())
            .collect()
    }

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
        let mut v: Vec<_> = self
            .totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort_by_key(|((d, s), _)| (d.as_str(), s.as_str()));
        v
    }

    /// Archive bytes moved per direction, counting finished transfers and
    /// the progress of active ones.
    /// CPU time ended transfers spent in `stage`, since start.
    pub fn stage_cpu(&self, stage: Stage) -> Duration {
        Duration::from_nanos(self.stage_totals[stage as usize].load(Ordering::Relaxed))
    }

    pub fn wire_bytes(&self, direction: Direction) -> u64 {
        let finished = self.wire_totals[direction as usize].load(Ordering::Relaxed);
        let active: u64 = self
            .all_active()
            .iter()
            .filter(|t| t.direction == direction)
            .map(|t| t.counters.wire_bytes.load(Ordering::Relaxed))
            .sum();
        finished + active
    }

    /// True when a finished transfer already used this token.
    pub fn token_used(&self, key: &str) -> bool {
        self.used_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Remembers a token that served a transfer until it expires (plus leeway).
    pub fn remember_token(&self, key: &str, expires_at: u64) {
        let now = timefmt::now_unix();
        let mut used = self.used_tokens.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, exp| *exp + 60 >= now);
        used.insert(key.to_string(), expires_at);
        if let Ok(bytes) = serde_json::to_vec(&*used) {
            let path = self.state_dir.join("used-tokens.json");
            let tmp = self.state_dir.join("used-tokens.json.tmp");
            if fs::write(&tmp, bytes)
                .and_then(|_| fs::rename(&tmp, &path))
                .is_err()
            {
                log::warn!("cannot persist the used-token list in {}", path.display());
            }
        }
    }

    /// Transfers a previous daemon left active (read once at start-up).
    pub fn take_orphans(&self) -> Vec<PersistedTransfer> {
        let dir = self.state_dir.join("transfers");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PersistedTransfer>(&b).ok())
            {
                Some(p) => out.push(p),
                None => log::warn!("recovery: ignoring unreadable {}", path.display()),
            }
            let _ = fs::remove_file(&path);
        }
        out
    }

    /// Writes a recovered orphan's end to the audit log.
    pub fn audit_orphan(&self, orphan: &PersistedTransfer, error: &str) {
        self.audit.write(&AuditLine {
            time: timefmt::rfc3339(SystemTime::now()),
            transfer: &orphan.id,
            server: &orphan.server,
            direction: &orphan.direction,
            from: &orphan.status,
            to: Status::Failed.as_str(),
            reason: None,
            error: Some(error),
        });
    }

    fn record_file(&self, id: &str) -> PathBuf {
        self.state_dir.join("transfers").join(format!("{id}.json"))
    }

    fn persist(&self, transfer: &Transfer, status: Status) {
        let p = PersistedTransfer {
            id: transfer.id.clone(),
            server: transfer.server.clone(),
            direction: transfer.direction.as_str().to_string(),
            peer: transfer.peer.clone(),
            status: status.as_str().to_string(),
        };
        let path = self.record_file(&transfer.id);
        if let Ok(bytes) = serde_json::to_vec(&p) {
            if let Err(e) = fs::write(&path, bytes) {
                log::warn!("cannot persist transfer state {}: {e}", path.display());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> (tempfile::TempDir, Manager, Arc<EventBus>) {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(EventBus::default());
        let m = Manager::new(dir.path(), Arc::clone(&events)).unwrap();
        (dir, m, events)
    }

    #[test]
    fn one_active_transfer_per_server_and_direction() {
        let (_d, m, _) = manager();
        let t = m.begin("s", Direction::Outgoing, "http://d").unwrap();
        assert_eq!(
            m.begin("s", Direction::Outgoing, "http://d").err(),
            Some(AlreadyActive)
        );
        assert!(m.begin("s", Direction::Incoming, "src").is_ok());
        assert!(m.transition(&t, Status::Processing, None));
        assert!(m.transition(&t, Status::Failed, Some("x".into())));
        assert!(m.begin("s", Direction::Outgoing, "http://d").is_ok());
    }

    #[test]
    fn illegal_transitions_are_refused_and_terminal_is_final() {
        let (_d, m, _) = manager();
        let t = m.begin("s", Direction::Outgoing, "p").unwrap();
        assert!(!m.transition(&t, Status::Completed, None));
        assert!(!m.transition(&t, Status::Cancelled, None));
        assert!(m.transition(&t, Status::Processing, None));
        assert!(m.transition(&t, Status::Completed, None));
        assert!(!m.transition(&t, Status::Failed, None));
        assert_eq!(t.status(), Status::Completed);
        assert!(t.record().finished_at.is_some());
        assert_eq!(
            m.totals(),
            vec![((Direction::Outgoing, Status::Completed), 1)]
        );
    }

    #[test]
    fn cancel_runs_hooks_once_and_only_for_active_transfers() {
        let (_d, m, events) = manager();
        let sub = events.subscribe("s", 16);
        let t = m.begin("s", Direction::Outgoing, "p").unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&hits);
        t.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert!(m.cancel(&t, Some("maintenance".into())));
        assert!(t.is_cancelled());
        assert!(!m.cancel(&t, None), "already cancelling");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A hook registered after the cancel runs at once.
        let h = Arc::clone(&hits);
        t.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(m.finish(&t, Err("stream closed".into())), Status::Cancelled);
        assert_eq!(m.finish(&t, Ok(())), Status::Cancelled, "terminal is final");
        assert_eq!(t.record().cancel_reason.as_deref(), Some("maintenance"));
        let statuses: Vec<String> = sub.receiver.try_iter().map(|e| e.args[0].clone()).collect();
        assert_eq!(statuses, vec!["cancelling", "cancelled"]);
    }

    #[test]
    fn bulk_cancel_selectors() {
        let (_d, m, _) = manager();
        let a = m
            .begin("a", Direction::Outgoing, "http://node2:8080/api/transfers")
            .unwrap();
        let b = m
            .begin("b", Direction::Outgoing, "http://node3:8080/api/transfers")
            .unwrap();
        let c = m.begin("c", Direction::Incoming, "10.0.0.1").unwrap();
        let f = CancelFilter {
            destination: Some("http://node2".into()),
            ..Default::default()
        };
        assert_eq!(m.cancel_matching(&f, "r"), vec![a.id.clone()]);
        let f = CancelFilter {
            direction: Some(Direction::Incoming),
            ..Default::default()
        };
        assert_eq!(m.cancel_matching(&f, "r"), vec![c.id.clone()]);
        let f = CancelFilter {
            servers: Some(vec!["b".into(), "zzz".into()]),
            ..Default::default()
        };
        assert_eq!(m.cancel_matching(&f, "r"), vec![b.id.clone()]);
        assert!(m.cancel_matching(&CancelFilter::default(), "r").is_empty());
    }

    #[test]
    fn audit_log_has_a_line_per_change() {
        let (dir, m, _) = manager();
        let t = m.begin("s", Direction::Incoming, "p").unwrap();
        m.transition(&t, Status::Processing, None);
        m.transition(&t, Status::Failed, Some("checksums don't match".into()));
        let text = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["from"], "processing");
        assert_eq!(lines[2]["to"], "failed");
        assert_eq!(lines[2]["error"], "checksums don't match");
        assert_eq!(lines[2]["transfer"], t.id.as_str());
    }

    /// A status change whose disk write hangs (here: the state file is a
    /// FIFO nobody reads) must not stall readers of the transfer list.
    #[test]
    fn readers_never_wait_for_a_status_change_on_a_stuck_disk() {
        let (dir, m, _) = manager();
        let m = Arc::new(m);
        let t = m.begin("s", Direction::Outgoing, "p").unwrap();
        let state_file = dir.path().join("transfers").join(format!("{}.json", t.id));
        fs::remove_file(&state_file).unwrap();
        let c_path = std::ffi::CString::new(state_file.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let changer = {
            let (m, t) = (Arc::clone(&m), Arc::clone(&t));
            std::thread::spawn(move || m.transition(&t, Status::Processing, None))
        };
        // The writer is now blocked opening the FIFO (or about to be).
        std::thread::sleep(Duration::from_millis(100));
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let (m, t) = (Arc::clone(&m), Arc::clone(&t));
            std::thread::spawn(move || {
                let _ = tx.send((m.records()[0].status, t.record().status));
            });
        }
        let seen = rx.recv_timeout(Duration::from_secs(2));
        assert!(!changer.is_finished());
        // Unblock the writer (also on failure, so the test ends): read what it writes.
        let written = fs::read(&state_file).unwrap();
        let seen = seen.expect("records() waited for the stuck state write");
        assert_eq!(
            seen,
            (Status::Pending, Status::Pending),
            "not visible before it is persisted"
        );
        assert!(String::from_utf8_lossy(&written).contains("processing"));
        assert!(changer.join().unwrap());
        assert_eq!(t.status(), Status::Processing);
    }

    #[test]
    fn active_transfers_survive_as_orphans_and_finished_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(EventBus::default());
        {
            let m = Manager::new(dir.path(), Arc::clone(&events)).unwrap();
            let a = m.begin("a", Direction::Outgoing, "p").unwrap();
            m.transition(&a, Status::Processing, None);
            let b = m.begin("b", Direction::Incoming, "p").unwrap();
            m.transition(&b, Status::Failed, None);
        }
        let m = Manager::new(dir.path(), events).unwrap();
        let orphans = m.take_orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            (orphans[0].server.as_str(), orphans[0].status.as_str()),
            ("a", "processing")
        );
        assert!(m.take_orphans().is_empty());
    }

    #[test]
    fn used_tokens_persist() {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(EventBus::default());
        let far = timefmt::now_unix() + 600;
        Manager::new(dir.path(), Arc::clone(&events))
            .unwrap()
            .remember_token("k1", far);
        let m = Manager::new(dir.path(), events).unwrap();
        assert!(m.token_used("k1"));
        assert!(!m.token_used("k2"));
    }

    #[test]
    fn uuids_are_v4_shaped() {
        let u = new_uuid();
        assert!(crate::server::is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uuid(), u);
    }
}
