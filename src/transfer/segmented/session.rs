//! One destination session (docs/transport.md): the thin driver that ties
//! the pure `Ledger`, the durable `Spool`, the `Follower` and the shared
//! finish together. It owns the session's directory
//! (`<data>/.ferry-sessions/<sid>/`: `spool`, `acks`, `session.json`), the
//! extractor thread that reads the spool through the classic receiver
//! (`destination::receive_body`) and hands the verified tree to
//! `finish::install_and_report`, and the session's end (directory removed,
//! JWT into the replay guard).
//!
//! Locks: `work` (spool + ledger) is held for one segment's I/O and never
//! by a reader of the session's state; `view` is what status answers,
//! updated under `work`, never held across I/O.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::follow::{Follower, Held};
use super::ledger::{Ledger, Refusal, State};
use super::segment::SegmentHeader;
use super::spool::{Spool, SpoolError};
use crate::http::reply::ApiError;
use crate::http::ConnectionHandle;
use crate::node::Node;
use crate::transfer::destination::{self, ABORTED, NO_SPACE};
use crate::transfer::finish;
use crate::transfer::source::spawn_monitor;
use crate::transfer::Transfer;

/// Sessions live beside the staging area, on the same filesystem as
/// `system.data` (so the disk checks count them), but not inside
/// `.ferry-staging`: start-up recovery empties that, and a session must
/// survive a restart.
pub const SESSIONS_DIR: &str = ".ferry-sessions";
pub const RECORD: &str = "session.json";

/// How often, at most, a receiving session's `last_activity` is saved in
/// its record (an atomic write: the window is minutes, not seconds).
pub const ACTIVITY_SAVE_EVERY: u64 = 60;

/// SPEC §4's row for a body that is not what the source sent.
const CHECKSUMS: &str = "checksums don't match";

/// Bytes after the multipart body's close delimiter a source may send
/// (an epilogue); more is refused.
const MAX_EPILOGUE: u64 = 64 * 1024;

/// What `session.json` keeps: enough to take the session up again after a
/// restart. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub secret_sha256: String,
    pub replay_key: String,
    pub replay_expires: u64,
    pub server: String,
    pub transfer_id: String,
    pub peer: String,
    pub boundary: String,
    pub bytes_total: u64,
    pub files_total: u64,
    #[serde(default)]
    pub disk_total: Option<u64>,
    pub start_on_completion: bool,
    /// The most the spool may hold (`spool::cap`), when the server has a
    /// disk limit.
    #[serde(default)]
    pub spool_cap: Option<u64>,
    /// The body carries pre-copy's parts (accepted only then).
    #[serde(default)]
    pub precopy: bool,
    pub created: u64,
    /// The last segment acknowledged (or the open), saved at most once a
    /// minute (`ACTIVITY_SAVE_EVERY`): a restarted node keeps what is left
    /// of the window from it. 0 in a record of an older node: the window
    /// starts again at the take-up.
    #[serde(default)]
    pub last_activity: u64,
    /// `receiving` or `finishing`; terminal sessions have no directory.
    pub state: String,
}

/// What status answers, without waiting on a segment's I/O.
#[derive(Debug, Clone)]
pub struct View {
    pub state: State,
    pub held: u64,
    /// The HTTP status and message of a failed or cancelled transfer, as a
    /// classic POST would have answered them.
    pub error: Option<(u16, String)>,
}

struct Work {
    spool: Option<Spool>,
    ledger: Ledger,
}

pub struct Session {
    pub sid: String,
    pub transfer: Arc<Transfer>,
    record: Mutex<SessionRecord>,
    dir: PathBuf,
    work: Mutex<Work>,
    view: Mutex<View>,
    /// Notified when `view`'s state changes (a status request that waits).
    view_changed: Condvar,
    held: Arc<Held>,
    /// The source's `finish` claim: body length and the digest of the ack
    /// log it expects (`acks::digest`).
    claim: Mutex<Option<(u64, [u8; 32])>>,
    /// When the claim came (the session's timing line).
    claimed: Mutex<Option<Instant>>,
    /// How long the extractor waited for bytes to be written.
    extractor_waited: Mutex<Duration>,
    /// The connection of the segment being received, torn down on cancel.
    in_flight: Arc<Mutex<Option<ConnectionHandle>>>,
    /// Set when the session failed for a reason of its own (disk full):
    /// the extractor ends the transfer with it instead of its read error.
    forced: Mutex<Option<ApiError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn now() -> u64 {
    crate::timefmt::now_unix()
}

/// The directory holding every session of a node.
pub fn sessions_root(data: &Path) -> PathBuf {
    data.join(SESSIONS_DIR)
}

impl Session {
    /// A session over `spool` holding `held` bytes (0 when new, what the
    /// acks say after a restart). Cancel hooks are installed here.
    pub fn new(
        record: SessionRecord,
        dir: PathBuf,
        spool: Spool,
        held: u64,
        window: u64,
        transfer: Arc<Transfer>,
    ) -> Arc<Session> {
        let follow = Held::new(held);
        // A taken-up session goes on from its saved activity, so a restart
        // does not give it a fresh window.
        let since = match record.last_activity {
            0 => now(),
            saved => saved,
        };
        let session = Arc::new(Session {
            sid: record.sid.clone(),
            transfer: Arc::clone(&transfer),
            record: Mutex::new(record),
            dir,
            work: Mutex::new(Work {
                spool: Some(spool),
                ledger: Ledger::new(held, window, since),
            }),
            view: Mutex::new(View {
                state: State::Receiving,
                held,
                error: None,
            }),
            view_changed: Condvar::new(),
            held: Arc::clone(&follow),
            claim: Mutex::new(None),
            claimed: Mutex::new(None),
            extractor_waited: Mutex::new(Duration::ZERO),
            in_flight: Arc::new(Mutex::new(None)),
            forced: Mutex::new(None),
        });
        // A cancel (either side, expiry, bulk) stops the extractor's wait
        // and the segment being received; the extractor then ends it.
        let in_flight = Arc::clone(&session.in_flight);
        transfer.on_cancel(move || {
            follow.drop_session();
            if let Some(connection) = lock(&in_flight).take() {
                connection.shutdown_read();
            }
        });
        session
    }

    pub fn record(&self) -> SessionRecord {
        lock(&self.record).clone()
    }

    pub fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// The view once the session is no longer finishing, or after
    /// `patience` (the status request that waits for the install, so the
    /// source learns the outcome as it happens instead of by sleeping
    /// polls).
    pub fn view_when_settled(&self, patience: Duration) -> View {
        let deadline = Instant::now() + patience;
        let mut view = lock(&self.view);
        while view.state == State::Finishing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            view = match self.view_changed.wait_timeout(view, left) {
                Ok((v, _)) => v,
                Err(p) => p.into_inner().0,
            };
        }
        view.clone()
    }

    /// Does `header` carry this session's secret?
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        super::secret::authorizes(header, &lock(&self.record).secret_sha256)
    }

    /// A new secret for a source that opened again with the same JWT (it
    /// lost the first answer, or this node restarted): the old one stops
    /// working.
    pub fn rotate_secret(&self, stored: String) -> io::Result<()> {
        let mut record = lock(&self.record);
        record.secret_sha256 = stored;
        crate::statefile::write_json(&self.dir.join(RECORD), &*record)
    }

    /// The source said it is alive (status with `alive`): its silence
    /// starts again (a segment being received counts as activity already).
    pub fn heard_from_source(&self) {
        let at = now();
        if let Ok(mut work) = self.work.try_lock() {
            if !work.ledger.heard(at) {
                return;
            }
        }
        self.note_activity(at);
    }

    /// Activity at `at` (a segment acknowledged, the source heard from):
    /// saved in the record when the saved activity is a minute old or
    /// more.
    fn note_activity(&self, at: u64) {
        let mut record = lock(&self.record);
        if at < record.last_activity.saturating_add(ACTIVITY_SAVE_EVERY) {
            return;
        }
        record.last_activity = at;
        if let Err(e) = crate::statefile::write_json(&self.dir.join(RECORD), &*record) {
            log::warn!(
                "transfer session {}: cannot save its last activity: {e}",
                self.sid
            );
        }
    }

    fn save_state(&self, state: State) {
        let mut record = lock(&self.record);
        record.state = state.as_str().to_string();
        if let Err(e) = crate::statefile::write_json(&self.dir.join(RECORD), &*record) {
            log::warn!("transfer session {}: cannot save its record: {e}", self.sid);
        }
    }

    /// `PUT …/segment`: append one segment, durable before the answer.
    /// Err is the HTTP status and the held length to answer with.
    pub fn receive(
        &self,
        header: SegmentHeader,
        body: &mut impl Read,
        connection: ConnectionHandle,
    ) -> Result<u64, (u16, String, u64)> {
        let held_now = || lock(&self.view).held;
        let Ok(mut work) = self.work.try_lock() else {
            let busy = Refusal::Busy { held: held_now() };
            return Err((409, busy.to_string(), held_now()));
        };
        // Registered for the cancel hook before the cancel check: a cancel
        // after the check then finds this request and tears it down (the
        // flag is set before the hooks run), instead of it reading and
        // acknowledging a whole segment of a cancelled session.
        *lock(&self.in_flight) = Some(connection);
        finish::failpoint::point("segment-receiving");
        if self.transfer.is_cancelled() {
            lock(&self.in_flight).take();
            let state = lock(&self.view).state;
            return Err((409, Refusal::NotReceiving(state).to_string(), held_now()));
        }
        // The disk checks of SPEC §4, per segment: a spool past what the
        // server's disk limit allows, or a full disk, fails the transfer
        // as a classic one would, not just this request.
        let cap = lock(&self.record).spool_cap;
        if cap.is_some_and(|cap| held_now().saturating_add(header.length) > cap) {
            log::warn!(
                "transfer {}: a segment at {} of {} bytes would take the spool past its cap of {} bytes (the server's disk limit)",
                self.transfer.id,
                header.offset,
                header.length,
                cap.unwrap_or_default()
            );
            self.force_end(ApiError::new(400, NO_SPACE));
            return Err((400, NO_SPACE.to_string(), held_now()));
        }
        if destination::free_bytes(&self.dir).is_some_and(|free| free < header.length) {
            lock(&self.in_flight).take();
            self.force_end(ApiError::new(400, NO_SPACE));
            return Err((400, NO_SPACE.to_string(), held_now()));
        }
        let Work { spool, ledger } = &mut *work;
        let result = match spool.as_mut() {
            Some(spool) => spool.receive(ledger, header, body, now(), &self.held),
            None => Err(SpoolError::Refused(Refusal::NotReceiving(ledger.state()))),
        };
        lock(&self.in_flight).take();
        let held = ledger.held();
        match result {
            Ok(held) => {
                self.held.advance(held);
                lock(&self.view).held = held;
                self.note_activity(now());
                Ok(held)
            }
            Err(SpoolError::Refused(r)) => Err((r.status(), r.to_string(), held)),
            Err(SpoolError::Short { .. }) => Err((400, ABORTED.to_string(), held)),
            Err(e @ SpoolError::Diverged { .. }) => {
                log::warn!("transfer {}: {e}; the transfer fails", self.transfer.id);
                self.force_end(ApiError::new(400, CHECKSUMS));
                Err((400, CHECKSUMS.to_string(), held))
            }
            Err(e) => Err((500, e.to_string(), held)),
        }
    }

    /// `POST …/finish`: the body is `length` bytes, held as the segments
    /// whose ack log digests to `acks_sha256`. From here the extractor ends
    /// the transfer; status tells the outcome.
    pub fn finish(&self, length: u64, acks_sha256: [u8; 32]) -> Result<(), Refusal> {
        let Some(mut work) = self.work_soon() else {
            return Err(Refusal::Busy {
                held: lock(&self.view).held,
            });
        };
        work.ledger.finish(length, now())?;
        *lock(&self.claim) = Some((length, acks_sha256));
        *lock(&self.claimed) = Some(Instant::now());
        lock(&self.view).state = State::Finishing;
        self.view_changed.notify_all();
        self.save_state(State::Finishing);
        self.held.finish();
        Ok(())
    }

    /// `work`, waiting up to a second for whoever holds it: the session's
    /// end holds it for moments (its outcome is in `view` once it lets go),
    /// a segment being received for long (that is `Busy`). A finish that
    /// met the end's moment answered 409 while status still said
    /// `receiving`, and the source gave up with "outcome unknown"; with the
    /// extractor reading segments as they arrive, an extractor that fails
    /// (the disk limit) does so just as the last segment lands, right when
    /// the finish comes.
    fn work_soon(&self) -> Option<MutexGuard<'_, Work>> {
        self.work_within(Duration::from_secs(1))
    }

    /// `work`, waiting up to `patience` for whoever holds it.
    fn work_within(&self, patience: Duration) -> Option<MutexGuard<'_, Work>> {
        let until = Instant::now() + patience;
        loop {
            match self.work.try_lock() {
                Ok(work) => return Some(work),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// The session failed for a reason of its own: remember it and stop the
    /// extractor, which ends the transfer with it.
    fn force_end(&self, error: ApiError) {
        let mut forced = lock(&self.forced);
        if forced.is_none() {
            *forced = Some(error);
        }
        drop(forced);
        self.held.drop_session();
    }

    /// Expiry: what the ledger says of this session now (`Expire`: the
    /// caller cancels the transfer; `Forget`: drop the ended session).
    pub fn sweep(&self) -> super::ledger::Sweep {
        // A segment being received is activity: never swept under it.
        match self.work.try_lock() {
            Ok(mut work) => work.ledger.sweep(now()),
            Err(_) => super::ledger::Sweep::Keep,
        }
    }

    /// The extractor: reads the spool as it grows through the classic
    /// receiver, checks the source's finish claim, and hands the tree to
    /// the shared finish (or fails the transfer). Runs on its own thread.
    pub fn spawn_extractor(self: &Arc<Session>, node: &Arc<Node>) -> io::Result<()> {
        let (session, node) = (Arc::clone(self), Arc::clone(node));
        std::thread::Builder::new()
            .name(format!("seg-{}", &self.sid[..8]))
            .spawn(move || session.extract(&node))
            .map(|_| ())
    }

    fn extract(&self, node: &Arc<Node>) {
        let record = self.record();
        let transfer = Arc::clone(&self.transfer);
        let batch = crate::archive::sched::batch();
        let monitor = spawn_monitor(node, &transfer);
        let started = Instant::now();
        let result = self.receive_tree(node, &record);
        let extracted = Instant::now();
        drop(batch);
        drop(monitor);
        // A session that will not finish: its files (record still
        // `receiving`) go before the transfer's record ends, or a node
        // killed in between (a failure report retrying) takes the session up
        // again and revives an ended transfer (docs/reliability.md). A
        // finishing one's record says so (never taken up): its removal
        // waits for the end, off the finish's path.
        if result.is_err() {
            self.remove_files();
        }
        let answer = match result {
            Ok((staging, config, extras)) => finish::install_and_report(
                node,
                &transfer,
                staging,
                extras,
                config,
                record.start_on_completion,
            ),
            Err(error) => finish::destination::fail(node, &transfer, error),
        };
        node.transfers
            .remember_token(&record.replay_key, record.replay_expires);
        self.log_timing(started, extracted);
        self.end(answer.err());
    }

    fn receive_tree(
        &self,
        node: &Arc<Node>,
        record: &SessionRecord,
    ) -> Result<destination::ReceivedTree, ApiError> {
        let file = std::fs::File::open(self.dir.join(super::spool::SPOOL))
            .map_err(|e| ApiError::new(500, format!("cannot read the session spool: {e}")))?;
        let mut body = Counting {
            inner: Follower::new(file, Arc::clone(&self.held)),
            length: 0,
        };
        let tree = self.read_body(node, record, &mut body);
        *lock(&self.extractor_waited) = body.inner.waited;
        tree
    }

    /// `receive_tree`'s reading of the body, to its end.
    fn read_body(
        &self,
        node: &Arc<Node>,
        record: &SessionRecord,
        body: &mut Counting<Follower>,
    ) -> Result<destination::ReceivedTree, ApiError> {
        let announced = record.disk_total.or(Some(record.bytes_total));
        let tree = destination::receive_body(
            node,
            &mut *body,
            &self.transfer,
            &record.server,
            &record.boundary,
            announced,
            record.precopy,
        )
        .map_err(|e| self.forced_or(e))?;
        // Whatever follows the close delimiter, up to the end the source
        // names in its finish (the follower ends there).
        let epilogue = io::copy(&mut (&mut *body).take(MAX_EPILOGUE + 1), &mut io::sink())
            .map_err(|e| self.forced_or(ApiError::new(400, format!("{ABORTED} ({e})"))))?;
        if epilogue > MAX_EPILOGUE {
            return Err(ApiError::new(400, "bytes after the multipart body"));
        }
        // Every segment's digest was checked as it arrived; the claim says
        // they are the source's own, in order, and all of them.
        let claim = *lock(&self.claim);
        let log = self.ack_log();
        match (claim, &log) {
            (Some((length, claimed)), Ok((held, digest)))
                if length == body.length && length == *held && claimed == *digest =>
            {
                Ok(tree)
            }
            _ => {
                log::warn!(
                    "transfer {}: the session body ({} bytes, ack log {}) is not what the source's finish names",
                    self.transfer.id,
                    body.length,
                    match &log {
                        Ok((held, _)) => format!("of {held} bytes"),
                        Err(e) => e.to_string(),
                    }
                );
                Err(ApiError::new(400, CHECKSUMS))
            }
        }
    }

    /// The ack lines of the segments held and that `held` (`GET …/acks`):
    /// what a restarted source checks the body it packs again against.
    /// Taken once no segment request is in progress (waiting at most
    /// `quiet`; None if one still is): a request of the source's previous
    /// life, its body still in the socket's buffers, may yet complete
    /// and move `held` past what an earlier status said.
    pub fn held_ack_lines(&self, quiet: Duration) -> Result<Option<(String, u64)>, SpoolError> {
        let Some(_work) = self.work_within(quiet) else {
            return Ok(None);
        };
        let held = lock(&self.view).held;
        let text = std::fs::read(self.dir.join(super::spool::ACKS))?;
        let (acks, _) = super::acks::parse(&text).map_err(SpoolError::Corrupt)?;
        let lines = acks
            .iter()
            .take_while(|a| a.offset + a.length <= held)
            .map(super::acks::line)
            .collect();
        Ok(Some((lines, held)))
    }

    /// What the ack log holds and its digest (the finish's claim).
    fn ack_log(&self) -> Result<(u64, [u8; 32]), SpoolError> {
        let text = std::fs::read(self.dir.join(super::spool::ACKS))?;
        let (acks, held) = super::acks::parse(&text).map_err(SpoolError::Corrupt)?;
        Ok((held, super::acks::digest(&acks)))
    }

    /// Where the session's time went (scripts/bench-transport.py reads it).
    fn log_timing(&self, started: Instant, extracted: Instant) {
        let spool = lock(&self.work).spool.as_ref().map(|s| s.timing);
        let (writing, syncing) = spool.map_or((0.0, 0.0), |t| {
            (t.writing.as_secs_f64(), t.syncing.as_secs_f64())
        });
        let tail = lock(&self.claimed).map_or(0.0, |at| {
            extracted.saturating_duration_since(at).as_secs_f64()
        });
        log::info!(
            "transfer {}: session timing: segments {writing:.2} s reading and writing, \
             {syncing:.2} s syncing; extractor {:.2} s ({:.2} s waiting for bytes, \
             {tail:.2} s after the finish claim); install and report {:.2} s",
            self.transfer.id,
            (extracted - started).as_secs_f64(),
            lock(&self.extractor_waited).as_secs_f64(),
            extracted.elapsed().as_secs_f64(),
        );
    }

    fn forced_or(&self, error: ApiError) -> ApiError {
        lock(&self.forced).take().unwrap_or(error)
    }

    /// The transfer ended (the shared finish decided, or it failed): the
    /// session's state follows, its directory goes.
    fn end(&self, error: Option<ApiError>) {
        let mut work = lock(&self.work);
        let completed = error.is_none();
        let state = if completed {
            State::Completed
        } else if self.transfer.is_cancelled() {
            State::Cancelled
        } else {
            State::Failed
        };
        if state == State::Cancelled {
            work.ledger.cancel(now());
        }
        work.ledger.ended(completed, now());
        work.spool = None;
        // The outcome first, then the directory: removing a large spool
        // takes a while on a filesystem mounted with `discard` (0.4 s for
        // 300 MB here), and the source's waiting status should not wait
        // for the clean-up. A crash in between leaves a finishing record,
        // which start-up removes.
        {
            let mut view = lock(&self.view);
            view.state = state;
            view.error = error.map(|e| (e.status, e.message));
            self.view_changed.notify_all();
        }
        self.remove_files();
        log::info!(
            "transfer session {} of {} ended {}",
            self.sid,
            self.transfer.server,
            state.as_str()
        );
    }

    /// The session's directory (spool, acks, record); gone already is fine.
    fn remove_files(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                log::error!(
                    "transfer session {}: cannot remove {}: {e}",
                    self.sid,
                    self.dir.display()
                );
            }
        }
    }
}

/// Counts what the extractor reads of the spool.
struct Counting<R> {
    inner: R,
    length: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.length += n as u64;
        Ok(n)
    }
}
