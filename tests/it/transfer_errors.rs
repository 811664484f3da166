//! The destination's error table (SPEC §4), row by row, against a real
//! standalone node: each bad upload gets its status and message, and leaves
//! nothing behind (no server directory, no staging, not registered). Also
//! the upload exactly as the docs show it with `curl -F`, and the panel's
//! delete arriving while the source waits for the destination's answer.

use crate::support::fake_panel;
use crate::support::node;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::json;
use sha2::{Digest, Sha256};

const SERVER: &str = "6c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const BOUNDARY: &str = "ferrytestboundary7d1c9e";

fn jwt() -> String {
    fake_panel::mint_transfer_jwt(TOKEN, SERVER)
}

/// A gzip tar of a small server tree, made by GNU tar.
fn archive_of_tree() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    make_server_tree(dir.path());
    let out = Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(dir.path())
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A multipart body from (name, filename, bytes) parts.
fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    crate::support::multipart_body(BOUNDARY, parts)
}

fn post(
    node: &TestNode,
    auth: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = ureq::http::Request::builder()
        .method("POST")
        .uri(node.url("/api/transfers"))
        .header("Authorization", auth)
        .header("Content-Type", content_type);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut resp = TestNode::agent().run(req.body(body).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

/// A fresh token and a multipart body of `parts`.
fn send_parts(node: &TestNode, parts: &[(&str, Option<&str>, &[u8])]) -> (u16, serde_json::Value) {
    post(
        node,
        &format!("Bearer {}", jwt()),
        &multipart(),
        body(parts),
        &[],
    )
}

/// A fresh token and a well-formed body: archive, then its checksum.
fn upload(node: &TestNode, archive: &[u8]) -> (u16, serde_json::Value) {
    let sum = sha256_hex(archive);
    send_parts(
        node,
        &[
            ("archive", Some("archive.tar.gz"), archive),
            ("checksum", None, sum.as_bytes()),
        ],
    )
}

fn multipart() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn assert_clean(node: &TestNode) {
    assert!(
        !node.server_dir(SERVER).exists(),
        "server directory left behind"
    );
    let staging = node.data.join(".ferry-staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    assert_eq!(node.get(&format!("/api/servers/{SERVER}")).0, 404);
}

fn expect(node: &TestNode, result: (u16, serde_json::Value), status: u16, message: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    let error = result.1["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(message),
        "got `{error}`, want `{message}`"
    );
    assert_clean(node);
}

#[test]
fn a_good_upload_installs_the_tree() {
    let node = TestNode::start();
    let archive = archive_of_tree();
    let r = upload(&node, &archive);
    assert_eq!(r.0, 200, "{}", r.1);
    let expected = tempfile::tempdir().unwrap();
    make_server_tree(expected.path());
    assert_eq!(
        tree_listing(&node.server_dir(SERVER)),
        tree_listing(expected.path())
    );
    let (_, record) = node.get(&format!("/api/servers/{SERVER}/transfer"));
    assert_eq!(
        (record["direction"].as_str(), record["status"].as_str()),
        (Some("incoming"), Some("completed"))
    );
}

#[test]
fn every_error_row_of_the_table() {
    let node = TestNode::start();
    let good = archive_of_tree();
    let good_sum = sha256_hex(&good);
    let bearer = |t: &str| format!("Bearer {t}");

    // Authorization.
    expect(
        &node,
        post(&node, "", &multipart(), Vec::new(), &[]),
        401,
        "The required authorization heads were not present in the request.",
    );
    expect(
        &node,
        post(&node, "Basic abc", &multipart(), Vec::new(), &[]),
        401,
        "The required authorization heads were not present in the request.",
    );
    let wrong_key = fake_panel::mint_transfer_jwt("some-other-node-token", SERVER);
    expect(
        &node,
        post(&node, &bearer(&wrong_key), &multipart(), Vec::new(), &[]),
        401,
        "Invalid or expired transfer token.",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed with the node's token, refused for their claims.
    let invalid = "Invalid or expired transfer token.";
    for (claims, status, message) in [
        (
            json!({"sub": SERVER, "exp": now - 3600, "iat": now - 7200}),
            401,
            invalid,
        ),
        (json!({"sub": SERVER}), 401, invalid),
        (json!({"sub": "../../etc", "exp": now + 600}), 401, invalid),
        (
            json!({"sub": SERVER, "exp": now + 600, "scope": "backup websocket"}),
            403,
            "Forbidden.",
        ),
    ] {
        let token = fake_panel::sign_hs256(
            TOKEN.as_bytes(),
            &json!({"alg": "HS256", "typ": "JWT"}),
            &claims,
        );
        expect(
            &node,
            post(&node, &bearer(&token), &multipart(), Vec::new(), &[]),
            status,
            message,
        );
    }

    // Body shape.
    expect(
        &node,
        post(
            &node,
            &bearer(&jwt()),
            "application/json",
            b"{}".to_vec(),
            &[],
        ),
        400,
        "invalid content type",
    );
    expect(
        &node,
        send_parts(
            &node,
            &[
                ("checksum", None, good_sum.as_bytes()),
                ("archive", Some("archive.tar.gz"), &good),
            ],
        ),
        400,
        "archive must be sent before the checksum",
    );
    expect(
        &node,
        send_parts(&node, &[("archive", Some("archive.tar.gz"), &good)]),
        400,
        "missing archive or checksum",
    );
    let mut truncated = body(&[
        ("archive", Some("archive.tar.gz"), &good),
        ("checksum", None, good_sum.as_bytes()),
    ]);
    truncated.truncate(good.len() / 2);
    expect(
        &node,
        post(&node, &bearer(&jwt()), &multipart(), truncated, &[]),
        400,
        "missing archive or checksum",
    );
    expect(
        &node,
        send_parts(
            &node,
            &[
                ("archive", Some("archive.tar.gz"), &good),
                ("checksum", None, sha256_hex(b"other").as_bytes()),
            ],
        ),
        400,
        "checksums don't match",
    );

    // Unsafe entries.
    for (label, script) in [
        ("dotdot", "t.addfile(ti('../escape.txt'), io.BytesIO(b'x'))"),
        ("absolute", "t.addfile(ti('/tmp/ferry-absolute.txt'), io.BytesIO(b'x'))"),
        ("through a link", "l=tarfile.TarInfo('lnk'); l.type=tarfile.SYMTYPE; l.linkname='/tmp'; t.addfile(l); t.addfile(ti('lnk/ferry-through.txt'), io.BytesIO(b'x'))"),
        ("hard link out", "l=tarfile.TarInfo('hard'); l.type=tarfile.LNKTYPE; l.linkname='/etc/passwd'; t.addfile(l)"),
        ("device", "d=tarfile.TarInfo('dev'); d.type=tarfile.CHRTYPE; d.devmajor=1; d.devminor=3; t.addfile(d)"),
    ] {
        let archive = python_archive(script);
        let r = upload(&node, &archive);
        assert_eq!(r.0, 400, "{label}: {}", r.1);
        assert!(r.1["error"].as_str().unwrap().starts_with("unsafe path in archive: "), "{label}: {}", r.1);
        assert_clean(&node);
    }
    assert!(!std::path::Path::new("/tmp/ferry-absolute.txt").exists());
    assert!(!std::path::Path::new("/tmp/ferry-through.txt").exists());

    // Space: announced too big for the filesystem, refused before a byte is written.
    expect(
        &node,
        post(
            &node,
            &bearer(&jwt()),
            &multipart(),
            body(&[
                ("archive", Some("archive.tar.gz"), &good),
                ("checksum", None, good_sum.as_bytes()),
            ]),
            &[("X-Ferry-Bytes-Total", "999999999999999999")],
        ),
        400,
        "There is not enough disk space available to perform that action.",
    );
    // Space: the server's disk_space (from the configuration part) against a gzip bomb.
    let bomb = gzip_bomb();
    let bomb_sum = sha256_hex(&bomb);
    let config = json!({"settings": {"uuid": SERVER, "build": {"disk_space": 1}}}).to_string();
    expect(
        &node,
        send_parts(
            &node,
            &[
                ("configuration", None, config.as_bytes()),
                ("archive", Some("archive.tar.gz"), &bomb),
                ("checksum", None, bomb_sum.as_bytes()),
            ],
        ),
        400,
        "There is not enough disk space available to perform that action.",
    );

    // Corrupt gzip: 500 naming the step.
    let mut corrupt = good.clone();
    for b in corrupt.iter_mut().skip(20).take(200) {
        *b = !*b;
    }
    let r = upload(&node, &corrupt);
    assert_eq!(r.0, 500, "{}", r.1);
    assert!(
        r.1["error"].as_str().unwrap().contains("extract"),
        "{}",
        r.1
    );
    assert_clean(&node);

    // Exists: a server already here.
    let ok = upload(&node, &good);
    assert_eq!(ok.0, 200, "{}", ok.1);
    let again = upload(&node, &good);
    assert_eq!(
        (again.0, again.1["error"].as_str()),
        (
            409,
            Some("A server with this identifier already exists on this instance.")
        )
    );
    assert!(
        node.server_dir(SERVER).exists(),
        "the existing server must stay"
    );
}

#[test]
fn replayed_token_and_concurrent_upload_are_refused() {
    let node = TestNode::start();
    // An upload that stays open: its transfer is in progress.
    let token = jwt();
    let mut open = std::net::TcpStream::connect(node.addr).unwrap();
    write!(
        open,
        "POST /api/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        multipart()
    )
    .unwrap();
    let start = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\n\r\n");
    write!(open, "{:x}\r\n{start}\r\n", start.len()).unwrap();
    open.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get(&format!("/api/servers/{SERVER}/transfer")).0 != 200 {
        assert!(Instant::now() < deadline, "the open upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = post(
        &node,
        &format!("Bearer {}", jwt()),
        &multipart(),
        Vec::new(),
        &[],
    );
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (
            409,
            Some("A transfer is already in progress for this server.")
        )
    );
    // Cancel the open one from the node side: aborted, nothing left.
    let (code, _) = node.request("DELETE", &format!("/api/transfers/{SERVER}"), None);
    assert_eq!(code, 202);
    let record = node.wait_transfer_end(SERVER, Duration::from_secs(5));
    assert_eq!(record["status"], "cancelled");
    drop(open);
    assert_clean(&node);
    // The cancelled transfer's token cannot be used again.
    let good = archive_of_tree();
    let sum = sha256_hex(&good);
    let r = post(
        &node,
        &format!("Bearer {token}"),
        &multipart(),
        body(&[
            ("archive", Some("archive.tar.gz"), &good),
            ("checksum", None, sum.as_bytes()),
        ]),
        &[],
    );
    assert_eq!(
        (r.0, r.1["error"].as_str()),
        (401, Some("Invalid or expired transfer token."))
    );
    // The log is read from the node's stderr by another thread: wait for it.
    assert!(node.wait_log("replay", Duration::from_secs(5)));
}

#[test]
fn curl_form_upload_as_in_the_docs() {
    let node = TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive.tar.gz");
    let archive = archive_of_tree();
    std::fs::write(&file, &archive).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", jwt()))
        .arg("-F")
        .arg(format!("archive=@{}", file.display()))
        .arg("-F")
        .arg(format!("checksum={}", sha256_hex(&archive)))
        .arg(node.url("/api/transfers"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim_end().ends_with("200"),
        "{text}\n{}",
        node.log_text()
    );
    assert!(node.server_dir(SERVER).join("server.properties").exists());
}

#[test]
fn panel_delete_while_the_source_waits_for_the_destination() {
    let panel = fake_panel::FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    panel.add_server(SERVER, json!({"uuid": SERVER}));
    let root = tempfile::tempdir().unwrap().keep();
    make_server_tree(&root.join("volumes").join(SERVER));
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        ..Default::default()
    });
    let expected = tree_listing(&source.server_dir(SERVER));
    // The panel answers slowly, so the destination's success report (and
    // with it the 200 to the source) is late; the panel deletes on the
    // source meanwhile, as the real one does right after the report.
    panel.set_transferring(SERVER, true);
    let token = panel.mint_transfer_jwt(&dest.token, SERVER);
    let (code, _) = source.request(
        "POST",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({"url": dest.url("/api/transfers"), "token": format!("Bearer {token}")})),
    );
    assert_eq!(code, 202);
    panel.set_delay(Duration::from_millis(1500));
    assert!(
        source.wait_log(
            "Finished streaming archive to destination.",
            Duration::from_secs(20)
        ),
        "{}",
        source.log_text()
    );
    let (code, _) = source.request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "completed", "{record}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.server_dir(SERVER).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !source.server_dir(SERVER).exists(),
        "source data must go once the transfer ended"
    );
    assert_eq!(tree_listing(&dest.server_dir(SERVER)), expected);
    panel.set_delay(Duration::ZERO);
    assert_eq!(
        panel.transfer_reports(SERVER),
        vec![("success".to_string(), 204)]
    );
}

/// A gzip tar built by Python's tarfile with `script` run on `t` (the
/// archive); `ti(name)` makes a 1-byte regular file entry.
fn python_archive(script: &str) -> Vec<u8> {
    let program = format!(
        "import io,sys,tarfile\nb=io.BytesIO()\nt=tarfile.open(fileobj=b,mode='w:gz')\ndef ti(n):\n    i=tarfile.TarInfo(n); i.size=1; return i\n{script}\nt.close()\nsys.stdout.buffer.write(b.getvalue())\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// 64 MiB of one repeated non-zero byte in one file, a few KiB compressed
/// (zeros would be written as holes and cost no space: docs/decisions.md).
fn gzip_bomb() -> Vec<u8> {
    python_archive("z=tarfile.TarInfo('ones.bin'); z.size=64*1024*1024; t.addfile(z, io.BytesIO(b'\\x01'*z.size))")
}

#[test]
fn traversal_variants_and_look_alikes() {
    let node = TestNode::start();
    for name in ["./../x", "a/./../../x", "a/b/../../../x", "..", "../"] {
        let archive = python_archive(&format!("t.addfile(ti({name:?}), io.BytesIO(b'x'))"));
        let r = upload(&node, &archive);
        assert_eq!(r.0, 400, "{name}: {}", r.1);
        assert!(
            r.1["error"]
                .as_str()
                .unwrap()
                .starts_with("unsafe path in archive: "),
            "{name}: {}",
            r.1
        );
        assert_clean(&node);
    }
    // Unicode look-alikes of dots are ordinary names: they land inside.
    let archive = python_archive("t.addfile(ti('\\u2024\\u2024/x'), io.BytesIO(b'x')); t.addfile(ti('\\uff0e\\uff0e'), io.BytesIO(b'y'))");
    let r = upload(&node, &archive);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(
        std::fs::read(node.server_dir(SERVER).join("\u{2024}\u{2024}/x")).unwrap(),
        b"x"
    );
    assert_eq!(
        std::fs::read(node.server_dir(SERVER).join("\u{ff0e}\u{ff0e}")).unwrap(),
        b"y"
    );
}

#[test]
fn a_hundred_thousand_empty_entries_cost_bounded_time_and_memory() {
    const ENTRIES: u32 = 100_000;
    use flate2::write::GzEncoder;
    let node = TestNode::start();
    let mut header = tar::Header::new_ustar();
    header.set_path("same").unwrap();
    header.set_size(0);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..ENTRIES {
        gz.write_all(header.as_bytes()).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let archive = gz.finish().unwrap();
    let before = node.status_kib("VmHWM");
    let started = Instant::now();
    let r = upload(&node, &archive);
    assert_eq!(r.0, 200, "{}", r.1);
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    eprintln!(
        "{ENTRIES} entries ({} KiB gzip) in {:?}, peak RSS growth {growth} KiB",
        archive.len() / 1024,
        started.elapsed()
    );
    // Linear in entries (about 90 µs each in a debug build), never more memory.
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(growth < 32 * 1024, "peak RSS grew by {growth} KiB");
}
