//! Test support: an HTTP/1.1 reverse proxy shaped like Cloudflare's free
//! plan, for the segmented transport's tests. One request per connection
//! (it asks both sides to close after the answer). It answers 413 to a
//! request body over `body_limit` (at once for a declared length, as soon
//! as a chunked body passes it), cuts a connection idle in both
//! directions for `idle`, can cut every open connection once after
//! forwarding a number of body bytes, and can hide the segmented API
//! (404, as Wings answers) so the source falls back to the classic POST.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    upstream: Mutex<SocketAddr>,
    body_limit: u64,
    idle: Duration,
    /// Request body bytes forwarded upstream, over all connections.
    forwarded: AtomicU64,
    /// Cut once when `forwarded` passes this (0: never).
    cut_at: AtomicU64,
    cuts: AtomicU64,
    refused: AtomicU64,
    idle_cuts: AtomicU64,
    hide_sessions: AtomicBool,
    epoch: Instant,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, body_limit: u64, idle: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            body_limit,
            idle,
            forwarded: AtomicU64::new(0),
            cut_at: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            idle_cuts: AtomicU64::new(0),
            hide_sessions: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let s = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                std::thread::spawn(move || handle(&s, client));
            }
        });
        Proxy { addr, state }
    }

    /// The URL of `path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock().unwrap() = upstream;
    }

    /// Cut the connections open when `bytes` more request-body bytes
    /// have gone through (once).
    pub fn cut_once_after(&self, bytes: u64) {
        let now = self.state.forwarded.load(Ordering::SeqCst);
        self.state.cut_at.store(now + bytes, Ordering::SeqCst);
    }

    pub fn hide_session_api(&self, hide: bool) {
        self.state.hide_sessions.store(hide, Ordering::SeqCst);
    }

    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    pub fn refused_413(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    pub fn idle_cuts(&self) -> u64 {
        self.state.idle_cuts.load(Ordering::SeqCst)
    }
}

fn answer(client: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads up to the end of a message head; returns (head, bytes after it).
fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with `Connection: close` in place of any connection header.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n\r\n")
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("connection:") && !l.starts_with("keep-alive:")
        })
        .collect();
    lines.push("Connection: close");
    lines.join("\r\n") + "\r\n\r\n"
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn handle(state: &Arc<State>, mut client: TcpStream) {
    let idle = state.idle;
    let _ = client.set_read_timeout(Some(idle));
    let Some((head, rest)) = read_head(&mut client) else {
        return;
    };
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    if state.hide_sessions.load(Ordering::SeqCst) && path.starts_with("/api/transfers/session") {
        answer(&mut client, "404 Not Found", "{\"error\":\"not found\"}");
        return;
    }
    let declared = header_value(&head, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.body_limit) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        answer(
            &mut client,
            "413 Payload Too Large",
            "<html>413 Request Entity Too Large</html>",
        );
        return;
    }
    let upstream_addr = *state.upstream.lock().unwrap();
    let Ok(mut upstream) = TcpStream::connect(upstream_addr) else {
        answer(
            &mut client,
            "502 Bad Gateway",
            "<html>502 Bad Gateway</html>",
        );
        return;
    };
    let _ = upstream.set_read_timeout(Some(idle));
    if upstream.write_all(closing(&head).as_bytes()).is_err() {
        return;
    }
    let last = Arc::new(AtomicU64::new(0));
    let touch = {
        let (last, epoch) = (Arc::clone(&last), state.epoch);
        move || last.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst)
    };
    touch();
    // Response direction: inject `Connection: close` into the head.
    let down = {
        let (mut up, mut cl) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
        let state = Arc::clone(state);
        let last = Arc::clone(&last);
        let touch = touch.clone();
        std::thread::spawn(move || {
            let mut wrote_head = false;
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match up.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        touch();
                        if wrote_head {
                            if cl.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            continue;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                            let mut out = closing(&head).into_bytes();
                            out.extend_from_slice(&pending[end + 4..]);
                            if cl.write_all(&out).is_err() {
                                break;
                            }
                            wrote_head = true;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if idle_both(&state, &last) {
                            state.idle_cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = cl.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
        })
    };
    // Request direction: count body bytes, enforce the limit and the cut.
    let mut body = rest.len() as u64;
    let mut first = Some(rest);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match first.take() {
            Some(rest) if !rest.is_empty() => {
                buf[..rest.len()].copy_from_slice(&rest);
                rest.len()
            }
            Some(_) => continue,
            None => match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    body += n as u64;
                    n
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if idle_both(state, &last) {
                        state.idle_cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            },
        };
        touch();
        if body > state.body_limit {
            state.refused.fetch_add(1, Ordering::SeqCst);
            let _ = upstream.shutdown(Shutdown::Both);
            answer(
                &mut client,
                "413 Payload Too Large",
                "<html>413 Request Entity Too Large</html>",
            );
            break;
        }
        let total = state.forwarded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let cut_at = state.cut_at.load(Ordering::SeqCst);
        if cut_at > 0 && total >= cut_at {
            state.cut_at.store(0, Ordering::SeqCst);
            state.cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if upstream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // The request side ends when the answer was relayed (the response
    // thread closed the client), or on a cut, a refusal or idleness.
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = down.join();
}

fn idle_both(state: &State, last: &AtomicU64) -> bool {
    let now = state.epoch.elapsed().as_millis() as u64;
    now.saturating_sub(last.load(Ordering::SeqCst)) >= state.idle.as_millis() as u64
}
