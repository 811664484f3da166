//! Crash state: what is kept on disk of each transfer in flight, so a
//! daemon that was killed knows at start-up where each one stood. One file
//! per transfer, `<root>/ferry/transfers/<id>.json`, written with
//! `statefile` (never torn) on every status and finish-phase change and
//! removed when the transfer ends. What recovery does with it is the
//! finish machine's call (`finish::recover`).
//!
//! A source's segmented session (SPEC §10) adds what a restarted source
//! needs to resume it (`OutgoingSession`, in the same file) and the ack
//! lines of the segments it was told are held, `<id>.acks` beside it
//! (appended and fsynced per segment by the sender, removed with the
//! state file). docs/transport.md, "source restart", says why.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::finish::Phase;
use super::record::{Direction, Status};
use crate::server::ServerConfig;
use crate::statefile;

/// One transfer in flight, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub server: String,
    pub direction: Direction,
    pub peer: String,
    pub status: Status,
    /// Absent in files written before the finish machine: they were
    /// streaming as far as anyone can tell.
    #[serde(default = "streaming")]
    pub phase: Phase,
    /// The destination's configuration of the server, saved before it is
    /// moved into place so recovery can register it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ServerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// Source: the segmented session it sends over, once opened (not for
    /// pre-copy, whose live pass cannot be packed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<OutgoingSession>,
}

/// What a restarted source needs to resume its segmented session: where,
/// the session's own credential, and what makes the body the same bytes
/// again (the boundary, the backups it carries). Never the panel's JWT:
/// after `open` only the session secret authorizes (docs/transport.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingSession {
    /// The destination's transfer URL, as the panel gave it.
    pub url: String,
    pub sid: String,
    /// The per-session secret (the state directory is the node's own).
    pub secret: String,
    pub boundary: String,
    /// The segment size both sides accepted.
    pub segment_size: u64,
    /// The destination's resume window, seconds.
    pub resume_window: u64,
    pub backups: Vec<String>,
    pub start_on_completion: bool,
    /// The archive's compression (state saved before it was kept: gzip).
    #[serde(default)]
    pub codec: crate::archive::Codec,
}

fn streaming() -> Phase {
    Phase::Streaming
}

pub struct CrashState {
    dir: PathBuf,
}

impl CrashState {
    /// `<state_dir>/transfers`, created if needed.
    pub fn open(state_dir: &Path) -> std::io::Result<CrashState> {
        let dir = state_dir.join("transfers");
        fs::create_dir_all(&dir)?;
        // A source's session secret is kept here: the node's own. Best
        // effort (a directory someone else made for the node stays theirs).
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)) {
            log::warn!("cannot make {} private: {e}", dir.display());
        }
        Ok(CrashState { dir })
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// A source's ack lines of its segmented session (`OutgoingSession`).
    pub fn acks_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.acks"))
    }

    pub fn save(&self, saved: &Saved) -> std::io::Result<()> {
        statefile::write_json(&self.file(&saved.id), saved)
    }

    pub fn forget(&self, id: &str) {
        if let Err(e) = statefile::remove(&self.file(id)) {
            log::warn!("cannot remove the state of transfer {id}: {e}");
        }
        // After the state file: a crash in between leaves ack lines no
        // state names, which nothing reads (and the next forget removes).
        match fs::remove_file(self.acks_file(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                log::warn!("cannot remove the ack lines of transfer {id}: {e}")
            }
            _ => {}
        }
    }

    /// Transfers a previous daemon left in flight. Files stay until the
    /// transfer is settled (`forget`), so a crash during recovery loses
    /// nothing. Temporaries of a write that died midway are removed: the
    /// file they were to replace still holds the last complete state.
    pub fn orphans(&self) -> Vec<Saved> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if statefile::is_temporary(&path) {
                let _ = fs::remove_file(&path);
                continue;
            }
            // A source's ack lines belong to the state file beside them.
            if path.extension().is_some_and(|e| e == "acks") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Saved>(&b).map_err(|e| e.to_string()))
            {
                Ok(saved) => out.push(saved),
                // Not ours to settle: no torn state file can exist, so
                // this is something else put there; keep it for a person.
                Err(e) => log::error!("recovery: cannot read {}: {e}", path.display()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(id: &str, phase: Phase) -> Saved {
        Saved {
            id: id.into(),
            server: "s".into(),
            direction: Direction::Incoming,
            peer: "p".into(),
            status: Status::Processing,
            phase,
            config: Some(ServerConfig::minimal("s")),
            cancel_reason: None,
            session: None,
        }
    }

    #[test]
    fn saved_state_is_typed_and_survives_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = CrashState::open(dir.path()).unwrap();
        state.save(&saved("a", Phase::Installing)).unwrap();
        state.save(&saved("a", Phase::Reporting)).unwrap();
        let orphans = state.orphans();
        assert_eq!(orphans, vec![saved("a", Phase::Reporting)]);
        assert_eq!(state.orphans().len(), 1, "reading does not consume");
        state.forget("a");
        assert!(state.orphans().is_empty());
    }

    #[test]
    fn a_torn_write_is_never_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = CrashState::open(dir.path()).unwrap();
        state.save(&saved("b", Phase::Installing)).unwrap();
        // A SIGKILL in the middle of the next save leaves its temporary.
        let torn = dir.path().join("transfers").join(".b.json.tmp");
        fs::write(&torn, br#"{"id":"b","server":"s","direction":"incom"#).unwrap();
        assert_eq!(state.orphans(), vec![saved("b", Phase::Installing)]);
        assert!(!torn.exists(), "the torn temporary is cleared");
    }

    #[test]
    fn a_sources_ack_lines_are_not_orphans_and_go_with_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = CrashState::open(dir.path()).unwrap();
        let mut s = saved("d", Phase::Streaming);
        s.direction = Direction::Outgoing;
        s.session = Some(OutgoingSession {
            url: "http://dest/api/transfers".into(),
            sid: "0".repeat(32),
            secret: "1".repeat(64),
            boundary: "b".into(),
            segment_size: 4,
            resume_window: 900,
            backups: vec!["x".into()],
            start_on_completion: true,
            codec: crate::archive::Codec::Zstd,
        });
        state.save(&s).unwrap();
        fs::write(state.acks_file("d"), b"0 4 00\n").unwrap();
        assert_eq!(state.orphans(), vec![s]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("transfers"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the session secret is the node's own");
        state.forget("d");
        assert!(!state.acks_file("d").exists());
        assert!(state.orphans().is_empty());
    }

    #[test]
    fn files_from_before_the_finish_machine_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let state = CrashState::open(dir.path()).unwrap();
        fs::write(
            dir.path().join("transfers").join("c.json"),
            br#"{"id":"c","server":"s","direction":"outgoing","peer":"p","status":"processing"}"#,
        )
        .unwrap();
        let orphans = state.orphans();
        assert_eq!(orphans[0].direction, Direction::Outgoing);
        assert_eq!(orphans[0].phase, Phase::Streaming);
    }
}
