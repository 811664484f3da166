//! Safe writes beneath the extraction root. Every path is resolved one
//! component at a time with `openat(O_NOFOLLOW|O_DIRECTORY)` from the
//! root's fd, so no symlink (including one created earlier by the same
//! archive) is ever traversed, and nothing is checked by name then reopened.
//! Also enforces the byte limits, strips setuid/setgid/sticky, applies the
//! owner (as root) and mtimes, directories' last.
//!
//! Space is counted as the bytes actually written: all-zero runs (and a
//! sparse entry's holes) are left as holes and cost nothing, so a sparse
//! file counts its data, not its apparent size (docs/decisions.md). Hard
//! links are accepted when they name a regular file already extracted
//! beneath the root; they cost no space.

pub mod patch;

use super::extract::{Blocks, Fail};
use super::pipe;
use super::sys;
use super::tarfmt::Sparse;
use super::{Counters, ExtractError, ExtractLimits};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
}

/// Free space is re-read from the filesystem at least this often.
const FREE_RECHECK: u64 = 256 << 20;
/// Bytes of directory paths kept for the final mode/mtime pass; past this
/// (a hostile archive of millions of deep directories) directories get
/// their metadata at once instead, so memory stays bounded.
const MAX_DEFERRED: usize = 64 << 20;
/// Granularity at which all-zero runs are skipped (left as holes).
const HOLE_PIECE: usize = 64 * 1024;

pub struct Target<'a> {
    root: RawFd,
    /// Last parent directory opened, by its path (entries come grouped).
    cache: Option<(Vec<u8>, OwnedFd)>,
    owner: Option<(u32, u32)>,
    max_bytes: Option<u64>,
    /// Directories to give their mode and mtime once their contents exist.
    dirs: Vec<(Vec<u8>, u32, (i64, u32))>,
    deferred_bytes: usize,
    /// Free bytes when last measured, and bytes promised since.
    free: u64,
    since_free: u64,
    counters: &'a Counters,
    pub files: u64,
    /// Content bytes read from the archive.
    pub bytes: u64,
    /// Bytes written to disk (what `max_bytes` limits).
    written: u64,
}

fn io_fail(step: &str, path: &str, e: io::Error) -> Fail {
    match sys::errno(&e) {
        libc::ENOSPC | libc::EDQUOT => Fail::Error(ExtractError::NoSpace),
        _ => Fail::Error(ExtractError::Io(format!("{step} {path}: {e}"))),
    }
}

fn unsafe_path(path: &str) -> Fail {
    Fail::Error(ExtractError::Unsafe(path.to_string()))
}

fn name(c: &[u8], path: &str) -> Result<CString, Fail> {
    sys::cstring(c).map_err(|_| unsafe_path(path))
}

/// Accounts `size` more bytes about to be written against `max_bytes`
/// and the filesystem's free space (re-read when the bytes promised since
/// the last look could exceed it, or every `FREE_RECHECK` bytes).
fn reserve(
    written: &mut u64,
    since_free: &mut u64,
    free: &mut u64,
    max_bytes: Option<u64>,
    root: RawFd,
    size: u64,
) -> Result<(), Fail> {
    let used = written.saturating_add(size);
    if max_bytes.is_some_and(|max| used > max) {
        return Err(Fail::Error(ExtractError::NoSpace));
    }
    *written = used;
    *since_free = since_free.saturating_add(size);
    if *since_free > *free || *since_free > FREE_RECHECK {
        *free = sys::free_bytes(root).map_err(|e| io_fail("statvfs", ".", e))?;
        *since_free = size;
        if size > *free {
            return Err(Fail::Error(ExtractError::NoSpace));
        }
    }
    Ok(())
}

impl<'a> Target<'a> {
    pub fn new(
        root: RawFd,
        limits: &ExtractLimits,
        counters: &'a Counters,
    ) -> Result<Target<'a>, Fail> {
        let owner = limits.owner.filter(|_| sys::is_root());
        if let Some((uid, gid)) = owner {
            sys::fchown(root, uid, gid).map_err(|e| io_fail("chown", ".", e))?;
        }
        let free = sys::free_bytes(root).map_err(|e| io_fail("statvfs", ".", e))?;
        Ok(Target {
            root,
            cache: None,
            owner,
            max_bytes: limits.max_bytes,
            dirs: Vec::new(),
            deferred_bytes: 0,
            free,
            since_free: 0,
            counters,
            files: 0,
            bytes: 0,
            written: 0,
        })
    }

    /// Opens the directory holding the last component of `comps`, creating
    /// missing parents (as tar does). A symlink or file on the way is refused.
    fn parent(&mut self, comps: &[&[u8]], path: &str) -> Result<RawFd, Fail> {
        let parents = &comps[..comps.len() - 1];
        if parents.is_empty() {
            return Ok(self.root);
        }
        let key = parents.join(&b'/');
        if let Some((k, fd)) = &self.cache {
            if *k == key {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = self.walk(parents, path, true)?;
        let raw = fd.as_raw_fd();
        self.cache = Some((key, fd));
        Ok(raw)
    }

    fn walk(&self, comps: &[&[u8]], path: &str, create: bool) -> Result<OwnedFd, Fail> {
        let mut cur: Option<OwnedFd> = None;
        for c in comps {
            let n = name(c, path)?;
            let at = cur.as_ref().map_or(self.root, |f| f.as_raw_fd());
            let fd = match sys::open_at(at, &n, sys::DIR_FLAGS, 0) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match sys::mkdir_at(at, &n, 0o755) {
                        Ok(()) => self.chown_at(at, &n, path)?,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_fail("creating directory for", path, e)),
                    }
                    sys::open_at(at, &n, sys::DIR_FLAGS, 0).map_err(|e| match sys::errno(&e) {
                        libc::ELOOP | libc::ENOTDIR => unsafe_path(path),
                        _ => io_fail("opening directory for", path, e),
                    })?
                }
                // A symlink (ELOOP) or a non-directory on the way; or,
                // looking up a hard link's target, nothing there.
                Err(e) if matches!(sys::errno(&e), libc::ELOOP | libc::ENOTDIR) => {
                    return Err(unsafe_path(path))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !create => {
                    return Err(unsafe_path(path))
                }
                Err(e) => return Err(io_fail("opening directory for", path, e)),
            };
            cur = Some(fd);
        }
        match cur {
            Some(fd) => Ok(fd),
            None => sys::open_at(self.root, c".", sys::DIR_FLAGS, 0)
                .map_err(|e| io_fail("opening", ".", e)),
        }
    }

    fn chown_at(&self, dir: RawFd, n: &CString, path: &str) -> Result<(), Fail> {
        if let Some((uid, gid)) = self.owner {
            sys::lchown_at(dir, n, uid, gid).map_err(|e| io_fail("chown", path, e))?;
        }
        Ok(())
    }

    /// Removes a non-directory already at `n` (a later entry replaces an
    /// earlier one, as in tar). Never replaces a directory.
    fn replace(&self, dir: RawFd, n: &CString, path: &str) -> Result<(), Fail> {
        let st = sys::stat_at(dir, n).map_err(|e| io_fail("stat", path, e))?;
        if sys::file_type(&st) == libc::S_IFDIR {
            return Err(unsafe_path(path));
        }
        sys::unlink_at(dir, n, 0).map_err(|e| io_fail("replacing", path, e))
    }

    /// Writes a regular file: `map.regions` of data (the entry's bytes
    /// back to back), holes between them, `map.real_size` in all.
    pub fn file(
        &mut self,
        blocks: &mut Blocks<'_>,
        comps: &[&[u8]],
        path: &str,
        mode: u32,
        mtime: (i64, u32),
        map: &Sparse,
    ) -> Result<(), Fail> {
        let dir = self.parent(comps, path)?;
        let n = name(comps[comps.len() - 1], path)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match sys::open_at(dir, &n, flags, 0o600) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace(dir, &n, path)?;
                sys::open_at(dir, &n, flags, 0o600).map_err(|e| io_fail("creating", path, e))?
            }
            Err(e) => return Err(io_fail("creating", path, e)),
        };
        let raw = fd.as_raw_fd();
        let mut written_end: u64 = 0;
        for &(start, len) in &map.regions {
            let end = start + len;
            let mut pos = start;
            while pos < end {
                let Some(s) = blocks.slice((end - pos).min(usize::MAX as u64) as usize)? else {
                    return Err(Fail::Error(ExtractError::Corrupt(
                        "tar: truncated archive".into(),
                    )));
                };
                let s_len = s.len() as u64;
                // Write the non-zero runs; all-zero pieces stay holes.
                let mut runs: Vec<(usize, usize)> = Vec::new();
                let mut run_start: Option<usize> = None;
                let mut off = 0;
                while off < s.len() {
                    let stop = (off + HOLE_PIECE).min(s.len());
                    if pipe::is_zero(&s[off..stop]) {
                        if let Some(st) = run_start.take() {
                            runs.push((st, off));
                        }
                    } else if run_start.is_none() {
                        run_start = Some(off);
                    }
                    off = stop;
                }
                if let Some(st) = run_start {
                    runs.push((st, s.len()));
                }
                for (a, b) in runs {
                    // `s` borrows `blocks`, not `self`: reserving is fine.
                    let need = (b - a) as u64;
                    reserve(
                        &mut self.written,
                        &mut self.since_free,
                        &mut self.free,
                        self.max_bytes,
                        self.root,
                        need,
                    )?;
                    sys::pwrite_all(raw, &s[a..b], pos + a as u64)
                        .map_err(|e| io_fail("writing", path, e))?;
                    written_end = pos + b as u64;
                }
                pos += s_len;
                self.bytes += s_len;
                self.counters.bytes_done.fetch_add(s_len, Ordering::Relaxed);
            }
        }
        if written_end < map.real_size {
            sys::ftruncate(raw, map.real_size).map_err(|e| io_fail("sizing", path, e))?;
        }
        if let Some((uid, gid)) = self.owner {
            sys::fchown(raw, uid, gid).map_err(|e| io_fail("chown", path, e))?;
        }
        // Permission bits only: setuid, setgid and sticky are stripped.
        sys::fchmod(raw, mode & 0o777).map_err(|e| io_fail("chmod", path, e))?;
        sys::set_times_fd(raw, mtime.0, mtime.1)
            .map_err(|e| io_fail("setting times of", path, e))?;
        self.done_entry();
        Ok(())
    }

    /// A hard link at `comps` to the regular file at `to`, both beneath
    /// the root. Neither path is resolved through a symlink; a target that
    /// is missing or not a regular file (a directory, a symlink) is refused
    /// as unsafe, the way a link out of the tree is.
    pub fn hard_link(&mut self, comps: &[&[u8]], path: &str, to: &[&[u8]]) -> Result<(), Fail> {
        if comps == to {
            // A link to itself (GNU tar writes none, but it is harmless).
            self.done_entry();
            return Ok(());
        }
        let from_dir = match to.len() {
            1 => None,
            _ => Some(self.walk(&to[..to.len() - 1], path, false)?),
        };
        let from_raw = from_dir.as_ref().map_or(self.root, |f| f.as_raw_fd());
        let from = name(to[to.len() - 1], path)?;
        match sys::stat_at(from_raw, &from) {
            Ok(st) if sys::file_type(&st) == libc::S_IFREG => {}
            Ok(_) => return Err(unsafe_path(path)),
            Err(e) if matches!(sys::errno(&e), libc::ENOENT | libc::ENOTDIR) => {
                return Err(unsafe_path(path))
            }
            Err(e) => return Err(io_fail("stat", path, e)),
        }
        let dir = self.parent(comps, path)?;
        let n = name(comps[comps.len() - 1], path)?;
        match sys::link_at(from_raw, &from, dir, &n) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace(dir, &n, path)?;
                sys::link_at(from_raw, &from, dir, &n)
                    .map_err(|e| io_fail("creating hard link", path, e))?;
            }
            Err(e) => return Err(io_fail("creating hard link", path, e)),
        }
        self.done_entry();
        Ok(())
    }

    pub fn dir(
        &mut self,
        comps: &[&[u8]],
        path: &str,
        mode: u32,
        mtime: (i64, u32),
    ) -> Result<(), Fail> {
        let dir = self.parent(comps, path)?;
        let n = name(comps[comps.len() - 1], path)?;
        // Owner-writable while we fill it; the real mode comes at the end.
        match sys::mkdir_at(dir, &n, 0o700) {
            Ok(()) => self.chown_at(dir, &n, path)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let st = sys::stat_at(dir, &n).map_err(|e| io_fail("stat", path, e))?;
                if sys::file_type(&st) != libc::S_IFDIR {
                    self.replace(dir, &n, path)?;
                    sys::mkdir_at(dir, &n, 0o700)
                        .map_err(|e| io_fail("creating directory", path, e))?;
                    self.chown_at(dir, &n, path)?;
                }
            }
            Err(e) => return Err(io_fail("creating directory", path, e)),
        }
        let key = comps.join(&b'/');
        if self.deferred_bytes + key.len() <= MAX_DEFERRED {
            self.deferred_bytes += key.len();
            self.dirs.push((key, mode & 0o777, mtime));
        } else {
            self.apply_dir(&key, mode & 0o777, mtime)?;
        }
        self.done_entry();
        Ok(())
    }

    pub fn symlink(
        &mut self,
        comps: &[&[u8]],
        path: &str,
        target: &[u8],
        mtime: (i64, u32),
    ) -> Result<(), Fail> {
        if target.is_empty() {
            return Err(unsafe_path(path));
        }
        // The target text is stored as is; nothing ever resolves through it.
        let t = name(target, path)?;
        let dir = self.parent(comps, path)?;
        let n = name(comps[comps.len() - 1], path)?;
        match sys::symlink_at(&t, dir, &n) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace(dir, &n, path)?;
                sys::symlink_at(&t, dir, &n).map_err(|e| io_fail("creating symlink", path, e))?;
            }
            Err(e) => return Err(io_fail("creating symlink", path, e)),
        }
        self.chown_at(dir, &n, path)?;
        sys::set_link_times_at(dir, &n, mtime.0, mtime.1)
            .map_err(|e| io_fail("setting times of", path, e))?;
        self.done_entry();
        Ok(())
    }

    fn done_entry(&mut self) {
        self.files += 1;
        self.counters.files_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives directories their mode and mtime, deepest (latest) first, so
    /// creating their contents no longer changes them.
    pub fn finish(&mut self) -> Result<(), Fail> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mode, mtime) in dirs.iter().rev() {
            self.apply_dir(path, *mode, *mtime)?;
        }
        Ok(())
    }

    fn apply_dir(&self, path: &[u8], mode: u32, mtime: (i64, u32)) -> Result<(), Fail> {
        let display = String::from_utf8_lossy(path).into_owned();
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        let fd = self.walk(&comps, &display, false)?;
        sys::fchmod(fd.as_raw_fd(), mode).map_err(|e| io_fail("chmod", &display, e))?;
        sys::set_times_fd(fd.as_raw_fd(), mtime.0, mtime.1)
            .map_err(|e| io_fail("setting times of", &display, e))
    }
}
