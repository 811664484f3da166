//! A multi-GiB sparse file through pack and extract: sizes past 2^31, the
//! zero-block fast paths (holes skipped when reading, cached zero blocks
//! when compressing, holes left when writing). Its own test binary because
//! it is the slowest archive test in a debug build (inflating 2 GiB with
//! an unoptimised zlib-rs takes most of its time).

mod archive_support;

use archive_support::*;
use ferry::archive::{self, Counters, ExtractLimits, PackOptions, Staging};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// A 2 GiB sparse file costs no disk and, thanks to the zero-block paths
/// (cached compressed zero blocks, holes on extraction), little time.
#[test]
fn multi_gib_sparse_file_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let size: u64 = 2 << 30;
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", size / 2 + 12345).unwrap();
    f.write_all_at(b"end", size - 3).unwrap();
    drop(f);

    let archive_path = tmp.path().join("a.tgz");
    let out = fs::File::create(&archive_path).unwrap();
    let s = archive::pack(
        &src,
        std::io::BufWriter::new(out),
        &PackOptions {
            level: 1,
            threads: 2,
        },
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap();
    assert_eq!(s.bytes, size);
    assert!(s.wire_bytes < 32 << 20, "zeros compress: {}", s.wire_bytes);

    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let staging = Staging::create(&data, UUID, "t").unwrap();
    let input = std::io::BufReader::new(fs::File::open(&archive_path).unwrap());
    archive::extract(
        input,
        &staging,
        &ExtractLimits::default(),
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap();
    let dest = staging.commit().unwrap();
    let md = fs::metadata(dest.join("sparse.img")).unwrap();
    assert_eq!(md.len(), size);
    assert!(
        md.blocks() * 512 < 64 << 20,
        "extracted sparse: {} blocks",
        md.blocks()
    );
    assert_same_tree(&src, &dest);

    // GNU tar agrees on the size.
    let listing = run(Command::new("tar").arg("-tzvf").arg(&archive_path));
    assert!(listing.contains(&size.to_string()), "{listing}");
}
