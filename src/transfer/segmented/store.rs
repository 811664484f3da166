//! The destination's sessions (docs/transport.md): opening one (the panel
//! JWT's checks, SPEC §4's early rows, the disk check, a fresh secret),
//! finding one by id or by its JWT, the sweeper that expires silent
//! sessions after `resume_window`, and taking live sessions up again after
//! a restart. What a session does once open is `session`'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::ledger::{State, Sweep};
use super::session::{self, sessions_root, Session, SessionRecord, RECORD};
use super::spool::Spool;
use crate::http::reply::ApiError;
use crate::node::Node;
use crate::transfer::destination::{EXISTS, IN_PROGRESS};
use crate::transfer::finish::{self, Phase};
use crate::transfer::persist::Saved;
use crate::transfer::{Direction, Status};

/// The reason a silent session's transfer is cancelled with.
pub const EXPIRED: &str = "the transfer session expired (no segment within resume_window)";

/// `FERRY_RESUME_WINDOW_SECS` shortens the window for tests (the
/// configuration key's floor is 60 s).
pub fn window(node_config: &crate::config::Config) -> u64 {
    std::env::var("FERRY_RESUME_WINDOW_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(
            node_config
                .system
                .transfers
                .segmented
                .resume_window
                .as_secs(),
        )
}

/// The reason a session whose source cancelled while it opened ends with.
pub const CANCELLED_OPENING: &str = "cancelled by the source while the session was opening";

/// What the source announces when it opens a session.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OpenRequest {
    pub boundary: String,
    #[serde(default)]
    pub transfer_id: String,
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub files_total: u64,
    #[serde(default)]
    pub disk_total: Option<u64>,
    #[serde(default)]
    pub start_on_completion: bool,
    /// Bytes of the backups the body carries besides the archive.
    #[serde(default)]
    pub backups_total: u64,
    /// The body ends with pre-copy's delta and manifest (SPEC §10).
    #[serde(default)]
    pub precopy: bool,
}

/// What `open` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Opened {
    pub session: String,
    pub secret: String,
    pub segment_size: u64,
    pub held: u64,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map().get(sid).cloned()
    }

    /// Every session this node knows (live and recently ended).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }

    fn live_for_token(&self, replay_key: &str) -> Option<Arc<Session>> {
        self.map()
            .values()
            .find(|s| !s.view().state.is_terminal() && s.record().replay_key == replay_key)
            .cloned()
    }

    /// `POST /api/transfers/session`: the JWT was verified by the caller.
    pub fn open(
        &self,
        node: &Arc<Node>,
        claims: &crate::jwt::TransferClaims,
        peer: &str,
        wanted: OpenRequest,
    ) -> Result<Opened, ApiError> {
        let segment_size = node.config.system.transfers.segmented.segment_size;
        let Some((sid, secret, stored)) = super::secret::issue() else {
            return Err(ApiError::new(500, "no randomness for a session secret"));
        };
        // The same JWT again while its session lives: the source lost the
        // answer (or this node restarted); it gets a new secret for it.
        if let Some(existing) = self.live_for_token(&claims.replay_key) {
            existing
                .rotate_secret(stored)
                .map_err(|e| ApiError::new(500, format!("cannot save the session: {e}")))?;
            return Ok(Opened {
                session: existing.sid.clone(),
                secret,
                segment_size,
                held: existing.view().held,
            });
        }
        if !valid_boundary(&wanted.boundary) {
            return Err(ApiError::new(400, "invalid content type"));
        }
        // Tests hold an open here, so a source's cancel lands while it is
        // in flight.
        crate::transfer::finish::failpoint::point("session-opening");
        let uuid = claims.server.clone();
        if node.registry.contains(&uuid) {
            return Err(ApiError::new(409, EXISTS));
        }
        // The server's disk limit, as the panel says now: the announced
        // tree must fit (SPEC §4's space row, before a byte is sent), and
        // it caps the spool.
        let limit = panel_disk_limit(node, &uuid);
        let total = wanted.disk_total.unwrap_or(wanted.bytes_total);
        crate::transfer::destination::preflight_space(node, limit, total)?;
        let transfer = node
            .transfers
            .begin(&uuid, Direction::Incoming, peer)
            .map_err(|_| ApiError::new(409, IN_PROGRESS))?;
        node.transfers
            .transition(&transfer, Status::Processing, None);
        transfer.set_totals(wanted.files_total, wanted.bytes_total);
        let created = session::now();
        let record = SessionRecord {
            sid: sid.clone(),
            secret_sha256: stored,
            replay_key: claims.replay_key.clone(),
            replay_expires: claims.expires_at,
            server: uuid,
            transfer_id: transfer.id.clone(),
            peer: peer.to_string(),
            boundary: wanted.boundary,
            bytes_total: wanted.bytes_total,
            files_total: wanted.files_total,
            disk_total: wanted.disk_total,
            start_on_completion: wanted.start_on_completion,
            spool_cap: limit.map(|disk| super::spool::cap(disk, wanted.backups_total)),
            precopy: wanted.precopy,
            created,
            last_activity: created,
            state: State::Receiving.as_str().to_string(),
        };
        let dir = sessions_root(&node.config.system.data).join(&sid);
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| Spool::create(&dir))
            .and_then(|spool| {
                crate::statefile::write_json(&dir.join(RECORD), &record).map(|()| spool)
            });
        let spool = match made {
            Ok(spool) => spool,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                let error = ApiError::new(500, format!("cannot create the transfer session: {e}"));
                return Err(fail_now(node, &transfer, error));
            }
        };
        let session = Session::new(
            record,
            dir,
            spool,
            0,
            window(&node.config),
            Arc::clone(&transfer),
        );
        // Under the map's lock, against `cancel_opening`: either that
        // finds this session, or this open sees the JWT spent.
        let cancelled_while_opening = {
            let mut map = self.map();
            map.insert(sid.clone(), Arc::clone(&session));
            node.transfers.token_used(&claims.replay_key)
        };
        if let Err(e) = session.spawn_extractor(node) {
            let error = ApiError::new(500, format!("cannot start the extractor: {e}"));
            self.map().remove(&sid);
            let _ = std::fs::remove_dir_all(sessions_root(&node.config.system.data).join(&sid));
            return Err(fail_now(node, &transfer, error));
        }
        node.transfer_log(&transfer, "Receiving archive from source in segments...");
        log::info!(
            "transfer {} of {}: session {sid} open for {peer}",
            transfer.id,
            transfer.server
        );
        if cancelled_while_opening {
            log::info!(
                "transfer {}: the source cancelled while its session was opening",
                transfer.id
            );
            if node
                .transfers
                .cancel(&transfer, Some(CANCELLED_OPENING.to_string()))
                .is_err()
            {
                log::warn!("transfer {}: could not be cancelled", transfer.id);
            }
        }
        Ok(Opened {
            session: sid,
            secret,
            segment_size,
            held: 0,
        })
    }

    /// `DELETE /api/transfers/session` (the JWT was verified by the
    /// caller): the source cancels a session it may have opened without
    /// learning its id (its cancel cut the open's answer). The JWT is
    /// spent (the replay guard), so no open with it starts from now on; an
    /// open already past that check adds its session under this same
    /// lock: it is found here, or it sees the JWT spent and cancels itself.
    /// The live session to cancel, if there is one.
    pub fn cancel_opening(
        &self,
        node: &Node,
        claims: &crate::jwt::TransferClaims,
    ) -> Option<Arc<Session>> {
        let map = self.map();
        node.transfers
            .remember_token(&claims.replay_key, claims.expires_at);
        map.values()
            .find(|s| !s.view().state.is_terminal() && s.record().replay_key == claims.replay_key)
            .cloned()
    }

    /// One sweep: expire silent sessions (their transfer is cancelled, the
    /// extractor removes them and reports failure), forget ended ones.
    pub fn sweep(&self, node: &Node) {
        for session in self.all() {
            match session.sweep() {
                Sweep::Expire => {
                    log::warn!(
                        "transfer {}: session {} silent past the resume window; cancelling",
                        session.transfer.id,
                        session.sid
                    );
                    node.transfer_log(&session.transfer, EXPIRED);
                    if node
                        .transfers
                        .cancel(&session.transfer, Some(EXPIRED.to_string()))
                        .is_err()
                    {
                        log::warn!(
                            "transfer {}: the expired session could not be cancelled",
                            session.transfer.id
                        );
                    }
                }
                Sweep::Forget => {
                    self.map().remove(&session.sid);
                }
                Sweep::Keep => {}
            }
        }
    }

    /// The sweeper thread: a sweep every second (cheap: a few sessions).
    pub fn spawn_sweeper(node: &Arc<Node>) {
        let weak = Arc::downgrade(node);
        let spawned = std::thread::Builder::new()
            .name("seg-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(node) = weak.upgrade() else { return };
                node.sessions.sweep(&node);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the transfer session sweeper: {e}");
        }
    }

    /// Before start-up recovery: the sessions a killed daemon left that can
    /// go on (receiving, spool consistent with its acks). Their transfers'
    /// crash state is taken from recovery (which would undo them); every
    /// other session directory is removed and its transfer left to
    /// recovery (SPEC §5.1: a session that was finishing belongs to the
    /// shared finish's recovery, never re-installed here).
    pub fn hold_back(node: &Node) -> Vec<(SessionRecord, Spool, u64)> {
        let root = sessions_root(&node.config.system.data);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        // Only a session whose transfer was receiving goes on: one whose
        // transfer ended (its files outlived it) must not revive it, nor one
        // whose cancel was accepted (`cancelling` on disk) undo the cancel;
        // recovery ends those.
        let in_flight: Vec<String> = node
            .transfers
            .orphans()
            .into_iter()
            .filter(|s| s.status == Status::Processing)
            .map(|s| s.id)
            .collect();
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                // A source's kept segment whose name outlived a crash.
                let _ = std::fs::remove_file(&dir);
                continue;
            }
            let taken = take_up(&dir).and_then(|t| {
                if in_flight.contains(&t.0.transfer_id) {
                    Ok(t)
                } else {
                    Err(format!("its transfer {} is not in flight", t.0.transfer_id))
                }
            });
            match taken {
                Ok((record, spool, held)) => {
                    match silent_past_window(node, &record) {
                        None => log::warn!(
                            "recovery: transfer session {} of {} holds {held} bytes; it resumes",
                            record.sid,
                            record.server
                        ),
                        Some(silent) => log::warn!(
                            "recovery: transfer session {} of {} holds {held} bytes but was silent for {silent} s, \
                             past the resume window, while this node was down; it ends as expired",
                            record.sid,
                            record.server
                        ),
                    }
                    node.transfers.forget_orphan(&record.transfer_id);
                    out.push((record, spool, held));
                }
                Err(why) => {
                    log::warn!(
                        "recovery: removing transfer session {}: {why}",
                        dir.display()
                    );
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        log::error!("recovery: cannot remove {}: {e}", dir.display());
                    }
                }
            }
        }
        out
    }

    /// After start-up recovery: the held-back sessions go on, each with its
    /// transfer (same id) and a new extractor that reads the spool from
    /// its start (staging was emptied by recovery).
    pub fn resume(node: &Arc<Node>, held_back: Vec<(SessionRecord, Spool, u64)>) {
        for (record, spool, held) in held_back {
            let saved = Saved {
                id: record.transfer_id.clone(),
                server: record.server.clone(),
                direction: Direction::Incoming,
                peer: record.peer.clone(),
                status: Status::Processing,
                phase: Phase::Streaming,
                config: None,
                cancel_reason: None,
                session: None,
            };
            let transfer = node.transfers.resume(&saved);
            transfer.set_totals(record.files_total, record.bytes_total);
            let dir = sessions_root(&node.config.system.data).join(&record.sid);
            if silent_past_window(node, &record).is_some() {
                drop(spool);
                expire_at_start(node, &transfer, &record, &dir);
                continue;
            }
            let sid = record.sid.clone();
            let session = Session::new(
                record,
                dir,
                spool,
                held,
                window(&node.config),
                Arc::clone(&transfer),
            );
            node.sessions.map().insert(sid, Arc::clone(&session));
            if let Err(e) = session.spawn_extractor(node) {
                let error = ApiError::new(500, format!("cannot start the extractor: {e}"));
                let _ = fail_now(node, &transfer, error);
            }
        }
    }
}

/// How long a taken-up session was silent, when that is past the window
/// (its saved activity, at most a minute behind the last segment).
fn silent_past_window(node: &Node, record: &SessionRecord) -> Option<u64> {
    let silent = session::now().saturating_sub(record.last_activity);
    (record.last_activity > 0 && silent > window(&node.config)).then_some(silent)
}

/// A session whose window passed while this node was down ends as the
/// sweeper would have ended it (SPEC §10): its transfer cancelled as
/// expired, one failure report, its directory removed, its JWT into the
/// replay guard. No extractor runs for it.
fn expire_at_start(
    node: &Arc<Node>,
    transfer: &Arc<crate::transfer::Transfer>,
    record: &SessionRecord,
    dir: &std::path::Path,
) {
    node.transfer_log(transfer, EXPIRED);
    if node
        .transfers
        .cancel(transfer, Some(EXPIRED.to_string()))
        .is_err()
    {
        log::warn!(
            "transfer {}: the expired session could not be cancelled",
            transfer.id
        );
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::error!("recovery: cannot remove {}: {e}", dir.display());
    }
    let _ = finish::destination::fail(node, transfer, ApiError::new(409, EXPIRED));
    node.transfers
        .remember_token(&record.replay_key, record.replay_expires);
}

/// A session directory that can go on, or why not.
fn take_up(dir: &std::path::Path) -> Result<(SessionRecord, Spool, u64), String> {
    let bytes = std::fs::read(dir.join(RECORD)).map_err(|e| format!("no record: {e}"))?;
    let record: SessionRecord =
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable record: {e}"))?;
    if record.state != State::Receiving.as_str() {
        return Err(format!("it was {}", record.state));
    }
    if !super::secret::is_session_id(&record.sid)
        || dir.file_name() != Some(std::ffi::OsStr::new(&record.sid))
    {
        return Err("its name is not its session id".into());
    }
    let (spool, held) = Spool::reopen(dir).map_err(|e| e.to_string())?;
    Ok((record, spool, held))
}

/// The server's `disk_space` in bytes from the panel, when it has one. A
/// panel that does not answer here gives none: the extractor asks it again
/// and fails the transfer if it still does not answer.
fn panel_disk_limit(node: &Node, uuid: &str) -> Option<u64> {
    let remote = match node.panel.as_ref()?.server(uuid) {
        Ok(remote) => remote,
        Err(e) => {
            log::warn!(
                "transfer session for {uuid}: no server configuration from the panel at open: {e}"
            );
            return None;
        }
    };
    crate::server::ServerConfig {
        uuid: uuid.to_string(),
        settings: remote.settings,
        process_configuration: remote.process_configuration,
    }
    .disk_space_bytes()
}

/// A failure after the transfer began but before its extractor runs.
fn fail_now(
    node: &Arc<Node>,
    transfer: &Arc<crate::transfer::Transfer>,
    error: ApiError,
) -> ApiError {
    match finish::destination::fail(node, transfer, error) {
        Err(e) => e,
        Ok(_) => ApiError::new(500, "the transfer could not start"),
    }
}

/// A multipart boundary (RFC 2046: 1–70 characters of a safe set).
fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&c))
}

/// Where a node keeps its sessions (for `ferry status`).
pub fn root_of(data: &std::path::Path) -> PathBuf {
    sessions_root(data)
}

#[cfg(test)]
mod tests {
    use super::valid_boundary;

    #[test]
    fn boundaries() {
        assert!(valid_boundary("ferry-0123abcd"));
        assert!(!valid_boundary(""));
        assert!(!valid_boundary("a b"));
        assert!(!valid_boundary("a\r\nb"));
        assert!(!valid_boundary(&"x".repeat(71)));
    }
}
