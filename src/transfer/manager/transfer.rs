//! One transfer as its pipeline threads and the API share it: the status
//! and finish phase readers see, the cancel flag and hooks, progress, and
//! the wait for the pipeline's end. Changes to the status go through the
//! `Manager` (`status.rs`), which holds `changing` while it writes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::archive::Counters;
use crate::server::ServerConfig;
use crate::timefmt;
use crate::transfer::finish::Phase;
use crate::transfer::progress::rate_and_eta;
use crate::transfer::record::{Direction, Progress, Record, Status};

type Hook = Box<dyn Fn() + Send + Sync>;

pub(super) struct State {
    pub(super) status: Status,
    pub(super) finished_at: Option<String>,
    pub(super) error: Option<String>,
    pub(super) cancel_reason: Option<String>,
    /// The pipeline is done with it: terminal, reported, mark released.
    pub(super) finalized: bool,
    /// Where the finish stands (`finish` module).
    pub(super) phase: Phase,
    /// The destination's configuration of the server, persisted from
    /// `installing` on so recovery can register it again.
    pub(super) config: Option<ServerConfig>,
    /// Source: its segmented session, persisted so a restarted source
    /// can resume it (`Manager::set_outgoing_session`).
    pub(super) session: Option<crate::transfer::persist::OutgoingSession>,
}

/// One transfer, shared by its pipeline threads and the API.
pub struct Transfer {
    pub id: String,
    pub server: String,
    pub direction: Direction,
    pub peer: String,
    started_at: String,
    pub(super) started: Instant,
    /// What readers (the API, events) see. Held only to copy or assign:
    /// never across disk I/O, so a slow disk cannot stall `GET` requests.
    state: Mutex<State>,
    /// Serialises status changes, including their audit and persistence
    /// writes, which happen before the new status becomes visible.
    changing: Mutex<()>,
    pub(super) cancel: Arc<AtomicBool>,
    pub counters: Counters,
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    cancel_hooks: Mutex<Vec<Hook>>,
    ended: Condvar,
    /// Pre-copy's phase (`CopyPhase as u8`), shown in progress.
    copy_phase: AtomicU8,
}

/// Where a pre-copy transfer stands (SPEC §10), shown in `transfer progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPhase {
    None = 0,
    Precopy = 1,
    Final = 2,
    Verify = 3,
}

impl CopyPhase {
    pub fn name(self) -> Option<&'static str> {
        match self {
            CopyPhase::None => None,
            CopyPhase::Precopy => Some("precopy"),
            CopyPhase::Final => Some("final"),
            CopyPhase::Verify => Some("verify"),
        }
    }

    fn from_u8(v: u8) -> CopyPhase {
        match v {
            1 => CopyPhase::Precopy,
            2 => CopyPhase::Final,
            3 => CopyPhase::Verify,
            _ => CopyPhase::None,
        }
    }
}

impl Transfer {
    pub(super) fn new(
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
                session: None,
            }),
            changing: Mutex::new(()),
            copy_phase: AtomicU8::new(0),
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
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

    pub(super) fn run_cancel_hooks(&self) {
        let hooks =
            std::mem::take(&mut *self.cancel_hooks.lock().unwrap_or_else(|p| p.into_inner()));
        for hook in hooks {
            hook();
        }
    }

    /// Enters a pre-copy phase (shown in progress from now on).
    pub fn set_copy_phase(&self, phase: CopyPhase) {
        self.copy_phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn copy_phase(&self) -> CopyPhase {
        CopyPhase::from_u8(self.copy_phase.load(Ordering::Relaxed))
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
            phase: self.copy_phase().name(),
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
