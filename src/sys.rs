//! The crate's libc calls outside `archive/` and `http/` (which keep their
//! own `sys` modules, as they import nothing else of ferry): process
//! limits and usage, the daemon's signal mask, Ctrl-C for the CLI, the
//! terminal's width, the daemon's own ids and early write-back of a file
//! range (the transfer session's spool).
//!
//! This is the one place in those modules that may hold `unsafe` code
//! (`lib.rs` denies it everywhere else); every block says why it is sound.
//! Callers get safe functions with `io::Result` or a plain value; what to
//! log or decide on a failure stays theirs.

use std::io;

/// The soft and hard limits on open files (`RLIMIT_NOFILE`).
pub fn open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft and hard limits on open files.
pub fn set_open_files_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// User plus system CPU time of the process, in seconds.
pub fn process_cpu_seconds() -> io::Result<f64> {
    // SAFETY: rusage is a plain C struct, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct passed, which we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// The real user and group ids of the process.
pub fn own_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Columns of the terminal on stdout, when it is one that knows its size.
pub fn stdout_columns() -> Option<u16> {
    // SAFETY: winsize is a plain C struct, for which all zeroes is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct passed, which we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col)
}

/// Installs `handler` for SIGINT, once: `SA_RESETHAND` restores the
/// default action for the next one, `SA_RESTART` keeps blocking I/O from
/// failing with `EINTR`. The handler must be async-signal-safe (an atomic
/// store). False if the kernel refused it.
pub fn on_first_sigint(handler: extern "C" fn(libc::c_int)) -> bool {
    // SAFETY: sigaction is a plain C struct, for which all zeroes is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
    // SAFETY: sigemptyset initialises the mask inside the struct we own;
    // sigaction only reads `action`, whose handler is a valid `extern "C"`
    // function for the life of the process.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) == 0
    }
}

/// A set of signals, as the thread's signal mask holds them.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// SIGTERM, SIGINT and SIGHUP: the signals the daemon takes on its own
    /// waiting thread (stop, stop, reload) and every other thread blocks.
    pub fn stop_signals() -> SignalSet {
        // SAFETY: sigset_t is a plain C value, for which all zeroes is
        // valid; sigemptyset and sigaddset initialise it before any use.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            SignalSet(set)
        }
    }

    /// Blocks these signals on the calling thread (threads it spawns
    /// inherit the mask); returns the mask it had before.
    pub fn block(&self) -> io::Result<SignalSet> {
        // SAFETY: all zeroes is a valid sigset_t; pthread_sigmask fills it.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid and owned; the call only reads `self`
        // and writes `old`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, &mut old) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet(old))
    }

    /// Makes this set the calling thread's mask (to restore what `block`
    /// returned).
    pub fn set_mask(&self) -> io::Result<()> {
        // SAFETY: the set is valid; the call only reads it.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Waits for one of these signals (blocked beforehand) and returns it.
    pub fn wait(&self) -> libc::c_int {
        let mut signal = 0;
        loop {
            // SAFETY: the set is valid; sigwait writes only `signal`.
            if unsafe { libc::sigwait(&self.0, &mut signal) } == 0 {
                return signal;
            }
        }
    }
}

/// Starts writing back the dirty pages of `file` in `[offset, offset +
/// len)` without waiting for them (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): a later `fdatasync` then finds most of the
/// range already on disk. It promises no durability by itself (no
/// metadata, no cache flush); only the `fdatasync` does. Linux only; a
/// filesystem that does not support it answers an error the caller may
/// ignore (the `fdatasync` still does the whole job).
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor is open for the borrow of `file`; the call
    // reads no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a FIFO at `path` (tests use one as a file whose writer blocks).
#[cfg(test)]
pub fn mkfifo(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo only reads it.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to the calling thread.
#[cfg(test)]
pub fn raise(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: raise only reads its argument; the tests block the signal first.
    if unsafe { libc::raise(signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    #[test]
    fn a_blocked_stop_signal_waits_for_sigwait() {
        // On a thread of its own, so the test harness's mask stays as it is.
        std::thread::spawn(|| {
            let set = SignalSet::stop_signals();
            let old = set.block().unwrap();
            raise(libc::SIGHUP).unwrap();
            assert_eq!(set.wait(), libc::SIGHUP);
            old.set_mask().unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_limits_and_ids_are_the_process_own() {
        let (soft, hard) = open_files_limit().unwrap();
        assert!(soft > 0 && soft <= hard);
        assert!(process_cpu_seconds().unwrap() >= 0.0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(own_ids().0, std::fs::metadata(&file).unwrap().uid());
    }

    #[test]
    fn start_writeback_takes_a_written_range() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut file = std::fs::File::create(dir.path().join("f")).unwrap();
        file.write_all(&[7u8; 64 * 1024]).unwrap();
        start_writeback(&file, 0, 64 * 1024).unwrap();
        assert!(start_writeback(&file, u64::MAX, 1).is_err());
    }

    #[test]
    fn mkfifo_makes_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        mkfifo(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
    }
}
