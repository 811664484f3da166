//! Archive extraction from arbitrary bytes into a staging directory: no
//! input may create, change or remove anything outside staging (an outside
//! directory, a neighbouring server and the data directory are compared
//! before and after), staging never holds hard links, devices, FIFOs or
//! setuid bits, an accepted archive respects the byte limit, and dropping
//! the staging directory removes all of it without following links.
//!
//! Input: byte 0 picks the mode. Bit 0 clear: the rest is the gzip stream
//! as sent. Bit 0 set: the rest is a tar stream whose header checksums the
//! harness fixes up and which it wraps in stored gzip, so mutations reach
//! the tar parser instead of dying in gzip or checksum checks. Bit 1 sets
//! a 4 KiB `disk_space` limit.
//!
//! Shared by the cargo-fuzz target and `tests/adversarial_fuzz_corpus.rs`,
//! which replays the committed seeds in `make test`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use ferry::archive::{extract, Counters, ExtractLimits, Staging, STAGING_DIR};

const SERVER: &str = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const NEIGHBOUR: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const LIMIT: u64 = 4096;

/// Recomputes the checksum of every header block, following the size
/// fields to find them, so mutated headers still pass the checksum test.
fn fix_checksums(tar: &mut [u8]) {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        at += 512;
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
        let size = block[124..136]
            .iter()
            .take_while(|b| (b'0'..=b'7').contains(b))
            .fold(0u64, |v, &b| {
                v.saturating_mul(8).saturating_add(u64::from(b - b'0'))
            });
        at = at.saturating_add(usize::try_from(size.div_ceil(512) * 512).unwrap_or(usize::MAX));
    }
}

fn stored_gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

/// Everything under `root` (not following links) but `skip`: path →
/// (kind and mode, size, link target or content).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.mode(), meta.len(), content));
        }
    }
    out
}

/// Checks every entry of the staging tree; returns the file bytes held.
fn check_staging(dir: &Path) -> u64 {
    let mut bytes = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        assert!(
            ft.is_dir() || ft.is_file() || ft.is_symlink(),
            "special file {path:?}"
        );
        assert_eq!(
            meta.permissions().mode() & 0o7000,
            0,
            "setuid/setgid/sticky on {path:?}"
        );
        if ft.is_file() {
            assert_eq!(meta.nlink(), 1, "hard link {path:?}");
            bytes += meta.len();
        }
        if ft.is_dir() {
            // Directories may be left without owner permissions; let the
            // walk (and the later removal check) in.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
            bytes += check_staging(&path);
        }
    }
    bytes
}

/// A fresh directory for one run: on tmpfs (`/dev/shm`) when there is one,
/// where creating and removing a small tree is some 20 times faster than on
/// a journaling disk filesystem, which is most of a run's cost.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let input = if mode & 1 == 1 {
        let mut tar = rest.to_vec();
        fix_checksums(&mut tar);
        stored_gzip(&tar)
    } else {
        rest.to_vec()
    };
    let limits = ExtractLimits {
        max_bytes: (mode & 2 == 2).then_some(LIMIT),
        owner: None,
    };

    let tmp = scratch_dir();
    let data_dir = tmp.path().join("data");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(data_dir.join(NEIGHBOUR)).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"outside").unwrap();
    fs::write(data_dir.join(NEIGHBOUR).join("world.dat"), b"neighbour").unwrap();
    std::os::unix::fs::symlink("../outside", data_dir.join(NEIGHBOUR).join("up")).unwrap();

    let staging = Staging::create(&data_dir, SERVER, "fuzz").unwrap();
    let staging_path = staging.path().to_path_buf();
    let before = snapshot(tmp.path(), &staging_path);

    let result = extract(
        &input[..],
        &staging,
        &limits,
        &AtomicBool::new(false),
        &Counters::default(),
    );
    if let Err(e) = &result {
        // A stage that panicked is reported as an internal error; no input
        // may cause one.
        assert!(!e.to_string().contains("internal:"), "{e}");
    }
    assert_eq!(
        snapshot(tmp.path(), &staging_path),
        before,
        "written outside staging"
    );
    let held = check_staging(&staging_path);
    if let Ok(summary) = &result {
        assert_eq!(summary.wire_bytes, input.len() as u64);
        if let Some(limit) = limits.max_bytes {
            assert!(held <= limit, "{held} bytes extracted over a {limit} limit");
        }
    }

    drop(staging);
    assert!(!staging_path.exists(), "staging left behind");
    let mut after_drop = snapshot(tmp.path(), &staging_path);
    // The staging parent is created by `Staging::create` and stays.
    let parent = data_dir.join(STAGING_DIR);
    assert!(after_drop.remove(&parent).is_some());
    let mut expected = before;
    expected.remove(&parent);
    assert_eq!(
        after_drop, expected,
        "removing staging touched something else"
    );
}
