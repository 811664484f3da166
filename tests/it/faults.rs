//! Faults during a transfer, with real nodes and a fake panel: the source
//! killed with SIGKILL, the network cut by a proxy, the destination's
//! filesystem full (a small tmpfs), a panel that refuses reports, and a
//! shutdown signal mid-transfer. After each: the source's data intact,
//! nothing half-installed on the destination, no server left locked, one
//! terminal status and one panel report per side.

use crate::support::fake_panel;
use crate::support::node;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::finish::Transport;
use fake_panel::FakePanel;
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::json;

const SERVER: &str = "7d2e3f40-5b6c-4d7e-8f90-a1b2c3d4e5f6";

/// The faults below hit either transport (`network_cut_mid_stream` the
/// classic POST only: the segmented one resumes, see `transport::`). Over
/// the segmented one, segments are 1 MiB so a fault lands between them.
fn source_yaml(transfers_yaml: &str, transport: Transport) -> String {
    match transport {
        Transport::Classic => transfers_yaml.to_string(),
        Transport::Segmented => format!("{transfers_yaml}\nsegment_size: 1"),
    }
}

fn start_source(
    panel: &FakePanel,
    transfers_yaml: &str,
    tree: impl Fn(&Path),
    transport: Transport,
) -> TestNode {
    panel.add_server(SERVER, json!({"uuid": SERVER}));
    let root = tempfile::tempdir().unwrap().keep();
    tree(&root.join("volumes").join(SERVER));
    TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        transfers_yaml: source_yaml(transfers_yaml, transport),
        env: transport.env(),
        ..Default::default()
    })
}

/// A destination; its sessions expire after a few seconds of silence
/// (`Transport::env`), so a dead source's session ends within the test.
fn start_dest(
    panel: &FakePanel,
    root: Option<std::path::PathBuf>,
    transport: Transport,
) -> TestNode {
    TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        own_root: root.is_some(),
        root,
        env: transport.env(),
        ..Default::default()
    })
}

fn begin(panel: &FakePanel, source: &TestNode, dest_token: &str, url: &str) {
    panel.set_transferring(SERVER, true);
    let jwt = panel.mint_transfer_jwt(dest_token, SERVER);
    let (code, body) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({"url": url, "token": format!("Bearer {jwt}")})),
    );
    assert_eq!(code, 202, "{body}");
}

fn assert_dest_clean(dest: &TestNode) {
    assert!(
        !dest.server_dir(SERVER).exists(),
        "server directory on the destination"
    );
    let staging = dest.data.join(".ferry-staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left: {left:?}");
    let sessions: Vec<_> = std::fs::read_dir(dest.data.join(".ferry-sessions"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(sessions.is_empty(), "session left: {sessions:?}");
    assert_eq!(dest.get(&format!("/api/servers/{SERVER}")).0, 404);
}

fn failure_reports(panel: &FakePanel) -> usize {
    panel
        .calls()
        .iter()
        .filter(|c| c.path == format!("/api/remote/servers/{SERVER}/transfer/failure"))
        .count()
}

fn wait_reports(panel: &FakePanel, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while failure_reports(panel) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(30));
    }
    // Anything more than expected would arrive about now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        failure_reports(panel),
        n,
        "{:?}",
        panel.transfer_reports(SERVER)
    );
}

#[test]
fn source_killed_mid_stream() {
    source_killed_mid_stream_over(Transport::Classic);
}

#[test]
fn source_killed_mid_stream_segmented() {
    source_killed_mid_stream_over(Transport::Segmented);
}

fn source_killed_mid_stream_over(transport: Transport) {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = start_dest(&panel, None, transport);
    let mut source = start_source(&panel, "upload_limit: 1", make_server_tree, transport);
    let before = tree_listing(&source.server_dir(SERVER));
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    dest.wait_transfer_bytes(SERVER);
    source.kill9();
    // Classic: the destination sees the body end early: failed, cleaned,
    // reported. Segmented: the session waits for the source to come back
    // until its window passes (the source stays down past it), then
    // expires: cancelled, cleaned, reported; the restarted source finds
    // the session gone and ends per SPEC §5.1 (transport_resume.rs has
    // the source that comes back in time and resumes).
    let record = dest.wait_transfer_end(SERVER, Duration::from_secs(30));
    match transport {
        Transport::Classic => assert_eq!(record["status"], "failed", "{record}"),
        Transport::Segmented => {
            assert_eq!(record["status"], "cancelled", "{record}");
            let expired = ferry::transfer::segmented::store::EXPIRED;
            assert_eq!(record["cancel_reason"], expired, "{record}");
        }
    }
    assert_dest_clean(&dest);
    wait_reports(&panel, 1);
    // The source restarts: the orphan ends failed with one report, the
    // data is as it was and the server can be transferred again.
    panel.remove_server(SERVER);
    let root = source.keep_root();
    panel.add_server(SERVER, json!({"uuid": SERVER}));
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        transfers_yaml: source_yaml("", transport),
        env: transport.env(),
        ..Default::default()
    });
    wait_reports(&panel, 2);
    assert_eq!(tree_listing(&source.server_dir(SERVER)), before);
    assert!(source.audit_lines().iter().any(|l| l["to"] == "failed"));
    let (_, view) = source.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false);
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(tree_listing(&dest.server_dir(SERVER)), before);
}

/// Forwards one connection to `target`, cutting both sides once `limit`
/// bytes went upstream.
fn cutting_proxy(
    target: std::net::SocketAddr,
    limit: u64,
) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cut);
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let upstream = TcpStream::connect(target).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let (mut c_read, mut u_write) =
            (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let (mut u_read, mut c_write) =
            (upstream.try_clone().unwrap(), client.try_clone().unwrap());
        let counter = Arc::clone(&sent);
        let up = std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = c_read.read(&mut buf) {
                if n == 0 || u_write.write_all(&buf[..n]).is_err() {
                    break;
                }
                if counter.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= limit {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = u_read.read(&mut buf) {
                if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let _ = up.join();
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        flag.store(true, Ordering::SeqCst);
    });
    (addr, cut)
}

#[test]
fn network_cut_mid_stream() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = start_dest(&panel, None, Transport::Classic);
    let source = start_source(&panel, "", make_server_tree, Transport::Classic);
    let before = tree_listing(&source.server_dir(SERVER));
    let (proxy, cut) = cutting_proxy(dest.addr, 1024 * 1024);
    begin(
        &panel,
        &source,
        &dest.token,
        &format!("http://{proxy}/api/transfers"),
    );
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut");
    assert_eq!(record["status"], "failed", "{record}");
    let record = dest.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed", "{record}");
    assert_dest_clean(&dest);
    wait_reports(&panel, 2);
    assert_eq!(tree_listing(&source.server_dir(SERVER)), before);
    let (_, view) = source.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false);
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn destination_filesystem_full() {
    destination_filesystem_full_over(Transport::Classic);
}

#[test]
fn destination_filesystem_full_segmented() {
    destination_filesystem_full_over(Transport::Segmented);
}

fn destination_filesystem_full_over(transport: Transport) {
    let panel = FakePanel::start("testtokenid", TOKEN);
    // The destination's data directory is a 2 MiB tmpfs. The tree's file
    // content is small (so the size announced up front fits), but its
    // thousands of files take far more room than that on disk.
    let root = tempfile::tempdir().unwrap().keep();
    let data = root.join("volumes");
    std::fs::create_dir_all(&data).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount(8)");
    assert!(
        status.success(),
        "this test needs to mount a tmpfs (run as root)"
    );
    let _mount = Mount(data.clone());
    let dest = start_dest(&panel, Some(root), transport);
    let source = start_source(
        &panel,
        "",
        |dir| {
            std::fs::create_dir_all(dir).unwrap();
            for i in 0..2000 {
                std::fs::write(dir.join(format!("config-{i}.yml")), format!("key: {i}\n")).unwrap();
            }
        },
        transport,
    );
    let before = tree_listing(&source.server_dir(SERVER));
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("There is not enough disk space"),
        "{record}"
    );
    let dest_record = dest.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(dest_record["status"], "failed");
    assert_dest_clean(&dest);
    wait_reports(&panel, 2);
    assert_eq!(tree_listing(&source.server_dir(SERVER)), before);
}

#[test]
fn panel_refusing_reports_never_leaves_a_server_locked() {
    panel_refusing_reports_never_leaves_a_server_locked_over(Transport::Classic);
}

#[test]
fn panel_refusing_reports_never_leaves_a_server_locked_segmented() {
    panel_refusing_reports_never_leaves_a_server_locked_over(Transport::Segmented);
}

fn panel_refusing_reports_never_leaves_a_server_locked_over(transport: Transport) {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = start_dest(&panel, None, transport);
    let source = start_source(&panel, "upload_limit: 1", make_server_tree, transport);
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    dest.wait_transfer_bytes(SERVER);
    // The panel stops knowing about the transfer: reports answer 409,
    // which is logged and not retried.
    panel.set_transferring(SERVER, false);
    let (code, _) = source.request("DELETE", &format!("/api/servers/{SERVER}/transfer"), None);
    assert_eq!(code, 202);
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(record["status"], "cancelled");
    dest.wait_transfer_end(SERVER, Duration::from_secs(10));
    wait_reports(&panel, 2);
    assert!(panel
        .transfer_reports(SERVER)
        .iter()
        .all(|(_, status)| *status == 409));
    let (_, view) = source.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false);
    assert_dest_clean(&dest);
}

#[test]
fn shutdown_signal_mid_transfer_cancels_after_the_grace_period() {
    shutdown_signal_mid_transfer_cancels_after_the_grace_period_over(Transport::Classic);
}

#[test]
fn shutdown_signal_mid_transfer_cancels_after_the_grace_period_segmented() {
    shutdown_signal_mid_transfer_cancels_after_the_grace_period_over(Transport::Segmented);
}

fn shutdown_signal_mid_transfer_cancels_after_the_grace_period_over(transport: Transport) {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = start_dest(&panel, None, transport);
    panel.add_server(SERVER, json!({"uuid": SERVER}));
    let root = tempfile::tempdir().unwrap().keep();
    let data = root.join("volumes").join(SERVER);
    make_server_tree(&data);
    // Incompressible, so the body outlasts the grace at 1 MiB/s whatever
    // the codec (zstd packs the tree alone into less than 2 MiB).
    std::fs::write(
        data.join("world/random.bin"),
        crate::support::archive_support::noise(4 << 20, 9),
    )
    .unwrap();
    let mut source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        transfers_yaml: source_yaml("upload_limit: 1", transport),
        env: [
            transport.env(),
            vec![("FERRY_SHUTDOWN_GRACE".into(), "1".into())],
        ]
        .concat(),
        ..Default::default()
    });
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    dest.wait_transfer_bytes(SERVER);
    let status = source.terminate();
    assert_eq!(status.code(), Some(0), "{}", source.log_text());
    assert!(
        source.wait_log("still running at shutdown", Duration::from_secs(5)),
        "{}",
        source.log_text()
    );
    let audit = source.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["to"] == "cancelled" && l["reason"] == "node shutting down"),
        "{audit:?}"
    );
    dest.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_dest_clean(&dest);
    wait_reports(&panel, 2);
}

#[test]
fn download_cap_paces_the_destination() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        transfers_yaml: "download_limit: 1".into(),
        ..Default::default()
    });
    let source = start_source(&panel, "", make_server_tree, Transport::Classic);
    let started = Instant::now();
    begin(&panel, &source, &dest.token, &dest.url("/api/transfers"));
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}");
    let wire = record["progress"]["wire_bytes"].as_u64().unwrap();
    // At 1 MiB/s (a quarter second of burst allowed) the archive cannot
    // arrive faster than this; without the cap it takes a fraction of it.
    let floor = Duration::from_secs_f64(wire as f64 / (1024.0 * 1024.0) - 0.5);
    assert!(
        started.elapsed() >= floor,
        "{wire} bytes in {:?}",
        started.elapsed()
    );
}

#[test]
fn restart_removes_an_install_no_registry_claims() {
    // A destination that died after moving a server into place but before
    // the panel took it: a persisted incoming transfer, the directory, and
    // no registry entry.
    let root = tempfile::tempdir().unwrap().keep();
    let dir = root.join("volumes").join(SERVER);
    make_server_tree(&dir);
    let state = root.join("root/ferry/transfers");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("a1b2c3d4-0000-4000-8000-000000000001.json"),
        json!({"id": "a1b2c3d4-0000-4000-8000-000000000001", "server": SERVER, "direction": "incoming", "peer": "127.0.0.1", "status": "processing"}).to_string(),
    )
    .unwrap();
    let panel = FakePanel::start("testtokenid", TOKEN);
    let node = start_dest(&panel, Some(root), Transport::Classic);
    assert!(!dir.exists(), "{}", node.log_text());
    assert!(node.log_text().contains("removed the unclaimed install"));
    wait_reports(&panel, 1);
}
