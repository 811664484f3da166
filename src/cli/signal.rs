//! Ctrl-C for long-running verbs: the first SIGINT only sets a flag the
//! verb polls (so it can cancel the transfer cleanly); the handler then
//! resets itself, so a second Ctrl-C kills the process the usual way.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_signal: libc::c_int) {
    // An atomic store is async-signal-safe; nothing else happens here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler; false if the kernel refused it.
pub fn install() -> bool {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler
    // only stores to an atomic; SA_RESTART keeps blocking I/O from failing
    // with EINTR; SA_RESETHAND restores the default for the second Ctrl-C.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) == 0
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
