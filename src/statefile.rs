//! Every state file the daemon keeps (the server registry, the token replay
//! guard, the phase of each transfer in flight) is written here and
//! nowhere else, one way: write a temporary file beside it, fsync it,
//! rename it over the old one, fsync the directory. A reader therefore sees
//! the old file or the new one, never a torn mix, even after a power loss
//! or a SIGKILL in the middle of a write.
//!
//! Temporary files are named `.<name>.tmp` so a directory scan can skip
//! them (`is_temporary`); one left by a crash is garbage, never state.
//! This module imports nothing else of ferry.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path)?;
    let tmp = temporary(path)?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serializes `value` as JSON and writes it with `write`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write(path, &bytes)
}

/// Removes a state file durably: the removal is on disk when this returns,
/// so a finished transfer never comes back as an orphan after a crash.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// True for the temporary files `write` leaves behind when it dies midway.
pub fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
}

fn parent(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Ok(Path::new(".")),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no directory", path.display()),
        )),
    }
}

fn temporary(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    Ok(path.with_file_name(format!(".{name}.tmp")))
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"a long first version").unwrap();
        write(&path, b"short").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["state.json"], "no temporary left");
    }

    /// A writer killed midway leaves only its temporary file: the state
    /// file still holds the last complete version, and the torn bytes are
    /// recognisable as a temporary that no reader takes for state.
    #[test]
    fn a_torn_write_is_never_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        write_json(&path, &serde_json::json!({"phase": "installing"})).unwrap();
        // What a SIGKILL between write_all and rename leaves behind.
        let torn = temporary(&path).unwrap();
        fs::write(&torn, br#"{"phase": "repor"#).unwrap();
        assert!(is_temporary(&torn));
        assert!(!is_temporary(&path));
        let read: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(read["phase"], "installing");
        // The next write replaces the stale temporary and succeeds.
        write_json(&path, &serde_json::json!({"phase": "reporting"})).unwrap();
        let read: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(read["phase"], "reporting");
        assert!(!torn.exists());
    }

    #[test]
    fn removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.json");
        write(&path, b"x").unwrap();
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
    }
}
