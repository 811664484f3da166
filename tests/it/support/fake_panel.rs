//! A fake Pterodactyl panel for integration tests, behaving like the real
//! one toward a node (SPEC §8): daemon authentication, the paginated server
//! list, server configuration, and the transfer success/failure reports
//! (204 while the server is being transferred, which clears the mark; 409
//! otherwise). Knobs: servers, the transferring mark, forced 500s, a delay,
//! going down (connections refused) and back up; every request is logged.
//!
//! With nodes (`add_node`) and a transfer between them (`start_transfer`)
//! it behaves like Pterodactyl's ServerTransferController: a server is
//! listed only to the node that holds it; `success` from the new node
//! commits in a transaction (the server's row held, so other reports for
//! it wait behind), then calls `DELETE /api/servers/<uuid>` on the old
//! node (a failed DELETE is only logged, as the panel does) and answers
//! 204; `success` from the old node gets 403; any report after the
//! transfer ended gets 409 `Server is not being transferred.`; `failure`
//! ends it with the server staying on the old node. Switches:
//! `set_hold_row` (seconds the transaction holds the row before the
//! commit), `set_answer_after_commit`, `set_transaction` (off: no row lock,
//! the check and the commit are apart, as a panel without a transaction),
//! `set_success_delay` (before a success is looked at),
//! `set_failure_503` (failure reports answered 503),
//! `set_success_500_after_commit` (the next committed success answered 500,
//! as when something after the commit throws or a proxy times out while
//! PHP goes on).
//!
//! Use it from a test module with `use crate::support::fake_panel;`.
//!
//! It also mints transfer JWTs exactly like the panel's NodeJWTService, with
//! its own HMAC-SHA256 and base64url so it does not depend on `ferry::jwt`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One request the fake received, with the status it answered (0 when it
/// dropped the connection instead).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
    /// The calling node's `token_id`.
    pub caller: String,
}

impl Call {
    /// A request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
struct FakeServer {
    uuid: String,
    settings: Value,
    process_configuration: Value,
    transferring: bool,
    /// The node (`token_id`) that holds it; None: listed to every node.
    node: Option<String>,
    /// A transfer in progress: (old node, new node).
    transfer: Option<(String, String)>,
}

#[derive(Debug, Clone)]
struct FakeNode {
    token_id: String,
    token: String,
    /// Where the panel reaches the node (for its DELETE).
    url: Option<String>,
}

/// Finish switches (see the module comment).
#[derive(Debug, Clone, Default)]
struct Finish {
    hold_row: Duration,
    answer_after_commit: Duration,
    no_transaction: bool,
    success_delay: Duration,
    failure_503: bool,
    success_500_after_commit: bool,
}

struct State {
    token_id: String,
    token: String,
    nodes: Vec<FakeNode>,
    finish: Finish,
    /// Servers whose row a transaction holds.
    rows: Vec<String>,
    /// Requests as they arrive: (method, path, caller).
    arrivals: Vec<(String, String, String)>,
    /// What the panel logged (failed DELETEs, commits).
    notes: Vec<String>,
    servers: Vec<FakeServer>,
    fail_next: usize,
    delay: Duration,
    down: bool,
    stopping: bool,
    calls: Vec<Call>,
    /// Open connections, shut down when going down.
    conns: Vec<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    row_freed: std::sync::Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not wedge the test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakePanel {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl FakePanel {
    /// Starts a panel on 127.0.0.1 that accepts `Bearer <token_id>.<token>`.
    pub fn start(token_id: &str, token: &str) -> FakePanel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake panel");
        let addr = listener.local_addr().expect("fake panel address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token_id: token_id.to_string(),
                token: token.to_string(),
                nodes: Vec::new(),
                finish: Finish::default(),
                rows: Vec::new(),
                arrivals: Vec::new(),
                notes: Vec::new(),
                servers: Vec::new(),
                fail_next: 0,
                delay: Duration::ZERO,
                down: false,
                stopping: false,
                calls: Vec::new(),
                conns: Vec::new(),
            }),
            row_freed: std::sync::Condvar::new(),
        });
        let accept = spawn_accept(listener, shared.clone());
        FakePanel {
            shared,
            addr,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// The panel base URL (a node's `remote`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a server on this node with `settings` and a default
    /// `process_configuration` (stop with the `stop` command).
    pub fn add_server(&self, uuid: &str, settings: Value) {
        let pc = json!({"startup": {"done": [], "user_interaction": [], "strip_ansi": false},
                        "stop": {"type": "command", "value": "stop"}, "configs": []});
        self.add_server_with(uuid, settings, pc);
    }

    pub fn add_server_with(&self, uuid: &str, settings: Value, process_configuration: Value) {
        let mut st = self.shared.lock();
        st.servers.retain(|s| s.uuid != uuid);
        st.servers.push(FakeServer {
            uuid: uuid.to_string(),
            settings,
            process_configuration,
            transferring: false,
            node: None,
            transfer: None,
        });
    }

    /// A node the panel knows: it authenticates as `<token_id>.<token>`
    /// and is reached at `url` (set or changed with `set_node_url`).
    pub fn add_node(&self, token_id: &str, token: &str) {
        let mut st = self.shared.lock();
        st.nodes.retain(|n| n.token_id != token_id);
        st.nodes.push(FakeNode {
            token_id: token_id.to_string(),
            token: token.to_string(),
            url: None,
        });
    }

    /// Where the panel reaches a node (its base URL, `http://host:port`).
    pub fn set_node_url(&self, token_id: &str, url: &str) {
        let mut st = self.shared.lock();
        if let Some(n) = st.nodes.iter_mut().find(|n| n.token_id == token_id) {
            n.url = Some(url.trim_end_matches('/').to_string());
        }
    }

    /// Adds a server held by `node`.
    pub fn add_server_on(&self, uuid: &str, settings: Value, node: &str) {
        self.add_server(uuid, settings);
        let mut st = self.shared.lock();
        if let Some(s) = st.servers.iter_mut().find(|s| s.uuid == uuid) {
            s.node = Some(node.to_string());
        }
    }

    /// Says which node holds `uuid` (it is then listed to that node only).
    pub fn set_server_node(&self, uuid: &str, node: &str) {
        let mut st = self.shared.lock();
        if let Some(s) = st.servers.iter_mut().find(|s| s.uuid == uuid) {
            s.node = Some(node.to_string());
        }
    }

    /// Starts a transfer of `uuid` from node `old` to node `new`.
    pub fn start_transfer(&self, uuid: &str, old: &str, new: &str) {
        let mut st = self.shared.lock();
        let s = st
            .servers
            .iter_mut()
            .find(|s| s.uuid == uuid)
            .unwrap_or_else(|| panic!("fake panel has no server {uuid}"));
        s.transferring = true;
        s.transfer = Some((old.to_string(), new.to_string()));
    }

    /// The node that holds `uuid` now.
    pub fn server_node(&self, uuid: &str) -> Option<String> {
        self.shared
            .lock()
            .servers
            .iter()
            .find(|s| s.uuid == uuid)
            .and_then(|s| s.node.clone())
    }

    pub fn set_hold_row(&self, d: Duration) {
        self.shared.lock().finish.hold_row = d;
    }

    pub fn set_answer_after_commit(&self, d: Duration) {
        self.shared.lock().finish.answer_after_commit = d;
    }

    pub fn set_transaction(&self, on: bool) {
        self.shared.lock().finish.no_transaction = !on;
    }

    pub fn set_success_delay(&self, d: Duration) {
        self.shared.lock().finish.success_delay = d;
    }

    pub fn set_success_500_after_commit(&self, on: bool) {
        self.shared.lock().finish.success_500_after_commit = on;
    }

    pub fn set_failure_503(&self, on: bool) {
        self.shared.lock().finish.failure_503 = on;
    }

    /// Requests as they arrived (before any answer): (method, path, caller).
    pub fn arrivals(&self) -> Vec<(String, String, String)> {
        self.shared.lock().arrivals.clone()
    }

    /// Waits until a request to `path` has arrived; false on timeout.
    pub fn wait_arrival(&self, path: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .shared
                .lock()
                .arrivals
                .iter()
                .any(|(_, p, _)| p == path)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// What the panel noted (commits, failed DELETEs).
    pub fn notes(&self) -> Vec<String> {
        self.shared.lock().notes.clone()
    }

    /// True while a transfer of `uuid` is still open on the panel.
    pub fn transfer_open(&self, uuid: &str) -> bool {
        self.shared
            .lock()
            .servers
            .iter()
            .any(|s| s.uuid == uuid && s.transferring)
    }

    /// Transfer reports of `uuid` the panel accepted (2xx), by caller:
    /// (caller, "success" | "failure").
    pub fn accepted_reports(&self, uuid: &str) -> Vec<(String, String)> {
        let prefix = format!("/api/remote/servers/{uuid}/transfer/");
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && (200..300).contains(&c.status))
            .filter_map(|c| {
                let kind = c.path.strip_prefix(&prefix)?.to_string();
                Some((c.caller.clone(), kind))
            })
            .collect()
    }

    pub fn remove_server(&self, uuid: &str) {
        self.shared.lock().servers.retain(|s| s.uuid != uuid);
    }

    /// Marks a server as being transferred (what the panel does when it
    /// starts a transfer), or clears the mark. Panics for an unknown server.
    pub fn set_transferring(&self, uuid: &str, transferring: bool) {
        let mut st = self.shared.lock();
        let server = st
            .servers
            .iter_mut()
            .find(|s| s.uuid == uuid)
            .unwrap_or_else(|| panic!("fake panel has no server {uuid}"));
        server.transferring = transferring;
    }

    pub fn is_transferring(&self, uuid: &str) -> bool {
        self.shared
            .lock()
            .servers
            .iter()
            .any(|s| s.uuid == uuid && s.transferring)
    }

    /// The next `n` requests are answered 500.
    pub fn fail_next(&self, n: usize) {
        self.shared.lock().fail_next = n;
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Stops listening (connections are refused) and drops open ones.
    pub fn go_down(&self) {
        {
            let mut st = self.shared.lock();
            st.down = true;
            for c in st.conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        let handle = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // Wake the accept loop so it sees `down` and drops the listener.
            let _ = TcpStream::connect(self.addr);
            let _ = handle.join();
        }
    }

    /// Listens again on the same address.
    pub fn come_up(&self) {
        let mut accept = self.accept.lock().unwrap_or_else(|e| e.into_inner());
        if accept.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr).expect("rebind fake panel");
        self.shared.lock().down = false;
        *accept = Some(spawn_accept(listener, self.shared.clone()));
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Requests with this method and path (no query).
    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path == path)
            .collect()
    }

    /// The transfer reports for `uuid`: ("success" | "failure", status).
    pub fn transfer_reports(&self, uuid: &str) -> Vec<(String, u16)> {
        let prefix = format!("/api/remote/servers/{uuid}/transfer/");
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST")
            .filter_map(|c| {
                let kind = c.path.strip_prefix(&prefix)?.to_string();
                Some((kind, c.status))
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Waits until `done(calls)` holds or `timeout` passes; returns whether
    /// it held.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.shared.lock().calls) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A transfer JWT for `uuid`, keyed with the destination's `node_token`,
    /// minted like the panel does, with this panel's URL as `iss`.
    pub fn mint_transfer_jwt(&self, node_token: &str, uuid: &str) -> String {
        mint_transfer_jwt_with(
            &self.url(),
            "http://destination.node:8080",
            node_token,
            uuid,
        )
    }
}

impl Drop for FakePanel {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.go_down();
    }
}

fn spawn_accept(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            {
                let mut st = shared.lock();
                if st.down || st.stopping {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    st.conns.push(clone);
                }
                let shared = shared.clone();
                std::thread::spawn(move || serve_connection(&shared, stream));
            }
        }
        // The listener is dropped here: new connections are refused.
    })
}

/// Method, target, headers and body of one request.
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one request head and body; None on EOF, error or garbage.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        read_more(stream, buf)?;
    };
    let mut raw_headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut raw_headers);
    req.parse(&buf[..head_len]).ok()?;
    let method = req.method?.to_string();
    let target = req.path?.to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    buf.drain(..head_len);

    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(stream, buf)?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                read_more(stream, buf)?;
            }
            if size == 0 {
                // No trailers are sent by the clients under test.
                buf.drain(..2);
                break body;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else {
        let len: usize = find("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            read_more(stream, buf)?;
        }
        buf.drain(..len).collect()
    };
    Some((method, target, headers, body))
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    while let Some((method, target, headers, body)) = read_request(&mut stream, &mut buf) {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let caller = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.strip_prefix("Bearer "))
            .and_then(|v| v.split_once('.'))
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let mut call = Call {
            method,
            path,
            query,
            headers,
            body,
            status: 0,
            at: Instant::now(),
            caller,
        };
        let delay = {
            let mut st = shared.lock();
            st.arrivals
                .push((call.method.clone(), call.path.clone(), call.caller.clone()));
            st.delay
        };
        std::thread::sleep(delay);
        let report = transfer_report_target(&call);
        let answer = {
            let mut st = shared.lock();
            if st.down || st.stopping {
                st.calls.push(call);
                return;
            }
            let answer = match auth(&st, &call) {
                Err(refusal) => refusal,
                Ok(()) if report.is_some() && st.fail_next == 0 => {
                    drop(st);
                    let (uuid, kind) = report.clone().unwrap_or_default();
                    let answer = transfer_report(shared, &call, &uuid, &kind);
                    st = shared.lock();
                    answer
                }
                Ok(()) => route(&mut st, &call),
            };
            call.status = answer.0;
            st.calls.push(call.clone());
            answer
        };
        let (status, body) = answer;
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Internal Server Error",
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err()
        {
            return;
        }
        if call
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// The panel's error envelope.
fn error(status: u16, code: &str, detail: &str) -> (u16, Option<Value>) {
    (
        status,
        Some(json!({"errors": [{"code": code, "status": status.to_string(), "detail": detail}]})),
    )
}

/// DaemonAuthenticate: 401 without a bearer, 400 if not `<id>.<token>`,
/// 403 when either half does not match the panel's or a node's.
fn auth(st: &State, call: &Call) -> Result<(), (u16, Option<Value>)> {
    let Some(bearer) = call
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(error(
            401,
            "HttpException",
            "Access to this endpoint must include an Authorization header.",
        ));
    };
    let Some((id, token)) = bearer.split_once('.') else {
        return Err(error(
            400,
            "BadRequestHttpException",
            "The Authorization header provided was not in a valid format.",
        ));
    };
    let known = (id == st.token_id && token == st.token)
        || st
            .nodes
            .iter()
            .any(|n| n.token_id == id && n.token == token);
    if !known {
        return Err(error(
            403,
            "AccessDeniedHttpException",
            "You are not authorized to access this resource.",
        ));
    }
    Ok(())
}

/// `(uuid, "success" | "failure")` for a transfer report.
fn transfer_report_target(call: &Call) -> Option<(String, String)> {
    if call.method != "POST" {
        return None;
    }
    let rest = call.path.strip_prefix("/api/remote/servers/")?;
    let mut parts = rest.split('/');
    let uuid = parts.next()?.to_string();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("transfer"), Some(kind @ ("success" | "failure")), None) => {
            Some((uuid, kind.to_string()))
        }
        _ => None,
    }
}

/// ServerTransferController::success / ::failure.
fn transfer_report(shared: &Shared, call: &Call, uuid: &str, kind: &str) -> (u16, Option<Value>) {
    let finish = shared.lock().finish.clone();
    let conflict = || {
        error(
            409,
            "ConflictHttpException",
            "Server is not being transferred.",
        )
    };
    if kind == "failure" && finish.failure_503 {
        return error(503, "HttpException", "Service Unavailable");
    }
    if kind == "success" {
        std::thread::sleep(finish.success_delay);
    }
    let transaction = !finish.no_transaction;
    // The transaction's row lock: reports for this server wait behind it.
    let mut st = shared.lock();
    if transaction {
        while st.rows.iter().any(|r| r == uuid) {
            st = shared.row_freed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.rows.push(uuid.to_string());
    }
    let release = |mut st: MutexGuard<'_, State>| {
        if transaction {
            st.rows.retain(|r| r != uuid);
            shared.row_freed.notify_all();
        }
    };
    let Some(server) = st.servers.iter().find(|s| s.uuid == uuid).cloned() else {
        release(st);
        return error(
            404,
            "NotFoundHttpException",
            "The requested resource could not be found on the server.",
        );
    };
    if !server.transferring {
        release(st);
        return conflict();
    }
    let Some((old, new)) = server.transfer.clone() else {
        // A transfer without nodes (older tests): end it, 204.
        if let Some(s) = st.servers.iter_mut().find(|s| s.uuid == uuid) {
            s.transferring = false;
        }
        release(st);
        return (204, None);
    };
    if kind == "failure" {
        if let Some(s) = st.servers.iter_mut().find(|s| s.uuid == uuid) {
            s.transferring = false;
            s.transfer = None;
        }
        st.notes
            .push(format!("failure from {} accepted", call.caller));
        release(st);
        return (204, None);
    }
    if call.caller == old {
        release(st);
        return error(
            403,
            "AccessDeniedHttpException",
            "You are not authorized to access this resource.",
        );
    }
    // Inside the transaction: the row is held this long before the commit.
    drop(st);
    std::thread::sleep(finish.hold_row);
    let mut st = shared.lock();
    let Some(s) = st.servers.iter_mut().find(|s| s.uuid == uuid) else {
        release(st);
        return conflict();
    };
    if transaction && !s.transferring {
        // Cannot happen under the row lock; kept for clarity.
        release(st);
        return conflict();
    }
    s.transferring = false;
    s.transfer = None;
    s.node = Some(new.clone());
    st.notes
        .push(format!("success from {} committed", call.caller));
    let old_url = st
        .nodes
        .iter()
        .find(|n| n.token_id == old)
        .and_then(|n| n.url.clone().map(|u| (u, n.token.clone())));
    release(st);
    // After the commit: delete the server on the old node, then answer.
    if let Some((url, token)) = old_url {
        let outcome = delete_on_node(&url, &token, uuid);
        shared
            .lock()
            .notes
            .push(format!("DELETE on {old}: {outcome}"));
    }
    std::thread::sleep(finish.answer_after_commit);
    if finish.success_500_after_commit {
        shared.lock().finish.success_500_after_commit = false;
        return error(
            500,
            "HttpException",
            "An unexpected error was encountered while processing this request, please try again.",
        );
    }
    (204, None)
}

/// `DELETE {url}/api/servers/<uuid>` with the node's token; the status or
/// the error, as the panel would log it.
fn delete_on_node(url: &str, token: &str, uuid: &str) -> String {
    let Some(host) = url.strip_prefix("http://") else {
        return format!("unsupported url {url}");
    };
    let attempt = || -> std::io::Result<String> {
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "DELETE /api/servers/{uuid} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.lines().next().unwrap_or("").to_string())
    };
    match attempt() {
        Ok(line) => line,
        Err(e) => format!("failed: {e}"),
    }
}

fn route(st: &mut State, call: &Call) -> (u16, Option<Value>) {
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return error(
            500,
            "HttpException",
            "An unexpected error was encountered while processing this request, please try again.",
        );
    }
    if let Err(refusal) = auth(st, call) {
        return refusal;
    }

    let segments: Vec<&str> = call
        .path
        .strip_prefix("/api/remote/servers")
        .map(|rest| rest.split('/').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let not_found = || {
        error(
            404,
            "NotFoundHttpException",
            "The requested resource could not be found on the server.",
        )
    };
    if !call.path.starts_with("/api/remote/servers") {
        return not_found();
    }
    match (call.method.as_str(), segments.as_slice()) {
        ("GET", []) => list_page(st, call, &call.caller),
        ("GET", [uuid]) => match st.servers.iter().find(|s| s.uuid == *uuid) {
            Some(s) => (
                200,
                Some(
                    json!({"settings": s.settings, "process_configuration": s.process_configuration}),
                ),
            ),
            None => not_found(),
        },
        // Success and failure both end the transfer on the panel's side.
        ("POST", [uuid, "transfer", "success" | "failure"]) => {
            match st.servers.iter_mut().find(|s| s.uuid == *uuid) {
                None => not_found(),
                Some(s) if s.transferring => {
                    s.transferring = false;
                    (204, None)
                }
                Some(_) => error(
                    409,
                    "ConflictHttpException",
                    "Server is not being transferred.",
                ),
            }
        }
        _ => not_found(),
    }
}

/// Laravel's length-aware paginator: `page` below 1 or not a number is
/// page 1; `meta` as the panel's transformer emits it.
fn list_page(st: &State, call: &Call, caller: &str) -> (u16, Option<Value>) {
    let mine: Vec<&FakeServer> = st
        .servers
        .iter()
        .filter(|s| s.node.as_deref().is_none_or(|n| n == caller))
        .collect();
    let per_page: usize = call
        .query_param("per_page")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(50);
    let page: usize = call
        .query_param("page")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1);
    let total = mine.len();
    let last_page = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page);
    let items: Vec<Value> = mine
        .iter()
        .skip(start)
        .take(per_page)
        .map(|s| json!({"uuid": s.uuid, "settings": s.settings, "process_configuration": s.process_configuration}))
        .collect();
    let (from, to) = if items.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (json!(start + 1), json!(start + items.len()))
    };
    (
        200,
        Some(json!({
            "data": items,
            "links": {"first": null, "last": null, "prev": null, "next": null},
            "meta": {"current_page": page, "from": from, "last_page": last_page,
                     "path": "/api/remote/servers", "per_page": per_page, "to": to, "total": total},
        })),
    )
}

/// A transfer JWT for `uuid`, keyed with the destination's `node_token`,
/// minted like the panel's NodeJWTService: `iss`, `aud` as an array, `jti`
/// = sha256 hex of the uuid, `iat`, `nbf` 5 min back, `exp` 15 min ahead,
/// `sub`, a 16-character `unique_id`; `jti` and `sub` also in the header;
/// integer dates (Pterodactyl's TimestampDates).
pub fn mint_transfer_jwt(node_token: &str, uuid: &str) -> String {
    mint_transfer_jwt_with(
        "http://panel.test",
        "http://destination.node:8080",
        node_token,
        uuid,
    )
}

pub fn mint_transfer_jwt_with(iss: &str, aud: &str, node_token: &str, uuid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let jti = hex::encode(Sha256::digest(uuid.as_bytes()));
    let header = json!({"typ": "JWT", "alg": "HS256", "jti": jti, "sub": uuid});
    let claims = json!({
        "iss": iss,
        "aud": [aud],
        "jti": jti,
        "iat": now,
        "nbf": now - 300,
        "exp": now + 900,
        "sub": uuid,
        "unique_id": random_alnum(16),
    });
    sign_hs256(node_token.as_bytes(), &header, &claims)
}

/// `header.claims.signature`, HMAC-SHA256 (RFC 2104) over the first two.
pub fn sign_hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mac = hmac_sha256(key, input.as_bytes());
    format!("{input}.{}", base64url(&mac))
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | ((b as u32) << (16 - 8 * i)));
        for i in 0..chunk.len() + 1 {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn random_alnum(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("os randomness");
    bytes
        .iter()
        .map(|b| A[*b as usize % A.len()] as char)
        .collect()
}

impl FakePanel {
    /// What the panel does to start a transfer of `server` from `source` to
    /// `dest`: mark it transferring, mint the destination's JWT and post the
    /// source's transfer request. Returns the source's answer.
    pub fn begin_transfer(
        &self,
        source: &super::node::TestNode,
        dest: &super::node::TestNode,
        server: &str,
    ) -> (u16, Value) {
        self.set_transferring(server, true);
        let jwt = self.mint_transfer_jwt(&dest.token, server);
        source.request(
            "POST",
            &format!("/api/servers/{server}/transfer"),
            Some(json!({
                "url": dest.url("/api/transfers"),
                "token": format!("Bearer {jwt}"),
                "server": {"uuid": server, "start_on_completion": false},
            })),
        )
    }
}
