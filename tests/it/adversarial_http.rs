//! HTTP abuse against a real node: slowloris on heads and on bodies, header
//! bombs, a huge Content-Length behind a bad token, request-smuggling
//! shapes, and 2000 idle connections. Throughout, `GET /api/system` keeps
//! answering promptly (bounds are loose: seconds, for loaded CI machines),
//! and what the abuse started is cleaned up.

use crate::support::adv;
use crate::support::fake_panel;
use crate::support::node;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Once;
use std::time::{Duration, Instant};

use fake_panel::mint_transfer_jwt;
use node::TestNode;

/// A prompt answer, on a machine shared with other tests.
const PROMPT: Duration = Duration::from_secs(2);

/// Client and node sockets both need descriptors: raise the soft limit
/// (and, as root, the hard one) before any node starts; nodes inherit it.
fn raise_nofile() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid rlimit out/in pointer.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            let wanted = libc::rlimit {
                rlim_cur: 8192,
                rlim_max: lim.rlim_max.max(8192),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                let soft = libc::rlimit {
                    rlim_cur: lim.rlim_max.min(8192),
                    rlim_max: lim.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
        }
    });
}

fn start_node() -> TestNode {
    raise_nofile();
    TestNode::start()
}

/// One `GET /api/system`; panics unless it is a 200 within [`PROMPT`].
fn system_answers(node: &TestNode) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/system HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        node.token
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let took = started.elapsed();
    assert!(out.starts_with("HTTP/1.1 200"), "GET /api/system: {out:?}");
    assert!(out.contains("\"architecture\""), "{out}");
    assert!(took < PROMPT, "GET /api/system took {took:?}");
    took
}

/// Sends `bytes` and reads what the node answers until it closes (or
/// `timeout`); returns the text and whether the node closed.
fn exchange(node: &TestNode, bytes: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Whether the node has closed `s` (EOF or reset), waiting up to `wait`.
fn closed_by_node(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slowloris_heads_are_cut_at_the_header_timeout_while_the_node_answers() {
    let node = start_node();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.write_all(b"GET /api/system HTTP/1.1\r\nHost: n\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // One more byte per connection per second, for longer than the
    // node's 10 s header timeout; the node answers throughout.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let mut last_drip = Instant::now();
    while started.elapsed() < Duration::from_secs(13) {
        if last_drip.elapsed() >= Duration::from_secs(1) {
            for s in &mut slow {
                let _ = s.write_all(b"a");
            }
            last_drip = Instant::now();
        }
        worst = worst.max(system_answers(&node));
        probes += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{probes} probes during the slowloris, slowest {worst:?}");
    let still_open = slow
        .iter_mut()
        .map(|s| closed_by_node(s, Duration::from_millis(200)))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "connections dribbling a head for 13 s were not closed"
    );
    system_answers(&node);
}

#[test]
fn stalled_bodies_hold_only_their_own_requests() {
    let node = start_node();
    // Incoming transfers with valid tokens whose bodies stop after the
    // first part header, and node-token requests whose JSON body stalls.
    let uuids: Vec<String> = (0..6).map(|_| adv::new_uuid()).collect();
    let mut stalled = Vec::new();
    for uuid in &uuids {
        let mut s = TcpStream::connect(node.addr).unwrap();
        write!(
            s,
            "POST /api/transfers HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {}\r\nContent-Type: {}\r\nContent-Length: 10000000\r\n\r\n--{}\r\nContent-Disposition: form-data; name=\"archive\"\r\n\r\n\x1f",
            mint_transfer_jwt(&node.token, uuid),
            adv::form_data(),
            adv::BOUNDARY
        )
        .unwrap();
        stalled.push(s);
    }
    for _ in 0..4 {
        let mut s = TcpStream::connect(node.addr).unwrap();
        write!(
            s,
            "POST /api/transfers/cancel HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"reason\":",
            node.token
        )
        .unwrap();
        stalled.push(s);
    }
    // The six transfers are inside their body reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = node.get("/api/transfers");
        let processing = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "processing")
            .count();
        if processing == uuids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "transfers not processing: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..10 {
        system_answers(&node);
        std::thread::sleep(Duration::from_millis(200));
    }
    // A real transfer still goes through meanwhile.
    let uuid = adv::new_uuid();
    let archive = adv::tiny_archive();
    let auth = format!("Bearer {}", mint_transfer_jwt(&node.token, &uuid));
    let a = adv::post_transfer(
        &node,
        Some(&auth),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    adv::assert_tiny_installed(&node.server_dir(&uuid));

    // The stalled clients go away: each transfer ends failed, nothing is
    // left of them.
    drop(stalled);
    for uuid in &uuids {
        let record = node.wait_transfer_end(uuid, Duration::from_secs(15));
        assert_eq!(record["status"], "failed", "{record}");
        assert_eq!(record["error"], "Request aborted by client.", "{record}");
    }
    adv::wait_staging_empty(&node, Duration::from_secs(10));
    for uuid in &uuids {
        adv::assert_nothing_installed(&node, uuid);
    }
    system_answers(&node);
}

#[test]
fn header_bombs_are_refused_with_flat_memory() {
    let node = start_node();
    system_answers(&node);
    let before = node.status_kib("VmHWM");
    let auth = format!("Authorization: Bearer {}\r\n", node.token);

    let mut many = format!("GET /api/system HTTP/1.1\r\nHost: n\r\n{auth}");
    for i in 0..5000 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let long = format!(
        "GET /api/system HTTP/1.1\r\nHost: n\r\n{auth}X-Long: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    for (case, bomb) in [
        ("5000 headers", many.as_bytes()),
        ("100 KiB header", long.as_bytes()),
    ] {
        let started = Instant::now();
        let (reply, closed) = exchange(&node, bomb, Duration::from_secs(10));
        assert!(reply.starts_with("HTTP/1.1 431"), "{case}: {reply:?}");
        assert!(closed, "{case}: connection left open");
        assert!(
            started.elapsed() < PROMPT,
            "{case}: took {:?}",
            started.elapsed()
        );
    }
    // Just under both limits (99 headers, about 60 KiB) is served.
    let mut near = format!("GET /api/system HTTP/1.1\r\nHost: n\r\n{auth}Connection: close\r\n");
    for i in 0..96 {
        near.push_str(&format!("X-{i}: {}\r\n", "b".repeat(600)));
    }
    near.push_str("\r\n");
    let (reply, _) = exchange(&node, near.as_bytes(), Duration::from_secs(10));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");

    // Twenty at once, each streaming 2 MiB of header line.
    let bombers: Vec<_> = (0..20)
        .map(|_| {
            let addr = node.addr;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Bomb: ");
                let chunk = vec![b'z'; 64 * 1024];
                for _ in 0..32 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
        })
        .collect();
    for b in bombers {
        let out = b.join().unwrap();
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out:?}");
    }
    system_answers(&node);
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    assert!(growth < 16 * 1024, "peak RSS grew {growth} KiB");
}

#[test]
fn huge_content_length_with_a_bad_token_is_answered_at_once() {
    let node = start_node();
    system_answers(&node);
    let before = node.status_kib("VmHWM");
    for (path, auth, status, message) in [
        (
            "/api/transfers",
            "Bearer not.a.jwt",
            401,
            "Invalid or expired transfer token.",
        ),
        (
            "/api/transfers",
            "",
            401,
            "The required authorization heads were not present in the request.",
        ),
        (
            "/api/transfers/cancel",
            "Bearer wrong-node-token",
            403,
            "You are not authorized to access this endpoint.",
        ),
    ] {
        for length in ["999999999999999999", "18446744073709551615"] {
            let started = Instant::now();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: n\r\nAuthorization: {auth}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n\r\nsome body bytes",
                adv::form_data()
            );
            let (reply, closed) = exchange(&node, head.as_bytes(), Duration::from_secs(10));
            let answer = adv::parse_answer(reply.as_bytes());
            assert_eq!(
                (answer.status, answer.error()),
                (status, message),
                "{path} {auth:?} {length}"
            );
            assert!(closed, "{path}: the unread body must cost the connection");
            assert!(
                started.elapsed() < PROMPT,
                "{path}: took {:?}",
                started.elapsed()
            );
        }
    }
    // One past u64 is not a length at all.
    let (reply, _) = exchange(
        &node,
        b"POST /api/transfers HTTP/1.1\r\nHost: n\r\nContent-Length: 18446744073709551616\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    assert!(growth < 8 * 1024, "peak RSS grew {growth} KiB");
    system_answers(&node);
}

#[test]
fn smuggling_shapes_get_one_400_and_a_closed_connection() {
    let node = start_node();
    let smuggled = format!(
        "GET /api/servers HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {}\r\n\r\n",
        node.token
    );
    let shapes = [
        ("CL+TE", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE+CL", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\nContent-Length: 200\r\n\r\n0\r\n\r\n{smuggled}")),
        ("two different CL", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len())),
        ("two equal CL", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("CL list", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nContent-Length: 0, 0\r\n\r\n{smuggled}")),
        ("TE not chunked last", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE lookalike", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("signed CL", format!("POST /api/system HTTP/1.1\r\nHost: n\r\nContent-Length: +0\r\n\r\n{smuggled}")),
    ];
    for (case, raw) in &shapes {
        let (reply, closed) = exchange(&node, raw.as_bytes(), Duration::from_secs(10));
        assert!(reply.starts_with("HTTP/1.1 400"), "{case}: {reply:?}");
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "{case}: a second response came back: {reply}"
        );
        assert!(
            !reply.contains("\"uuid\""),
            "{case}: the smuggled request ran"
        );
        assert!(closed, "{case}: connection left open");
    }
    system_answers(&node);
}

#[test]
fn two_thousand_idle_connections_do_not_stop_answers() {
    let node = start_node();
    let before = node.status_kib("VmHWM");
    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = TcpStream::connect(node.addr).unwrap();
        if i % 4 == 0 {
            // Some with a partial head, some with nothing at all.
            let _ = s.write_all(b"GET /api/sys");
        }
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        system_answers(&node);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The node holds at most its connection cap (1024) plus its own files.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
        .unwrap()
        .count();
    assert!(fds < 1024 + 64, "the node holds {fds} descriptors");
    let growth = node.status_kib("VmHWM").saturating_sub(before);
    assert!(growth < 32 * 1024, "peak RSS grew {growth} KiB");
    drop(idle);
    system_answers(&node);
}
