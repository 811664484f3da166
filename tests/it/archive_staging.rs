//! Staging layout, commit without overwrite, abort/drop cleanup, stale
//! staging recovery, and tree removal that never follows a link.

use crate::support::archive_support;

use archive_support::*;
use ferry::archive::{self, Staging, STAGING_DIR};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

#[test]
fn layout_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let s = Staging::create(data, UUID, "tid-1").unwrap();
    assert_eq!(
        s.path(),
        data.join(STAGING_DIR).join(format!("{UUID}.tid-1"))
    );
    assert_eq!(
        fs::metadata(data.join(STAGING_DIR)).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(fs::metadata(s.path()).unwrap().mode() & 0o7777, 0o700);
    // A second transfer for the same server gets its own directory; the
    // same transfer id twice is refused.
    let other = Staging::create(data, UUID, "tid-2").unwrap();
    assert!(other.path().is_dir());
    let again = Staging::create(data, UUID, "tid-1");
    assert_eq!(
        again.err().map(|e| e.kind()),
        Some(io::ErrorKind::AlreadyExists)
    );
    drop(other);
    drop(s);
    assert_clean(data);
}

#[test]
fn commit_renames_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let s = Staging::create(data, UUID, "t").unwrap();
    fs::write(s.path().join("server.jar"), b"jar").unwrap();
    let dest = s.commit().unwrap();
    assert_eq!(dest, data.join(UUID));
    assert_eq!(fs::read(dest.join("server.jar")).unwrap(), b"jar");
    assert_eq!(fs::read_dir(data.join(STAGING_DIR)).unwrap().count(), 0);

    // The server now exists: a second commit must fail and leave it alone.
    let s = Staging::create(data, UUID, "t2").unwrap();
    fs::write(s.path().join("server.jar"), b"intruder").unwrap();
    let err = s.commit().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(dest.join("server.jar")).unwrap(), b"jar");
    assert_eq!(fs::read_dir(data.join(STAGING_DIR)).unwrap().count(), 0);

    // Even an empty directory (which plain rename would replace) is kept.
    let empty_uuid = "11111111-2222-3333-4444-555555555555";
    fs::create_dir(data.join(empty_uuid)).unwrap();
    let s = Staging::create(data, empty_uuid, "t3").unwrap();
    fs::write(s.path().join("f"), b"x").unwrap();
    assert_eq!(s.commit().unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read_dir(data.join(empty_uuid)).unwrap().count(), 0);
}

#[test]
fn abort_and_drop_remove_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let s = Staging::create(&data, UUID, "a").unwrap();
    make_tree(s.path());
    s.abort().unwrap();
    assert_clean(&data);
    let s = Staging::create(&data, UUID, "b").unwrap();
    make_tree(s.path());
    drop(s);
    assert_clean(&data);
}

#[test]
fn bad_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (uuid, tid) in [
        ("../x", "t"),
        ("a/b", "t"),
        ("", "t"),
        (".", "t"),
        ("..", "t"),
        (UUID, "../t"),
        (UUID, ""),
    ] {
        let e = Staging::create(tmp.path(), uuid, tid).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{uuid:?} {tid:?}");
    }
}

#[test]
fn staging_parent_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&data).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, data.join(STAGING_DIR)).unwrap();
    assert!(Staging::create(&data, UUID, "t").is_err());
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn stale_staging_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    assert!(archive::remove_stale_staging(data).unwrap().is_empty());
    for tid in ["x", "y"] {
        let s = Staging::create(data, UUID, tid).unwrap();
        fs::write(s.path().join("f"), b"x").unwrap();
        // A daemon that died never ran Drop.
        std::mem::forget(s);
    }
    let mut removed = archive::remove_stale_staging(data).unwrap();
    removed.sort();
    assert_eq!(removed, vec![format!("{UUID}.x"), format!("{UUID}.y")]);
    assert_clean(data);
}

#[test]
fn remove_tree_never_follows_links() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"keep").unwrap();
    let victim = tmp.path().join("server");
    make_tree(&victim);
    symlink(&outside, victim.join("link_to_outside")).unwrap();
    symlink(&outside, victim.join("nested/a/deep_link")).unwrap();
    let locked = victim.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("f"), b"f").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    archive::remove_tree(&victim).unwrap();
    assert!(!victim.exists());
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");

    // The path itself a symlink: only the link goes.
    let link = tmp.path().join("link");
    symlink(&outside, &link).unwrap();
    archive::remove_tree(&link).unwrap();
    assert!(fs::symlink_metadata(&link).is_err());
    assert!(outside.join("keep").exists());

    // Missing is fine; a file is just unlinked.
    archive::remove_tree(&tmp.path().join("missing")).unwrap();
    fs::write(tmp.path().join("file"), b"x").unwrap();
    archive::remove_tree(&tmp.path().join("file")).unwrap();
    assert!(!tmp.path().join("file").exists());
}
