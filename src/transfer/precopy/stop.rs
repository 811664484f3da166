//! Stopping a server before its data leaves (SPEC §3): the one function
//! both the classic start (before it answers) and pre-copy (after the
//! live pass) use, so both refuse the same way when the server will not
//! stop in time.

use crate::environment::PowerState;
use crate::node::Node;
use crate::server::Server;

pub const STOP_FAILED: &str = "Failed to stop the server before initiating transfer.";

/// Stops `server` and waits up to `stop_timeout` for it; Ok when it is
/// offline (or already was). Err(`STOP_FAILED`) leaves it running.
pub fn stop_for_transfer(node: &Node, server: &Server) -> Result<(), &'static str> {
    let spec = server.spec(&node.config.system.data);
    let env = &node.environment;
    let state = env.state(&spec).map_err(|e| {
        log::error!(
            "{}: cannot read its state before the transfer: {e}",
            server.uuid
        );
        STOP_FAILED
    })?;
    if state == PowerState::Offline {
        return Ok(());
    }
    let timeout = node.config.system.transfers.stop_timeout;
    log::info!(
        "{}: stopping before the transfer (up to {timeout:?})",
        server.uuid
    );
    match env
        .stop(&spec)
        .and_then(|()| env.wait_for_stop(&spec, timeout))
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            log::warn!(
                "{}: did not stop within {timeout:?}; transfer refused, server left running",
                server.uuid
            );
            Err(STOP_FAILED)
        }
        Err(e) => {
            log::error!("{}: stop failed: {e}", server.uuid);
            Err(STOP_FAILED)
        }
    }
}
