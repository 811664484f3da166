//! `GET /api/system`: what this node runs on, and the free space of its
//! data directory.

use std::sync::Arc;

use crate::http::reply::{self, ApiError};
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;

pub fn get(
    node: &Arc<Node>,
    _request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(reply::json(
        200,
        &serde_json::json!({
            "architecture": std::env::consts::ARCH,
            "cpu_count": cpus,
            "kernel_version": kernel,
            "os": std::env::consts::OS,
            "version": crate::VERSION,
            // ferry's addition (Wings has no such field; clients ignore
            // it): `ferry transfer` compares it with the server's size
            // before it asks the source to stop the server.
            "data_free_bytes": crate::transfer::destination::free_bytes(&node.config.system.data),
        }),
    ))
}
