//! The extractor's input: a reader of the spool that follows it as
//! segments are acknowledged, so extraction runs while the body arrives
//! (docs/transport.md, "What each side persists"). It never reads past
//! what is held (unacknowledged bytes may be cut back), blocks until more
//! is held, ends (EOF) when the session finished at exactly what it has
//! read, and fails when the session is dropped (cancel, expiry, failure).
//!
//! `Held` is shared between the segment handler (which `advance`s it after
//! `Spool::receive`) and the follower; one mutex, never held across I/O.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Finished,
    Dropped,
}

/// What is held, and whether more will come.
#[derive(Debug)]
pub struct Held {
    state: Mutex<(u64, End)>,
    changed: Condvar,
}

impl Held {
    pub fn new(held: u64) -> Arc<Held> {
        Arc::new(Held {
            state: Mutex::new((held, End::Open)),
            changed: Condvar::new(),
        })
    }

    /// A segment was acknowledged: `held` is the new length.
    pub fn advance(&self, held: u64) {
        self.set(|s| s.0 = s.0.max(held));
    }

    /// The body is complete at what is held.
    pub fn finish(&self) {
        self.set(|s| s.1 = End::Finished);
    }

    /// The session is gone: the follower fails instead of waiting.
    pub fn drop_session(&self) {
        self.set(|s| s.1 = End::Dropped);
    }

    fn set(&self, change: impl FnOnce(&mut (u64, End))) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut state);
        self.changed.notify_all();
    }

    /// Wait until more than `pos` is held or the session ended.
    fn wait_past(&self, pos: u64) -> (u64, End) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.0 <= pos && state.1 == End::Open {
            // A timeout only re-checks; the notify is what wakes us.
            state = match self.changed.wait_timeout(state, Duration::from_secs(1)) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        *state
    }
}

/// Reads the spool file from its start, following `Held`.
pub struct Follower {
    file: File,
    pos: u64,
    held: Arc<Held>,
    /// Time spent waiting for bytes to be held (the session's summary).
    pub waited: Duration,
}

impl Follower {
    pub fn new(file: File, held: Arc<Held>) -> Follower {
        Follower {
            file,
            pos: 0,
            held,
            waited: Duration::ZERO,
        }
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let began = Instant::now();
        let (held, end) = self.held.wait_past(self.pos);
        self.waited += began.elapsed();
        if held <= self.pos {
            return match end {
                End::Finished => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "transfer session dropped",
                )),
            };
        }
        let want = (held - self.pos).min(buf.len() as u64) as usize;
        self.file.seek(SeekFrom::Start(self.pos))?;
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool shorter than held",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_acknowledged_bytes_only_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut writer = File::create(&path).unwrap();
        writer.write_all(b"abc").unwrap();
        let held = Held::new(0);
        let mut follower = Follower::new(File::open(&path).unwrap(), held.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            follower.read_to_end(&mut out).map(|_| out)
        });
        // Written but not acknowledged yet: the follower must wait.
        std::thread::sleep(Duration::from_millis(50));
        held.advance(2);
        writer.write_all(b"def-unacked").unwrap();
        held.advance(6);
        held.finish();
        assert_eq!(reader.join().unwrap().unwrap(), b"abcdef");
    }

    #[test]
    fn a_dropped_session_fails_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, b"xy").unwrap();
        let held = Held::new(2);
        let mut follower = Follower::new(File::open(&path).unwrap(), held.clone());
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let result = follower.read_to_end(&mut out);
            (out, result.map_err(|e| e.kind()))
        });
        std::thread::sleep(Duration::from_millis(50));
        held.drop_session();
        let (out, result) = reader.join().unwrap();
        assert_eq!(out, b"xy");
        assert_eq!(result, Err(io::ErrorKind::ConnectionAborted));
    }
}
