//! Hostile multipart bodies on `POST /api/transfers` with valid tokens,
//! against a real node: each gets SPEC §4's status and message (the
//! destination's own messages where the table has no row), and afterwards
//! nothing of the server is on the node: no `<data>/<uuid>`, an empty
//! `.ferry-staging/`, not registered. Boundary-like bytes inside the data
//! are data, and 100 000 empty parts cost bounded time and memory.

use crate::support::adv;
use crate::support::fake_panel;
use crate::support::node;

use std::io::Write;
use std::time::{Duration, Instant};

use adv::{closing, new_uuid, part, post_transfer, sha256_hex, BOUNDARY};
use fake_panel::mint_transfer_jwt;
use node::TestNode;

const MISSING_PARTS: &str = "missing archive or checksum";

fn bearer(node: &TestNode, uuid: &str) -> String {
    format!("Bearer {}", mint_transfer_jwt(&node.token, uuid))
}

fn body(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn hostile_bodies_are_refused_and_leave_nothing() {
    let node = TestNode::start();
    let archive = adv::tiny_archive();
    let sum = sha256_hex(&archive);
    let archive_part = part("archive", Some("archive.tar.gz"), &archive);
    let checksum_part = part("checksum", None, sum.as_bytes());
    let mut cut_in_checksum = body(&[archive_part.clone(), checksum_part.clone()]);
    cut_in_checksum.truncate(cut_in_checksum.len() - 20);
    let mut cut_in_archive = archive_part.clone();
    cut_in_archive.truncate(archive_part.len() / 2);
    let big_headers = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"archive\"\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(9000)
    );

    let form = adv::form_data();
    let cases: Vec<(&str, String, Vec<u8>, u16, String)> = vec![
        (
            "duplicate archive parts",
            form.clone(),
            body(&[
                archive_part.clone(),
                archive_part.clone(),
                checksum_part.clone(),
                closing(),
            ]),
            400,
            "the archive was sent twice".into(),
        ),
        (
            "body ends inside the checksum part",
            form.clone(),
            cut_in_checksum,
            400,
            MISSING_PARTS.into(),
        ),
        (
            "body ends inside the archive part",
            form.clone(),
            cut_in_archive,
            400,
            MISSING_PARTS.into(),
        ),
        (
            "no closing boundary after both parts",
            form.clone(),
            body(&[archive_part.clone(), checksum_part.clone()]),
            400,
            MISSING_PARTS.into(),
        ),
        (
            "no checksum part",
            form.clone(),
            body(&[archive_part.clone(), closing()]),
            400,
            MISSING_PARTS.into(),
        ),
        (
            "empty body",
            form.clone(),
            Vec::new(),
            400,
            MISSING_PARTS.into(),
        ),
        (
            "checksum before archive",
            form.clone(),
            body(&[checksum_part.clone(), archive_part.clone(), closing()]),
            400,
            "archive must be sent before the checksum".into(),
        ),
        (
            "oversized checksum part",
            form.clone(),
            body(&[
                archive_part.clone(),
                part("checksum", None, "a".repeat(129).as_bytes()),
                closing(),
            ]),
            400,
            "the checksum part is larger than 128 bytes".into(),
        ),
        (
            "oversized part headers",
            form.clone(),
            [
                big_headers.as_bytes(),
                &archive,
                b"\r\n",
                &checksum_part,
                &closing(),
            ]
            .concat(),
            400,
            "malformed multipart body: part headers exceed 8192 bytes".into(),
        ),
        (
            "part without a name",
            form.clone(),
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
            )
            .into_bytes(),
            400,
            "malformed multipart body: part Content-Disposition without a name".into(),
        ),
        (
            "digest differs",
            form.clone(),
            body(&[
                archive_part.clone(),
                part("checksum", None, sha256_hex(b"other").as_bytes()),
                closing(),
            ]),
            400,
            "checksums don't match".into(),
        ),
        (
            "not multipart",
            "application/octet-stream".into(),
            archive_part.clone(),
            400,
            "invalid content type".into(),
        ),
        (
            "multipart/mixed",
            format!("multipart/mixed; boundary={BOUNDARY}"),
            Vec::new(),
            400,
            "invalid content type".into(),
        ),
        (
            "form-data without a boundary",
            "multipart/form-data".into(),
            Vec::new(),
            400,
            "invalid content type".into(),
        ),
        (
            "boundary over 70 characters",
            format!("multipart/form-data; boundary={}", "b".repeat(71)),
            Vec::new(),
            400,
            "invalid content type".into(),
        ),
    ];

    for (case, content_type, body, status, message) in &cases {
        let uuid = new_uuid();
        let a = post_transfer(&node, Some(&bearer(&node, &uuid)), content_type, body);
        assert_eq!(
            (a.status, a.error()),
            (*status, message.as_str()),
            "{case}: {:?}",
            a.body
        );
        adv::wait_staging_empty(&node, Duration::from_secs(10));
        adv::assert_nothing_installed(&node, &uuid);
        if content_type.starts_with("multipart/form-data; boundary=ferry") {
            // The transfer existed and ended failed with the same message.
            let (code, record) = node.get(&format!("/api/servers/{uuid}/transfer"));
            assert_eq!(code, 200, "{case}: no transfer record");
            assert_eq!(record["status"], "failed", "{case}: {record}");
            assert_eq!(record["error"], message.as_str(), "{case}");
        }
    }
    assert!(node.get("/api/servers").1.as_array().unwrap().is_empty());
}

#[test]
fn boundary_like_bytes_inside_the_data_are_data() {
    let node = TestNode::start();
    // Every near-miss of a delimiter: without the CRLF, followed by a
    // letter, by padding then a letter, by one dash, and cut short.
    let tricky = format!(
        "--{B}\r\nstart\r\n--{B}X\r\n--{B} \t z\r\n--{B}-x\r\n--{B}\n\r\n--{b}\r\n--\r\nend",
        B = BOUNDARY,
        b = &BOUNDARY[..BOUNDARY.len() - 3]
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tricky.txt"), &tricky).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("cf")
        .arg("-")
        .arg("-C")
        .arg(src.path())
        .arg("tricky.txt")
        .output()
        .unwrap();
    assert!(tar.status.success());
    // Stored (level 0) gzip keeps the file's bytes verbatim in the part.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar.stdout).unwrap();
    let archive = gz.finish().unwrap();
    let needle = format!("\r\n--{BOUNDARY}X");
    assert!(archive
        .windows(needle.len())
        .any(|w| w == needle.as_bytes()));

    let uuid = new_uuid();
    let a = post_transfer(
        &node,
        Some(&bearer(&node, &uuid)),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    let got = std::fs::read_to_string(node.server_dir(&uuid).join("tricky.txt")).unwrap();
    assert_eq!(got, tricky);
}

#[test]
fn a_hundred_thousand_empty_parts_cost_bounded_time_and_memory() {
    let node = TestNode::start();
    let before = node.status_kib("VmHWM");
    let mut body = Vec::with_capacity(100_000 * 70);
    for _ in 0..100_000 {
        body.extend(part("x", None, b""));
    }
    body.extend(closing());
    let uuid = new_uuid();
    let started = Instant::now();
    let a = post_transfer(&node, Some(&bearer(&node, &uuid)), &adv::form_data(), &body);
    let took = started.elapsed();
    assert_eq!((a.status, a.error()), (400, MISSING_PARTS), "{:?}", a.body);
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    eprintln!(
        "100k parts ({} bytes): {took:?}, peak RSS growth {growth} KiB",
        body.len()
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(growth < 32 * 1024, "peak RSS grew {growth} KiB");
    adv::wait_staging_empty(&node, Duration::from_secs(10));
    adv::assert_nothing_installed(&node, &uuid);
    // Still serving.
    assert_eq!(node.get("/api/system").0, 200);
}
