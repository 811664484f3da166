//! The access line: what one request's log line says, written once its
//! response is out (a streamed one's at its end, with every byte counted).

use std::time::Instant;

use crate::http::lograte::budgeted;

/// What the access line of one request says; written when its response
/// is out (a streamed one's at its end, with every byte counted).
pub(super) struct Access {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
    /// When the head was complete.
    pub(super) started: Instant,
    pub(super) bytes: u64,
    pub(super) request_id: String,
    pub(super) remote: std::net::SocketAddr,
}

impl Access {
    pub(super) fn log(&self) {
        let Access {
            method,
            path,
            status,
            started,
            bytes,
            request_id,
            remote,
        } = self;
        // Never headers or query strings: they can carry credentials.
        // Fields are labelled so a journal or grep reads them without a
        // legend; Prometheus scrapes (every 15 s) only at debug.
        let level = if path == "/metrics" {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        budgeted(|| {
            log::log!(
                level,
                "access method={method} path={path} status={status} ms={} bytes={bytes} id={request_id} remote={remote}",
                started.elapsed().as_millis()
            )
        });
    }
}
