//! The files that travel with a server besides its data: local backups and
//! the installation log (SPEC §3 parts 4–5, §4 "Dialects").
//!
//! Owns where a node keeps them (`KeepConfig`: the panel family's layout
//! under `system.backup_directory`, `install/<uuid>.log` under
//! `system.log_directory`), receiving them into hidden temporary files
//! beside their final place (same filesystem, so the commit is a rename),
//! verifying each backup against its digest, and the commit. Until
//! [`Received::commit`] nothing is visible under a final name; dropping a
//! `Received` removes what it wrote, and [`Committed::remove`] takes a
//! committed set back, so a failed transfer leaves nothing.
//!
//! Also owns the ledger that makes this hold across a crash and across
//! threads: `<state>/received/<server>.json` names every file and
//! directory the transfer made (temporary names as they are created, final
//! names just before the commit moves anything). Wherever the install is
//! removed, [`remove_received`] takes back what the ledger names; when the
//! transfer commits, [`keep_received`] forgets the ledger and the files
//! stay.
//!
//! Leaves to others: the multipart reading and the part names (`wire`),
//! the HTTP status of each error (`destination`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{KeepConfig, SystemConfig};
use crate::statefile;

/// An installation log is text of modest size; more is refused.
pub const MAX_INSTALL_LOG: u64 = 64 << 20;

#[derive(Debug)]
pub enum ExtrasError {
    /// A backup came without its digest.
    MissingChecksum(String),
    /// A backup's bytes do not hash to its digest.
    Mismatch(String),
    /// A digest came for a backup that never did.
    MissingBackup(String),
    /// The same backup (or its digest) came twice.
    Duplicate(String),
    /// A backup with this UUID is already kept on this node.
    Exists(String, PathBuf),
    /// The filesystem is full.
    NoSpace,
    /// Writing or renaming failed; names the file.
    Io(String),
    /// Reading the part failed (the source went away, a cancel).
    Input(io::Error),
    /// The installation log part is larger than [`MAX_INSTALL_LOG`].
    LogTooLarge,
}

impl fmt::Display for ExtrasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtrasError::MissingChecksum(b) => write!(f, "checksum missing for backup {b}"),
            ExtrasError::Mismatch(b) => write!(f, "backup {b} checksum mismatch"),
            ExtrasError::MissingBackup(b) => {
                write!(f, "backup {b} missing: only its checksum was sent")
            }
            ExtrasError::Duplicate(b) => write!(f, "backup {b} was sent twice"),
            ExtrasError::Exists(b, path) => write!(
                f,
                "failed to store backup {b}: {} already exists",
                path.display()
            ),
            ExtrasError::NoSpace => write!(f, "no space left for the backups"),
            ExtrasError::Io(m) => write!(f, "{m}"),
            ExtrasError::Input(e) => write!(f, "the request body could not be read: {e}"),
            ExtrasError::LogTooLarge => write!(
                f,
                "the install log part is larger than {MAX_INSTALL_LOG} bytes"
            ),
        }
    }
}

/// A file written under a temporary name, and where it goes on commit.
struct Staged {
    temp: PathBuf,
    dest: PathBuf,
}

/// Backups and the installation log received so far for one transfer.
pub struct Received {
    keep: KeepConfig,
    server: String,
    tag: String,
    /// Backup UUID → (staged file, SHA-256 of its bytes).
    backups: BTreeMap<String, (Staged, String)>,
    /// Backup UUID → the digest the sender announced.
    announced: BTreeMap<String, String>,
    log: Option<Staged>,
    /// Directories this transfer created, outermost first.
    made_dirs: Vec<PathBuf>,
    /// Where the ledger goes and what it says; None once committed (the
    /// `Committed` carries it on).
    ledger: Option<(PathBuf, Ledger)>,
}

impl Received {
    /// `tag` makes temporary names unique to the transfer (its id). A
    /// ledger left for `server` is stale: an incoming transfer starts only
    /// for a server this node does not hold, and start-up recovery has
    /// already taken back whatever an unsettled one received.
    pub fn new(system: &SystemConfig, server: &str, tag: &str) -> Received {
        let path = ledger_path(system, server);
        let _ = statefile::remove(&path);
        Received {
            keep: system.keep.clone(),
            server: server.to_string(),
            tag: tag.to_string(),
            backups: BTreeMap::new(),
            announced: BTreeMap::new(),
            log: None,
            made_dirs: Vec::new(),
            ledger: Some((
                path,
                Ledger {
                    transfer: tag.to_string(),
                    ..Ledger::default()
                },
            )),
        }
    }

    pub fn backup_count(&self) -> usize {
        self.backups.len()
    }

    /// Streams a backup file into its temporary name, hashing it.
    pub fn receive_backup(&mut self, backup: &str, body: impl Read) -> Result<u64, ExtrasError> {
        if self.backups.contains_key(backup) {
            return Err(ExtrasError::Duplicate(backup.to_string()));
        }
        let dest = self.keep.backup_file(&self.server, backup);
        if dest.symlink_metadata().is_ok() {
            return Err(ExtrasError::Exists(backup.to_string(), dest));
        }
        let what = format!("backup {backup}");
        let temp = self.temp_for(&dest, &what)?;
        let staged = Staged { temp, dest };
        // Registered before writing, so a failure below still removes it.
        let (n, digest) = match write_new(&staged.temp, 0o600, body, u64::MAX, &what) {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&staged.temp);
                return Err(e);
            }
        };
        self.backups
            .insert(backup.to_string(), (staged, digest.unwrap_or_default()));
        Ok(n)
    }

    /// Records a backup's announced digest (text as sent).
    pub fn announce_backup_checksum(
        &mut self,
        backup: &str,
        text: &[u8],
    ) -> Result<(), ExtrasError> {
        let digest = super::wire::parse_digest(text)
            .unwrap_or_else(|| String::from_utf8_lossy(text).trim().to_string());
        if self.announced.insert(backup.to_string(), digest).is_some() {
            return Err(ExtrasError::Duplicate(backup.to_string()));
        }
        Ok(())
    }

    /// Streams the installation log into its temporary name.
    pub fn receive_install_log(&mut self, body: impl Read) -> Result<(), ExtrasError> {
        let dest = self.keep.install_log(&self.server);
        let temp = self.temp_for(&dest, "the install log")?;
        if let Some(old) = self.log.take() {
            let _ = fs::remove_file(old.temp);
        }
        let staged = Staged { temp, dest };
        let written = write_new(
            &staged.temp,
            0o644,
            body,
            MAX_INSTALL_LOG,
            "the install log",
        );
        match written {
            Ok(_) => {
                self.log = Some(staged);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&staged.temp);
                Err(e)
            }
        }
    }

    /// Every backup has its digest, every digest its backup, and they match.
    pub fn verify(&self) -> Result<(), ExtrasError> {
        verify_digests(
            self.backups
                .iter()
                .map(|(b, (_, d))| (b.as_str(), d.as_str())),
            &self.announced,
        )
    }

    /// Moves every file to its final name. On a failure midway the ones
    /// already moved are taken back, so the result is all or nothing.
    pub fn commit(mut self) -> Result<Committed, ExtrasError> {
        let mut staged: Vec<Staged> = std::mem::take(&mut self.backups)
            .into_values()
            .map(|(s, _)| s)
            .collect();
        staged.extend(self.log.take());
        let ledger = self.ledger.take();
        let mut done = Committed {
            files: Vec::new(),
            dirs: std::mem::take(&mut self.made_dirs),
            ledger: ledger.as_ref().map(|(path, _)| path.clone()),
        };
        if let Some((path, mut ledger)) = ledger {
            // Final names go on record before anything takes them, so a
            // crash midway leaves nothing unnamed.
            ledger.files.extend(staged.iter().map(|f| f.dest.clone()));
            if !staged.is_empty() {
                if let Err(e) = write_ledger(&path, &ledger) {
                    for rest in &staged {
                        let _ = fs::remove_file(&rest.temp);
                    }
                    done.remove();
                    return Err(e);
                }
            }
        }
        for (i, file) in staged.iter().enumerate() {
            if let Err(e) = fs::rename(&file.temp, &file.dest) {
                for rest in &staged[i..] {
                    let _ = fs::remove_file(&rest.temp);
                }
                done.remove();
                return Err(ExtrasError::Io(format!(
                    "failed to move {} into place: {e}",
                    file.dest.display()
                )));
            }
            done.files.push(file.dest.clone());
        }
        Ok(done)
    }

    /// A hidden name beside `dest`, creating (and remembering) its parents.
    fn temp_for(&mut self, dest: &Path, what: &str) -> Result<PathBuf, ExtrasError> {
        let parent = dest
            .parent()
            .ok_or_else(|| ExtrasError::Io(format!("no directory for {what}")))?;
        let mut missing = Vec::new();
        let mut dir = parent;
        while dir.symlink_metadata().is_err() {
            missing.push(dir.to_path_buf());
            match dir.parent() {
                Some(up) => dir = up,
                None => break,
            }
        }
        let missing: Vec<PathBuf> = missing.into_iter().rev().collect();
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let temp = parent.join(format!(
            ".{}.ferry-{}.part",
            name.unwrap_or_default(),
            self.tag
        ));
        // On record before it exists: a crash from here on leaves a ledger
        // that names it.
        if let Some((path, ledger)) = &mut self.ledger {
            ledger.dirs.extend(missing.iter().cloned());
            ledger.files.push(temp.clone());
            write_ledger(path, ledger)?;
        }
        fs::create_dir_all(parent).map_err(|e| io_error(e, what, parent))?;
        self.made_dirs.extend(missing);
        Ok(temp)
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        for (staged, _) in self.backups.values() {
            let _ = fs::remove_file(&staged.temp);
        }
        if let Some(log) = &self.log {
            let _ = fs::remove_file(&log.temp);
        }
        remove_dirs(&self.made_dirs);
        if let Some((path, _)) = &self.ledger {
            let _ = statefile::remove(path);
        }
    }
}

/// Files a transfer put in place, to take back if the install fails later.
#[derive(Debug, Default)]
pub struct Committed {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    ledger: Option<PathBuf>,
}

impl Committed {
    pub fn remove(&mut self) {
        for file in self.files.drain(..) {
            let _ = fs::remove_file(file);
        }
        remove_dirs(&std::mem::take(&mut self.dirs));
        if let Some(path) = self.ledger.take() {
            let _ = statefile::remove(&path);
        }
    }
}

/// What one incoming transfer made for a server, as kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// The transfer's id (for the log).
    transfer: String,
    /// Temporary names, then final names.
    files: Vec<PathBuf>,
    /// Directories it created, outermost first.
    dirs: Vec<PathBuf>,
}

fn ledger_path(system: &SystemConfig, server: &str) -> PathBuf {
    system
        .state_dir()
        .join("received")
        .join(format!("{server}.json"))
}

fn write_ledger(path: &Path, ledger: &Ledger) -> Result<(), ExtrasError> {
    let fail = |e: io::Error| io_error(e, "the list of received files", path);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    statefile::write_json(path, ledger).map_err(fail)
}

/// Takes back the backups and install log an incoming transfer of
/// `server` received (committed or not), as its ledger names them; called
/// wherever the install is removed (a cancel, the panel's 409/403, an
/// unknown outcome settled as not ours, start-up recovery). Returns how
/// many files it removed. Without a ledger (nothing received, or the
/// transfer committed) it removes nothing.
pub fn remove_received(system: &SystemConfig, server: &str) -> usize {
    let path = ledger_path(system, server);
    let ledger: Ledger = match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(ledger) => ledger,
            Err(e) => {
                log::error!(
                    "{server}: cannot read {}: {e}; received backups may remain",
                    path.display()
                );
                return 0;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            log::error!("{server}: cannot read {}: {e}", path.display());
            return 0;
        }
    };
    let mut removed = 0;
    for file in &ledger.files {
        match fs::remove_file(file) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{server}: cannot remove {}: {e}", file.display()),
        }
    }
    remove_dirs(&ledger.dirs);
    if let Err(e) = statefile::remove(&path) {
        log::warn!("{server}: cannot remove {}: {e}", path.display());
    }
    if removed > 0 {
        log::info!(
            "{server}: removed {removed} file(s) received by transfer {} with the install",
            ledger.transfer
        );
    }
    removed
}

/// The transfer of `server` committed: what it received stays, and the
/// ledger that could take it back is forgotten.
pub fn keep_received(system: &SystemConfig, server: &str) {
    let path = ledger_path(system, server);
    if let Err(e) = statefile::remove(&path) {
        log::warn!("{server}: cannot remove {}: {e}", path.display());
    }
}

/// Removes the directories a transfer created, innermost first, and only
/// while empty (a concurrent backup may have landed in one).
fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// The pure check behind [`Received::verify`].
fn verify_digests<'a>(
    computed: impl Iterator<Item = (&'a str, &'a str)>,
    announced: &BTreeMap<String, String>,
) -> Result<(), ExtrasError> {
    let mut seen = std::collections::BTreeSet::new();
    for (backup, digest) in computed {
        seen.insert(backup);
        match announced.get(backup) {
            None => return Err(ExtrasError::MissingChecksum(backup.to_string())),
            Some(sent) if sent != digest => return Err(ExtrasError::Mismatch(backup.to_string())),
            Some(_) => {}
        }
    }
    if let Some(orphan) = announced.keys().find(|b| !seen.contains(b.as_str())) {
        return Err(ExtrasError::MissingBackup(orphan.clone()));
    }
    Ok(())
}

/// Writes `body` to a new file at `path` (never an existing one), up to
/// `max` bytes, returning the length and, for backups, the SHA-256.
fn write_new(
    path: &Path,
    mode: u32,
    mut body: impl Read,
    max: u64,
    what: &str,
) -> Result<(u64, Option<String>), ExtrasError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_error(e, what, path))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExtrasError::Input(e)),
        };
        total += n as u64;
        if total > max {
            return Err(ExtrasError::LogTooLarge);
        }
        sha.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| io_error(e, what, path))?;
    }
    file.sync_all().map_err(|e| io_error(e, what, path))?;
    Ok((total, Some(hex::encode(sha.finalize()))))
}

fn io_error(e: io::Error, what: &str, path: &Path) -> ExtrasError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        return ExtrasError::NoSpace;
    }
    ExtrasError::Io(format!("failed to store {what} at {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PanelFamily;

    const B1: &str = "0b6f3a52-5c1e-4f8e-9a0d-2f4c6b8e1a3d";
    const B2: &str = "1c7e4b63-6d2f-4a9f-8b1e-3a5d7c9f2b4e";
    const S: &str = "9f1e2d3c-4b5a-4978-8f6e-5d4c3b2a1908";

    /// A node's system config with backups and logs under `dir` and its
    /// state under `dir/node` (which `listing` leaves out).
    fn keep(dir: &Path, family: PanelFamily) -> SystemConfig {
        let mut system = crate::config::development(&dir.join("node"), "t", 0).system;
        system.keep = KeepConfig {
            family,
            backup_directory: dir.join("backups"),
            log_directory: dir.join("log"),
        };
        system
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p == dir.join("node") {
                    continue;
                }
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn verified_backups_and_the_log_land_in_pelicans_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Received::new(&keep(tmp.path(), PanelFamily::Pelican), S, "t1");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"one").as_bytes())
            .unwrap();
        r.announce_backup_checksum(B2, sha(b"two").to_uppercase().as_bytes())
            .unwrap();
        r.receive_backup(B2, &b"two"[..]).unwrap();
        r.receive_install_log(&b"installed\n"[..]).unwrap();
        r.verify().unwrap();
        assert!(
            listing(tmp.path())
                .iter()
                .all(|p| !p.ends_with(".tar.gz") || p.contains(".part")),
            "nothing under a final name before the commit"
        );
        r.commit().unwrap();
        let b1 = tmp.path().join(format!("backups/{S}/{B1}.tar.gz"));
        assert_eq!(fs::read(b1).unwrap(), b"one");
        assert_eq!(
            fs::read(tmp.path().join(format!("log/install/{S}.log"))).unwrap(),
            b"installed\n"
        );
        assert_eq!(listing(tmp.path()).len(), 7, "{:?}", listing(tmp.path()));
    }

    #[test]
    fn pterodactyl_keeps_backups_flat() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Received::new(&keep(tmp.path(), PanelFamily::Pterodactyl), S, "t1");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"one").as_bytes())
            .unwrap();
        r.verify().unwrap();
        r.commit().unwrap();
        assert_eq!(
            fs::read(tmp.path().join(format!("backups/{B1}.tar.gz"))).unwrap(),
            b"one"
        );
    }

    #[test]
    fn a_bad_or_missing_digest_fails_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let k = keep(tmp.path(), PanelFamily::Pelican);
        let mut r = Received::new(&k, S, "t1");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"other").as_bytes())
            .unwrap();
        r.receive_install_log(&b"log"[..]).unwrap();
        assert_eq!(
            r.verify().unwrap_err().to_string(),
            format!("backup {B1} checksum mismatch")
        );
        drop(r);
        assert_eq!(listing(tmp.path()), Vec::<String>::new());

        let mut r = Received::new(&k, S, "t2");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        assert_eq!(
            r.verify().unwrap_err().to_string(),
            format!("checksum missing for backup {B1}")
        );
        drop(r);
        let mut r = Received::new(&k, S, "t3");
        r.announce_backup_checksum(B2, sha(b"x").as_bytes())
            .unwrap();
        assert_eq!(
            r.verify().unwrap_err().to_string(),
            format!("backup {B2} missing: only its checksum was sent")
        );
        drop(r);
        assert_eq!(listing(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn a_committed_set_is_taken_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Received::new(&keep(tmp.path(), PanelFamily::Pelican), S, "t1");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"one").as_bytes())
            .unwrap();
        r.receive_install_log(&b"log"[..]).unwrap();
        let mut done = r.commit().unwrap();
        done.remove();
        assert_eq!(listing(tmp.path()), Vec::<String>::new());
    }

    #[test]
    fn an_existing_backup_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let k = keep(tmp.path(), PanelFamily::Pterodactyl);
        fs::create_dir_all(&k.keep.backup_directory).unwrap();
        fs::write(k.keep.backup_file(S, B1), b"mine").unwrap();
        let mut r = Received::new(&k, S, "t1");
        assert!(matches!(
            r.receive_backup(B1, &b"theirs"[..]),
            Err(ExtrasError::Exists(..))
        ));
        assert_eq!(fs::read(k.keep.backup_file(S, B1)).unwrap(), b"mine");
    }

    /// The ledger outlives the `Received` and the `Committed`: what a
    /// committed transfer put in place (and the directories it made) is
    /// taken back by `remove_received` alone, as after a restart.
    #[test]
    fn the_ledger_takes_back_a_committed_set_without_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let k = keep(tmp.path(), PanelFamily::Pelican);
        let mut r = Received::new(&k, S, "t1");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"one").as_bytes())
            .unwrap();
        r.receive_install_log(&b"log"[..]).unwrap();
        let done = r.commit().unwrap();
        std::mem::forget(done);
        assert!(tmp.path().join(format!("backups/{S}/{B1}.tar.gz")).exists());
        assert_eq!(remove_received(&k, S), 2);
        assert_eq!(listing(tmp.path()), Vec::<String>::new());
        assert!(!ledger_path(&k, S).exists());
        assert_eq!(remove_received(&k, S), 0, "only once");
    }

    /// A crash while a backup streams leaves its temporary file; the
    /// ledger names it. A commit's `keep_received` leaves the files.
    #[test]
    fn the_ledger_names_temporaries_and_a_kept_set_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let k = keep(tmp.path(), PanelFamily::Pterodactyl);
        let mut r = Received::new(&k, S, "t1");
        r.receive_backup(B1, &b"half"[..]).unwrap();
        std::mem::forget(r); // as a SIGKILL: no Drop
        assert_eq!(listing(tmp.path()).len(), 2, "{:?}", listing(tmp.path()));
        assert_eq!(remove_received(&k, S), 1);
        assert_eq!(listing(tmp.path()), Vec::<String>::new());

        let mut r = Received::new(&k, S, "t2");
        r.receive_backup(B1, &b"one"[..]).unwrap();
        r.announce_backup_checksum(B1, sha(b"one").as_bytes())
            .unwrap();
        let _done = r.commit().unwrap();
        keep_received(&k, S);
        assert_eq!(remove_received(&k, S), 0);
        assert_eq!(
            fs::read(tmp.path().join(format!("backups/{B1}.tar.gz"))).unwrap(),
            b"one"
        );
    }
}
