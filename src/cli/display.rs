//! Where progress goes: on a terminal, one bar redrawn in place with log
//! lines scrolling above it; anywhere else (pipes, CI logs), plain lines
//! on each status change and every couple of seconds.

use std::io::Write;
use std::time::{Duration, Instant};

use super::render::{bar_line, plain_line, Snapshot};

/// Plain mode prints a progress line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct Display {
    tty: bool,
    /// `--json`: progress is not shown and notices go to stderr.
    silent: bool,
    started: Instant,
    /// The bar currently on screen (tty) or the last status printed (plain).
    last: Option<String>,
    last_status: String,
    last_plain: Option<Instant>,
}

/// True when stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// Columns of the terminal on stdout; 80 when unknown.
fn terminal_width() -> usize {
    crate::sys::stdout_columns().map_or(80, usize::from)
}

/// Erases the current line (carriage return, clear to end of line).
const CLEAR: &str = "\r\x1b[2K";

impl Display {
    pub fn new(tty: bool) -> Display {
        Display {
            tty,
            silent: false,
            started: Instant::now(),
            last: None,
            last_status: String::new(),
            last_plain: None,
        }
    }

    /// No progress; notices as plain lines on stderr.
    pub fn silent() -> Display {
        Display {
            silent: true,
            ..Display::new(false)
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn emit(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) must not abort a transfer we manage.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// A line of its own (a log line, a notice), kept above the bar.
    pub fn line(&mut self, text: &str) {
        if self.silent {
            eprintln!("[{:>6.1}s] {text}", self.elapsed().as_secs_f64());
        } else if self.tty {
            let bar = self.last.as_deref().unwrap_or("");
            self.emit(&format!("{CLEAR}{text}\n{bar}"));
        } else {
            self.emit(&format!(
                "[{:>6.1}s] {text}\n",
                self.elapsed().as_secs_f64()
            ));
        }
    }

    pub fn update(&mut self, s: &Snapshot) {
        if self.silent {
            return;
        }
        if self.tty {
            let bar = bar_line(s, terminal_width());
            self.emit(&format!("{CLEAR}{bar}"));
            self.last = Some(bar);
            return;
        }
        let changed = s.status != self.last_status;
        let due = self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if changed || due {
            self.emit(&format!("{}\n", plain_line(self.elapsed(), s)));
            self.last_status = s.status.clone();
            self.last_plain = Some(Instant::now());
        }
    }

    /// The final state, always printed, leaving the cursor on a new line.
    pub fn finish(&mut self, s: &Snapshot) {
        if self.silent {
            return;
        }
        if self.tty {
            let bar = bar_line(s, terminal_width());
            self.emit(&format!("{CLEAR}{bar}\n"));
            self.last = None;
        } else {
            self.emit(&format!("{}\n", plain_line(self.elapsed(), s)));
        }
    }
}
