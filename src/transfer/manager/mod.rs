//! The transfer manager: every transfer since start, keyed by id and by
//! server; status and finish-phase changes (audited, evented, persisted)
//! go through here; cancel flags and hooks. What a cancel may do is the
//! finish machine's call (`finish::cancel`); which status an end gives is
//! the record's (`Status::end`). The replay guard, the crash state and the
//! metric totals are their own modules, held here.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::audit::{AuditLine, AuditLog};
use super::finish::{self, CancelAnswer, Phase};
use super::persist::{CrashState, Saved};
use super::progress::rate_and_eta;
use super::record::{Direction, Progress, Record, Status};
use super::replay::ReplayGuard;
use super::totals::Totals;
use crate::archive::{Counters, Stage};
use crate::events::{Event, EventBus};
use crate::server::ServerConfig;
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
    /// Where the finish stands (`finish` module).
    phase: Phase,
    /// The destination's configuration of the server, persisted from
    /// `installing` on so recovery can register it again.
    config: Option<ServerConfig>,
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
    cancel_hooks: Mutex<Vec<Hook>>,
    ended: Condvar,
}

impl Transfer {
    fn new(
        id: String,
        server: &str,
        direction: Direction,
        peer: &str,
        status: Status,
        phase: Phase,
    ) -> Transfer {
        Transfer {
            id,
            server: server.to_string(),
            direction,
            peer: peer.to_string(),
            started_at: timefmt::rfc3339(SystemTime::now()),
            started: Instant::now(),
            state: Mutex::new(State {
                status,
                finished_at: None,
                error: None,
                cancel_reason: None,
                finalized: false,
                phase,
                config: None,
            }),
            changing: Mutex::new(()),
            cancel: Arc::new(AtomicBool::new(false)),
            counters: Counters::default(),
            files_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            cancel_hooks: Mutex::new(Vec::new()),
            ended: Condvar::new(),
        }
    }

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

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }

    /// The source has handed its whole archive to the network.
    pub fn archive_sent(&self) -> bool {
        matches!(
            self.phase(),
            Phase::SentLastByte | Phase::ReportingFailure | Phase::Settled
        )
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
    crash: CrashState,
    pub replay: ReplayGuard,
    totals: Totals,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyActive;

/// Why a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    /// None active, or already cancelling.
    NotActive,
    /// The finish machine says no (`finish::FINALIZING`).
    Finalizing,
}

/// Why a finish step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseRefused {
    /// The transfer was cancelled before the step that cannot be undone.
    Cancelled,
    /// Not a step of the machine (a bug, logged).
    NoSuchStep,
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
        }
        self.list().push(Arc::clone(&transfer));
        self.persist(&transfer, Status::Processing, saved.phase);
        transfer
    }

    /// Transfers a previous daemon left in flight (their state files stay
    /// until each is settled with `forget_orphan` or ends as a resumed
    /// transfer).
    pub fn orphans(&self) -> Vec<Saved> {
        self.crash.orphans()
    }

    pub fn forget_orphan(&self, id: &str) {
        self.crash.forget(id);
    }

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
        super::finish::failpoint::reached(next);
        Ok(())
    }

    /// Keeps the destination's configuration with the transfer's state
    /// (persisted with the next phase change).
    pub fn set_config(&self, transfer: &Transfer, config: &ServerConfig) {
        transfer.lock().config = Some(config.clone());
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
        // Hooks may end the transfer from this thread: not under the lock.
        drop(changing);
        transfer.cancel.store(true, Ordering::SeqCst);
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
        let saved = Saved {
            id: transfer.id.clone(),
            server: transfer.server.clone(),
            direction: transfer.direction,
            peer: transfer.peer.clone(),
            status,
            phase,
            config: transfer.lock().config.clone(),
            cancel_reason,
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
        assert_eq!(m.cancel(&t, Some("maintenance".into())), Ok(()));
        assert!(t.is_cancelled());
        assert_eq!(
            m.cancel(&t, None),
            Err(CancelRefused::NotActive),
            "already cancelling"
        );
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
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
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

    /// A status change whose disk write hangs (here: the state file's
    /// temporary is a FIFO nobody reads) must not stall readers of the
    /// transfer list.
    #[test]
    fn readers_never_wait_for_a_status_change_on_a_stuck_disk() {
        let (dir, m, _) = manager();
        let m = Arc::new(m);
        let t = m.begin("s", Direction::Outgoing, "p").unwrap();
        let state_file = dir
            .path()
            .join("transfers")
            .join(format!(".{}.json.tmp", t.id));
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
        let written = std::fs::read(&state_file).unwrap();
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
        let orphans = m.orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            (orphans[0].server.as_str(), orphans[0].status),
            ("a", Status::Processing)
        );
        m.forget_orphan(&orphans[0].id);
        assert!(m.orphans().is_empty());
    }

    #[test]
    fn a_cancel_and_the_report_step_exclude_each_other() {
        let (_d, m, _) = manager();
        // The report step first: the cancel is refused.
        let t = m.begin("s", Direction::Incoming, "p").unwrap();
        m.transition(&t, Status::Processing, None);
        for phase in [Phase::Verifying, Phase::Installing, Phase::Reporting] {
            assert_eq!(m.enter_phase(&t, phase), Ok(()));
        }
        assert_eq!(m.cancel(&t, None), Err(CancelRefused::Finalizing));
        assert_eq!(m.orphans()[0].phase, Phase::Reporting, "persisted first");
        // The cancel first: the report step is refused.
        let u = m.begin("u", Direction::Incoming, "p").unwrap();
        m.transition(&u, Status::Processing, None);
        m.enter_phase(&u, Phase::Verifying).unwrap();
        m.enter_phase(&u, Phase::Installing).unwrap();
        assert_eq!(m.cancel(&u, None), Ok(()));
        assert_eq!(
            m.enter_phase(&u, Phase::Reporting),
            Err(PhaseRefused::Cancelled)
        );
        assert_eq!(m.finish(&u, Err("cancelled".into())), Status::Cancelled);
    }

    #[test]
    fn a_resumed_transfer_keeps_its_id_and_phase() {
        let (_d, m, _) = manager();
        let t = m.begin("s", Direction::Incoming, "p").unwrap();
        m.transition(&t, Status::Processing, None);
        m.set_config(&t, &ServerConfig::minimal("s"));
        m.enter_phase(&t, Phase::Verifying).unwrap();
        m.enter_phase(&t, Phase::Installing).unwrap();
        m.enter_phase(&t, Phase::Reporting).unwrap();
        let saved = m.orphans().pop().unwrap();
        assert_eq!(saved.config, Some(ServerConfig::minimal("s")));
        let r = m.resume(&saved);
        assert_eq!(
            (r.id.as_str(), r.phase()),
            (t.id.as_str(), Phase::Reporting)
        );
        assert_eq!(m.cancel(&r, None), Err(CancelRefused::Finalizing));
        assert_eq!(m.finish(&r, Ok(())), Status::Completed);
        assert!(m.orphans().is_empty(), "settled: state removed");
    }

    #[test]
    fn uuids_are_v4_shaped() {
        let u = new_uuid();
        assert!(crate::server::is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uuid(), u);
    }
}
