//! Transfers to a destination that serves HTTPS, as production nodes do.
//! The source trusts the system's certificate authorities the way Wings
//! (Go) does, so a private CA works when given by `SSL_CERT_FILE`; a source
//! that does not trust the destination's certificate fails the transfer
//! with the reason, reports it once and leaves nothing on the destination.

use crate::support::certs;
use crate::support::fake_panel;
use crate::support::node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_panel::FakePanel;
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::json;

const SERVER: &str = "6c1d8e3f-4a5b-4c6d-9e7f-0a1b2c3d4e5f";

fn source(panel: &FakePanel, root: &Path, env: Vec<(String, String)>) -> TestNode {
    TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root.to_path_buf()),
        env,
        ..Default::default()
    })
}

/// What the panel does to start a transfer.
fn start(panel: &FakePanel, source: &TestNode, dest: &TestNode) {
    let (code, body) = panel.begin_transfer(source, dest, SERVER);
    assert_eq!(code, 202, "{body}");
}

/// Transfer reports (success or failure) the panel has received.
fn reports(calls: &[fake_panel::Call]) -> usize {
    let prefix = format!("/api/remote/servers/{SERVER}/transfer/");
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.starts_with(&prefix))
        .count()
}

fn staging_entries(dest: &TestNode) -> Vec<PathBuf> {
    std::fs::read_dir(dest.data.join(".ferry-staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn https_destination_needs_a_trusted_certificate() {
    let certs_dir = tempfile::tempdir().unwrap();
    let Some((cert, key, ca)) = certs::make_certs(certs_dir.path()) else {
        return;
    };
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        tls: Some((cert, key)),
        ..Default::default()
    });
    assert!(dest.url("/").starts_with("https://"));
    panel.add_server(
        SERVER,
        json!({"uuid": SERVER, "build": {"disk_space": 0}, "container": {"image": "x"}}),
    );
    let root = tempfile::tempdir().unwrap();
    make_server_tree(&root.path().join("volumes").join(SERVER));
    let before = tree_listing(&root.path().join("volumes").join(SERVER));

    // The system's authorities do not include the test CA: refused.
    let mut untrusting = source(&panel, root.path(), vec![]);
    start(&panel, &untrusting, &dest);
    let record = untrusting.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed", "{record}");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid peer certificate"), "{error}");
    assert!(panel.wait_until(Duration::from_secs(10), |calls| reports(calls) == 1));
    assert_eq!(
        panel.transfer_reports(SERVER),
        vec![("failure".to_string(), 204)]
    );
    assert!(!dest.server_dir(SERVER).exists());
    assert!(staging_entries(&dest).is_empty());
    untrusting.terminate();

    // The same node restarted trusting the CA, as Go does with SSL_CERT_FILE.
    let ca = ca.to_string_lossy().into_owned();
    let trusting = source(&panel, root.path(), vec![("SSL_CERT_FILE".into(), ca)]);
    start(&panel, &trusting, &dest);
    let record = trusting.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        dest.log_text()
    );
    assert_eq!(tree_listing(&dest.server_dir(SERVER)), before);
    assert!(panel.wait_until(Duration::from_secs(10), |calls| reports(calls) == 2));
    assert_eq!(
        panel.transfer_reports(SERVER),
        vec![("failure".to_string(), 204), ("success".to_string(), 204)]
    );
}
