//! Helpers shared by the `adversarial_*` tests: raw `POST /api/transfers`
//! requests, hand-built multipart bodies (hostile shapes included), a tiny
//! real archive, and the "nothing was left behind" check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::node::TestNode;

pub const BOUNDARY: &str = "ferryadversarialboundary";

/// A random version-4 UUID.
pub use ferry::transfer::manager::new_uuid;

/// What the node answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with a Content-Length body over a fresh connection
/// (`Connection: close`) and reads the whole answer. A write error after
/// the node answered early (and closed) is ignored: the answer counts.
pub fn send(
    node: &TestNode,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = {
        let mut w = s.try_clone().unwrap();
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        std::thread::spawn(move || {
            let _ = w.write_all(&all);
        })
    };
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    parse_answer(&raw)
}

/// Parses `HTTP/1.1 <status> …` with a Content-Length or chunked JSON body.
pub fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `POST /api/transfers` with `Authorization: <auth>` (verbatim) and a body.
pub fn post_transfer(
    node: &TestNode,
    auth: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Answer {
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    send(node, "POST", "/api/transfers", &headers, body)
}

pub fn form_data() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// One part, framed for [`BOUNDARY`]: delimiter, headers, blank line, data,
/// and the CRLF that belongs to the next delimiter.
pub fn part(name: &str, filename: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut disposition = format!("form-data; name=\"{name}\"");
    if let Some(f) = filename {
        disposition.push_str(&format!("; filename=\"{f}\""));
    }
    let mut out =
        format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

pub fn closing() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A well-formed transfer body: the archive part and its checksum.
pub fn transfer_body(archive: &[u8]) -> Vec<u8> {
    let mut body = part("archive", Some("archive.tar.gz"), archive);
    body.extend(part("checksum", None, sha256_hex(archive).as_bytes()));
    body.extend(closing());
    body
}

/// A tiny real server archive made by `tar czf`: `server.properties` and
/// `world/level.dat`.
pub fn tiny_archive() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("world")).unwrap();
    std::fs::write(src.join("server.properties"), "motd=adversarial\n").unwrap();
    std::fs::write(src.join("world/level.dat"), b"level").unwrap();
    let out = dir.path().join("a.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("server.properties")
        .arg("world")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// Nothing of `uuid` is on the node: no data directory, an empty staging
/// area, and the server is not registered.
pub fn assert_nothing_installed(node: &TestNode, uuid: &str) {
    assert!(
        !node.server_dir(uuid).exists(),
        "{uuid}: data directory left behind"
    );
    let staging = node.data.join(".ferry-staging");
    if staging.exists() {
        let left: Vec<_> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "staging not empty: {left:?}");
    }
    let (code, body) = node.get(&format!("/api/servers/{uuid}"));
    assert_eq!(code, 404, "{uuid} is registered: {body}");
}

/// Waits until nothing is under `.ferry-staging` (a failing transfer
/// removes its staging after answering, at the latest when it ends).
pub fn wait_staging_empty(node: &TestNode, timeout: Duration) {
    let staging = node.data.join(".ferry-staging");
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let empty = !staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none();
        if empty {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staging not emptied in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory holds the tiny archive's files.
pub fn assert_tiny_installed(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("server.properties")).unwrap(),
        "motd=adversarial\n"
    );
    assert_eq!(
        std::fs::read(dir.join("world/level.dat")).unwrap(),
        b"level"
    );
}
