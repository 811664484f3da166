//! Pelican Wings, both ways, through the fake panel: `tests/go/pelican.go`
//! sends and receives the way Pelican Wings' source.go/archive.go and
//! router_transfer.go do (part names and order, `mime/multipart`, each
//! checksum compared as the exact string sent, backups under
//! `<backup_directory>/<server>/`, the log under
//! `<log_directory>/install/`). A server with two backups (and a third
//! the panel did not list) and an install log moves from a Pelican-shaped
//! source into a ferry destination, and from a ferry source into a
//! Pelican-shaped receiver that reports to the panel as Pelican does.
//!
//! The ferry nodes here are of the Pelican family (their config sits in a
//! directory named `pelican`), so they keep backups in Pelican's layout.
//! Without Go the tests skip, unless `FERRY_REQUIRE_GO=1`.

use crate::archive_go::go_reader;
use crate::support::archive_support::{assert_same_tree, make_tree, noise, run};
use crate::support::fake_panel::FakePanel;
use crate::support::node::{NodeOptions, TestNode, TOKEN};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

const BACKUP_1: &str = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
const BACKUP_2: &str = "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e";
/// On the source but not listed by the panel: never sent.
const UNLISTED: &str = "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
const LOG: &str = "Pelican install: installing Paper 1.21\ninstall done\n";

/// Whether `done` holds within 10 s. (Not `FakePanel::wait_until`: its
/// closure runs under the panel's lock, which `server_node` takes too.)
fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn settings(uuid: &str) -> serde_json::Value {
    json!({"uuid": uuid, "meta": {"name": "From Pelican"},
           "build": {"disk_space": 0}, "container": {"image": "x"}})
}

/// Pelican's layout under `root`: `backups/<server>/<backup>.tar.gz` and
/// `log/install/<server>.log`. Returns the two listed backups' bytes.
fn pelican_extras(root: &Path, server: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = root.join("backups").join(server);
    std::fs::create_dir_all(&dir).unwrap();
    let (b1, b2) = (noise(3 << 20, 41), b"a small backup".to_vec());
    std::fs::write(dir.join(format!("{BACKUP_1}.tar.gz")), &b1).unwrap();
    std::fs::write(dir.join(format!("{BACKUP_2}.tar.gz")), &b2).unwrap();
    std::fs::write(dir.join(format!("{UNLISTED}.tar.gz")), b"not listed").unwrap();
    std::fs::create_dir_all(root.join("log/install")).unwrap();
    std::fs::write(root.join(format!("log/install/{server}.log")), LOG).unwrap();
    (b1, b2)
}

/// The listed backups and the log arrived under Pelican's names, the
/// unlisted backup did not.
fn assert_extras_arrived(root: &Path, server: &str, b1: &[u8], b2: &[u8]) {
    let dir = root.join("backups").join(server);
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{BACKUP_1}.tar.gz"), format!("{BACKUP_2}.tar.gz")],
        "only the listed backups, nothing temporary"
    );
    assert_eq!(
        std::fs::read_to_string(root.join(format!("log/install/{server}.log"))).unwrap(),
        LOG
    );
}

/// A Pelican source (archive, checksum_archive, backup_<uuid>.tar.gz and
/// checksum_backup_<uuid>.tar.gz per listed backup, install_logs) into a
/// ferry destination the panel drives: verified, installed, success
/// reported and committed, the backups and log kept in Pelican's layout.
#[test]
fn a_ferry_destination_accepts_a_pelican_source_with_backups_and_a_log() {
    let Some(go) = go_reader() else { return };
    const SERVER: &str = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a";
    let tmp = tempfile::tempdir().unwrap();
    let src_root = tmp.path().join("source");
    let src = src_root.join("volumes").join(SERVER);
    make_tree(&src);
    let (b1, b2) = pelican_extras(&src_root, SERVER);

    let panel = FakePanel::start("testtokenid", TOKEN);
    panel.add_node("node-a", TOKEN);
    panel.add_node("node-b", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(tmp.path().join("pelican")),
        token_id: Some("node-b".into()),
        ..Default::default()
    });
    panel.add_server_on(SERVER, settings(SERVER), "node-a");
    panel.start_transfer(SERVER, "node-a", "node-b");
    let jwt = panel.mint_transfer_jwt(&dest.token, SERVER);
    let out = run(Command::new(go)
        .arg("pelican-send")
        .arg(dest.url("/api/transfers"))
        .arg(format!("Bearer {jwt}"))
        .arg(&src)
        .arg(src_root.join("backups"))
        .arg(src_root.join("log"))
        .arg(SERVER)
        .arg(BACKUP_1)
        .arg(BACKUP_2));
    assert!(out.starts_with("200 "), "{out}\n{}", dest.log_text());
    assert_same_tree(&src, &dest.server_dir(SERVER));
    assert_extras_arrived(&dest.root, SERVER, &b1, &b2);
    assert!(
        eventually(|| panel.server_node(SERVER) == Some("node-b".into())),
        "the panel committed the move: {:?}",
        panel.notes()
    );
    let (code, view) = dest.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["is_transferring"], false, "{view}");
    assert!(
        !dest
            .root
            .join(format!("root/ferry/received/{SERVER}.json"))
            .exists(),
        "the commit forgot the ledger"
    );
}

/// A ferry source (Pelican family, the panel listing two of three
/// backups) into a receiver written like Pelican's: it reads
/// checksum_archive (not checksum), skips ferry's configuration part,
/// checks each backup against checksum_backup_<name> as the exact string
/// sent, stores the log, and reports success to the panel, which commits
/// and has the source remove its copy. The source keeps its backups.
#[test]
fn a_pelican_receiver_accepts_a_ferry_source_with_backups_and_a_log() {
    let Some(go) = go_reader() else { return };
    const SERVER: &str = "2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b";
    let tmp = tempfile::tempdir().unwrap();
    let src_root = tmp.path().join("pelican");
    let src = src_root.join("volumes").join(SERVER);
    make_tree(&src);
    let (b1, b2) = pelican_extras(&src_root, SERVER);
    // The source's copy goes when the panel commits; compare with this.
    let reference = tmp.path().join("reference");
    run(Command::new("cp").arg("-a").arg(&src).arg(&reference));

    let panel = FakePanel::start("testtokenid", TOKEN);
    panel.add_node("node-a", TOKEN);
    panel.add_node("node-b", TOKEN);
    // Listed before the source starts: it adopts what the panel lists.
    panel.add_server_on(SERVER, settings(SERVER), "node-a");
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(src_root.clone()),
        token_id: Some("node-a".into()),
        ..Default::default()
    });
    panel.set_node_url("node-a", &source.url(""));

    let go_root = tmp.path().join("go");
    let go_data = go_root.join("volumes");
    std::fs::create_dir_all(&go_data).unwrap();
    let mut receiver = Command::new(go)
        .arg("pelican-serve")
        .arg(&go_data)
        .arg(go_root.join("backups"))
        .arg(go_root.join("log"))
        .arg(TOKEN)
        .arg(panel.url())
        .arg(format!("Bearer node-b.{TOKEN}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let port = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("port ").map(str::to_string))
        .expect("the receiver says its port");

    panel.start_transfer(SERVER, "node-a", "node-b");
    let jwt = panel.mint_transfer_jwt(TOKEN, SERVER);
    let (code, body) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({
            "url": format!("http://127.0.0.1:{port}/api/transfers"),
            "token": format!("Bearer {jwt}"),
            "server": {"uuid": SERVER, "start_on_completion": false},
            "backups": [BACKUP_1, BACKUP_2],
        })),
    );
    assert_eq!(code, 202, "{body}");
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    let said = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = receiver.wait();
    assert_eq!(
        record["status"],
        "completed",
        "{record}\nreceiver: {said}\n{}",
        source.log_text()
    );
    let words: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"received"), "{said}");
    assert_eq!(words.get(2).map(|d| d.len()), Some(64), "{said}");
    assert_eq!(words.get(3), Some(&"2"), "two backups verified: {said}");
    assert_eq!(
        words.get(4),
        Some(&LOG.len().to_string().as_str()),
        "{said}"
    );
    // Pelican extracts into the server's directory: the data of the tree.
    assert_same_tree(&reference, &go_data);
    assert_extras_arrived(&go_root, SERVER, &b1, &b2);
    assert_eq!(panel.server_node(SERVER), Some("node-b".into()));
    assert!(
        eventually(|| !source.server_dir(SERVER).exists()),
        "the panel's DELETE removed the source's copy: {:?}",
        panel.notes()
    );
    // The node never deletes a backup; the panel does, after success.
    let kept = src_root.join("backups").join(SERVER);
    assert_eq!(
        std::fs::read(kept.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(kept.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
}
