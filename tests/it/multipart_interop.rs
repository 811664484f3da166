//! Interop of `ferry::multipart` with other implementations: the body ferry
//! sends must parse with Python's strict `email` parser, and a body laid out
//! exactly as Wings (Go's `mime/multipart`) sends it must parse with ours.

use std::io::{Read, Write};
use std::process::Command;

use ferry::multipart::{
    boundary_from_content_type, random_boundary, MultipartReader, MultipartWriter, PartInfo,
};
use sha2::{Digest, Sha256};

/// Deterministic bytes that include CR, LF and dashes, like real gzip data.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 11 {
                0 => b'\r',
                1 => b'\n',
                2 => b'-',
                _ => (seed >> 24) as u8,
            }
        })
        .collect()
}

fn python_parse(body: &[u8], boundary: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body.bin");
    std::fs::write(&path, body).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/multipart_check.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(&path)
        .arg(boundary)
        .output()
        .expect("python3 is needed for the multipart interop test");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes the transfer body the way the source does.
fn ferry_body(boundary: &str, config: &[u8], archive: &[u8]) -> Vec<u8> {
    let mut w = MultipartWriter::new(Vec::new(), boundary);
    w.begin_part(&PartInfo {
        name: "configuration".into(),
        filename: None,
        content_type: Some("application/json".into()),
    })
    .unwrap();
    w.write_all(config).unwrap();
    w.begin_part(&PartInfo {
        name: "archive".into(),
        filename: Some("archive.tar.gz".into()),
        content_type: Some("application/octet-stream".into()),
    })
    .unwrap();
    // Several writes, as the streaming pipeline does.
    for chunk in archive.chunks(8191) {
        w.write_all(chunk).unwrap();
    }
    w.begin_part(&PartInfo {
        name: "checksum".into(),
        filename: None,
        content_type: None,
    })
    .unwrap();
    w.write_all(sha256_hex(archive).as_bytes()).unwrap();
    w.finish().unwrap()
}

#[test]
fn ferry_body_parses_with_python_email() {
    let boundary = random_boundary();
    let config = br#"{"uuid":"0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e","build":{"disk_space":1024}}"#;
    let archive = pseudo_random(300_000, 42);
    let body = ferry_body(&boundary, config, &archive);

    let got = python_parse(&body, &boundary);
    assert_eq!(got["ok"], true, "{got}");
    let checksum = sha256_hex(&archive);
    let expected = serde_json::json!([
        {"name": "configuration", "filename": null, "content_type": "application/json",
         "length": config.len(), "sha256": sha256_hex(config)},
        {"name": "archive", "filename": "archive.tar.gz", "content_type": "application/octet-stream",
         "length": archive.len(), "sha256": checksum},
        {"name": "checksum", "filename": null, "content_type": null,
         "length": 64, "sha256": sha256_hex(checksum.as_bytes())},
    ]);
    assert_eq!(got["parts"], expected);
}

#[test]
fn python_check_is_strict_about_truncation() {
    // The control: the same body cut before its closing boundary is refused
    // by the Python side too, so the test above is not vacuous.
    let boundary = random_boundary();
    let body = ferry_body(&boundary, b"{}", &pseudo_random(1000, 7));
    let got = python_parse(&body[..body.len() - 10], &boundary);
    assert_eq!(got["ok"], false, "{got}");
}

/// A reader that hands out the body in uneven pieces, like a chunked
/// request body arriving from the network.
struct Uneven<'a>(&'a [u8], usize);

impl Read for Uneven<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.1 += 1;
        let n = [1, 4096, 37, 65536, 3][self.1 % 5]
            .min(out.len())
            .min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn wings_layout_parses_with_ferry() {
    // Go's mime/multipart writer: a 60-hex-char random boundary; the first
    // part starts with `--boundary`, later ones with CRLF; Content-Disposition
    // before Content-Type; CreateFormFile sends application/octet-stream,
    // CreateFormField no Content-Type; Close writes `CRLF--boundary--CRLF`.
    let boundary = hex::encode(pseudo_random(30, 99));
    assert_eq!(boundary.len(), 60);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let archive = pseudo_random(200_000, 5);
    let checksum = sha256_hex(&archive);

    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\n",
    );
    body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(&archive);
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"checksum\"\r\n\r\n");
    body.extend_from_slice(checksum.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let parsed_boundary = boundary_from_content_type(&content_type).unwrap();
    let mut reader = MultipartReader::new(Uneven(&body, 0), &parsed_boundary);

    let part = reader.next_part().unwrap().unwrap();
    assert_eq!(
        part,
        PartInfo {
            name: "archive".into(),
            filename: Some("archive.tar.gz".into()),
            content_type: Some("application/octet-stream".into()),
        }
    );
    let mut got_archive = Vec::new();
    reader.part_body().read_to_end(&mut got_archive).unwrap();
    assert_eq!(sha256_hex(&got_archive), checksum);
    assert_eq!(got_archive.len(), archive.len());

    let part = reader.next_part().unwrap().unwrap();
    assert_eq!(
        (part.name.as_str(), part.filename, part.content_type),
        ("checksum", None, None)
    );
    let mut got_checksum = String::new();
    reader
        .part_body()
        .read_to_string(&mut got_checksum)
        .unwrap();
    assert_eq!(got_checksum, checksum);

    assert!(reader.next_part().unwrap().is_none());

    // The Python parser agrees on this layout too.
    let got = python_parse(&body, &boundary);
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["parts"][0]["sha256"], checksum);
}
