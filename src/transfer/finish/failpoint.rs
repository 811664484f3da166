//! Test-only failpoints: `FERRY_FAILPOINT=<phase>:pause` makes the daemon
//! stop (sleep for an hour) right after it persisted `<phase>`, logging
//! `failpoint: paused at <phase>`, so a test can SIGKILL it at exactly
//! that point of the finish. `<phase>` is a `finish::Phase` name
//! (`installing`, `reporting`, `sent-last-byte`, …) or one of the extra
//! points `reported` (the panel answered 2xx, before the record is
//! written) and `creating-container`. Several may be given, comma
//! separated. Unset in production: then every call is one relaxed load.

use std::sync::OnceLock;
use std::time::Duration;

use super::Phase;

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("FERRY_FAILPOINT")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|p| p.trim().strip_suffix(":pause").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Called when a transfer enters `phase`.
pub fn reached(phase: Phase) {
    point(phase.as_str());
}

/// Called at a named point that is not a phase.
pub fn point(name: &str) {
    if points().iter().any(|p| p == name) {
        log::warn!("failpoint: paused at {name}");
        std::thread::sleep(Duration::from_secs(3600));
    }
}
