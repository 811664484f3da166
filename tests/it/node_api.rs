//! The node foundation through the real binary on a loopback port: auth
//! outcomes and messages, the error envelope, body validation, HTTP abuse
//! the daemon must survive, server routes, config errors and SIGTERM.

use crate::support::adv;
use crate::support::fake_panel;
use crate::support::node;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use node::{NodeOptions, TestNode};
use serde_json::json;

const SERVER: &str = "3f9a6c1e-8b2d-4e7f-9a0b-1c2d3e4f5a6b";
const MISSING: &str = "The required authorization heads were not present in the request.";
const FORBIDDEN: &str = "You are not authorized to access this endpoint.";
const NOT_FOUND: &str = "The requested resource does not exist on this instance.";

/// A standalone node holding one adopted server.
fn node_with_server() -> TestNode {
    let tmp = tempfile::tempdir().unwrap().keep();
    let data = tmp.join("volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("server.properties"), "motd=x\n").unwrap();
    TestNode::start_with(NodeOptions {
        root: Some(tmp),
        own_root: true,
        ..Default::default()
    })
}

#[test]
fn every_auth_outcome_has_wings_status_and_message() {
    let node = TestNode::start();
    for auth in [
        None,
        Some(""),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Bearer   "),
    ] {
        let (code, body) = node.request_auth("GET", "/api/system", None, auth);
        assert_eq!(code, 401, "{auth:?}");
        assert_eq!(body["error"], MISSING, "{auth:?}");
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    let (code, body) = node.request_auth("GET", "/api/system", None, Some("Bearer wrong-token"));
    assert_eq!((code, body["error"].as_str()), (403, Some(FORBIDDEN)));
    let (code, body) = node.get("/api/system");
    assert_eq!(code, 200);
    for key in [
        "architecture",
        "cpu_count",
        "kernel_version",
        "os",
        "version",
    ] {
        assert!(body.get(key).is_some(), "{key} missing in {body}");
    }
    // The 401 carries the challenge header.
    let raw = node.raw(
        b"GET /api/system HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{raw}"
    );
    // The token never reaches the log.
    assert!(!node.log_text().contains(node::TOKEN));
}

#[test]
fn unknown_routes_servers_and_methods() {
    let node = node_with_server();
    let (code, body) = node.get("/api/nothing-here");
    assert_eq!((code, body["error"].as_str()), (404, Some(NOT_FOUND)));
    let (code, body) = node.get("/api/servers/00000000-0000-4000-8000-000000000000");
    assert_eq!((code, body["error"].as_str()), (404, Some(NOT_FOUND)));
    let (code, _) = node.request("PUT", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 405);
    // Unknown routes answer 404 even without a token (nothing to protect).
    let (code, _) = node.request_auth("GET", "/nope", None, None);
    assert_eq!(code, 404);
}

#[test]
fn server_routes_list_view_power_and_validation() {
    let node = node_with_server();
    let (code, list) = node.get("/api/servers");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (code, view) = node.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200);
    assert_eq!(view["uuid"], SERVER);
    assert_eq!(view["state"], "offline");
    assert_eq!(view["is_transferring"], false);
    assert_eq!(view["is_suspended"], false);
    assert!(view["transfer"].is_null());
    assert!(view["configuration"].is_object());

    let path = format!("/api/servers/{SERVER}/transfer");
    let (code, body) = node.request("POST", &path, Some(json!({})));
    assert_eq!(code, 400);
    let fields: Vec<&str> = body["validation_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["url", "token"]);
    let (code, body) = node.request(
        "POST",
        &path,
        Some(json!({"url": "ftp://x", "token": "Bearer y"})),
    );
    assert_eq!(
        (code, body["validation_errors"][0]["field"].as_str()),
        (400, Some("url"))
    );
    // Not JSON at all.
    let raw = node.raw(
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{nope", node::TOKEN).as_bytes(),
        Duration::from_secs(5),
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("validation_errors"), "{raw}");

    let power = format!("/api/servers/{SERVER}/power");
    let (code, body) = node.request("POST", &power, Some(json!({"action": "dance"})));
    assert_eq!(
        (code, body["validation_errors"][0]["field"].as_str()),
        (400, Some("action"))
    );
    let (code, _) = node.request("POST", &power, Some(json!({"action": "start"})));
    assert_eq!(code, 202);
    // Nothing to cancel.
    let (code, body) = node.request("DELETE", &path, None);
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("Server is not currently being transferred."))
    );
    let (code, _) = node.get(&path);
    assert_eq!(code, 404);
}

#[test]
fn delete_removes_data_without_following_links() {
    let node = node_with_server();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious.txt"), "keep me").unwrap();
    let dir = node.server_dir(SERVER);
    std::os::unix::fs::symlink(outside.path(), dir.join("escape")).unwrap();
    std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
    std::fs::write(dir.join("a/b/c/file"), "x").unwrap();
    let (code, _) = node.request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    assert_eq!(node.get(&format!("/api/servers/{SERVER}")).0, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists(), "data directory left behind");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(!node
        .root
        .join("root/ferry/servers")
        .join(format!("{SERVER}.json"))
        .exists());
}

/// A deleted server's directory is removed in the background (held 3 s
/// here by a failpoint) from where it was moved out of place. The same
/// server arriving again meanwhile (moved away and straight back) is a new
/// copy the delete must not touch: once the old removal ends, the new copy
/// is still there and registered. (The background thread once ran the
/// whole removal again by uuid, taking the new copy and its registration.)
#[test]
fn a_server_that_arrives_again_while_its_old_copy_is_removed_is_kept() {
    let tmp = tempfile::tempdir().unwrap().keep();
    let data = tmp.join("volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("old.txt"), "the copy being deleted\n").unwrap();
    let node = TestNode::start_with(NodeOptions {
        root: Some(tmp),
        own_root: true,
        env: vec![(
            "FERRY_FAILPOINT".into(),
            "delete-removing:delay=3000".into(),
        )],
        ..Default::default()
    });
    let (code, _) = node.request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    assert!(node.wait_log(
        "failpoint: delaying at delete-removing",
        Duration::from_secs(10)
    ));

    let archive = adv::tiny_archive();
    let auth = format!(
        "Bearer {}",
        fake_panel::mint_transfer_jwt(&node.token, SERVER)
    );
    let answer = adv::post_transfer(
        &node,
        Some(&auth),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(
        !node.log_text().contains("data directory removed"),
        "the old copy's removal ended before the new copy arrived: the test crossed nothing"
    );

    assert!(node.wait_log("data directory removed", Duration::from_secs(10)));
    // Anything late (a second removal) would show about now.
    std::thread::sleep(Duration::from_millis(300));
    adv::assert_tiny_installed(&node.server_dir(SERVER));
    assert!(!node.server_dir(SERVER).join("old.txt").exists());
    let (code, view) = node.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200, "the new copy is not registered: {view}");
    let staging = node.data.join(".ferry-staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the old copy left in staging: {left:?}");
}

#[test]
fn huge_content_length_with_a_bad_token_is_answered_and_survived() {
    let node = TestNode::start();
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/transfers/cancel HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 99999999999999999\r\n\r\nabc").unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    drop(s);
    assert_eq!(node.get("/api/system").0, 200);
    assert!(node.status_kib("VmHWM") < 64 * 1024);
}

#[test]
fn idle_connections_do_not_block_a_normal_request() {
    let node = TestNode::start();
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(node.addr).unwrap();
        s.write_all(b"GET /api/system HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(s);
    }
    let started = Instant::now();
    let (code, _) = node.get("/api/system");
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn eight_mib_header_line_is_431_with_flat_memory() {
    let node = TestNode::start();
    let before = node.status_kib("VmHWM");
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/system HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..128 {
        if s.write_all(&chunk).is_err() {
            break; // the node answered and closed early: fine
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    assert!(growth < 2048, "peak memory grew by {growth} KiB");
    assert_eq!(node.get("/api/system").0, 200);
}

#[test]
fn pipelined_keep_alive_requests_are_answered_in_order() {
    let node = TestNode::start();
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", node::TOKEN);
    let req = format!(
        "GET /api/system HTTP/1.1\r\nHost: x\r\n{auth}\r\nGET /nope HTTP/1.1\r\nHost: x\r\n{auth}\r\nGET /api/servers HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, vec!["200", "404", "200"], "{out}");
}

#[test]
fn smuggling_shapes_are_refused() {
    let node = TestNode::start();
    let cl_te = "POST /api/transfers/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(node
        .raw(cl_te.as_bytes(), Duration::from_secs(5))
        .starts_with("HTTP/1.1 400"));
    let two_cl = "POST /api/transfers/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde";
    assert!(node
        .raw(two_cl.as_bytes(), Duration::from_secs(5))
        .starts_with("HTTP/1.1 400"));
    assert_eq!(node.get("/api/system").0, 200);
}

#[test]
fn idle_daemon_is_small_and_sigterm_exits_zero() {
    let mut node = TestNode::start();
    for _ in 0..20 {
        assert_eq!(node.get("/api/system").0, 200);
    }
    let peak = node.status_kib("VmHWM");
    // The release build is measured by `make bench`; debug builds are larger.
    assert!(peak < 16 * 1024, "idle peak RSS {peak} KiB");
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(node.wait_log("shutting down", Duration::from_secs(5)));
}

/// A node whose stderr nobody reads (a stalled journal, a full pipe) keeps
/// answering: log lines beyond its queue are dropped and counted, and the
/// count is logged once stderr moves again.
#[test]
fn a_stalled_stderr_does_not_block_requests() {
    // The request-log rate limit would keep the queue from filling.
    let node = TestNode::start_with(NodeOptions {
        env: vec![("FERRY_REQUEST_LOG_PER_SECOND".into(), "1000000".into())],
        ..Default::default()
    });
    node.pause_stderr(true);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = node.url("/api/system");
    let auth = format!("Bearer {}", node.token);
    // Each request logs a line: 6000 are more than the queue (4096) and
    // the pipe hold together.
    for i in 0..6000 {
        let resp = agent.get(&url).header("Authorization", &auth).call();
        assert!(
            resp.is_ok_and(|r| r.status() == 200),
            "request {i} did not complete"
        );
    }
    node.pause_stderr(false);
    assert!(node.wait_log("log line(s) dropped", Duration::from_secs(20)));
    assert_eq!(node.get("/api/system").0, 200);
}

/// Started with a low soft limit on open files, the node raises it to
/// the hard limit, as Go programs (Wings) do.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let node = TestNode::start_with(NodeOptions {
        open_files_soft_limit: Some(256),
        ..Default::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
    assert_ne!(numbers[0], "256", "{line}");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "token: long-enough-token\napi:\n  port: 99999\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.port"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.yml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // check-config is a pre-flight: the panel must accept the node's credentials.
    let panel = fake_panel::FakePanel::start("t", "long-enough-token");
    std::fs::write(
        &path,
        format!(
            "token: long-enough-token\nremote: {}\nuuid: u\ntoken_id: t\nsystem:\n  root_directory: {}\n  data: {}/volumes\n  environment: none\n",
            panel.url(),
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&panel.url()));
}

#[test]
fn panel_boot_sync_registers_the_panels_servers() {
    let panel = fake_panel::FakePanel::start("testtokenid", node::TOKEN);
    for i in 0..60 {
        let uuid = format!("00000000-0000-4000-8000-{i:012}");
        panel.add_server(&uuid, json!({"uuid": uuid, "build": {"disk_space": 100}}));
    }
    let node = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    let (code, list) = node.get("/api/servers");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 60);
    let pages: Vec<String> = panel
        .calls()
        .iter()
        .filter(|c| c.path == "/api/remote/servers")
        .map(|c| c.query_param("page").unwrap_or("").to_string())
        .collect();
    assert_eq!(pages[0], "0");
}

/// A body made of a head, `size` bytes of filler and a tail, produced on
/// the fly so the client holds no big buffer either.
struct Generated {
    head: Vec<u8>,
    size: u64,
    tail: Vec<u8>,
    pos: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let head = self.head.len() as u64;
        let total = head + self.size + self.tail.len() as u64;
        if self.pos >= total {
            return Ok(0);
        }
        let n = if self.pos < head {
            let src = &self.head[self.pos as usize..];
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        } else if self.pos < head + self.size {
            let n = ((head + self.size - self.pos) as usize).min(buf.len());
            // Filler that never contains the boundary's leading dashes.
            buf[..n].fill(b'z');
            n
        } else {
            let src = &self.tail[(self.pos - head - self.size) as usize..];
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_chunked_upload_streams_with_flat_memory() {
    use sha2::{Digest, Sha256};
    let node = TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hi").unwrap();
    let out = std::process::Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(dir.path())
        .arg(".")
        .output()
        .unwrap();
    let archive = out.stdout;
    let sum = hex::encode(Sha256::digest(&archive));
    let boundary = "bigbodyboundary0123456789";
    // A 240 MiB part the node does not know comes first (unknown parts are
    // drained up to 256 MiB, then refused): it must stream through the
    // HTTP body and the multipart reader without piling up.
    let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"padding\"\r\n\r\n")
        .into_bytes();
    let mut tail = format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\n\r\n").into_bytes();
    tail.extend_from_slice(&archive);
    tail.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\n{sum}\r\n--{boundary}--\r\n").as_bytes());
    let size: u64 = 240 << 20;
    let body = Generated {
        head,
        size,
        tail,
        pos: 0,
    };
    let before = node.status_kib("VmHWM");
    let started = Instant::now();
    let jwt = fake_panel::mint_transfer_jwt(node::TOKEN, SERVER);
    let mut resp = TestNode::agent()
        .post(&node.url("/api/transfers"))
        .header("Authorization", &format!("Bearer {jwt}"))
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .send(ureq::SendBody::from_owned_reader(body))
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    eprintln!(
        "240 MiB chunked upload in {:?}, peak RSS growth {growth} KiB",
        started.elapsed()
    );
    assert!(
        growth < 16 * 1024,
        "peak RSS grew by {growth} KiB for a 240 MiB body"
    );
    assert_eq!(
        std::fs::read_to_string(node.server_dir(SERVER).join("hello.txt")).unwrap(),
        "hi"
    );
}
