//! A destination's transfer sessions against its disk and its clock
//! (docs/transport.md): the spool counted against the server's
//! `disk_space` (SPEC §4's space row, the session ended with nothing
//! left), and the last activity kept across a restart (the remaining
//! window, not a fresh one; a window that passed while the node was down
//! ends the session at start-up as an expiry does). The source is played
//! by the test, against a destination with a (fake) panel.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::fake_panel::FakePanel;
use crate::support::multipart_body;
use crate::support::node::{NodeOptions, TestNode, TOKEN};
use crate::transport::assert_ended_as_expired;
use crate::transport::raw::{call, put, sha};

const SERVER: &str = "5e551011-4e5f-4a70-9b2c-3d4e5f6a7b8c";
const MIB: usize = 1024 * 1024;
const NO_SPACE: &str = "There is not enough disk space available to perform that action.";

struct Setup {
    panel: FakePanel,
    dest: TestNode,
    jwt: String,
}

/// A panel that lists SERVER (limited to `disk_mib` MiB) on another node,
/// and a destination with `env`.
fn setup(disk_mib: u64, env: Vec<(String, String)>) -> Setup {
    let panel = FakePanel::start("testtokenid", TOKEN);
    panel.add_node("desttokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        token_id: Some("desttokenid".into()),
        env,
        ..Default::default()
    });
    panel.add_server_on(
        SERVER,
        json!({
            "uuid": SERVER,
            "build": {"disk_space": disk_mib, "memory_limit": 1024},
            "container": {"image": "ferry-test/busybox:latest"},
        }),
        "testtokenid",
    );
    panel.set_transferring(SERVER, true);
    let jwt = panel.mint_transfer_jwt(&dest.token, SERVER);
    Setup { panel, dest, jwt }
}

impl Setup {
    /// `POST /api/transfers/session` announcing a tree of `bytes_total`.
    fn open(&self, bytes_total: usize) -> (u16, serde_json::Value) {
        call(
            "POST",
            &self.dest.url("/api/transfers/session"),
            &format!("Bearer {}", self.jwt),
            &[("Content-Type", "application/json".into())],
            json!({"boundary": "bnd", "bytes_total": bytes_total})
                .to_string()
                .as_bytes(),
        )
    }

    fn status(&self, sid: &str, secret: &str) -> (u16, serde_json::Value) {
        crate::transport::raw::status(&self.dest, sid, secret, "")
    }

    /// Status until the session is no longer receiving.
    fn status_once_ended(&self, sid: &str, secret: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, v) = self.status(sid, secret);
            assert_eq!(code, 200, "{v}");
            if v["state"] != "receiving" {
                return v;
            }
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `.ferry-sessions` and `.ferry-staging` hold, once the first is
    /// empty or after 10 s (a session's directory goes right after its
    /// outcome is visible).
    fn left(&self) -> Vec<String> {
        let list = |dir: &str| -> Vec<String> {
            std::fs::read_dir(self.dest.data.join(dir))
                .map(|d| {
                    d.flatten()
                        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !list(".ferry-sessions").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut left = list(".ferry-sessions");
        left.extend(list(".ferry-staging"));
        left
    }

    /// The transfer reports the panel received for SERVER.
    fn reports(&self) -> Vec<(String, u16)> {
        self.panel.transfer_reports(SERVER)
    }

    /// The same root started again (after `kill9`), with `env`.
    fn restart(&mut self, env: Vec<(String, String)>) {
        let root = self.dest.keep_root();
        self.dest = TestNode::start_with(NodeOptions {
            remote: Some(self.panel.url()),
            token_id: Some("desttokenid".into()),
            root: Some(root),
            own_root: true,
            env,
            ..Default::default()
        });
    }
}

fn opened(v: &serde_json::Value) -> (String, String) {
    (
        v["session"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

/// The first bytes of a body the extractor reads without writing to the
/// disk: the configuration, then the start of a part it skips. The spool
/// grows; the tree does not.
fn padding_body(len: usize) -> Vec<u8> {
    let config = json!({"settings": {"uuid": SERVER}}).to_string();
    let mut body = multipart_body(
        "bnd",
        &[
            ("configuration", None, config.as_bytes()),
            ("padding", None, &vec![b'p'; len]),
        ],
    );
    body.truncate(len);
    body
}

#[test]
fn the_spool_is_capped_by_the_servers_disk_space_and_the_session_ends_with_nothing_left() {
    let s = setup(1, vec![]);
    // The announced tree is over the limit: refused at open, as a classic
    // POST is before its body (nothing begun, nothing left).
    let (code, v) = s.open(2 * MIB);
    assert_eq!((code, v["error"].as_str()), (400, Some(NO_SPACE)), "{v}");
    assert_eq!(s.left(), Vec::<String>::new());

    // Announced within the limit, but the body keeps growing: the spool
    // may hold the limit, a tenth more and 66 MiB for the other parts
    // (about 67.1 MiB here), and not a segment more.
    let (code, v) = s.open(MIB / 2);
    assert_eq!(code, 201, "{v}");
    let (sid, secret) = opened(&v);
    let body = padding_body(70 * MIB);
    let mut offset = 0;
    for len in [32 * MIB, 32 * MIB] {
        let bytes = &body[offset..offset + len];
        let (code, v) = put(&s.dest, &sid, &secret, offset as u64, bytes, &sha(bytes));
        assert_eq!(code, 200, "{v}");
        offset += len;
    }
    let bytes = &body[offset..];
    let (code, v) = put(&s.dest, &sid, &secret, offset as u64, bytes, &sha(bytes));
    assert_eq!((code, v["error"].as_str()), (400, Some(NO_SPACE)), "{v}");
    assert_eq!(v["held"], 64 * MIB);

    // The session ends as a classic transfer refused for space does: its
    // outcome, one failure report, nothing left of it.
    let end = s.status_once_ended(&sid, &secret);
    assert_eq!(end["state"], "failed", "{end}");
    assert_eq!(
        (end["code"].as_u64(), end["error"].as_str()),
        (Some(400), Some(NO_SPACE)),
        "{end}"
    );
    let record = s.dest.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(s.reports(), vec![("failure".to_string(), 204)]);
    assert_eq!(s.left(), Vec::<String>::new());
    assert!(!s.dest.server_dir(SERVER).exists());
}

/// `FERRY_RESUME_WINDOW_SECS` for the destination.
fn window(secs: u64) -> Vec<(String, String)> {
    vec![("FERRY_RESUME_WINDOW_SECS".into(), secs.to_string())]
}

/// Opens a session and has the destination hold one small segment.
fn a_session_holding_a_segment(s: &Setup) -> (String, String) {
    let (code, v) = s.open(1000);
    assert_eq!(code, 201, "{v}");
    let (sid, secret) = opened(&v);
    let bytes = padding_body(4096);
    let (code, v) = put(&s.dest, &sid, &secret, 0, &bytes, &sha(&bytes));
    assert_eq!(code, 200, "{v}");
    (sid, secret)
}

#[test]
fn a_restarted_destination_keeps_what_is_left_of_the_window() {
    // A 12 s window; the node is down from about 1 s to 6 s after the
    // last activity. Kept, the window ends about 6 s after the restart;
    // a fresh one would end 12 s after it.
    let mut s = setup(0, window(12));
    let (sid, secret) = a_session_holding_a_segment(&s);
    let active = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    s.dest.kill9();
    std::thread::sleep(Duration::from_secs(5));
    s.restart(window(12));
    let restarted = Instant::now();
    assert!(
        s.dest.log_text().contains("it resumes"),
        "{}",
        s.dest.log_text()
    );
    let (code, v) = s.status(&sid, &secret);
    assert_eq!((code, v["state"].as_str()), (200, Some("receiving")), "{v}");

    let end = s.status_once_ended(&sid, &secret);
    let after_restart = restarted.elapsed();
    assert_eq!(end["state"], "cancelled", "{end}");
    assert!(
        after_restart < Duration::from_secs(10),
        "expired {after_restart:?} after the restart ({:?} after the last activity): \
         the window started again",
        active.elapsed()
    );
    // (Whole seconds on the node's clock: up to one early.)
    assert!(
        active.elapsed() >= Duration::from_secs(11),
        "expired {:?} after the last activity, before its window",
        active.elapsed()
    );
    assert_ended_as_expired(&s.dest.wait_transfer_end(SERVER, Duration::from_secs(10)));
    assert_eq!(s.reports(), vec![("failure".to_string(), 204)]);
    assert_eq!(s.left(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&s.dest.root);
}

#[test]
fn a_window_that_passed_while_the_destination_was_down_ends_the_session_at_start_up() {
    let mut s = setup(0, window(3));
    let (sid, secret) = a_session_holding_a_segment(&s);
    s.dest.kill9();
    std::thread::sleep(Duration::from_secs(5));
    s.restart(window(3));
    // Ended before the node listens: no extractor ran for it.
    assert_ended_as_expired(&s.dest.wait_transfer_end(SERVER, Duration::from_secs(1)));
    assert!(
        s.dest.log_text().contains("it ends as expired"),
        "{}",
        s.dest.log_text()
    );
    assert_eq!(s.reports(), vec![("failure".to_string(), 204)]);
    assert_eq!(s.left(), Vec::<String>::new());
    let (code, _) = s.status(&sid, &secret);
    assert_eq!(code, 404);
    // Its JWT opens nothing any more (SPEC §4 replay).
    let (code, v) = s.open(1000);
    assert_eq!(code, 401, "{v}");
    let _ = std::fs::remove_dir_all(&s.dest.root);
}
