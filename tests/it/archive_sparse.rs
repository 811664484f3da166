//! Sparse and multi-GiB files: sizes past 2^32, the zero-block fast paths
//! (holes skipped with SEEK_DATA when reading, zero blocks emitted as far
//! copies when compressing, holes left when writing).
//!
//! A 4.5 GiB sparse file (past 2^32) round-trips through our own packer
//! and extractor in a few seconds (dependencies are optimised even in
//! debug builds); the same size is also checked by C zlib (via Python).

use crate::support::archive_support;

use archive_support::*;
use ferry::archive::{self, Counters, ExtractLimits, PackOptions, Staging};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// A sparse file of `size` bytes with a little data at the start, middle
/// and end; costs no disk.
fn sparse_tree(src: &Path, size: u64) {
    fs::create_dir(src).unwrap();
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&noise(100_000, 3), size / 2 + 12345)
        .unwrap();
    f.write_all_at(b"end", size - 3).unwrap();
    fs::write(src.join("tail.txt"), b"after the big one").unwrap();
}

fn pack_file(src: &Path, archive_path: &Path) -> archive::PackSummary {
    let out = fs::File::create(archive_path).unwrap();
    archive::pack(
        src,
        std::io::BufWriter::new(out),
        &PackOptions {
            level: 1,
            threads: 2,
            ..PackOptions::default()
        },
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap()
}

fn round_trip(size: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sparse_tree(&src, size);
    let archive_path = tmp.path().join("a.tgz");
    let s = pack_file(&src, &archive_path);
    assert_eq!(s.bytes, size + 17);
    assert!(s.wire_bytes < size / 64, "zeros compress: {}", s.wire_bytes);

    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let staging = Staging::create(&data, UUID, "t").unwrap();
    let input = std::io::BufReader::new(fs::File::open(&archive_path).unwrap());
    let e = archive::extract(
        input,
        &staging,
        &ExtractLimits::default(),
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap();
    assert_eq!(e.bytes, size + 17);
    let dest = staging.commit().unwrap();
    let md = fs::metadata(dest.join("sparse.img")).unwrap();
    assert_eq!(md.len(), size);
    assert!(
        md.blocks() * 512 < 16 << 20,
        "not sparse: {} blocks",
        md.blocks()
    );
    assert_same_tree(&src, &dest);
}

#[test]
fn sparse_file_round_trips_with_holes() {
    round_trip(384 << 20);
}

#[test]
fn multi_gib_sparse_file_round_trips() {
    round_trip(9 << 29);
}

/// A 4.5 GiB file (past 2^32: the gzip length field wraps, the tar size
/// needs all 11 octal digits) packs quickly and zlib verifies it.
#[test]
fn multi_gib_sparse_file_is_valid_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let size: u64 = 9 << 29;
    sparse_tree(&src, size);
    let archive_path = tmp.path().join("a.tgz");
    let s = pack_file(&src, &archive_path);
    assert_eq!(s.bytes, size + 17);
    assert!(s.wire_bytes < 64 << 20, "zeros compress: {}", s.wire_bytes);
    // One full pass through C zlib, which checks the CRC and the length
    // modulo 2^32 (GNU gzip's own inflater is 5x slower here).
    let script = "import sys, zlib\n\
        d = zlib.decompressobj(31)\n\
        n = 0\n\
        with open(sys.argv[1], 'rb') as f:\n\
        \x20   while c := f.read(1 << 16):\n\
        \x20       while c:\n\
        \x20           n += len(d.decompress(c, 1 << 18))\n\
        \x20           c = d.unconsumed_tail\n\
        assert d.eof and not d.unused_data\n\
        print(n)\n";
    let n = run(Command::new("python3")
        .args(["-c", script])
        .arg(&archive_path));
    let tar_len: u64 = n.trim().parse().unwrap();
    assert!(tar_len > size + 2048 && tar_len % 10240 == 0, "{tar_len}");
    // The first header, from the start of the stream only.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | head -c 512",
            archive_path.display()
        ))
        .output()
        .unwrap();
    let h = &out.stdout;
    assert_eq!(&h[..11], b"sparse.img\0");
    let field = std::str::from_utf8(&h[124..135]).unwrap();
    assert_eq!(u64::from_str_radix(field, 8).unwrap(), size);
}
