//! The `Reader`: takes the keys ferry knows out of the YAML tree, one by
//! one with their defaults and checks, so a wrong value names its key; it
//! remembers which keys it read (for the unknown-key warnings in `keys`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_norway::Value;

use super::{
    error, ApiConfig, Config, ConfigError, DockerConfig, EnvironmentKind, PanelFamily, Precopy,
    SegmentedConfig, SslConfig, SystemConfig, TransferConfig, Transport,
};

/// Takes known keys out of the YAML tree and remembers which were read.
pub(super) struct Reader<'a> {
    pub(super) root: &'a Value,
    pub(super) used: BTreeSet<String>,
    pub(super) family: PanelFamily,
}

impl Reader<'_> {
    pub(super) fn lookup(&mut self, key: &str) -> Option<&Value> {
        self.used.insert(key.to_string());
        let mut node = self.root;
        for part in key.split('.') {
            node = match node {
                Value::Mapping(map) => map.get(Value::String(part.to_string()))?,
                _ => return None,
            };
        }
        match node {
            Value::Null => None,
            other => Some(other),
        }
    }

    pub(super) fn string(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.lookup(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(_) => Err(error(key, "must be a string")),
        }
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.lookup(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(_) => Err(error(key, "must be true or false")),
        }
    }

    pub(super) fn unsigned(
        &mut self,
        key: &str,
        default: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = match self.lookup(key) {
            None => return Ok(default),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| error(key, "must be a whole number, 0 or more"))?,
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| error(key, format!("must be a whole number, got `{s}`")))?,
            Some(_) => return Err(error(key, "must be a whole number")),
        };
        if value > max {
            return Err(error(key, format!("must be at most {max}, got {value}")));
        }
        Ok(value)
    }

    pub(super) fn config(&mut self) -> Result<Config, ConfigError> {
        let token = self.string("token", "")?;
        if token.trim().is_empty() {
            return Err(error("token", "is required (the node secret)"));
        }
        if token.len() < crate::jwt::MIN_KEY_LEN {
            // It is also the HS256 key; shorter keys are refused by the JWT library.
            return Err(error(
                "token",
                format!("must be at least {} characters", crate::jwt::MIN_KEY_LEN),
            ));
        }
        let remote = self
            .string("remote", "")?
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !(remote.is_empty() || remote.starts_with("http://") || remote.starts_with("https://")) {
            return Err(error(
                "remote",
                format!("must be an http(s) URL, got `{remote}`"),
            ));
        }
        let uuid = self.string("uuid", "")?;
        let token_id = self.string("token_id", "")?;
        if !remote.is_empty() {
            if uuid.trim().is_empty() {
                return Err(error("uuid", "is required when `remote` is set"));
            }
            if token_id.trim().is_empty() {
                return Err(error("token_id", "is required when `remote` is set"));
            }
        }
        Ok(Config {
            uuid,
            token_id,
            token,
            debug: self.bool("debug", false)?,
            api: self.api()?,
            remote,
            system: self.system()?,
            docker: self.docker()?,
            metrics_token: self.metrics_token()?,
        })
    }

    pub(super) fn metrics_token(&mut self) -> Result<String, ConfigError> {
        let t = self.string("metrics.token", "")?.trim().to_string();
        if !t.is_empty() && t.len() < 16 {
            return Err(error("metrics.token", "must be at least 16 characters"));
        }
        Ok(t)
    }

    pub(super) fn api(&mut self) -> Result<ApiConfig, ConfigError> {
        let host = self.string("api.host", "0.0.0.0")?;
        if host.parse::<std::net::IpAddr>().is_err() {
            return Err(error(
                "api.host",
                format!("must be an IP address, got `{host}`"),
            ));
        }
        let port = self.unsigned("api.port", 8080, u16::MAX as u64)? as u16;
        let ssl = if self.bool("api.ssl.enabled", false)? {
            let cert = self.string("api.ssl.cert", "")?;
            let key = self.string("api.ssl.key", "")?;
            if cert.is_empty() {
                return Err(error(
                    "api.ssl.cert",
                    "is required when api.ssl.enabled is true",
                ));
            }
            if key.is_empty() {
                return Err(error(
                    "api.ssl.key",
                    "is required when api.ssl.enabled is true",
                ));
            }
            Some(SslConfig {
                cert: cert.into(),
                key: key.into(),
            })
        } else {
            self.lookup("api.ssl.cert");
            self.lookup("api.ssl.key");
            None
        };
        Ok(ApiConfig { host, port, ssl })
    }

    pub(super) fn system(&mut self) -> Result<SystemConfig, ConfigError> {
        let defaults = self.family.defaults();
        let root_directory = self.path("system.root_directory", defaults.root_directory)?;
        let data = self.path("system.data", defaults.data)?;
        let uid = self.lookup("system.user.uid").is_some();
        let gid = self.lookup("system.user.gid").is_some();
        let user = if uid || gid {
            let (own_uid, own_gid) = crate::sys::own_ids();
            Some((
                self.unsigned("system.user.uid", own_uid as u64, u32::MAX as u64)? as u32,
                self.unsigned("system.user.gid", own_gid as u64, u32::MAX as u64)? as u32,
            ))
        } else {
            None
        };
        let environment = match self.string("system.environment", "docker")?.as_str() {
            "docker" => EnvironmentKind::Docker,
            "none" => EnvironmentKind::None,
            other => {
                return Err(error(
                    "system.environment",
                    format!("must be `docker` or `none`, got `{other}`"),
                ))
            }
        };
        const MIB: u64 = 1024 * 1024;
        let transfers = TransferConfig {
            download_limit: self.unsigned("system.transfers.download_limit", 0, 1 << 30)? * MIB,
            upload_limit: self.unsigned("system.transfers.upload_limit", 0, 1 << 30)? * MIB,
            compression_level: self.compression_level()?,
            compression_threads: self.unsigned("system.transfers.compression_threads", 0, 256)?
                as usize,
            stop_timeout: Duration::from_secs(self.unsigned(
                "system.transfers.stop_timeout",
                15,
                3600,
            )?),
            segmented: self.segmented()?,
        };
        let keep = self.keep()?;
        Ok(SystemConfig {
            root_directory,
            data,
            user,
            environment,
            transfers,
            keep,
        })
    }

    /// The segmented transport's keys (SPEC §10).
    pub(super) fn segmented(&mut self) -> Result<SegmentedConfig, ConfigError> {
        const SIZE: &str = "system.transfers.segment_size";
        const WINDOW: &str = "system.transfers.resume_window";
        const PRECOPY: &str = "system.transfers.precopy";
        const TRANSPORT: &str = "system.transfers.transport";
        let transport = match self.string(TRANSPORT, "auto")?.as_str() {
            "classic" => Transport::Classic,
            "auto" => Transport::Auto,
            other => {
                return Err(error(
                    TRANSPORT,
                    format!("must be `classic` or `auto`, got `{other}`"),
                ))
            }
        };
        let size = self.unsigned(SIZE, 64, 1024)?;
        if size == 0 {
            return Err(error(SIZE, "must be at least 1 (MiB)"));
        }
        let window = self.unsigned(WINDOW, 900, 86_400)?;
        if window < 60 {
            return Err(error(
                WINDOW,
                format!("must be at least 60 seconds, got {window}"),
            ));
        }
        let precopy = match self.string(PRECOPY, "auto")?.as_str() {
            "auto" => Precopy::Auto,
            "off" | "false" => Precopy::Off,
            other => {
                return Err(error(
                    PRECOPY,
                    format!("must be `auto` or `off`, got `{other}`"),
                ))
            }
        };
        Ok(SegmentedConfig {
            transport,
            segment_size: size * 1024 * 1024,
            resume_window: Duration::from_secs(window),
            precopy,
        })
    }

    pub(super) fn compression_level(&mut self) -> Result<u32, ConfigError> {
        const KEY: &str = "system.transfers.compression_level";
        let level = match self.lookup(KEY) {
            None => return Ok(1),
            Some(Value::Number(n)) => n.as_u64().filter(|n| *n <= 9),
            Some(Value::String(s)) => match s.as_str() {
                "none" => Some(0),
                "best_speed" => Some(1),
                "best_compression" => Some(9),
                digits => digits.parse::<u64>().ok().filter(|n| *n <= 9),
            },
            Some(_) => None,
        };
        level.map(|l| l as u32).ok_or_else(|| {
            error(
                KEY,
                "must be `none`, `best_speed`, `best_compression` or a number 0-9",
            )
        })
    }

    pub(super) fn path(&mut self, key: &str, default: &str) -> Result<PathBuf, ConfigError> {
        let value = self.string(key, default)?;
        if value.is_empty() {
            return Err(error(key, "must not be empty"));
        }
        Ok(PathBuf::from(value))
    }

    pub(super) fn docker(&mut self) -> Result<DockerConfig, ConfigError> {
        // `DOCKER_HOST` is applied when connecting (environment::docker).
        let socket = self.path("docker.socket", "/var/run/docker.sock")?;
        let network = self.string("docker.network.name", "pterodactyl_nw")?;
        if network.is_empty() {
            return Err(error("docker.network.name", "must not be empty"));
        }
        Ok(DockerConfig { socket, network })
    }
}
