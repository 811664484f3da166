//! Shared helpers for the HTTP server tests: a server running on a loopback
//! port, a minimal HTTP/1.1 response reader, a deterministic body generator
//! and memory probes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ferry::http::{Handler, HttpServer, ServerOptions, ShutdownHandle};

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start(handler: impl Handler, options: ServerOptions) -> TestServer {
        Self::start_arc(Arc::new(handler), options, Duration::from_secs(5))
    }

    pub fn start_arc(
        handler: Arc<dyn Handler>,
        options: ServerOptions,
        grace: Duration,
    ) -> TestServer {
        let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run(handler, grace));
        TestServer {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Stops the server and waits for `run` to return.
    pub fn stop(&mut self) -> io::Result<()> {
        self.shutdown.shutdown();
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads the status line and headers of one response (including 1xx).
pub fn read_head(r: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let status_line = read_line(r)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, headers))
}

/// Reads one final response; `head_request` for responses to HEAD.
pub fn read_response_to(r: &mut impl BufRead, head_request: bool) -> io::Result<Resp> {
    let (status, headers) = read_head(r)?;
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .map_err(io::Error::other)?;
            if size == 0 {
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            r.read_exact(&mut resp.body[start..])?;
            assert_eq!(read_line(r)?, "");
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().unwrap();
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

pub fn read_response(r: &mut impl BufRead) -> io::Result<Resp> {
    read_response_to(r, false)
}

/// Sends `raw` on a new connection and reads one response.
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut BufReader::new(s)).unwrap()
}

/// Whether the server closed the connection: EOF (or reset) within `wait`.
pub fn is_closed(r: &mut impl Read, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

/// A deterministic pseudo-random byte stream of a given length, produced
/// from a fixed block so memory stays constant whatever the length.
pub struct Pattern {
    block: Vec<u8>,
    pos: u64,
    len: u64,
}

pub const PATTERN_BLOCK: usize = 65_521; // prime, so chunk edges drift across it

pub fn pattern_block() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..PATTERN_BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern {
            block: pattern_block(),
            pos: 0,
            len,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let off = (self.pos % PATTERN_BLOCK as u64) as usize;
        let n = buf
            .len()
            .min(PATTERN_BLOCK - off)
            .min(left.min(usize::MAX as u64) as usize);
        buf[..n].copy_from_slice(&self.block[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Checks that a stream carries exactly the pattern; returns its length.
pub fn verify_pattern(r: &mut dyn Read) -> io::Result<u64> {
    let block = pattern_block();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos: u64 = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(pos);
        }
        let mut i = 0;
        while i < n {
            let off = (pos % PATTERN_BLOCK as u64) as usize;
            let m = (n - i).min(PATTERN_BLOCK - off);
            if buf[i..i + m] != block[off..off + m] {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("body differs near byte {pos}"),
                ));
            }
            i += m;
            pos += m as u64;
        }
    }
}

/// Writes everything from `src` as a chunked body with `chunk`-sized chunks.
pub fn write_chunked(w: &mut impl Write, src: &mut impl Read, chunk: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; chunk + 32];
    let mut total = 0;
    loop {
        // Leave room in front for the size line.
        let n = src.read(&mut buf[20..20 + chunk])?;
        if n == 0 {
            break;
        }
        let size = format!("{n:x}\r\n");
        let start = 20 - size.len();
        buf[start..20].copy_from_slice(size.as_bytes());
        buf[20 + n..22 + n].copy_from_slice(b"\r\n");
        w.write_all(&buf[start..22 + n])?;
        total += n as u64;
    }
    w.write_all(b"0\r\n\r\n")?;
    Ok(total)
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Resets the peak-RSS mark (Linux `clear_refs` 5) and returns the current
/// RSS in KiB, the baseline for [`peak_growth_kb`].
pub fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_kb("VmRSS:")
}

/// Peak RSS since the last reset, minus `baseline`, in KiB.
pub fn peak_growth_kb(baseline: u64) -> u64 {
    status_kb("VmHWM:").saturating_sub(baseline)
}
