//! Pre-copy (SPEC §10, docs/transport.md "Pre-copy"), end to end.
//!
//! - `raw::*`: a standalone destination and a source played by the test
//!   with the library's own record, delta and manifest writers: a live
//!   pass, changes, then the final parts in one pre-copy session (the
//!   tree arrives exactly), and tampered, incomplete or misplaced parts
//!   (refused with a clear error, nothing left);
//! - the Docker tests: a running server on engine A moved to engine B
//!   while a writer changes its tree during the live pass; a server that
//!   will not stop; cancel in the live and final passes; power refused;
//! - `docker::resume::*`: the same through the tests' proxy, with the
//!   connection cut during the final pass, and the destination SIGKILLed
//!   and restarted after the live pass and again during the final pass.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::fake_panel;
use crate::support::multipart_body;
use crate::support::node::{make_server_tree, TestNode};
use ferry::archive::{self, Counters, PackOptions};
use ferry::transfer::precopy::{delta, record::Record};

const SERVER: &str = "6c1f8b3d-4e5f-4a70-9b2c-3d4e5f6a7b8c";

/// Every entry with what pre-copy must carry exactly: kind, mode, mtime
/// (seconds, as tar carries them), size and content hash or link target,
/// and for a file with several links the group it belongs to (named by
/// its first path), sorted. Two trees are identical when these are equal.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut groups: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        entries.sort();
        for name in entries {
            let path = rel.join(name);
            let full = root.join(&path);
            let meta = std::fs::symlink_metadata(&full).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            let (p, mtime) = (path.display(), meta.mtime());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&full).unwrap();
                out.push(format!("L {p} -> {} {mtime}", target.display()));
            } else if meta.is_dir() {
                out.push(format!("D {p} {mode:o} {mtime}"));
                stack.push(path);
            } else {
                let bytes = std::fs::read(&full).unwrap();
                let group = if meta.nlink() > 1 {
                    groups
                        .entry(meta.ino())
                        .or_insert_with(|| p.to_string())
                        .clone()
                } else {
                    String::new()
                };
                out.push(format!(
                    "F {p} {mode:o} {mtime} {} {} {group}",
                    bytes.len(),
                    hex::encode(Sha256::digest(&bytes))
                ));
            }
        }
    }
    out.sort();
    out
}

mod raw {
    use super::*;

    // The session's raw requests, as transport.rs's own tests send them.
    use crate::transport::raw::call;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// Opens a session (pre-copy or not), sends `bytes` in one segment
    /// and the finish, and polls until the session ends.
    fn transfer(dest: &TestNode, precopy: bool, boundary: &str, bytes: &[u8]) -> serde_json::Value {
        let token = fake_panel::mint_transfer_jwt(&dest.token, SERVER);
        let (code, v) = call(
            "POST",
            &dest.url("/api/transfers/session"),
            &format!("Bearer {token}"),
            &[("Content-Type", "application/json".into())],
            json!({"boundary": boundary, "bytes_total": 1000, "precopy": precopy})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(code, 201, "{v}");
        let (sid, secret) = (
            v["session"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        );
        let auth = format!("Ferry-Session {secret}");
        let (code, v) = call(
            "PUT",
            &dest.url(&format!("/api/transfers/session/{sid}/segment?offset=0")),
            &auth,
            &[("X-Ferry-Segment-Sha256", sha(bytes))],
            bytes,
        );
        assert_eq!(code, 200, "{v}");
        let (code, v) = call(
            "POST",
            &dest.url(&format!("/api/transfers/session/{sid}/finish")),
            &auth,
            &[],
            // The claim: the digest of the one-line ack log it holds.
            json!({"length": bytes.len(),
                   "acks_sha256": sha(format!("0 {} {}\n", bytes.len(), sha(bytes)).as_bytes())})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(code, 202, "{v}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, v) = call(
                "GET",
                &dest.url(&format!("/api/transfers/session/{sid}")),
                &auth,
                &[],
                b"",
            );
            assert_eq!(code, 200);
            if !matches!(v["state"].as_str(), Some("receiving" | "finishing")) {
                return v;
            }
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_clean(dest: &TestNode) {
        assert!(!dest.server_dir(SERVER).exists(), "server directory left");
        // The session's directory goes right after its outcome is visible.
        let sessions = dest.data.join(".ferry-sessions");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&sessions).is_ok_and(|mut d| d.next().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in [".ferry-staging", ".ferry-sessions"] {
            let left: Vec<_> = std::fs::read_dir(dest.data.join(dir))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{dir} left: {left:?}");
        }
    }

    /// A source's pre-copy in the test's hands: pass 1 of `tree` with its
    /// record, `change` applied, then the final pass's two parts.
    struct Precopied {
        archive: Vec<u8>,
        checksum: String,
        delta: Vec<u8>,
        manifest: Vec<u8>,
        summary: delta::DeltaSummary,
        live_bytes: u64,
    }

    fn precopy(tree: &Path, change: impl FnOnce(&Path)) -> Precopied {
        let mut record = Box::new(Record::new(64 * 1024));
        let mut archive_bytes = Vec::new();
        let cancel = AtomicBool::new(false);
        let packed = archive::pack_observed(
            tree,
            &mut archive_bytes,
            &PackOptions {
                level: 1,
                threads: 1,
                ..PackOptions::default()
            },
            &cancel,
            &Counters::default(),
            Some(&mut *record),
        )
        .unwrap();
        change(tree);
        record.seal();
        let mut delta_bytes = Vec::new();
        let summary = delta::write_delta(tree, &record, &mut delta_bytes, &cancel).unwrap();
        let mut manifest = Vec::new();
        delta::write_manifest(tree, &mut manifest, &cancel).unwrap();
        Precopied {
            archive: archive_bytes,
            checksum: packed.sha256_hex,
            delta: delta_bytes,
            manifest,
            summary,
            live_bytes: record.bytes,
        }
    }

    fn body(boundary: &str, p: &Precopied, delta: &[u8], manifest: Option<&[u8]>) -> Vec<u8> {
        let config = json!({"settings": {"uuid": SERVER, "build": {"disk_space": 0}}}).to_string();
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![
            ("configuration", None, config.as_bytes()),
            ("archive", Some("archive.tar.gz"), &p.archive),
            ("checksum", None, p.checksum.as_bytes()),
            ("ferry_delta", None, delta),
        ];
        if let Some(m) = manifest {
            parts.push(("ferry_manifest", None, m));
        }
        multipart_body(boundary, &parts)
    }

    /// A tree with what a game server has, a hard-link pair, and a large
    /// file of distinct blocks (so a small change is a small delta).
    fn server_tree(dir: &Path) {
        make_server_tree(dir);
        std::fs::hard_link(dir.join("world/level.dat"), dir.join("world/level.dat.bak")).unwrap();
        let mut big = vec![0u8; 2 * 1024 * 1024];
        let mut x: u64 = 7;
        for b in big.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(dir.join("world/big.db"), &big).unwrap();
        std::fs::write(dir.join("hardlinked-later"), "one").unwrap();
        std::fs::create_dir_all(dir.join("old/deep")).unwrap();
        std::fs::write(dir.join("old/deep/x"), "x").unwrap();
    }

    /// What a writer does while pass 1 runs (here: after it).
    fn change(dir: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        // Same-size, in-place rewrites of a few bytes, twice in a second,
        // the mtime set back to what it was: only ctime tells.
        let f = dir.join("server.properties");
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        for text in ["motd=HELLO\n", "motd=HeLLo\n"] {
            let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            h.write_all(text.as_bytes()).unwrap();
        }
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(before)
            .unwrap();
        // A block in the middle of the large file.
        let mut h = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("world/big.db"))
            .unwrap();
        h.seek(SeekFrom::Start(1024 * 1024 + 5)).unwrap();
        h.write_all(b"changed!").unwrap();
        // A truncation, a deletion, a new file and directory, a chmod.
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("logs/10.log"))
            .unwrap()
            .set_len(3)
            .unwrap();
        std::fs::remove_file(dir.join("logs/5.log")).unwrap();
        std::fs::create_dir_all(dir.join("new/dir")).unwrap();
        std::fs::write(dir.join("new/dir/file"), "new").unwrap();
        std::fs::set_permissions(dir.join("start.sh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // A rename over an existing file, a symlink retargeted, a
        // directory tree gone, a file hard-linked now.
        std::fs::write(dir.join("logs/tmp"), "renamed over").unwrap();
        std::fs::rename(dir.join("logs/tmp"), dir.join("logs/20.log")).unwrap();
        std::fs::remove_file(dir.join("link-relative")).unwrap();
        std::os::unix::fs::symlink("eula.txt", dir.join("link-relative")).unwrap();
        std::fs::remove_dir_all(dir.join("old")).unwrap();
        std::fs::hard_link(dir.join("hardlinked-later"), dir.join("hardlinked-now")).unwrap();
        // A directory where a file was.
        std::fs::remove_file(dir.join("empty.txt")).unwrap();
        std::fs::create_dir(dir.join("empty.txt")).unwrap();
    }

    #[test]
    fn a_live_pass_and_its_changes_arrive_exactly_and_only_the_changes_travel() {
        let dest = TestNode::start();
        let src = tempfile::tempdir().unwrap();
        server_tree(src.path());
        // Past the racy window: only what the stat rule catches is sent.
        std::thread::sleep(Duration::from_millis(2100));
        let p = precopy(src.path(), change);
        let want = listing(src.path());
        let end = transfer(
            &dest,
            true,
            "bnd",
            &body("bnd", &p, &p.delta, Some(&p.manifest)),
        );
        assert_eq!(end["state"], "completed", "{end}\n{}", dest.log_text());
        assert_eq!(listing(&dest.server_dir(SERVER)), want);
        // The 2 MiB file changed in one 64 KiB block: the delta carries
        // that block and the small files, not the tree.
        assert!(
            p.summary.bytes < 100 * 1024 && p.live_bytes > 5 * 1024 * 1024,
            "{:?}, live pass {} bytes",
            p.summary,
            p.live_bytes
        );
        // The files that changed, not the 60 that did not: the properties
        // (ctime only), big.db, two logs, the new file, start.sh (chmod:
        // its ctime changed, so it is read, but no block differs), the
        // hard link's first path (its link count changed).
        assert_eq!(p.summary.files, 7, "{:?}", p.summary);
        // logs/5.log and the `old` tree (once); empty.txt became a
        // directory in place.
        assert_eq!(p.summary.deleted, 2, "{:?}", p.summary);
        assert!(dest.log_text().contains("pre-copy verified"));
    }

    #[test]
    fn a_tampered_or_incomplete_delta_or_manifest_fails_and_leaves_nothing() {
        let dest = TestNode::start();
        let src = tempfile::tempdir().unwrap();
        server_tree(src.path());
        let p = precopy(src.path(), change);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // (what, delta, manifest, the error it must fail with)
        type Case<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>, &'a str);
        let mut cases: Vec<Case> = Vec::new();
        // A changed byte inside a block the delta carries.
        let mut flipped = p.delta.clone();
        let at = flipped
            .windows(8)
            .position(|w| w == b"changed!")
            .expect("the changed block travels");
        flipped[at] ^= 1;
        cases.push((
            "flipped block",
            flipped,
            Some(p.manifest.clone()),
            "checksums don't match",
        ));
        // A delta without its end line.
        let cut =
            p.delta[..p.delta.len() - text(&p.delta).lines().last().unwrap().len() - 1].to_vec();
        cases.push((
            "cut delta",
            cut,
            Some(p.manifest.clone()),
            "the delta has no end",
        ));
        // A manifest that misses an entry (its count fixed up): the staged
        // tree holds one more.
        let manifest = text(&p.manifest);
        let lines: Vec<&str> = manifest.lines().collect();
        let n = lines.len() - 1;
        let mut fewer = lines[1..n].join("\n");
        fewer.push_str(&format!("\n{{\"end\":{}}}\n", n - 1));
        cases.push((
            "manifest missing an entry",
            p.delta.clone(),
            Some(fewer.into_bytes()),
            "the staged tree holds",
        ));
        // A manifest naming a size the tree does not have.
        let lied = text(&p.manifest).replacen("\"size\":3,", "\"size\":4,", 1);
        assert_ne!(lied, text(&p.manifest));
        cases.push((
            "manifest size",
            p.delta.clone(),
            Some(lied.into_bytes()),
            "bytes, the source has",
        ));
        // No manifest at all.
        cases.push((
            "no manifest",
            p.delta.clone(),
            None,
            "the pre-copy delta or manifest is missing",
        ));
        // A delta op outside the tree.
        let mut escape = Vec::new();
        escape.extend_from_slice(
            format!(
                "{{\"op\":\"delete\",\"path\":\"{}\"}}\n",
                hex::encode("../../etc")
            )
            .as_bytes(),
        );
        escape.extend_from_slice(b"{\"op\":\"end\",\"ops\":1}\n");
        cases.push((
            "escape",
            escape,
            Some(p.manifest.clone()),
            "unsafe path in archive: ../../etc",
        ));
        for (what, delta, manifest, error) in cases {
            let end = transfer(
                &dest,
                true,
                "bnd",
                &body("bnd", &p, &delta, manifest.as_deref()),
            );
            assert_eq!(end["state"], "failed", "{what}: {end}");
            assert_eq!(end["code"], 400, "{what}: {end}");
            let message = end["error"].as_str().unwrap_or("");
            assert!(message.contains(error), "{what}: {message}");
            assert_clean(&dest);
        }
    }

    #[test]
    fn precopy_parts_are_refused_outside_a_precopy_session() {
        let dest = TestNode::start();
        let src = tempfile::tempdir().unwrap();
        server_tree(src.path());
        let p = precopy(src.path(), change);
        let bytes = body("bnd", &p, &p.delta, Some(&p.manifest));
        // A session opened without pre-copy.
        let end = transfer(&dest, false, "bnd", &bytes);
        assert_eq!(end["state"], "failed", "{end}");
        assert_eq!(
            (end["code"].as_u64(), end["error"].as_str()),
            (
                Some(400),
                Some("pre-copy parts are only accepted in a pre-copy session")
            )
        );
        assert_clean(&dest);
        // The classic POST.
        let token = fake_panel::mint_transfer_jwt(&dest.token, SERVER);
        let (code, v) = call(
            "POST",
            &dest.url("/api/transfers"),
            &format!("Bearer {token}"),
            &[(
                "Content-Type",
                "multipart/form-data; boundary=bnd".to_string(),
            )],
            &bytes,
        );
        assert_eq!(
            (code, v["error"].as_str()),
            (
                400,
                Some("pre-copy parts are only accepted in a pre-copy session")
            ),
            "{v}"
        );
        assert_clean(&dest);
    }
}

/// A running server moved between two Docker Engines with pre-copy.
mod docker {
    use super::*;
    use crate::docker_transfer::{
        assert_destination_clean, inspect, power, settings, start_server, start_transfer,
        stop_with, wait_for, world, Cleanup, Engines, INT_LOOP, STUBBORN_LOOP,
    };
    use crate::support::fake_panel::FakePanel;
    use crate::support::node::NodeOptions;
    use serde_json::Value;

    const REFUSED: &str = "The server cannot be powered while it is being transferred.";

    /// The segmented transport (pre-copy travels in it), 2 MiB/s so the
    /// live pass lasts, and `env` for the source (failpoints).
    fn pair(
        engines: &Engines,
        cleanup: &mut Cleanup,
        panel: &FakePanel,
        uuid: &str,
        invocation: &str,
        noise_mib: usize,
        env: &[(&str, &str)],
    ) -> (TestNode, TestNode) {
        let dest = TestNode::start_with(engines.node_options(&engines.b, panel));
        panel.add_server_with(
            uuid,
            settings(uuid, invocation),
            stop_with("signal", json!("SIGINT")),
        );
        let root = cleanup.root();
        let dir = root.join("volumes").join(uuid);
        make_server_tree(&dir);
        std::fs::hard_link(dir.join("world/level.dat"), dir.join("world/level.dat.bak")).unwrap();
        let mut noise = vec![0u8; noise_mib * 1024 * 1024];
        getrandom::fill(&mut noise).unwrap();
        std::fs::write(dir.join("noise.bin"), &noise).unwrap();
        let source = TestNode::start_with(NodeOptions {
            root: Some(root),
            transfers_yaml: "transport: auto\nupload_limit: 2\n".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..engines.node_options(&engines.a, panel)
        });
        (source, dest)
    }

    fn record(source: &TestNode, uuid: &str) -> Value {
        source.get(&format!("/api/servers/{uuid}/transfer")).1
    }

    fn wait_phase(source: &TestNode, uuid: &str, phase: &str) {
        wait_for(Duration::from_secs(30), phase, || {
            record(source, uuid)["progress"]["phase"] == phase
        });
    }

    fn running(engines: &Engines, uuid: &str) -> bool {
        inspect(&engines.a, uuid).is_some_and(|d| d["State"]["Running"] == true)
    }

    /// Nothing of the transfer on the destination, its session included
    /// (the source's cancel of it goes out on its own thread).
    fn assert_clean(engines: &Engines, dest: &TestNode, uuid: &str) {
        // A cancel can land before the session was opened: then the
        // destination never had a transfer of this server (no status).
        wait_for(Duration::from_secs(10), "the destination to end", || {
            dest.get(&format!("/api/servers/{uuid}/transfer")).1["status"]
                .as_str()
                .is_none_or(|s| !matches!(s, "pending" | "processing"))
        });
        let sessions = dest.data.join(".ferry-sessions");
        wait_for(Duration::from_secs(10), "the session to go", || {
            std::fs::read_dir(&sessions).map_or(true, |d| d.count() == 0)
        });
        assert_destination_clean(dest, &engines.b, uuid);
    }

    /// Changes a writer makes while the live pass runs.
    fn first_changes(dir: &Path) {
        use std::io::Write;
        // Same-size rewrites of a few bytes, in the same second, mtime
        // set back: only ctime tells.
        let f = dir.join("server.properties");
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        for text in ["motd=HELLO\n", "motd=HeLLo\n"] {
            let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            h.write_all(text.as_bytes()).unwrap();
        }
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(before)
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("logs/10.log"))
            .unwrap()
            .set_len(3)
            .unwrap();
        std::fs::remove_file(dir.join("logs/5.log")).unwrap();
        std::fs::write(dir.join("logs/new.log"), "new").unwrap();
    }

    /// Changes after the live pass read everything, before the stop.
    fn later_changes(dir: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let mut h = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("noise.bin"))
            .unwrap();
        h.seek(SeekFrom::Start(3 * 1024 * 1024 + 11)).unwrap();
        h.write_all(b"a region rewritten").unwrap();
        std::fs::write(dir.join("logs/tmp"), "renamed over").unwrap();
        std::fs::rename(dir.join("logs/tmp"), dir.join("logs/20.log")).unwrap();
        std::fs::set_permissions(dir.join("start.sh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::remove_file(dir.join("link-relative")).unwrap();
        std::os::unix::fs::symlink("eula.txt", dir.join("link-relative")).unwrap();
        std::fs::create_dir_all(dir.join("plugins/new")).unwrap();
        std::fs::write(dir.join("plugins/new/x.jar"), "jar").unwrap();
        std::fs::write(dir.join("world/level.dat"), "relinked?").unwrap();
    }

    /// `D bytes of data (live pass L bytes)` from the source's log line.
    fn delta_and_live_bytes(log: &str) -> (u64, u64) {
        let line = log
            .lines()
            .find(|l| l.contains("pre-copy: final pass sent"))
            .unwrap_or_else(|| panic!("no final-pass line in\n{log}"));
        let number_before = |marker: &str| -> u64 {
            let at = line.find(marker).unwrap();
            line[..at]
                .split_whitespace()
                .last()
                .unwrap()
                .trim_start_matches('(')
                .parse()
                .unwrap()
        };
        (
            number_before(" bytes of data"),
            line.split("(live pass ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        )
    }

    #[test]
    fn a_running_server_is_copied_live_stopped_and_only_its_changes_sent() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(
            &engines,
            &mut cleanup,
            &panel,
            &uuid,
            INT_LOOP,
            16,
            &[("FERRY_FAILPOINT", "precopy-before-stop:delay=3000")],
        );
        start_server(&source, &uuid);
        let dir = source.server_dir(&uuid);
        // Past the racy window, so the stat rule (not the 2 s rule) is
        // what catches the changes below.
        std::thread::sleep(Duration::from_millis(2100));
        let started = Instant::now();
        let (code, body) = start_transfer(&panel, &source, &dest, &uuid, false);
        assert_eq!(code, 202, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered at once"
        );
        wait_phase(&source, &uuid, "precopy");
        // Live: the server runs, power is refused.
        assert!(running(&engines, &uuid), "running during the live pass");
        for action in ["stop", "restart", "kill"] {
            let (code, body) = power(&source, &uuid, action);
            assert_eq!((code, body["error"].as_str()), (409, Some(REFUSED)));
        }
        first_changes(&dir);
        assert!(
            source.wait_log(
                "failpoint: delaying at precopy-before-stop",
                Duration::from_secs(60)
            ),
            "{}",
            source.log_text()
        );
        assert!(running(&engines, &uuid), "running until the final pass");
        later_changes(&dir);

        let end = source.wait_transfer_end(&uuid, Duration::from_secs(90));
        assert_eq!(
            end["status"],
            "completed",
            "{end}\n{}\n{}",
            source.log_text(),
            dest.log_text()
        );
        assert!(!running(&engines, &uuid), "stopped for the final pass");
        let want = listing(&dir);
        assert!(want.iter().any(|l| l.starts_with("F got-int ")), "{want:?}");
        assert_eq!(listing(&dest.server_dir(&uuid)), want);
        assert_eq!(
            panel.transfer_reports(&uuid),
            vec![("success".to_string(), 204)]
        );
        let (delta, live) = delta_and_live_bytes(&source.log_text());
        eprintln!("pre-copy: delta {delta} bytes, live pass {live} bytes");
        if let Some(line) = source
            .log_text()
            .lines()
            .find(|l| l.contains("final pass sent"))
        {
            eprintln!("{line}");
        }
        assert!(
            live > 16 * 1024 * 1024 && delta < 512 * 1024,
            "delta {delta} bytes, live pass {live} bytes"
        );
        assert!(dest.log_text().contains("pre-copy verified"));
        // The record and the final pass stay within the RSS budget.
        for (who, node) in [("source", &source), ("destination", &dest)] {
            let peak = node.status_kib("VmHWM");
            eprintln!("pre-copy: {who} peak RSS {peak} KiB");
            assert!(peak < 48 * 1024, "{who} peak RSS {peak} KiB");
        }
    }

    #[test]
    fn a_server_that_will_not_stop_fails_the_transfer_and_keeps_running() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(&engines, &mut cleanup, &panel, &uuid, STUBBORN_LOOP, 1, &[]);
        start_server(&source, &uuid);
        let started_at = inspect(&engines.a, &uuid).unwrap()["State"]["StartedAt"].clone();
        let (code, body) = start_transfer(&panel, &source, &dest, &uuid, false);
        assert_eq!(code, 202, "{body}");
        let end = source.wait_transfer_end(&uuid, Duration::from_secs(60));
        assert_eq!(
            (end["status"].as_str(), end["error"].as_str()),
            (
                Some("failed"),
                Some("Failed to stop the server before initiating transfer.")
            ),
            "{end}\n{}",
            source.log_text()
        );
        let doc = inspect(&engines.a, &uuid).unwrap();
        assert_eq!(doc["State"]["Running"], true);
        assert_eq!(doc["State"]["StartedAt"], started_at);
        // The panel hears the failure (from the source; the destination,
        // whose session the source cancelled, may say it too and hears
        // that the panel knows already).
        let reports = panel.transfer_reports(&uuid);
        assert_eq!(
            reports.first(),
            Some(&("failure".to_string(), 204)),
            "{reports:?}"
        );
        assert!(reports.iter().all(|r| r.0 == "failure"), "{reports:?}");
        assert_clean(&engines, &dest, &uuid);
    }

    #[test]
    fn cancel_in_the_live_pass_leaves_the_server_running_and_nothing_behind() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(&engines, &mut cleanup, &panel, &uuid, INT_LOOP, 24, &[]);
        start_server(&source, &uuid);
        let (code, body) = start_transfer(&panel, &source, &dest, &uuid, false);
        assert_eq!(code, 202, "{body}");
        wait_phase(&source, &uuid, "precopy");
        source.wait_transfer_bytes(&uuid);
        // Segments flowing: the session is open (a cancel while it opens
        // is transport::a_cancel_while_the_session_opens_ends_it_on_the_destination).
        assert!(
            dest.wait_log("open for", Duration::from_secs(20)),
            "{}",
            dest.log_text()
        );
        let (code, _) = source.request(
            "DELETE",
            &format!("/api/servers/{uuid}/transfer"),
            Some(json!({"reason": "changed my mind"})),
        );
        assert_eq!(code, 202);
        let end = source.wait_transfer_end(&uuid, Duration::from_secs(20));
        assert_eq!(end["status"], "cancelled", "{end}");
        assert!(running(&engines, &uuid), "never stopped");
        assert_clean(&engines, &dest, &uuid);
    }

    #[test]
    fn cancel_in_the_final_pass_leaves_nothing_behind() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(
            &engines,
            &mut cleanup,
            &panel,
            &uuid,
            INT_LOOP,
            1,
            &[("FERRY_FAILPOINT", "precopy-stopped:delay=4000")],
        );
        start_server(&source, &uuid);
        let (code, body) = start_transfer(&panel, &source, &dest, &uuid, false);
        assert_eq!(code, 202, "{body}");
        wait_phase(&source, &uuid, "final");
        assert!(!running(&engines, &uuid), "stopped for the final pass");
        let (code, _) = source.request(
            "DELETE",
            &format!("/api/servers/{uuid}/transfer"),
            Some(json!({"reason": "changed my mind"})),
        );
        assert_eq!(code, 202);
        let end = source.wait_transfer_end(&uuid, Duration::from_secs(20));
        assert_eq!(end["status"], "cancelled", "{end}");
        assert_clean(&engines, &dest, &uuid);
    }

    #[test]
    fn a_peer_that_is_not_ferry_gets_the_server_stopped_first_and_the_classic_post() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(&engines, &mut cleanup, &panel, &uuid, INT_LOOP, 1, &[]);
        // The destination behind a proxy that answers the probe as Wings
        // does (404).
        let proxy =
            crate::support::proxy::Proxy::start(dest.addr, u64::MAX, Duration::from_secs(60));
        proxy.hide_session_api(true);
        start_server(&source, &uuid);
        panel.set_transferring(&uuid, true);
        let jwt = panel.mint_transfer_jwt(&dest.token, &uuid);
        let (code, body) = source.request(
            "POST",
            &format!("/api/servers/{uuid}/transfer"),
            Some(json!({
                "url": proxy.url("/api/transfers"),
                "token": format!("Bearer {jwt}"),
                "server": {"uuid": uuid, "start_on_completion": false},
            })),
        );
        assert_eq!(code, 202, "{body}");
        let end = source.wait_transfer_end(&uuid, Duration::from_secs(60));
        assert_eq!(end["status"], "completed", "{end}\n{}", source.log_text());
        let log = source.log_text();
        assert!(
            log.contains("Stopping the server before the transfer..."),
            "{log}"
        );
        assert!(!log.contains("pre-copy: final pass"), "{log}");
        let want = listing(&source.server_dir(&uuid));
        assert!(
            want.iter().any(|l| l.starts_with("F got-int ")),
            "stopped before the copy"
        );
        assert_eq!(listing(&dest.server_dir(&uuid)), want);
    }

    #[test]
    fn with_precopy_off_the_server_is_stopped_before_the_answer() {
        let Some((engines, uuid, mut cleanup, panel)) = world() else {
            return;
        };
        let (source, dest) = pair(
            &engines,
            &mut cleanup,
            &panel,
            &uuid,
            INT_LOOP,
            1,
            &[("FERRY_PRECOPY", "off")],
        );
        start_server(&source, &uuid);
        let (code, body) = start_transfer(&panel, &source, &dest, &uuid, false);
        assert_eq!(code, 202, "{body}");
        assert!(!running(&engines, &uuid), "stopped before the answer");
        let end = source.wait_transfer_end(&uuid, Duration::from_secs(60));
        assert_eq!(end["status"], "completed", "{end}");
        assert!(!source.log_text().contains("pre-copy: final pass"));
        assert_eq!(
            listing(&dest.server_dir(&uuid)),
            listing(&source.server_dir(&uuid))
        );
    }

    /// Pre-copy's final pass over the segmented transport's resume
    /// (docs/transport.md "Pre-copy"): a cut or a restarted destination
    /// during it resumes like any segment, and the tree arrives exactly.
    mod resume {
        use super::*;
        use crate::support::proxy::Proxy;

        const MIB: u64 = 1024 * 1024;
        const DEST_YAML: &str = "segment_size: 4\n";

        struct Resumable {
            engines: Engines,
            uuid: String,
            _cleanup: Cleanup,
            panel: FakePanel,
            source: TestNode,
            dest: TestNode,
            proxy: Proxy,
        }

        /// A running server with 16 MiB of noise on engine A; the
        /// destination on engine B (its own node, so a restarted one is
        /// not offered the server at boot) behind the proxy; 4 MiB
        /// segments, the live pass at 2 MiB/s, the source held 4 s at
        /// `precopy-before-stop` (the live pass is held there, the server
        /// still runs) and 1 s at `precopy-stopped`.
        fn start() -> Option<Resumable> {
            let (engines, uuid, mut cleanup, panel) = world()?;
            panel.add_node("desttokenid", crate::support::node::TOKEN);
            let dest = TestNode::start_with(dest_options(&engines, &panel, None));
            panel.add_server_with(
                &uuid,
                settings(&uuid, INT_LOOP),
                stop_with("signal", json!("SIGINT")),
            );
            panel.set_server_node(&uuid, "testtokenid");
            let root = cleanup.root();
            let dir = root.join("volumes").join(&uuid);
            make_server_tree(&dir);
            noise(&dir.join("noise.bin"));
            let source = TestNode::start_with(NodeOptions {
                root: Some(root),
                transfers_yaml: "transport: auto\nupload_limit: 2\nsegment_size: 4\n".into(),
                env: vec![(
                    "FERRY_FAILPOINT".into(),
                    "precopy-before-stop:delay=4000,precopy-stopped:delay=1000".into(),
                )],
                ..engines.node_options(&engines.a, &panel)
            });
            let proxy = Proxy::start(dest.addr, 100 * 1000 * 1000, Duration::from_secs(30));
            start_server(&source, &uuid);
            panel.set_transferring(&uuid, true);
            let jwt = panel.mint_transfer_jwt(&dest.token, &uuid);
            let (code, body) = source.request(
                "POST",
                &format!("/api/servers/{uuid}/transfer"),
                Some(json!({
                    "url": proxy.url("/api/transfers"),
                    "token": format!("Bearer {jwt}"),
                    "server": {"uuid": uuid, "start_on_completion": false},
                })),
            );
            assert_eq!(code, 202, "{body}");
            Some(Resumable {
                engines,
                uuid,
                _cleanup: cleanup,
                panel,
                source,
                dest,
                proxy,
            })
        }

        fn dest_options(
            engines: &Engines,
            panel: &FakePanel,
            root: Option<std::path::PathBuf>,
        ) -> NodeOptions {
            NodeOptions {
                token_id: Some("desttokenid".into()),
                own_root: root.is_some(),
                root,
                transfers_yaml: DEST_YAML.into(),
                ..engines.node_options(&engines.b, panel)
            }
        }

        /// 16 MiB of fresh random bytes at `path` (rewritten in place:
        /// every block differs, so the final pass carries all of them).
        fn noise(path: &Path) {
            let mut bytes = vec![0u8; 16 * MIB as usize];
            getrandom::fill(&mut bytes).unwrap();
            std::fs::write(path, &bytes).unwrap();
        }

        impl Resumable {
            /// Waits until the live pass is held and the source waits to
            /// stop the server, then rewrites the noise while it runs.
            fn live_pass_held(&self) {
                assert!(
                    self.source.wait_log(
                        "failpoint: delaying at precopy-before-stop",
                        Duration::from_secs(60)
                    ),
                    "{}",
                    self.source.log_text()
                );
                assert!(
                    self.source
                        .log_text()
                        .contains("the destination holds the live pass"),
                    "{}",
                    self.source.log_text()
                );
                assert!(running(&self.engines, &self.uuid));
                noise(&self.source.server_dir(&self.uuid).join("noise.bin"));
            }

            /// Bytes the destination's session holds now (its ack log).
            fn held(&self) -> u64 {
                let sessions = self.dest.data.join(".ferry-sessions");
                let mut held = 0;
                for dir in std::fs::read_dir(sessions).into_iter().flatten().flatten() {
                    let acks = std::fs::read_to_string(dir.path().join("acks")).unwrap_or_default();
                    for line in acks.lines() {
                        let mut f = line.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
                        held = held.max(f.next().unwrap_or(0) + f.next().unwrap_or(0));
                    }
                }
                held
            }

            fn restart_dest(&mut self) {
                self.dest.kill9();
                let root = self.dest.keep_root();
                self.dest =
                    TestNode::start_with(dest_options(&self.engines, &self.panel, Some(root)));
                assert!(
                    self.dest.log_text().contains("it resumes"),
                    "{}",
                    self.dest.log_text()
                );
                self.proxy.set_upstream(self.dest.addr);
            }

            /// Completed, the destination's tree equal to the stopped
            /// source's, the final pass carrying the rewritten noise, one
            /// success report; bytes sent twice (from the source's log).
            fn assert_completed(&self) -> u64 {
                let end = self
                    .source
                    .wait_transfer_end(&self.uuid, Duration::from_secs(120));
                assert_eq!(
                    end["status"],
                    "completed",
                    "{end}\n--- source:\n{}\n--- destination:\n{}",
                    self.source.log_text(),
                    self.dest.log_text()
                );
                assert!(!running(&self.engines, &self.uuid));
                let want = listing(&self.source.server_dir(&self.uuid));
                assert_eq!(listing(&self.dest.server_dir(&self.uuid)), want);
                let (delta, _) = delta_and_live_bytes(&self.source.log_text());
                assert!(delta >= 16 * MIB, "the final pass sent {delta} bytes");
                assert_eq!(
                    self.panel.transfer_reports(&self.uuid),
                    vec![("success".to_string(), 204)]
                );
                let log = self.source.log_text();
                let line = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("bytes sent twice"))
                    .unwrap_or_else(|| panic!("no segment summary in\n{log}"));
                let before = line.split(" bytes sent twice").next().unwrap();
                before.rsplit(' ').next().unwrap().parse().unwrap()
            }
        }

        #[test]
        fn a_cut_during_the_final_pass_resumes_and_the_tree_is_identical() {
            let Some(s) = start() else {
                return;
            };
            s.live_pass_held();
            // Everything after the live pass is the final pass (16 MiB of
            // changed blocks at 2 MiB/s): cut 5 MiB into it.
            s.proxy.cut_once_after(5 * MIB);
            let resent = s.assert_completed();
            assert_eq!(s.proxy.cuts(), 1, "the proxy did not cut");
            assert!(s.source.log_text().contains("resuming"));
            assert!(
                resent > 0 && resent <= 4 * MIB,
                "re-sent {resent} bytes: a cut mid-segment re-sends that segment's start, no more"
            );
        }

        #[test]
        fn a_destination_killed_after_the_live_pass_and_in_the_final_pass_resumes() {
            let Some(mut s) = start() else {
                return;
            };
            s.live_pass_held();
            let live = s.held();
            assert!(live > 16 * MIB, "held {live} after the live pass");
            // After the live pass, before the stop: the server still runs.
            s.restart_dest();
            assert!(running(&s.engines, &s.uuid));
            // During the final pass: the server is stopped, 4 MiB of the
            // changes are held.
            let deadline = Instant::now() + Duration::from_secs(60);
            while s.held() < live + 4 * MIB {
                assert!(
                    Instant::now() < deadline,
                    "the final pass never arrived\n--- source:\n{}\n--- destination:\n{}",
                    s.source.log_text(),
                    s.dest.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(!running(&s.engines, &s.uuid), "stopped for the final pass");
            s.restart_dest();
            let resent = s.assert_completed();
            assert!(
                resent <= 2 * 4 * MIB,
                "re-sent {resent} bytes over two restarts"
            );
        }
    }
}
