//! Replays every committed fuzz seed (`fuzz/corpus-seed/<target>/`,
//! including the inputs that once crashed a target) through the same
//! checks the cargo-fuzz targets run, so `make test` keeps them passing
//! without the fuzzing toolchain.

#[path = "../../fuzz/checks/archive_extract.rs"]
mod archive_extract;
#[path = "../../fuzz/checks/http_chunked.rs"]
mod http_chunked;
#[path = "../../fuzz/checks/http_head.rs"]
mod http_head;
#[path = "../../fuzz/checks/multipart.rs"]
mod multipart;

use std::path::PathBuf;

/// Runs `check` on every seed of `target`; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus-seed")
        .join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    for seed in &seeds {
        let data = std::fs::read(seed).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "seed {} fails its check", seed.display());
    }
    seeds.len()
}

#[test]
fn http_head_seeds() {
    assert!(replay("http_head", http_head::run) >= 10);
}

#[test]
fn http_chunked_seeds() {
    assert!(replay("http_chunked", http_chunked::run) >= 5);
}

#[test]
fn multipart_seeds() {
    assert!(replay("multipart", multipart::run) >= 4);
}

#[test]
fn archive_extract_seeds() {
    assert!(replay("archive_extract", archive_extract::run) >= 10);
}

/// The well-formed seeds really extract (a check that only looks for
/// escapes would pass on an extractor that refuses everything).
#[test]
fn well_formed_seed_archives_extract() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-seed/archive_extract");
    for name in ["normal_gz", "multi_member_gz"] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let staging = ferry::archive::Staging::create(
            tmp.path(),
            "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
            "t",
        )
        .unwrap();
        let summary = ferry::archive::extract(
            &data[1..],
            &staging,
            &Default::default(),
            &Default::default(),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary.wire_bytes, data.len() as u64 - 1);
        let level = std::fs::read(staging.path().join("world/level.dat")).unwrap();
        assert_eq!(level, b"level", "{name}");
        assert_eq!(
            std::fs::read_link(staging.path().join("link")).unwrap(),
            PathBuf::from("world/level.dat")
        );
    }
}
