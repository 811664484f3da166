//! The segmented transport between ferry nodes (SPEC §10,
//! docs/transport.md), end to end on loopback: through a proxy shaped like
//! Cloudflare's (413 over 100 MB, idle reads cut), cuts, SIGKILL of either
//! node, expiry, replay, checksum mismatches and the session's own
//! refusals.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::fake_panel::{self, FakePanel};
use crate::support::node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use crate::support::proxy::Proxy;

pub(crate) const SERVER: &str = "6c1f8b3d-4e5f-4a70-9b2c-3d4e5f6a7b8c";
pub(crate) const MB: u64 = 1_000_000;
pub(crate) const MIB: u64 = 1024 * 1024;

fn settings() -> serde_json::Value {
    json!({
        "uuid": SERVER,
        "meta": {"name": "Big world"},
        "build": {"disk_space": 0, "memory_limit": 1024},
        "container": {"image": "ferry-test/busybox:latest"},
    })
}

/// Incompressible files of `total` bytes (in files of at most 50 MB) next
/// to a small server tree: fast to make (xorshift), and the archive is as
/// large as the data, so the proxy's body limit bites.
fn random_tree(dir: &Path, total: u64, seed: u64) {
    make_server_tree(dir);
    std::fs::create_dir_all(dir.join("world/big")).unwrap();
    let mut x = seed | 1;
    let mut left = total;
    let mut i = 0;
    let mut buf = vec![0u8; MIB as usize];
    while left > 0 {
        let size = left.min(50 * MB);
        let mut f = std::fs::File::create(dir.join(format!("world/big/r{i}.mca"))).unwrap();
        let mut written = 0;
        while written < size {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            let n = (size - written).min(MIB) as usize;
            f.write_all(&buf[..n]).unwrap();
            written += n as u64;
        }
        left -= size;
        i += 1;
    }
}

pub(crate) struct Setup {
    pub(crate) panel: FakePanel,
    pub(crate) source: TestNode,
    pub(crate) dest: TestNode,
    pub(crate) proxy: Proxy,
    jwt: String,
}

pub(crate) struct Options<'a> {
    pub(crate) data: u64,
    pub(crate) source_yaml: &'a str,
    pub(crate) dest_yaml: &'a str,
    pub(crate) dest_env: Vec<(String, String)>,
    pub(crate) source_env: Vec<(String, String)>,
    pub(crate) idle: Duration,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            data: 0,
            source_yaml: "compression_level: 1",
            dest_yaml: "",
            dest_env: vec![],
            source_env: vec![],
            idle: Duration::from_secs(5),
        }
    }
}

/// A panel, a destination behind the proxy, and a source holding SERVER
/// with `data` random bytes. The destination authenticates as its own
/// node, so the panel's list never offers it the server at start-up.
pub(crate) fn setup(o: Options<'_>) -> Setup {
    let panel = FakePanel::start("testtokenid", TOKEN);
    panel.add_node("desttokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        token_id: Some("desttokenid".into()),
        transfers_yaml: o.dest_yaml.to_string(),
        env: o.dest_env,
        ..Default::default()
    });
    panel.add_server_on(SERVER, settings(), "testtokenid");
    let root = tempfile::tempdir().unwrap().keep();
    random_tree(&root.join("volumes").join(SERVER), o.data, 7);
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        // The segmented transport is opt-in (docs/decisions.md).
        transfers_yaml: format!("transport: auto\n{}", o.source_yaml),
        env: o.source_env,
        ..Default::default()
    });
    let proxy = Proxy::start(dest.addr, 100 * MB, o.idle);
    Setup {
        panel,
        source,
        dest,
        proxy,
        jwt: String::new(),
    }
}

impl Setup {
    /// Both nodes' logs, for a failing assertion's message.
    pub(crate) fn logs(&self) -> String {
        format!(
            "--- source:\n{}\n--- destination:\n{}",
            self.source.log_text(),
            self.dest.log_text()
        )
    }

    /// What the panel does to start a transfer, to the destination through
    /// the proxy.
    pub(crate) fn start(&mut self) {
        self.panel.set_transferring(SERVER, true);
        self.jwt = self.panel.mint_transfer_jwt(&self.dest.token, SERVER);
        let (code, body) = self.source.request(
            "POST",
            &format!("/api/servers/{SERVER}/transfer"),
            Some(json!({
                "url": self.proxy.url("/api/transfers"),
                "token": format!("Bearer {}", self.jwt),
                "server": {"uuid": SERVER, "start_on_completion": false},
            })),
        );
        assert_eq!(code, 202, "{body}");
    }

    pub(crate) fn assert_identical(&self) {
        assert_eq!(
            tree_listing(&self.source.server_dir(SERVER)),
            tree_listing(&self.dest.server_dir(SERVER)),
            "the destination's tree differs from the source's"
        );
    }

    /// The session directories left on the destination (not the source's
    /// kept segment, which is unlinked at once).
    pub(crate) fn sessions_left(&self) -> Vec<String> {
        std::fs::read_dir(self.dest.data.join(".ferry-sessions"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The session's directory goes right after its outcome is visible
    /// (removing a large spool takes a while): give it a few seconds.
    pub(crate) fn assert_no_session_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.sessions_left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.sessions_left(), Vec::<String>::new(), "session left");
    }

    pub(crate) fn assert_destination_clean(&self) {
        assert!(!self.dest.server_dir(SERVER).exists(), "server dir left");
        let staging: Vec<_> = std::fs::read_dir(self.dest.data.join(".ferry-staging"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(staging.is_empty(), "staging left: {staging:?}");
        self.assert_no_session_left();
    }

    /// Bytes the source sent twice, from its log line.
    pub(crate) fn resent(&self) -> u64 {
        let log = self.source.log_text();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("bytes sent twice"))
            .unwrap_or_else(|| panic!("no segment summary in the source log:\n{log}"));
        let before = line.split(" bytes sent twice").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Bytes the destination's session holds now (its ack log).
    pub(crate) fn held(&self) -> u64 {
        let mut held = 0;
        for sid in self.sessions_left() {
            let acks = std::fs::read_to_string(
                self.dest
                    .data
                    .join(".ferry-sessions")
                    .join(sid)
                    .join("acks"),
            )
            .unwrap_or_default();
            for line in acks.lines() {
                let mut f = line.split(' ');
                let (Some(o), Some(l)) = (f.next(), f.next()) else {
                    continue;
                };
                held = held.max(o.parse::<u64>().unwrap_or(0) + l.parse::<u64>().unwrap_or(0));
            }
        }
        held
    }

    pub(crate) fn wait_held(&self, at_least: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.held() < at_least {
            assert!(
                Instant::now() < deadline,
                "the destination never held {at_least} bytes\n--- source:\n{}\n--- destination:\n{}",
                self.source.log_text(),
                self.dest.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn through_a_100_mb_proxy_300_mb_pass_in_segments_and_the_classic_post_is_refused() {
    let mut s = setup(Options {
        data: 300 * MB,
        ..Default::default()
    });
    // A Wings-style receiver (no session API) behind the proxy: the one
    // chunked POST of the whole archive dies at 100 MB with the proxy's
    // 413, and the source says so.
    s.proxy.hide_session_api(true);
    s.start();
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "failed", "{record}");
    assert!(s.proxy.refused_413() >= 1, "the proxy never refused a body");
    // The source hears the 413 when it reads the answer before the proxy's
    // close resets the connection; otherwise a broken pipe, as Wings gets.
    let error = record["error"].as_str().unwrap_or("");
    assert!(
        error.contains("413") || error.contains("Broken pipe") || error.contains("reset"),
        "{record}"
    );
    s.dest.wait_transfer_end(SERVER, Duration::from_secs(20));
    s.assert_destination_clean();

    // Ferry to ferry through the same proxy: segments of 64 MiB pass.
    s.proxy.hide_session_api(false);
    let refused_before = s.proxy.refused_413();
    let started = Instant::now();
    s.start();
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(120));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        s.dest.log_text()
    );
    let took = started.elapsed();
    assert_eq!(
        s.proxy.refused_413(),
        refused_before,
        "a segment was refused"
    );
    assert!(s.proxy.forwarded() > 300 * MB);
    s.assert_identical();
    assert_eq!(s.resent(), 0);
    s.assert_no_session_left();
    // The RSS budget (48 MiB per node) holds: segments live in files.
    let (src_hwm, dst_hwm) = (s.source.status_kib("VmHWM"), s.dest.status_kib("VmHWM"));
    eprintln!("300 MB through the proxy in {took:?}; peak RSS source {src_hwm} KiB, destination {dst_hwm} KiB");
    assert!(
        src_hwm < 48 * 1024 && dst_hwm < 48 * 1024,
        "{src_hwm} / {dst_hwm} KiB"
    );

    // The panel's JWT opened that session; now that the transfer ended,
    // it opens nothing (SPEC §4 replay), directly or through the proxy.
    for url in [
        s.dest.url("/api/transfers/session"),
        s.proxy.url("/api/transfers/session"),
    ] {
        let resp = TestNode::agent()
            .post(&url)
            .header("Authorization", &format!("Bearer {}", s.jwt))
            .header("Content-Type", "application/json")
            .send(json!({"boundary": "abc"}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
}

#[test]
fn a_cut_mid_transfer_resumes_and_resends_at_most_one_segment() {
    let mut s = setup(Options {
        data: 40 * MB,
        source_yaml: "compression_level: 1\nsegment_size: 4",
        dest_yaml: "segment_size: 4",
        ..Default::default()
    });
    s.proxy.cut_once_after(20 * MB + 12_345);
    s.start();
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        s.source.log_text()
    );
    assert_eq!(s.proxy.cuts(), 1, "the proxy did not cut");
    let resent = s.resent();
    assert!(
        resent <= 4 * MIB,
        "re-sent {resent} bytes, more than one segment"
    );
    assert!(
        resent > 0,
        "a cut mid-segment re-sends that segment's start"
    );
    s.assert_identical();
    assert!(s.source.log_text().contains("resuming"));
}

/// Between ferry nodes the archive travels as zstd (the destination's
/// probe answer lists it); `FERRY_CODEC=gzip` on the source sends gzip
/// over the same transport. Both land identical trees, and the
/// destination's log names what it extracted.
#[test]
fn between_ferry_nodes_the_archive_travels_as_zstd_unless_gzip_is_asked() {
    for (env, codec) in [(None, "zstd"), (Some("gzip"), "gzip")] {
        let mut s = setup(Options {
            data: 3 * MB,
            source_env: env
                .map(|c| vec![("FERRY_CODEC".to_string(), c.to_string())])
                .unwrap_or_default(),
            ..Default::default()
        });
        s.start();
        let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(60));
        assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
        s.assert_identical();
        let extracted = s
            .dest
            .log_text()
            .lines()
            .find(|l| l.contains("archive extracted"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no extraction line\n{}", s.logs()));
        assert!(
            extracted.ends_with(&format!(" {codec} bytes")),
            "{extracted}"
        );
        assert!(s
            .source
            .log_text()
            .contains(&format!("the archive goes as {codec}")));
    }
}

/// A cut lands while the destination still holds the cut request (held
/// 1.5 s before it reads the body, by a failpoint): the source's retries
/// find the session busy (409) until that request ends. They pause
/// 100 ms, doubling, instead of hammering the destination, and the
/// transfer completes once the old request gave its segment up.
#[test]
fn retries_into_a_busy_session_pause_and_the_transfer_completes() {
    let mut s = setup(Options {
        data: 12 * MB,
        source_yaml: "compression_level: 1\nsegment_size: 4",
        dest_yaml: "segment_size: 4",
        dest_env: vec![(
            "FERRY_FAILPOINT".into(),
            "segment-receiving:delay=1500".into(),
        )],
        ..Default::default()
    });
    // Segments of 1 MiB, then 4 MiB (each filled whole while the
    // destination holds the request before): the cut lands 2.3 MB into
    // the second request's body, which the destination holds unread in
    // its socket.
    s.proxy.cut_once_after(3 * MIB + 300_000);
    s.start();
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(90));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    assert_eq!(s.proxy.cuts(), 1, "the proxy did not cut");
    let busy = s
        .dest
        .log_text()
        .lines()
        .filter(|l| l.contains("method=PUT") && l.contains("status=409"))
        .count();
    // The held request ends about 1.5 s after the cut; pauses of 0.1,
    // 0.2, 0.4, 0.8 s (each also asks status) fit about four attempts in
    // that; a retry without pause would make hundreds.
    assert!(
        (1..=8).contains(&busy),
        "{busy} busy answers to the source's retries\n{}",
        s.logs()
    );
    s.assert_identical();
}

#[test]
fn a_killed_destination_restarts_and_the_transfer_resumes() {
    let mut s = setup(Options {
        data: 40 * MB,
        // 8 MiB/s: the kill lands mid-transfer.
        source_yaml: "compression_level: 1\nsegment_size: 4\nupload_limit: 8",
        dest_yaml: "segment_size: 4",
        ..Default::default()
    });
    s.start();
    s.wait_held(12 * MIB, Duration::from_secs(30));
    let held = s.held();
    s.dest.kill9();
    let root = s.dest.keep_root();
    s.dest = TestNode::start_with(NodeOptions {
        remote: Some(s.panel.url()),
        token_id: Some("desttokenid".into()),
        root: Some(root),
        own_root: true,
        transfers_yaml: "segment_size: 4".into(),
        ..Default::default()
    });
    assert!(
        s.dest.log_text().contains("it resumes"),
        "{}",
        s.dest.log_text()
    );
    s.proxy.set_upstream(s.dest.addr);
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(90));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    s.assert_identical();
    assert!(
        s.resent() <= 4 * MIB,
        "re-sent {} after the restart",
        s.resent()
    );
    assert!(held > 0);
    s.assert_no_session_left();
    // One success report, from the destination; never a failure.
    let reports = s.panel.transfer_reports(SERVER);
    assert_eq!(reports, vec![("success".to_string(), 204)], "{reports:?}");
}

// A killed source: `transport_resume.rs`.

/// A cancel on the source while its open is in flight (the destination
/// holds the open 3 s): the cancel shuts the source's connections, so the
/// open's answer never arrives and the source does not know the session's
/// id; its cancel by the JWT still ends the session at once, not after the
/// resume window (issue #17's live-pass cancel bug).
#[test]
fn a_cancel_while_the_session_opens_ends_it_on_the_destination() {
    let mut s = setup(Options {
        data: 4 * MB,
        dest_env: vec![(
            "FERRY_FAILPOINT".into(),
            "session-opening:delay=3000".into(),
        )],
        ..Default::default()
    });
    s.start();
    assert!(
        s.dest.wait_log(
            "failpoint: delaying at session-opening",
            Duration::from_secs(20)
        ),
        "{}",
        s.dest.log_text()
    );
    let (code, body) = s.source.request(
        "DELETE",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({"reason": "changed my mind"})),
    );
    assert_eq!(code, 202, "{body}");
    let end = s.source.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(end["status"], "cancelled", "{end}");
    // The default window is 15 min: ending within seconds is the cancel.
    let record = s.dest.wait_transfer_end(SERVER, Duration::from_secs(15));
    assert_eq!(record["status"], "cancelled", "{record}\n{}", s.logs());
    assert!(
        record["cancel_reason"]
            .as_str()
            .unwrap_or("")
            .contains("while the session was opening"),
        "{record}"
    );
    s.assert_destination_clean();
    // The JWT is spent: it opens nothing any more.
    let (code, v) = raw::call(
        "POST",
        &s.dest.url("/api/transfers/session"),
        &format!("Bearer {}", s.jwt),
        &[("Content-Type", "application/json".into())],
        json!({"boundary": "bnd", "bytes_total": 1000})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(code, 401, "{v}");
}

/// An upload limit paces the body, so a 64 MiB segment takes long to fill
/// while the destination hears nothing: with a 4 s window (and 4, 8, 16
/// MiB segments at 2 MiB/s) the session expired before the third segment
/// came. A segment is now sent once filling it took a quarter of the
/// window: the transfer completes (issue #17).
#[test]
fn a_tight_upload_limit_with_large_segments_keeps_the_session_alive() {
    let mut s = setup(Options {
        data: 20 * MB,
        source_yaml: "compression_level: 1\nupload_limit: 2",
        dest_env: vec![("FERRY_RESUME_WINDOW_SECS".into(), "4".into())],
        ..Default::default()
    });
    s.start();
    let record = s.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}\n{}", s.logs());
    s.assert_identical();
    s.assert_no_session_left();
}

/// A destination that answers the probe and the open as ferry does, then
/// freezes (a stopped process, a hung disk): its sockets stay open, it
/// reads and answers nothing more, until `thawed` is set.
fn frozen_destination(window: u64, thawed: Arc<AtomicBool>) -> std::net::SocketAddr {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let thawed = Arc::clone(&thawed);
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let answer = match line.split(' ').take(2).collect::<Vec<_>>()[..] {
                        ["GET", "/api/transfers/session"] => (
                            200,
                            json!({"ferry": 1, "segment_size": 64 * MIB, "resume_window": window}),
                        ),
                        ["POST", "/api/transfers/session"] => {
                            let mut body = vec![0; length];
                            reader.read_exact(&mut body).unwrap();
                            (
                                201,
                                json!({"session": "a".repeat(32), "secret": "b".repeat(64),
                                       "segment_size": 64 * MIB, "held": 0}),
                            )
                        }
                        _ => {
                            while !thawed.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            return;
                        }
                    };
                    let body = answer.1.to_string();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        answer.0,
                        body.len()
                    );
                }
            });
        }
    });
    addr
}

/// The destination freezes after the open: the first segment's request
/// takes no bytes (a zero window TCP keeps open for as long as the peer's
/// kernel answers). Before, the sender waited on it without end; now it
/// gives the request up after a quarter of the window (at least 5 s), asks
/// status, and ends the transfer as failed once the window passed
/// without an answer (issue #17).
#[test]
fn a_frozen_destination_does_not_hold_the_sender_past_its_window() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    panel.add_server_on(SERVER, settings(), "testtokenid");
    let root = tempfile::tempdir().unwrap().keep();
    random_tree(&root.join("volumes").join(SERVER), 20 * MB, 9);
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        transfers_yaml: "transport: auto\ncompression_level: 1".into(),
        ..Default::default()
    });
    let thawed = Arc::new(AtomicBool::new(false));
    let dest = frozen_destination(8, Arc::clone(&thawed));
    panel.set_transferring(SERVER, true);
    let began = Instant::now();
    let (code, body) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({
            "url": format!("http://{dest}/api/transfers"),
            "token": "Bearer frozen",
            "server": {"uuid": SERVER, "start_on_completion": false},
        })),
    );
    assert_eq!(code, 202, "{body}");
    // The bound: 5 s for the stalled request, a 15 s status attempt, packing.
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    thawed.store(true, Ordering::SeqCst);
    let took = began.elapsed();
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or("")
            .contains("did not answer within the resume window"),
        "{record}\n{}",
        source.log_text()
    );
    assert!(
        source.log_text().contains("not acknowledged"),
        "{}",
        source.log_text()
    );
    assert!(took < Duration::from_secs(45), "held the sender {took:?}");
    // The server stays on the source (its last byte never went out).
    assert!(source.server_dir(SERVER).exists());
}

/// A session's transfer that its window ended: cancelled, as expired.
pub(crate) fn assert_ended_as_expired(record: &serde_json::Value) {
    assert_eq!(record["status"], "cancelled", "{record}");
    assert!(
        record["cancel_reason"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{record}"
    );
}

/// A standalone destination and a source played by the test: the
/// session's own refusals and the checksum rows of SPEC §4. Its request
/// helpers serve `transport_session` too.
pub(crate) mod raw {
    use super::*;
    use crate::support::archive_support::pack_vec;
    use crate::support::multipart_body;

    fn jwt(dest: &TestNode) -> String {
        fake_panel::mint_transfer_jwt(&dest.token, SERVER)
    }

    pub(crate) fn call(
        method: &str,
        url: &str,
        auth: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let agent = TestNode::agent();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Authorization", auth);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut resp = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
        )
    }

    /// `GET …/session/<sid><query>` with the session's secret.
    pub(crate) fn status(
        dest: &TestNode,
        sid: &str,
        secret: &str,
        query: &str,
    ) -> (u16, serde_json::Value) {
        call(
            "GET",
            &dest.url(&format!("/api/transfers/session/{sid}{query}")),
            &format!("Ferry-Session {secret}"),
            &[],
            b"",
        )
    }

    fn open(dest: &TestNode, token: &str, boundary: &str) -> (String, String) {
        let (code, v) = call(
            "POST",
            &dest.url("/api/transfers/session"),
            &format!("Bearer {token}"),
            &[("Content-Type", "application/json".into())],
            json!({"boundary": boundary, "bytes_total": 1000})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(code, 201, "{v}");
        (
            v["session"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) fn put(
        dest: &TestNode,
        sid: &str,
        secret: &str,
        offset: u64,
        bytes: &[u8],
        sha: &str,
    ) -> (u16, serde_json::Value) {
        call(
            "PUT",
            &dest.url(&format!(
                "/api/transfers/session/{sid}/segment?offset={offset}"
            )),
            &format!("Ferry-Session {secret}"),
            &[("X-Ferry-Segment-Sha256", sha.to_string())],
            bytes,
        )
    }

    pub(crate) fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn body(boundary: &str, checksum: Option<&str>) -> Vec<u8> {
        let tree = tempfile::tempdir().unwrap();
        make_server_tree(tree.path());
        let (archive, summary) = pack_vec(tree.path(), 1, 1);
        let checksum = checksum.unwrap_or(&summary.sha256_hex).to_string();
        let config = json!({"settings": settings()}).to_string();
        multipart_body(
            boundary,
            &[
                ("configuration", None, config.as_bytes()),
                ("archive", Some("archive.tar.gz"), &archive),
                ("checksum", None, checksum.as_bytes()),
            ],
        )
    }

    /// The finish's claim over segments `[(offset, bytes)]`: the SHA-256
    /// of the ack log the destination should hold (docs/transport.md).
    fn acks_claim(segments: &[(usize, &[u8])]) -> String {
        let log: String = segments
            .iter()
            .map(|(o, b)| format!("{o} {} {}\n", b.len(), sha(b)))
            .collect();
        sha(log.as_bytes())
    }

    /// Sends `bytes` in two segments and the finish claim (the right one
    /// when None); asks status until the session ends.
    fn send_all(
        dest: &TestNode,
        sid: &str,
        secret: &str,
        bytes: &[u8],
        claim: Option<&str>,
    ) -> serde_json::Value {
        let half = bytes.len() / 2;
        let claim = claim.map_or_else(
            || acks_claim(&[(0, &bytes[..half]), (half, &bytes[half..])]),
            str::to_string,
        );
        assert_eq!(
            put(dest, sid, secret, 0, &bytes[..half], &sha(&bytes[..half])).0,
            200
        );
        let (code, v) = put(
            dest,
            sid,
            secret,
            half as u64,
            &bytes[half..],
            &sha(&bytes[half..]),
        );
        assert_eq!((code, v["held"].as_u64()), (200, Some(bytes.len() as u64)));
        let (code, v) = call(
            "POST",
            &dest.url(&format!("/api/transfers/session/{sid}/finish")),
            &format!("Ferry-Session {secret}"),
            &[],
            json!({"length": bytes.len(), "acks_sha256": claim})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(code, 202, "{v}");
        // The status that waits answers once the finish decided, long
        // before its 15 s (a small install takes milliseconds).
        let asked = Instant::now();
        let (code, v) = status(dest, sid, secret, "?wait=15");
        assert_eq!(code, 200);
        assert!(
            !matches!(v["state"].as_str(), Some("receiving" | "finishing")),
            "{v}"
        );
        assert!(asked.elapsed() < Duration::from_secs(10), "{v}");
        v
    }

    /// Nothing left (the session's directory goes right after its outcome
    /// is visible: a few seconds for it).
    fn assert_clean(dest: &TestNode) {
        assert!(!dest.server_dir(SERVER).exists());
        let sessions = sessions_after_a_while(dest);
        assert!(sessions.is_empty(), ".ferry-sessions left: {sessions:?}");
        let staging: Vec<_> = std::fs::read_dir(dest.data.join(".ferry-staging"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(staging.is_empty(), ".ferry-staging left: {staging:?}");
    }

    /// What `.ferry-sessions` holds once it is empty, or after 10 s.
    fn sessions_after_a_while(dest: &TestNode) -> Vec<std::ffi::OsString> {
        let left = || -> Vec<_> {
            std::fs::read_dir(dest.data.join(".ferry-sessions"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !left().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        left()
    }

    #[test]
    fn segment_and_session_refusals_then_a_standalone_transfer() {
        let dest = TestNode::start();
        let token = jwt(&dest);
        // The probe needs a valid transfer token; then it says ferry.
        let (code, _) = call(
            "GET",
            &dest.url("/api/transfers/session"),
            "Bearer nope",
            &[],
            b"",
        );
        assert_eq!(code, 401);
        let (code, v) = call(
            "GET",
            &dest.url("/api/transfers/session"),
            &format!("Bearer {token}"),
            &[],
            b"",
        );
        assert_eq!((code, v["ferry"].as_u64()), (200, Some(1)), "{v}");

        let (sid, secret) = open(&dest, &token, "b0undary");
        let bytes = body("b0undary", None);
        // Without the secret, or with another: 401; an unknown session: 404.
        assert_eq!(
            put(&dest, &sid, &"0".repeat(64), 0, b"x", &sha(b"x")).0,
            401
        );
        assert_eq!(
            put(&dest, &"a".repeat(32), &secret, 0, b"x", &sha(b"x")).0,
            404
        );
        // A segment whose digest is not its header's: 400, nothing held.
        let (code, v) = put(&dest, &sid, &secret, 0, &bytes[..100], &sha(b"other"));
        assert_eq!(
            (code, v["error"].as_str()),
            (400, Some("segment checksum mismatch"))
        );
        assert_eq!(v["held"], 0);
        // Not at what is held: 409 with what is held.
        let (code, v) = put(&dest, &sid, &secret, 5, &bytes[5..10], &sha(&bytes[5..10]));
        assert_eq!((code, v["held"].as_u64()), (409, Some(0)));
        // The same JWT again while the session lives: the same session,
        // a new secret (the old one stops working).
        let (sid2, secret2) = open(&dest, &token, "b0undary");
        assert_eq!(sid2, sid);
        assert_eq!(put(&dest, &sid, &secret, 0, b"x", &sha(b"x")).0, 401);

        let end = send_all(&dest, &sid, &secret2, &bytes, None);
        assert_eq!(end["state"], "completed", "{end}\n{}", dest.log_text());
        assert!(dest.server_dir(SERVER).join("server.properties").exists());
        let left = sessions_after_a_while(&dest);
        assert!(left.is_empty(), "{left:?}");
        // Replay after the end: refused.
        let (code, _) = call(
            "POST",
            &dest.url("/api/transfers/session"),
            &format!("Bearer {token}"),
            &[("Content-Type", "application/json".into())],
            json!({"boundary": "b0undary"}).to_string().as_bytes(),
        );
        assert_eq!(code, 401);
    }

    #[test]
    fn a_wrong_archive_checksum_or_body_digest_fails_and_leaves_nothing() {
        let dest = TestNode::start();
        // The archive's checksum part is wrong: SPEC §4's row.
        let (sid, secret) = open(&dest, &jwt(&dest), "bnd");
        let bytes = body("bnd", Some(&"0".repeat(64)));
        let end = send_all(&dest, &sid, &secret, &bytes, None);
        assert_eq!(end["state"], "failed", "{end}");
        assert_eq!(
            (end["code"].as_u64(), end["error"].as_str()),
            (Some(400), Some("checksums don't match"))
        );
        assert_clean(&dest);
        // Every segment checked out, but the finish names other segments:
        // the whole body as one (a claim over another split), or another
        // body.
        for as_one in [true, false] {
            let (sid, secret) = open(&dest, &jwt(&dest), "bnd");
            let bytes = body("bnd", None);
            let other = if as_one {
                acks_claim(&[(0, &bytes)])
            } else {
                acks_claim(&[(0, b"x")])
            };
            let end = send_all(&dest, &sid, &secret, &bytes, Some(&other));
            assert_eq!(end["state"], "failed", "{end}");
            assert_eq!(end["error"], "checksums don't match");
            assert_clean(&dest);
        }
    }

    /// A PUT of `bytes` at 0 (`sha` in its header) whose body stops for a
    /// second after `first` bytes, so the extractor reads those while the
    /// segment is still arriving. The answer's status and body.
    fn put_pausing(
        dest: &TestNode,
        sid: &str,
        secret: &str,
        bytes: &[u8],
        sha: &str,
        first: usize,
    ) -> (u16, String) {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(dest.addr).unwrap();
        write!(
            conn,
            "PUT /api/transfers/session/{sid}/segment?offset=0 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Ferry-Session {secret}\r\nX-Ferry-Segment-Sha256: {sha}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        )
        .unwrap();
        conn.write_all(&bytes[..first]).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        conn.write_all(&bytes[first..]).unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    #[test]
    fn a_resend_unlike_the_bytes_already_extracted_fails_the_transfer() {
        // The extractor reads a segment while it arrives (docs/transport.md,
        // "What each side persists"). A segment corrupted on the way (its
        // digest does not match) whose bytes it has read can be resent only
        // as those same bytes; a resend that differs in them fails the
        // transfer (the tree holds bytes no segment vouches for). (A byte
        // the extractor cannot parse fails it at once: docs/transport.md.)
        let dest = TestNode::start();
        let (sid, secret) = open(&dest, &jwt(&dest), "bnd");
        let bytes = body("bnd", None);
        let half = bytes.len() / 2;
        let mut corrupted = bytes[..half].to_vec();
        // A byte of the configuration part that leaves it valid JSON, so
        // the extractor reads on ("Big world" as "Bog world").
        let at = bytes
            .windows(9)
            .position(|w| w == b"Big world")
            .expect("the server's name in the body")
            + 1;
        corrupted[at] = b'o';
        let (code, answer) = put_pausing(
            &dest,
            &sid,
            &secret,
            &corrupted,
            &sha(&bytes[..half]),
            at + 16,
        );
        assert_eq!(code, 400, "{answer}");
        assert!(answer.contains("segment checksum mismatch"), "{answer}");
        let (code, v) = put(
            &dest,
            &sid,
            &secret,
            0,
            &bytes[..half],
            &sha(&bytes[..half]),
        );
        assert_eq!(
            (code, v["error"].as_str()),
            (400, Some("checksums don't match")),
            "{v}"
        );
        // The extractor ends the transfer with it (at once: it was
        // waiting for bytes).
        let deadline = Instant::now() + Duration::from_secs(10);
        let v = loop {
            let (code, v) = status(&dest, &sid, &secret, "");
            assert_eq!(code, 200, "{v}");
            if v["state"] != "receiving" || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            (v["state"].as_str(), v["error"].as_str()),
            (Some("failed"), Some("checksums don't match")),
            "{v}"
        );
        assert_clean(&dest);
        assert!(
            dest.log_text()
                .contains("differs from what an earlier attempt sent"),
            "{}",
            dest.log_text()
        );
    }

    #[test]
    fn cancel_through_the_session_removes_it() {
        let dest = TestNode::start();
        let (sid, secret) = open(&dest, &jwt(&dest), "bnd");
        let bytes = body("bnd", None);
        assert_eq!(
            put(
                &dest,
                &sid,
                &secret,
                0,
                &bytes[..1000],
                &sha(&bytes[..1000])
            )
            .0,
            200
        );
        // `ferry status` shows the resumable session and what it holds.
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &dest.token).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["status", "--node", &dest.url("")])
            .arg("--token-file")
            .arg(&token_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("session {} of {SERVER}", &sid[..8]))
                && text.contains("receiving (resumable), holds 1000 B"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, v) = call(
            "DELETE",
            &dest.url(&format!("/api/transfers/session/{sid}")),
            &format!("Ferry-Session {secret}"),
            &[("Content-Type", "application/json".into())],
            br#"{"reason":"source cancelled"}"#,
        );
        assert_eq!(code, 202, "{v}");
        let record = dest.wait_transfer_end(SERVER, Duration::from_secs(5));
        assert_eq!(record["status"], "cancelled");
        // The session's state follows its transfer's end (the extractor
        // ends both, the record first).
        let deadline = Instant::now() + Duration::from_secs(5);
        let (code, v) = loop {
            let (code, v) = status(&dest, &sid, &secret, "");
            if v["state"] != "receiving" || Instant::now() > deadline {
                break (code, v);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!((code, v["state"].as_str()), (200, Some("cancelled")), "{v}");
        assert_eq!(v["code"], 409);
        assert_clean(&dest);
        let (code, _) = put(
            &dest,
            &sid,
            &secret,
            1000,
            &bytes[1000..2000],
            &sha(&bytes[1000..2000]),
        );
        assert_eq!(code, 409);
    }

    /// The cancel by the panel's JWT (a source that never got the open's
    /// answer): the live session opened with it ends, the JWT is spent,
    /// and a second one finds nothing and says so.
    #[test]
    fn cancel_by_the_jwt_ends_the_session_it_opened() {
        let dest = TestNode::start();
        let token = jwt(&dest);
        let (sid, secret) = open(&dest, &token, "bnd");
        let cancel = |auth: &str| {
            call(
                "DELETE",
                &dest.url("/api/transfers/session"),
                auth,
                &[("Content-Type", "application/json".into())],
                br#"{"reason":"source cancelled"}"#,
            )
        };
        // Another server's JWT finds nothing of this one.
        let other =
            fake_panel::mint_transfer_jwt(&dest.token, "0d2b4c6e-8f10-4a32-b456-789abcdef012");
        let (code, v) = cancel(&format!("Bearer {other}"));
        assert_eq!((code, &v["session"]), (202, &json!(null)), "{v}");
        let (code, v) = cancel(&format!("Bearer {token}"));
        assert_eq!(code, 202, "{v}");
        let record = dest.wait_transfer_end(SERVER, Duration::from_secs(5));
        assert_eq!(record["status"], "cancelled", "{record}");
        assert_eq!(record["cancel_reason"], "source cancelled", "{record}");
        assert_clean(&dest);
        // The session's own state follows the record's end within moments
        // (its extractor ends it); a segment is refused meanwhile anyway.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (code, v) = status(&dest, &sid, &secret, "");
            if code == 404 || v["state"] == "cancelled" {
                break;
            }
            assert!(Instant::now() < deadline, "{code} {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Spent: neither a second cancel nor an open gets through.
        assert_eq!(cancel(&format!("Bearer {token}")).0, 401);
        let (code, v) = call(
            "POST",
            &dest.url("/api/transfers/session"),
            &format!("Bearer {token}"),
            &[("Content-Type", "application/json".into())],
            br#"{"boundary":"bnd","bytes_total":1000}"#,
        );
        assert_eq!(code, 401, "{v}");
    }

    /// A segment refused before its body is read (a wrong offset: 409; a
    /// wrong secret: 401), 64 MiB announced: the sender's client, which
    /// sends the whole body before it reads an answer, learns of it within
    /// seconds (the destination closes a connection whose body it did not
    /// read: a bounded lingering close, then a reset), not after a stalled
    /// body. (The tests' proxy is left out: its graceful close leaves a
    /// FIN_WAIT2 remnant that ignores the client's zero-window probes, and
    /// about one run in six under load stalls ~106 s there; the sender's
    /// stall bound is what limits that, see
    /// `a_frozen_destination_does_not_hold_the_sender_past_its_window`.)
    #[test]
    fn a_segment_refused_unread_does_not_stall_its_sender() {
        let dest = TestNode::start();
        let (sid, secret) = open(&dest, &jwt(&dest), "bnd");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let n = 64 * MIB;
        let (good, bad) = (
            format!("Ferry-Session {secret}"),
            format!("Ferry-Session {}", "0".repeat(64)),
        );
        for (base, auth, offset) in [(dest.url(""), &good, 1000), (dest.url(""), &bad, 0)] {
            let began = Instant::now();
            let sent = agent
                .put(&format!(
                    "{}/api/transfers/session/{sid}/segment?offset={offset}",
                    base.trim_end_matches('/')
                ))
                .header("Authorization", auth)
                .header("X-Ferry-Segment-Sha256", &"0".repeat(64))
                .header("Content-Length", &n.to_string())
                .header("Content-Type", "application/octet-stream")
                .send(ureq::SendBody::from_reader(&mut std::io::repeat(0).take(n)));
            let took = began.elapsed();
            assert!(
                took < Duration::from_secs(15),
                "{base} offset {offset}: the refused segment held its sender {took:?} ({:?})",
                sent.map(|r| r.status())
            );
        }
        // Nothing was appended.
        let (code, v) = call(
            "GET",
            &dest.url(&format!("/api/transfers/session/{sid}")),
            &good,
            &[],
            b"",
        );
        assert_eq!((code, v["held"].as_u64()), (200, Some(0)), "{v}");
    }
}
