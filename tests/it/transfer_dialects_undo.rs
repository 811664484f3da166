//! Backups and the install log travel with the server, and go back with
//! it: whenever the destination removes the install (a cancel, the
//! panel's 409, start-up recovery removing an unclaimed install, an
//! unknown outcome the panel later settles as not ours), what the transfer
//! received is removed too, and the source keeps its own copies. Two real
//! nodes and the fake panel (`finish::World`), a server with two backups
//! and an install log.

use crate::finish::{Setup, World};
use crate::support::node::{files_under, TestNode};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

const BACKUP_1: &str = "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
const BACKUP_2: &str = "6e2f3a4b-5c6d-4e7f-9081-92a3b4c5d6e7";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn backups_dir(node: &TestNode) -> PathBuf {
    node.root.join("backups")
}

fn install_log(node: &TestNode, uuid: &str) -> PathBuf {
    node.root.join("log/install").join(format!("{uuid}.log"))
}

fn ledger(node: &TestNode, uuid: &str) -> PathBuf {
    node.root
        .join("root/ferry/received")
        .join(format!("{uuid}.json"))
}

/// The source's two backups (one of 4 MiB, so a throttled send spends
/// seconds in it) and its install log.
fn give_source_backups(w: &World) -> (Vec<u8>, Vec<u8>) {
    let b1: Vec<u8> = (0..4u32 << 20).map(|i| (i * 31 % 253) as u8).collect();
    let b2 = b"second backup".to_vec();
    let dir = backups_dir(&w.source);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{BACKUP_1}.tar.gz")), &b1).unwrap();
    std::fs::write(dir.join(format!("{BACKUP_2}.tar.gz")), &b2).unwrap();
    let log = install_log(&w.source, &w.uuid);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "installed on the source\n").unwrap();
    (b1, b2)
}

/// What `World::begin` does, with the backups listed as Pelican's panel
/// lists them.
fn begin_with_backups(w: &World) {
    w.panel.start_transfer(&w.uuid, "node-a", "node-b");
    let jwt = w.panel.mint_transfer_jwt(&w.dest.token, &w.uuid);
    let (code, body) = w.source.request(
        "POST",
        &format!("/api/servers/{}/transfer", w.uuid),
        Some(json!({
            "url": w.dest.url("/api/transfers"),
            "token": format!("Bearer {jwt}"),
            "backups": [BACKUP_1, BACKUP_2],
        })),
    );
    assert_eq!(code, 202, "{body}");
}

/// Nothing the transfer brought is left on the destination, and the
/// source still has its backups and log, byte for byte.
fn assert_taken_back(w: &World, b1: &[u8], b2: &[u8]) {
    let ctx = || w.context();
    assert_eq!(
        files_under(&backups_dir(&w.dest)),
        Vec::<String>::new(),
        "backups left on the destination{}",
        ctx()
    );
    assert!(
        !install_log(&w.dest, &w.uuid).exists(),
        "install log left{}",
        ctx()
    );
    assert!(!ledger(&w.dest, &w.uuid).exists(), "ledger left{}", ctx());
    let dir = backups_dir(&w.source);
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
    assert!(install_log(&w.source, &w.uuid).exists());
}

fn wait_for(what: &str, w: &World, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "no {what}{}", w.context());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The commit keeps them: both backups and the log stay on the
/// destination and the ledger that could take them back is gone.
#[test]
fn a_committed_transfer_keeps_its_backups_and_forgets_the_ledger() {
    let w = World::new(Setup {
        small: true,
        ..Default::default()
    });
    let (b1, b2) = give_source_backups(&w);
    begin_with_backups(&w);
    assert_eq!(w.assert_settled(), "node-b");
    let dir = backups_dir(&w.dest);
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_1}.tar.gz"))).unwrap(),
        b1
    );
    assert_eq!(
        std::fs::read(dir.join(format!("{BACKUP_2}.tar.gz"))).unwrap(),
        b2
    );
    assert_eq!(
        std::fs::read_to_string(install_log(&w.dest, &w.uuid)).unwrap(),
        "installed on the source\n"
    );
    assert!(!ledger(&w.dest, &w.uuid).exists(), "{}", w.context());
}

/// The panel answers the success report 409 (the source's cancel was
/// committed first): the install is removed, and the backups and log with
/// it.
#[test]
fn a_409_from_the_panel_removes_the_received_backups() {
    let w = World::new(Setup {
        small: true,
        ..Default::default()
    });
    let (b1, b2) = give_source_backups(&w);
    w.panel.set_success_delay(Duration::from_secs(2));
    begin_with_backups(&w);
    assert!(w
        .panel
        .wait_arrival(&w.success_path(), Duration::from_secs(30)));
    // Committed on the destination, waiting for the panel's answer.
    assert!(install_log(&w.dest, &w.uuid).exists(), "{}", w.context());
    assert!(ledger(&w.dest, &w.uuid).exists(), "{}", w.context());
    let (code, body) = w.cancel_source("changed my mind");
    assert_eq!(code, 202, "{body}");
    assert_eq!(w.assert_settled(), "node-a");
    assert_eq!(World::record(&w.dest, &w.uuid)["status"], "failed");
    assert_taken_back(&w, &b1, &b2);
}

/// A destination cancel while the first backup streams: the partial
/// backup, and everything else received, is gone.
#[test]
fn a_destination_cancel_midway_through_a_backup_leaves_nothing() {
    let w = World::new(Setup {
        small: true,
        source_yaml: "upload_limit: 1".into(),
        ..Default::default()
    });
    let (b1, b2) = give_source_backups(&w);
    begin_with_backups(&w);
    let dir = backups_dir(&w.dest);
    wait_for("partial backup on the destination", &w, || {
        files_under(&dir).iter().any(|f| f.contains(BACKUP_1))
    });
    assert!(ledger(&w.dest, &w.uuid).exists(), "{}", w.context());
    let (code, body) = w.cancel_dest("disk maintenance");
    assert_eq!(code, 202, "{body}");
    assert_eq!(w.assert_settled(), "node-a");
    assert_taken_back(&w, &b1, &b2);
}

/// Killed after the backups were moved into place, before the container
/// and any report: start-up recovery removes the unclaimed install, and
/// the backups with it (only the ledger on disk says which they were).
#[test]
fn recovery_removes_the_backups_of_an_unclaimed_install() {
    let mut w = World::new(Setup {
        small: true,
        dest_env: env(&[("FERRY_FAILPOINT", "creating-container:pause")]),
        ..Default::default()
    });
    let (b1, b2) = give_source_backups(&w);
    begin_with_backups(&w);
    assert!(
        w.dest.wait_log(
            "failpoint: paused at creating-container",
            Duration::from_secs(30)
        ),
        "{}",
        w.context()
    );
    let kept = files_under(&backups_dir(&w.dest));
    assert_eq!(
        kept,
        vec![format!("{BACKUP_1}.tar.gz"), format!("{BACKUP_2}.tar.gz")],
        "in place before the kill"
    );
    w.restart_dest(Vec::new());
    assert_eq!(w.assert_settled(), "node-a");
    assert_taken_back(&w, &b1, &b2);
}

/// Killed with `reporting` persisted and the report not sent; meanwhile
/// the source is cancelled and the panel keeps the server there. On
/// restart the destination re-sends its success, gets 409, finds the
/// server absent from its list, and removes the install and the backups.
#[test]
fn an_unknown_outcome_settled_as_not_ours_removes_the_backups() {
    let mut w = World::new(Setup {
        small: true,
        dest_env: env(&[("FERRY_FAILPOINT", "reporting:pause")]),
        ..Default::default()
    });
    let (b1, b2) = give_source_backups(&w);
    begin_with_backups(&w);
    assert!(
        w.dest
            .wait_log("failpoint: paused at reporting", Duration::from_secs(30)),
        "{}",
        w.context()
    );
    let (code, body) = w.cancel_source("operator gave up");
    assert_eq!(code, 202, "{body}");
    assert!(w
        .panel
        .wait_arrival(&w.failure_path(), Duration::from_secs(30)));
    w.restart_dest(Vec::new());
    assert_eq!(w.assert_settled(), "node-a");
    assert_eq!(World::record(&w.dest, &w.uuid)["status"], "failed");
    assert_taken_back(&w, &b1, &b2);
}
