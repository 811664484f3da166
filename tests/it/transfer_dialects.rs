//! Every sender's dialect (SPEC §4 "Dialects"): a Pelican Wings body
//! (`checksum_archive`, two backups, `install_logs`), a calagopus body
//! (`backup-`/`install-logs` parts, the checksum as a file part, a zstd
//! archive), ferry to ferry with backups through the fake panel, and the
//! new error rows, each leaving nothing on the destination.

use crate::support::fake_panel;
use crate::support::node;
use crate::support::node::files_under;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fake_panel::FakePanel;
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::json;
use sha2::{Digest, Sha256};

const SERVER: &str = "3e9a1c5b-7d2f-4b8e-9c0a-1f2e3d4c5b6a";
const BACKUP_1: &str = "0b6f3a52-5c1e-4f8e-9a0d-2f4c6b8e1a3d";
const BACKUP_2: &str = "1c7e4b63-6d2f-4a9f-8b1e-3a5d7c9f2b4e";
const BOUNDARY: &str = "ferrydialectboundary42";

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tar of a small server tree, through `compress` (`gzip` or `zstd`).
fn archive_of_tree(compress: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    make_server_tree(dir.path());
    let tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(dir.path())
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut child = Command::new(compress)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{compress} is needed for this test: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = tar.stdout;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A multipart body from (name, filename, bytes) parts.
fn body(parts: &[(String, Option<&str>, Vec<u8>)]) -> Vec<u8> {
    let parts: Vec<(&str, Option<&str>, &[u8])> = parts
        .iter()
        .map(|(name, filename, bytes)| (name.as_str(), *filename, bytes.as_slice()))
        .collect();
    crate::support::multipart_body(BOUNDARY, &parts)
}

fn post(
    node: &TestNode,
    parts: &[(String, Option<&str>, Vec<u8>)],
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let jwt = fake_panel::mint_transfer_jwt(TOKEN, SERVER);
    let mut req = ureq::http::Request::builder()
        .method("POST")
        .uri(node.url("/api/transfers"))
        .header("Authorization", format!("Bearer {jwt}"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut resp = TestNode::agent()
        .run(req.body(body(parts)).unwrap())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

/// A multipart part as the tests write it: name, filename, bytes.
type Part = (String, Option<&'static str>, Vec<u8>);
/// One error row: the body, extra headers, the status and message.
type Row = (Vec<Part>, Vec<(&'static str, &'static str)>, u16, String);

fn part(
    name: &str,
    filename: Option<&'static str>,
    bytes: impl Into<Vec<u8>>,
) -> (String, Option<&'static str>, Vec<u8>) {
    (name.to_string(), filename, bytes.into())
}

/// The test node's own backup and log directories (support/node.rs).
fn backups_dir(node: &TestNode) -> std::path::PathBuf {
    node.data.parent().unwrap().join("backups")
}

fn install_log(node: &TestNode) -> std::path::PathBuf {
    node.data
        .parent()
        .unwrap()
        .join("log/install")
        .join(format!("{SERVER}.log"))
}

fn assert_nothing_left(node: &TestNode) {
    assert!(!node.server_dir(SERVER).exists(), "server directory left");
    let staging = node.data.join(".ferry-staging");
    assert!(
        files_under(&staging).is_empty()
            && std::fs::read_dir(&staging).map_or(true, |mut d| d.next().is_none()),
        "staging left behind"
    );
    assert_eq!(files_under(&backups_dir(node)), Vec::<String>::new());
    assert!(!install_log(node).exists(), "install log left behind");
    assert_eq!(node.get(&format!("/api/servers/{SERVER}")).0, 404);
}

fn expected_tree() -> Vec<String> {
    let expected = tempfile::tempdir().unwrap();
    make_server_tree(expected.path());
    tree_listing(expected.path())
}

#[test]
fn a_pelican_body_with_two_backups_and_an_install_log_is_kept() {
    let node = TestNode::start();
    let archive = archive_of_tree("gzip");
    let (b1, b2) = (b"first backup".to_vec(), vec![7u8; 300_000]);
    let r = post(
        &node,
        &[
            part("archive", Some("archive.tar.gz"), archive.clone()),
            part("checksum_archive", None, sha(&archive)),
            part(
                &format!("backup_{BACKUP_1}.tar.gz"),
                Some("b1.tar.gz"),
                b1.clone(),
            ),
            part(
                &format!("checksum_backup_{BACKUP_1}.tar.gz"),
                None,
                sha(&b1),
            ),
            part(
                &format!("backup_{BACKUP_2}.tar.gz"),
                Some("b2.tar.gz"),
                b2.clone(),
            ),
            part(
                &format!("checksum_backup_{BACKUP_2}.tar.gz"),
                None,
                sha(&b2),
            ),
            part("install_logs", Some("install.log"), "installing...\ndone\n"),
        ],
        &[],
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(tree_listing(&node.server_dir(SERVER)), expected_tree());
    // A Pterodactyl-family node keeps backups flat, as Wings' local backups.
    let dir = backups_dir(&node);
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
    assert_eq!(files_under(&dir).len(), 2, "no temporary files left");
    assert_eq!(
        std::fs::read_to_string(install_log(&node)).unwrap(),
        "installing...\ndone\n"
    );
}

#[test]
fn a_calagopus_body_with_a_zstd_archive_is_kept() {
    let node = TestNode::start();
    let archive = archive_of_tree("zstd");
    let b1 = b"calagopus backup".to_vec();
    let r = post(
        &node,
        &[
            part("archive", Some("archive.tar.zst"), archive.clone()),
            // calagopus sends the checksum as a file part.
            part("checksum", Some("checksum"), sha(&archive)),
            part(&format!("backup-{BACKUP_1}"), Some("backup"), b1.clone()),
            part(
                &format!("backup-checksum-{BACKUP_1}"),
                Some("checksum"),
                sha(&b1),
            ),
            part("install-logs", Some("install.log"), "calagopus install\n"),
            part("diff-db", Some("diff.db"), vec![0u8; 4096]),
        ],
        &[],
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(tree_listing(&node.server_dir(SERVER)), expected_tree());
    assert_eq!(
        std::fs::read(backups_dir(&node).join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read_to_string(install_log(&node)).unwrap(),
        "calagopus install\n"
    );
}

#[test]
fn the_new_error_rows_each_leave_nothing() {
    let node = TestNode::start();
    let archive = archive_of_tree("gzip");
    let sum = sha(&archive);
    let b1 = b"backup bytes".to_vec();
    let good = || {
        vec![
            part("archive", Some("archive.tar.gz"), archive.clone()),
            part("checksum", None, sum.clone()),
        ]
    };
    let with = |extra: Vec<(String, Option<&'static str>, Vec<u8>)>| {
        let mut parts = good();
        parts.extend(extra);
        parts
    };
    let rows: Vec<Row> = vec![
        (
            with(vec![part("checksum_archive", None, "0".repeat(64))]),
            vec![],
            400,
            "checksum and checksum_archive differ".to_string(),
        ),
        (
            with(vec![
                part(&format!("backup_{BACKUP_1}.tar.gz"), Some("b"), b1.clone()),
                part(&format!("checksum_backup_{BACKUP_1}.tar.gz"), None, sha(b"corrupt")),
                part("install_logs", Some("install.log"), "log"),
            ]),
            vec![],
            400,
            format!("backup {BACKUP_1} checksum mismatch"),
        ),
        (
            with(vec![part(&format!("backup-{BACKUP_1}"), None, b1.clone())]),
            vec![],
            400,
            format!("checksum missing for backup {BACKUP_1}"),
        ),
        (
            with(vec![part(&format!("backup-checksum-{BACKUP_2}"), None, sha(&b1))]),
            vec![],
            400,
            format!("backup {BACKUP_2} missing: only its checksum was sent"),
        ),
        (
            with(vec![part("backup_../../etc/passwd.tar.gz", None, b1.clone())]),
            vec![],
            400,
            "invalid backup part name: backup_../../etc/passwd.tar.gz".to_string(),
        ),
        (
            good(),
            vec![("Multiplex-Stream-Count", "2")],
            400,
            "multiplexed transfers are not supported by this node: set multiplex_streams to 0 on the source"
                .to_string(),
        ),
        (
            good(),
            vec![("Multiplex-Stream", "0")],
            400,
            "multiplexed transfers are not supported by this node: set multiplex_streams to 0 on the source"
                .to_string(),
        ),
    ];
    for (parts, headers, status, message) in rows {
        let r = post(&node, &parts, &headers);
        assert_eq!(
            (r.0, r.1["error"].as_str()),
            (status, Some(message.as_str())),
            "{}",
            r.1
        );
        assert_nothing_left(&node);
    }
}

/// ferry to ferry through the fake panel: a Pelican-style request lists
/// two backups; they, the install log and the data arrive, and the source
/// keeps its backups (the panel deletes them, not the node).
#[test]
fn ferry_to_ferry_carries_two_backups_and_the_install_log() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    panel.add_server(
        SERVER,
        json!({"uuid": SERVER, "build": {"disk_space": 0}, "container": {"image": "x"}}),
    );
    let root = tempfile::tempdir().unwrap().keep();
    make_server_tree(&root.join("volumes").join(SERVER));
    let (b1, b2) = (vec![1u8; 1 << 20], b"second".to_vec());
    std::fs::create_dir_all(root.join("backups")).unwrap();
    std::fs::write(root.join(format!("backups/{BACKUP_1}.tar.gz")), &b1).unwrap();
    std::fs::write(root.join(format!("backups/{BACKUP_2}.tar.gz")), &b2).unwrap();
    std::fs::create_dir_all(root.join("log/install")).unwrap();
    std::fs::write(
        root.join(format!("log/install/{SERVER}.log")),
        "installed\n",
    )
    .unwrap();
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root.clone()),
        own_root: true,
        ..Default::default()
    });
    panel.set_transferring(SERVER, true);
    let jwt = panel.mint_transfer_jwt(&dest.token, SERVER);
    let (code, record) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({
            "url": dest.url("/api/transfers"),
            "token": format!("Bearer {jwt}"),
            "server": {"uuid": SERVER, "start_on_completion": false},
            "backups": [BACKUP_1, BACKUP_2],
        })),
    );
    assert_eq!(code, 202, "{record}");
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        dest.log_text()
    );
    assert_eq!(tree_listing(&dest.server_dir(SERVER)), expected_tree());
    let dir = backups_dir(&dest);
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
    assert_eq!(
        std::fs::read_to_string(install_log(&dest)).unwrap(),
        "installed\n"
    );
    // The source never deletes a backup.
    assert!(root.join(format!("backups/{BACKUP_1}.tar.gz")).exists());
    assert!(root.join(format!("backups/{BACKUP_2}.tar.gz")).exists());
}
