//! A node under abuse keeps answering its panel (issue 13): pipelining
//! clients that never read, unauthenticated websocket upgrades, ids that
//! are not UUIDs, HEAD on GET routes. Loopback only, bounded loops; every
//! attack asserts `GET /api/system` answers within a second meanwhile and
//! that memory and threads stay bounded.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::node::{self, NodeOptions, TestNode, TOKEN};
use ferry::jwt::mint_websocket_token;
use serde_json::{json, Value};
use tungstenite::Message;

const SERVER: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn node_with_server() -> (TestNode, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("volumes").join(SERVER)).unwrap();
    let node = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().to_path_buf()),
        ..Default::default()
    });
    (node, tmp)
}

/// A TCP connection to `to` from the loopback address `local`, with a
/// receive buffer of `rcvbuf` bytes set before connecting (so the window
/// the node sees is small).
fn connect_from(
    local: [u8; 4],
    rcvbuf: Option<libc::c_int>,
    to: std::net::SocketAddr,
) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream
    // below (closed on every error path by it).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(size) = rcvbuf {
        // SAFETY: a valid c_int option value and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let here = sin(local, 0);
    let there = sin(to.ip().octets(), to.port());
    // SAFETY: valid sockaddr_in values and their length.
    if unsafe { libc::bind(fd, (&here as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&there as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

fn threads(node: &TestNode) -> u64 {
    node::proc_status_kib(node.pid(), "Threads:")
}

/// `GET /api/system` as the panel asks it, with a 1 s budget: the time
/// it took, or a panic.
fn probe_system(node: &TestNode) -> Duration {
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .get(&node.url("/api/system"))
        .header("Authorization", &format!("Bearer {}", node.token))
        .call();
    let took = started.elapsed();
    match response {
        Ok(r) => assert_eq!(r.status().as_u16(), 200),
        Err(e) => panic!("GET /api/system failed during the attack after {took:?}: {e}"),
    }
    assert!(
        took < Duration::from_secs(1),
        "GET /api/system took {took:?}"
    );
    took
}

/// 40 connections pipeline thousands of requests with a small receive
/// buffer and never read. The node parks each unsent reply, reads no more
/// from that connection, and keeps every worker free for the panel; the
/// access log stays bounded.
#[test]
fn pipelining_clients_that_never_read_do_not_stop_the_api() {
    let (node, _tmp) = node_with_server();
    // After one request the worker pool is up: the baseline.
    probe_system(&node);
    let threads_before = threads(&node);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..40 {
        let addr = node.addr;
        let stop = std::sync::Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let Ok(mut s) = connect_from([127, 0, 0, 1], Some(4096), addr) else {
                return 0u64;
            };
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let burst = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
            let mut sent = 0u64;
            // Bounded: until the node stops taking bytes or 6 s pass.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.write(&burst) {
                    Ok(n) => sent += n as u64,
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            sent
        }));
    }
    let attack = Instant::now();
    let mut worst = Duration::ZERO;
    let mut max_rss = 0;
    let mut max_threads = 0;
    while attack.elapsed() < Duration::from_secs(6) {
        worst = worst.max(probe_system(&node));
        max_rss = max_rss.max(node.status_kib("VmRSS:"));
        max_threads = max_threads.max(threads(&node));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    eprintln!(
        "slow readers: {sent} bytes of requests sent; worst /api/system {worst:?}; \
         VmRSS max {max_rss} KiB; threads {threads_before} -> max {max_threads}"
    );
    assert!(max_rss < 200 * 1024, "VmRSS grew to {max_rss} KiB");
    assert!(
        max_threads <= threads_before + 4,
        "threads grew from {threads_before} to {max_threads}"
    );
    // The access log is rate-limited and says what it dropped.
    let log = node.log_text();
    let access = log.lines().filter(|l| l.contains("GET /nope 404")).count();
    assert!(access < 200 * 8, "{access} access lines in ~6 s");
    assert!(
        log.contains("request log lines suppressed"),
        "no suppression note"
    );
}

fn ws_url(node: &TestNode, server: &str) -> String {
    format!("ws://{}/api/servers/{server}/ws", node.addr)
}

/// Opens a websocket from `local` (a loopback address) without sending
/// anything after the handshake.
fn open_ws(node: &TestNode, local: [u8; 4]) -> Option<tungstenite::WebSocket<TcpStream>> {
    let stream = connect_from(local, None, node.addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tungstenite::client(ws_url(node, SERVER).as_str(), stream)
        .ok()
        .map(|(s, _)| s)
}

/// Reads until an event arrives; its name and first argument.
fn next_event(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<(String, String)> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                return Some((
                    v["event"].as_str()?.to_string(),
                    v["args"][0].as_str().unwrap_or("").to_string(),
                ));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn auth(ws: &mut tungstenite::WebSocket<TcpStream>, permissions: &[&str]) {
    let token = mint_websocket_token(
        TOKEN.as_bytes(),
        SERVER,
        permissions,
        Duration::from_secs(600),
    );
    ws.send(Message::text(
        json!({"event": "auth", "args": [token]}).to_string(),
    ))
    .unwrap();
}

/// 520 upgrades that never authenticate, from two addresses: they are
/// bounded apart from authenticated sessions, so a client with a valid
/// token from either address still gets in, and the node's threads stay
/// bounded (two per pending session at most).
#[test]
fn unauthenticated_websockets_cannot_lock_out_a_valid_client() {
    let (node, _tmp) = node_with_server();
    probe_system(&node);
    let threads_before = threads(&node);
    let mut held = Vec::new();
    let mut max_threads = 0;
    for i in 0..520 {
        let local = if i % 2 == 0 {
            [127, 0, 0, 1]
        } else {
            [127, 0, 0, 2]
        };
        if let Some(ws) = open_ws(&node, local) {
            held.push(ws);
        }
        if i % 50 == 0 {
            probe_system(&node);
            max_threads = max_threads.max(threads(&node));
        }
    }
    assert!(
        held.len() > 500,
        "only {} upgrades were answered",
        held.len()
    );
    for local in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut ws = open_ws(&node, local).expect("the valid client's upgrade");
        auth(&mut ws, &["websocket.connect"]);
        assert_eq!(
            next_event(&mut ws).map(|e| e.0).as_deref(),
            Some("auth success")
        );
    }
    probe_system(&node);
    max_threads = max_threads.max(threads(&node));
    eprintln!(
        "websocket slots: {} upgrades held; threads {threads_before} -> max {max_threads}",
        held.len()
    );
    // 128 pending sessions (two threads each) plus the two valid ones.
    assert!(
        max_threads <= threads_before + 2 * 130 + 8,
        "threads grew from {threads_before} to {max_threads}"
    );
}

/// SPEC §6, as Wings: a token without `websocket.connect` (or `*`) does
/// not open the event stream, whatever else it allows.
#[test]
fn a_token_without_websocket_connect_is_refused() {
    let (node, _tmp) = node_with_server();
    let mut ws = open_ws(&node, [127, 0, 0, 1]).unwrap();
    auth(&mut ws, &["file.read", "admin.websocket.transfer"]);
    assert_eq!(
        next_event(&mut ws),
        Some((
            "jwt error".into(),
            "jwt: token lacks websocket.connect".into()
        ))
    );
    assert_eq!(next_event(&mut ws), None, "the socket stays open");
    let mut star = open_ws(&node, [127, 0, 0, 1]).unwrap();
    auth(&mut star, &["*"]);
    assert_eq!(
        next_event(&mut star).map(|e| e.0).as_deref(),
        Some("auth success")
    );
}

/// Every `:server` route answers 404 for an id that is not a UUID, before
/// a handler can use it as a name or a path.
#[test]
fn routes_refuse_server_ids_that_are_not_uuids() {
    let (node, _tmp) = node_with_server();
    for id in ["..", "%2e%2e", "x", "7A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"] {
        for (method, path) in [
            ("GET", format!("/api/servers/{id}")),
            ("POST", format!("/api/servers/{id}/transfer")),
            ("DELETE", format!("/api/servers/{id}/transfer")),
            ("GET", format!("/api/servers/{id}/ws")),
        ] {
            let (code, _) = node.request(method, &path, Some(json!({})));
            assert_eq!(code, 404, "{method} {path}");
        }
    }
    // The same routes with the real id are not 404 (the check is not
    // refusing everything).
    let (code, _) = node.get(&format!("/api/servers/{SERVER}"));
    assert_ne!(code, 404);
}

/// RFC 9110 §9.3.2: HEAD on a GET route is answered like GET, without the
/// body.
#[test]
fn head_on_a_get_route_answers_like_get_without_a_body() {
    let (node, _tmp) = node_with_server();
    let head = format!(
        "HEAD /api/system HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        node.token
    );
    let answer = node.raw(head.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(body.is_empty(), "HEAD answered with a body: {body:?}");
    let get = node.get("/api/system").1.to_string();
    assert!(!get.is_empty());
    assert!(
        headers.to_ascii_lowercase().contains("content-length:"),
        "{headers}"
    );
}
