//! The server websocket (SPEC §6) through the real binary: `auth` success
//! and refusals, token expiry events and re-auth, the events a real
//! transfer between two nodes publishes (`transfer logs` only with
//! `admin.websocket.transfer`), and a client that never reads.
//!
//! The bus dropping a subscriber whose queue is full is unit-tested in
//! `src/events.rs`; at one progress event a second it cannot be reached
//! here within a test's time, so the last test checks what a user sees:
//! the transfer and the other clients are not held up.

use crate::support::node;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry::jwt::{mint_token_from_claims, mint_transfer_token, mint_websocket_token};
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const SERVER: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const OTHER: &str = "8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e";
const ADMIN: &str = "admin.websocket.transfer";

/// A standalone node that adopted `servers` (each filled by `fill`).
fn node_with(
    servers: &[&str],
    transfers_yaml: &str,
    fill: impl Fn(&Path),
) -> (TestNode, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    for server in servers {
        let dir = tmp.path().join("volumes").join(server);
        std::fs::create_dir_all(&dir).unwrap();
        fill(&dir);
    }
    let node = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().to_path_buf()),
        transfers_yaml: transfers_yaml.to_string(),
        ..Default::default()
    });
    (node, tmp)
}

/// Incompressible bytes, so a throttle or a pipe really sees them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

#[derive(Debug, PartialEq)]
enum Frame {
    Event(String, String),
    Closed,
    Timeout,
}

/// A client socket, and the close frame the node sent once it closed.
struct Ws(
    WebSocket<TcpStream>,
    Option<tungstenite::protocol::CloseFrame>,
);

impl Ws {
    fn connect(node: &TestNode, server: &str) -> Ws {
        Ws::connect_retrying(node, server, Instant::now())
    }

    /// Connects, retrying a refused handshake until `deadline`.
    fn connect_retrying(node: &TestNode, server: &str, deadline: Instant) -> Ws {
        loop {
            let stream = TcpStream::connect(node.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let url = format!("ws://{}/api/servers/{server}/ws", node.addr);
            match tungstenite::client(url.as_str(), stream) {
                Ok((socket, _)) => return Ws(socket, None),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("websocket still refused: {e}"),
            }
        }
    }

    fn auth(&mut self, token: &str) {
        self.0
            .send(Message::text(
                json!({"event": "auth", "args": [token]}).to_string(),
            ))
            .unwrap();
    }

    /// The next event, `Closed`, or `Timeout` after `within`.
    fn next(&mut self, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            match self.0.read() {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap();
                    let arg = v["args"][0].as_str().unwrap_or("").to_string();
                    return Frame::Event(v["event"].as_str().unwrap().to_string(), arg);
                }
                Ok(Message::Close(frame)) => {
                    self.1 = frame;
                    return Frame::Closed;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Frame::Closed,
            }
            if Instant::now() >= deadline {
                return Frame::Timeout;
            }
        }
    }

    fn expect(&mut self, event: &str) -> String {
        match self.next(Duration::from_secs(5)) {
            Frame::Event(e, arg) if e == event => arg,
            other => panic!("expected `{event}`, got {other:?}"),
        }
    }

    /// Refused: `jwt error`, then the node closes the socket.
    fn expect_refusal(&mut self) {
        self.expect("jwt error");
        assert_eq!(self.next(Duration::from_secs(5)), Frame::Closed);
    }

    /// Reads every event on a thread until a terminal `transfer status`.
    fn collect_until_done(mut self) -> std::thread::JoinHandle<Vec<(String, String)>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(50);
            while Instant::now() < deadline {
                match self.next(Duration::from_millis(200)) {
                    Frame::Event(e, arg) => {
                        let done = e == "transfer status"
                            && matches!(arg.as_str(), "completed" | "failed" | "cancelled");
                        seen.push((e, arg));
                        if done {
                            break;
                        }
                    }
                    Frame::Closed => break,
                    Frame::Timeout => {}
                }
            }
            seen
        })
    }
}

/// A handshake the node refuses: its status and JSON body.
fn refused_handshake(node: &TestNode, server: &str) -> (u16, Value) {
    let stream = TcpStream::connect(node.addr).unwrap();
    let url = format!("ws://{}/api/servers/{server}/ws", node.addr);
    match tungstenite::client(url.as_str(), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body).unwrap_or(Value::Null);
            (resp.status().as_u16(), json)
        }
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// A token that may open the stream (`websocket.connect`, SPEC §6) plus
/// `permissions`.
fn ws_token(server: &str, permissions: &[&str], ttl: Duration) -> String {
    let mut all = vec!["websocket.connect"];
    all.extend_from_slice(permissions);
    mint_websocket_token(TOKEN.as_bytes(), server, &all, ttl)
}

/// Starts an outgoing transfer of `server` from `src` to `dst`.
fn start_transfer(src: &TestNode, dst: &TestNode, server: &str) {
    let jwt = mint_transfer_token(dst.token.as_bytes(), server, Duration::from_secs(600));
    let (code, body) = src.request(
        "POST",
        &format!("/api/servers/{server}/transfer"),
        Some(json!({"url": dst.url("/api/transfers"), "token": format!("Bearer {jwt}"), "server": {"uuid": server}})),
    );
    assert_eq!(code, 202, "{body}");
}

#[test]
fn auth_succeeds_with_a_good_token_and_refusals_close_the_socket() {
    let (node, _tmp) = node_with(&[SERVER, OTHER], "", |d| {
        std::fs::write(d.join("a.txt"), "a").unwrap()
    });

    let mut ok = Ws::connect(&node, SERVER);
    ok.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    ok.expect("auth success");

    let mut bad_signature = Ws::connect(&node, SERVER);
    bad_signature.auth(&mint_websocket_token(
        b"some-other-node-token",
        SERVER,
        &[ADMIN],
        Duration::from_secs(600),
    ));
    bad_signature.expect_refusal();

    let mut other_server = Ws::connect(&node, SERVER);
    other_server.auth(&ws_token(OTHER, &[ADMIN], Duration::from_secs(600)));
    other_server.expect_refusal();

    // Well past `exp` and any leeway.
    let now = ferry::timefmt::now_unix();
    let expired = mint_token_from_claims(
        TOKEN.as_bytes(),
        json!({}),
        json!({"server_uuid": SERVER, "permissions": [ADMIN], "iat": now - 7200, "exp": now - 3600}),
    );
    let mut late = Ws::connect(&node, SERVER);
    late.auth(&expired);
    late.expect_refusal();

    let mut garbage = Ws::connect(&node, SERVER);
    garbage.auth("not-a-jwt");
    garbage.expect_refusal();

    // The good socket is unaffected by its neighbours' refusals.
    ok.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    ok.expect("auth success");

    // A server the node does not hold has no websocket.
    let (status, _) = refused_handshake(&node, "00000000-0000-4000-8000-000000000000");
    assert_eq!(status, 404);
}

#[test]
fn a_token_near_its_end_warns_then_expires_and_closes() {
    let (node, _tmp) = node_with(&[SERVER], "", |d| {
        std::fs::write(d.join("a.txt"), "a").unwrap()
    });
    let mut ws = Ws::connect(&node, SERVER);
    ws.auth(&ws_token(SERVER, &[], Duration::from_secs(2)));
    ws.expect("auth success");
    // Within a minute of `exp` already: the warning comes at once.
    match ws.next(Duration::from_secs(1)) {
        Frame::Event(e, _) => assert_eq!(e, "token expiring"),
        other => panic!("no `token expiring`: {other:?}"),
    }
    ws.expect("token expired");
    assert_eq!(ws.next(Duration::from_secs(5)), Frame::Closed);
}

#[test]
fn re_auth_on_the_same_socket_replaces_an_expiring_token() {
    let (node, _tmp) = node_with(&[SERVER], "", |d| {
        std::fs::write(d.join("a.txt"), "a").unwrap()
    });
    let mut ws = Ws::connect(&node, SERVER);
    ws.auth(&ws_token(SERVER, &[], Duration::from_secs(2)));
    ws.expect("auth success");
    ws.expect("token expiring");
    ws.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    ws.expect("auth success");
    // Past the first token's end: no expiry, and the socket still answers.
    assert_eq!(ws.next(Duration::from_secs(3)), Frame::Timeout);
    ws.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    ws.expect("auth success");
}

#[test]
fn a_transfer_publishes_status_and_progress_to_all_and_logs_only_to_admins() {
    // 2 MiB/s for ~6 MiB: a few seconds, so progress ticks (once a second) show.
    let (src, _src_tmp) = node_with(&[SERVER], "upload_limit: 2", |d| {
        make_server_tree(d);
        std::fs::write(d.join("world/region/r.2.2.mca"), noise(3 * 1024 * 1024, 7)).unwrap();
    });
    let (dst, _dst_tmp) = node_with(&[], "", |_| {});

    let mut admin = Ws::connect(&src, SERVER);
    admin.auth(&ws_token(SERVER, &[ADMIN], Duration::from_secs(600)));
    admin.expect("auth success");
    let mut viewer = Ws::connect(&src, SERVER);
    viewer.auth(&ws_token(
        SERVER,
        &["websocket.connect"],
        Duration::from_secs(600),
    ));
    viewer.expect("auth success");
    let (admin, viewer) = (admin.collect_until_done(), viewer.collect_until_done());

    start_transfer(&src, &dst, SERVER);
    let record = src.wait_transfer_end(SERVER, Duration::from_secs(50));
    assert_eq!(record["status"], "completed", "{record}");
    let (admin, viewer) = (admin.join().unwrap(), viewer.join().unwrap());

    let of = |events: &[(String, String)], name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(e, _)| e == name)
            .map(|(_, a)| a.clone())
            .collect()
    };
    for events in [&admin, &viewer] {
        assert_eq!(
            of(events, "transfer status"),
            vec!["processing", "completed"],
            "{events:?}"
        );
        let progress = of(events, "transfer progress");
        assert!(!progress.is_empty(), "no progress events: {events:?}");
        let p: Value = serde_json::from_str(&progress[progress.len() - 1]).unwrap();
        assert!(p["bytes_total"].as_u64().unwrap() > 3 * 1024 * 1024, "{p}");
        for key in [
            "files_total",
            "files_done",
            "bytes_done",
            "wire_bytes",
            "rate_bytes_per_sec",
            "eta_seconds",
        ] {
            assert!(p.get(key).is_some(), "progress lacks {key}: {p}");
        }
    }
    assert!(
        of(&viewer, "transfer logs").is_empty(),
        "logs without the permission: {viewer:?}"
    );
    let logs = of(&admin, "transfer logs");
    for line in &logs {
        // `Sun, 22 Nov 2026 03:24:38 UTC [Transfer System] [Source Node]: …`
        let (time, rest) = line
            .split_once(" [Transfer System] [Source Node]: ")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(time.ends_with(" UTC") && time.len() == 29, "{line}");
        assert!(!rest.is_empty());
    }
    let messages: Vec<&str> = logs
        .iter()
        .filter_map(|l| l.split_once("]: ").map(|(_, m)| m))
        .collect();
    let position = |m: &str| {
        messages
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("no `{m}` in {messages:?}"))
    };
    assert!(
        position("Preparing to stream server data to destination...")
            < position("Streaming archive to destination...")
    );
    assert!(
        position("Streaming archive to destination...")
            < position("Finished streaming archive to destination.")
    );
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_the_transfer_or_other_clients() {
    // Two servers with the same ~40 MiB: one moves with no websocket
    // client, the other with a client that never reads after auth.
    let fill = |d: &Path| {
        make_server_tree(d);
        std::fs::write(
            d.join("world/region/r.3.3.mca"),
            noise(36 * 1024 * 1024, 11),
        )
        .unwrap();
    };
    let (src, _src_tmp) = node_with(&[SERVER, OTHER], "", fill);
    let (dst, _dst_tmp) = node_with(&[], "", |_| {});

    let started = Instant::now();
    start_transfer(&src, &dst, SERVER);
    assert_eq!(
        src.wait_transfer_end(SERVER, Duration::from_secs(50))["status"],
        "completed"
    );
    let alone = started.elapsed();

    let mut stuck = Ws::connect(&src, OTHER);
    stuck.auth(&ws_token(OTHER, &[ADMIN], Duration::from_secs(600)));
    stuck.expect("auth success");
    let mut reader = Ws::connect(&src, OTHER);
    reader.auth(&ws_token(OTHER, &[ADMIN], Duration::from_secs(600)));
    reader.expect("auth success");
    let reader = reader.collect_until_done();
    let started = Instant::now();
    start_transfer(&src, &dst, OTHER);
    let record = src.wait_transfer_end(OTHER, Duration::from_secs(50));
    let with_stuck = started.elapsed();
    assert_eq!(record["status"], "completed", "{record}");
    let seen = reader.join().unwrap();
    assert!(
        seen.iter()
            .any(|(e, a)| e == "transfer status" && a == "completed"),
        "the reading client missed the end: {seen:?}"
    );
    assert_eq!(
        tree_listing(&dst.server_dir(OTHER)),
        tree_listing(&src.server_dir(OTHER))
    );
    // Generous: a stuck client must not make the transfer crawl, but the
    // machine is shared, so no tight timing.
    assert!(
        with_stuck < alone * 4 + Duration::from_secs(5),
        "alone {alone:?}, with a stuck client {with_stuck:?}"
    );
    drop(stuck);
}

/// A client that never authenticates is told so and disconnected after
/// the auth deadline (shortened here); an authenticated one stays.
#[test]
fn a_client_that_never_authenticates_is_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("volumes").join(SERVER)).unwrap();
    let node = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().to_path_buf()),
        env: vec![("FERRY_WS_AUTH_TIMEOUT_MS".into(), "500".into())],
        ..Default::default()
    });
    let mut authed = Ws::connect(&node, SERVER);
    authed.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    authed.expect("auth success");
    let mut silent = Ws::connect(&node, SERVER);
    let opened = Instant::now();
    match silent.next(Duration::from_secs(10)) {
        Frame::Event(e, arg) => assert_eq!(
            (e.as_str(), arg.as_str()),
            ("jwt error", "jwt: authentication required")
        ),
        other => panic!("expected `jwt error`, got {other:?}"),
    }
    assert_eq!(silent.next(Duration::from_secs(5)), Frame::Closed);
    assert!(
        opened.elapsed() >= Duration::from_millis(400),
        "{:?}",
        opened.elapsed()
    );
    assert!(node.wait_log("no authentication within", Duration::from_secs(5)));
    // Past the deadline, the authenticated session still answers.
    authed.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    authed.expect("auth success");
}

/// At most `MAX_SESSIONS` websockets are open at once; the next is refused
/// with 503 before the upgrade, and a place frees when one closes.
#[test]
fn websocket_sessions_are_capped() {
    let (node, _tmp) = node_with(&[SERVER], "", |_| {});
    // The cap is on authenticated sessions (unauthenticated ones are
    // bounded apart, see `abuse`).
    let max = ferry::api::ws::MAX_SESSIONS;
    let mut open: Vec<Ws> = (0..max)
        .map(|_| {
            let mut ws = Ws::connect(&node, SERVER);
            ws.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
            ws.expect("auth success");
            ws
        })
        .collect();
    let (status, body) = refused_handshake(&node, SERVER);
    assert_eq!(status, 503);
    assert_eq!(body["error"], ferry::api::ws::TOO_MANY);
    // Plain API requests are not affected.
    assert_eq!(node.get("/api/system").0, 200);
    // Closing one frees its place (once the node has noticed).
    let mut one = open.pop().unwrap();
    one.0.close(None).unwrap();
    let _ = one.next(Duration::from_secs(2));
    drop(one);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = Ws::connect_retrying(&node, SERVER, deadline);
    again.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    again.expect("auth success");
}

/// On SIGTERM, sessions stay open while transfers drain, then each gets a
/// close frame 1001 (going away) before the node exits.
#[test]
fn shutdown_closes_websockets_with_going_away() {
    let (mut node, _tmp) = node_with(&[SERVER], "", |_| {});
    let mut ws = Ws::connect(&node, SERVER);
    ws.auth(&ws_token(SERVER, &[], Duration::from_secs(600)));
    ws.expect("auth success");
    node.signal(libc::SIGTERM);
    assert_eq!(ws.next(Duration::from_secs(10)), Frame::Closed);
    let frame = ws.1.take().expect("a close frame with a code");
    assert_eq!(
        frame.code,
        tungstenite::protocol::frame::coding::CloseCode::Away
    );
    assert_eq!(frame.reason.as_str(), "node shutting down");
    assert!(node::wait_exit(&mut node.child, Duration::from_secs(15)).success());
}
