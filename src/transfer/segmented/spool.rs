//! The destination's durable half of a session: the thin I/O driver
//! around `Ledger` and the ack log (STYLE 1). It owns two files in the
//! session's directory inside staging: `spool` (the body bytes, append
//! only) and `acks` (one line per acknowledged segment).
//!
//! The promise, kept in `receive` alone: a segment is acknowledged only
//! after its bytes and then its ack line are fsynced, so after a crash
//! `reopen` finds every acknowledged byte and nothing else (the spool is
//! cut back to what the acks cover). The extractor reads a segment's bytes
//! as they are written (`follow::Held`); a segment given up is cut back to
//! `held` but never below what it has read, and the next attempt must
//! bring those same bytes (`SpoolError::Diverged` otherwise). Not here:
//! the extractor, the routes, the session record.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::acks::{self, CorruptAcks};
use super::follow::Held;
use super::ledger::{Ledger, Refusal};
use super::segment::SegmentHeader;

pub const SPOOL: &str = "spool";
/// Bytes of a segment written before their write-back is started.
const WRITEBACK_STEP: u64 = 4 * 1024 * 1024;
pub const ACKS: &str = "acks";

#[derive(Debug)]
pub enum SpoolError {
    /// The ledger refused the segment (offset, busy, digest, state).
    Refused(Refusal),
    /// The request body ended before its `Content-Length`.
    Short {
        got: u64,
        want: u64,
    },
    /// The ack log cannot be resumed from.
    Corrupt(CorruptAcks),
    /// A segment's bytes differ from those an earlier attempt at the same
    /// offset wrote, which the extractor has already read: the session
    /// cannot go on (the extracted tree holds bytes no segment vouches for).
    Diverged {
        at: u64,
    },
    /// The spool is shorter than what the acks claim: acknowledged bytes
    /// are gone, the session cannot resume.
    Truncated {
        spool: u64,
        held: u64,
    },
    Io(io::Error),
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Refused(r) => r.fmt(f),
            SpoolError::Short { got, want } => {
                write!(f, "segment body ended after {got} of {want} bytes")
            }
            SpoolError::Corrupt(c) => c.fmt(f),
            SpoolError::Diverged { at } => write!(
                f,
                "the segment's byte {at} differs from what an earlier attempt sent, which was already extracted"
            ),
            SpoolError::Truncated { spool, held } => {
                write!(
                    f,
                    "transfer session spool has {spool} bytes, its acks claim {held}"
                )
            }
            SpoolError::Io(e) => write!(f, "transfer session spool: {e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl From<io::Error> for SpoolError {
    fn from(e: io::Error) -> Self {
        SpoolError::Io(e)
    }
}

impl From<Refusal> for SpoolError {
    fn from(r: Refusal) -> Self {
        SpoolError::Refused(r)
    }
}

/// What the body may hold besides the archive and the announced backups:
/// the installation log's bound (64 MiB), the configuration's (1 MiB) and
/// the parts' framing.
pub const BODY_SLACK: u64 = 66 * 1024 * 1024;

/// The most a session's spool may hold for a server limited to `disk`
/// bytes (its `disk_space`) whose source announced `backups` bytes of
/// backups: the archive of a tree within the limit is at most about its
/// size (a tenth more covers tar's headers and an incompressible tree),
/// plus the backups and the other parts. A spool past it is a source
/// filling this node's disk, refused as SPEC §4's space row.
pub fn cap(disk: u64, backups: u64) -> u64 {
    disk.saturating_add(disk / 10)
        .saturating_add(backups)
        .saturating_add(BODY_SLACK)
}

pub struct Spool {
    dir: PathBuf,
    spool: File,
    acks: File,
    /// Where the segments' time went (the session's summary line).
    pub timing: Timing,
}

/// Time spent receiving segments: reading and writing their bytes, and
/// waiting for them (and their ack lines) to be durable.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    pub writing: Duration,
    pub syncing: Duration,
}

impl Spool {
    /// New, empty spool and ack log in `dir` (which must exist).
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let open = |name| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.join(name))
        };
        let spool = open(SPOOL)?;
        let acks = open(ACKS)?;
        // The new names must survive a crash too.
        File::open(dir)?.sync_all()?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            spool,
            acks,
            timing: Timing::default(),
        })
    }

    /// After a restart: what the acks hold, with the spool cut back to it.
    pub fn reopen(dir: &Path) -> Result<(Spool, u64), SpoolError> {
        let open = |name| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(name))
        };
        let spool = open(SPOOL)?;
        let mut acks = open(ACKS)?;
        let mut log = Vec::new();
        acks.read_to_end(&mut log)?;
        let (lines, held) = acks::parse(&log).map_err(SpoolError::Corrupt)?;
        let length = spool.metadata()?.len();
        if length < held {
            return Err(SpoolError::Truncated {
                spool: length,
                held,
            });
        }
        spool.set_len(held)?;
        spool.sync_all()?;
        // Drop a torn ack line so the next append starts a clean line.
        let clean: usize = lines.iter().map(|a| acks::line(a).len()).sum();
        acks.set_len(clean as u64)?;
        acks.sync_all()?;
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                spool,
                acks,
                timing: Timing::default(),
            },
            held,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Receive one segment's body: append (telling `follow` how far it is
    /// written), verify, make durable, then acknowledge. Returns the new
    /// held length. On any error nothing new is held and the spool is cut
    /// back to the old held length, or to what the extractor has read
    /// when that is further (`cut_back`).
    pub fn receive(
        &mut self,
        ledger: &mut Ledger,
        header: SegmentHeader,
        body: &mut impl Read,
        now: u64,
        follow: &Held,
    ) -> Result<u64, SpoolError> {
        ledger.begin(header, now)?;
        let held = ledger.held();
        let before = self.timing;
        match self.append(ledger, header, body, follow) {
            Ok(ack) => {
                let began = Instant::now();
                self.acks.seek(SeekFrom::End(0))?;
                let written = self
                    .acks
                    .write_all(acks::line(&ack).as_bytes())
                    .and_then(|()| self.acks.sync_data());
                self.timing.syncing += began.elapsed();
                if let Err(e) = written {
                    ledger.abandon();
                    self.cut_back(held, follow);
                    return Err(e.into());
                }
                log::debug!(
                    "spool {}: segment at {}: {} bytes, {:.1} ms reading and writing, {:.1} ms syncing",
                    self.dir.display(),
                    header.offset,
                    header.length,
                    (self.timing.writing - before.writing).as_secs_f64() * 1e3,
                    (self.timing.syncing - before.syncing).as_secs_f64() * 1e3,
                );
                Ok(ledger.acknowledge(&ack, now))
            }
            Err(e) => {
                ledger.abandon();
                self.cut_back(held, follow);
                Err(e)
            }
        }
    }

    /// A segment was given up: the spool goes back to `held`, except the
    /// bytes past it the extractor has already read, which stay for the
    /// next attempt to be compared with. Best effort: reopen also cuts
    /// back to what the acks hold (and the extractor starts again there).
    fn cut_back(&mut self, held: u64, follow: &Held) {
        let seen = follow.abandoned(held);
        let _ = self.spool.set_len(held.max(seen));
    }

    fn append(
        &mut self,
        ledger: &mut Ledger,
        header: SegmentHeader,
        body: &mut impl Read,
        follow: &Held,
    ) -> Result<acks::Ack, SpoolError> {
        let began = Instant::now();
        // Bytes before `seen` were written by an earlier attempt and read
        // by the extractor: they stay, and this attempt must match them.
        let seen = follow.seen();
        self.spool.set_len(header.offset.max(seen))?;
        self.spool.seek(SeekFrom::Start(header.offset))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut earlier = Vec::new();
        let mut got = 0u64;
        // Where write-back was last started: the disk writes the segment
        // while the rest arrives, so the fsync before the ack waits for
        // the last few MiB only, not the whole segment.
        let mut kicked = 0u64;
        while got < header.length {
            let want = (header.length - got).min(buf.len() as u64) as usize;
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(SpoolError::Short {
                        got,
                        want: header.length,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            hasher.update(&buf[..n]);
            let at = header.offset + got;
            if at < seen {
                let k = ((seen - at).min(n as u64)) as usize;
                earlier.resize(k, 0);
                self.spool.read_exact_at(&mut earlier, at)?;
                if let Some(i) = earlier.iter().zip(&buf[..k]).position(|(a, b)| a != b) {
                    return Err(SpoolError::Diverged { at: at + i as u64 });
                }
            }
            self.spool.write_all(&buf[..n])?;
            got += n as u64;
            follow.wrote(header.offset + got);
            if got - kicked >= WRITEBACK_STEP {
                // Best effort: the fsync below is what makes it durable.
                let _ =
                    crate::sys::start_writeback(&self.spool, header.offset + kicked, got - kicked);
                kicked = got;
            }
        }
        let ack = ledger.check(hasher.finalize().into())?;
        self.timing.writing += began.elapsed();
        let began = Instant::now();
        self.spool.sync_data()?;
        self.timing.syncing += began.elapsed();
        Ok(ack)
    }

    /// A reader of the spool's first `length` bytes (the extractor's
    /// input once the session finishes, or a re-extraction after a restart).
    pub fn reader(&self) -> io::Result<File> {
        File::open(self.dir.join(SPOOL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offset: u64, data: &[u8]) -> SegmentHeader {
        SegmentHeader {
            offset,
            length: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    fn spool_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(SPOOL)).unwrap()
    }

    #[test]
    fn segments_are_held_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        assert_eq!(
            spool
                .receive(&mut ledger, header(0, a), &mut &*a, 1, &Held::new(0))
                .unwrap(),
            6
        );
        assert_eq!(
            spool
                .receive(&mut ledger, header(6, b), &mut &*b, 2, &Held::new(0))
                .unwrap(),
            11
        );
        drop(spool);
        let (_spool, held) = Spool::reopen(dir.path()).unwrap();
        assert_eq!(held, 11);
        assert_eq!(spool_bytes(dir.path()), b"hello world");
    }

    #[test]
    fn a_short_body_or_a_bad_digest_holds_nothing_and_the_retry_works() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let data = b"0123456789".as_slice();
        let short = spool.receive(
            &mut ledger,
            header(0, data),
            &mut &data[..4],
            0,
            &Held::new(0),
        );
        assert!(
            matches!(short, Err(SpoolError::Short { got: 4, want: 10 })),
            "{short:?}"
        );
        assert_eq!(spool_bytes(dir.path()), b"");
        let mut wrong = header(0, data);
        wrong.sha256[0] ^= 1;
        let bad = spool.receive(&mut ledger, wrong, &mut &*data, 0, &Held::new(0));
        assert!(
            matches!(bad, Err(SpoolError::Refused(Refusal::Digest))),
            "{bad:?}"
        );
        assert_eq!(spool_bytes(dir.path()), b"");
        assert_eq!(
            spool
                .receive(&mut ledger, header(0, data), &mut &*data, 0, &Held::new(0))
                .unwrap(),
            10
        );
    }

    #[test]
    fn reopen_drops_an_unacknowledged_tail_and_a_torn_ack_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let data = b"abcdef".as_slice();
        spool
            .receive(&mut ledger, header(0, data), &mut &*data, 0, &Held::new(0))
            .unwrap();
        drop(spool);
        // A crash mid-segment: bytes appended, half an ack line written.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(SPOOL))
            .unwrap();
        f.write_all(b"garbage").unwrap();
        let mut a = OpenOptions::new()
            .append(true)
            .open(dir.path().join(ACKS))
            .unwrap();
        a.write_all(b"6 7 00ab").unwrap();
        let (mut spool, held) = Spool::reopen(dir.path()).unwrap();
        assert_eq!(held, 6);
        assert_eq!(spool_bytes(dir.path()), b"abcdef");
        let mut ledger = Ledger::new(held, 900, 0);
        let more = b"gh".as_slice();
        assert_eq!(
            spool
                .receive(&mut ledger, header(6, more), &mut &*more, 0, &Held::new(0))
                .unwrap(),
            8
        );
        drop(spool);
        assert_eq!(Spool::reopen(dir.path()).unwrap().1, 8);
    }

    #[test]
    fn a_spool_shorter_than_its_acks_cannot_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let data = b"abcdef".as_slice();
        spool
            .receive(&mut ledger, header(0, data), &mut &*data, 0, &Held::new(0))
            .unwrap();
        drop(spool);
        File::options()
            .write(true)
            .open(dir.path().join(SPOOL))
            .unwrap()
            .set_len(3)
            .unwrap();
        let err = Spool::reopen(dir.path()).err().unwrap();
        assert!(
            matches!(err, SpoolError::Truncated { spool: 3, held: 6 }),
            "{err}"
        );
    }

    #[test]
    fn the_cap_is_the_limit_a_tenth_more_the_backups_and_the_slack() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(cap(10 * gib, 0), 11 * gib + BODY_SLACK);
        assert_eq!(cap(10 * gib, gib), 12 * gib + BODY_SLACK);
        assert_eq!(cap(u64::MAX, 1), u64::MAX);
    }

    /// A body that gives `data`, then runs `then` once and ends.
    struct ThenEnd<'a, F: FnMut()> {
        data: &'a [u8],
        then: F,
    }

    impl<F: FnMut()> Read for ThenEnd<'_, F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                (self.then)();
                return Ok(0);
            }
            self.data.read(buf)
        }
    }

    #[test]
    fn bytes_the_extractor_read_stay_and_a_resend_must_match_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let follow = Held::new(0);
        let mut follower =
            super::super::follow::Follower::new(spool.reader().unwrap(), follow.clone());
        let data = b"0123456789".as_slice();
        // Cut after 6 bytes, 4 of which the extractor read meanwhile.
        let mut cut = ThenEnd {
            data: &data[..6],
            then: || {
                let mut buf = [0u8; 4];
                follower.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"0123");
            },
        };
        let short = spool.receive(&mut ledger, header(0, data), &mut cut, 0, &follow);
        assert!(matches!(short, Err(SpoolError::Short { got: 6, .. })));
        assert_eq!(follow.seen(), 4);
        assert_eq!(spool_bytes(dir.path()), b"0123");
        // A resend whose first bytes differ: the session cannot go on.
        let other = b"01x3456789".as_slice();
        let diverged = spool.receive(&mut ledger, header(0, other), &mut &*other, 0, &follow);
        assert!(
            matches!(diverged, Err(SpoolError::Diverged { at: 2 })),
            "{diverged:?}"
        );
        // What the extractor read is still there; the same bytes again pass.
        assert_eq!(spool_bytes(dir.path()), b"0123");
        assert_eq!(
            spool
                .receive(&mut ledger, header(0, data), &mut &*data, 0, &follow)
                .unwrap(),
            10
        );
        assert_eq!(spool_bytes(dir.path()), data);
    }

    #[test]
    fn a_wrong_offset_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let mut ledger = Ledger::new(0, 900, 0);
        let data = b"abc".as_slice();
        spool
            .receive(&mut ledger, header(0, data), &mut &*data, 0, &Held::new(0))
            .unwrap();
        let again = spool.receive(&mut ledger, header(0, data), &mut &*data, 0, &Held::new(0));
        assert!(matches!(
            again,
            Err(SpoolError::Refused(Refusal::Offset { held: 3 }))
        ));
        assert_eq!(spool_bytes(dir.path()), b"abc");
    }
}
