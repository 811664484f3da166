//! The Docker moments of a transfer, end to end: real `ferry` nodes, a fake
//! panel, and real Docker Engines (`scripts/docker-up.sh` and
//! `scripts/docker-up.sh --second b`). Two nodes on one machine each use
//! their own Engine, since a container is named after its server's UUID.
//!
//! Covered: a panel-driven transfer of a running server (stopped first,
//! container created on arrival, started on completion), a server that
//! will not stop (500, left running, released), power refused during a
//! transfer, a restart under way that must not start the server into its
//! transfer, a container that cannot be created (transfer failed, nothing
//! left; settings without an image refused before the archive is
//! unpacked), a container already named like the server on the destination's
//! Engine, delete removing the container, a node booting next to a running
//! container, and a missing Engine socket at start-up.
//!
//! Engine B's socket is `/run/ferry-docker-b.sock` unless
//! `FERRY_DOCKER_SOCKET_B` says otherwise; engine A follows `DOCKER_HOST`.
//! Without a reachable Engine each test says why and returns, unless
//! `FERRY_REQUIRE_DOCKER=1`, when it fails instead (the rule of
//! `tests/docker_env.rs`). Containers are removed from both Engines by a
//! guard, pass or fail.

use crate::support::fake_panel;
use crate::support::node;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_panel::FakePanel;
use ferry::environment::docker::{socket_from_env, spec};
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::{json, Value};

const IMAGE: &str = "ferry-test/busybox:latest";

/// The two Engines: the default one (or `DOCKER_HOST`) and the second one
/// `docker-up.sh --second b` starts.
pub(crate) struct Engines {
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
}

impl Engines {
    /// Both Engines with the test image, or None (test skipped) when one is
    /// missing and Docker is not required.
    pub(crate) fn get() -> Option<Engines> {
        let a = socket_from_env(Path::new("/var/run/docker.sock"))
            .expect("DOCKER_HOST must be unix://");
        let b = std::env::var("FERRY_DOCKER_SOCKET_B")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/run/ferry-docker-b.sock"));
        for socket in [&a, &b] {
            if let Err(why) = engine_ready(socket) {
                return skip(why);
            }
        }
        Some(Engines { a, b })
    }

    fn sockets(&self) -> [&Path; 2] {
        [&self.a, &self.b]
    }

    pub(crate) fn node_options(&self, socket: &Path, remote: &FakePanel) -> NodeOptions {
        NodeOptions {
            environment: Some("docker".into()),
            docker_socket: Some(socket.display().to_string()),
            remote: Some(remote.url()),
            ..Default::default()
        }
    }
}

fn skip<T>(why: String) -> Option<T> {
    if std::env::var("FERRY_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("FERRY_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("skipping Docker test: {why} (run scripts/docker-up.sh and scripts/docker-up.sh --second b)");
    None
}

fn engine_ready(socket: &Path) -> Result<(), String> {
    match engine(socket, "GET", "/_ping") {
        Some((200, _)) => {}
        Some((status, body)) => {
            return Err(format!(
                "Docker at {} answers its ping with {status}: {body}",
                socket.display()
            ))
        }
        None => return Err(format!("Docker is not reachable at {}", socket.display())),
    }
    match engine(socket, "GET", &format!("/images/{IMAGE}/json")) {
        Some((200, _)) => Ok(()),
        _ => Err(format!(
            "the image {IMAGE} is missing from {}",
            socket.display()
        )),
    }
}

/// One bare request to an Engine, independent of the code under test:
/// (status, body as JSON or string), None if the socket cannot be reached.
fn engine(socket: &Path, method: &str, path: &str) -> Option<(u16, Value)> {
    engine_with(socket, method, path, None)
}

fn engine_with(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    // HTTP/1.0: the Engine answers without chunking and closes.
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Some((status, body))
}

/// The Engine's inspect document of the container named `uuid`, None if absent.
pub(crate) fn inspect(socket: &Path, uuid: &str) -> Option<Value> {
    match engine(socket, "GET", &format!("/containers/{uuid}/json")) {
        Some((200, doc)) => Some(doc),
        Some((404, _)) => None,
        other => panic!("inspect {uuid} on {}: {other:?}", socket.display()),
    }
}

/// Removes the test's containers from both Engines and its node roots,
/// pass or fail. Declared before the nodes so it drops after them.
pub(crate) struct Cleanup {
    sockets: Vec<PathBuf>,
    uuids: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn new(engines: &Engines, uuids: &[&str]) -> Cleanup {
        Cleanup {
            sockets: engines.sockets().iter().map(|s| s.to_path_buf()).collect(),
            uuids: uuids.iter().map(|u| u.to_string()).collect(),
            dirs: Vec::new(),
        }
    }

    /// A node root that outlives its first node (restarts, pairs).
    pub(crate) fn root(&mut self) -> PathBuf {
        let root = tempfile::tempdir().unwrap().keep();
        self.dirs.push(root.clone());
        root
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for socket in &self.sockets {
            for uuid in &self.uuids {
                match engine(socket, "DELETE", &format!("/containers/{uuid}?force=1&v=1")) {
                    Some((204 | 404, _)) => {}
                    other => eprintln!("cleanup of {uuid} on {}: {other:?}", socket.display()),
                }
            }
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

use ferry::transfer::manager::new_uuid as random_uuid;

pub(crate) fn settings(uuid: &str, invocation: &str) -> Value {
    json!({
        "uuid": uuid,
        "meta": {"name": "docker transfer test"},
        "invocation": invocation,
        "container": {"image": IMAGE},
        "build": {"memory_limit": 256, "swap": 0, "cpu_limit": 50, "disk_space": 0},
        "environment": {"FOO": "bar"},
        "allocations": {"default": {"ip": "127.0.0.1", "port": 25565}, "mappings": {}},
    })
}

pub(crate) fn stop_with(kind: &str, value: Value) -> Value {
    json!({"stop": {"type": kind, "value": value}})
}

/// A server loop that exits 0 on SIGINT (writing `got-int` first) and
/// ignores SIGTERM. It writes `ready` once the traps are set, so nothing
/// signals it before it can handle the signal; only when `ready` is absent,
/// so a copy started elsewhere leaves the tree as it found it.
pub(crate) const INT_LOOP: &str = "trap '' TERM; trap 'echo INT > got-int; exit 0' INT; \
                        [ -f ready ] || echo ready > ready; while :; do sleep 1 & wait $!; done";

/// A server that ignores both SIGTERM and SIGINT: only a kill stops it.
pub(crate) const STUBBORN_LOOP: &str =
    "trap '' TERM INT; echo ready > ready; while :; do sleep 1 & wait $!; done";

pub(crate) fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn state(node: &TestNode, uuid: &str) -> String {
    let (code, view) = node.get(&format!("/api/servers/{uuid}"));
    assert_eq!(code, 200, "{view}");
    view["state"].as_str().unwrap_or("").to_string()
}

pub(crate) fn power(node: &TestNode, uuid: &str, action: &str) -> (u16, Value) {
    node.request(
        "POST",
        &format!("/api/servers/{uuid}/power"),
        Some(json!({ "action": action })),
    )
}

/// Starts the server through the node and waits until it runs and has set
/// up its traps.
pub(crate) fn start_server(node: &TestNode, uuid: &str) {
    let (code, body) = power(node, uuid, "start");
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(20), "the server to run", || {
        state(node, uuid) == "running"
    });
    let ready = node.server_dir(uuid).join("ready");
    wait_for(Duration::from_secs(20), "the server's ready file", || {
        ready.exists()
    });
}

/// What the panel does to move `uuid` from `source` to `dest`.
pub(crate) fn start_transfer(
    panel: &FakePanel,
    source: &TestNode,
    dest: &TestNode,
    uuid: &str,
    start_on_completion: bool,
) -> (u16, Value) {
    panel.set_transferring(uuid, true);
    let jwt = panel.mint_transfer_jwt(&dest.token, uuid);
    source.request(
        "POST",
        &format!("/api/servers/{uuid}/transfer"),
        Some(json!({
            "url": dest.url("/api/transfers"),
            "token": format!("Bearer {jwt}"),
            "server": {"uuid": uuid, "start_on_completion": start_on_completion},
            "server_id": 7,
        })),
    )
}

/// A test's server and how its source node is set up.
pub(crate) struct Plan<'a> {
    pub(crate) uuid: &'a str,
    pub(crate) settings: Value,
    pub(crate) process_configuration: Value,
    /// `system.transfers` keys for the source node.
    pub(crate) source_transfers: &'a str,
    /// Incompressible MiB added to the tree, so a throttled transfer lasts.
    pub(crate) noise_mib: usize,
}

impl<'a> Plan<'a> {
    /// The usual server: a shell loop stopped by SIGINT, no throttle, no
    /// extra data. Tests change what they need with `..Plan::new(uuid)`.
    pub(crate) fn new(uuid: &'a str) -> Plan<'a> {
        Plan {
            uuid,
            settings: settings(uuid, INT_LOOP),
            process_configuration: stop_with("signal", json!("SIGINT")),
            source_transfers: "",
            noise_mib: 0,
        }
    }
}

/// What every test here starts from: both Engines, a fresh server uuid,
/// a guard that removes its containers from both, and a fake panel. None
/// (the test skips) without Docker, unless Docker is required.
pub(crate) fn world() -> Option<(Engines, String, Cleanup, FakePanel)> {
    let engines = Engines::get()?;
    let uuid = random_uuid();
    let cleanup = Cleanup::new(&engines, &[&uuid]);
    let panel = FakePanel::start("testtokenid", TOKEN);
    Some((engines, uuid, cleanup, panel))
}

/// A source node on engine A holding the server with a game-server-like
/// tree, and a destination on engine B that booted first, so the panel
/// does not list the server to it.
pub(crate) fn pair(
    engines: &Engines,
    cleanup: &mut Cleanup,
    panel: &FakePanel,
    plan: Plan,
) -> (TestNode, TestNode) {
    let dest = TestNode::start_with(engines.node_options(&engines.b, panel));
    panel.add_server_with(plan.uuid, plan.settings, plan.process_configuration);
    let root = cleanup.root();
    let dir = root.join("volumes").join(plan.uuid);
    make_server_tree(&dir);
    if plan.noise_mib > 0 {
        let mut noise = vec![0u8; plan.noise_mib * 1024 * 1024];
        getrandom::fill(&mut noise).unwrap();
        std::fs::write(dir.join("noise.bin"), &noise).unwrap();
    }
    let source = TestNode::start_with(NodeOptions {
        root: Some(root),
        transfers_yaml: plan.source_transfers.to_string(),
        ..engines.node_options(&engines.a, panel)
    });
    (source, dest)
}

/// Nothing of `uuid` on the destination: no data, no staging, not
/// registered, no container on its Engine.
pub(crate) fn assert_destination_clean(dest: &TestNode, socket: &Path, uuid: &str) {
    assert!(
        !dest.server_dir(uuid).exists(),
        "server directory left on the destination"
    );
    let staging: Vec<_> = std::fs::read_dir(dest.data.join(".ferry-staging"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    assert_eq!(dest.get(&format!("/api/servers/{uuid}")).0, 404);
    assert!(
        inspect(socket, uuid).is_none(),
        "container left on the destination's engine"
    );
}

fn env_list(doc: &Value) -> Vec<String> {
    doc["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn transfer_of_a_running_server_stops_it_and_creates_the_container_on_arrival() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    // The classic order (stop, then copy), as towards a Wings peer; the
    // default between ferry nodes copies first (tests/it/precopy.rs).
    let (source, dest) = pair(
        &engines,
        &mut cleanup,
        &panel,
        Plan {
            source_transfers: "transport: classic",
            ..Plan::new(&uuid)
        },
    );
    start_server(&source, &uuid);
    assert!(inspect(&engines.a, &uuid).unwrap()["State"]["Running"] == true);
    assert!(
        inspect(&engines.b, &uuid).is_none(),
        "engine B must not know the server yet"
    );

    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, true);
    assert_eq!(code, 202, "{record}\n{}", source.log_text());
    // The stop came first: the source container exited cleanly on SIGINT.
    let doc = inspect(&engines.a, &uuid).unwrap();
    assert_eq!(
        (&doc["State"]["Running"], &doc["State"]["ExitCode"]),
        (&json!(false), &json!(0)),
        "{}",
        doc["State"]
    );

    let record = source.wait_transfer_end(&uuid, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        dest.log_text()
    );
    // The archive holds what the SIGINT handler wrote: archived after the stop.
    let tree = tree_listing(&source.server_dir(&uuid));
    assert!(tree.iter().any(|l| l.starts_with("F got-int ")), "{tree:?}");
    assert_eq!(tree_listing(&dest.server_dir(&uuid)), tree);
    // The destination reported before it answered the source.
    assert_eq!(
        panel.transfer_reports(&uuid),
        vec![("success".to_string(), 204)]
    );

    // The destination's container, as its Engine sees it.
    let doc = inspect(&engines.b, &uuid).expect("container created on the destination's engine");
    assert_eq!(doc["Name"], format!("/{uuid}"));
    let mount = doc["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/home/container")
        .unwrap_or_else(|| panic!("no mount on /home/container: {}", doc["Mounts"]));
    assert_eq!(mount["Type"], "bind");
    assert_eq!(
        mount["Source"],
        dest.server_dir(&uuid).display().to_string()
    );
    assert_eq!(mount["RW"], true);
    let env = env_list(&doc);
    for want in [
        format!("STARTUP={INT_LOOP}"),
        "SERVER_MEMORY=256".into(),
        "FOO=bar".into(),
    ] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    assert_eq!(doc["HostConfig"]["Memory"], spec::memory_bytes(256));
    assert_eq!(doc["Config"]["Labels"]["Service"], "Pterodactyl");
    assert_eq!(doc["Config"]["Labels"]["ContainerType"], "server_process");
    assert_eq!(doc["Config"]["Image"], IMAGE);
    // start_on_completion: it runs there, and the node says so.
    wait_for(
        Duration::from_secs(20),
        "the destination container to run",
        || inspect(&engines.b, &uuid).is_some_and(|d| d["State"]["Running"] == true),
    );
    assert_eq!(state(&dest, &uuid), "running");
    // It started from the transferred tree and left it as it was.
    assert_eq!(tree_listing(&dest.server_dir(&uuid)), tree);

    // The panel's follow-up on the source removes the stopped container.
    let (code, _) = source.request("DELETE", &format!("/api/servers/{uuid}"), None);
    assert_eq!(code, 204);
    wait_for(
        Duration::from_secs(15),
        "the source container to go",
        || inspect(&engines.a, &uuid).is_none(),
    );
    wait_for(Duration::from_secs(15), "the source data to go", || {
        !source.server_dir(&uuid).exists()
    });
    assert!(inspect(&engines.b, &uuid).is_some_and(|d| d["State"]["Running"] == true));
}

#[test]
fn a_server_that_does_not_stop_refuses_the_transfer_and_stays_running() {
    let Some((engines, uuid, _cleanup, panel)) = world() else {
        return;
    };
    panel.add_server_with(
        &uuid,
        settings(&uuid, STUBBORN_LOOP),
        stop_with("stop", Value::Null),
    );
    // The support file's default `stop_timeout: 3`: its `transfers_yaml`
    // cannot override that key (a duplicate YAML key is refused).
    // The classic order answers the start only after the stop; pre-copy's
    // own case is in tests/it/precopy.rs.
    let node = TestNode::start_with(NodeOptions {
        transfers_yaml: "transport: classic".into(),
        ..engines.node_options(&engines.a, &panel)
    });
    std::fs::create_dir_all(node.server_dir(&uuid)).unwrap();
    start_server(&node, &uuid);
    let started_at = inspect(&engines.a, &uuid).unwrap()["State"]["StartedAt"].clone();

    panel.set_transferring(&uuid, true);
    let attempt = {
        let (url, token, uuid) = (node.url(""), node.token.clone(), uuid.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let agent = TestNode::agent();
            let body = json!({
                // Never reached: the transfer ends before streaming.
                "url": "http://127.0.0.1:9/api/transfers",
                "token": "Bearer not-used",
                "server": {"uuid": uuid, "start_on_completion": false},
            });
            let mut resp = agent
                .post(format!("{url}/api/servers/{uuid}/transfer"))
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(serde_json::to_vec(&body).unwrap())
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            (status, body, t.elapsed())
        })
    };
    // While the node waits for the stop, the server is already transferring.
    wait_for(Duration::from_secs(5), "the stop to begin", || {
        state(&node, &uuid) == "stopping"
    });
    let (code, body) = power(&node, &uuid, "start");
    assert_eq!(
        (code, body["error"].as_str()),
        (
            409,
            Some("The server cannot be powered while it is being transferred.")
        )
    );
    let (code, body, elapsed) = attempt.join().unwrap();
    assert_eq!(
        (code, body["error"].as_str()),
        (
            500,
            Some("Failed to stop the server before initiating transfer.")
        ),
        "{body}"
    );
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(9),
        "{elapsed:?}"
    );

    // Left as it was: running, never killed, never restarted.
    let doc = inspect(&engines.a, &uuid).unwrap();
    assert_eq!(doc["State"]["Running"], true);
    assert_eq!(doc["State"]["StartedAt"], started_at);
    // Released, with nothing of a transfer left: no record, no report (the
    // transfer never began, so the panel has nothing to hear about).
    let (_, view) = node.get(&format!("/api/servers/{uuid}"));
    assert_eq!(
        (&view["is_transferring"], &view["transfer"]),
        (&json!(false), &Value::Null),
        "{view}"
    );
    assert_eq!(node.get(&format!("/api/servers/{uuid}/transfer")).0, 404);
    assert_eq!(node.get("/api/transfers").1, json!([]));
    assert!(panel.transfer_reports(&uuid).is_empty());
    // The stop signal was delivered and may still take effect, so the
    // server reads `stopping`, as Wings shows it.
    assert_eq!(view["state"], "stopping");
    // Power works again: the operator can kill it.
    let (code, body) = power(&node, &uuid, "kill");
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(15), "the kill", || {
        state(&node, &uuid) == "offline"
    });
    assert_eq!(
        inspect(&engines.a, &uuid).unwrap()["State"]["ExitCode"],
        137
    );
}

#[test]
fn power_is_refused_while_the_server_is_transferring() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    let (source, dest) = pair(
        &engines,
        &mut cleanup,
        &panel,
        Plan {
            // 1 MiB/s and incompressible bytes keep the transfer going.
            source_transfers: "upload_limit: 1",
            noise_mib: 5,
            ..Plan::new(&uuid)
        },
    );
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, false);
    assert_eq!(code, 202, "{record}");
    for action in ["start", "stop", "restart", "kill"] {
        let (code, body) = power(&source, &uuid, action);
        assert_eq!(
            (code, body["error"].as_str()),
            (
                409,
                Some("The server cannot be powered while it is being transferred.")
            ),
            "{action}"
        );
    }
    let (_, record) = source.get(&format!("/api/servers/{uuid}/transfer"));
    assert!(
        matches!(record["status"].as_str(), Some("pending" | "processing")),
        "still transferring: {record}"
    );
    // A refused start did nothing: no container was created.
    assert!(inspect(&engines.a, &uuid).is_none());

    let (code, _) = source.request(
        "DELETE",
        &format!("/api/servers/{uuid}/transfer"),
        Some(json!({"reason": "test over"})),
    );
    assert_eq!(code, 202);
    assert_eq!(
        source.wait_transfer_end(&uuid, Duration::from_secs(15))["status"],
        "cancelled"
    );
    wait_for(Duration::from_secs(10), "the source to be released", || {
        source.get(&format!("/api/servers/{uuid}")).1["is_transferring"] == false
    });
    // Released: power is accepted again and reaches Docker.
    start_server(&source, &uuid);
    assert!(
        inspect(&engines.b, &uuid).is_none(),
        "a cancelled transfer leaves no container on the destination"
    );
}

#[test]
fn delete_removes_the_running_container_and_the_data() {
    let Some((engines, uuid, _cleanup, panel)) = world() else {
        return;
    };
    panel.add_server_with(
        &uuid,
        settings(&uuid, INT_LOOP),
        stop_with("signal", json!("SIGINT")),
    );
    let node = TestNode::start_with(engines.node_options(&engines.a, &panel));
    make_server_tree(&node.server_dir(&uuid));
    start_server(&node, &uuid);

    let (code, body) = node.request("DELETE", &format!("/api/servers/{uuid}"), None);
    assert_eq!(code, 204, "{body}");
    wait_for(Duration::from_secs(15), "the container to go", || {
        inspect(&engines.a, &uuid).is_none()
    });
    wait_for(Duration::from_secs(15), "the data to go", || {
        !node.server_dir(&uuid).exists()
    });
    assert_eq!(node.get(&format!("/api/servers/{uuid}")).0, 404);
    // Nothing outside the data directory was followed through its links.
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn a_restarted_node_reports_its_running_container() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    panel.add_server_with(
        &uuid,
        settings(&uuid, INT_LOOP),
        stop_with("signal", json!("SIGINT")),
    );
    let root = cleanup.root();
    std::fs::create_dir_all(root.join("volumes").join(&uuid)).unwrap();
    let options = NodeOptions {
        root: Some(root),
        ..engines.node_options(&engines.a, &panel)
    };
    let mut node = TestNode::start_with(options.clone());
    start_server(&node, &uuid);
    let started_at = inspect(&engines.a, &uuid).unwrap()["State"]["StartedAt"].clone();
    assert!(node.terminate().success());
    // The daemon going away does not take its servers with it.
    assert_eq!(
        inspect(&engines.a, &uuid).unwrap()["State"]["Running"],
        true
    );

    let node = TestNode::start_with(options);
    let (code, view) = node.get(&format!("/api/servers/{uuid}"));
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(
        inspect(&engines.a, &uuid).unwrap()["State"]["StartedAt"],
        started_at,
        "not restarted"
    );
    // And it can still be driven: stopped with its SIGINT.
    let (code, _) = power(&node, &uuid, "stop");
    assert_eq!(code, 202);
    wait_for(Duration::from_secs(15), "the stop", || {
        state(&node, &uuid) == "offline"
    });
    assert!(node.server_dir(&uuid).join("got-int").exists());
}

#[test]
fn a_missing_engine_socket_stops_the_daemon_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "token: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\nsystem:\n  root_directory: {root}\n  data: {root}/volumes\n  environment: docker\ndocker:\n  socket: /nonexistent.sock\n",
            root = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = node::wait_exit(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "started without its Engine: {stderr}");
    assert!(
        stderr.contains("cannot reach Docker at /nonexistent.sock"),
        "{stderr}"
    );
    assert!(
        stderr.contains("docker.socket"),
        "the error names the key to fix: {stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

/// A transfer whose container the destination cannot create (`edit`
/// breaks the panel's settings): it fails on both sides, each reports the
/// failure once, the source keeps its data and nothing is left on the
/// destination. Returns the destination's record (None: no Docker here).
fn transfer_with_uncreatable_container(edit: impl FnOnce(&mut Value, &str)) -> Option<Value> {
    let (engines, uuid, mut cleanup, panel) = world()?;
    let mut settings = settings(&uuid, INT_LOOP);
    edit(&mut settings, &uuid);
    let (source, dest) = pair(
        &engines,
        &mut cleanup,
        &panel,
        Plan {
            settings,
            process_configuration: stop_with("stop", Value::Null),
            ..Plan::new(&uuid)
        },
    );
    let before = tree_listing(&source.server_dir(&uuid));

    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, true);
    assert_eq!(code, 202, "{record}");
    let record = source.wait_transfer_end(&uuid, Duration::from_secs(60));
    assert_eq!(record["status"], "failed", "{record}");
    let (_, incoming) = dest.get(&format!("/api/servers/{uuid}/transfer"));
    assert_eq!(incoming["status"], "failed", "{incoming}");
    assert_destination_clean(&dest, &engines.b, &uuid);
    assert_eq!(tree_listing(&source.server_dir(&uuid)), before);
    // Both sides report the failure, once each; nobody reports success.
    let failure = format!("/api/remote/servers/{uuid}/transfer/failure");
    let failures = |calls: &[fake_panel::Call]| calls.iter().filter(|c| c.path == failure).count();
    assert!(panel.wait_until(Duration::from_secs(10), |calls| failures(calls) == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(failures(&panel.calls()), 2);
    assert!(panel
        .transfer_reports(&uuid)
        .iter()
        .all(|(kind, _)| kind == "failure"));
    Some(incoming)
}

#[test]
fn a_container_that_cannot_be_created_fails_the_transfer_and_leaves_nothing() {
    // `~` marks a local-only image: absent on engine B and never pulled.
    let Some(incoming) = transfer_with_uncreatable_container(|settings, uuid| {
        settings["container"]["image"] = json!(format!("~ferry-test/absent-{}:nope", &uuid[..8]));
    }) else {
        return;
    };
    let error = incoming["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("failed to create the server environment: ")
            && error.contains("local-only"),
        "{error}"
    );
}

/// Settings no container can be made from are refused when the archive
/// part begins, not after it has been received and unpacked.
#[test]
fn settings_without_an_image_are_refused_before_the_archive_is_unpacked() {
    let Some(incoming) = transfer_with_uncreatable_container(|settings, _| {
        if let Some(container) = settings["container"].as_object_mut() {
            container.remove("image");
        }
    }) else {
        return;
    };
    assert_eq!(
        incoming["error"],
        "failed to create the server environment: invalid server settings: \
         container.image is required to create a container"
    );
    assert_eq!(incoming["progress"]["files_done"], 0, "{incoming}");
    assert_eq!(incoming["progress"]["bytes_done"], 0, "{incoming}");
}

#[test]
fn a_leftover_container_on_the_destination_is_replaced_but_a_running_one_is_left_alone() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    let (source, dest) = pair(&engines, &mut cleanup, &panel, Plan::new(&uuid));
    // A container with the server's name that this node does not hold:
    // another node sharing the Engine, or what an earlier install left.
    let stale = json!({
        "Image": IMAGE,
        "Env": ["STARTUP=trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done", "FOO=stale"],
        "Labels": {"ferry.test": "stale"},
    });
    let created = engine_with(
        &engines.b,
        "POST",
        &format!("/containers/create?name={uuid}"),
        Some(stale),
    );
    assert_eq!(created.as_ref().map(|c| c.0), Some(201), "{created:?}");
    assert_eq!(
        engine(&engines.b, "POST", &format!("/containers/{uuid}/start")).map(|c| c.0),
        Some(204)
    );

    // Running: not ours to kill, so the install fails and leaves it be.
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, true);
    assert_eq!(code, 202, "{record}");
    let record = source.wait_transfer_end(&uuid, Duration::from_secs(60));
    assert_eq!(record["status"], "failed", "{record}");
    // Refused before the archive was read, and the source says why.
    let source_error = record["error"].as_str().unwrap_or("");
    assert!(source_error.contains("already running"), "{record}");
    let (_, incoming) = dest.get(&format!("/api/servers/{uuid}/transfer"));
    let error = incoming["error"].as_str().unwrap_or("");
    assert!(
        error.contains("already running on this node's Docker Engine"),
        "{error}"
    );
    assert_eq!(incoming["progress"]["bytes_done"], 0, "{incoming}");
    let doc = inspect(&engines.b, &uuid).unwrap();
    assert_eq!(
        (
            &doc["State"]["Running"],
            &doc["Config"]["Labels"]["ferry.test"]
        ),
        (&json!(true), &json!("stale"))
    );
    assert!(!dest.server_dir(&uuid).exists());
    assert_eq!(dest.get(&format!("/api/servers/{uuid}")).0, 404);
    wait_for(Duration::from_secs(10), "the source to be released", || {
        source.get(&format!("/api/servers/{uuid}")).1["is_transferring"] == false
    });

    // Stopped: a leftover whose settings may be stale, so it is replaced by
    // one made from the panel's settings.
    assert_eq!(
        engine(&engines.b, "POST", &format!("/containers/{uuid}/stop?t=10")).map(|c| c.0),
        Some(204)
    );
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, false);
    assert_eq!(code, 202, "{record}");
    let record = source.wait_transfer_end(&uuid, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        dest.log_text()
    );
    let doc = inspect(&engines.b, &uuid).unwrap();
    let env = env_list(&doc);
    assert!(
        env.contains(&"FOO=bar".to_string()) && !env.contains(&"FOO=stale".to_string()),
        "{env:?}"
    );
    assert_eq!(doc["Config"]["Labels"].get("ferry.test"), None);
    assert!(doc["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["Destination"] == "/home/container"));
    assert_eq!(
        doc["State"]["Running"], false,
        "start_on_completion was false"
    );
}

#[test]
fn a_restart_under_way_does_not_start_the_server_during_its_transfer() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    // Takes a second to stop, so the transfer arrives while the restart waits.
    let slow = "trap '' TERM; trap 'sleep 1; echo INT > got-int; exit 0' INT; \
                [ -f ready ] || echo ready > ready; while :; do sleep 1 & wait $!; done";
    let (source, dest) = pair(
        &engines,
        &mut cleanup,
        &panel,
        Plan {
            settings: settings(&uuid, slow),
            source_transfers: "upload_limit: 1\ntransport: classic",
            noise_mib: 5,
            ..Plan::new(&uuid)
        },
    );
    start_server(&source, &uuid);
    let (code, body) = power(&source, &uuid, "restart");
    assert_eq!(code, 202, "{body}");
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, false);
    assert_eq!(code, 202, "{record}\n{}", source.log_text());
    // The restart gave way: the server stays down while it is archived.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let doc = inspect(&engines.a, &uuid).unwrap();
        assert_eq!(
            doc["State"]["Running"], false,
            "started during its transfer: {}",
            doc["State"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, record) = source.get(&format!("/api/servers/{uuid}/transfer"));
    assert_eq!(record["status"], "processing", "{record}");
    let (code, _) = source.request("DELETE", &format!("/api/servers/{uuid}/transfer"), None);
    assert_eq!(code, 202);
    assert_eq!(
        source.wait_transfer_end(&uuid, Duration::from_secs(15))["status"],
        "cancelled"
    );
    assert_eq!(state(&source, &uuid), "offline");
}

// --- the finish with containers (SPEC §5.1) ---------------------------------

/// A pair whose destination runs with `dest_env` on a root that survives
/// a restart; returns the destination's options to restart it with.
fn finish_pair(
    engines: &Engines,
    cleanup: &mut Cleanup,
    panel: &FakePanel,
    uuid: &str,
    dest_env: &[(&str, &str)],
) -> (TestNode, TestNode, NodeOptions) {
    // Two node identities, so the panel lists the server to its holder only.
    panel.add_node("node-a", TOKEN);
    panel.add_node("node-b", TOKEN);
    let dest_options = NodeOptions {
        root: Some(cleanup.root()),
        token_id: Some("node-b".into()),
        env: dest_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..engines.node_options(&engines.b, panel)
    };
    let dest = TestNode::start_with(dest_options.clone());
    let plan = Plan::new(uuid);
    panel.add_server_with(plan.uuid, plan.settings, plan.process_configuration);
    panel.set_server_node(uuid, "node-a");
    let root = cleanup.root();
    make_server_tree(&root.join("volumes").join(uuid));
    let source = TestNode::start_with(NodeOptions {
        root: Some(root),
        token_id: Some("node-a".into()),
        ..engines.node_options(&engines.a, panel)
    });
    panel.set_node_url("node-a", &source.url(""));
    panel.set_node_url("node-b", &dest.url(""));
    panel.start_transfer(uuid, "node-a", "node-b");
    (source, dest, dest_options)
}

fn reports_of(panel: &FakePanel, uuid: &str) -> Vec<(String, u16)> {
    panel.transfer_reports(uuid)
}

/// A destination cancel while its container is being created is accepted
/// (202) and undone before any success is reported: one failure report,
/// no container or data left, the source keeps the server and hears why.
#[test]
fn a_cancel_during_container_creation_is_undone_before_any_report() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    let (source, dest, _) = finish_pair(
        &engines,
        &mut cleanup,
        &panel,
        &uuid,
        &[("FERRY_FAILPOINT", "creating-container:delay=1500")],
    );
    let before = tree_listing(&source.server_dir(&uuid));
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, false);
    assert_eq!(code, 202, "{record}");
    assert!(
        dest.wait_log(
            "failpoint: delaying at creating-container",
            Duration::from_secs(60)
        ),
        "{}",
        dest.log_text()
    );
    let (code, body) = dest.request(
        "DELETE",
        &format!("/api/transfers/{uuid}"),
        Some(json!({"reason": "maintenance"})),
    );
    assert_eq!(code, 202, "{body}");
    let incoming = dest.wait_transfer_end(&uuid, Duration::from_secs(30));
    assert_eq!(incoming["status"], "cancelled", "{incoming}");
    let outgoing = source.wait_transfer_end(&uuid, Duration::from_secs(30));
    assert_eq!(
        outgoing["error"],
        "the destination answered 409: The transfer was cancelled on the destination. (maintenance)",
        "{outgoing}"
    );
    assert_destination_clean(&dest, &engines.b, &uuid);
    assert_eq!(tree_listing(&source.server_dir(&uuid)), before);
    std::thread::sleep(Duration::from_millis(500));
    let reports = reports_of(&panel, &uuid);
    assert!(
        reports.iter().all(|(kind, _)| kind == "failure"),
        "no success may be reported: {reports:?}"
    );
}

/// A destination killed right after its container was created (before it
/// reported anything) removes container, data and registration at start-up
/// and reports the failure; the source keeps the server.
#[test]
fn a_destination_killed_after_creating_the_container_is_undone_on_restart() {
    let Some((engines, uuid, mut cleanup, panel)) = world() else {
        return;
    };
    let (source, mut dest, mut dest_options) = finish_pair(
        &engines,
        &mut cleanup,
        &panel,
        &uuid,
        &[("FERRY_FAILPOINT", "container-created:pause")],
    );
    let before = tree_listing(&source.server_dir(&uuid));
    let (code, record) = start_transfer(&panel, &source, &dest, &uuid, false);
    assert_eq!(code, 202, "{record}");
    assert!(
        dest.wait_log(
            "failpoint: paused at container-created",
            Duration::from_secs(60)
        ),
        "{}",
        dest.log_text()
    );
    assert!(inspect(&engines.b, &uuid).is_some(), "the container exists");
    dest.kill9();
    dest_options.env.clear();
    let dest = TestNode::start_with(dest_options);
    assert_destination_clean(&dest, &engines.b, &uuid);
    let outgoing = source.wait_transfer_end(&uuid, Duration::from_secs(60));
    assert_eq!(outgoing["status"], "failed", "{outgoing}");
    assert_eq!(tree_listing(&source.server_dir(&uuid)), before);
    let (_, view) = source.get(&format!("/api/servers/{uuid}"));
    assert_eq!(view["is_transferring"], false, "{view}");
    wait_for(
        Duration::from_secs(15),
        "the panel to end the transfer",
        || !panel.is_transferring(&uuid),
    );
    assert!(reports_of(&panel, &uuid)
        .iter()
        .all(|(kind, _)| kind == "failure"));
}
