//! `GET /metrics`: Prometheus text format (SPEC §7).

use std::fmt::Write;
use std::sync::Arc;

use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::Direction;

pub fn get(
    node: &Arc<Node>,
    _request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    Ok(Response::new(200)
        .header("Content-Type", "text/plain; version=0.0.4")
        .bytes(render(node).into_bytes()))
}

pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferry_transfers_total Transfers that ended, by direction and final status."
    );
    let _ = writeln!(out, "# TYPE ferry_transfers_total counter");
    for ((direction, status), count) in node.transfers.totals() {
        let _ = writeln!(
            out,
            "ferry_transfers_total{{direction=\"{}\",status=\"{}\"}} {count}",
            direction.as_str(),
            status.as_str()
        );
    }
    // Each family's samples stay together (the text format requires it).
    let _ = writeln!(
        out,
        "# HELP ferry_transfer_bytes_total Archive bytes sent or received."
    );
    let _ = writeln!(out, "# TYPE ferry_transfer_bytes_total counter");
    for direction in [Direction::Outgoing, Direction::Incoming] {
        let _ = writeln!(
            out,
            "ferry_transfer_bytes_total{{direction=\"{}\"}} {}",
            direction.as_str(),
            node.transfers.wire_bytes(direction)
        );
    }
    let _ = writeln!(out, "# HELP ferry_transfers_active Transfers running now.");
    let _ = writeln!(out, "# TYPE ferry_transfers_active gauge");
    let active = node.transfers.all_active();
    for direction in [Direction::Outgoing, Direction::Incoming] {
        let _ = writeln!(
            out,
            "ferry_transfers_active{{direction=\"{}\"}} {}",
            direction.as_str(),
            active.iter().filter(|t| t.direction == direction).count()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ferry_transfer_stage_cpu_seconds_total CPU time of ended transfers by pipeline stage."
    );
    let _ = writeln!(out, "# TYPE ferry_transfer_stage_cpu_seconds_total counter");
    for stage in crate::archive::Stage::ALL {
        let _ = writeln!(
            out,
            "ferry_transfer_stage_cpu_seconds_total{{stage=\"{}\"}} {:.6}",
            stage.name(),
            node.transfers.stage_cpu(stage).as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "# HELP ferry_http_requests_total HTTP requests by route and status code."
    );
    let _ = writeln!(out, "# TYPE ferry_http_requests_total counter");
    let requests = node
        .http_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for ((route, code), count) in requests {
        let _ = writeln!(
            out,
            "ferry_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ferry_open_connections HTTP connections open now."
    );
    let _ = writeln!(out, "# TYPE ferry_open_connections gauge");
    let _ = writeln!(out, "ferry_open_connections {}", node.open_connections());
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident set size."
    );
    let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
    let _ = writeln!(out, "process_resident_memory_bytes {}", resident_bytes());
    out
}

/// VmRSS from /proc/self/status, 0 if unreadable.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
