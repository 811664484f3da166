//! The directory walk behind `scan` and `pack`: depth-first, sorted (for
//! `pack`, optionally a directory's files before its subdirectories),
//! entirely dirfd-relative (`openat(O_NOFOLLOW)`, `fstatat(AT_SYMLINK_NOFOLLOW)`),
//! so a symlink swapped in while we walk is seen as a link and archived
//! as one, never followed. Sockets, FIFOs and devices are skipped.

use super::sys;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Something found by the walk. `st` comes from the opened fd where there
/// is one, so it describes exactly the object whose bytes are read.
pub enum Node {
    Dir(libc::stat),
    /// `file` is `None` when the walk was asked not to open files.
    File(libc::stat, Option<File>),
    Symlink(libc::stat, Vec<u8>),
}

/// Why a walk stopped early.
pub enum WalkStop<E> {
    Cancelled,
    /// Reading the tree failed; the message names the step and path.
    Io(String),
    /// The visitor stopped the walk.
    Visitor(E),
}

pub trait Visitor {
    type Error;
    /// Called for every entry in pre-order; `path` is relative to the root
    /// with `/` separators and no trailing slash.
    fn visit(&mut self, path: &[u8], node: Node) -> Result<(), Self::Error>;
    fn cancelled(&self) -> bool;
}

struct Level {
    fd: OwnedFd,
    names: Vec<CString>,
    next: usize,
    /// Length of `path` for this directory (without a trailing slash).
    path_len: usize,
}

fn io_err<E>(step: &str, path: &[u8], e: io::Error) -> WalkStop<E> {
    WalkStop::Io(format!(
        "{step} {}: {e}",
        if path.is_empty() {
            ".".into()
        } else {
            String::from_utf8_lossy(path)
        }
    ))
}

/// Walks `root` (which must be a real directory, not a link to one).
/// With `open_files`, regular files are opened and handed to the visitor.
pub fn walk<V: Visitor>(
    root: &Path,
    open_files: bool,
    v: &mut V,
) -> Result<(), WalkStop<V::Error>> {
    walk_ordered(root, open_files, false, v)
}

/// `walk`, with each directory's subdirectories after its other entries
/// when `dirs_last` (`sys::read_dir_sorted`): still pre-order, every
/// directory before what it holds.
pub fn walk_ordered<V: Visitor>(
    root: &Path,
    open_files: bool,
    dirs_last: bool,
    v: &mut V,
) -> Result<(), WalkStop<V::Error>> {
    let root_fd = sys::open_path(root, sys::DIR_FLAGS)
        .map_err(|e| WalkStop::Io(format!("opening {}: {e}", root.display())))?;
    let names = sys::read_dir_sorted(root_fd.as_raw_fd(), dirs_last)
        .map_err(|e| io_err("listing", b"", e))?;
    let mut stack = vec![Level {
        fd: root_fd,
        names,
        next: 0,
        path_len: 0,
    }];
    let mut path: Vec<u8> = Vec::new();
    while let Some(top) = stack.last_mut() {
        if v.cancelled() {
            return Err(WalkStop::Cancelled);
        }
        if top.next == top.names.len() {
            stack.pop();
            continue;
        }
        let name = std::mem::take(&mut top.names[top.next]);
        top.next += 1;
        path.truncate(top.path_len);
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.to_bytes());
        let dirfd = top.fd.as_raw_fd();
        if let Some(sub) = entry(dirfd, &name, &path, open_files, v)? {
            let names = sys::read_dir_sorted(sub.as_raw_fd(), dirs_last)
                .map_err(|e| io_err("listing", &path, e))?;
            stack.push(Level {
                fd: sub,
                names,
                next: 0,
                path_len: path.len(),
            });
        }
    }
    Ok(())
}

/// Opens the regular file at `rel` (a path the walk gave, relative to
/// `root`) for reading, one component at a time with `O_NOFOLLOW`, as the
/// walk itself would: pre-copy's final pass walks without opening files
/// and opens only those that changed. Returns it with its stat.
pub fn open_regular_beneath(root: &Path, rel: &[u8]) -> io::Result<(File, libc::stat)> {
    let mut dir = sys::open_path(root, sys::DIR_FLAGS)?;
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let Some((last, parents)) = comps.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
    };
    for c in parents {
        let n = sys::cstring(c)?;
        dir = sys::open_at(dir.as_raw_fd(), &n, sys::DIR_FLAGS, 0)?;
    }
    let n = sys::cstring(last)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = sys::open_at(dir.as_raw_fd(), &n, flags, 0)?;
    let st = sys::fstat(fd.as_raw_fd())?;
    if sys::file_type(&st) != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((File::from(fd), st))
}

/// Visits one directory entry; returns the opened fd of a directory to
/// descend into. Retries when the entry changes type under us.
fn entry<V: Visitor>(
    dirfd: RawFd,
    name: &CString,
    path: &[u8],
    open_files: bool,
    v: &mut V,
) -> Result<Option<OwnedFd>, WalkStop<V::Error>> {
    let visit = |v: &mut V, node| v.visit(path, node).map_err(WalkStop::Visitor);
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let changed =
        |e: &io::Error| matches!(sys::errno(e), libc::ELOOP | libc::ENOTDIR | libc::EINVAL);
    for _attempt in 0..3 {
        let st = match sys::stat_at(dirfd, name) {
            Ok(st) => st,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(io_err("stat", path, e)),
        };
        match sys::file_type(&st) {
            libc::S_IFDIR => match sys::open_at(dirfd, name, sys::DIR_FLAGS, 0) {
                Ok(fd) => {
                    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_err("stat", path, e))?;
                    visit(v, Node::Dir(st))?;
                    return Ok(Some(fd));
                }
                Err(e) if gone(&e) => return Ok(None),
                Err(e) if changed(&e) => continue,
                Err(e) => return Err(io_err("opening directory", path, e)),
            },
            libc::S_IFREG if !open_files => {
                visit(v, Node::File(st, None))?;
                return Ok(None);
            }
            libc::S_IFREG => {
                // O_NONBLOCK: if a FIFO was swapped in, opening must not hang.
                let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
                match sys::open_at(dirfd, name, flags, 0) {
                    Ok(fd) => {
                        let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_err("stat", path, e))?;
                        if sys::file_type(&st) != libc::S_IFREG {
                            continue;
                        }
                        visit(v, Node::File(st, Some(File::from(fd))))?;
                        return Ok(None);
                    }
                    Err(e) if gone(&e) => return Ok(None),
                    Err(e) if changed(&e) => continue,
                    Err(e) => return Err(io_err("opening", path, e)),
                }
            }
            libc::S_IFLNK => match sys::read_link_at(dirfd, name) {
                Ok(target) => {
                    visit(v, Node::Symlink(st, target))?;
                    return Ok(None);
                }
                Err(e) if gone(&e) => return Ok(None),
                Err(e) if changed(&e) => continue,
                Err(e) => return Err(io_err("reading link", path, e)),
            },
            _ => {
                log::debug!(
                    "archive: skipping special file {}",
                    String::from_utf8_lossy(path)
                );
                return Ok(None);
            }
        }
    }
    log::warn!(
        "archive: {} kept changing type while being read; skipped",
        String::from_utf8_lossy(path)
    );
    Ok(None)
}
