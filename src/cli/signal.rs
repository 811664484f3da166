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
    crate::sys::on_first_sigint(on_sigint)
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
