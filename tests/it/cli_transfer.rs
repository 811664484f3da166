//! `ferry transfer` between two real standalone nodes on loopback: the
//! CLI plays the panel (mints the destination JWT from the destination's
//! token), the source sends the `configuration` part and the destination
//! registers the server from it. Ctrl-C cancels cleanly; failures exit 1.

use crate::support::certs;
use crate::support::node;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node::{make_server_tree, tree_listing, wait_exit, NodeOptions, TestNode};
use serde_json::json;

const SERVER: &str = "5d2f8a3c-1b4e-4c6d-8e9f-0a1b2c3d4e5f";
const DEST_TOKEN: &str = "destination-node-token-fedcba9876543210";

/// Two standalone nodes with distinct tokens; the source holds `SERVER`
/// with a full configuration in its registry (not just an adopted one),
/// so the destination's copy shows whether the configuration travelled.
struct Pair {
    src: TestNode,
    dst: TestNode,
    src_token_file: PathBuf,
    dst_token_file: PathBuf,
    // Last: the nodes are killed before their directories go.
    _tmp: tempfile::TempDir,
}

fn pair(src_transfers_yaml: &str, fill: impl FnOnce(&Path)) -> Pair {
    pair_with(src_transfers_yaml, fill, None)
}

/// `src_tls`: the source serves HTTPS with this certificate and key.
fn pair_with(
    src_transfers_yaml: &str,
    fill: impl FnOnce(&Path),
    src_tls: Option<(PathBuf, PathBuf)>,
) -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let src_root = tmp.path().join("src");
    let data = src_root.join("volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    fill(&data);
    let registry = src_root.join("root/ferry/servers");
    std::fs::create_dir_all(&registry).unwrap();
    let config = json!({
        "uuid": SERVER,
        "settings": {"uuid": SERVER, "meta": {"name": "Survival", "description": "cli test"},
                     "build": {"memory_limit": 2048, "disk_space": 0}, "container": {"image": "ghcr.io/x/java:21"}},
        "process_configuration": {"stop": {"type": "command", "value": "stop"}},
    });
    std::fs::write(registry.join(format!("{SERVER}.json")), config.to_string()).unwrap();
    let src = TestNode::start_with(NodeOptions {
        root: Some(src_root),
        transfers_yaml: src_transfers_yaml.to_string(),
        tls: src_tls,
        ..Default::default()
    });
    let dst = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("dst")),
        token: Some(DEST_TOKEN.to_string()),
        ..Default::default()
    });
    let src_token_file = tmp.path().join("src.token");
    let dst_token_file = tmp.path().join("dst.token");
    std::fs::write(&src_token_file, format!("{}\n", src.token)).unwrap();
    std::fs::write(&dst_token_file, DEST_TOKEN).unwrap();
    Pair {
        src,
        dst,
        src_token_file,
        dst_token_file,
        _tmp: tmp,
    }
}

impl Pair {
    fn cli(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args([
            "transfer",
            SERVER,
            "--node",
            &self.src.url(""),
            "--to",
            &self.dst.url(""),
        ])
        .arg("--token-file")
        .arg(&self.src_token_file)
        .arg("--dest-token-file")
        .arg(&self.dst_token_file)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }
}

/// Collects a child's stdout and stderr on threads (so pipes never fill).
fn drain(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    )
}

#[test]
fn standalone_transfer_exits_zero_and_the_tree_and_configuration_arrive() {
    // The segmented transport is opt-in; its phases are checked below.
    let p = pair("transport: auto", make_server_tree);
    let before = tree_listing(&p.src.server_dir(SERVER));
    let out = p.cli(&[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        p.src.log_text()
    );
    // Not a terminal: plain lines, the source's log lines from the
    // websocket, and the summary.
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(
        stdout.contains("source: Preparing to stream server data to destination..."),
        "{stdout}"
    );
    assert!(stdout.contains("completed: "), "{stdout}");
    // Between ferry nodes: the segmented transport's phases (SPEC §10).
    assert!(
        stdout.contains("Sending in segments of")
            && stdout.contains("waiting for the destination to finish"),
        "{stdout}"
    );

    assert_eq!(tree_listing(&p.dst.server_dir(SERVER)), before);
    // The source keeps its copy (the panel, not the CLI, deletes it).
    assert_eq!(tree_listing(&p.src.server_dir(SERVER)), before);
    let (code, view) = p.dst.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200, "{view}");
    assert_eq!(
        view["configuration"]["settings"]["meta"]["name"],
        "Survival"
    );
    assert_eq!(
        view["configuration"]["process_configuration"]["stop"]["value"],
        "stop"
    );
    assert_eq!(view["transfer"]["status"], "completed");

    // `ferry status` on the destination shows the incoming side.
    let status = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["status", SERVER, "--node", &p.dst.url("")])
        .arg("--token-file")
        .arg(&p.dst_token_file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{table}");
    assert!(
        table.contains("incoming") && table.contains("completed") && table.contains("100%"),
        "{table}"
    );
    // And the session it came through, ended.
    assert!(
        table.contains("session ") && table.contains("(ended), holds"),
        "{table}"
    );
}

#[test]
fn sigint_cancels_the_transfer_and_leaves_nothing_on_the_destination() {
    // 1 MiB/s upload cap and incompressible data: the transfer would take
    // about 24 s, so it is surely still streaming when Ctrl-C comes (in
    // 1 MiB segments: the destination holds bytes before the body ends).
    let p = pair("upload_limit: 1\nsegment_size: 1\ntransport: auto", |dir| {
        make_server_tree(dir);
        let mut bytes = vec![0u8; 24 * 1024 * 1024];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in bytes.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join("world/region/r.1.1.mca"), bytes).unwrap();
    });
    let before = tree_listing(&p.src.server_dir(SERVER));
    let mut child = p.cli(&[]).spawn().unwrap();
    let (out, err) = drain(&mut child);

    // Wait until the destination is receiving (its staging directory
    // exists), so the cancel has something to clean up there.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, rec) = p.dst.get(&format!("/api/servers/{SERVER}/transfer"));
        if code == 200 && rec["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the destination never received data: {rec}\n{}",
            p.src.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(
        status.code(),
        Some(130),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("cancelled"), "{stderr}");

    let src_record = p.src.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(src_record["status"], "cancelled", "{src_record}");
    assert_eq!(src_record["cancel_reason"], "cancelled from the CLI");
    let dst_record = p.dst.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_ne!(dst_record["status"], "completed", "{dst_record}");

    // Nothing left on the destination: no server directory, no staging,
    // no registration.
    assert!(!p.dst.server_dir(SERVER).exists());
    let staging = p.dst.data.join(".ferry-staging");
    let leftovers: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    assert_eq!(p.dst.get(&format!("/api/servers/{SERVER}")).0, 404);
    // The source is untouched and free again.
    assert_eq!(tree_listing(&p.src.server_dir(SERVER)), before);
    let (_, view) = p.src.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false, "{view}");
}

#[test]
fn a_failed_transfer_exits_one_with_the_records_error() {
    let p = pair("", make_server_tree);
    // The JWT is minted with the source's token, which the destination
    // does not accept: the destination answers 401 and the record fails.
    // (--no-check: the destination check would refuse first, exit 3; see
    // ops_cli.rs.)
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "transfer",
            SERVER,
            "--no-check",
            "--node",
            &p.src.url(""),
            "--to",
            &p.dst.url(""),
        ])
        .arg("--token-file")
        .arg(&p.src_token_file)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: the destination answered 401: Invalid or expired transfer token."),
        "{stderr}"
    );
    assert!(!p.dst.server_dir(SERVER).exists());

    // An unknown server is refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "transfer",
            "00000000-0000-4000-8000-000000000000",
            "--node",
            &p.src.url(""),
        ])
        .args(["--to", &p.dst.url("")])
        .arg("--token-file")
        .arg(&p.src_token_file)
        .arg("--dest-token-file")
        .arg(&p.dst_token_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not on the node at"), "{stderr}");
}

#[test]
fn cancel_stops_an_incoming_transfer_and_says_when_nothing_is_active() {
    let p = pair("upload_limit: 1", |dir| {
        make_server_tree(dir);
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..16 * 1024 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(dir.join("world/region/r.5.5.mca"), noise).unwrap();
    });
    let mut child = p.cli(&[]).spawn().unwrap();
    let (out, _err) = drain(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.dst.get(&format!("/api/servers/{SERVER}/transfer")).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the destination never started receiving"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancel = |node: &TestNode, token: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["cancel", SERVER, "--node", &node.url("")])
            .arg("--token-file")
            .arg(token)
            .args(extra)
            .output()
            .unwrap()
    };
    let done = cancel(
        &p.dst,
        &p.dst_token_file,
        &["--incoming", "--reason", "node maintenance"],
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("cancelling incoming transfer"), "{stdout}");
    assert!(stdout.contains("is cancelled"), "{stdout}");
    let rec = p.dst.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(rec["cancel_reason"], "node maintenance", "{rec}");
    assert!(!p.dst.server_dir(SERVER).exists());

    // The source's transfer fails with the destination's answer; the CLI
    // following it exits 1 (it did not cancel it itself).
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stdout = out.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(
        p.src.wait_transfer_end(SERVER, Duration::from_secs(10))["status"],
        "failed"
    );

    // Nothing active any more: exit 1 with the node's message and a hint.
    let none = cancel(&p.src, &p.src_token_file, &[]);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Server is not currently being transferred.")
            && stderr.contains("--incoming"),
        "{stderr}"
    );
}

/// An `https://` node: the CLI trusts the system's authorities (here the
/// test CA, named by SSL_CERT_FILE) for its requests and follows the
/// source's log lines over `wss://`; without the CA it refuses the node.
#[test]
fn an_https_node_is_followed_over_wss() {
    let certs_dir = tempfile::tempdir().unwrap();
    let Some((cert, key, ca)) = certs::make_certs(certs_dir.path()) else {
        return;
    };
    let p = pair_with("", make_server_tree, Some((cert, key)));
    assert!(p.src.url("").starts_with("https://"));

    let refused = p.cli(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0));
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(!p.dst.server_dir(SERVER).exists());

    let before = tree_listing(&p.src.server_dir(SERVER));
    let out = p.cli(&[]).env("SSL_CERT_FILE", &ca).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("no live log lines"), "{stdout}");
    // This line only comes over the websocket.
    assert!(
        stdout.contains("source: Preparing to stream server data to destination..."),
        "{stdout}"
    );
    assert_eq!(tree_listing(&p.dst.server_dir(SERVER)), before);
}
