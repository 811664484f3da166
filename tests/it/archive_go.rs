//! Wings reads incoming transfers with Go's gzip reader under archive/tar.
//! These tests build `tests/go/read_tgz.go` with the machine's Go toolchain
//! and have it extract ferry's archives: every level, one and several
//! compression threads, stored (incompressible) blocks, zero runs written
//! as far copies, and the awkward tree from `make_tree`; receive a whole
//! transfer from a ferry source node the way Wings does; and send one to a
//! ferry destination the way a Wings source does.
//!
//! Without a `go` command the tests skip with a message, unless
//! `FERRY_REQUIRE_GO=1` (CI sets it and installs Debian's `golang-go`),
//! when they fail instead.

use crate::support::archive_support;
use crate::support::fake_panel;
use crate::support::node;

use archive_support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built reader, or why there is none (built once per test binary).
/// It carries Pelican's sender and receiver too (`tests/go/pelican.go`,
/// used by `transfer_dialects_go`).
pub(crate) fn go_reader() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let bin = work.join("read_tgz");
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(sources.join("read_tgz.go"))
            .arg(sources.join("pelican.go"))
            .env("GOCACHE", work.join("cache"))
            .env("GOPATH", work.join("path"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .output()
            .map_err(|e| format!("cannot run go: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "go build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(bin)
    });
    match built {
        Ok(bin) => Some(bin.clone()),
        Err(why) if std::env::var("FERRY_REQUIRE_GO").as_deref() == Ok("1") => {
            panic!("FERRY_REQUIRE_GO=1 but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no Go toolchain ({why}); install golang-go");
            None
        }
    }
}

/// Packs `src`, has Go extract it, and compares the trees.
fn go_reads(src: &Path, level: u32, threads: usize) {
    let Some(reader) = go_reader() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, summary) = pack_vec(src, level, threads);
    let archive_path = tmp.path().join("a.tar.gz");
    fs::write(&archive_path, &bytes).unwrap();
    let dest = tmp.path().join("go");
    fs::create_dir(&dest).unwrap();
    let out = run(Command::new(reader).arg(&archive_path).arg(&dest));
    assert_eq!(
        out.trim(),
        snapshot(src).len().to_string(),
        "entry count (level {level}, threads {threads})"
    );
    assert!(summary.files > 0);
    assert_same_tree(src, &dest);
}

#[test]
fn go_extracts_the_awkward_tree_at_every_level() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    for (level, threads) in [(0, 1), (1, 1), (1, 2), (6, 2), (9, 3)] {
        go_reads(&src, level, threads);
    }
}

/// ferry writes a file's further links as tar hard-link entries; Go's
/// archive/tar (Wings' reader) reads them, and the copies it makes are
/// linked again.
#[test]
fn go_extracts_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let Some(reader) = go_reader() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("plugins")).unwrap();
    fs::create_dir_all(src.join("libs")).unwrap();
    fs::write(src.join("plugins/lib.jar"), noise(300 << 10, 5)).unwrap();
    fs::hard_link(src.join("plugins/lib.jar"), src.join("libs/lib.jar")).unwrap();
    fs::hard_link(src.join("plugins/lib.jar"), src.join("libs/z.jar")).unwrap();
    let (bytes, summary) = pack_vec(&src, 6, 2);
    // The content travels once.
    assert_eq!(summary.bytes, 300 << 10);
    assert!(bytes.len() < 2 * (300 << 10), "content sent more than once");
    let archive_path = tmp.path().join("a.tar.gz");
    fs::write(&archive_path, &bytes).unwrap();
    let dest = tmp.path().join("go");
    fs::create_dir(&dest).unwrap();
    let out = run(Command::new(reader).arg(&archive_path).arg(&dest));
    assert_eq!(out.trim(), "5");
    assert_same_tree(&src, &dest);
    let md = fs::metadata(dest.join("libs/z.jar")).unwrap();
    assert_eq!(md.nlink(), 3);
    assert_eq!(
        md.ino(),
        fs::metadata(dest.join("libs/lib.jar")).unwrap().ino()
    );
}

/// The packer's special blocks: random data stored, long zero runs as
/// distance-258 copies, and blocks mixing both with compressible text.
#[test]
fn go_extracts_stored_zero_and_mixed_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("random.jar"), noise(5 << 20, 11)).unwrap();
    fs::write(src.join("zeros.dat"), vec![0u8; 6 << 20]).unwrap();
    let mut mixed = Vec::new();
    for i in 0..48u64 {
        match i % 3 {
            0 => mixed.extend_from_slice(&noise(64 << 10, i + 1)),
            1 => mixed.extend(std::iter::repeat_n(0u8, 96 << 10)),
            _ => {
                for line in 0..2000 {
                    mixed.extend_from_slice(format!("[{i}:{line}] player joined\n").as_bytes());
                }
            }
        }
    }
    fs::write(src.join("region.mca"), &mixed).unwrap();
    for (level, threads) in [(1, 2), (6, 1)] {
        go_reads(&src, level, threads);
    }
}

/// A whole transfer from a ferry source to a receiver written like Wings'
/// (`read_tgz serve`: Go's HTTP server, `mime/multipart`, SHA-256 of the
/// archive part checked against the checksum part, ferry's configuration
/// part skipped as an unknown part): the chunked multipart body is read by
/// the reference stack, and the tree arrives whole.
#[test]
fn a_go_receiver_like_wings_accepts_a_ferry_transfer() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(reader) = go_reader() else { return };
    const SERVER: &str = "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7";
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src").join("volumes").join(SERVER);
    make_tree(&src);
    let dest = tmp.path().join("go-dest");
    fs::create_dir(&dest).unwrap();
    let mut go = Command::new(reader)
        .arg("serve")
        .arg(&dest)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(go.stdout.take().unwrap()).lines();
    let port = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("port ").map(str::to_string))
        .expect("the receiver says its port");

    let source = node::TestNode::start_with(node::NodeOptions {
        root: Some(tmp.path().join("src")),
        ..Default::default()
    });
    let (code, body) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(serde_json::json!({
            "url": format!("http://127.0.0.1:{port}/api/transfers"),
            "token": "Bearer not-checked-by-this-receiver",
            "server": {"uuid": SERVER, "start_on_completion": false},
        })),
    );
    assert_eq!(code, 202, "{body}");
    let record = source.wait_transfer_end(SERVER, std::time::Duration::from_secs(60));
    let said = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = go.wait();
    assert_eq!(record["status"], "completed", "{record}\nreceiver: {said}");
    let mut words = said.split_whitespace();
    assert_eq!(words.next(), Some("received"), "{said}");
    assert_eq!(
        words.next(),
        Some(snapshot(&src).len().to_string().as_str()),
        "{said}"
    );
    assert_eq!(words.next().map(str::len), Some(64), "{said}");
    assert_same_tree(&src, &dest);
}

/// The other direction: a source shaped like Wings (Go's `archive/tar`
/// headers from file info, `compress/gzip`, `mime/multipart` over a
/// chunked POST, no configuration part) sends to a ferry destination that
/// a panel drives: verified, installed with the panel's configuration,
/// success reported, the tree identical.
#[test]
fn a_ferry_destination_accepts_a_transfer_sent_like_wings() {
    let Some(sender) = go_reader() else { return };
    const SERVER: &str = "4f5a6b7c-8d9e-4fa0-b1c2-d3e4f5a6b7c8";
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let panel = fake_panel::FakePanel::start("testtokenid", node::TOKEN);
    let dest = node::TestNode::start_with(node::NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    panel.add_server(
        SERVER,
        serde_json::json!({"uuid": SERVER, "meta": {"name": "From Wings"},
                           "build": {"disk_space": 0}, "container": {"image": "x"}}),
    );
    panel.set_transferring(SERVER, true);
    let jwt = panel.mint_transfer_jwt(&dest.token, SERVER);
    let out = run(Command::new(sender)
        .arg("send")
        .arg(dest.url("/api/transfers"))
        .arg(format!("Bearer {jwt}"))
        .arg(&src));
    assert!(out.starts_with("200 "), "{out}\n{}", dest.log_text());
    assert_same_tree(&src, &dest.server_dir(SERVER));
    let success = format!("/api/remote/servers/{SERVER}/transfer/success");
    assert!(
        panel.wait_until(std::time::Duration::from_secs(10), |calls| calls
            .iter()
            .any(|c| c.path == success))
    );
    let (code, view) = dest.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200, "{view}");
    assert_eq!(
        view["configuration"]["settings"]["meta"]["name"],
        "From Wings"
    );
}
