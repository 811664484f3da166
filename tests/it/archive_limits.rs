//! Limits both sides share or check: one path-length limit (the source
//! refuses early, naming the path; the destination refuses an archive
//! from elsewhere with a clear message), space counted as what is written
//! (a sparse file counts its data, in the preflight and per entry), and
//! the scan that counts a tree before packing stopping within a second of
//! a cancel.

use crate::support::archive_support;
use crate::support::node;

use crate::archive_tar_interop::post_archive;
use archive_support::{gzip, TarBuilder};
use ferry::archive::{self, Counters, PackError, PackOptions};
use node::{NodeOptions, TestNode};
use serde_json::json;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SERVER: &str = "1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

/// Makes `depth` nested 250-byte directories under `root` with a file at
/// the bottom (built one level at a time: the whole path is past PATH_MAX);
/// returns the file's path relative to `root`.
fn deep_path(root: &Path, depth: usize) -> String {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let component = "d".repeat(250);
    let name = CString::new(component.clone()).unwrap();
    let mut dir = OwnedFd::from(fs::File::open(root).unwrap());
    for _ in 0..depth {
        // SAFETY: `name` is NUL-terminated and `dir` an open directory fd;
        // the fd openat returns is checked and then owned here.
        let next = unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        };
        dir = next;
    }
    let file = CString::new("file").unwrap();
    // SAFETY: as above; the file fd is closed at once.
    unsafe {
        let fd = libc::openat(
            dir.as_raw_fd(),
            file.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT,
            0o644,
        );
        assert!(fd >= 0);
        libc::close(fd);
    }
    let mut rel = vec![component; depth];
    rel.push("file".into());
    rel.join("/")
}

#[test]
fn a_path_past_the_limit_is_refused_by_the_source_before_sending_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok.txt"), b"fine").unwrap();
    // 17 × 251 + 4 = 4271 bytes.
    let rel = deep_path(&src, 17);
    assert!(rel.len() > archive::MAX_NAME);

    // The first entry past the limit is the deepest directory.
    let dir = &rel[..rel.len() - "/file".len()];
    let e = archive::scan(&src, &AtomicBool::new(false)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{dir}: path is")), "{shown}");
    assert!(shown.contains("limited to 4096 bytes"), "{shown}");

    let r = archive::pack(
        &src,
        io::sink(),
        &PackOptions {
            level: 1,
            threads: 1,
            ..PackOptions::default()
        },
        &AtomicBool::new(false),
        &Counters::default(),
    );
    match r {
        Err(PackError::Io(m)) => assert!(m.contains(dir) && m.contains("4096"), "{m}"),
        other => panic!("packed a path past the limit: {other:?}"),
    }

    // A path of exactly the limit (directory slash included) is fine.
    let ok = tmp.path().join("ok");
    fs::create_dir(&ok).unwrap();
    let rel = deep_path(&ok, 16); // 16 × 251 + 4 = 4020 bytes
    assert!(rel.len() <= archive::MAX_NAME);
    let totals = archive::scan(&ok, &AtomicBool::new(false)).unwrap();
    assert_eq!(totals.files, 17);

    // Through a real transfer: the source fails before streaming, and
    // the message names the path.
    let pair = Pair::new(
        |data| {
            deep_path(data, 17);
        },
        0,
    );
    let (code, stderr) = pair.transfer();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("limited to 4096 bytes"), "{stderr}");
    assert!(stderr.contains(&"d".repeat(250)), "{stderr}");
    assert!(!pair.dst.server_dir(SERVER).exists());
}

#[test]
fn the_destination_refuses_a_path_past_the_limit_with_a_clear_message() {
    let node = TestNode::start();
    let long = format!("{}/file", "p".repeat(4200));
    let mut tar = TarBuilder::default();
    tar.pax(&[("path", long.as_bytes())]).file("x", b"data");
    let (status, body) = post_archive(&node, SERVER, &gzip(&tar.finish()));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("entry name longer than 4096 bytes: pppp"),
        "{body}"
    );
}

/// Two standalone nodes; the source holds `SERVER` with the given
/// `disk_space` (MiB, 0 = unlimited) in its registry.
struct Pair {
    src: TestNode,
    dst: TestNode,
    _tmp: tempfile::TempDir,
    src_token: std::path::PathBuf,
    dst_token: std::path::PathBuf,
}

impl Pair {
    fn new(fill: impl FnOnce(&Path), disk_space: u64) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let src_root = tmp.path().join("src");
        let data = src_root.join("volumes").join(SERVER);
        fs::create_dir_all(&data).unwrap();
        fill(&data);
        let registry = src_root.join("root/ferry/servers");
        fs::create_dir_all(&registry).unwrap();
        let config = json!({
            "uuid": SERVER,
            "settings": {"uuid": SERVER, "build": {"disk_space": disk_space}},
            "process_configuration": {},
        });
        fs::write(registry.join(format!("{SERVER}.json")), config.to_string()).unwrap();
        let src = TestNode::start_with(NodeOptions {
            root: Some(src_root),
            ..Default::default()
        });
        let dst = TestNode::start();
        let src_token = tmp.path().join("src.token");
        let dst_token = tmp.path().join("dst.token");
        fs::write(&src_token, &src.token).unwrap();
        fs::write(&dst_token, &dst.token).unwrap();
        Pair {
            src,
            dst,
            _tmp: tmp,
            src_token,
            dst_token,
        }
    }

    /// Runs `ferry transfer`; its exit code and stderr.
    fn transfer(&self) -> (Option<i32>, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "transfer",
                SERVER,
                "--node",
                &self.src.url(""),
                "--to",
                &self.dst.url(""),
            ])
            .arg("--token-file")
            .arg(&self.src_token)
            .arg("--dest-token-file")
            .arg(&self.dst_token)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

#[test]
fn a_sparse_file_counts_its_data_against_disk_space() {
    // 100 MiB apparent, a few KiB of data, into a 30 MiB server.
    let pair = Pair::new(
        |data| {
            let f = fs::File::create(data.join("world.img")).unwrap();
            f.set_len(100 << 20).unwrap();
            f.write_all_at(b"region header", 40 << 20).unwrap();
            fs::write(data.join("server.properties"), b"motd=sparse").unwrap();
        },
        30,
    );
    let (code, out) = pair.transfer();
    assert_eq!(code, Some(0), "{out}");
    let md = fs::metadata(pair.dst.server_dir(SERVER).join("world.img")).unwrap();
    assert_eq!(md.len(), 100 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "holes were filled");

    // Real data past the limit is still refused.
    let pair = Pair::new(
        |data| {
            fs::write(data.join("full.bin"), archive_support::noise(40 << 20, 9)).unwrap();
        },
        30,
    );
    let (code, out) = pair.transfer();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not enough disk space"), "{out}");
}

#[test]
fn a_cancel_stops_the_scan_of_a_large_tree_within_a_second() {
    // On tmpfs when there is one: 100k files on a disk take minutes to make.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let root = tmp.path();
    for d in 0..100 {
        let dir = root.join(format!("dir{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    let started = Instant::now();
    let full = archive::scan(root, &AtomicBool::new(false)).unwrap();
    let full_time = started.elapsed();
    assert_eq!(full.files, 100 * 1001);

    // Set before: nothing is walked.
    let set = AtomicBool::new(true);
    let e = archive::scan(root, &set).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Interrupted);

    // Set while it runs: it stops within a second, before the end.
    let cancel = AtomicBool::new(false);
    let (result, stopped_after) = std::thread::scope(|s| {
        let scan = s.spawn(|| {
            let r = archive::scan(root, &cancel);
            (r, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(5));
        let at = Instant::now();
        cancel.store(true, Ordering::SeqCst);
        let (r, ended) = scan.join().unwrap();
        (r, ended.saturating_duration_since(at))
    });
    let e = result.expect_err("the scan finished despite the cancel");
    assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    assert!(
        stopped_after < Duration::from_secs(1),
        "stopped {stopped_after:?} after the cancel (a full scan takes {full_time:?})"
    );
}
