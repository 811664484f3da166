//! Pre-copy's writes into a staged tree (the destination's half of
//! docs/transport.md "Pre-copy"): removing, patching and creating entries
//! with the extractor's own rules (`Target`: every path resolved from the
//! staging root one component at a time with `O_NOFOLLOW`, no `..`, owner
//! applied, bytes counted against the limits), then checking each entry
//! of the source's manifest against what is there.

use super::{io_fail, name, reserve, unsafe_path, Target};
use crate::archive::extract::Fail;
use crate::archive::staging::remove_tree_at;
use crate::archive::sys;
use crate::archive::tarfmt;
use crate::archive::walk;
use crate::archive::{Counters, ExtractError, ExtractLimits, Staging};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;

/// What the manifest says an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected<'p> {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: &'p [u8],
    },
    /// Another path of the regular file at `to`.
    HardLink {
        to: &'p [u8],
    },
}

/// Applies a delta and checks a manifest beneath a staging directory.
pub struct Patcher<'a> {
    target: Target<'a>,
    /// Directories to give their mode and mtime at the end, in walk order.
    dirs: Vec<(Vec<u8>, u32, i64)>,
}

/// A file being written by a delta's file op.
pub struct PatchFile {
    fd: OwnedFd,
    path: String,
    fresh: bool,
}

fn err(f: Fail) -> ExtractError {
    match f {
        Fail::Error(e) => e,
        Fail::Halt(_) => ExtractError::Cancelled,
    }
}

fn corrupt(path: &str, what: &str) -> ExtractError {
    ExtractError::Corrupt(format!("{path}: {what}"))
}

/// A delta's or manifest's path as components: refused when it could
/// leave the root (`..`, absolute) or names the root itself.
fn components<'p>(path: &'p [u8], display: &str) -> Result<Vec<&'p [u8]>, ExtractError> {
    match tarfmt::components(path) {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => Err(ExtractError::Unsafe(display.to_string())),
    }
}

impl<'a> Patcher<'a> {
    pub fn new(
        staging: &Staging,
        limits: &ExtractLimits,
        counters: &'a Counters,
    ) -> Result<Patcher<'a>, ExtractError> {
        Ok(Patcher {
            target: Target::new(staging.dir_fd(), limits, counters).map_err(err)?,
            dirs: Vec::new(),
        })
    }

    /// The directory holding `comps`' last component, or None when a
    /// component on the way is missing, not a directory, or a symlink.
    fn existing_parent(&self, comps: &[&[u8]], path: &str) -> Result<Option<OwnedFd>, Fail> {
        let mut cur: Option<OwnedFd> = None;
        for c in &comps[..comps.len() - 1] {
            let n = name(c, path)?;
            let at = cur.as_ref().map_or(self.target.root, |f| f.as_raw_fd());
            match sys::open_at(at, &n, sys::DIR_FLAGS, 0) {
                Ok(fd) => cur = Some(fd),
                Err(e) if matches!(sys::errno(&e), libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => {
                    return Ok(None)
                }
                Err(e) => return Err(io_fail("opening directory for", path, e)),
            }
        }
        match cur {
            Some(fd) => Ok(Some(fd)),
            None => sys::open_at(self.target.root, c".", sys::DIR_FLAGS, 0)
                .map(Some)
                .map_err(|e| io_fail("opening", ".", e)),
        }
    }

    /// Removes whatever is at `path` (a directory with all it holds);
    /// nothing there is fine.
    pub fn remove(&mut self, path: &[u8]) -> Result<(), ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        // A cached parent may be the directory removed now.
        self.target.cache = None;
        let Some(dir) = self.existing_parent(&comps, &display).map_err(err)? else {
            return Ok(());
        };
        let n = name(comps[comps.len() - 1], &display).map_err(err)?;
        remove_tree_at(dir.as_raw_fd(), &n).map_err(|e| err(io_fail("removing", &display, e)))
    }

    /// Removes a directory at `comps` (a non-directory replaces it).
    fn clear_dir(&mut self, dir: RawFd, n: &std::ffi::CStr, path: &str) -> Result<(), Fail> {
        match sys::stat_at(dir, n) {
            Ok(st) if sys::file_type(&st) == libc::S_IFDIR => {
                self.target.cache = None;
                remove_tree_at(dir, n).map_err(|e| io_fail("removing", path, e))
            }
            _ => Ok(()),
        }
    }

    pub fn dir(&mut self, path: &[u8], mode: u32, mtime: i64) -> Result<(), ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        self.target
            .dir(&comps, &display, mode, (mtime, 0))
            .map_err(err)
    }

    pub fn symlink(&mut self, path: &[u8], to: &[u8], mtime: i64) -> Result<(), ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        let dir = self.target.parent(&comps, &display).map_err(err)?;
        let n = name(comps[comps.len() - 1], &display).map_err(err)?;
        self.clear_dir(dir, &n, &display).map_err(err)?;
        self.target
            .symlink(&comps, &display, to, (mtime, 0))
            .map_err(err)
    }

    pub fn hard_link(&mut self, path: &[u8], to: &[u8]) -> Result<(), ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        let to_comps = components(to, &display)?;
        let dir = self.target.parent(&comps, &display).map_err(err)?;
        let n = name(comps[comps.len() - 1], &display).map_err(err)?;
        self.clear_dir(dir, &n, &display).map_err(err)?;
        self.target
            .hard_link(&comps, &display, &to_comps)
            .map_err(err)
    }

    /// Opens the file a file op writes: a new one (whatever was at the
    /// path removed) when `fresh`, else the regular file already there.
    pub fn open_file(&mut self, path: &[u8], fresh: bool) -> Result<PatchFile, ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        let dir = self.target.parent(&comps, &display).map_err(err)?;
        let n = name(comps[comps.len() - 1], &display).map_err(err)?;
        let fd = if fresh {
            self.clear_dir(dir, &n, &display).map_err(err)?;
            match sys::unlink_at(dir, &n, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(io_fail("replacing", &display, e))),
            }
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            sys::open_at(dir, &n, flags, 0o600)
                .map_err(|e| err(io_fail("creating", &display, e)))?
        } else {
            let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            let fd = match sys::open_at(dir, &n, flags, 0) {
                Ok(fd) => fd,
                Err(e) if matches!(sys::errno(&e), libc::ELOOP) => {
                    return Err(err(unsafe_path(&display)))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(corrupt(&display, "the file to patch is missing"))
                }
                Err(e) => return Err(err(io_fail("opening", &display, e))),
            };
            let st = sys::fstat(fd.as_raw_fd()).map_err(|e| err(io_fail("stat", &display, e)))?;
            if sys::file_type(&st) != libc::S_IFREG {
                return Err(corrupt(
                    &display,
                    "the entry to patch is not a regular file",
                ));
            }
            fd
        };
        Ok(PatchFile {
            fd,
            path: display,
            fresh,
        })
    }

    /// Writes a block's bytes at `offset`, counted against the limits.
    pub fn write_at(
        &mut self,
        file: &PatchFile,
        bytes: &[u8],
        offset: u64,
    ) -> Result<(), ExtractError> {
        let t = &mut self.target;
        reserve(
            &mut t.written,
            &mut t.since_free,
            &mut t.free,
            t.max_bytes,
            t.root,
            bytes.len() as u64,
        )
        .map_err(err)?;
        sys::pwrite_all(file.fd.as_raw_fd(), bytes, offset)
            .map_err(|e| err(io_fail("writing", &file.path, e)))
    }

    /// Sizes the file, gives it its owner, mode and mtime, and returns
    /// the SHA-256 of its whole content as it now is on disk.
    pub fn close_file(
        &mut self,
        file: PatchFile,
        size: u64,
        mode: u32,
        mtime: i64,
        digest: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ExtractError> {
        let fd = file.fd.as_raw_fd();
        let fail = |step: &str, e| err(io_fail(step, &file.path, e));
        sys::ftruncate(fd, size).map_err(|e| fail("sizing", e))?;
        if file.fresh {
            if let Some((uid, gid)) = self.target.owner {
                sys::fchown(fd, uid, gid).map_err(|e| fail("chown", e))?;
            }
        }
        sys::fchmod(fd, mode & 0o777).map_err(|e| fail("chmod", e))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = 0u64;
        let f = std::fs::File::from(file.fd.try_clone().map_err(|e| fail("reading back", e))?);
        while pos < size {
            let want = (size - pos).min(buf.len() as u64) as usize;
            let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf[..want], pos)
                .map_err(|e| fail("reading back", e))?;
            if n == 0 {
                return Err(corrupt(&file.path, "shorter than its size"));
            }
            digest(&buf[..n]);
            pos += n as u64;
        }
        sys::set_times_fd(fd, mtime, 0).map_err(|e| fail("setting times of", e))?;
        Ok(())
    }

    /// Checks one manifest entry against the staged tree and gives it the
    /// manifest's mode and mtime where they differ (directories at
    /// `finish`, deepest first).
    pub fn check(
        &mut self,
        path: &[u8],
        expected: Expected<'_>,
        mode: u32,
        mtime: i64,
    ) -> Result<(), ExtractError> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps = components(path, &display)?;
        let Some(dir) = self.existing_parent(&comps, &display).map_err(err)? else {
            return Err(corrupt(&display, "missing"));
        };
        let dir = dir.as_raw_fd();
        let n = name(comps[comps.len() - 1], &display).map_err(err)?;
        let st = match sys::stat_at(dir, &n) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(&display, "missing"))
            }
            Err(e) => return Err(err(io_fail("stat", &display, e))),
        };
        let kind = sys::file_type(&st);
        match expected {
            Expected::File { size } => {
                if kind != libc::S_IFREG {
                    return Err(corrupt(&display, "not a regular file"));
                }
                if st.st_size.max(0) as u64 != size {
                    return Err(corrupt(
                        &display,
                        &format!("{} bytes, the source has {size}", st.st_size),
                    ));
                }
            }
            Expected::Dir => {
                if kind != libc::S_IFDIR {
                    return Err(corrupt(&display, "not a directory"));
                }
                self.dirs.push((path.to_vec(), mode & 0o777, mtime));
                return Ok(());
            }
            Expected::Symlink { target } => {
                if kind != libc::S_IFLNK {
                    return Err(corrupt(&display, "not a symlink"));
                }
                let now = sys::read_link_at(dir, &n)
                    .map_err(|e| err(io_fail("reading link", &display, e)))?;
                if now != target {
                    return Err(corrupt(&display, "the symlink's target differs"));
                }
                if st.st_mtime != mtime {
                    sys::set_link_times_at(dir, &n, mtime, 0)
                        .map_err(|e| err(io_fail("setting times of", &display, e)))?;
                }
                return Ok(());
            }
            Expected::HardLink { to } => {
                let to_display = String::from_utf8_lossy(to).into_owned();
                let to_comps = components(to, &to_display)?;
                let first = self
                    .existing_parent(&to_comps, &to_display)
                    .map_err(err)?
                    .and_then(|d| {
                        let n = name(to_comps[to_comps.len() - 1], &to_display).ok()?;
                        sys::stat_at(d.as_raw_fd(), &n).ok()
                    });
                let same = first.is_some_and(|f| {
                    sys::file_type(&f) == libc::S_IFREG
                        && kind == libc::S_IFREG
                        && (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino)
                });
                if !same {
                    return Err(corrupt(
                        &display,
                        &format!("not a hard link to {to_display}"),
                    ));
                }
                // Mode and mtime are its first path's.
                return Ok(());
            }
        }
        if st.st_mode & 0o777 != mode & 0o777 || st.st_mtime != mtime {
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            let fd = sys::open_at(dir, &n, flags, 0)
                .map_err(|e| err(io_fail("opening", &display, e)))?;
            sys::fchmod(fd.as_raw_fd(), mode & 0o777)
                .map_err(|e| err(io_fail("chmod", &display, e)))?;
            sys::set_times_fd(fd.as_raw_fd(), mtime, 0)
                .map_err(|e| err(io_fail("setting times of", &display, e)))?;
        }
        Ok(())
    }

    /// Gives the checked directories their mode and mtime, deepest first.
    pub fn finish(&mut self) -> Result<(), ExtractError> {
        self.target.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mode, mtime) in dirs.iter().rev() {
            self.target
                .apply_dir(path, *mode, (*mtime, 0))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// How many entries the staged tree holds (the manifest must name them all).
pub fn count_entries(staging: &Staging, cancel: &AtomicBool) -> Result<u64, ExtractError> {
    struct Count<'c> {
        n: u64,
        cancel: &'c AtomicBool,
    }
    impl walk::Visitor for Count<'_> {
        type Error = ();
        fn visit(&mut self, _path: &[u8], _node: walk::Node) -> Result<(), ()> {
            self.n += 1;
            Ok(())
        }
        fn cancelled(&self) -> bool {
            self.cancel.load(std::sync::atomic::Ordering::Relaxed)
        }
    }
    let mut c = Count { n: 0, cancel };
    walk::walk(staging.path(), false, &mut c).map_err(|e| match e {
        walk::WalkStop::Io(m) => ExtractError::Io(m),
        _ => ExtractError::Cancelled,
    })?;
    Ok(c.n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const UUID: &str = "0b6f3a52-5c1e-4f8e-9a0d-2f4c6b8e1a3d";

    /// A staging directory holding a symlink `evil` to a directory
    /// outside it that holds `x`.
    fn world() -> (tempfile::TempDir, Staging, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("x"), "keep").unwrap();
        let staging = Staging::create(dir.path(), UUID, "t1").unwrap();
        std::os::unix::fs::symlink(&outside, staging.path().join("evil")).unwrap();
        std::fs::write(staging.path().join("f"), "data").unwrap();
        (dir, staging, outside)
    }

    fn unsafe_or_missing(e: ExtractError) -> bool {
        matches!(e, ExtractError::Unsafe(_) | ExtractError::Corrupt(_))
    }

    #[test]
    fn no_op_leaves_the_root_or_follows_a_symlink() {
        let (_dir, staging, outside) = world();
        let counters = Counters::default();
        let mut p = Patcher::new(&staging, &ExtractLimits::default(), &counters).unwrap();
        // `..` and absolute paths are refused before anything is touched.
        for path in [
            &b"../outside/x"[..],
            b"/etc/passwd",
            b"a/../../x",
            b"",
            b".",
        ] {
            assert!(matches!(p.remove(path), Err(ExtractError::Unsafe(_))));
            assert!(matches!(
                p.open_file(path, true),
                Err(ExtractError::Unsafe(_))
            ));
        }
        // Through the symlink: nothing removed, created or patched there.
        p.remove(b"evil/x").unwrap();
        assert!(p.open_file(b"evil/x", true).is_err());
        assert!(p.open_file(b"evil/x", false).is_err());
        assert!(p.symlink(b"evil/y", b"/", 0).is_err());
        assert!(p.dir(b"evil/d", 0o755, 0).is_err());
        assert_eq!(std::fs::read_to_string(outside.join("x")).unwrap(), "keep");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        // The symlink itself is not a file to patch, nor a hard link's target.
        assert!(p.open_file(b"evil", false).is_err());
        assert!(p.hard_link(b"h", b"evil").is_err());
        // Checking through it finds nothing.
        assert!(unsafe_or_missing(
            p.check(b"evil/x", Expected::File { size: 4 }, 0o644, 0)
                .unwrap_err()
        ));
        // Removing the symlink removes the link, not what it names.
        p.remove(b"evil").unwrap();
        assert!(outside.join("x").exists());
    }

    #[test]
    fn a_patched_file_is_rehashed_from_disk() {
        let (_dir, staging, _outside) = world();
        let counters = Counters::default();
        let mut p = Patcher::new(&staging, &ExtractLimits::default(), &counters).unwrap();
        let f = p.open_file(b"f", false).unwrap();
        p.write_at(&f, b"DA", 0).unwrap();
        let mut sha = Sha256::new();
        p.close_file(f, 6, 0o600, 5, &mut |b| sha.update(b))
            .unwrap();
        assert_eq!(
            <[u8; 32]>::from(sha.finalize()),
            <[u8; 32]>::from(Sha256::digest(b"DAta\0\0")),
            "written, sized, read back"
        );
        p.check(b"f", Expected::File { size: 6 }, 0o640, 7).unwrap();
        let meta = std::fs::metadata(staging.path().join("f")).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.mtime()),
            (0o640, 7)
        );
        // A size the file does not have is a mismatch.
        assert!(matches!(
            p.check(b"f", Expected::File { size: 5 }, 0o640, 7),
            Err(ExtractError::Corrupt(_))
        ));
        // A disk limit counts what the delta writes.
        let limits = ExtractLimits {
            max_bytes: Some(3),
            owner: None,
        };
        let mut p = Patcher::new(&staging, &limits, &counters).unwrap();
        let f = p.open_file(b"g", true).unwrap();
        assert!(matches!(
            p.write_at(&f, b"four", 0),
            Err(ExtractError::NoSpace)
        ));
    }
}
