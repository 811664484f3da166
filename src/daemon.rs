//! Start-up, the daemon lifetime and shutdown.
