//! A Prometheus histogram of how long transfers took, by direction: the
//! manager observes each transfer as it ends, `/metrics` renders the
//! buckets. Fixed buckets from a second to a few hours (a game server
//! moves in seconds on a LAN and in hours over a thin link).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::transfer::Direction;

/// Upper bounds in seconds; `+Inf` is the count.
pub const BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
];

struct Series {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (an integer, so it can be atomic).
    sum_micros: AtomicU64,
}

impl Series {
    const fn new() -> Series {
        Series {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

static DURATIONS: [Series; 2] = [Series::new(), Series::new()];

/// Records one ended transfer (any final status).
pub fn observe(direction: Direction, took: Duration) {
    let s = &DURATIONS[direction as usize];
    let secs = took.as_secs_f64();
    for (i, bound) in BUCKETS.iter().enumerate() {
        if secs <= *bound {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    s.count.fetch_add(1, Ordering::Relaxed);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    s.sum_micros.fetch_add(micros, Ordering::Relaxed);
}

/// The `ferry_transfer_duration_seconds` family, both directions, every
/// series present from the start (at zero).
pub fn render(out: &mut String) {
    let name = "ferry_transfer_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long ended transfers took, start to final status."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for direction in [Direction::Outgoing, Direction::Incoming] {
        let s = &DURATIONS[direction as usize];
        let d = direction.as_str();
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{direction=\"{d}\",le=\"{bound}\"}} {}",
                s.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = s.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{direction=\"{d}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{direction=\"{d}\"}} {:.6}",
            s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{direction=\"{d}\"}} {count}");
    }
}
