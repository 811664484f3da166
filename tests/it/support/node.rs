//! Test support: a real `ferry` node (the built binary) on a loopback port
//! with its own config, state and data directories, plus a small JSON HTTP
//! client. Used via `use crate::support::node;`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-node-token-0123456789abcdef";

#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Panel URL; None = standalone.
    pub remote: Option<String>,
    /// `none` unless set.
    pub environment: Option<String>,
    pub docker_socket: Option<String>,
    /// Appended under `system.transfers:`.
    pub transfers_yaml: String,
    pub token: Option<String>,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Start the node with this soft limit on open files.
    pub open_files_soft_limit: Option<u64>,
    /// Reuse this root directory (restart tests).
    pub root: Option<PathBuf>,
    /// The node removes `root` when dropped (a root the test made with
    /// `tempfile::tempdir().keep()`), unless `keep_root` hands it on.
    pub own_root: bool,
    /// Run the node as `nobody` (uid/gid 65534) through `setpriv`, as an
    /// operator running ferry as an ordinary user would. The root
    /// directory and config are handed to that user (not recursively: a
    /// test that pre-fills the root gives away what it wants with
    /// `give_to_nobody`). Needs the tests to run as root.
    pub unprivileged: bool,
    /// The node's `token_id` toward the panel (`testtokenid` unless set):
    /// distinct ids let the fake panel tell two nodes apart.
    pub token_id: Option<String>,
    /// `api.host` (`127.0.0.1` unless set; `::1` and `::` listen on IPv6).
    pub host: Option<String>,
    /// Lines appended under `system:` (e.g. `user:` for the owner of
    /// received files), already indented by two spaces.
    pub system_yaml: String,
    /// Run the binary under this command and its arguments (e.g. `setpriv`
    /// with the systemd unit's capability set; see ops_install.rs).
    pub launcher: Vec<String>,
    /// `api.port` (0, any free port, unless set): a node restarted on its
    /// old port is reached again by a peer that kept its URL.
    pub port: Option<u16>,
}

/// The uid and gid an `unprivileged` node runs as.
pub const NOBODY: u32 = 65534;

/// Makes `path` (and with `recursive` everything beneath it) belong to
/// `NOBODY`, so an unprivileged node can use it.
pub fn give_to_nobody(path: &Path, recursive: bool) {
    let mut cmd = Command::new("chown");
    if recursive {
        cmd.arg("-R");
    }
    let status = cmd
        .arg("-h")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {} failed", path.display());
}

pub struct TestNode {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
    pub root: PathBuf,
    pub data: PathBuf,
    pub config_path: PathBuf,
    /// `https` when started with `tls` (then `url` names `localhost`, the
    /// test certificate's name).
    pub scheme: &'static str,
    /// Removed when the node is dropped, after its process is gone.
    owned_root: Option<PathBuf>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// While set, the node's stderr is not read (its pipe fills up).
    stderr_paused: Arc<std::sync::atomic::AtomicBool>,
}

impl TestNode {
    pub fn start() -> TestNode {
        TestNode::start_with(NodeOptions::default())
    }

    pub fn start_with(options: NodeOptions) -> TestNode {
        let (owned_root, root) = match &options.root {
            Some(root) => (options.own_root.then(|| root.clone()), root.clone()),
            None => {
                let root = tempfile::tempdir().expect("tempdir").keep();
                (Some(root.clone()), root)
            }
        };
        let data = root.join("volumes");
        let token = options.token.clone().unwrap_or_else(|| TOKEN.to_string());
        let mut yaml = format!(
            "uuid: 7c8e0e2a-1d4b-4e55-9b1a-0f2d3c4b5a69\ntoken_id: {}\ntoken: {token}\napi:\n  host: \"{}\"\n  port: {}\n{}system:\n  root_directory: {}\n  data: {}\n  backup_directory: {}\n  log_directory: {}\n  environment: {}\n{}  transfers:\n{}\n",
            options.token_id.as_deref().unwrap_or("testtokenid"),
            options.host.as_deref().unwrap_or("127.0.0.1"),
            options.port.unwrap_or(0),
            options.tls.as_ref().map_or(String::new(), |(cert, key)| format!(
                "  ssl:\n    enabled: true\n    cert: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )),
            root.join("root").display(),
            data.display(),
            // Never the system's own directories from a test.
            root.join("backups").display(),
            root.join("log").display(),
            options.environment.as_deref().unwrap_or("none"),
            options.system_yaml,
            // A short stop timeout by default, unless the test sets one.
            indent(
                &if options.transfers_yaml.contains("stop_timeout") {
                    options.transfers_yaml.clone()
                } else {
                    format!("stop_timeout: 3\n{}", options.transfers_yaml)
                },
                4
            ),
        );
        if let Some(remote) = &options.remote {
            yaml.push_str(&format!("remote: {remote}\n"));
        }
        if let Some(socket) = &options.docker_socket {
            yaml.push_str(&format!(
                "docker:\n  socket: {socket}\n  network:\n    name: none\n"
            ));
        }
        let config_path = root.join("config.yml");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&config_path, yaml).unwrap();
        let mut cmd = if options.unprivileged {
            give_to_nobody(&root, false);
            give_to_nobody(&config_path, false);
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg("--clear-groups")
                .arg(env!("CARGO_BIN_EXE_ferry"));
            c
        } else if let Some((program, args)) = options.launcher.split_first() {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_ferry"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("FERRY_LOG", "debug")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        if let Some(soft) = options.open_files_soft_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn ferry");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr_paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            let paused = Arc::clone(&stderr_paused);
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stderr).lines();
                loop {
                    while paused.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let Some(Ok(line)) = lines.next() else { break };
                    if std::env::var("FERRY_TEST_ECHO").is_ok() {
                        eprintln!("[node] {line}");
                    }
                    if let Some(pos) = line.find("listening on ") {
                        let _ = tx.send(line[pos + 13..].trim().to_string());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        // A node listening on every address is reached on loopback.
        let addr = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        TestNode {
            child,
            addr,
            token,
            root,
            data,
            config_path,
            scheme: if options.tls.is_some() {
                "https"
            } else {
                "http"
            },
            owned_root,
            log,
            stderr_paused,
        }
    }

    /// Stops (true) or resumes (false) reading the node's stderr.
    pub fn pause_stderr(&self, paused: bool) {
        self.stderr_paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps the root directory after this node is dropped (restart tests).
    pub fn keep_root(&mut self) -> PathBuf {
        self.owned_root = None;
        self.root.clone()
    }

    pub fn url(&self, path: &str) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}{}", self.addr.port(), path),
            _ => format!("http://{}{}", self.addr, path),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.request_auth(method, path, body, Some(&format!("Bearer {}", self.token)))
    }

    pub fn request_auth(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        auth: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let agent = TestNode::agent();
        let url = self.url(path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let result = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&b).unwrap())
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, value)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.request("GET", path, None)
    }

    /// Sends raw bytes and returns everything the node answers until it
    /// closes or `timeout` passes.
    pub fn raw(&self, bytes: &[u8], timeout: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A /proc/<pid>/status field in KiB (VmRSS, VmHWM).
    pub fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(60))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn server_dir(&self, uuid: &str) -> PathBuf {
        self.data.join(uuid)
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.join("root/ferry/audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until this node's latest transfer of `server` has moved
    /// archive bytes (the stream is under way).
    pub fn wait_transfer_bytes(&self, server: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, r) = self.get(&format!("/api/servers/{server}/transfer"));
            if code == 200 && r["progress"]["wire_bytes"].as_u64().unwrap_or(0) > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no bytes moved for {server}: {r}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Polls the latest transfer record of `server` until its status is
    /// terminal; returns it.
    pub fn wait_transfer_end(&self, server: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, record) = self.get(&format!("/api/servers/{server}/transfer"));
            if code == 200 {
                let status = record["status"].as_str().unwrap_or("");
                if matches!(status, "completed" | "failed" | "cancelled") {
                    return record;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "transfer of {server} did not end in {timeout:?}: {record}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(root) = self.owned_root.take() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(spaces)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small game-server-like tree: configs, a world with region files,
/// an empty directory, symlinks (relative, absolute, dangling), modes.
pub fn make_server_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("world/region")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("plugins/empty")).unwrap();
    std::fs::write(
        dir.join("server.properties"),
        "motd=hello\nmax-players=20\n",
    )
    .unwrap();
    std::fs::write(dir.join("eula.txt"), "eula=true\n").unwrap();
    let mut region = vec![0u8; 3 * 1024 * 1024 + 17];
    let mut x: u32 = 12345;
    for (i, b) in region.iter_mut().enumerate() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = if i % 2 == 0 { (x >> 16) as u8 } else { 0 };
    }
    std::fs::write(dir.join("world/region/r.0.0.mca"), &region).unwrap();
    std::fs::write(dir.join("world/level.dat"), b"\x1f\x8bnot-really").unwrap();
    for i in 0..50 {
        std::fs::write(
            dir.join(format!("logs/{i}.log")),
            format!("line {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    std::fs::write(dir.join("start.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("start.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("secret.key"), "k").unwrap();
    std::fs::set_permissions(
        dir.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    std::os::unix::fs::symlink("server.properties", dir.join("link-relative")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link-absolute")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", dir.join("link-dangling")).unwrap();
    std::fs::write(dir.join("ünïcødé name.txt"), "u").unwrap();
}

/// Every file under `dir`, relative (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// (path, kind, mode, size or link target, content hash) for every entry,
/// sorted: two trees are identical when these lists are equal.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(root.join(&path)).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(root.join(&path)).unwrap();
                out.push(format!("L {} -> {}", path.display(), target.display()));
            } else if ft.is_dir() {
                out.push(format!("D {} {mode:o}", path.display()));
                stack.push(path);
            } else {
                let bytes = std::fs::read(root.join(&path)).unwrap();
                let hash = hex::encode(Sha256::digest(&bytes));
                out.push(format!(
                    "F {} {mode:o} {} {hash}",
                    path.display(),
                    bytes.len()
                ));
            }
        }
    }
    out.sort();
    out
}
