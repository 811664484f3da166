//! Archives people make, arriving as their own tool extracts them. For GNU
//! tar and bsdtar (libarchive), in every format each writes (gnu, posix
//! with each sparse version, ustar; bsdtar's ustar, pax, gnutar), a tree
//! with hard links, a sparse file, pre-1970 and post-2038 mtimes, long
//! names and odd modes is archived by the real binary, posted to a real
//! destination node, and compared entry by entry (type, mode, mtime, size,
//! content, link target, hard-link grouping, holes) with the same tool's
//! own extraction of the same archive. Also: a ferry→ferry transfer keeps
//! hard links linked.
//!
//! Needs `tar` and `bsdtar` (Debian's `libarchive-tools`, in `.ci/run`).

use crate::support::fake_panel;
use crate::support::node;

use node::{TestNode, TOKEN};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

const BOUNDARY: &str = "ferryinteropboundary42";
/// 1960-01-01 and 2100-01-01.
const PRE_1970: i64 = -315_619_200;
const POST_2038: i64 = 4_102_444_800;
const SPARSE_SIZE: u64 = 8 << 20;

/// One way a person makes an archive.
struct Case {
    tool: &'static str,
    args: &'static [&'static str],
    /// The format stores mtimes before 1970 and a 150-byte name (ustar
    /// does neither).
    rich: bool,
    /// The writer keeps mtimes before 1970 (libarchive's gnutar writer
    /// stores them as 0; ferry must then agree with bsdtar on 0).
    keeps_pre_1970: bool,
}

const CASES: &[Case] = &[
    Case {
        tool: "tar",
        args: &["--format=gnu"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=gnu", "--sparse"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=posix"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=posix", "--sparse", "--sparse-version=0.0"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=posix", "--sparse", "--sparse-version=0.1"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=posix", "--sparse", "--sparse-version=1.0"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "tar",
        args: &["--format=ustar"],
        rich: false,
        keeps_pre_1970: false,
    },
    Case {
        tool: "bsdtar",
        args: &["--format", "ustar"],
        rich: false,
        keeps_pre_1970: false,
    },
    Case {
        tool: "bsdtar",
        args: &["--format", "pax"],
        rich: true,
        keeps_pre_1970: true,
    },
    Case {
        tool: "bsdtar",
        args: &["--format", "gnutar"],
        rich: true,
        keeps_pre_1970: false,
    },
];

fn set_mtime(p: &Path, secs: i64) {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// A small server tree with everything the formats differ on.
pub fn make_people_tree(root: &Path, rich: bool) {
    fs::create_dir_all(root.join("world/region")).unwrap();
    fs::create_dir_all(root.join("plugins")).unwrap();
    fs::create_dir_all(root.join("libs")).unwrap();
    fs::create_dir_all(root.join("long")).unwrap();
    let mut region = Vec::new();
    for i in 0..40_000u32 {
        region.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    }
    fs::write(root.join("world/region/r.0.0.mca"), &region).unwrap();
    // One library, three names: the modded-server case.
    fs::write(root.join("plugins/lib.jar"), b"PK\x03\x04 a library").unwrap();
    fs::hard_link(root.join("plugins/lib.jar"), root.join("libs/lib.jar")).unwrap();
    fs::hard_link(root.join("plugins/lib.jar"), root.join("libs/again.jar")).unwrap();
    // A sparse disk image: two data runs in 8 MiB.
    let img = fs::File::create(root.join("disk.img")).unwrap();
    img.set_len(SPARSE_SIZE).unwrap();
    img.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
    img.write_all_at(b"the end", SPARSE_SIZE - 7).unwrap();
    drop(img);
    // Ten data runs: more than an old GNU header holds (4), so its
    // extension blocks are used.
    let many = fs::File::create(root.join("many.img")).unwrap();
    many.set_len(SPARSE_SIZE).unwrap();
    for i in 0..10u64 {
        many.write_all_at(&[i as u8 + 1; 4096], i * (512 << 10))
            .unwrap();
    }
    drop(many);
    for (name, mode) in [
        ("start.sh", 0o755),
        ("secret.txt", 0o600),
        ("ro.txt", 0o444),
    ] {
        let p = root.join(name);
        fs::write(&p, name.as_bytes()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::write(root.join("empty"), b"").unwrap();
    let long = if rich { 150 } else { 90 };
    fs::write(root.join("long").join("n".repeat(long)), b"long name").unwrap();
    symlink("world", root.join("current")).unwrap();
    fs::write(root.join("future.dat"), b"from 2100").unwrap();
    set_mtime(&root.join("future.dat"), POST_2038);
    if rich {
        fs::create_dir(root.join("olddir")).unwrap();
        fs::write(root.join("olddir/old.dat"), b"from 1960").unwrap();
        set_mtime(&root.join("olddir/old.dat"), PRE_1970);
        set_mtime(&root.join("olddir"), -86_400);
    }
    fs::set_permissions(root.join("plugins"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&root.join("world/region"), 1_500_000_000);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    mtime: i64,
    size: u64,
    sha: String,
    link: String,
    /// Every path sharing this file's inode (empty when it has one name).
    group: Vec<String>,
}

/// Every entry beneath `root`, and which regular files have holes.
fn snapshot(root: &Path) -> (BTreeMap<String, Entry>, BTreeMap<String, bool>) {
    let mut out = BTreeMap::new();
    let mut holes = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let (kind, sha, link) = if md.file_type().is_symlink() {
                (
                    'l',
                    String::new(),
                    fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
                )
            } else if md.is_dir() {
                stack.push(p.clone());
                ('d', String::new(), String::new())
            } else {
                if md.nlink() > 1 {
                    inodes.entry(md.ino()).or_default().push(rel.clone());
                }
                holes.insert(rel.clone(), md.blocks() * 512 < md.len());
                (
                    'f',
                    hex::encode(Sha256::digest(fs::read(&p).unwrap())),
                    String::new(),
                )
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    mtime: md.mtime(),
                    size: if kind == 'f' { md.len() } else { 0 },
                    sha,
                    link,
                    group: Vec::new(),
                },
            );
        }
    }
    for mut names in inodes.into_values() {
        names.sort();
        for n in &names {
            if let Some(e) = out.get_mut(n) {
                e.group = names.clone();
            }
        }
    }
    (out, holes)
}

/// Runs `cmd`; panics with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn uuid(n: u32) -> String {
    format!("{n:08x}-7a1b-4c2d-8e3f-0a1b2c3d4e5f")
}

/// Posts `archive` as an incoming transfer of `server`; the status and body.
pub fn post_archive(node: &TestNode, server: &str, archive: &[u8]) -> (u16, String) {
    let sum = hex::encode(Sha256::digest(archive));
    post_archive_with_checksum(node, server, archive, &sum)
}

/// Posts `archive` with `sum` as its checksum part.
pub fn post_archive_with_checksum(
    node: &TestNode,
    server: &str,
    archive: &[u8],
    sum: &str,
) -> (u16, String) {
    let mut body = Vec::new();
    write!(
        body,
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(archive);
    write!(
        body,
        "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\n{sum}\r\n--{BOUNDARY}--\r\n"
    )
    .unwrap();
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(node.url("/api/transfers"))
        .header(
            "Authorization",
            format!("Bearer {}", fake_panel::mint_transfer_jwt(TOKEN, server)),
        )
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .unwrap();
    let mut resp = TestNode::agent().run(req).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Asserts that ferry's extraction equals the tool's, entry by entry.
fn assert_same(what: &str, tool: &Path, ferry: &Path) {
    let (want, want_holes) = snapshot(tool);
    let (got, got_holes) = snapshot(ferry);
    let names = |m: &BTreeMap<String, Entry>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&want), names(&got), "{what}: different entries");
    for (path, w) in &want {
        assert_eq!(Some(w), got.get(path), "{what}: {path} differs");
    }
    for (path, holes) in want_holes {
        if holes {
            assert_eq!(
                got_holes.get(&path),
                Some(&true),
                "{what}: {path} lost its holes"
            );
        }
    }
}

#[test]
fn archives_from_gnu_tar_and_bsdtar_arrive_as_the_tool_extracts_them() {
    let node = TestNode::start();
    for (i, case) in CASES.iter().enumerate() {
        let what = format!("{} {}", case.tool, case.args.join(" "));
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_people_tree(&src, case.rich);
        let archive = run(Command::new(case.tool)
            .args(case.args)
            .arg("-czf")
            .arg("-")
            .arg("-C")
            .arg(&src)
            .arg("."));
        let by_tool = tmp.path().join("by_tool");
        fs::create_dir(&by_tool).unwrap();
        let file = tmp.path().join("a.tgz");
        fs::write(&file, &archive).unwrap();
        run(Command::new(case.tool)
            .arg("-xpzf")
            .arg(&file)
            .arg("-C")
            .arg(&by_tool));

        let server = uuid(i as u32 + 1);
        let (status, body) = post_archive(&node, &server, &archive);
        assert_eq!(status, 200, "{what}: {body}");
        let by_ferry = node.server_dir(&server);
        assert_same(&what, &by_tool, &by_ferry);

        // Not vacuous: the tool kept what the case is about.
        let (tool_tree, tool_holes) = snapshot(&by_tool);
        assert_eq!(
            tool_tree["libs/lib.jar"].group.len(),
            3,
            "{what}: hard links"
        );
        assert_eq!(tool_tree["future.dat"].mtime, POST_2038, "{what}");
        assert_eq!(tool_tree["disk.img"].size, SPARSE_SIZE, "{what}");
        if case.keeps_pre_1970 {
            assert_eq!(tool_tree["olddir/old.dat"].mtime, PRE_1970, "{what}");
            assert_eq!(tool_tree["olddir"].mtime, -86_400, "{what}");
        }
        if case.args.contains(&"--sparse") {
            assert!(tool_holes["disk.img"], "{what}: the tool wrote no holes");
            assert!(tool_holes["many.img"], "{what}: the tool wrote no holes");
        }
        // And ferry's own copy is sparse whatever the format.
        let (_, ferry_holes) = snapshot(&by_ferry);
        assert!(ferry_holes["disk.img"], "{what}: ferry wrote no holes");
    }
}

#[test]
fn a_ferry_transfer_keeps_hard_links_linked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = uuid(0xfe);
    let src_root = tmp.path().join("src");
    let data = src_root.join("volumes").join(&server);
    fs::create_dir_all(&data).unwrap();
    make_people_tree(&data, true);
    let src = TestNode::start_with(node::NodeOptions {
        root: Some(src_root),
        ..Default::default()
    });
    let dst = TestNode::start();
    let src_token = tmp.path().join("src.token");
    let dst_token = tmp.path().join("dst.token");
    fs::write(&src_token, &src.token).unwrap();
    fs::write(&dst_token, &dst.token).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "transfer",
            &server,
            "--node",
            &src.url(""),
            "--to",
            &dst.url(""),
        ])
        .arg("--token-file")
        .arg(&src_token)
        .arg("--dest-token-file")
        .arg(&dst_token));
    let (want, _) = snapshot(&data);
    let (got, holes) = snapshot(&dst.server_dir(&server));
    assert_eq!(want, got);
    assert_eq!(got["libs/lib.jar"].group.len(), 3);
    let md = fs::metadata(dst.server_dir(&server).join("plugins/lib.jar")).unwrap();
    assert_eq!(md.nlink(), 3);
    assert!(holes["disk.img"]);
}
