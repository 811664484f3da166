//! The extractor's input: a reader of the spool that follows it as
//! segments arrive, so extraction runs while the body arrives
//! (docs/transport.md, "What each side persists"). It reads the bytes of
//! the segment being received as they are written (`written`), not only
//! once it is acknowledged (`held`): at 1 Gbit/s waiting for the ack left
//! the extractor a whole segment behind, which was the transfer's tail.
//! What it read past `held` is `seen`; the spool never cuts the file back
//! below it, and the next attempt at those bytes must bring the same ones
//! (`Spool::receive` compares them) or the session ends: bytes the
//! extractor used are always bytes of an acknowledged segment. It blocks
//! until more is written, ends (EOF) when the session finished at what it
//! has read, and fails when the session is dropped (cancel, expiry,
//! failure).
//!
//! `Held` is shared between the segment handler (which reports `written`
//! during `Spool::receive` and `advance`s `held` after it) and the
//! follower; one mutex, never held across I/O.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Finished,
    Dropped,
}

#[derive(Debug)]
struct State {
    /// Acknowledged: digest checked, durable.
    held: u64,
    /// In the spool file: `held` and what the segment being received has
    /// written so far.
    written: u64,
    /// How far the follower has read (or is reading).
    seen: u64,
    end: End,
}

/// What is held and written, what the follower has seen, and whether more
/// will come.
#[derive(Debug)]
pub struct Held {
    state: Mutex<State>,
    changed: Condvar,
}

impl Held {
    pub fn new(held: u64) -> Arc<Held> {
        Arc::new(Held {
            state: Mutex::new(State {
                held,
                written: held,
                seen: 0,
                end: End::Open,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A segment was acknowledged: `held` is the new length.
    pub fn advance(&self, held: u64) {
        self.set(|s| {
            s.held = s.held.max(held);
            s.written = s.written.max(s.held);
        });
    }

    /// The segment being received is in the spool file up to `upto`.
    pub fn wrote(&self, upto: u64) {
        self.set(|s| s.written = s.written.max(upto));
    }

    /// The segment being received was given up (cut, short, digest,
    /// disk): nothing past `held` is written any more. Returns `seen`: the
    /// spool keeps its bytes up to there for the next attempt to compare.
    pub fn abandoned(&self, held: u64) -> u64 {
        let mut state = self.lock();
        state.written = held.max(state.held);
        state.seen
    }

    /// How far the follower has read (or is reading).
    pub fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// The body is complete at what is held.
    pub fn finish(&self) {
        self.set(|s| s.end = End::Finished);
    }

    /// The session is gone: the follower fails instead of waiting.
    pub fn drop_session(&self) {
        self.set(|s| s.end = End::Dropped);
    }

    fn set(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until something past `pos` is in the spool, and takes up to
    /// `max` bytes of it as seen (so they stay in the file while they are
    /// read); or how the session ended.
    fn take(&self, pos: u64, max: u64) -> Result<u64, End> {
        let mut state = self.lock();
        loop {
            let upto = state.written.max(state.held);
            if upto > pos {
                let n = (upto - pos).min(max);
                state.seen = state.seen.max(pos + n);
                return Ok(n);
            }
            if state.end != End::Open {
                return Err(state.end);
            }
            // A timeout only re-checks; the notify is what wakes us.
            state = match self.changed.wait_timeout(state, Duration::from_secs(1)) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Reads the spool file from its start, following `Held`.
pub struct Follower {
    file: File,
    pos: u64,
    held: Arc<Held>,
    /// Time spent waiting for bytes to be written (the session's summary).
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
        let taken = self.held.take(self.pos, buf.len() as u64);
        self.waited += began.elapsed();
        let want = match taken {
            Ok(n) => n as usize,
            Err(End::Finished) => return Ok(0),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "transfer session dropped",
                ))
            }
        };
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool shorter than written",
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
    fn follows_what_is_held_or_reported_written_then_ends() {
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
        // In the file but neither held nor reported written: it waits.
        std::thread::sleep(Duration::from_millis(50));
        held.advance(2);
        writer.write_all(b"def-unacked").unwrap();
        held.advance(6);
        held.finish();
        assert_eq!(reader.join().unwrap().unwrap(), b"abcdef");
    }

    #[test]
    fn reads_the_segment_being_written_and_reports_how_far() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut writer = File::create(&path).unwrap();
        writer.write_all(b"abcdef").unwrap();
        let held = Held::new(0);
        // Written, not yet acknowledged: readable, and counted as seen.
        held.wrote(4);
        let mut follower = Follower::new(File::open(&path).unwrap(), held.clone());
        let mut buf = [0u8; 16];
        let n = follower.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"abcd");
        assert_eq!(held.seen(), 4);
        // The segment is given up at 0 held: the spool keeps what was seen.
        assert_eq!(held.abandoned(0), 4);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            follower.read_to_end(&mut out).map(|_| out)
        });
        // Nothing past what was read until the next attempt writes it.
        std::thread::sleep(Duration::from_millis(50));
        held.wrote(3);
        held.advance(6);
        held.finish();
        assert_eq!(reader.join().unwrap().unwrap(), b"ef");
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
