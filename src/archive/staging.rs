//! The private staging directory an incoming server is extracted into
//! (`<data>/.ferry-staging/<uuid>.<transfer_id>`), its commit by
//! `renameat2(RENAME_NOREPLACE)`, and tree removal that never follows a link.

use super::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Name of the staging parent inside the data directory. Not a UUID, so
/// standalone adoption of `<data>/<uuid>` directories never picks it up.
pub const STAGING_DIR: &str = ".ferry-staging";

pub struct Staging {
    path: PathBuf,
    data_path: PathBuf,
    uuid: CString,
    name: CString,
    data_fd: OwnedFd,
    parent_fd: OwnedFd,
    dir_fd: OwnedFd,
    done: bool,
}

/// A single path component we may create: no `/`, NUL, `.` or `..`.
fn safe_name(s: &str, what: &str) -> io::Result<CString> {
    if s.is_empty() || s == "." || s == ".." || s.len() > 200 || s.contains('/') || s.contains('\0')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} for a staging directory: {s:?}"),
        ));
    }
    sys::cstring(s.as_bytes())
}

/// Opens (creating if missing) `<data>/.ferry-staging`, mode 0700, never
/// through a symlink.
fn open_staging_parent(data_fd: RawFd) -> io::Result<OwnedFd> {
    let name = sys::cstring(STAGING_DIR.as_bytes())?;
    match sys::mkdir_at(data_fd, &name, 0o700) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let fd = sys::open_at(data_fd, &name, sys::DIR_FLAGS, 0)?;
    sys::fchmod(fd.as_raw_fd(), 0o700)?;
    Ok(fd)
}

impl Staging {
    pub fn create(data_dir: &Path, uuid: &str, transfer_id: &str) -> io::Result<Staging> {
        let uuid_c = safe_name(uuid, "server uuid")?;
        safe_name(transfer_id, "transfer id")?;
        let name_s = format!("{uuid}.{transfer_id}");
        let name = safe_name(&name_s, "staging name")?;
        // The data directory itself comes from the configuration and may
        // legitimately be a symlink; nothing beneath it is followed.
        let data_fd = sys::open_path(data_dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let parent_fd = open_staging_parent(data_fd.as_raw_fd())?;
        sys::mkdir_at(parent_fd.as_raw_fd(), &name, 0o700)?;
        let dir_fd = match sys::open_at(parent_fd.as_raw_fd(), &name, sys::DIR_FLAGS, 0) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = remove_tree_at(parent_fd.as_raw_fd(), &name);
                return Err(e);
            }
        };
        Ok(Staging {
            path: data_dir.join(STAGING_DIR).join(&name_s),
            data_path: data_dir.to_path_buf(),
            uuid: uuid_c,
            name,
            data_fd,
            parent_fd,
            dir_fd,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The staging directory's own fd: extraction works relative to it.
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.dir_fd.as_raw_fd()
    }

    /// Renames staging to `<data>/<uuid>`; fails with `AlreadyExists` if
    /// that exists (an existing server is never overwritten). On failure the
    /// staging directory is removed.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        sys::rename_noreplace(
            self.parent_fd.as_raw_fd(),
            &self.name,
            self.data_fd.as_raw_fd(),
            &self.uuid,
        )?;
        self.done = true;
        Ok(self
            .data_path
            .join(std::ffi::OsStr::from_bytes(self.uuid.to_bytes())))
    }

    /// Removes staging without following links.
    pub fn abort(mut self) -> io::Result<()> {
        self.done = true;
        remove_tree_at(self.parent_fd.as_raw_fd(), &self.name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = remove_tree_at(self.parent_fd.as_raw_fd(), &self.name) {
                log::warn!("archive: removing {}: {e}", self.path.display());
            }
        }
    }
}

struct Frame {
    fd: OwnedFd,
    name: CString,
    names: Vec<CString>,
    next: usize,
}

fn open_for_removal(parent: RawFd, name: &CStr) -> io::Result<Frame> {
    let fd = match sys::open_at(parent, name, sys::DIR_FLAGS, 0) {
        // Not root, and the directory is not readable or searchable (an
        // archive may carry mode 0000): we own it, so open it up first,
        // through an `O_PATH` fd, never by name through a link.
        Err(e) if sys::errno(&e) == libc::EACCES && !sys::is_root() => {
            sys::chmod_dir_at(parent, name, 0o700)?;
            sys::open_at(parent, name, sys::DIR_FLAGS, 0)?
        }
        other => other?,
    };
    if !sys::is_root() {
        // An archive may have made a directory unwritable; we own it.
        let st = sys::fstat(fd.as_raw_fd())?;
        if st.st_mode & 0o300 != 0o300 {
            sys::fchmod(fd.as_raw_fd(), 0o700)?;
        }
    }
    let names = sys::read_dir_names(fd.as_raw_fd())?;
    Ok(Frame {
        fd,
        name: name.to_owned(),
        names,
        next: 0,
    })
}

fn is_dir_error(e: &io::Error) -> bool {
    // unlinkat without AT_REMOVEDIR on a directory: EISDIR on Linux.
    matches!(sys::errno(e), libc::EISDIR | libc::EPERM)
}

/// Removes `name` in `parent` and everything beneath it, iteratively and
/// entirely through dirfds. A symlink is removed, never followed.
pub fn remove_tree_at(parent: RawFd, name: &CStr) -> io::Result<()> {
    match sys::unlink_at(parent, name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if is_dir_error(&e) => {}
        Err(e) => return Err(e),
    }
    let mut stack = vec![match open_for_removal(parent, name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }];
    while let Some(top) = stack.last_mut() {
        if top.next < top.names.len() {
            let child = std::mem::take(&mut top.names[top.next]);
            top.next += 1;
            let fd = top.fd.as_raw_fd();
            match sys::unlink_at(fd, &child, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if is_dir_error(&e) => match open_for_removal(fd, &child) {
                    Ok(f) => stack.push(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
            continue;
        }
        // All children gone: remove this directory from its parent.
        let done = stack.pop().map(|f| f.name);
        let parent_fd = stack.last().map_or(parent, |f| f.fd.as_raw_fd());
        if let Some(n) = done {
            match sys::unlink_at(parent_fd, &n, libc::AT_REMOVEDIR) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Moves `<data>/<name>` into the staging area as `<name>.removing-<nonce>`
/// (one rename, never through a link), so a daemon killed while removing a
/// large tree leaves nothing half-removed in place: start-up sweeps
/// staging. Returns the new path, or None when there was nothing to move.
pub fn move_out(data_dir: &Path, name: &str, nonce: &str) -> io::Result<Option<PathBuf>> {
    let name_c = safe_name(name, "directory name")?;
    let moved_s = format!("{name}.removing-{nonce}");
    let moved = safe_name(&moved_s, "removal name")?;
    let data_fd = match sys::open_path(data_dir, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let parent_fd = open_staging_parent(data_fd.as_raw_fd())?;
    match sys::rename_noreplace(data_fd.as_raw_fd(), &name_c, parent_fd.as_raw_fd(), &moved) {
        Ok(()) => Ok(Some(data_dir.join(STAGING_DIR).join(moved_s))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn remove_tree(path: &Path) -> io::Result<()> {
    let name = path
        .file_name()
        .filter(|n| n.as_bytes() != b"..")
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot remove {}: no final component", path.display()),
            )
        })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = match sys::open_path(parent, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_tree_at(parent_fd.as_raw_fd(), &sys::cstring(name.as_bytes())?)
}

pub fn remove_stale_staging(data_dir: &Path) -> io::Result<Vec<String>> {
    let data_fd = match sys::open_path(data_dir, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let name = sys::cstring(STAGING_DIR.as_bytes())?;
    let parent = match sys::open_at(data_fd.as_raw_fd(), &name, sys::DIR_FLAGS, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // One staging directory that cannot be removed must not keep the
    // others: each failure is logged and the sweep goes on.
    let mut removed = Vec::new();
    for entry in sys::read_dir_names(parent.as_raw_fd())? {
        let shown = entry.to_string_lossy().into_owned();
        match remove_tree_at(parent.as_raw_fd(), &entry) {
            Ok(()) => removed.push(shown),
            Err(e) => log::error!(
                "archive: cannot remove stale staging {}/{STAGING_DIR}/{shown}: {e}",
                data_dir.display()
            ),
        }
    }
    Ok(removed)
}
