//! Resume after a restart of the SOURCE (SPEC §10, docs/transport.md
//! "source restart"): the packer gives the same bytes for the same
//! stopped tree (the crux, checked here on its own), a source killed
//! mid-transfer and restarted on its root and port takes its session up,
//! checks the held bytes against what it packs again and sends only the
//! rest; a session gone while it was down, or data changed while it was
//! down, ends the transfer per SPEC §5.1 with nothing left on the
//! destination.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::archive_support::pack_codec;
use crate::support::node::{tree_listing, NodeOptions, TestNode};
use crate::transport::{setup, Options, Setup, MIB, SERVER};
use ferry::archive::Codec;

const SOURCE_YAML: &str = "compression_level: 1\nsegment_size: 4\nupload_limit: 4";

/// A tree with what could make two packings differ: files created out of
/// name order, hard links, symlinks, a sparse file, empty and zero files,
/// compressible and incompressible data across the 1 MiB block boundary.
fn awkward_tree(dir: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    std::fs::create_dir_all(dir.join("z/deep/er")).unwrap();
    std::fs::create_dir_all(dir.join("a/empty")).unwrap();
    for name in ["m", "b", "y", "c", "x", "d"] {
        std::fs::write(dir.join(format!("z/{name}.txt")), name.repeat(5000)).unwrap();
    }
    let mut x = 99u64;
    let noise: Vec<u8> = (0..3 * MIB + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("z/deep/noise.bin"), &noise).unwrap();
    let mut mixed = noise[..MIB as usize].to_vec();
    mixed.extend(std::iter::repeat_n(b'q', 2 * MIB as usize));
    mixed.extend_from_slice(&noise[..100_000]);
    std::fs::write(dir.join("a/mixed.bin"), &mixed).unwrap();
    std::fs::write(dir.join("a/zeros.bin"), vec![0u8; 2 * MIB as usize + 5]).unwrap();
    std::fs::write(dir.join("a/empty.txt"), b"").unwrap();
    let mut sparse = std::fs::File::create(dir.join("z/deep/er/sparse.img")).unwrap();
    sparse.seek(SeekFrom::Start(5 * MIB)).unwrap();
    sparse.write_all(b"end of a sparse file").unwrap();
    std::fs::hard_link(dir.join("z/b.txt"), dir.join("a/link-to-b.txt")).unwrap();
    std::os::unix::fs::symlink("../z/deep", dir.join("a/sym")).unwrap();
}

#[test]
fn the_same_stopped_tree_packs_to_the_same_bytes_whatever_the_workers() {
    let tmp = tempfile::tempdir().unwrap();
    awkward_tree(tmp.path());
    for codec in [Codec::Gzip, Codec::Zstd] {
        for level in [1, 6] {
            let (first, _) = pack_codec(tmp.path(), codec, level, 1);
            for threads in [1, 2, 4, 3] {
                let (again, _) = pack_codec(tmp.path(), codec, level, threads);
                assert!(
                    again == first,
                    "{codec:?} level {level}, {threads} workers: the archive differs from the \
                     first packing ({} against {} bytes)",
                    again.len(),
                    first.len()
                );
            }
        }
    }
}

/// The source of `s` killed `after` the destination holds 8 MiB of 40 MB,
/// then `between` (the source down), then restarted on its root and port.
fn kill_source_and_restart(s: &mut Setup, after: Duration, between: impl FnOnce(&Setup)) {
    kill_source_and_restart_with(s, after, vec![], between)
}

/// `kill_source_and_restart`, the restarted source with `env`.
fn kill_source_and_restart_with(
    s: &mut Setup,
    after: Duration,
    env: Vec<(String, String)>,
    between: impl FnOnce(&Setup),
) {
    s.start();
    s.wait_held(8 * MIB, Duration::from_secs(30));
    std::thread::sleep(after);
    s.source.kill9();
    let port = s.source.addr.port();
    let root = s.source.keep_root();
    between(s);
    s.source = TestNode::start_with(NodeOptions {
        remote: Some(s.panel.url()),
        root: Some(root),
        own_root: true,
        port: Some(port),
        transfers_yaml: format!("transport: auto\n{SOURCE_YAML}"),
        env,
        ..Default::default()
    });
}

/// The body's length, from the restarted source's segment summary.
fn body_length(s: &Setup) -> u64 {
    let log = s.source.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("bytes sent twice"))
        .unwrap_or_else(|| panic!("no segment summary in the source log:\n{log}"));
    let before = line.split(" bytes in ").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The source's crash state is empty (no transfer left to recover, no
/// ack lines).
fn assert_no_source_state(s: &Setup) {
    let dir = s.source.root.join("root/ferry/transfers");
    assert!(dir.is_dir(), "no state directory at {}", dir.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "source state left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reports_by(s: &Setup, caller: &str, kind: &str) -> usize {
    let path = format!("/api/remote/servers/{SERVER}/transfer/{kind}");
    s.panel
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path == path && c.caller == caller)
        .count()
}

#[test]
fn a_killed_source_restarts_takes_its_session_up_and_resends_at_most_one_segment() {
    let mut s = setup(Options {
        data: 40 * 1_000_000,
        source_yaml: SOURCE_YAML,
        dest_yaml: "segment_size: 4",
        dest_env: vec![(
            "FERRY_FAILPOINT".into(),
            "segment-receiving:delay=1500".into(),
        )],
        ..Default::default()
    });
    // A panel that moves the server and DELETEs it on the source (its URL
    // stays: the source restarts on its port).
    s.panel.start_transfer(SERVER, "testtokenid", "desttokenid");
    s.panel.set_node_url("testtokenid", &s.source.url(""));
    let before = tree_listing(&s.source.server_dir(SERVER));
    // Each segment's request waits 1.5 s on the destination before it
    // reads the body (packing takes 1 s a segment at 4 MiB/s), so the
    // requests follow each other and the kill lands in one, mid-body.
    kill_source_and_restart(&mut s, Duration::from_millis(700), |s| {
        // As if killed after the destination acknowledged a segment but
        // before the source noted it: its last noted line goes, so the
        // restarted source must learn that segment from the destination
        // (and check it against the body packed again).
        let dir = s.source.root.join("root/ferry/transfers");
        let acks = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "acks"))
            .expect("the source notes held segments");
        let text = std::fs::read_to_string(&acks).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 2, "{text}");
        lines.pop();
        std::fs::write(&acks, lines.join("\n") + "\n").unwrap();
    });
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(90));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    assert!(s.source.log_text().contains("it resumes"), "{}", s.logs());
    let took_up = s.source.log_text();
    let line = took_up
        .lines()
        .find(|l| l.contains("noted here"))
        .unwrap_or_else(|| panic!("no resume point in the log\n{}", s.logs()));
    // "(N segments, M noted here)": the one whose line was removed is
    // learnt from the destination, and so is the one in flight at the
    // kill when its body, already in the socket buffers, still arrived
    // whole (the destination's `/acks` waits for that request to end).
    let numbers: Vec<u64> = line
        .split(['(', ' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    let in_flight_arrived = match numbers[..] {
        [.., held, n, noted] if held >= 8 * MIB && n == noted + 1 => false,
        [.., held, n, noted] if held >= 8 * MIB && n == noted + 2 => true,
        _ => panic!("{line}"),
    };
    assert_eq!(tree_listing(&s.dest.server_dir(SERVER)), before);
    // Over both runs of the source, the wire carried the body and at most
    // the one segment in flight at the kill again (plus the open and
    // finish requests' few hundred bytes).
    let length = body_length(&s);
    let forwarded = s.proxy.forwarded();
    assert!(
        in_flight_arrived || forwarded > length + 4096,
        "the kill landed between two segment requests: nothing was sent twice to show\n{}",
        s.logs()
    );
    assert!(
        forwarded <= length + 4 * MIB + 4096,
        "{forwarded} bytes through the proxy for a body of {length}\n{}",
        s.logs()
    );
    eprintln!(
        "re-sent over the source's restart: {} bytes (body {length})",
        forwarded.saturating_sub(length)
    );
    assert_eq!(s.resent(), 0, "the restarted source re-sent nothing itself");
    // One success, from the destination, never a failure; the panel's
    // DELETE removed the source's copy.
    let reports = s.panel.transfer_reports(SERVER);
    assert_eq!(reports, vec![("success".to_string(), 204)], "{reports:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.source.server_dir(SERVER).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!s.source.server_dir(SERVER).exists(), "{}", s.logs());
    assert_eq!(s.panel.server_node(SERVER).as_deref(), Some("desttokenid"));
    s.assert_no_session_left();
    assert_no_source_state(&s);
}

/// A restarted source sends nothing while it packs the held bytes again
/// and checks them, which for a large tree can take longer than the
/// session's resume window. Here the window is 4 s and each held segment
/// checked again takes 2.5 s more (a failpoint; at least two are held):
/// the source asks the session's status meanwhile, the destination takes
/// that as a sign of life, and the transfer completes instead of the
/// session expiring under a live source.
#[test]
fn a_restarted_source_checking_its_held_bytes_longer_than_the_window_keeps_its_session() {
    let mut s = setup(Options {
        data: 40 * 1_000_000,
        source_yaml: SOURCE_YAML,
        dest_yaml: "segment_size: 4",
        dest_env: vec![("FERRY_RESUME_WINDOW_SECS".into(), "4".into())],
        ..Default::default()
    });
    let before = tree_listing(&s.source.server_dir(SERVER));
    kill_source_and_restart_with(
        &mut s,
        Duration::from_millis(200),
        vec![(
            "FERRY_FAILPOINT".into(),
            "segment-checked-again:delay=2500".into(),
        )],
        |_| {},
    );
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(90));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    let log = s.source.log_text();
    let checked = log
        .matches("failpoint: delaying at segment-checked-again")
        .count();
    assert!(
        checked >= 2,
        "the re-check took less than the window: nothing shown\n{}",
        s.logs()
    );
    assert_eq!(tree_listing(&s.dest.server_dir(SERVER)), before);
    s.assert_no_session_left();
    assert_no_source_state(&s);
}

#[test]
fn a_source_restarted_after_its_session_expired_ends_per_the_commit_rule() {
    let mut s = setup(Options {
        data: 40 * 1_000_000,
        source_yaml: SOURCE_YAML,
        dest_yaml: "segment_size: 4",
        dest_env: vec![("FERRY_RESUME_WINDOW_SECS".into(), "3".into())],
        ..Default::default()
    });
    let before = tree_listing(&s.source.server_dir(SERVER));
    kill_source_and_restart(&mut s, Duration::from_millis(500), |s| {
        // The silent session expires while the source is down.
        let record = s.dest.wait_transfer_end(SERVER, Duration::from_secs(20));
        crate::transport::assert_ended_as_expired(&record);
    });
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed", "{record}\n{}", s.logs());
    // The restarted source reported its failure once (the destination
    // reported its own expiry); the server stays here, as it was.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reports_by(&s, "testtokenid", "failure") < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reports_by(&s, "testtokenid", "failure"), 1, "{}", s.logs());
    assert_eq!(reports_by(&s, "testtokenid", "success"), 0);
    assert_eq!(tree_listing(&s.source.server_dir(SERVER)), before);
    let (_, view) = s.source.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false, "{view}");
    s.assert_destination_clean();
    assert_no_source_state(&s);
}

#[test]
fn data_changed_while_the_source_was_down_is_found_and_the_transfer_ends_with_nothing_left() {
    let mut s = setup(Options {
        data: 40 * 1_000_000,
        source_yaml: SOURCE_YAML,
        dest_yaml: "segment_size: 4",
        ..Default::default()
    });
    kill_source_and_restart(&mut s, Duration::from_millis(500), |s| {
        // One byte early in the archive (held by the destination), the
        // size and mtime kept: only the content tells.
        use std::os::unix::fs::FileExt;
        let path = s.source.server_dir(SERVER).join("world/big/r0.mca");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mtime = file.metadata().unwrap().modified().unwrap();
        let mut byte = [0u8; 1];
        std::fs::File::open(&path)
            .unwrap()
            .read_exact_at(&mut byte, 1000)
            .unwrap();
        file.write_all_at(&[byte[0] ^ 0xff], 1000).unwrap();
        file.set_modified(mtime).unwrap();
    });
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed", "{record}\n{}", s.logs());
    assert!(
        record["error"]
            .as_str()
            .unwrap_or("")
            .contains("the data changed while the source was down"),
        "{record}"
    );
    // The source cancelled the session: the destination ends it at once,
    // nothing left.
    let dest = s.dest.wait_transfer_end(SERVER, Duration::from_secs(20));
    assert_eq!(dest["status"], "cancelled", "{dest}\n{}", s.logs());
    s.assert_destination_clean();
    assert_eq!(reports_by(&s, "testtokenid", "failure"), 1, "{}", s.logs());
    assert!(s
        .source
        .server_dir(SERVER)
        .join("world/big/r0.mca")
        .exists());
    assert_no_source_state(&s);
}

/// Waits until `node`'s log has `needle`.
fn wait_log(node: &TestNode, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !node.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn a_source_killed_while_the_destination_finishes_learns_the_outcome_after_its_restart() {
    let mut s = setup(Options {
        data: 8 * 1_000_000,
        source_yaml: "compression_level: 1\nsegment_size: 4",
        dest_yaml: "segment_size: 4",
        // The destination installs for 4 s after the source's finish.
        dest_env: vec![("FERRY_FAILPOINT".into(), "installing:delay=4000".into())],
        ..Default::default()
    });
    s.panel.start_transfer(SERVER, "testtokenid", "desttokenid");
    s.panel.set_node_url("testtokenid", &s.source.url(""));
    let before = tree_listing(&s.source.server_dir(SERVER));
    s.start();
    wait_log(
        &s.dest,
        "failpoint: delaying at installing",
        Duration::from_secs(30),
    );
    s.source.kill9();
    let port = s.source.addr.port();
    let root = s.source.keep_root();
    s.source = TestNode::start_with(NodeOptions {
        remote: Some(s.panel.url()),
        root: Some(root),
        own_root: true,
        port: Some(port),
        transfers_yaml: "transport: auto\ncompression_level: 1\nsegment_size: 4".into(),
        ..Default::default()
    });
    // Taken up in `sent-last-byte`: the session is finishing, so nothing is
    // packed or sent again; the finish's poll learns the outcome.
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    assert!(
        s.source.log_text().contains("(sent-last-byte): it resumes"),
        "{}",
        s.logs()
    );
    assert!(!s.source.log_text().contains("packing the body again"));
    assert_eq!(tree_listing(&s.dest.server_dir(SERVER)), before);
    let reports = s.panel.transfer_reports(SERVER);
    assert_eq!(reports, vec![("success".to_string(), 204)], "{reports:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.source.server_dir(SERVER).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!s.source.server_dir(SERVER).exists(), "{}", s.logs());
    assert_no_source_state(&s);
}
