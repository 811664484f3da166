//! A small logger for the `log` facade: one line per record on stderr,
//! `<RFC 3339 time> <LEVEL> <message>`. Level from `FERRY_LOG`
//! (error|warn|info|debug|trace), else info, or debug with `debug: true`.
//! When stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//! inode, as systemd sets it), lines are `<N>message`: the syslog priority
//! journald files them under, and no timestamp (the journal adds its own).
//!
//! Lines go through a bounded queue to a writer thread, so a stderr that
//! stops reading (a stalled journal, a full pipe) never blocks a request
//! or a transfer: when the queue is full, lines are counted and dropped,
//! and the count is written once stderr moves again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Sender, TrySendError};
use log::{LevelFilter, Log, Metadata, Record};

/// Lines waiting for stderr at most (about 0.5 MiB when full).
const QUEUE_LINES: usize = 4096;
/// How long `flush` (at exit) waits for the queue to drain.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The queue in front of a writer thread.
struct Queue {
    tx: Sender<String>,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
    /// Lines dropped since the writer last said so.
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Starts the writer thread over `sink`; None if no thread could start.
    fn start(sink: Box<dyn Write + Send>, capacity: usize) -> Option<Queue> {
        let (tx, rx) = bounded::<String>(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (written, lost) = (Arc::clone(&pending), Arc::clone(&dropped));
        let mut sink = sink;
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                for line in rx {
                    let n = lost.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        let notice = format!(
                            "{} WARN  {n} log line(s) dropped: stderr was not keeping up\n",
                            crate::timefmt::rfc3339(SystemTime::now())
                        );
                        let _ = sink.write_all(notice.as_bytes());
                    }
                    let _ = sink.write_all(line.as_bytes());
                    let _ = sink.flush();
                    written.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .ok()?;
        Some(Queue {
            tx,
            pending,
            dropped,
        })
    }

    /// Queues a line without ever waiting; false if it had to be dropped.
    fn push(&self, line: String) -> bool {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits up to `wait` until every queued line is written.
    fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

struct StderrLogger {
    queue: OnceLock<Option<Queue>>,
    /// Set once at init: stderr is connected to journald.
    journal: OnceLock<bool>,
}

/// True when `JOURNAL_STREAM` (`<dev>:<inode>`) names what fd 2 is.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // The inode of a duplicate of fd 2 is the inode of fd 2.
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    meta.dev() == dev && meta.ino() == ino
}

/// One log line: journald's `<N>` priority prefix, or time and level.
fn format_line(journal: bool, level: log::Level, message: &std::fmt::Arguments) -> String {
    if journal {
        let priority = match level {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        };
        format!("<{priority}>{message}\n")
    } else {
        format!(
            "{} {:<5} {}\n",
            crate::timefmt::rfc3339(SystemTime::now()),
            level,
            message
        )
    }
}

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
        let journal = *self.journal.get().unwrap_or(&false);
        let line = format_line(journal, record.level(), record.args());
        match self.queue.get() {
            Some(Some(queue)) => {
                queue.push(line);
            }
            // No writer thread: write here, one write per line so lines
            // from different threads do not interleave.
            _ => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        if let Some(Some(queue)) = self.queue.get() {
            queue.flush(FLUSH_WAIT);
        }
    }
}

static LOGGER: StderrLogger = StderrLogger {
    queue: OnceLock::new(),
    journal: OnceLock::new(),
};

/// Installs the logger; later calls only change the level. Call `flush`
/// (`log::logger().flush()`) before the process exits.
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
    LOGGER.journal.get_or_init(stderr_is_journal);
    LOGGER.queue.get_or_init(|| {
        with_stop_signals_blocked(|| Queue::start(Box::new(std::io::stderr()), QUEUE_LINES))
    });
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Runs `f` (which starts a thread) with SIGTERM, SIGINT and SIGHUP blocked, so
/// the thread inherits the mask: the daemon receives those signals on its
/// own waiting thread, and a thread that may take them would end the
/// process instead of shutting it down.
fn with_stop_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let old = crate::sys::SignalSet::stop_signals().block();
    let out = f();
    if let Ok(old) = old {
        let _ = old.set_mask();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that blocks every write until opened, then records lines.
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_time() {
        let line = format_line(true, log::Level::Warn, &format_args!("disk low"));
        assert_eq!(line, "<4>disk low\n");
        assert_eq!(
            format_line(true, log::Level::Debug, &format_args!("x")),
            "<7>x\n"
        );
        let plain = format_line(false, log::Level::Error, &format_args!("boom"));
        assert!(
            plain.ends_with(" ERROR boom\n") && plain.starts_with("20"),
            "{plain}"
        );
    }

    #[test]
    fn a_stalled_sink_never_blocks_logging_and_drops_are_counted() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Gate {
            open: Arc::clone(&open),
            seen: Arc::clone(&seen),
        };
        let queue = Queue::start(Box::new(sink), 8).unwrap();
        let started = Instant::now();
        let kept = (0..100)
            .filter(|i| queue.push(format!("line {i}\n")))
            .count();
        // The queue holds 8; the writer may already hold one more.
        assert!((8..=9).contains(&kept), "{kept}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            !queue.flush(Duration::from_millis(50)),
            "nothing written yet"
        );
        {
            let (lock, cv) = &*open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert!(queue.flush(Duration::from_secs(5)));
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let dropped = 100 - kept;
        assert!(
            text.contains(&format!("{dropped} log line(s) dropped")),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("line ")).count(),
            kept
        );
    }
}
