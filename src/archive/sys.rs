//! Thin, checked wrappers over the dirfd-relative libc calls the archive
//! engine is built on (`openat`, `fstatat`, `mkdirat`, `unlinkat`, …), and
//! the few others it needs (`SEEK_DATA`, free space, thread CPU time and
//! scheduling). The one place in `archive/` that may hold `unsafe` code
//! (`archive/` imports nothing else of ferry, so it keeps its own `sys`);
//! every block says why it is sound.
//!
//! Everything here takes a directory fd plus one path component, so callers
//! can walk a tree without ever resolving a path by name twice. Errors are
//! plain `io::Error`s; callers add the path they were working on.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Flags for opening a directory we are about to walk: never through a link.
pub const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Retries a call interrupted by a signal.
fn retry<T, F: FnMut() -> io::Result<T>>(mut f: F) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    retry(|| {
        // SAFETY: `name` is a valid NUL-terminated string; the fd returned
        // is fresh and owned by nobody else.
        let fd = check(unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// Opens a path given by the caller (trusted, e.g. from the configuration).
pub fn open_path(path: &std::path::Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstring(path.as_os_str().as_bytes())?;
    open_at(libc::AT_FDCWD, &c, flags, 0)
}

pub fn stat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: zeroed `stat` is a valid value for a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: `name` is NUL-terminated; fstatat only writes `st`, which we own.
        check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })
    })?;
    Ok(st)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes `st`, which we own.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn read_link_at(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: the buffer is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::readlinkat(
                dir,
                name.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // The target may have been truncated: try again with more room.
        if buf.len() >= 1 << 20 {
            return Err(io::Error::other("symlink target too long"));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

pub fn mkdir_at(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; mkdirat only reads it.
    retry(|| check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) }))?;
    Ok(())
}

pub fn symlink_at(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; symlinkat only reads them.
    retry(|| check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }))?;
    Ok(())
}

/// `linkat` without `AT_SYMLINK_FOLLOW`: a symlink at `old` would be
/// linked itself, never followed (callers only link regular files).
pub fn link_at(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: both names are valid NUL-terminated strings.
    retry(|| check(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) }))?;
    Ok(())
}

pub fn unlink_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; unlinkat only reads it.
    retry(|| check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }))?;
    Ok(())
}

/// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` when `new` exists.
pub fn rename_noreplace(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    let r = retry(|| {
        // SAFETY: both names are NUL-terminated; renameat2 only reads them.
        check(unsafe {
            libc::renameat2(
                old_dir,
                old.as_ptr(),
                new_dir,
                new.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        })
    });
    match r {
        Ok(_) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: a plain rename of a
        // directory can only replace an *empty* directory, so check first;
        // the remaining window can at worst replace an empty directory.
        Err(e) if errno(&e) == libc::EINVAL || errno(&e) == libc::ENOSYS => {
            match stat_at(new_dir, new) {
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            retry(|| {
                // SAFETY: both names are NUL-terminated; renameat only reads them.
                check(unsafe { libc::renameat(old_dir, old.as_ptr(), new_dir, new.as_ptr()) })
            })?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Offset of the first data at or after `pos` in `fd` (`SEEK_DATA`);
/// `ENXIO` when only a hole is left up to the end.
pub fn seek_data(fd: RawFd, pos: u64) -> io::Result<u64> {
    // SAFETY: lseek only moves the offset of the fd passed; it touches no
    // memory of ours.
    let r = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `path` (a trusted path, e.g. from the configuration).
pub fn free_bytes_at(path: &std::path::Path) -> io::Result<u64> {
    let fd = open_path(path, libc::O_PATH)?;
    free_bytes(fd.as_raw_fd())
}

/// Bytes an unprivileged writer may still use on the filesystem of `fd`.
pub fn free_bytes(fd: RawFd) -> io::Result<u64> {
    // SAFETY: zeroed statvfs is a valid plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs only writes `st`, which we own.
    retry(|| check(unsafe { libc::fstatvfs(fd, &mut st) }))?;
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown only reads its arguments.
    check(unsafe { libc::fchown(fd, uid, gid) })?;
    Ok(())
}

pub fn lchown_at(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; fchownat only reads it.
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(())
}

/// Sets the mode of the directory `name` in `dir` without needing read or
/// search permission on it and without following a symlink: it is opened
/// with `O_PATH|O_NOFOLLOW|O_DIRECTORY` (no permission needed) and changed
/// through `/proc/self/fd`, which names exactly that inode (`fchmod` does
/// not work on an `O_PATH` fd).
pub fn chmod_dir_at(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY;
    let fd = open_at(dir, name, flags, 0)?;
    let proc_path = cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: `proc_path` is a valid NUL-terminated string; `fd` stays
    // open (and so names the same inode) until after the call.
    retry(|| check(unsafe { libc::chmod(proc_path.as_ptr(), mode as libc::mode_t) }))?;
    drop(fd);
    Ok(())
}

pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod only reads its arguments.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) })?;
    Ok(())
}

fn times(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    [t, t]
}

pub fn set_times_fd(fd: RawFd, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = times(sec, nsec);
    // SAFETY: `ts` holds the two timespecs futimens reads.
    check(unsafe { libc::futimens(fd, ts.as_ptr()) })?;
    Ok(())
}

/// Sets the times of a symlink itself.
pub fn set_link_times_at(dir: RawFd, name: &CStr, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = times(sec, nsec);
    // SAFETY: `name` is NUL-terminated; `ts` holds the two timespecs utimensat reads.
    check(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(())
}

pub fn pwrite_all(fd: RawFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: pwrite reads at most `buf.len()` bytes from `buf`.
        let n = unsafe {
            libc::pwrite(
                fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

pub fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    // SAFETY: ftruncate only reads its arguments.
    retry(|| check(unsafe { libc::ftruncate(fd, len as libc::off_t) }))?;
    Ok(())
}

/// The names in a directory (without `.` and `..`), sorted bytewise so
/// archives are reproducible. Opens `.` afresh so the caller's fd offset
/// is untouched.
pub fn read_dir_names(dir: RawFd) -> io::Result<Vec<CString>> {
    read_dir_sorted(dir, false)
}

/// The names in `dir`, sorted bytewise; with `dirs_last`, the entries the
/// directory lists as directories (`d_type`) after all the others, each
/// group sorted. A filesystem that lists no types (`DT_UNKNOWN`) gives
/// plain name order, as the type is only a hint for the order.
pub fn read_dir_sorted(dir: RawFd, dirs_last: bool) -> io::Result<Vec<CString>> {
    let fd = open_at(dir, c".", DIR_FLAGS, 0)?;
    let raw = fd.as_raw_fd();
    // SAFETY: on success fdopendir takes ownership of the fd.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    let mut names: Vec<(bool, CString)> = Vec::new();
    let result = loop {
        // readdir signals errors only through errno.
        // SAFETY: errno is thread-local and writable; readdir signals errors only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dirp` is the open stream from fdopendir, not yet closed.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if errno(&e) == 0 { Ok(()) } else { Err(e) };
        }
        // SAFETY: d_name is NUL-terminated within the dirent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        // SAFETY: `ent` is the entry readdir just returned.
        let is_dir = dirs_last && unsafe { (*ent).d_type } == libc::DT_DIR;
        names.push((is_dir, name.to_owned()));
    };
    // SAFETY: `dirp` is open and not used after this call, which closes its fd too.
    unsafe { libc::closedir(dirp) };
    result?;
    names.sort_unstable();
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// CPU time the calling thread used, in nanoseconds.
pub fn thread_cpu_ns() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec passed, which we own.
    check(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) })?;
    Ok((ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64))
}

fn tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions and touches no memory.
    unsafe { libc::gettid() as libc::id_t }
}

/// The calling thread's nice value.
pub fn thread_nice() -> Option<libc::c_int> {
    // getpriority may legitimately return -1: tell it from an error by errno.
    // SAFETY: errno is thread-local and writable; getpriority only reads
    // its arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid());
        (n != -1 || *libc::__errno_location() == 0).then_some(n)
    }
}

/// Sets the calling thread's nice value; false if not permitted.
pub fn set_thread_nice(n: libc::c_int) -> bool {
    // SAFETY: setpriority only reads its arguments.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid(), n) == 0 }
}

/// The calling thread's scheduling policy (`SCHED_OTHER`, `SCHED_BATCH`, …).
pub fn thread_policy() -> libc::c_int {
    // SAFETY: pid 0 is the calling thread; the call touches no memory.
    unsafe { libc::sched_getscheduler(0) }
}

/// Sets the calling thread's scheduling policy at priority 0; false if
/// not permitted.
pub fn set_thread_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the call only reads `param`.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

pub fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// Makes glibc map every allocation of 128 KiB or more on its own, once
/// per process. Pipeline buffers (256 KiB to 1 MiB) live for one
/// transfer; by default glibc raises its mmap threshold the first time
/// such a buffer is freed, and from then on serves them from per-thread
/// arenas that keep the memory after the transfer. Measured over five
/// 500 MB transfers in a row: a source node's peak RSS grew 25 -> 48 MiB
/// and stayed at 36 MiB idle; with a fixed threshold (setting one also
/// turns the adjustment off) it stays at 25-27 MiB and drops to 7-8 MiB.
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator tuning; no memory is touched.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_known_for_a_real_directory() {
        assert!(free_bytes_at(std::path::Path::new("/")).is_ok());
        assert!(free_bytes_at(std::path::Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn seek_data_finds_data_after_a_hole() {
        let mut file = tempfile::tempfile().unwrap();
        use std::io::{Seek, SeekFrom, Write};
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(b"data").unwrap();
        let fd = file.as_raw_fd();
        // Filesystems without holes report data at once; either way the
        // answer is at or after the offset asked and within the file.
        let at = seek_data(fd, 0).unwrap();
        assert!(at <= 1 << 20, "{at}");
        let past = seek_data(fd, (1 << 20) + 4).map_err(|e| e.raw_os_error());
        assert_eq!(past, Err(Some(libc::ENXIO)));
    }
}
