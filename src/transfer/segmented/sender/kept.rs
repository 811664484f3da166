//! The segment a sender keeps for resend: an unlinked file on the data
//! filesystem, never memory (the RSS budget), and its digest, computed
//! while it is written.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What ends a segment's fill besides its size.
pub(super) struct FillEnds<'a> {
    /// The sender stopped: the fill fails.
    pub stop: &'a AtomicBool,
    /// The sender waits for this segment with the link idle: once it holds
    /// `min` bytes the segment ends there (and the flag is taken), so
    /// packed bytes never wait for a segment's target size while the link
    /// has nothing to send. Segments then grow with what the packer makes
    /// during one send instead of by a fixed ramp.
    pub asked: &'a AtomicBool,
    pub min: u64,
    /// A started segment ends once filling it took this long.
    pub patience: Duration,
}

/// The segment kept for resend: an unlinked file on the data filesystem.
pub(super) struct KeptSegment {
    file: File,
    /// Length and SHA-256 of what `fill` wrote: a PUT of the whole kept
    /// segment (the usual case) needs no second pass over the file.
    filled: Option<(u64, [u8; 32])>,
}

impl KeptSegment {
    pub(super) fn create(data: &std::path::Path, transfer_id: &str) -> io::Result<KeptSegment> {
        let dir = crate::transfer::segmented::session::sessions_root(data);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(".out-{transfer_id}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Nothing to clean up after a crash: the name goes at once.
        std::fs::remove_file(&path)?;
        Ok(KeptSegment { file, filled: None })
    }

    /// Replaces the kept segment with up to `size` next bytes of `body`
    /// (fewer at its end, or where the body's producer paused: a body
    /// read answering `WouldBlock` ends a started segment there, so it is
    /// sent and acknowledged while the producer waits; see
    /// `transfer::pipe`), hashing them (the segment's digest). A started
    /// segment also ends once filling it took `ends.patience`: a slow body
    /// (an upload limit paces it) must not leave the destination's session
    /// silent past its resume window while a whole segment fills; and
    /// once it holds `ends.min` bytes while the sender asks for it.
    pub(super) fn fill(
        &mut self,
        body: &mut impl Read,
        size: u64,
        ends: &FillEnds<'_>,
    ) -> io::Result<u64> {
        let began = Instant::now();
        self.filled = None;
        // Overwritten in place, never truncated: the pages (and blocks) of
        // the previous segment are reused instead of freed and allocated
        // again for every segment (what lies past `filled` is never read).
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let mut segment = Sha256::new();
        while got < size {
            if ends.stop.load(Ordering::SeqCst) {
                return Err(io::Error::other("the sender stopped"));
            }
            let want = (size - got).min(buf.len() as u64) as usize;
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        break;
                    }
                    // Paused before this segment's first byte: the one
                    // before it is being acknowledged; the rest follows.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                // Not retried: the upload pipe says "cancelled" this way.
                Err(e) => return Err(e),
            };
            segment.update(&buf[..n]);
            self.file.write_all(&buf[..n])?;
            got += n as u64;
            if began.elapsed() >= ends.patience
                || (got >= ends.min && ends.asked.swap(false, Ordering::SeqCst))
            {
                break;
            }
        }
        self.filled = Some((got, segment.finalize().into()));
        Ok(got)
    }

    /// SHA-256 of `[at, at + n)` of the kept segment: the one `fill`
    /// computed when that is the whole segment, else read back (a piece
    /// after a proxy's 413).
    pub(super) fn digest(&mut self, at: u64, n: u64) -> io::Result<[u8; 32]> {
        if let Some((length, sha)) = self.filled {
            if at == 0 && n == length {
                return Ok(sha);
            }
        }
        let mut sha = Sha256::new();
        io::copy(&mut self.range(at, n)?, &mut sha)?;
        Ok(sha.finalize().into())
    }

    /// A reader of `[at, at + n)` of the kept segment, which must lie
    /// inside what `fill` wrote (the file's bytes past it are an older
    /// segment's).
    pub(super) fn range(&mut self, at: u64, n: u64) -> io::Result<io::Take<&File>> {
        let length = self.filled.map_or(0, |(length, _)| length);
        if at.checked_add(n).is_none_or(|end| end > length) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bytes {at}+{n} are not in the kept segment of {length} bytes"),
            ));
        }
        self.file.seek(SeekFrom::Start(at))?;
        Ok((&self.file).take(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends<'a>(stop: &'a AtomicBool, asked: &'a AtomicBool, patience: Duration) -> FillEnds<'a> {
        FillEnds {
            stop,
            asked,
            min: 1000,
            patience,
        }
    }

    #[test]
    fn a_segment_the_sender_asks_for_ends_once_it_holds_the_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = KeptSegment::create(dir.path(), "t").unwrap();
        let (stop, asked) = (AtomicBool::new(false), AtomicBool::new(true));
        let body = vec![3u8; 10_000];
        // Read in pieces of 600 bytes: the cut comes at the first read
        // that reaches the minimum of 1000.
        let mut pieces = body.chunks(600).collect::<Vec<_>>().concat();
        let mut reader = Pieces(&mut pieces[..], 600);
        let got = kept
            .fill(
                &mut reader,
                1 << 20,
                &ends(&stop, &asked, Duration::from_secs(60)),
            )
            .unwrap();
        assert_eq!(got, 1200);
        assert!(!asked.load(Ordering::SeqCst), "the ask is taken");
        // Not asked: the next segment fills to its size.
        let got = kept
            .fill(
                &mut reader,
                5000,
                &ends(&stop, &asked, Duration::from_secs(60)),
            )
            .unwrap();
        assert_eq!(got, 5000);
    }

    /// A body read `.1` bytes at a time.
    struct Pieces<'a>(&'a mut [u8], usize);

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            let rest = std::mem::take(&mut self.0);
            self.0 = &mut rest[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_shorter_segment_over_a_longer_one_reads_and_digests_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = KeptSegment::create(dir.path(), "t").unwrap();
        let (stop, never) = (AtomicBool::new(false), AtomicBool::new(false));
        let long = vec![1u8; 300 * 1024];
        assert_eq!(
            kept.fill(
                &mut long.as_slice(),
                1 << 20,
                &ends(&stop, &never, Duration::from_secs(60))
            )
            .unwrap(),
            long.len() as u64
        );
        let short = b"the next, shorter segment".to_vec();
        let n = short.len() as u64;
        assert_eq!(
            kept.fill(
                &mut short.as_slice(),
                1 << 20,
                &ends(&stop, &never, Duration::from_secs(60))
            )
            .unwrap(),
            n
        );
        let mut back = Vec::new();
        kept.range(0, n).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, short);
        let whole: [u8; 32] = Sha256::digest(&short).into();
        assert_eq!(kept.digest(0, n).unwrap(), whole);
        // A piece (after a 413) is read back from the file.
        let piece: [u8; 32] = Sha256::digest(&short[4..12]).into();
        assert_eq!(kept.digest(4, 8).unwrap(), piece);
        // The older segment's bytes past the end are never handed out.
        assert!(kept.range(0, n + 1).is_err());
        assert!(kept.range(u64::MAX, 2).is_err());
    }

    /// A body that gives one byte every 20 ms (an upload limit pacing it).
    struct Slow;

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(20));
            buf[0] = 7;
            Ok(1)
        }
    }

    #[test]
    fn a_slow_body_ends_the_segment_after_its_patience() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = KeptSegment::create(dir.path(), "t").unwrap();
        let began = Instant::now();
        let (stop, never) = (AtomicBool::new(false), AtomicBool::new(false));
        let got = kept
            .fill(
                &mut Slow,
                1 << 20,
                &ends(&stop, &never, Duration::from_millis(200)),
            )
            .unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert!((5..=20).contains(&got), "{got} bytes");
        let mut back = Vec::new();
        kept.range(0, got).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![7; got as usize]);
        assert_eq!(
            kept.digest(0, got).unwrap(),
            <[u8; 32]>::from(Sha256::digest(&back))
        );
    }
}
