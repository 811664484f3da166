//! A node run as an ordinary user (SPEC allows it). CI runs as root, so
//! the node is started as `nobody` through `setpriv`; run as another user,
//! the tests use that user. An archive may carry directories with mode
//! 0000: the node must still receive it, remove it again (a refused
//! transfer's staging, `DELETE /api/servers`), take the same server again,
//! and its start-up sweep of stale staging must go on past one it cannot
//! remove.

use crate::support::node;

use crate::archive_tar_interop::{post_archive, post_archive_with_checksum};
use node::{give_to_nobody, NodeOptions, TestNode};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER: &str = "0d0e0f10-2a3b-4c5d-8e6f-7a8b9c0d1e2f";

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A node that is not root: `nobody` when the tests run as root.
fn unprivileged_node(root: Option<std::path::PathBuf>) -> TestNode {
    TestNode::start_with(NodeOptions {
        unprivileged: running_as_root(),
        root,
        ..Default::default()
    })
}

/// A GNU tar archive of a tree whose directories `locked` and
/// `locked/deeper` end with mode 0000, with files inside them.
fn locked_archive() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    fs::create_dir_all(src.join("locked/deeper")).unwrap();
    fs::write(src.join("locked/inside.txt"), b"inside").unwrap();
    fs::write(src.join("locked/deeper/more.txt"), b"more").unwrap();
    fs::write(src.join("server.properties"), b"motd=hi").unwrap();
    for d in ["locked/deeper", "locked"] {
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = Command::new("tar")
        .args(["--format=posix", "-czf", "-", "-C"])
        .arg(src)
        .arg(".")
        .output()
        .unwrap();
    // Let the tempdir go away even if we are not root.
    for d in ["locked", "locked/deeper"] {
        let _ = fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o700));
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn staging_entries(node: &TestNode) -> Vec<String> {
    fs::read_dir(node.data.join(".ferry-staging"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_gone(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if fs::symlink_metadata(path).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn an_unprivileged_node_removes_what_it_received_even_mode_0000_directories() {
    let node = unprivileged_node(None);
    let archive = locked_archive();

    // Received: the locked directory arrives with its mode.
    let (status, body) = post_archive(&node, SERVER, &archive);
    assert_eq!(status, 200, "{body}");
    let dir = node.server_dir(SERVER);
    let locked = fs::symlink_metadata(dir.join("locked")).unwrap();
    assert_eq!(locked.mode() & 0o7777, 0);
    if running_as_root() {
        assert_eq!(locked.uid(), node::NOBODY, "the node did not run as nobody");
    }

    // DELETE leaves nothing, and the same server can come again.
    let (code, _) = node.request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    assert!(wait_gone(&dir), "DELETE left {} behind", dir.display());
    let (status, body) = post_archive(&node, SERVER, &archive);
    assert_eq!(status, 200, "second transfer of the same server: {body}");
    let (code, _) = node.request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    assert!(wait_gone(&dir));

    // A transfer refused after extraction (a wrong checksum: the locked
    // directories already have mode 0000) leaves no staging behind.
    let wrong = post_archive_with_checksum(&node, SERVER, &archive, &"0".repeat(64));
    assert_eq!(wrong.0, 400, "{}", wrong.1);
    assert!(
        staging_entries(&node).is_empty(),
        "staging left: {:?}",
        staging_entries(&node)
    );
    assert!(!dir.exists());
}

#[test]
fn stale_staging_sweep_goes_on_past_one_it_cannot_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("node");
    let staging = root.join("volumes/.ferry-staging");
    // Sorted first, and not removable by the node: another user's
    // directory with a file in it (when we are root; otherwise a
    // directory we cannot write, holding a file).
    let bad = staging.join("a-bad.transfer");
    let good = staging.join("b-good.transfer");
    fs::create_dir_all(bad.join("kept")).unwrap();
    fs::write(bad.join("kept/file"), b"x").unwrap();
    fs::create_dir_all(good.join("locked/deeper")).unwrap();
    fs::write(good.join("locked/deeper/file"), b"x").unwrap();
    if running_as_root() {
        give_to_nobody(&root, false);
        give_to_nobody(&root.join("volumes"), false);
        give_to_nobody(&staging, false);
        give_to_nobody(&good, true);
    } else {
        // Everything here is ours, so nothing is unremovable: the case
        // needs a directory of another user.
        eprintln!("skipped: needs root to make a directory the node cannot remove");
        return;
    }
    for d in ["locked/deeper", "locked"] {
        fs::set_permissions(good.join(d), fs::Permissions::from_mode(0o000)).unwrap();
    }
    let node = unprivileged_node(Some(root));
    assert!(
        wait_gone(&good),
        "the sweep stopped before {}",
        good.display()
    );
    assert!(bad.join("kept/file").exists());
    assert!(
        node.wait_log("cannot remove stale staging", Duration::from_secs(5)),
        "the failure was not logged"
    );
}
