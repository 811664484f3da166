//! Progress arithmetic and the Wings-style progress line
//! (`Uploading [=====                    ] 1.2 GiB / 4.0 GiB`).

use std::time::Duration;

/// `1.2 GiB`: binary units, one decimal, B below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A 25-column bar: `[=====                    ]`.
pub fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 25;
    let filled = if total == 0 {
        0
    } else {
        (done.min(total) as u128 * WIDTH as u128 / total as u128) as u64
    };
    format!(
        "[{}{}]",
        "=".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize)
    )
}

/// The line the source sends every 5 seconds.
pub fn upload_line(done: u64, total: u64) -> String {
    format!(
        "Uploading {} {} / {}",
        bar(done, total),
        human_bytes(done),
        human_bytes(total)
    )
}

/// The upload line with pre-copy's phase after it, when there is one:
/// `Uploading [==   ] 1.0 MiB / 4.0 MiB (precopy)`.
pub fn upload_line_in(done: u64, total: u64, phase: Option<&str>) -> String {
    match phase {
        Some(phase) => format!("{} ({phase})", upload_line(done, total)),
        None => upload_line(done, total),
    }
}

/// Average rate since start and the time left at that rate.
pub fn rate_and_eta(done: u64, total: u64, elapsed: Duration) -> (u64, Option<u64>) {
    let secs = elapsed.as_secs_f64();
    if secs < 0.001 || done == 0 {
        return (0, None);
    }
    let rate = (done as f64 / secs) as u64;
    let eta = (rate > 0 && total >= done).then(|| (total - done).div_ceil(rate));
    (rate, eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(1288490189), "1.2 GiB");
        assert_eq!(human_bytes(4 * 1024 * 1024 * 1024), "4.0 GiB");
    }

    #[test]
    fn bars_are_25_columns() {
        assert_eq!(bar(0, 100), format!("[{}]", " ".repeat(25)));
        assert_eq!(bar(100, 100), format!("[{}]", "=".repeat(25)));
        assert_eq!(bar(200, 100), format!("[{}]", "=".repeat(25)));
        assert_eq!(bar(5, 0), format!("[{}]", " ".repeat(25)));
        assert_eq!(
            upload_line(1288490189, 4 * 1024 * 1024 * 1024),
            "Uploading [=======                  ] 1.2 GiB / 4.0 GiB"
        );
        assert_eq!(
            upload_line_in(0, 1024, Some("precopy")),
            format!("Uploading [{}] 0 B / 1.0 KiB (precopy)", " ".repeat(25))
        );
        assert_eq!(upload_line_in(0, 1024, None), upload_line(0, 1024));
    }

    #[test]
    fn rate_eta() {
        assert_eq!(rate_and_eta(0, 100, Duration::from_secs(1)), (0, None));
        assert_eq!(rate_and_eta(50, 100, Duration::from_secs(5)), (10, Some(5)));
        assert_eq!(
            rate_and_eta(100, 100, Duration::from_secs(5)),
            (20, Some(0))
        );
    }
}
