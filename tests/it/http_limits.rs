//! Resource-bound tests for the HTTP server: peak memory while a client
//! sends an 8 MiB header line or a multi-GiB chunked body, and surviving
//! accept errors when the process runs out of file descriptors.
//!
//! They change process-wide state (the peak-RSS mark, the fd limit, the
//! logger), so each runs in a process of its own, one at a time.

use crate::support::http_common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ferry::http::{Handler, Request, Response, ServerOptions};
use http_common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct App;

impl Handler for App {
    fn handle(&self, req: &mut Request) -> Response {
        match req.path.as_str() {
            "/verify" => match verify_pattern(req.body()) {
                Ok(n) => Response::new(200).bytes(n.to_string().into_bytes()),
                Err(e) => Response::new(400).bytes(format!("{:?} {e}", e.kind()).into_bytes()),
            },
            "/early401" => Response::new(401),
            _ => Response::new(200).bytes(b"hello".to_vec()),
        }
    }
}

fn warm_up(server: &TestServer) {
    // Touch the server's threads and buffers before measuring.
    for _ in 0..4 {
        assert_eq!(
            roundtrip(server.addr, b"GET / HTTP/1.1\r\n\r\n").text(),
            "hello"
        );
    }
}

#[test]
fn eight_mib_header_line_keeps_memory_flat() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "eight_mib_header_line_keeps_memory_flat",
    ) {
        return;
    }
    let _serial = serial();
    let server = TestServer::start(App, ServerOptions::default());
    warm_up(&server);
    let baseline = reset_peak_rss();

    let s = server.connect();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        // The server answers and closes long before all of it is sent.
        if w.write_all(b"GET / HTTP/1.1\r\nX-Huge: ").is_err() {
            return;
        }
        for _ in 0..128 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = w.write_all(b"\r\n\r\n");
    });
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    writer.join().unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(
        roundtrip(server.addr, b"GET / HTTP/1.1\r\n\r\n").text(),
        "hello"
    );

    let growth = peak_growth_kb(baseline);
    eprintln!("8 MiB header line: peak RSS growth {growth} KiB");
    assert!(growth < 4 * 1024, "peak RSS grew by {growth} KiB");
}

/// Size of the streamed upload. 2 GiB by default; `HTTP_TEST_UPLOAD_MIB`
/// overrides it (a debug build moves about 1 GiB/s here).
fn upload_bytes() -> u64 {
    std::env::var("HTTP_TEST_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(2048)
        << 20
}

#[test]
fn multi_gib_chunked_upload_streams_with_flat_memory() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "multi_gib_chunked_upload_streams_with_flat_memory",
    ) {
        return;
    }
    let _serial = serial();
    let server = TestServer::start(App, ServerOptions::default());
    warm_up(&server);
    let size = upload_bytes();
    let baseline = reset_peak_rss();
    let started = Instant::now();

    let mut s = server.connect();
    s.write_all(b"POST /verify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // A generator, not a buffer: the client holds one chunk at a time.
    let sent = write_chunked(&mut s, &mut Pattern::new(size), 256 * 1024 - 7).unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    let took = started.elapsed();

    assert_eq!(sent, size);
    assert_eq!((resp.status, resp.text()), (200, size.to_string()));
    let growth = peak_growth_kb(baseline);
    eprintln!(
        "{} MiB chunked upload: {:.1} s, peak RSS growth {growth} KiB",
        size >> 20,
        took.as_secs_f64()
    );
    assert!(growth < 16 * 1024, "peak RSS grew by {growth} KiB");
}

#[test]
fn huge_declared_length_allocates_nothing() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "huge_declared_length_allocates_nothing",
    ) {
        return;
    }
    let _serial = serial();
    let server = TestServer::start(App, ServerOptions::default());
    warm_up(&server);
    let baseline = reset_peak_rss();
    for _ in 0..20 {
        let s = server.connect();
        (&s).write_all(b"PUT /early401 HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n")
            .unwrap();
        (&s).write_all(&[0u8; 1024]).unwrap();
        let resp = read_response(&mut BufReader::new(s)).unwrap();
        assert_eq!(resp.status, 401);
        assert!(resp.closes());
    }
    let growth = peak_growth_kb(baseline);
    eprintln!("20 requests declaring 99999999999999 bytes: peak RSS growth {growth} KiB");
    assert!(growth < 4 * 1024, "peak RSS grew by {growth} KiB");
}

// ------------------------------------------------------------ fd exhaustion

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(logger).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        logger
    })
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: &libc::rlimit) {
    // SAFETY: setrlimit reads a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) }, 0);
}

#[test]
fn accept_survives_running_out_of_file_descriptors() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "accept_survives_running_out_of_file_descriptors",
    ) {
        return;
    }
    let _serial = serial();
    let logs = logs();
    let server = TestServer::start(App, ServerOptions::default());
    warm_up(&server);

    let original = nofile();
    set_nofile(&libc::rlimit {
        rlim_cur: 512.min(original.rlim_cur),
        rlim_max: original.rlim_max,
    });
    // Use up every descriptor but one: the client's socket takes it, so the
    // server's accept() fails with EMFILE.
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    filler.pop();
    let client = TcpStream::connect(server.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&client).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let exhausted = logs
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("accept failed") && l.contains("pausing accepts"));

    // Give descriptors back: the server must pick the connection up.
    let freed_at = Instant::now();
    filler.truncate(filler.len().saturating_sub(16));
    let resp = read_response(&mut BufReader::new(client)).unwrap();
    let waited = freed_at.elapsed();
    drop(filler);
    set_nofile(&original);

    assert!(
        exhausted,
        "no accept error was logged: {:#?}",
        logs.0.lock().unwrap()
    );
    assert_eq!(resp.text(), "hello");
    assert!(
        waited < Duration::from_secs(2),
        "took {waited:?} to recover"
    );
    assert_eq!(
        roundtrip(server.addr, b"GET / HTTP/1.1\r\n\r\n").text(),
        "hello"
    );
}

#[test]
fn thousands_of_slow_connections_do_not_starve_requests() {
    if crate::support::rerun_in_own_process(
        module_path!(),
        "thousands_of_slow_connections_do_not_starve_requests",
    ) {
        return;
    }
    let _serial = serial();
    let original = nofile();
    let wanted = 8192.min(original.rlim_max);
    set_nofile(&libc::rlimit {
        rlim_cur: wanted,
        rlim_max: original.rlim_max,
    });
    // Client and server ends share this process's descriptor table.
    let clients = ((wanted as usize).saturating_sub(1200)).min(3000);
    let server = TestServer::start(App, ServerOptions::default());
    warm_up(&server);
    let baseline = reset_peak_rss();
    let mut slow = Vec::with_capacity(clients);
    for i in 0..clients {
        let s = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 0 {
            (&s).write_all(b"POST /verify HTTP/1.1\r\nX-Slow: a")
                .unwrap();
        }
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let resp = roundtrip(server.addr, b"GET / HTTP/1.1\r\n\r\n");
    let took = started.elapsed();
    let growth = peak_growth_kb(baseline);
    drop(slow);
    drop(server);
    set_nofile(&original);
    eprintln!(
        "{clients} slow connections: request answered in {took:?}, peak RSS growth {growth} KiB"
    );
    assert_eq!(resp.text(), "hello");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // At most max_connections (1024) are held, each with a small buffer.
    assert!(growth < 16 * 1024, "peak RSS grew by {growth} KiB");
}
