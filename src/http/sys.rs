//! The HTTP server's libc calls: the reactor's wake pipe and `poll`, the
//! listen backlog, and the API threads' priority. `http/` imports nothing
//! else of ferry, so it keeps its own `sys` module rather than the crate's.
//!
//! The one place in `http/` that may hold `unsafe` code; every block says
//! why it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A nonblocking, close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array passed.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `listen` again on a listening socket, to set its backlog (std uses 128).
pub(crate) fn set_backlog(socket: BorrowedFd<'_>, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen only reads its arguments; the socket is borrowed, so open.
    if unsafe { libc::listen(socket.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's nice value; false if not permitted.
pub(crate) fn set_thread_nice(nice: libc::c_int) -> bool {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
    }
}

/// Writes one byte, once (no retry): for a wake pipe, where a full pipe
/// already means a wake-up is pending.
pub(crate) fn write_byte(fd: BorrowedFd<'_>) -> io::Result<()> {
    let byte = 1u8;
    // SAFETY: writes one byte from a valid local to a borrowed, open fd.
    if unsafe { libc::write(fd.as_raw_fd(), (&byte as *const u8).cast(), 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads into `buf` once; `Ok(0)` at end of file.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf` from a borrowed, open fd.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `poll` over `fds` for up to `timeout` ms (-1: no limit); the number of
/// entries with events.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, initialised slice of pollfd of the length passed.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_byte_through_the_wake_pipe_wakes_poll_and_drains() {
        let (r, w) = pipe().unwrap();
        let mut fds = [libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 0).unwrap(), 0, "nothing written yet");
        write_byte(w.as_fd()).unwrap();
        write_byte(w.as_fd()).unwrap();
        assert_eq!(poll(&mut fds, 1000).unwrap(), 1);
        let mut buf = [0u8; 8];
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 2);
        let empty = read(r.as_fd(), &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock, "nonblocking");
    }
}
