//! The one budget for the server's per-request log lines (access lines,
//! refused heads): a flood of requests writes at most a few hundred lines
//! a second, and the next line written says how many were dropped.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use log::warn;

use super::policy::{LogBudget, Verdict};

/// Lines per second; far above what a panel sends, far below a flood.
/// `FERRY_REQUEST_LOG_PER_SECOND` overrides it (for tests of the logger
/// itself).
const PER_SECOND: u32 = 200;

fn per_second() -> u32 {
    std::env::var("FERRY_REQUEST_LOG_PER_SECOND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PER_SECOND)
}

static BUDGET: LazyLock<Mutex<LogBudget>> =
    LazyLock::new(|| Mutex::new(LogBudget::new(per_second(), Duration::from_secs(1))));

/// Runs `line` (which writes one log line) if the budget allows it.
pub(crate) fn budgeted(line: impl FnOnce()) {
    let verdict = BUDGET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(Instant::now());
    if let Verdict::Log { suppressed } = verdict {
        if suppressed > 0 {
            warn!(
                "http: {suppressed} request log lines suppressed (more than {} a second)",
                per_second()
            );
        }
        line();
    }
}
