//! Cancellation (mid-pack, mid-extract: stops within 100 ms, leaves
//! nothing) and the walk's resistance to symlinks swapped in under it.

use crate::support::archive_support;

use archive_support::*;
use ferry::archive::{
    self, Counters, ExtractError, ExtractLimits, PackError, PackOptions, Staging,
};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_millis(100);

/// An output that takes its time, so the pack is surely mid-way.
struct SlowSink;
impl Write for SlowSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        Ok(buf.len().min(64 * 1024))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An input that trickles, like a network body.
struct SlowReader<'a>(&'a [u8]);
impl Read for SlowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(1));
        let n = buf.len().min(self.0.len()).min(64 * 1024);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn tree(root: &std::path::Path) {
    fs::create_dir(root).unwrap();
    for i in 0..3u64 {
        fs::write(root.join(format!("region{i}.mca")), noise(8 << 20, i + 1)).unwrap();
    }
}

/// Waits until `ready` holds, sets `cancel`, and returns when it was set.
fn cancel_when(ready: impl Fn() -> bool, cancel: &AtomicBool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "pipeline never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    cancel.store(true, Ordering::SeqCst);
    Instant::now()
}

#[test]
fn cancel_mid_pack_stops_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let cancel = AtomicBool::new(false);
    let counters = Counters::default();
    let (set_at, (result, ended_at)) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let r = archive::pack(
                &src,
                SlowSink,
                &PackOptions {
                    level: 1,
                    threads: 2,
                    ..PackOptions::default()
                },
                &cancel,
                &counters,
            );
            (r, Instant::now())
        });
        let set_at = cancel_when(
            || counters.wire_bytes.load(Ordering::SeqCst) > 1 << 20,
            &cancel,
        );
        (set_at, h.join().unwrap())
    });
    assert!(matches!(result, Err(PackError::Cancelled)), "{result:?}");
    let took = ended_at.saturating_duration_since(set_at);
    assert!(took <= LIMIT, "pack took {took:?} to stop");
    assert!(
        counters.bytes_done.load(Ordering::SeqCst) < 24 << 20,
        "it was mid-pack"
    );
}

#[test]
fn cancel_mid_extract_stops_quickly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let (bytes, _) = pack_vec(&src, 1, 2);
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let staging = Staging::create(&data, UUID, "c").unwrap();
    let cancel = AtomicBool::new(false);
    let counters = Counters::default();
    let (set_at, (result, ended_at)) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let r = archive::extract(
                SlowReader(&bytes),
                &staging,
                &ExtractLimits::default(),
                &cancel,
                &counters,
            );
            (r, Instant::now())
        });
        let set_at = cancel_when(
            || counters.bytes_done.load(Ordering::SeqCst) > 2 << 20,
            &cancel,
        );
        (set_at, h.join().unwrap())
    });
    assert!(matches!(result, Err(ExtractError::Cancelled)), "{result:?}");
    let took = ended_at.saturating_duration_since(set_at);
    assert!(took <= LIMIT, "extract took {took:?} to stop");
    assert!(
        counters.wire_bytes.load(Ordering::SeqCst) < bytes.len() as u64,
        "it was mid-extract"
    );
    drop(staging);
    assert_clean(&data);
}

#[test]
fn cancel_before_start() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let cancel = AtomicBool::new(true);
    let r = archive::pack(
        &src,
        io::sink(),
        &PackOptions {
            level: 1,
            threads: 1,
            ..PackOptions::default()
        },
        &cancel,
        &Counters::default(),
    );
    assert!(matches!(r, Err(PackError::Cancelled)));
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let staging = Staging::create(&data, UUID, "c").unwrap();
    let (bytes, _) = pack_vec(&src, 1, 1);
    let r = archive::extract(
        &bytes[..],
        &staging,
        &ExtractLimits::default(),
        &cancel,
        &Counters::default(),
    );
    assert!(matches!(r, Err(ExtractError::Cancelled)));
    staging.abort().unwrap();
    assert_clean(&data);
}

/// A directory replaced by a symlink between `scan` and `pack` is archived
/// as the link, and nothing behind it is read.
#[test]
fn dir_swapped_for_symlink_after_scan_is_archived_as_link() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(src.join("world")).unwrap();
    fs::write(src.join("world/level.dat"), b"level").unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"SECRET-MARKER").unwrap();
    assert_eq!(
        archive::scan(&src, &AtomicBool::new(false)).unwrap().files,
        2
    );

    fs::rename(src.join("world"), tmp.path().join("world.moved")).unwrap();
    symlink(&outside, src.join("world")).unwrap();
    let (bytes, s) = pack_vec(&src, 1, 1);
    assert_eq!(s.files, 1);

    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let dest = extract_commit(&data, &bytes).unwrap();
    let md = fs::symlink_metadata(dest.join("world")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!(fs::read_link(dest.join("world")).unwrap(), outside);
    assert!(!plain(&bytes).windows(13).any(|w| w == b"SECRET-MARKER"));
}

/// A thread keeps swapping a directory and a symlink to outside while we
/// pack again and again: no archive may ever contain what is behind the link.
#[test]
fn racing_symlink_swaps_never_redirect_the_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(src.join("swap")).unwrap();
    fs::write(src.join("swap/inside"), b"inside").unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"SECRET-MARKER").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let (dir, parked) = (src.join("swap"), src.join("swap.parked"));
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&dir, &parked).unwrap();
                symlink(&outside, &dir).unwrap();
                fs::remove_file(&dir).unwrap();
                fs::rename(&parked, &dir).unwrap();
            }
        });
        for _ in 0..40 {
            let (bytes, _) = pack_vec(&src, 1, 1);
            let tar = plain(&bytes);
            assert!(
                !tar.windows(13).any(|w| w == b"SECRET-MARKER"),
                "walk was redirected"
            );
            assert!(!tar.windows(11).any(|w| w == b"swap/secret"));
        }
        stop.store(true, Ordering::Relaxed);
    });
}

fn plain(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A file that grows and shrinks while being archived never corrupts the
/// archive: each entry holds exactly the size in its header.
#[test]
fn files_changing_size_during_pack_keep_the_archive_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("before"), b"stable").unwrap();
    fs::write(src.join("log.txt"), b"").unwrap();
    fs::write(src.join("zz-after"), b"also stable").unwrap();
    let chunk = noise(1 << 20, 11);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let p = src.join("log.txt");
            while !stop.load(Ordering::Relaxed) {
                let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                for _ in 0..3 {
                    f.write_all(&chunk).unwrap();
                }
                f.set_len(512 * 1024 + 7).unwrap();
                f.set_len(0).unwrap();
            }
        });
        for i in 0..15 {
            let (bytes, _) = pack_vec(&src, 1, 2);
            let data = tmp.path().join(format!("data{i}"));
            fs::create_dir(&data).unwrap();
            let dest = extract_commit(&data, &bytes).unwrap();
            assert_eq!(fs::read(dest.join("before")).unwrap(), b"stable");
            assert_eq!(fs::read(dest.join("zz-after")).unwrap(), b"also stable");
            // Whatever size was seen, every byte is what the writer puts
            // at that offset, or zero padding where the file shrank.
            let log = fs::read(dest.join("log.txt")).unwrap();
            assert!(log.len() <= 3 << 20);
            let written = chunk.repeat(3);
            assert!(log.iter().zip(&written).all(|(&a, &b)| a == b || a == 0));
        }
        stop.store(true, Ordering::Relaxed);
    });
}
