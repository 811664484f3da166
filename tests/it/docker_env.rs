//! The Docker environment against a real dockerd (`scripts/docker-up.sh`).
//!
//! Without a reachable Engine each test says why and returns, unless
//! `FERRY_REQUIRE_DOCKER=1`, when it fails instead. Every container gets a
//! random UUID and is removed by a guard, pass or fail.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ferry::environment::docker::{socket_from_env, spec, DockerEnvironment};
use ferry::environment::{EnvError, Environment, PowerState, ServerSpec};

const IMAGE: &str = "ferry-test/busybox:latest";

fn docker_socket() -> PathBuf {
    socket_from_env(Path::new("/var/run/docker.sock")).expect("DOCKER_HOST must be unix://")
}

/// The Engine, or None (test skipped) when it is not there and not required.
fn docker(network: &str) -> Option<DockerEnvironment> {
    let required = std::env::var("FERRY_REQUIRE_DOCKER").as_deref() == Ok("1");
    let skip = |why: String| {
        if required {
            panic!("FERRY_REQUIRE_DOCKER=1 but {why}");
        }
        eprintln!("skipping Docker test: {why} (run scripts/docker-up.sh)");
        None
    };
    let env = match DockerEnvironment::connect(&docker_socket(), network) {
        Ok(env) => env,
        Err(e) => return skip(format!("Docker is not reachable: {e}")),
    };
    let (status, _) = raw(&docker_socket(), "GET", &format!("/images/{IMAGE}/json"));
    if status != 200 {
        return skip(format!("the image {IMAGE} is missing"));
    }
    Some(env)
}

/// A bare request on the socket, to look at the Engine independently of the
/// code under test.
fn raw(socket: &Path, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

use ferry::transfer::manager::new_uuid as random_uuid;

/// One test server: a data directory, its spec, and a container removed on drop.
struct Server<'a> {
    env: &'a DockerEnvironment,
    spec: ServerSpec,
    _dir: tempfile::TempDir,
}

impl<'a> Server<'a> {
    fn new(env: &'a DockerEnvironment, startup: &str, stop: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uuid = random_uuid();
        let settings = json!({
            "uuid": uuid,
            "invocation": startup,
            "environment": {"greeting": "hello from ferry", "SERVER_PORT": "1"},
            "build": {"memory_limit": 64, "swap": 32, "io_weight": 500, "cpu_limit": 50,
                      "disk_space": 100, "threads": "0", "oom_disabled": false},
            "container": {"image": IMAGE},
            "allocations": {"default": {"ip": "127.0.0.1", "port": 25565},
                            "mappings": {"127.0.0.1": [25565]}},
        });
        let spec = ServerSpec {
            uuid,
            settings,
            process_configuration: json!({ "stop": stop }),
            data_dir: dir.path().to_path_buf(),
        };
        Server {
            env,
            spec,
            _dir: dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.spec.data_dir.join(name)
    }

    /// Waits for the server to write `name` into its data directory.
    fn wait_for_file(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(s) = std::fs::read_to_string(self.file(name)) {
                if !s.is_empty() {
                    return s;
                }
            }
            if Instant::now() > deadline {
                let logs = raw(
                    self.env.socket(),
                    "GET",
                    &format!("/containers/{}/logs?stdout=1&stderr=1", self.spec.uuid),
                );
                panic!(
                    "{name} never appeared; state {:?}; logs: {}",
                    self.env.state(&self.spec),
                    String::from_utf8_lossy(&logs.1)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn inspect(&self) -> Value {
        self.env
            .inspect(&self.spec.uuid)
            .unwrap()
            .expect("container exists")
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.env.destroy(&self.spec) {
            eprintln!("cleanup of {} failed: {e}", self.spec.uuid);
        }
    }
}

/// A loop that exits 0 on `sig` (after writing `file`) and writes `ready`
/// once the trap is set, so no signal is sent before it can be handled.
fn trap_loop(sig: &str, file: &str) -> String {
    format!(
        "trap 'echo {sig} > {file}; exit 0' {sig}; echo ready > ready; \
         while :; do sleep 1 & wait $!; done"
    )
}

#[test]
fn lifecycle_with_mounts_env_limits_and_labels() {
    let Some(env) = docker("none") else { return };
    let s = Server::new(
        &env,
        &format!(
            "echo \"$GREETING\" > greeting; {}",
            trap_loop("TERM", "got-term")
        ),
        json!({"type": "stop", "value": null}),
    );
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);
    env.create(&s.spec).unwrap();
    env.create(&s.spec).unwrap(); // idempotent
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);

    let doc = s.inspect();
    assert_eq!(doc["Name"], format!("/{}", s.spec.uuid));
    let mount = doc["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/home/container")
        .expect("data directory mounted");
    assert_eq!(mount["Type"], "bind");
    assert_eq!(mount["Source"], s.spec.data_dir.to_str().unwrap());
    assert_eq!(mount["RW"], true);

    let cfg = &doc["Config"];
    assert_eq!(cfg["WorkingDir"], "/home/container");
    assert_eq!(cfg["OpenStdin"], true);
    assert_eq!(cfg["StdinOnce"], false);
    assert_eq!(cfg["Labels"]["Service"], "Pterodactyl");
    assert_eq!(cfg["Labels"]["ContainerType"], "server_process");
    let env_vars: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let startup = format!(
        "STARTUP={}",
        s.spec.settings["invocation"].as_str().unwrap()
    );
    for want in [
        startup.as_str(),
        "SERVER_MEMORY=64",
        "SERVER_IP=127.0.0.1",
        "SERVER_PORT=25565",
        "GREETING=hello from ferry",
    ] {
        assert!(env_vars.contains(&want), "{want} missing from {env_vars:?}");
    }
    assert!(!env_vars.contains(&"SERVER_PORT=1"), "built-ins win");

    let host = &doc["HostConfig"];
    let memory = spec::memory_bytes(64);
    assert_eq!(host["Memory"], memory);
    assert_eq!(host["MemoryReservation"], 64 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], memory + 32 * 1024 * 1024);
    assert_eq!(host["CpuQuota"], 50_000);
    assert_eq!(host["CpuPeriod"], 100_000);
    assert_eq!(host["CpusetCpus"], "0");
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["ReadonlyRootfs"], true);

    env.start(&s.spec).unwrap();
    assert_eq!(s.wait_for_file("greeting").trim(), "hello from ferry");
    s.wait_for_file("ready");
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Running);
    env.start(&s.spec).unwrap(); // already running: fine

    // Type `stop` sends the container's stop signal (SIGTERM), never SIGKILL.
    env.stop(&s.spec).unwrap();
    assert!(env.wait_for_stop(&s.spec, Duration::from_secs(15)).unwrap());
    assert_eq!(s.wait_for_file("got-term").trim(), "TERM");
    assert_eq!(s.inspect()["State"]["ExitCode"], 0);
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);

    env.destroy(&s.spec).unwrap();
    assert!(env.inspect(&s.spec.uuid).unwrap().is_none());
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);
    env.destroy(&s.spec).unwrap(); // absent: fine
}

#[test]
fn stop_with_a_signal() {
    let Some(env) = docker("none") else { return };
    // SIGTERM is ignored, so only the configured SIGINT can stop it.
    let startup = format!("trap '' TERM; {}", trap_loop("INT", "got-int"));
    let s = Server::new(&env, &startup, json!({"type": "signal", "value": "SIGINT"}));
    env.start(&s.spec).unwrap(); // creates the container first
    s.wait_for_file("ready");
    env.stop(&s.spec).unwrap();
    assert!(env.wait_for_stop(&s.spec, Duration::from_secs(15)).unwrap());
    assert_eq!(s.wait_for_file("got-int").trim(), "INT");
    assert_eq!(s.inspect()["State"]["ExitCode"], 0);
}

#[test]
fn stop_with_a_console_command() {
    let Some(env) = docker("none") else { return };
    let startup = "echo ready > ready; while read -r line; do \
                   echo \"$line\" >> console; [ \"$line\" = stop ] && exit 0; done; exit 3";
    let s = Server::new(&env, startup, json!({"type": "command", "value": "stop"}));
    env.create(&s.spec).unwrap();
    env.start(&s.spec).unwrap();
    s.wait_for_file("ready");
    env.send_command(&s.spec.uuid, "say hi").unwrap();
    env.stop(&s.spec).unwrap();
    assert!(env.wait_for_stop(&s.spec, Duration::from_secs(15)).unwrap());
    let console = s.wait_for_file("console");
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines, ["say hi", "stop"]);
    assert_eq!(s.inspect()["State"]["ExitCode"], 0);
}

#[test]
fn a_server_that_ignores_sigterm_is_waited_for_then_killed_only_on_request() {
    let Some(env) = docker("none") else { return };
    let startup = "trap '' TERM INT; echo ready > ready; while :; do sleep 1 & wait $!; done";
    let s = Server::new(&env, startup, json!({"type": "stop"}));
    env.start(&s.spec).unwrap();
    s.wait_for_file("ready");

    env.stop(&s.spec).unwrap();
    let t = Instant::now();
    assert!(!env.wait_for_stop(&s.spec, Duration::from_secs(2)).unwrap());
    assert!(t.elapsed() >= Duration::from_secs(2));
    // Still running, and reported as stopping since a stop was asked for.
    assert_eq!(s.inspect()["State"]["Running"], true);
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Stopping);

    env.kill(&s.spec).unwrap();
    assert!(env.wait_for_stop(&s.spec, Duration::from_secs(15)).unwrap());
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);
    assert_eq!(s.inspect()["State"]["ExitCode"], 137);
    env.kill(&s.spec).unwrap(); // not running: fine
}

#[test]
fn calls_on_an_absent_container() {
    let Some(env) = docker("none") else { return };
    let s = Server::new(&env, "true", json!({"type": "signal", "value": "SIGINT"}));
    assert_eq!(env.state(&s.spec).unwrap(), PowerState::Offline);
    env.stop(&s.spec).unwrap();
    assert!(env.wait_for_stop(&s.spec, Duration::ZERO).unwrap());
    env.kill(&s.spec).unwrap();
    env.destroy(&s.spec).unwrap();
    assert!(env.inspect(&s.spec.uuid).unwrap().is_none());
}

#[test]
fn missing_image_that_cannot_be_pulled_is_a_clear_error() {
    let Some(env) = docker("none") else { return };
    let mut s = Server::new(&env, "true", json!({}));
    let image = format!("ferry-test/absent-{}:nope", &s.spec.uuid[..8]);
    s.spec.settings["container"]["image"] = json!(image);
    match env.create(&s.spec) {
        Err(EnvError::Runtime(m)) => {
            assert!(
                m.starts_with(&format!("cannot pull image {image}: ")),
                "{m}"
            );
            assert!(m.len() > format!("cannot pull image {image}: ").len());
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
    assert!(env.inspect(&s.spec.uuid).unwrap().is_none());

    // `~` marks a local-only image: no pull is tried.
    s.spec.settings["container"]["image"] = json!(format!("~{image}"));
    match env.create(&s.spec) {
        Err(EnvError::Runtime(m)) => assert!(m.contains("local-only"), "{m}"),
        other => panic!("expected a local-only error, got {other:?}"),
    }
}

#[test]
fn settings_without_an_image_are_refused_before_docker() {
    let Some(env) = docker("none") else { return };
    let mut s = Server::new(&env, "true", json!({}));
    s.spec.settings.as_object_mut().unwrap().remove("container");
    assert!(matches!(
        env.create(&s.spec),
        Err(EnvError::BadSettings(ref m)) if m.contains("container.image")
    ));
    assert!(env.inspect(&s.spec.uuid).unwrap().is_none());
}

#[test]
fn a_missing_network_is_created_and_ports_are_bound() {
    let network = format!("ferry-test-{}", &random_uuid()[..8]);
    let Some(env) = docker(&network) else { return };
    struct DropNetwork(String);
    impl Drop for DropNetwork {
        fn drop(&mut self) {
            raw(&docker_socket(), "DELETE", &format!("/networks/{}", self.0));
        }
    }
    let _net = DropNetwork(network.clone());
    let s = Server::new(&env, "true", json!({}));
    env.create(&s.spec).unwrap();

    let (status, body) = raw(env.socket(), "GET", &format!("/networks/{network}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let net: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(net["Driver"], "bridge");

    let host = &s.inspect()["HostConfig"];
    assert_eq!(host["NetworkMode"], network.as_str());
    for proto in ["tcp", "udp"] {
        assert_eq!(
            host["PortBindings"][format!("25565/{proto}")],
            json!([{"HostIp": "127.0.0.1", "HostPort": "25565"}])
        );
    }
    drop(s); // the container goes before its network
}

#[test]
fn missing_socket_is_unavailable_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    match DockerEnvironment::connect(&sock, "none") {
        Err(EnvError::Unavailable(m)) => {
            assert!(
                m.starts_with(&format!("cannot reach Docker at {}: ", sock.display())),
                "{m}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn negotiates_an_api_version_the_engine_speaks() {
    let Some(env) = docker("none") else { return };
    let (status, body) = raw(env.socket(), "GET", "/version");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let engine = spec::parse_api_version(v["ApiVersion"].as_str().unwrap()).unwrap();
    let used = spec::parse_api_version(env.api_version()).unwrap();
    let max = spec::parse_api_version(ferry::environment::docker::MAX_API_VERSION).unwrap();
    assert_eq!(used, engine.min(max));
    assert_eq!(env.engine_version(), v["Version"].as_str().unwrap());
}
