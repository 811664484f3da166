//! Shared helpers for the archive integration tests: tree generation, tree
//! snapshots for comparison, hand-made tar/gzip bytes and pack/extract
//! shortcuts.

use ferry::archive::{self, Counters, ExtractError, ExtractLimits, PackOptions, Staging};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

pub const UUID: &str = "0b6a3c1e-8f0d-4d5e-9a7b-1c2d3e4f5a6b";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: i64,
        size: u64,
        digest: String,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Files above this are compared by size and a few sampled windows, so a
/// multi-GiB sparse file does not cost a full hash in a debug build.
const FULL_HASH_LIMIT: u64 = 64 << 20;

fn digest(path: &Path, size: u64) -> String {
    if size <= FULL_HASH_LIMIT {
        return hex::encode(Sha256::digest(fs::read(path).unwrap()));
    }
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..16u64 {
        let off = (size - buf.len() as u64) / 15 * i;
        let n = f.read_at(&mut buf, off).unwrap();
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Everything beneath `root` (not the root itself), without following links.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.mode() & 0o7777;
            let node = if md.file_type().is_symlink() {
                Node::Symlink {
                    target: fs::read_link(&p).unwrap(),
                }
            } else if md.is_dir() {
                stack.push(p.clone());
                Node::Dir {
                    mode,
                    mtime: md.mtime(),
                }
            } else {
                Node::File {
                    mode,
                    mtime: md.mtime(),
                    size: md.len(),
                    digest: digest(&p, md.len()),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    for (k, v) in &sa {
        assert_eq!(Some(v), sb.get(k), "entry {k:?} differs");
    }
    assert_eq!(
        sa.keys().collect::<Vec<_>>(),
        sb.keys().collect::<Vec<_>>(),
        "entry lists differ"
    );
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), cheap in debug builds.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A tree with the awkward cases: empty dirs, dangling, absolute and long
/// symlinks, names past 100 and 255 bytes, long paths, modes, empty files,
/// unicode names, a file spanning several pack blocks.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::create_dir_all(root.join("nested/a/b/c")).unwrap();
    fs::write(root.join("nested/a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(root.join("zero.bin"), b"").unwrap();
    fs::write(
        root.join("server.properties"),
        b"motd=hello\nmax-players=20\n",
    )
    .unwrap();
    fs::create_dir(root.join("modes")).unwrap();
    for (name, mode) in [
        ("exec.sh", 0o755),
        ("ro.txt", 0o444),
        ("private", 0o600),
        ("odd", 0o640),
    ] {
        let p = root.join("modes").join(name);
        fs::write(&p, name.as_bytes()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir(root.join("ro_dir")).unwrap();
    fs::write(root.join("ro_dir/inside.txt"), b"inside").unwrap();
    fs::set_permissions(root.join("ro_dir"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::create_dir(root.join("private_dir")).unwrap();
    fs::set_permissions(root.join("private_dir"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(root.join("héllo wörld")).unwrap();
    fs::write(
        root.join("héllo wörld/日本語ファイル.txt"),
        "こんにちは".as_bytes(),
    )
    .unwrap();
    fs::write(root.join("emoji 🎮 spaces.cfg"), b"x=1").unwrap();
    // 150-byte component, and a > 255-byte and > 1000-byte path.
    let c150 = "L".repeat(150);
    fs::write(root.join(&c150), b"long name").unwrap();
    let mut deep = root.to_path_buf();
    for i in 0..12 {
        deep.push(format!("{i:02}-{}", "d".repeat(90)));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file-at-the-bottom.txt"), b"bottom").unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("/etc/passwd", root.join("absolute_link")).unwrap();
    symlink("nested/a", root.join("dir_link")).unwrap();
    symlink("t".repeat(300), root.join("long_target_link")).unwrap();
    fs::write(root.join("world.bin"), noise(3 * 1024 * 1024 + 12345, 7)).unwrap();
    // mtimes last (creating children changes a directory's mtime).
    let mut all: Vec<PathBuf> = snapshot(root)
        .into_iter()
        .filter(|(_, n)| !matches!(n, Node::Symlink { .. }))
        .map(|(k, _)| root.join(k))
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as u64 * 3600);
    }
}

pub fn pack_vec(root: &Path, level: u32, threads: usize) -> (Vec<u8>, archive::PackSummary) {
    pack_codec(root, archive::Codec::Gzip, level, threads)
}

pub fn pack_codec(
    root: &Path,
    codec: archive::Codec,
    level: u32,
    threads: usize,
) -> (Vec<u8>, archive::PackSummary) {
    pack_with(
        root,
        &PackOptions {
            level,
            threads,
            codec,
            ..PackOptions::default()
        },
    )
}

/// Packs `root` into memory with `options`.
pub fn pack_with(root: &Path, options: &PackOptions) -> (Vec<u8>, archive::PackSummary) {
    let mut out = Vec::new();
    let s = archive::pack(
        root,
        &mut out,
        options,
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap();
    (out, s)
}

pub fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Extracts `bytes` into a fresh staging under `data` and commits it.
pub fn extract_commit(data: &Path, bytes: &[u8]) -> Result<PathBuf, ExtractError> {
    let staging = Staging::create(data, UUID, "t1").unwrap();
    let s = archive::extract(
        bytes,
        &staging,
        &ExtractLimits::default(),
        &AtomicBool::new(false),
        &Counters::default(),
    )?;
    assert_eq!(s.sha256_hex, sha_hex(bytes));
    assert_eq!(s.wire_bytes, bytes.len() as u64);
    Ok(staging.commit().unwrap())
}

/// Asserts that `data` holds nothing but an empty staging parent.
pub fn assert_clean(data: &Path) {
    let names: Vec<String> = fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.is_empty() || names == [archive::STAGING_DIR],
        "left in data dir: {names:?}"
    );
    if !names.is_empty() {
        let left = fs::read_dir(data.join(archive::STAGING_DIR))
            .unwrap()
            .count();
        assert_eq!(left, 0, "staging not emptied");
    }
}

/// A raw ustar header block.
pub fn header(name: &[u8], kind: u8, size: u64, link: &[u8], mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    // Octal, or GNU base-256 when it does not fit.
    let oct = |f: &mut [u8], v: u64| {
        let s = format!("{:0w$o}\0", v, w = f.len() - 1);
        if s.len() == f.len() {
            f.copy_from_slice(s.as_bytes());
        } else {
            f.fill(0);
            f[0] = 0x80;
            let n = f.len();
            f[n - 8..].copy_from_slice(&v.to_be_bytes());
        }
    };
    oct(&mut h[100..108], mode as u64);
    oct(&mut h[108..116], 0);
    oct(&mut h[116..124], 0);
    oct(&mut h[124..136], size);
    oct(&mut h[136..148], 1_600_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A tar stream builder for hand-made (possibly hostile) archives.
#[derive(Default)]
pub struct TarBuilder {
    pub bytes: Vec<u8>,
}

impl TarBuilder {
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: u8,
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        self.bytes
            .extend_from_slice(&header(name, kind, data.len() as u64, link, mode));
        self.data(data)
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), b'0', b"", 0o644, data)
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'5', b"", 0o755, b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'2', target.as_bytes(), 0o777, b"")
    }
    /// A PAX extended header with the given records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = 3 + k.len() + v.len();
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry(b"PaxHeader", b'x', b"", 0o644, &body.clone())
    }
    /// Raw data padded to a block.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.bytes);
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
