//! The Docker environment: each server is one Engine container named after
//! its UUID, driven through a small synchronous Engine API client over the
//! unix socket (`client`), from a container spec built by pure functions
//! (`spec`). No async runtime and no Docker SDK (see DESIGN.md).
//!
//! Stopping never force-kills: `stop` only asks (a signal, a stdin command,
//! or the container's own stop signal), and `wait_for_stop` only waits.
//!
//! - this file: finding and connecting to the Engine, the network and
//!   image a container needs, signals and console commands;
//! - `lifecycle.rs`: the `Environment` calls (state, create, start, stop,
//!   wait, kill, destroy).

mod client;
mod lifecycle;
pub mod spec;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use self::client::Client;
use self::spec::CreateOptions;
use super::EnvError;

/// The newest Engine API version ferry speaks; older engines are spoken to
/// in their own version (down to Engine 20.10, API 1.41, which is tested).
pub const MAX_API_VERSION: &str = "1.47";
/// The oldest API version whose behaviour ferry relies on.
pub const MIN_API_VERSION: &str = "1.41";

/// Timeout for ordinary Engine calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest silence tolerated in an image pull's progress stream.
const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `send_command` waits for the Engine to confirm it passed the
/// command on.
const COMMAND_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `wait_for_stop` looks at the container.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The socket to use: `DOCKER_HOST=unix://…` (when given and non-empty)
/// overrides the configured `docker.socket`. Other schemes are refused:
/// ferry only speaks to a local Engine over its unix socket.
pub fn resolve_socket(configured: &Path, docker_host: Option<&str>) -> Result<PathBuf, EnvError> {
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(configured.to_path_buf()),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(EnvError::Unavailable(format!(
                "DOCKER_HOST={host} is not supported: ferry talks to Docker over a unix \
                 socket (unix:///path/to/docker.sock)"
            ))),
        },
    }
}

/// `resolve_socket` with the process's own `DOCKER_HOST`.
pub fn socket_from_env(configured: &Path) -> Result<PathBuf, EnvError> {
    let host = std::env::var("DOCKER_HOST").ok();
    resolve_socket(configured, host.as_deref())
}

/// A connected Docker Engine.
pub struct DockerEnvironment {
    client: Client,
    api_version: String,
    engine_version: String,
    options: CreateOptions,
    /// Set once the network is known to exist, so it is looked up only once.
    network_ready: Mutex<bool>,
    /// Servers asked to stop that may still be running: reported `stopping`.
    stopping: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for DockerEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEnvironment")
            .field("socket", &self.client.socket())
            .field("api_version", &self.api_version)
            .field("network", &self.options.network)
            .finish()
    }
}

impl DockerEnvironment {
    /// Pings the Engine on `socket` and negotiates the API version. A missing
    /// or dead socket is `EnvError::Unavailable` naming the path. `network`
    /// is `docker.network.name`; it is created (bridge) on first use if
    /// missing, except Docker's built-in `none`, `host` and `bridge`.
    pub fn connect(socket: &Path, network: &str) -> Result<Self, EnvError> {
        let mut client = Client::new(socket, CALL_TIMEOUT);
        let ping = client.request("GET", "/_ping", None)?;
        if !ping.ok() {
            return Err(EnvError::Unavailable(format!(
                "Docker at {} does not answer its ping: {}",
                socket.display(),
                ping.message()
            )));
        }
        let version = client.request("GET", "/version", None)?;
        if !version.ok() {
            return Err(EnvError::Runtime(format!(
                "Docker version query failed: {}",
                version.message()
            )));
        }
        let v = version.json()?;
        let engine_api = v.get("ApiVersion").and_then(Value::as_str).unwrap_or("");
        let api = negotiate(engine_api)?;
        client.set_api_version(&api);
        let engine_version = v
            .get("Version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        log::info!(
            "docker: engine {engine_version} at {} (API {api})",
            socket.display()
        );
        Ok(DockerEnvironment {
            client,
            api_version: api,
            engine_version,
            options: CreateOptions {
                network: network.trim().to_string(),
                user: None,
                timezone: std::env::var("TZ").ok().filter(|t| !t.is_empty()),
            },
            network_ready: Mutex::new(false),
            stopping: Mutex::new(HashSet::new()),
        })
    }

    /// Containers run as `uid:gid` (`system.user`), as Wings does.
    pub fn with_user(mut self, uid: u32, gid: u32) -> Self {
        self.options.user = Some((uid, gid));
        self
    }

    /// `TZ` for containers; defaults to the daemon's own `TZ` if set.
    pub fn with_timezone(mut self, tz: Option<String>) -> Self {
        self.options.timezone = tz.filter(|t| !t.is_empty());
        self
    }

    /// The negotiated Engine API version, like `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The Engine's own version, like `20.10.24`.
    pub fn engine_version(&self) -> &str {
        &self.engine_version
    }

    pub fn socket(&self) -> &Path {
        self.client.socket()
    }

    /// The Engine's inspect document for the server's container; None if absent.
    pub fn inspect(&self, uuid: &str) -> Result<Option<Value>, EnvError> {
        spec::check_container_name(uuid)?;
        let r = self
            .client
            .request("GET", &format!("/containers/{uuid}/json"), None)?;
        match r.status {
            404 => Ok(None),
            _ if r.ok() => r.json().map(Some),
            _ => Err(runtime("inspect container", uuid, &r)),
        }
    }

    /// Sends `signal` (a name like `SIGINT`) to the container's main process.
    /// A container that is absent or not running is left alone.
    pub fn signal(&self, uuid: &str, signal: &str) -> Result<(), EnvError> {
        spec::check_container_name(uuid)?;
        let path = format!(
            "/containers/{uuid}/kill?signal={}",
            spec::query_escape(signal)
        );
        let r = self.client.request("POST", &path, None)?;
        match r.status {
            // 404: gone; 409: not running. Either way nothing to signal.
            404 | 409 => {
                log::debug!("docker: {signal} to {uuid} not sent: {}", r.message());
                Ok(())
            }
            _ if r.ok() => Ok(()),
            _ => Err(runtime(&format!("send {signal} to"), uuid, &r)),
        }
    }

    /// Writes `command` and a newline to the container's stdin through a
    /// hijacked `attach` connection (the server's console input).
    pub fn send_command(&self, uuid: &str, command: &str) -> Result<(), EnvError> {
        spec::check_container_name(uuid)?;
        let path = format!("/containers/{uuid}/attach?stream=1&stdin=1");
        let mut conn = self.client.hijack(&path)?;
        let mut line = command.trim_end_matches(['\r', '\n']).to_string();
        line.push('\n');
        conn.write_all(line.as_bytes())
            .and_then(|()| conn.flush())
            .map_err(|e| {
                EnvError::Runtime(format!("cannot write to the console of {uuid}: {e}"))
            })?;
        // Closing only our side: the container's stdin stays open because
        // it was created with StdinOnce=false. The Engine ends the attach
        // once it has passed everything before our EOF to the container, so
        // waiting for its close makes the command delivered, in order, before
        // the next one (two attaches in flight can overtake each other).
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let _ = conn.set_read_timeout(Some(COMMAND_DELIVERY_TIMEOUT));
        let mut sink = [0u8; 1024];
        loop {
            match conn.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => {
                    log::warn!("docker: could not confirm delivery of a command to {uuid}: {e}");
                    return Ok(());
                }
            }
        }
    }

    fn set_stopping(&self, uuid: &str, on: bool) {
        if let Ok(mut set) = self.stopping.lock() {
            if on {
                set.insert(uuid.to_string());
            } else {
                set.remove(uuid);
            }
        }
    }

    fn is_stopping(&self, uuid: &str) -> bool {
        self.stopping
            .lock()
            .map(|s| s.contains(uuid))
            .unwrap_or(false)
    }

    /// Creates the configured network if it does not exist (once per process).
    fn ensure_network(&self) -> Result<(), EnvError> {
        let name = self.options.network.as_str();
        if name.is_empty() || spec::is_builtin_network(name) {
            return Ok(());
        }
        let mut ready = self
            .network_ready
            .lock()
            .map_err(|_| EnvError::Runtime("docker network lock poisoned".into()))?;
        if *ready {
            return Ok(());
        }
        let path = format!("/networks/{}", spec::query_escape(name));
        let r = self.client.request("GET", &path, None)?;
        if r.status == 404 {
            log::info!("docker: creating network {name}");
            let body = json!({
                "Name": name,
                "Driver": "bridge",
                "CheckDuplicate": true,
                "Labels": {"Service": "Pterodactyl"},
            });
            let r = self
                .client
                .request("POST", "/networks/create", Some(&body))?;
            // 409: created meanwhile by someone else, which is fine.
            if !r.ok() && r.status != 409 {
                return Err(EnvError::Runtime(format!(
                    "cannot create Docker network {name}: {} (set docker.network.name, \
                     or use `none`)",
                    r.message()
                )));
            }
        } else if !r.ok() {
            return Err(EnvError::Runtime(format!(
                "cannot inspect Docker network {name}: {}",
                r.message()
            )));
        }
        *ready = true;
        Ok(())
    }

    /// Makes sure `image` is present locally, pulling it if not.
    fn ensure_image(&self, image: &str, local_only: bool) -> Result<(), EnvError> {
        let path = format!("/images/{image}/json");
        let r = self.client.request("GET", &path, None)?;
        if r.ok() {
            return Ok(());
        }
        if r.status != 404 {
            return Err(EnvError::Runtime(format!(
                "cannot inspect image {image}: {}",
                r.message()
            )));
        }
        if local_only {
            return Err(EnvError::Runtime(format!(
                "image {image} is not present locally and is marked local-only (~)"
            )));
        }
        let (from, tag) = spec::pull_reference(image);
        log::info!("docker: pulling image {image}");
        let path = format!(
            "/images/create?fromImage={}&tag={}",
            spec::query_escape(&from),
            spec::query_escape(&tag)
        );
        let (status, body) = self.client.stream("POST", &path, None, PULL_IDLE_TIMEOUT)?;
        let pull_failed = |m: String| EnvError::Runtime(format!("cannot pull image {image}: {m}"));
        if !(200..300).contains(&status) {
            let mut raw = Vec::new();
            let _ = body.take(64 * 1024).read_to_end(&mut raw);
            return Err(pull_failed(client::engine_message(status, &raw)));
        }
        // The answer is a stream of JSON progress objects; a failure arrives
        // as one with `error`, after a 200. Read it all: the pull is done
        // only when the stream ends.
        let mut reader = BufReader::new(body);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(1024 * 1024)
                .read_until(b'\n', &mut line)
                .map_err(|e| pull_failed(format!("progress stream broke: {e}")))?;
            if n == 0 {
                break;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                return Err(pull_failed(err.trim().to_string()));
            }
            if let Some(status) = v.get("status").and_then(Value::as_str) {
                log::debug!("docker: pull {image}: {status}");
            }
        }
        // Trust but verify: the image must now exist.
        let r = self
            .client
            .request("GET", &format!("/images/{image}/json"), None)?;
        if !r.ok() {
            return Err(pull_failed(format!(
                "the pull ended but the image is still missing ({})",
                r.message()
            )));
        }
        Ok(())
    }
}

/// Picks min(engine's version, MAX_API_VERSION).
fn negotiate(engine_api: &str) -> Result<String, EnvError> {
    let engine = spec::parse_api_version(engine_api).ok_or_else(|| {
        EnvError::Runtime(format!(
            "Docker reported an unreadable API version {engine_api:?}"
        ))
    })?;
    let max = spec::parse_api_version(MAX_API_VERSION).unwrap_or((1, 41));
    let min = spec::parse_api_version(MIN_API_VERSION).unwrap_or((1, 41));
    if engine < min {
        log::warn!(
            "docker: engine API {engine_api} is older than {MIN_API_VERSION}, the oldest \
             ferry is tested with; continuing"
        );
    }
    let (major, minor) = engine.min(max);
    Ok(format!("{major}.{minor}"))
}

fn runtime(what: &str, uuid: &str, r: &client::Response) -> EnvError {
    EnvError::Runtime(format!("cannot {what} {uuid}: {}", r.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_overrides_the_configured_socket() {
        let conf = Path::new("/var/run/docker.sock");
        assert_eq!(resolve_socket(conf, None).unwrap(), conf);
        assert_eq!(resolve_socket(conf, Some("")).unwrap(), conf);
        assert_eq!(
            resolve_socket(conf, Some("unix:///run/other.sock")).unwrap(),
            Path::new("/run/other.sock")
        );
        match resolve_socket(conf, Some("tcp://10.0.0.1:2375")) {
            Err(EnvError::Unavailable(m)) => assert!(m.contains("unix socket"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(resolve_socket(conf, Some("unix://")).is_err());
    }

    #[test]
    fn api_negotiation() {
        assert_eq!(negotiate("1.41").unwrap(), "1.41");
        assert_eq!(negotiate("1.52").unwrap(), MAX_API_VERSION);
        assert_eq!(negotiate("1.45").unwrap(), "1.45");
        assert_eq!(negotiate("1.40").unwrap(), "1.40");
        assert!(negotiate("").is_err());
    }

    #[test]
    fn connect_to_missing_socket_names_it() {
        let err =
            DockerEnvironment::connect(Path::new("/nonexistent/docker.sock"), "none").unwrap_err();
        match err {
            EnvError::Unavailable(m) => {
                assert!(
                    m.starts_with("cannot reach Docker at /nonexistent/docker.sock: "),
                    "{m}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
