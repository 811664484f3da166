//! Upgrades: writes the `101` head, then hands the connection (with any
//! bytes already read past the head) to the handler's upgrade function on
//! a thread of its own, outside the pool.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use log::error;

use super::panic_message;
use super::write::log_dropped;
use crate::http::conn::Conn;
use crate::http::response::{encode_head, RespFraming};
use crate::http::transport::UpgradedStream;
use crate::http::Upgraded;

pub(super) fn write_upgrade(
    conn: &Conn,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<()> {
    let (out, dropped) = encode_head(status, headers, RespFraming::NoBody, false, false);
    log_dropped(&dropped);
    conn.transport.write_all(&out)?;
    conn.transport.flush()
}

pub(super) fn hand_off(conn: Conn, f: Box<dyn FnOnce(Upgraded) + Send>, request_id: &str) {
    let Conn {
        transport,
        mut buf,
        slot,
        ..
    } = conn;
    let leftover = buf.take_pending();
    // The upgraded protocol sets its own read timeout; writes keep the body
    // timeout so a peer that stops reading can't hold a thread forever.
    let _ = transport.sock().set_read_timeout(None);
    let stream = UpgradedStream {
        transport,
        slot: Arc::new(slot),
    };
    let id = request_id.to_string();
    let spawned = std::thread::Builder::new()
        .name("http-upgrade".into())
        .spawn(move || {
            let upgraded = Upgraded {
                stream: Box::new(stream),
                leftover,
            };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(upgraded))) {
                error!(
                    "http: upgrade handler for request {id} panicked: {}",
                    panic_message(&*p)
                );
            }
        });
    if let Err(e) = spawned {
        error!("http: request {request_id}: cannot start the upgrade thread: {e}");
    }
}
