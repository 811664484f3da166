//! `config.yml` → typed [`Config`]: defaults, validation and the built-in
//! development config (SPEC §1).
//!
//! The file is a compatible subset of the Wings config the panel hands out:
//! it is read as a YAML tree and the keys ferry knows are taken out one by
//! one, so a wrong value names its key, and every other key is ignored
//! (logged at debug) instead of failing a panel-generated file.
//!
//! - this file: the typed config, its errors, loading and the built-in
//!   development config;
//! - `config/reader.rs`: the `Reader` that takes keys out of the tree with
//!   their checks;
//! - `config/keys.rs`: known Wings/Pelican keys and typo warnings;
//! - `config/family.rs`: Pterodactyl or Pelican defaults, backups and logs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

mod family;
mod keys;
mod reader;

pub use family::{default_path, FamilyDefaults, KeepConfig, PanelFamily, PELICAN_PATH};
use keys::unknown_keys;
pub use keys::{load_checked, unknown_key_warnings, UnknownKey};
use reader::Reader;

/// The default config path, as Wings.
pub const DEFAULT_PATH: &str = "/etc/pterodactyl/config.yml";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Node identity toward the panel (required with `remote`).
    pub uuid: String,
    pub token_id: String,
    /// Node secret: bearer token for the node API and HS256 key for JWTs.
    pub token: String,
    pub debug: bool,
    pub api: ApiConfig,
    /// Panel base URL without a trailing slash; empty = standalone.
    pub remote: String,
    pub system: SystemConfig,
    pub docker: DockerConfig,
    /// `metrics.token`: a read-only bearer token for `GET /metrics` only, so
    /// Prometheus need not hold the node secret; empty = node token only.
    pub metrics_token: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub host: String,
    /// 0 picks a free port (tests and the dev config use it).
    pub port: u16,
    pub ssl: Option<SslConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SslConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentKind {
    Docker,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SystemConfig {
    pub root_directory: PathBuf,
    pub data: PathBuf,
    /// Owner of received files; None = the daemon's own.
    pub user: Option<(u32, u32)>,
    pub environment: EnvironmentKind,
    pub transfers: TransferConfig,
    /// Where the node keeps local backups and installation logs.
    pub keep: KeepConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransferConfig {
    /// Receive cap in bytes per second shared by all incoming transfers; 0 = none.
    pub download_limit: u64,
    /// Send cap in bytes per second shared by all outgoing transfers; 0 = none.
    pub upload_limit: u64,
    /// gzip level 0–9.
    pub compression_level: u32,
    /// 0 = one per core.
    pub compression_threads: usize,
    pub stop_timeout: Duration,
    /// The ferry-to-ferry transport (SPEC §10, docs/transport.md).
    pub segmented: SegmentedConfig,
}

// --- system.transfers: the segmented transport (SPEC §10) -------------------

/// `system.transfers.transport`, `segment_size`, `resume_window` and
/// `precopy`.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentedConfig {
    /// Whether a source offers the segmented transport to a ferry
    /// destination at all (docs/decisions.md: opt-in for now).
    pub transport: Transport,
    /// Bytes per segment request (the key is in MiB, 1–1024; default 64, so
    /// a proxy's 100 MB body limit passes).
    pub segment_size: u64,
    /// How long a silent resumable session is kept (seconds, 60–86400;
    /// default 900).
    pub resume_window: Duration,
    pub precopy: Precopy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The classic multipart POST to every destination.
    Classic,
    /// Probe the destination; a ferry node gets the segmented transport
    /// (the default).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precopy {
    /// Copy while the server runs, then send the changes after the stop.
    Auto,
    /// Stop first, then copy (the classic order).
    Off,
}

impl Default for SegmentedConfig {
    fn default() -> Self {
        SegmentedConfig {
            transport: Transport::Auto,
            segment_size: 64 * 1024 * 1024,
            resume_window: Duration::from_secs(900),
            precopy: Precopy::Auto,
        }
    }
}

// --- end of the segmented transport's block ---------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    pub socket: PathBuf,
    pub network: String,
}

impl SystemConfig {
    /// Where ferry keeps its own state: `<root>/ferry`.
    pub fn state_dir(&self) -> PathBuf {
        self.root_directory.join("ferry")
    }
}

impl Config {
    /// Standalone mode: no panel calls (SPEC §8).
    pub fn standalone(&self) -> bool {
        self.remote.is_empty()
    }
}

/// A config problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// Reads and validates a config file; one under `/etc/pelican/` gets
/// Pelican's defaults.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: String::new(),
        problem: format!("cannot read config file {}: {e}", path.display()),
    })?;
    parse_as(&text, PanelFamily::of_config_path(path))
}

/// Parses and validates config text (Pterodactyl's defaults).
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_as(text, PanelFamily::Pterodactyl)
}

/// Parses and validates config text with a panel family's defaults.
pub fn parse_as(text: &str, family: PanelFamily) -> Result<Config, ConfigError> {
    let root: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_norway::from_str(text).map_err(|e| ConfigError {
            key: String::new(),
            problem: format!("config is not valid YAML: {e}"),
        })?
    };
    if !matches!(root, Value::Null | Value::Mapping(_)) {
        return Err(error("", "config must be a YAML mapping"));
    }
    let mut reader = Reader {
        root: &root,
        used: BTreeSet::new(),
        family,
    };
    let config = reader.config()?;
    for key in unknown_keys(&root, "", &reader.used) {
        log::debug!("config: ignoring key `{key}`");
    }
    Ok(config)
}

/// The built-in development config behind `make run`: loopback, data under
/// `dir`, no Docker, no panel.
pub fn development(dir: &Path, token: &str, port: u16) -> Config {
    Config {
        uuid: String::new(),
        token_id: String::new(),
        token: token.to_string(),
        debug: false,
        api: ApiConfig {
            host: "127.0.0.1".to_string(),
            port,
            ssl: None,
        },
        remote: String::new(),
        system: SystemConfig {
            root_directory: dir.join("root"),
            data: dir.join("volumes"),
            user: None,
            environment: EnvironmentKind::None,
            transfers: TransferConfig {
                download_limit: 0,
                upload_limit: 0,
                compression_level: 1,
                compression_threads: 0,
                stop_timeout: Duration::from_secs(15),
                segmented: SegmentedConfig::default(),
            },
            keep: KeepConfig {
                family: PanelFamily::Pterodactyl,
                backup_directory: dir.join("backups"),
                log_directory: dir.join("log"),
            },
        },
        docker: DockerConfig {
            socket: PathBuf::from("/var/run/docker.sock"),
            network: "pterodactyl_nw".to_string(),
        },
        metrics_token: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as the panel generates it, plus the keys a long-running
    /// Wings install accumulates.
    const WINGS_FILE: &str = r#"
debug: false
app_name: Pterodactyl
uuid: 9f1e2d3c-4b5a-4978-8f6e-5d4c3b2a1908
token_id: Xk3mP9qL2wR7tY5u
token: 4a8f2c9e1b7d3f6a0c5e8b2d9f4a7c1e3b6d0f8a2c5e9b1d4f7a0c3e6b9d2f5a
api:
  host: 0.0.0.0
  port: 8080
  ssl:
    enabled: false
    cert: /etc/letsencrypt/live/node1.example.com/fullchain.pem
    key: /etc/letsencrypt/live/node1.example.com/privkey.pem
  disable_remote_download: false
  upload_limit: 100
  trusted_proxies: []
system:
  root_directory: /var/lib/pterodactyl
  log_directory: /var/log/pterodactyl
  data: /var/lib/pterodactyl/volumes
  archive_directory: /var/lib/pterodactyl/archives
  backup_directory: /var/lib/pterodactyl/backups
  tmp_directory: /tmp/pterodactyl
  username: pterodactyl
  timezone: Etc/UTC
  user:
    rootless:
      enabled: false
      container_uid: 0
      container_gid: 0
    uid: 988
    gid: 988
  disk_check_interval: 150
  activity_send_interval: 60
  activity_send_count: 100
  check_permissions_on_boot: true
  enable_log_rotate: true
  websocket_log_count: 150
  sftp:
    bind_address: 0.0.0.0
    bind_port: 2022
    read_only: false
  crash_detection:
    enabled: true
    detect_clean_exit_as_crash: true
    timeout: 60
  backups:
    write_limit: 0
    compression_level: best_speed
  transfers:
    download_limit: 50
  openat_mode: auto
docker:
  network:
    interface: 172.18.0.1
    dns:
    - 1.1.1.1
    - 1.0.0.1
    name: pterodactyl_nw
    ispn: false
    driver: bridge
    network_mode: pterodactyl_nw
    is_internal: false
    enable_icc: true
    network_mtu: 1500
    interfaces:
      v4:
        subnet: 172.18.0.0/16
        gateway: 172.18.0.1
      v6:
        subnet: fdba:17c8:6c94::/64
        gateway: fdba:17c8:6c94::1011
  domainname: ""
  registries: {}
  tmpfs_size: 100
  container_pid_limit: 512
  installer_limits:
    memory: 1024
    cpu: 100
  overhead:
    override: false
    default_multiplier: 1.05
    multipliers: {}
  use_performant_inspect: true
  userns_mode: ""
  log_config:
    type: local
    config:
      compress: "false"
      max-file: "1"
      max-size: 5m
      mode: non-blocking
throttles:
  enabled: true
  lines: 2000
  line_reset_interval: 100
remote: 'https://panel.example.com/'
remote_query:
  timeout: 30
  boot_servers_per_page: 50
allowed_mounts: []
allowed_origins: []
allow_cors_private_network: false
ignore_panel_config_updates: false
"#;

    #[test]
    fn wings_file_loads_unchanged() {
        let c = parse(WINGS_FILE).unwrap();
        assert_eq!(c.uuid, "9f1e2d3c-4b5a-4978-8f6e-5d4c3b2a1908");
        assert_eq!(c.token_id, "Xk3mP9qL2wR7tY5u");
        assert_eq!(c.remote, "https://panel.example.com");
        assert_eq!(c.api.host, "0.0.0.0");
        assert_eq!(c.api.port, 8080);
        assert_eq!(c.api.ssl, None);
        assert_eq!(c.system.data, PathBuf::from("/var/lib/pterodactyl/volumes"));
        assert_eq!(c.system.user, Some((988, 988)));
        assert_eq!(c.system.transfers.download_limit, 50 * 1024 * 1024);
        assert_eq!(c.system.environment, EnvironmentKind::Docker);
        assert_eq!(c.docker.network, "pterodactyl_nw");
        assert!(!c.standalone());
    }

    #[test]
    fn panel_generated_minimal_file_loads() {
        let text = "debug: false\nuuid: a\ntoken_id: b\ntoken: c-long-enough\napi:\n  host: 0.0.0.0\n  port: 8080\n  ssl:\n    enabled: true\n    cert: /c.pem\n    key: /k.pem\n  upload_limit: 100\nsystem:\n  data: /srv/v\n  sftp:\n    bind_port: 2022\nallowed_mounts: []\nremote: 'https://p.example'\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.api.ssl,
            Some(SslConfig {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(c.system.data, PathBuf::from("/srv/v"));
    }

    #[test]
    fn defaults_with_only_a_token() {
        let c = parse("token: secret-secret").unwrap();
        assert_eq!(c.api.host, "0.0.0.0");
        assert_eq!(c.api.port, 8080);
        assert!(c.standalone());
        assert_eq!(
            c.system.root_directory,
            PathBuf::from("/var/lib/pterodactyl")
        );
        assert_eq!(
            c.system.state_dir(),
            PathBuf::from("/var/lib/pterodactyl/ferry")
        );
        assert_eq!(c.system.user, None);
        let t = &c.system.transfers;
        assert_eq!((t.download_limit, t.upload_limit), (0, 0));
        assert_eq!(t.compression_level, 1);
        assert_eq!(t.compression_threads, 0);
        assert_eq!(t.stop_timeout, Duration::from_secs(15));
        assert_eq!(t.segmented, SegmentedConfig::default());
        assert_eq!(t.segmented.segment_size, 64 * 1024 * 1024);
        assert_eq!(t.segmented.resume_window, Duration::from_secs(900));
        assert_eq!(t.segmented.precopy, Precopy::Auto);
        // On by default between ferry nodes (docs/decisions.md).
        assert_eq!(t.segmented.transport, Transport::Auto);
        let c =
            parse("token: secret-secret\nsystem:\n  transfers:\n    transport: classic").unwrap();
        assert_eq!(c.system.transfers.segmented.transport, Transport::Classic);
        let e =
            parse("token: secret-secret\nsystem:\n  transfers:\n    transport: fast").unwrap_err();
        assert!(e.to_string().contains("system.transfers.transport"), "{e}");
        assert_eq!(c.docker.network, "pterodactyl_nw");
    }

    #[test]
    fn segmented_transport_keys() {
        let c = parse(
            "token: tttttttttttt\nsystem:\n  transfers:\n    segment_size: 16\n    resume_window: 120\n    precopy: off\n",
        )
        .unwrap();
        let s = &c.system.transfers.segmented;
        assert_eq!(s.segment_size, 16 * 1024 * 1024);
        assert_eq!(s.resume_window, Duration::from_secs(120));
        assert_eq!(s.precopy, Precopy::Off);
        for (yaml, key) in [
            ("segment_size: 0", "system.transfers.segment_size"),
            ("segment_size: 2048", "system.transfers.segment_size"),
            ("resume_window: 5", "system.transfers.resume_window"),
            ("precopy: sometimes", "system.transfers.precopy"),
        ] {
            let text = format!("token: tttttttttttt\nsystem:\n  transfers:\n    {yaml}\n");
            assert_eq!(err(&text).key, key, "{yaml}");
        }
    }

    #[test]
    fn compression_levels() {
        for (text, level) in [
            ("none", 0),
            ("best_speed", 1),
            ("best_compression", 9),
            ("6", 6),
        ] {
            let c = parse(&format!(
                "token: tttttttttttt\nsystem:\n  transfers:\n    compression_level: {text}"
            ))
            .unwrap();
            assert_eq!(c.system.transfers.compression_level, level, "{text}");
        }
    }

    fn err(text: &str) -> ConfigError {
        parse(text).unwrap_err()
    }

    #[test]
    fn each_error_names_its_key() {
        assert_eq!(err("").key, "token");
        assert_eq!(err("token: '  '").key, "token");
        assert_eq!(err("token: short").key, "token");
        assert_eq!(err("token: tttttttttttt\nremote: ftp://x").key, "remote");
        assert_eq!(
            err("token: tttttttttttt\nremote: https://p\ntoken_id: x").key,
            "uuid"
        );
        assert_eq!(
            err("token: tttttttttttt\nremote: https://p\nuuid: x").key,
            "token_id"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  port: 70000").key,
            "api.port"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  port: http").key,
            "api.port"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  host: example.com").key,
            "api.host"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  ssl:\n    enabled: true\n    key: k").key,
            "api.ssl.cert"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  ssl:\n    enabled: true\n    cert: c").key,
            "api.ssl.key"
        );
        assert_eq!(
            err("token: tttttttttttt\napi:\n  ssl:\n    enabled: maybe").key,
            "api.ssl.enabled"
        );
        assert_eq!(
            err("token: tttttttttttt\nsystem:\n  environment: podman").key,
            "system.environment"
        );
        assert_eq!(
            err("token: tttttttttttt\nsystem:\n  transfers:\n    compression_level: fastest").key,
            "system.transfers.compression_level"
        );
        assert_eq!(
            err("token: tttttttttttt\nsystem:\n  transfers:\n    download_limit: -1").key,
            "system.transfers.download_limit"
        );
        assert_eq!(
            err("token: tttttttttttt\nsystem:\n  user:\n    uid: [1]").key,
            "system.user.uid"
        );
        assert_eq!(
            err("token: tttttttttttt\nsystem:\n  data: ''").key,
            "system.data"
        );
        assert_eq!(
            err("token: tttttttttttt\ndocker:\n  network:\n    name: ''").key,
            "docker.network.name"
        );
        let e = err("token: tttttttttttt\napi:\n  port: 70000");
        assert_eq!(
            e.to_string(),
            "config key `api.port`: must be at most 65535, got 70000"
        );
    }

    #[test]
    fn invalid_yaml_and_non_mapping_are_errors() {
        assert!(err("token: [unclosed").problem.contains("not valid YAML"));
        assert!(err("- a\n- b").problem.contains("mapping"));
    }

    #[test]
    fn unknown_keys_are_listed_but_known_ones_are_not() {
        let root: Value =
            serde_norway::from_str("token: tttttttttttt\nfoo: 1\napi:\n  port: 1\n  bar: 2")
                .unwrap();
        let mut reader = Reader {
            root: &root,
            used: BTreeSet::new(),
            family: PanelFamily::Pterodactyl,
        };
        reader.config().unwrap();
        assert_eq!(
            unknown_keys(&root, "", &reader.used),
            vec!["foo", "api.bar"]
        );
    }
}
