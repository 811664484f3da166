//! `GET /metrics`: Prometheus text format (SPEC §7).

use std::fmt::Write;
use std::sync::Arc;

use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::{Direction, Status};

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
        "# HELP ferry_build_info The running build: version and git commit."
    );
    let _ = writeln!(out, "# TYPE ferry_build_info gauge");
    let _ = writeln!(
        out,
        "ferry_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        crate::VERSION,
        crate::COMMIT
    );
    let _ = writeln!(
        out,
        "# HELP ferry_transfers_total Transfers that ended, by direction and final status."
    );
    let _ = writeln!(out, "# TYPE ferry_transfers_total counter");
    // Every direction × final status from the start, at zero, so a rate()
    // over the first failure sees it.
    let totals = node.transfers.totals();
    for direction in [Direction::Outgoing, Direction::Incoming] {
        for status in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            let count = totals
                .iter()
                .find(|((d, s), _)| *d == direction && *s == status)
                .map_or(0, |(_, c)| *c);
            let _ = writeln!(
                out,
                "ferry_transfers_total{{direction=\"{}\",status=\"{}\"}} {count}",
                direction.as_str(),
                status.as_str()
            );
        }
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
        "# HELP ferry_transfer_bytes_per_second Archive bytes per second of the transfers running now."
    );
    let _ = writeln!(out, "# TYPE ferry_transfer_bytes_per_second gauge");
    for direction in [Direction::Outgoing, Direction::Incoming] {
        let rate: u64 = active
            .iter()
            .filter(|t| t.direction == direction)
            .map(|t| t.progress().rate_bytes_per_sec)
            .sum();
        let _ = writeln!(
            out,
            "ferry_transfer_bytes_per_second{{direction=\"{}\"}} {rate}",
            direction.as_str()
        );
    }
    crate::histogram::render(&mut out);
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
    process_metrics(&mut out);
    out
}

/// The standard `process_*` family (as Prometheus client libraries name it).
fn process_metrics(out: &mut String) {
    let cpu = crate::sys::process_cpu_seconds().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total User and system CPU time."
    );
    let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
    let _ = writeln!(out, "process_cpu_seconds_total {cpu:.6}");
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let _ = writeln!(out, "# HELP process_open_fds Open file descriptors.");
    let _ = writeln!(out, "# TYPE process_open_fds gauge");
    let _ = writeln!(out, "process_open_fds {fds}");
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time since the Unix epoch."
    );
    let _ = writeln!(out, "# TYPE process_start_time_seconds gauge");
    let _ = writeln!(out, "process_start_time_seconds {}", start_time());
}

/// When this process started, in seconds since the epoch: the daemon's
/// first call fixes it (the daemon renders metrics soon after start, and
/// `START` is set by `mark_start` at serve time).
fn start_time() -> f64 {
    *START.get_or_init(now_secs)
}

static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Called once at daemon start so `process_start_time_seconds` is the start.
pub fn mark_start() {
    let _ = START.set(now_secs());
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
