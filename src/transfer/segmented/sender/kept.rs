//! The segment a sender keeps for resend: an unlinked file on the data
//! filesystem, never memory (the RSS budget), and its digest, computed
//! while it is written.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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
    /// segment also ends once filling it took `patience`: a slow body (an
    /// upload limit paces it) must not leave the destination's session
    /// silent past its resume window while a whole segment fills.
    pub(super) fn fill(
        &mut self,
        body: &mut impl Read,
        size: u64,
        stop: &AtomicBool,
        patience: Duration,
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
            if stop.load(Ordering::SeqCst) {
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
            if began.elapsed() >= patience {
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

    #[test]
    fn a_shorter_segment_over_a_longer_one_reads_and_digests_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept = KeptSegment::create(dir.path(), "t").unwrap();
        let stop = AtomicBool::new(false);
        let long = vec![1u8; 300 * 1024];
        assert_eq!(
            kept.fill(
                &mut long.as_slice(),
                1 << 20,
                &stop,
                Duration::from_secs(60)
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
                &stop,
                Duration::from_secs(60)
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
        let stop = AtomicBool::new(false);
        let got = kept
            .fill(&mut Slow, 1 << 20, &stop, Duration::from_millis(200))
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
