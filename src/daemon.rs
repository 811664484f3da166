//! The daemon's life: start-up (state directories, crash recovery,
//! registry sync, environment, listener), serving, and graceful shutdown on
//! SIGTERM/SIGINT (stop accepting, let transfers finish for a grace period,
//! then cancel what is left).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::config::{Config, EnvironmentKind};
use crate::environment::docker::{socket_from_env, DockerEnvironment};
use crate::environment::none::NoneEnvironment;
use crate::environment::Environment;
use crate::events::EventBus;
use crate::http::{HttpServer, ServerOptions, ShutdownHandle, TlsFiles};
use crate::node::Node;
use crate::panel::{PanelClient, PanelOptions};
use crate::server::{Registry, ServerConfig};
use crate::sys::{self, SignalSet};
use crate::transfer::throttle::Throttle;
use crate::transfer::Manager;

/// Time transfers get to finish after a shutdown signal before they are
/// cancelled; `FERRY_SHUTDOWN_GRACE` (seconds) overrides it.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A start-up failure: what failed, said for an operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node that is bound and ready to serve.
pub struct Daemon {
    pub node: Arc<Node>,
    http: HttpServer,
}

impl Daemon {
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.http.shutdown_handle()
    }
}

/// Builds the node and binds its listener.
pub fn start(config: Config) -> Result<Daemon, StartError> {
    crate::archive::tune_allocator();
    raise_open_files_limit();
    let system = &config.system;
    let state_dir = system.state_dir();
    for dir in [&state_dir, &system.data] {
        std::fs::create_dir_all(dir)
            .map_err(|e| StartError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let environment = open_environment(&config)?;
    let events = Arc::new(EventBus::default());
    let transfers = Manager::new(&state_dir, Arc::clone(&events)).map_err(|e| {
        StartError(format!(
            "cannot open transfer state in {}: {e}",
            state_dir.display()
        ))
    })?;
    let registry =
        Registry::open(&state_dir.join("servers")).map_err(|e| StartError(e.to_string()))?;
    let panel = (!config.standalone()).then(|| {
        PanelClient::new(
            &config.remote,
            &config.token_id,
            &config.token,
            PanelOptions::default(),
        )
    });
    match &panel {
        Some(panel) => match panel.list_servers() {
            Ok(servers) => {
                let count = servers.len();
                let configs = servers
                    .into_iter()
                    .map(|s| ServerConfig {
                        uuid: s.uuid,
                        settings: s.settings,
                        process_configuration: s.process_configuration,
                    })
                    .collect();
                registry
                    .replace_all(configs)
                    .map_err(|e| StartError(e.to_string()))?;
                log::info!("panel: {count} server(s) on this node");
            }
            // Keep serving what is known locally: a panel outage must not
            // keep a node (and its running servers) from coming up.
            Err(e) => {
                log::error!("panel: cannot list this node's servers, using the local registry: {e}")
            }
        },
        None => {
            registry
                .adopt_directories(&system.data)
                .map_err(|e| StartError(e.to_string()))?;
        }
    }
    // check-config has validated the address; an IPv6 host ("::1") needs
    // no brackets this way.
    let ip: std::net::IpAddr = config
        .api
        .host
        .parse()
        .map_err(|e| StartError(format!("config key `api.host`: {e}")))?;
    let addr = SocketAddr::new(ip, config.api.port);
    let options = ServerOptions {
        tls: config.api.ssl.as_ref().map(|ssl| TlsFiles {
            cert: ssl.cert.clone(),
            key: ssl.key.clone(),
        }),
        ..ServerOptions::default()
    };
    let http = HttpServer::bind(addr, options)
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
    let node = Arc::new(Node {
        upload: Throttle::new(system.transfers.upload_limit),
        download: Throttle::new(system.transfers.download_limit),
        config: config.clone(),
        registry,
        transfers,
        events,
        environment,
        panel,
        http_requests: Mutex::new(Default::default()),
        open_connections: http.open_connections(),
        started: Instant::now(),
        sessions: Default::default(),
    });
    // Sessions that can resume are taken from recovery first (it would
    // undo their transfers), then go on once it ran (SPEC §10).
    let sessions = crate::transfer::segmented::store::Sessions::hold_back(&node);
    // So are a source's segmented transfers it can resume (docs/transport.md).
    let outgoing = crate::transfer::source::resume::hold_back(&node);
    crate::transfer::finish::recovery::recover(&node);
    crate::transfer::segmented::store::Sessions::resume(&node, sessions);
    crate::transfer::source::resume::take_up(&node, outgoing);
    crate::transfer::segmented::store::Sessions::spawn_sweeper(&node);

    Ok(Daemon { node, http })
}

fn open_environment(config: &Config) -> Result<Box<dyn Environment>, StartError> {
    match config.system.environment {
        EnvironmentKind::None => Ok(Box::new(NoneEnvironment::new())),
        EnvironmentKind::Docker => {
            let socket =
                socket_from_env(&config.docker.socket).map_err(|e| StartError(e.to_string()))?;
            let mut docker = DockerEnvironment::connect(&socket, &config.docker.network).map_err(|e| {
                StartError(format!(
                    "{e} (set `docker.socket`, or `system.environment: none` to run without containers)"
                ))
            })?;
            if let Some((uid, gid)) = config.system.user {
                docker = docker.with_user(uid, gid);
            }
            Ok(Box::new(docker))
        }
    }
}

/// Serves until SIGTERM/SIGINT; returns the process exit code.
pub fn serve(config: Config) -> i32 {
    serve_reloading(config, None)
}

/// What SIGHUP does: the audit log is reopened (log rotation), the config
/// file re-read to re-warn about unknown keys and to apply the one setting
/// that is safe to change under running transfers, `debug` (the log
/// level); every other change is named as needing a restart.
fn reload(path: Option<&std::path::Path>) {
    crate::transfer::audit::request_reopen();
    log::info!("SIGHUP: the audit log is reopened before its next line");
    let Some(path) = path else { return };
    match crate::config::load_checked(path) {
        Ok((config, unknown)) => {
            for w in &unknown {
                log::warn!("{w}");
            }
            if std::env::var_os("FERRY_LOG").is_none() {
                let level = if config.debug {
                    log::LevelFilter::Debug
                } else {
                    log::LevelFilter::Info
                };
                log::set_max_level(level);
                log::info!("SIGHUP: log level is {level} (debug: {})", config.debug);
            }
            log::info!(
                "SIGHUP: re-read {}; other changes (listen address, directories, caps, panel) take effect at the next restart",
                path.display()
            );
        }
        Err(e) => log::warn!("SIGHUP: {} not reloaded: {e}", path.display()),
    }
}

/// [`serve`], re-reading `reload_from` (the config file) on SIGHUP.
pub fn serve_reloading(config: Config, reload_from: Option<std::path::PathBuf>) -> i32 {
    crate::api::metrics::mark_start();
    // Block the signals before any thread exists so every thread inherits
    // the mask and only the waiter below receives them.
    let signals = SignalSet::stop_signals();
    match signals.block() {
        Ok(_) => {}
        Err(e) => {
            log::error!("cannot set up signal handling: {e}");
            return 1;
        }
    }
    let daemon = match start(config) {
        Ok(d) => d,
        Err(e) => {
            log::error!("cannot start: {e}");
            return 1;
        }
    };
    let addr = daemon.local_addr();
    let handle = daemon.shutdown_handle();
    let node = Arc::clone(&daemon.node);
    let grace = std::env::var("FERRY_SHUTDOWN_GRACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE);
    let waiter = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let signal = loop {
                let signal = signals.wait();
                if signal != libc::SIGHUP {
                    break signal;
                }
                reload(reload_from.as_deref());
            };
            log::info!(
                "received signal {signal}: shutting down (transfers get {grace:?} to finish)"
            );
            handle.shutdown();
            drain_transfers(&node, grace);
            // Websockets stay open through the drain so clients see the
            // transfers end; then they are told the node is going away.
            crate::api::ws::close_all(Duration::from_secs(2));
        });
    let waiter = match waiter {
        Ok(w) => w,
        Err(e) => {
            log::error!("cannot start the signal thread: {e}");
            return 1;
        }
    };
    log::info!("listening on {addr}");
    let api = Arc::new(Api::new(Arc::clone(&daemon.node)));
    let result = daemon.http.run(api, grace + Duration::from_secs(10));
    let _ = waiter.join();
    match result {
        Ok(()) => {
            log::info!("stopped");
            0
        }
        Err(e) => {
            log::error!("server error: {e}");
            1
        }
    }
}

/// Lets active transfers finish for `grace`, then cancels the rest and
/// waits briefly for them to end.
pub fn drain_transfers(node: &Node, grace: Duration) {
    let deadline = Instant::now() + grace;
    for t in node.transfers.all_active() {
        t.wait_ended(deadline.saturating_duration_since(Instant::now()));
    }
    let left = node.transfers.all_active();
    if left.is_empty() {
        return;
    }
    log::warn!(
        "cancelling {} transfer(s) still running at shutdown",
        left.len()
    );
    for t in &left {
        let _ = node
            .transfers
            .cancel(t, Some("node shutting down".to_string()));
    }
    for t in &left {
        t.wait_ended(Duration::from_secs(5));
    }
}

/// Raises the soft limit on open files to the hard one, as Go programs
/// (Wings) do at start: every connection, websocket, staging directory
/// and file being archived holds one, and the usual soft default of 1024
/// would cap a busy node far below what the system allows it.
fn raise_open_files_limit() {
    let Ok((before, max)) = sys::open_files_limit() else {
        return;
    };
    if before >= max {
        return;
    }
    match sys::set_open_files_limit(max, max) {
        Ok(()) => log::debug!("open files limit raised from {before} to {max}"),
        Err(e) => log::warn!("cannot raise the open files limit from {before}: {e}"),
    }
}
