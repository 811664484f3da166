//! Integration tests for the HTTP/1.1 server core over real loopback sockets.

use crate::support::certs;
use crate::support::http_common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use certs::make_certs;
use ferry::http::{Body, ConnectionHandle, Handler, Request, Response, ServerOptions, Upgraded};
use http_common::*;
use sha2::{Digest, Sha256};

/// A handler from a closure.
struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(&mut Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &mut Request) -> Response {
        (self.0)(request)
    }
}

fn query_num(req: &Request, default: u64) -> u64 {
    req.query
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The routes most tests use.
fn app(req: &mut Request) -> Response {
    match req.path.as_str() {
        "/hello" => Response::new(200).bytes(b"hello".to_vec()),
        "/bye" => Response::new(200)
            .header("Connection", "close")
            .bytes(b"bye".to_vec()),
        "/sha256" => {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0u64;
            loop {
                match req.body().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        len += n as u64;
                    }
                    Err(e) => {
                        return Response::new(200)
                            .bytes(format!("error {:?}", e.kind()).into_bytes())
                    }
                }
            }
            Response::new(200)
                .bytes(format!("{len} {}", hex::encode(hasher.finalize())).into_bytes())
        }
        "/early401" => Response::new(401)
            .header("Content-Type", "application/json")
            .bytes(br#"{"error":"nope"}"#.to_vec()),
        "/panic" => panic!("handler exploded on purpose"),
        "/stream" => Response {
            status: 200,
            headers: vec![],
            body: Body::Stream(Box::new(Pattern::new(query_num(req, 1000)))),
        },
        "/sleep" => {
            std::thread::sleep(Duration::from_millis(query_num(req, 100)));
            Response::new(200).bytes(b"slept".to_vec())
        }
        "/slow-read" => {
            std::thread::sleep(Duration::from_millis(300));
            let mut body = Vec::new();
            match req.body().read_to_end(&mut body) {
                Ok(_) => Response::new(200).bytes(body),
                Err(e) => Response::new(500).bytes(format!("{e}").into_bytes()),
            }
        }
        _ => Response::new(404),
    }
}

fn app_server(options: ServerOptions) -> TestServer {
    TestServer::start(FnHandler(app), options)
}

fn sha_line(data: &[u8]) -> String {
    format!("{} {}", data.len(), hex::encode(Sha256::digest(data)))
}

// ---------------------------------------------------------------- logging

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        if std::env::var_os("HTTP_TEST_LOG").is_some() {
            eprintln!("{line}");
        }
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn captured_logs() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(logger).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        logger
    })
}

// ---------------------------------------------------------------- tests

#[test]
fn keep_alive_and_pipelining() {
    let server = app_server(ServerOptions::default());
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // Four requests in one write, two with bodies (Content-Length, chunked).
    w.write_all(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          POST /sha256 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
          GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let a = read_response(&mut r).unwrap();
    let b = read_response(&mut r).unwrap();
    let c = read_response(&mut r).unwrap();
    let d = read_response(&mut r).unwrap();
    assert_eq!((a.status, a.text()), (200, "hello".to_string()));
    assert_eq!(b.text(), sha_line(b"abc"));
    assert_eq!(c.text(), sha_line(b"de"));
    assert_eq!(d.text(), "hello");
    assert!(!a.closes() && !b.closes() && !c.closes() && !d.closes());
    assert_eq!(a.header("server"), Some("ferry"));
    // Later, the same connection is still usable (back from the head reader).
    std::thread::sleep(Duration::from_millis(50));
    w.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    w.write_all(b"Host: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).unwrap().text(), "hello");
    // Connection: close is honoured, from the client or from the handler.
    w.write_all(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut r).unwrap().closes());
    assert!(is_closed(&mut r, Duration::from_secs(5)));
    let resp = roundtrip(server.addr, b"GET /bye HTTP/1.1\r\n\r\n");
    assert_eq!(resp.text(), "bye");
    let connection_headers = resp.headers.iter().filter(|(k, _)| k == "Connection");
    assert_eq!(connection_headers.count(), 1);
    assert!(resp.closes());
}

#[test]
fn long_pipeline_in_one_write() {
    // More requests than a worker serves back to back before handing the
    // connection back to the head reader.
    let server = app_server(ServerOptions::default());
    let s = server.connect();
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(
            format!("POST /sha256 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{i:02}").as_bytes(),
        );
    }
    (&s).write_all(&batch).unwrap();
    let mut r = BufReader::new(s);
    for i in 0..40 {
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.text(), sha_line(format!("{i:02}").as_bytes()));
    }
}

#[test]
fn http10_keep_alive_rules() {
    let server = app_server(ServerOptions::default());
    // 1.0 without keep-alive: answered, then closed.
    let s = server.connect();
    (&s).write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.text(), "hello");
    assert!(resp.closes());
    assert!(is_closed(&mut r, Duration::from_secs(5)));
    // 1.0 with keep-alive: stays open; a streamed body is sent unchunked and
    // ends the connection.
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    w.write_all(b"GET /stream?n=70000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert!(resp.closes());
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(verify_pattern(&mut &resp.body[..]).unwrap(), 70000);
}

#[test]
fn chunked_upload_echo_sha256() {
    let server = app_server(ServerOptions::default());
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // Odd chunk sizes, an extension, and a trailer.
    let mut pos = 0;
    let mut size = 1;
    while pos < data.len() {
        let n = size.min(data.len() - pos);
        write!(w, "{n:X};ext=\"x\"\r\n").unwrap();
        w.write_all(&data[pos..pos + n]).unwrap();
        w.write_all(b"\r\n").unwrap();
        pos += n;
        size = size * 3 + 1;
    }
    w.write_all(b"0\r\nX-Checksum: whatever\r\n\r\n").unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.text(), sha_line(&data));
    assert!(!resp.closes());
}

#[test]
fn content_length_upload() {
    let server = app_server(ServerOptions::default());
    let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 253) as u8).collect();
    let mut raw = format!(
        "PUT /sha256 HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    raw.extend_from_slice(&data);
    let resp = roundtrip(server.addr, &raw);
    assert_eq!(resp.text(), sha_line(&data));
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
}

#[test]
fn truncated_bodies_are_unexpected_eof() {
    let server = app_server(ServerOptions::default());
    for (head, partial) in [
        (
            "POST /sha256 HTTP/1.1\r\nContent-Length: 1000\r\n\r\n",
            &b"x"[..],
        ),
        (
            "POST /sha256 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &b"10\r\nabc"[..],
        ),
        (
            "POST /sha256 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &b"3\r\nabc\r\n"[..],
        ),
    ] {
        let s = server.connect();
        (&s).write_all(head.as_bytes()).unwrap();
        (&s).write_all(partial).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut r = BufReader::new(s);
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.text(), "error UnexpectedEof", "{head:?} {partial:?}");
        assert!(resp.closes());
    }
}

#[test]
fn bad_chunk_framing_closes() {
    let server = app_server(ServerOptions::default());
    let resp = roundtrip(
        server.addr,
        b"POST /sha256 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(resp.text(), "error InvalidData");
    assert!(resp.closes());
}

#[test]
fn expect_continue_sent_only_when_the_handler_reads() {
    let server = app_server(ServerOptions::default());
    // The handler sleeps 300 ms before reading: no 100 before that.
    let s = server.connect();
    let started = Instant::now();
    (&s).write_all(
        b"POST /slow-read HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 100);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "100 Continue came before the handler read ({:?})",
        started.elapsed()
    );
    (&s).write_all(b"hello").unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.text(), "hello");
    assert!(!resp.closes());

    // A handler that answers without reading: no 100, and the connection closes.
    let s = server.connect();
    (&s).write_all(b"POST /hello HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.closes());
    assert!(is_closed(&mut r, Duration::from_secs(5)));
}

#[test]
fn early_response_closes_instead_of_draining() {
    let server = app_server(ServerOptions::default());
    let s = server.connect();
    (&s).write_all(b"POST /early401 HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    (&s).write_all(&vec![b'x'; 64 * 1024]).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.closes());
    assert!(is_closed(&mut r, Duration::from_secs(5)));
    // A small ignored body that is already buffered keeps the connection.
    let s = server.connect();
    (&s).write_all(b"POST /hello HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.text(), "hello");
    assert!(!resp.closes());
    (&s).write_all(b"GET /hello HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).unwrap().text(), "hello");
}

#[test]
fn huge_content_length_answered_without_reading() {
    let server = app_server(ServerOptions::default());
    let s = server.connect();
    (&s).write_all(b"POST /early401 HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n")
        .unwrap();
    (&s).write_all(&[b'z'; 4096]).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.closes());
    assert!(is_closed(&mut r, Duration::from_secs(5)));
    assert_eq!(
        roundtrip(server.addr, b"GET /hello HTTP/1.1\r\n\r\n").text(),
        "hello"
    );
}

#[test]
fn header_limits_answer_431() {
    let server = app_server(ServerOptions {
        max_headers: 20,
        max_header_bytes: 8 * 1024,
        ..ServerOptions::default()
    });
    let mut raw = String::from("GET /hello HTTP/1.1\r\n");
    for i in 0..21 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let s = server.connect();
    (&s).write_all(raw.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 431);
    assert!(resp.closes());
    let v = resp.json();
    assert!(v["error"].as_str().unwrap().contains("too large"));
    assert_eq!(v["request_id"].as_str().unwrap().len(), 12);
    assert!(is_closed(&mut r, Duration::from_secs(5)));

    // One long header line, far beyond the limit, streamed.
    let s = server.connect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(b"GET /hello HTTP/1.1\r\nX-Long: ");
            let chunk = vec![b'a'; 64 * 1024];
            for _ in 0..128 {
                if w.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = w.write_all(b"\r\n\r\n");
        })
    };
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(resp.status, 431);
    writer.join().unwrap();
    assert_eq!(
        roundtrip(server.addr, b"GET /hello HTTP/1.1\r\n\r\n").text(),
        "hello"
    );
}

#[test]
fn ambiguous_framing_is_400_json() {
    let server = app_server(ServerOptions::default());
    for raw in [
        "POST /sha256 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST /sha256 HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST /sha256 HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /sha256 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /sha256 HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
    ] {
        let s = server.connect();
        (&s).write_all(raw.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 400, "{raw:?}");
        assert!(resp.closes(), "{raw:?}");
        let v = resp.json();
        assert!(!v["error"].as_str().unwrap().is_empty());
        assert!(!v["request_id"].as_str().unwrap().is_empty());
        assert!(is_closed(&mut r, Duration::from_secs(5)), "{raw:?}");
    }
}

#[test]
fn idle_and_slow_connections_do_not_block_requests() {
    let server = app_server(ServerOptions {
        workers: 4,
        ..ServerOptions::default()
    });
    let mut idle = Vec::new();
    for i in 0..200 {
        let s = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 0 {
            (&s).write_all(b"GET /hello HTTP/1.1\r\nX-Slow: ").unwrap();
        }
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let resp = roundtrip(server.addr, b"GET /hello HTTP/1.1\r\n\r\n");
    assert_eq!(resp.text(), "hello");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn connection_cap_evicts_the_longest_waiting() {
    let server = app_server(ServerOptions {
        max_connections: 20,
        ..ServerOptions::default()
    });
    let mut idle = Vec::new();
    for _ in 0..40 {
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let resp = roundtrip(server.addr, b"GET /hello HTTP/1.1\r\n\r\n");
    assert_eq!(resp.text(), "hello");
    // The oldest ones were closed to make room; the newest survive.
    for (i, s) in idle.iter_mut().enumerate() {
        if i < 20 {
            assert!(
                is_closed(s, Duration::from_secs(1)),
                "connection {i} still open"
            );
        } else if i >= 36 {
            assert!(
                !is_closed(s, Duration::from_millis(50)),
                "connection {i} closed"
            );
        }
    }
}

#[test]
fn header_timeout_is_for_the_whole_head() {
    let server = app_server(ServerOptions {
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(600),
        ..ServerOptions::default()
    });
    // Drip one byte every 50 ms: per-byte progress must not extend it.
    let mut s = server.connect();
    let started = Instant::now();
    let mut closed_after = None;
    for b in b"GET /hello HTTP/1.1\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .iter()
        .cycle()
    {
        if s.write_all(&[*b]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if is_closed(&mut s, Duration::from_millis(1)) {
            closed_after = Some(started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "never closed");
    }
    let closed_after = closed_after.unwrap();
    assert!(
        closed_after >= Duration::from_millis(350),
        "{closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_millis(2500),
        "{closed_after:?}"
    );

    // Keep-alive idle timeout.
    let s = server.connect();
    (&s).write_all(b"GET /hello HTTP/1.1\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r).unwrap().text(), "hello");
    let idle_start = Instant::now();
    assert!(is_closed(&mut r, Duration::from_secs(3)));
    let idle_for = idle_start.elapsed();
    assert!(idle_for >= Duration::from_millis(500), "{idle_for:?}");
}

#[test]
fn streamed_and_head_responses() {
    let server = app_server(ServerOptions::default());
    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"GET /stream?n=300001 HTTP/1.1\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(verify_pattern(&mut &resp.body[..]).unwrap(), 300001);
    w.write_all(b"HEAD /hello HTTP/1.1\r\n\r\n").unwrap();
    let resp = read_response_to(&mut r, true).unwrap();
    assert_eq!(resp.header("content-length"), Some("5"));
    // Nothing after the HEAD response: the next response follows directly.
    w.write_all(b"GET /hello HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).unwrap().text(), "hello");
}

#[test]
fn handler_panic_is_500_and_worker_survives() {
    let server = app_server(ServerOptions {
        workers: 1,
        ..ServerOptions::default()
    });
    let resp = roundtrip(server.addr, b"GET /panic HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.json()["error"], "internal server error");
    assert!(resp.closes());
    for _ in 0..3 {
        assert_eq!(
            roundtrip(server.addr, b"GET /hello HTTP/1.1\r\n\r\n").text(),
            "hello"
        );
    }
}

#[test]
fn connection_handle_shutdown_unblocks_body_read() {
    let (tx, rx) = mpsc::channel::<ConnectionHandle>();
    let (done_tx, done_rx) = mpsc::channel::<io::ErrorKind>();
    let tx = Mutex::new(tx);
    let done_tx = Mutex::new(done_tx);
    let server = TestServer::start(
        FnHandler(move |req: &mut Request| {
            tx.lock().unwrap().send(req.connection()).unwrap();
            let mut sink = Vec::new();
            let kind = match req.body().read_to_end(&mut sink) {
                Ok(_) => io::ErrorKind::Other,
                Err(e) => e.kind(),
            };
            done_tx.lock().unwrap().send(kind).unwrap();
            Response::new(400)
        }),
        ServerOptions::default(),
    );
    let s = server.connect();
    (&s).write_all(b"POST /in HTTP/1.1\r\nContent-Length: 1000000\r\n\r\npartial")
        .unwrap();
    let handle = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        done_rx.try_recv().is_err(),
        "the read should still be blocked"
    );
    let started = Instant::now();
    handle.shutdown();
    let kind = done_rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(kind, io::ErrorKind::UnexpectedEof);
    // Promptly, not after the 60 s body timeout.
    assert!(started.elapsed() < Duration::from_secs(2));
    let mut r = BufReader::new(s);
    assert!(is_closed(&mut r, Duration::from_secs(2)));
}

#[test]
fn shutdown_waits_for_in_flight_then_returns() {
    let mut server = TestServer::start_arc(
        Arc::new(FnHandler(app)),
        ServerOptions::default(),
        Duration::from_secs(5),
    );
    let addr = server.addr;
    let client = std::thread::spawn(move || roundtrip(addr, b"GET /sleep?n=400 HTTP/1.1\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.stop().unwrap();
    let took = started.elapsed();
    let resp = client.join().unwrap();
    assert_eq!(resp.text(), "slept");
    assert!(
        resp.closes(),
        "responses during shutdown close the connection"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // No longer accepting.
    let refused = match TcpStream::connect(addr) {
        Err(_) => true,
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /hello HTTP/1.1\r\n\r\n");
            is_closed(&mut s, Duration::from_secs(2))
        }
    };
    assert!(refused);
}

#[test]
fn shutdown_before_run_returns_at_once() {
    let server =
        ferry::http::HttpServer::bind("127.0.0.1:0".parse().unwrap(), ServerOptions::default())
            .unwrap();
    server.shutdown_handle().shutdown();
    let started = Instant::now();
    server
        .run(Arc::new(FnHandler(app)), Duration::from_secs(5))
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn shutdown_gives_up_after_grace() {
    let mut server = TestServer::start_arc(
        Arc::new(FnHandler(app)),
        ServerOptions::default(),
        Duration::from_millis(300),
    );
    let addr = server.addr;
    let _client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /sleep?n=5000 HTTP/1.1\r\n\r\n");
        let _ = s.read(&mut [0u8; 16]);
    });
    // An idle keep-alive connection must not hold shutdown up.
    let idle = server.connect();
    (&idle).write_all(b"GET /hello HTTP/1.1\r\n\r\n").unwrap();
    let mut idle = BufReader::new(idle);
    assert_eq!(read_response(&mut idle).unwrap().text(), "hello");
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.stop().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(is_closed(&mut idle, Duration::from_secs(1)));
}

#[test]
fn upgrade_hands_off_full_duplex() {
    let server = TestServer::start(FnHandler(upgrade_echo), ServerOptions::default());
    let s = server.connect();
    (&s).write_all(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly-bytes|")
        .unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 101);
    assert!(headers.iter().any(|(k, v)| k == "Upgrade" && v == "echo"));
    check_echo_session(&mut r);
}

/// Upgrade handler: one thread echoes what it reads (leftover first) while
/// another writes a greeting after 200 ms, during a blocked read.
fn upgrade_echo(_req: &mut Request) -> Response {
    Response::new(101)
        .header("Connection", "Upgrade")
        .header("Upgrade", "echo")
        .with_upgrade(|up: Upgraded| {
            let Upgraded {
                mut stream,
                leftover,
            } = up;
            let mut writer = stream.try_clone_stream().unwrap();
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            let greeter = tx.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let _ = greeter.send(b"greeting|".to_vec());
            });
            let writer_thread = std::thread::spawn(move || {
                for msg in rx {
                    if writer
                        .write_all(&msg)
                        .and_then(|()| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let _ = tx.send(leftover);
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(tx);
            let _ = writer_thread.join();
        })
}

/// Client side of [`upgrade_echo`]: leftover echoed, greeting arrives while
/// the client sends nothing, then a ping/pong round.
pub fn check_echo_session<S: Read + Write>(r: &mut BufReader<S>) {
    let mut got = Vec::new();
    let want_first = b"early-bytes|greeting|";
    while got.len() < want_first.len() {
        let buf = r.fill_buf().unwrap();
        assert!(!buf.is_empty(), "closed early");
        let n = buf.len().min(want_first.len() - got.len());
        got.extend_from_slice(&buf[..n]);
        r.consume(n);
    }
    assert_eq!(&got, want_first);
    for i in 0..3 {
        let msg = format!("ping-{i}|");
        r.get_mut().write_all(msg.as_bytes()).unwrap();
        r.get_mut().flush().unwrap();
        let mut back = vec![0u8; msg.len()];
        r.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

trait WithUpgrade {
    fn with_upgrade(self, f: impl FnOnce(Upgraded) + Send + 'static) -> Response;
}

impl WithUpgrade for Response {
    fn with_upgrade(mut self, f: impl FnOnce(Upgraded) + Send + 'static) -> Response {
        self.body = Body::Upgrade(Box::new(f));
        self
    }
}

#[test]
fn access_log_has_one_line_and_no_secrets() {
    // The `log` crate has one logger per process.
    if crate::support::rerun_in_own_process(
        module_path!(),
        "access_log_has_one_line_and_no_secrets",
    ) {
        return;
    }
    let logs = captured_logs();
    let server = app_server(ServerOptions::default());
    let resp = roundtrip(
        server.addr,
        b"GET /hello?token=QUERYSECRET HTTP/1.1\r\nAuthorization: Bearer HEADERSECRET\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    drop(server);
    let lines = logs.0.lock().unwrap().clone();
    let mine: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("INFO access method=GET path=/hello status=200 "))
        .collect();
    assert!(lines.iter().all(|l| !l.contains("SECRET")), "{lines:#?}");
    assert!(!mine.is_empty(), "{lines:#?}");
    // access method= path= status= ms= bytes= id= remote=, labelled.
    let fields: Vec<(&str, &str)> = mine[0]
        .trim_start_matches("INFO access ")
        .split(' ')
        .filter_map(|f| f.split_once('='))
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["method", "path", "status", "ms", "bytes", "id", "remote"],
        "{fields:?}"
    );
    assert!(fields[3].1.parse::<u64>().is_ok());
    assert_eq!(fields[4].1, "5");
    assert_eq!(fields[5].1.len(), 12);
    assert!(fields[6].1.starts_with("127.0.0.1:"));
}

#[test]
fn detached_request_for_in_process_callers() {
    let mut req = Request::detached(
        "POST",
        "/api/x?y=1",
        vec![("Content-Length".into(), "3".into())],
        Box::new(&b"abc"[..]),
    );
    assert_eq!((req.path.as_str(), req.query.as_str()), ("/api/x", "y=1"));
    assert_eq!(req.header("content-length"), Some("3"));
    assert_eq!(req.content_length(), Some(3));
    let mut body = String::new();
    req.body().read_to_string(&mut body).unwrap();
    assert_eq!(body, "abc");
    req.connection().shutdown();
}

// ---------------------------------------------------------------- TLS

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: std::net::SocketAddr, ca: &std::path::Path) -> TlsStream {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn tls_round_trip_keep_alive_and_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key, ca)) = make_certs(dir.path()) else {
        return;
    };
    let handler = FnHandler(|req: &mut Request| {
        if req.path == "/ws" {
            upgrade_echo(req)
        } else {
            app(req)
        }
    });
    let server = TestServer::start(
        handler,
        ServerOptions {
            tls: Some(ferry::http::TlsFiles { cert, key }),
            ..ServerOptions::default()
        },
    );
    // A body bigger than a TLS record, then a keep-alive follow-up.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = BufReader::new(tls_connect(server.addr, &ca));
    let mut raw = format!(
        "POST /sha256 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    raw.extend_from_slice(&data);
    r.get_mut().write_all(&raw).unwrap();
    assert_eq!(read_response(&mut r).unwrap().text(), sha_line(&data));
    r.get_mut()
        .write_all(b"GET /stream?n=100000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(verify_pattern(&mut &resp.body[..]).unwrap(), 100_000);

    // Upgrade over TLS: the server writes (greeting) while its reader thread
    // is blocked, so the lock split has to hold.
    let mut r = BufReader::new(tls_connect(server.addr, &ca));
    r.get_mut()
        .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly-bytes|")
        .unwrap();
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 101);
    check_echo_session(&mut r);

    // Plain HTTP on the TLS port is not a request: the connection just ends.
    let mut plain = server.connect();
    plain.write_all(b"GET /hello HTTP/1.1\r\n\r\n").unwrap();
    assert!(is_closed(&mut plain, Duration::from_secs(5)));
}

#[test]
fn tls_bind_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let err = ferry::http::HttpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        ServerOptions {
            tls: Some(ferry::http::TlsFiles {
                cert: missing,
                key: dir.path().join("key.pem"),
            }),
            ..ServerOptions::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");
}

/// Long requests (incoming transfers) hand their worker's seat to a new
/// thread: with 2 workers and 6 long requests running, a short request is
/// still answered at once; each long request ends on its own thread.
#[test]
fn long_requests_leave_the_pool_so_short_ones_are_served() {
    let (entered_tx, entered_rx) = mpsc::channel::<bool>();
    let entered_tx = Mutex::new(entered_tx);
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let gate = Arc::clone(&release);
    let server = TestServer::start(
        FnHandler(move |req: &mut Request| {
            if req.path != "/long" {
                return Response::new(200).bytes(b"short".to_vec());
            }
            let left = req.leave_worker_pool();
            // A second call has nothing left to hand over.
            let again = req.leave_worker_pool();
            entered_tx.lock().unwrap().send(left && !again).unwrap();
            let (lock, cv) = &*gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Response::new(200).bytes(b"long".to_vec())
        }),
        ServerOptions {
            workers: 2,
            ..ServerOptions::default()
        },
    );
    let addr = server.addr;
    let long: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || roundtrip(addr, b"GET /long HTTP/1.1\r\n\r\n")))
        .collect();
    for _ in 0..6 {
        let left = entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("every long request reached a worker");
        assert!(
            left,
            "the first call hands the seat over, the second has none"
        );
    }
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            roundtrip(addr, b"GET /short HTTP/1.1\r\n\r\n").text(),
            "short"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    {
        let (lock, cv) = &*release;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    for t in long {
        assert_eq!(t.join().unwrap().text(), "long");
    }
    // The replacements keep serving once the long requests are gone.
    assert_eq!(
        roundtrip(addr, b"GET /short HTTP/1.1\r\n\r\n").text(),
        "short"
    );
}
