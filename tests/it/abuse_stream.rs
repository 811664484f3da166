//! Streamed response bodies under clients that never read (issue 13 item
//! 1, for streams): the worker sends what the socket takes and parks the
//! rest with the head reader, so a handful of stalled downloads never
//! hold the pool and `GET /api/system` answers within a second; a slow
//! reader still gets every byte, and its connection serves the next
//! request after the stream.
//!
//! No node endpoint streams a response today, so this drives the HTTP
//! server itself with a small pool (4 workers) to make starvation sharp.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::http_common::{
    peak_growth_kb, read_head, read_response, reset_peak_rss, verify_pattern, Pattern, TestServer,
};
use ferry::http::{Body, Handler, Request, Response, ServerOptions};

/// Bytes each streamed answer carries: far more than the socket buffers
/// of a client that does not read.
const STREAM_BYTES: u64 = 64 * 1024 * 1024;

struct App;

impl Handler for App {
    fn handle(&self, req: &mut Request) -> Response {
        match req.path.as_str() {
            "/stream" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream(Box::new(Pattern::new(STREAM_BYTES))),
            },
            "/small-stream" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream(Box::new(Pattern::new(3 * 1024 * 1024 + 7))),
            },
            "/api/system" => Response::new(200).bytes(br#"{"version":"x"}"#.to_vec()),
            _ => Response::new(404),
        }
    }
}

fn server() -> TestServer {
    TestServer::start(
        App,
        ServerOptions {
            workers: 4,
            ..ServerOptions::default()
        },
    )
}

/// `GET /api/system` on a new connection within a second; the time taken.
fn probe(server: &TestServer) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET /api/system HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(s));
    let took = started.elapsed();
    match resp {
        Ok(r) => assert_eq!(r.status, 200),
        Err(e) => panic!("GET /api/system failed after {took:?}: {e}"),
    }
    assert!(
        took < Duration::from_secs(1),
        "GET /api/system took {took:?}"
    );
    took
}

fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Twelve clients (three times the pool) ask for large streamed bodies,
/// HTTP/1.1 and 1.0, and never read. The API keeps answering within a
/// second; so does a client that reads slowly, which gets every byte.
/// Threads and memory stay flat (measured in a process of its own).
#[test]
fn stalled_downloads_do_not_hold_the_workers() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "stalled_downloads_do_not_hold_the_workers",
    ) {
        return;
    }
    let server = server();
    // After one request the pool is up: the baseline.
    probe(&server);
    let threads_before = threads();
    let rss_before = reset_peak_rss();
    let mut stalled = Vec::new();
    for i in 0..12 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let request: &[u8] = if i % 3 == 0 {
            b"GET /stream HTTP/1.0\r\n\r\n"
        } else {
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
        };
        s.write_all(request).unwrap();
        stalled.push(s);
    }
    // A reader that pauses before reading, mid-attack.
    let slow = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut w = s.try_clone().unwrap();
            w.write_all(b"GET /small-stream HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_secs(2));
            let mut r = BufReader::new(s);
            let first = read_response(&mut r).unwrap();
            assert_eq!(first.header("transfer-encoding"), Some("chunked"));
            let len = verify_pattern(&mut &first.body[..]).unwrap();
            // The same connection serves the next request after the stream.
            w.write_all(b"GET /api/system HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let next = read_response(&mut r).unwrap();
            (len, next.status)
        })
    };
    let attack = Instant::now();
    let mut worst = Duration::ZERO;
    let mut max_threads = 0;
    while attack.elapsed() < Duration::from_secs(4) {
        worst = worst.max(probe(&server));
        max_threads = max_threads.max(threads());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (len, next) = slow.join().unwrap();
    assert_eq!(len, 3 * 1024 * 1024 + 7);
    assert_eq!(next, 200);
    let grew = peak_growth_kb(rss_before);
    eprintln!(
        "stalled downloads: worst /api/system {worst:?}; threads {threads_before} -> max {max_threads}; peak RSS +{grew} KiB"
    );
    // The slow reader's thread is the only new one.
    assert!(
        max_threads <= threads_before + 1,
        "threads grew from {threads_before} to {max_threads}"
    );
    // Parked pieces are a chunk each; the slow reader holds its 3 MiB.
    assert!(grew < 32 * 1024, "peak RSS grew by {grew} KiB");

    // The stalled clients did get the start of their answers (the streams
    // ran until their sockets filled), and reading now resumes them.
    let s = stalled.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"),
        "{headers:?}"
    );
    let mut got = vec![0u8; 8 * 1024 * 1024];
    r.read_exact(&mut got).unwrap();
}

/// A streamed answer to pipelined requests: the stream goes out whole, in
/// order, before the next answer, however many times it was parked.
#[test]
fn a_parked_stream_keeps_pipelined_answers_in_order() {
    let server = server();
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        b"GET /small-stream HTTP/1.1\r\nHost: x\r\n\r\nGET /api/system HTTP/1.1\r\nHost: x\r\n\r\nGET /small-stream HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    // Let the first stream fill the socket and park before reading.
    std::thread::sleep(Duration::from_millis(500));
    let mut r = BufReader::new(s);
    let a = read_response(&mut r).unwrap();
    assert_eq!(
        verify_pattern(&mut &a.body[..]).unwrap(),
        3 * 1024 * 1024 + 7
    );
    let b = read_response(&mut r).unwrap();
    assert_eq!(b.text(), r#"{"version":"x"}"#);
    let c = read_response(&mut r).unwrap();
    assert_eq!(
        verify_pattern(&mut &c.body[..]).unwrap(),
        3 * 1024 * 1024 + 7
    );
}
