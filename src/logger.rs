//! A small logger for the `log` facade: one line per record on stderr,
//! `<RFC 3339 time> <LEVEL> <message>`. Level from `FERRY_LOG`
//! (error|warn|info|debug|trace), else info, or debug with `debug: true`.

use std::io::Write;
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // Library internals (the HTTP client's per-call trace) stay out of
        // ferry's debug log; their warnings still show.
        let library = ["ureq", "rustls", "tungstenite"]
            .iter()
            .any(|l| metadata.target().starts_with(l));
        if library && metadata.level() > log::Level::Info {
            return false;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            crate::timefmt::rfc3339(SystemTime::now()),
            record.level(),
            record.args()
        );
        // One write per line so lines from different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger; later calls only change the level.
pub fn init(debug: bool) {
    let level = match std::env::var("FERRY_LOG").ok().as_deref() {
        Some("error") => LevelFilter::Error,
        Some("warn") => LevelFilter::Warn,
        Some("info") => LevelFilter::Info,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        Some("off") => LevelFilter::Off,
        _ if debug => LevelFilter::Debug,
        _ => LevelFilter::Info,
    };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
