//! What the CLI prints, as plain functions over transfer records: the live
//! progress bar, the plain progress lines, the `ferry status` table, and a
//! sliding-window rate meter. No I/O here, so all of it is unit-tested.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::transfer::progress::human_bytes;

/// The parts of a transfer record the progress display shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub status: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second; 0 when unknown.
    pub rate: u64,
    pub eta: Option<u64>,
}

impl Snapshot {
    pub fn from_record(record: &Value) -> Snapshot {
        let p = |key: &str| {
            record
                .pointer(&format!("/progress/{key}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Snapshot {
            status: record
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            files_done: p("files_done"),
            files_total: p("files_total"),
            bytes_done: p("bytes_done"),
            bytes_total: p("bytes_total"),
            rate: p("rate_bytes_per_sec"),
            eta: record
                .pointer("/progress/eta_seconds")
                .and_then(Value::as_u64),
        }
    }

    /// Replaces the node's average-since-start rate with a recent one.
    pub fn with_rate(mut self, rate: Option<u64>) -> Snapshot {
        if let Some(rate) = rate {
            self.rate = rate;
            self.eta = (rate > 0 && self.bytes_total >= self.bytes_done)
                .then(|| (self.bytes_total - self.bytes_done).div_ceil(rate));
        }
        self
    }

    pub fn percent(&self) -> Option<u64> {
        (self.bytes_total > 0)
            .then(|| (self.bytes_done.min(self.bytes_total) * 100) / self.bytes_total)
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// `4s`, `2m05s`, `1h03m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `12.3 MiB/s`, or `-` when nothing moved yet.
pub fn rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "-".to_string()
    } else {
        format!("{}/s", human_bytes(bytes_per_sec))
    }
}

/// Everything after the bar: percentage, files, bytes, and while the
/// transfer moves, rate and ETA.
fn details(s: &Snapshot) -> String {
    let percent = s
        .percent()
        .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
    let mut out = format!(
        "{percent:>4}  {}/{} files  {} / {}",
        s.files_done,
        s.files_total,
        human_bytes(s.bytes_done),
        human_bytes(s.bytes_total),
    );
    if !is_terminal(&s.status) {
        out.push_str(&format!("  {}", rate(s.rate)));
        if let Some(eta) = s.eta.filter(|e| *e > 0) {
            out.push_str(&format!("  ETA {}", duration(eta)));
        }
    }
    out
}

/// Columns kept for the details after the bar, as wide as they get:
/// ` 100%  99999/99999 files  999.9 MiB / 999.9 MiB  999.9 MiB/s  ETA 59m59s`.
const DETAILS_ROOM: usize = 76;

/// The live one-line bar, fitted to `width` columns:
/// `[=======>         ]  45%  12/40 files  90.0 MiB / 200.0 MiB  45.0 MiB/s  ETA 3s`,
/// with the status in front when it is not `processing`.
pub fn bar_line(s: &Snapshot, width: usize) -> String {
    let head = if s.status == "processing" {
        String::new()
    } else {
        format!("{} ", s.status)
    };
    let tail = format!(" {}", details(s));
    // Sized from the width alone, with room for the longest details, so
    // the bar does not jitter as the numbers change length.
    let bar_width = width
        .saturating_sub(head.chars().count() + DETAILS_ROOM)
        .clamp(10, 40);
    let filled = match s.percent() {
        Some(p) => (p as usize * bar_width) / 100,
        None => 0,
    };
    let mut bar = "=".repeat(filled);
    if filled < bar_width {
        bar.push(if filled > 0 { '>' } else { ' ' });
        bar.push_str(&" ".repeat(bar_width - filled - 1));
    }
    let line = format!("{head}[{bar}]{tail}");
    // Never wrap: a wrapped line cannot be redrawn in place.
    line.chars().take(width.saturating_sub(1).max(20)).collect()
}

/// A progress line for logs and pipes: `[   4.0s] processing  45%  …`.
pub fn plain_line(elapsed: Duration, s: &Snapshot) -> String {
    format!(
        "[{:>6.1}s] {:<10} {}",
        elapsed.as_secs_f64(),
        s.status,
        details(s)
    )
}

/// A `transfer logs` line without the time and system prefix:
/// `… [Transfer System] [Source Node]: Streaming…` → `source: Streaming…`.
pub fn log_message(line: &str) -> String {
    let who = if line.contains("[Destination Node]") {
        "destination"
    } else {
        "source"
    };
    match line.rfind("]: ") {
        Some(i) => format!("{who}: {}", &line[i + 3..]),
        None => line.to_string(),
    }
}

/// The `ferry status` table, one row per record, newest first as given.
pub fn table(records: &[Value]) -> String {
    let header = [
        "ID",
        "SERVER",
        "DIRECTION",
        "STATUS",
        "PROGRESS",
        "BYTES",
        "RATE",
        "STARTED",
        "ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for record in records {
        let text = |key: &str| {
            record
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string()
        };
        let short = |s: String| s.chars().take(8).collect::<String>();
        let s = Snapshot::from_record(record);
        let progress = s
            .percent()
            .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
        let bytes = format!(
            "{} / {}",
            human_bytes(s.bytes_done),
            human_bytes(s.bytes_total)
        );
        let started = text("started_at")
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string();
        let error = match (
            record.get("error").and_then(Value::as_str),
            record.get("cancel_reason").and_then(Value::as_str),
        ) {
            (Some(e), _) => e.to_string(),
            (None, Some(reason)) => format!("cancelled: {reason}"),
            (None, None) => "-".to_string(),
        };
        rows.push(vec![
            short(text("id")),
            short(text("server")),
            text("direction"),
            s.status.clone(),
            progress,
            bytes,
            rate(s.rate),
            started,
            error,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes per second over the last few seconds, so the rate and ETA follow
/// a transfer that speeds up or slows down (the node reports an average
/// since the start, which includes the scan).
pub struct RateMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn new(window: Duration) -> RateMeter {
        RateMeter {
            window,
            samples: VecDeque::new(),
        }
    }

    pub fn add(&mut self, at: Instant, bytes: u64) {
        self.samples.push_back((at, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > self.window)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    /// None until the samples span half a second.
    pub fn rate(&self) -> Option<u64> {
        let (t0, b0) = *self.samples.front()?;
        let (t1, b1) = *self.samples.back()?;
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs >= 0.5).then(|| (b1.saturating_sub(b0) as f64 / secs) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({"id":"9b74654f-717e-4cae-bdd1-986d5e1711cc","server":"0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e",
               "direction":"outgoing","status":"processing","started_at":"2026-11-22T04:16:41Z",
               "progress":{"files_total":40,"files_done":12,"bytes_total":200*1024*1024,"bytes_done":90*1024*1024,
                           "wire_bytes":1,"rate_bytes_per_sec":45*1024*1024,"eta_seconds":3},
               "error":null,"cancel_reason":null})
    }

    #[test]
    fn snapshot_from_a_record() {
        let s = Snapshot::from_record(&record());
        assert_eq!((s.files_done, s.files_total, s.eta), (12, 40, Some(3)));
        assert_eq!(s.percent(), Some(45));
        let s = s.with_rate(Some(11 * 1024 * 1024));
        assert_eq!(s.eta, Some(10));
        assert_eq!(Snapshot::from_record(&json!({})).percent(), None);
    }

    #[test]
    fn bar_fits_the_terminal() {
        let s = Snapshot::from_record(&record());
        let line = bar_line(&s, 120);
        assert!(line.starts_with('['), "{line}");
        assert!(
            line.contains("]  45%  12/40 files  90.0 MiB / 200.0 MiB  45.0 MiB/s  ETA 3s"),
            "{line}"
        );
        assert!(line.chars().count() < 120);
        let narrow = bar_line(&s, 80);
        assert!(
            narrow.ends_with("ETA 3s") && narrow.chars().count() < 80,
            "{narrow}"
        );
        // The bar keeps its width while the numbers change length.
        let small = Snapshot {
            status: "processing".into(),
            bytes_done: 1,
            bytes_total: 10,
            ..Snapshot::default()
        };
        assert_eq!(bar_line(&small, 120).find(']'), line.find(']'));
        let done = Snapshot {
            status: "completed".into(),
            bytes_done: 5,
            bytes_total: 5,
            ..Snapshot::default()
        };
        let line = bar_line(&done, 100);
        assert!(line.starts_with("completed [=========="), "{line}");
        assert!(line.ends_with("5 B / 5 B"), "{line}");
    }

    #[test]
    fn plain_lines_and_logs() {
        let s = Snapshot::from_record(&record());
        assert_eq!(
            plain_line(Duration::from_millis(2500), &s),
            "[   2.5s] processing  45%  12/40 files  90.0 MiB / 200.0 MiB  45.0 MiB/s  ETA 3s"
        );
        assert_eq!(
            log_message("Sun, 22 Nov 2026 03:24:38 UTC [Transfer System] [Source Node]: Streaming archive to destination..."),
            "source: Streaming archive to destination..."
        );
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(3700), "1h01m");
        assert_eq!(rate(0), "-");
    }

    #[test]
    fn status_table() {
        let mut failed = record();
        failed["status"] = json!("failed");
        failed["error"] = json!("the destination answered 500: boom");
        let text = table(&[record(), failed]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID        SERVER    DIRECTION  STATUS"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("9b74654f  0b8c2e5e  outgoing   processing  45%"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("2026-11-22 04:16:41"));
        assert!(
            lines[2].ends_with("the destination answered 500: boom"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn rate_meter_follows_recent_samples() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(Duration::from_secs(2));
        m.add(t0, 0);
        assert_eq!(m.rate(), None);
        m.add(t0 + Duration::from_secs(1), 100);
        assert_eq!(m.rate(), Some(100));
        m.add(t0 + Duration::from_secs(2), 200);
        m.add(t0 + Duration::from_secs(3), 1200);
        m.add(t0 + Duration::from_secs(4), 2200);
        // Only the last two seconds count: 2000 bytes over 2 s.
        assert_eq!(m.rate(), Some(1000));
    }
}
