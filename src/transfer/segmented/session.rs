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
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// The body carries pre-copy's parts (accepted only then).
    #[serde(default)]
    pub precopy: bool,
    pub created: u64,
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
    held: Arc<Held>,
    /// The source's `finish` claim: body length and SHA-256.
    claim: Mutex<Option<(u64, [u8; 32])>>,
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
        let session = Arc::new(Session {
            sid: record.sid.clone(),
            transfer: Arc::clone(&transfer),
            record: Mutex::new(record),
            dir,
            work: Mutex::new(Work {
                spool: Some(spool),
                ledger: Ledger::new(held, window, now()),
            }),
            view: Mutex::new(View {
                state: State::Receiving,
                held,
                error: None,
            }),
            held: Arc::clone(&follow),
            claim: Mutex::new(None),
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
        // The disk check of SPEC §4, per segment: a full disk fails the
        // transfer as a classic one would, not just this request.
        if destination::free_bytes(&self.dir).is_some_and(|free| free < header.length) {
            lock(&self.in_flight).take();
            self.force_end(ApiError::new(400, NO_SPACE));
            return Err((400, NO_SPACE.to_string(), held_now()));
        }
        let Work { spool, ledger } = &mut *work;
        let result = match spool.as_mut() {
            Some(spool) => spool.receive(ledger, header, body, now()),
            None => Err(SpoolError::Refused(Refusal::NotReceiving(ledger.state()))),
        };
        lock(&self.in_flight).take();
        let held = ledger.held();
        match result {
            Ok(held) => {
                self.held.advance(held);
                lock(&self.view).held = held;
                Ok(held)
            }
            Err(SpoolError::Refused(r)) => Err((r.status(), r.to_string(), held)),
            Err(SpoolError::Short { .. }) => Err((400, ABORTED.to_string(), held)),
            Err(e) => Err((500, e.to_string(), held)),
        }
    }

    /// `POST …/finish`: the body is `length` bytes hashing to `sha256`.
    /// From here the extractor ends the transfer; status tells the outcome.
    pub fn finish(&self, length: u64, sha256: [u8; 32]) -> Result<(), Refusal> {
        let Ok(mut work) = self.work.try_lock() else {
            return Err(Refusal::Busy {
                held: lock(&self.view).held,
            });
        };
        work.ledger.finish(length, now())?;
        *lock(&self.claim) = Some((length, sha256));
        lock(&self.view).state = State::Finishing;
        self.save_state(State::Finishing);
        self.held.finish();
        Ok(())
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
        let result = self.receive_tree(node, &record);
        drop(batch);
        drop(monitor);
        // The spool is read (or never will be): its files go before the
        // transfer's record ends, or a node killed in between (a failure
        // report retrying) takes the session up again and revives an
        // ended transfer (docs/reliability.md).
        self.remove_files();
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
        self.end(answer.err());
    }

    fn receive_tree(
        &self,
        node: &Arc<Node>,
        record: &SessionRecord,
    ) -> Result<
        (
            crate::archive::Staging,
            crate::server::ServerConfig,
            crate::transfer::extras::Received,
        ),
        ApiError,
    > {
        let file = std::fs::File::open(self.dir.join(super::spool::SPOOL))
            .map_err(|e| ApiError::new(500, format!("cannot read the session spool: {e}")))?;
        let mut body = Hashing {
            inner: Follower::new(file, Arc::clone(&self.held)),
            sha: Sha256::new(),
            length: 0,
        };
        let announced = record.disk_total.or(Some(record.bytes_total));
        let tree = destination::receive_body(
            node,
            &mut body,
            &self.transfer,
            &record.server,
            &record.boundary,
            announced,
            record.precopy,
        )
        .map_err(|e| self.forced_or(e))?;
        // Whatever follows the close delimiter, up to the end the source
        // names in its finish (the follower ends there).
        let epilogue = io::copy(&mut (&mut body).take(MAX_EPILOGUE + 1), &mut io::sink())
            .map_err(|e| self.forced_or(ApiError::new(400, format!("{ABORTED} ({e})"))))?;
        if epilogue > MAX_EPILOGUE {
            return Err(ApiError::new(400, "bytes after the multipart body"));
        }
        let claim = *lock(&self.claim);
        let digest: [u8; 32] = body.sha.finalize().into();
        match claim {
            Some((length, sha)) if length == body.length && sha == digest => Ok(tree),
            _ => {
                log::warn!(
                    "transfer {}: the session body ({} bytes) is not what the source's finish names",
                    self.transfer.id,
                    body.length
                );
                Err(ApiError::new(400, "checksums don't match"))
            }
        }
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
        self.remove_files();
        let mut view = lock(&self.view);
        view.state = state;
        view.error = error.map(|e| (e.status, e.message));
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

/// Hashes and counts what the extractor reads of the spool.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    length: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }
}
