//! Round trips and interoperability: ferry's archives against GNU tar and
//! Python's tarfile in both directions, multi-member gzip, levels and
//! worker counts, and scan/pack/extract counters.

use crate::support::archive_support;

use archive_support::*;
use ferry::archive::{self, Codec, Counters, ExtractLimits, PackOptions, Staging};
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn round_trip_preserves_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();

    let totals = archive::scan(&src, &AtomicBool::new(false)).unwrap();
    let counters = Counters::default();
    let mut out = Vec::new();
    let s = archive::pack(
        &src,
        &mut out,
        &PackOptions {
            level: 1,
            threads: 3,
            ..PackOptions::default()
        },
        &AtomicBool::new(false),
        &counters,
    )
    .unwrap();
    assert_eq!(s.sha256_hex, sha_hex(&out));
    assert_eq!(s.wire_bytes, out.len() as u64);
    assert_eq!((s.files, s.bytes), (totals.files, totals.bytes));
    assert_eq!(counters.files_done.load(Ordering::Relaxed), totals.files);
    assert_eq!(counters.bytes_done.load(Ordering::Relaxed), totals.bytes);
    assert_eq!(
        counters.wire_bytes.load(Ordering::Relaxed),
        out.len() as u64
    );

    let staging = Staging::create(&data, UUID, "t1").unwrap();
    let ec = Counters::default();
    let es = archive::extract(
        &out[..],
        &staging,
        &ExtractLimits::default(),
        &AtomicBool::new(false),
        &ec,
    )
    .unwrap();
    assert_eq!(es.sha256_hex, s.sha256_hex);
    assert_eq!((es.files, es.bytes), (totals.files, totals.bytes));
    assert_eq!(ec.wire_bytes.load(Ordering::Relaxed), out.len() as u64);
    assert_eq!(ec.bytes_done.load(Ordering::Relaxed), totals.bytes);
    let dest = staging.commit().unwrap();
    assert_eq!(dest, data.join(UUID));
    assert_same_tree(&src, &dest);
    assert_eq!(
        fs::read_dir(data.join(archive::STAGING_DIR))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn every_level_and_thread_count_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.bin"), noise(2_500_000, 3)).unwrap();
    fs::write(src.join("b.txt"), "line of text\n".repeat(100_000)).unwrap();
    let mut digests = Vec::new();
    for (level, threads) in [(0, 1), (1, 1), (1, 2), (6, 4), (9, 2)] {
        let (bytes, s) = pack_vec(&src, level, threads);
        digests.push((level, s.sha256_hex.clone()));
        let data = tmp.path().join(format!("data-{level}-{threads}"));
        fs::create_dir(&data).unwrap();
        let dest = extract_commit(&data, &bytes).unwrap();
        assert_same_tree(&src, &dest);
    }
    // Same level, different worker counts: byte-identical archives.
    assert_eq!(digests[1].1, digests[2].1);
}

/// Between ferry nodes the archive is zstd, one frame per block: the same
/// bytes whatever the workers (a restarted source packs it again), our
/// extractor and the `zstd` tool both read it, and it is smaller than
/// the gzip of the same tree. The engine also packs a bare tar.
#[test]
fn zstd_and_bare_tar_archives_round_trip_and_the_zstd_tool_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    fs::write(src.join("big.txt"), "line of text\n".repeat(300_000)).unwrap();
    fs::write(src.join("noise.bin"), noise(3_000_000, 5)).unwrap();
    let pack = |codec, threads| {
        let (out, s) = pack_codec(&src, codec, 1, threads);
        assert_eq!(s.sha256_hex, sha_hex(&out));
        out
    };
    let zstd = pack(Codec::Zstd, 1);
    for threads in [2, 3] {
        assert!(pack(Codec::Zstd, threads) == zstd, "{threads} workers");
    }
    assert_eq!(&zstd[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    assert!(zstd.len() < pack(Codec::Gzip, 2).len());

    // Our extractor reads it, and the uncompressed form the engine packs
    // too (the tar stream alone).
    let plain = pack(Codec::Plain, 2);
    assert_eq!(&plain[257..262], b"ustar", "a bare tar");
    for (i, (codec, bytes)) in [(Codec::Zstd, &zstd), (Codec::Plain, &plain)]
        .into_iter()
        .enumerate()
    {
        let data = tmp.path().join(format!("data-{i}"));
        fs::create_dir(&data).unwrap();
        let staging = Staging::create(&data, UUID, "t1").unwrap();
        let s = archive::extract_codec(
            &bytes[..],
            codec,
            &staging,
            &ExtractLimits::default(),
            &AtomicBool::new(false),
            &Counters::default(),
        )
        .unwrap();
        assert_eq!(s.sha256_hex, sha_hex(bytes));
        assert_same_tree(&src, &staging.commit().unwrap());
    }

    let archive_path = tmp.path().join("a.tar.zst");
    fs::write(&archive_path, &zstd).unwrap();
    let tool = tmp.path().join("tool");
    fs::create_dir(&tool).unwrap();
    run(Command::new("tar")
        .arg("--use-compress-program=zstd")
        .arg("-xf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&tool));
    assert_same_tree(&src, &tool);
}

/// What a source sends: each directory's files and links before its
/// subdirectories (a server's jar before its thousands of small config
/// files), every directory still before what it holds. The same bytes
/// for any worker count; GNU tar and our extractor give the same tree,
/// hard links included.
#[test]
fn files_first_archives_list_a_directorys_files_before_its_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    fs::write(src.join("a.jar"), noise(200_000, 3)).unwrap();
    fs::hard_link(src.join("a.jar"), src.join("nested/a/link-to-jar")).unwrap();
    let pack = |threads| {
        let options = PackOptions {
            level: 1,
            threads,
            codec: Codec::Gzip,
            files_first: true,
        };
        pack_with(&src, &options).0
    };
    let bytes = pack(1);
    assert!(
        pack(3) == bytes,
        "the order depends on nothing but the tree"
    );
    let archive_path = tmp.path().join("a.tar.gz");
    fs::write(&archive_path, &bytes).unwrap();
    let listing = run(Command::new("tar").arg("-tzf").arg(&archive_path));
    let names: Vec<&str> = listing.lines().collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{name} not in {names:?}"))
    };
    // Top level: files and links (a.jar, dangling, world.bin …) first,
    // then the directories (empty_dir/, nested/ …) with their contents.
    let first_dir = names.iter().position(|n| n.ends_with('/')).unwrap();
    assert!(
        names[..first_dir].iter().all(|n| !n.contains('/')),
        "{names:?}"
    );
    for top_file in ["a.jar", "dangling", "world.bin", "zero.bin"] {
        assert!(at(top_file) < first_dir, "{names:?}");
    }
    assert!(at("nested/") < at("nested/a/") && at("nested/a/") < at("nested/a/b/c/deep.txt"));
    // Inside nested/a: its file before its subdirectory b/.
    assert!(at("nested/a/link-to-jar") < at("nested/a/b/"), "{names:?}");

    let gnu = tmp.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&gnu));
    assert_same_tree(&src, &gnu);
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let dest = extract_commit(&data, &bytes).unwrap();
    assert_same_tree(&src, &dest);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(dest.join("a.jar")).unwrap().ino(),
        fs::metadata(dest.join("nested/a/link-to-jar"))
            .unwrap()
            .ino(),
        "the hard link is kept"
    );
}

#[test]
fn gnu_tar_and_python_read_our_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let (bytes, _) = pack_vec(&src, 1, 2);
    let archive_path = tmp.path().join("a.tar.gz");
    fs::write(&archive_path, &bytes).unwrap();
    let expected = snapshot(&src);

    let listing = run(Command::new("tar").arg("-tzvf").arg(&archive_path));
    assert_eq!(listing.lines().count(), expected.len(), "{listing}");
    let names = run(Command::new("tar").arg("-tzf").arg(&archive_path));
    assert!(names
        .lines()
        .all(|l| !l.starts_with('/') && !l.starts_with("./")));
    let gnu = tmp.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&gnu));
    assert_same_tree(&src, &gnu);

    let py = tmp.path().join("py");
    let script = "import sys, tarfile\n\
        t = tarfile.open(sys.argv[1], 'r:gz')\n\
        ms = t.getmembers()\n\
        print(len(ms))\n\
        kw = {'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}\n\
        t.extractall(sys.argv[2], **kw)\n";
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(&archive_path)
        .arg(&py));
    assert_eq!(out.trim(), expected.len().to_string());
    assert_same_tree(&src, &py);
}

#[test]
fn archives_from_gnu_tar_and_python_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    for (i, format) in ["gnu", "posix", "ustar-ish-oldgnu"].iter().enumerate() {
        let fmt = if *format == "ustar-ish-oldgnu" {
            "oldgnu"
        } else {
            format
        };
        let a = tmp.path().join(format!("gnu-{fmt}.tar.gz"));
        run(Command::new("tar")
            .arg(format!("--format={fmt}"))
            .arg("-czf")
            .arg(&a)
            .arg("-C")
            .arg(&src)
            .arg("."));
        let data = tmp.path().join(format!("data-gnu-{i}"));
        fs::create_dir(&data).unwrap();
        let dest = extract_commit(&data, &fs::read(&a).unwrap()).unwrap();
        assert_same_tree(&src, &dest);
    }

    let a = tmp.path().join("py.tar.gz");
    let script = "import os, sys, tarfile\n\
        with tarfile.open(sys.argv[2], 'w:gz', format=tarfile.PAX_FORMAT) as t:\n\
        \x20   for n in sorted(os.listdir(sys.argv[1])):\n\
        \x20       t.add(os.path.join(sys.argv[1], n), arcname=n)\n";
    run(Command::new("python3")
        .args(["-c", script])
        .arg(&src)
        .arg(&a));
    let data = tmp.path().join("data-py");
    fs::create_dir(&data).unwrap();
    let dest = extract_commit(&data, &fs::read(&a).unwrap()).unwrap();
    assert_same_tree(&src, &dest);
}

#[test]
fn multi_member_gzip_extracts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let tar = tmp.path().join("plain.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let raw = fs::read(&tar).unwrap();
    // Split at arbitrary (non-block) offsets; each piece its own member,
    // one of them empty.
    let cuts = [0, 777, raw.len() / 2, raw.len() / 2, raw.len()];
    let mut gz = Vec::new();
    for w in cuts.windows(2) {
        gz.extend_from_slice(&gzip(&raw[w[0]..w[1]]));
    }
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let dest = extract_commit(&data, &gz).unwrap();
    assert_same_tree(&src, &dest);
}

#[test]
fn level_zero_is_valid_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), noise(1_500_000, 9)).unwrap();
    let (bytes, _) = pack_vec(&src, 0, 2);
    assert!(bytes.len() > 1_500_000, "level 0 stores");
    let p = tmp.path().join("a.tgz");
    fs::write(&p, &bytes).unwrap();
    run(Command::new("gzip").arg("-t").arg(&p));
    let out = run(Command::new("tar").arg("-tzf").arg(&p));
    assert_eq!(out.trim(), "f");
}

#[test]
fn scan_counts_what_pack_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let expected = snapshot(&src);
    let t = archive::scan(&src, &AtomicBool::new(false)).unwrap();
    assert_eq!(t.files, expected.len() as u64);
    let bytes: u64 = expected
        .values()
        .map(|n| match n {
            Node::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    assert_eq!(t.bytes, bytes);
}

#[test]
fn special_files_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("keep"), b"k").unwrap();
    run(Command::new("mkfifo").arg(src.join("fifo")));
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    assert_eq!(
        archive::scan(&src, &AtomicBool::new(false)).unwrap().files,
        1
    );
    let (bytes, s) = pack_vec(&src, 1, 1);
    assert_eq!(s.files, 1);
    let p = tmp.path().join("a.tgz");
    fs::write(&p, bytes).unwrap();
    assert_eq!(run(Command::new("tar").arg("-tzf").arg(&p)).trim(), "keep");
}
