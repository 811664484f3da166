//! Servers this node holds: the persisted registry, the per-server
//! transferring mark, and the JSON view the API returns.

mod registry;

pub use registry::{Registry, RegistryError};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::environment::ServerSpec;

/// What the registry persists for a server: the panel's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    pub uuid: String,
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub process_configuration: serde_json::Value,
}

impl ServerConfig {
    /// The minimal configuration given to an adopted or received server
    /// when nothing better is known.
    pub fn minimal(uuid: &str) -> Self {
        ServerConfig {
            uuid: uuid.to_string(),
            settings: serde_json::json!({ "uuid": uuid }),
            process_configuration: serde_json::json!({}),
        }
    }

    /// What the environment works from: this configuration and where the
    /// server's data lives under `data_root`.
    pub fn into_spec(self, data_root: &Path) -> ServerSpec {
        ServerSpec {
            data_dir: data_dir(data_root, &self.uuid),
            uuid: self.uuid,
            settings: self.settings,
            process_configuration: self.process_configuration,
        }
    }

    /// `build.disk_space` in bytes, None when 0 or absent (unlimited).
    pub fn disk_space_bytes(&self) -> Option<u64> {
        let mib = self.settings.pointer("/build/disk_space")?.as_u64()?;
        (mib > 0).then(|| mib.saturating_mul(1024 * 1024))
    }

    pub fn is_suspended(&self) -> bool {
        self.settings
            .get("suspended")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// A registered server.
pub struct Server {
    pub uuid: String,
    config: RwLock<ServerConfig>,
    transferring: AtomicBool,
    /// Set by `DELETE /api/servers/:server` while a transfer still runs:
    /// the removal happens when that transfer ends.
    delete_requested: AtomicBool,
    /// Serializes the end of a transfer with a delete, so a delete that
    /// arrives as the transfer ends is never lost.
    pub lifecycle: Mutex<()>,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Server {
            uuid: config.uuid.clone(),
            config: RwLock::new(config),
            transferring: AtomicBool::new(false),
            delete_requested: AtomicBool::new(false),
            lifecycle: Mutex::new(()),
        }
    }

    pub fn config(&self) -> ServerConfig {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_config(&self, config: ServerConfig) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    pub fn spec(&self, data_root: &Path) -> ServerSpec {
        self.config().into_spec(data_root)
    }

    pub fn is_transferring(&self) -> bool {
        self.transferring.load(Ordering::SeqCst)
    }

    /// Takes the transferring mark if it is free; the mark is released when
    /// the returned guard drops, so a panicking transfer cannot leave the
    /// server locked.
    pub fn try_mark_transferring(self: &Arc<Self>) -> Option<TransferMark> {
        self.transferring
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| TransferMark {
                server: Arc::clone(self),
            })
    }

    pub fn request_delete(&self) {
        self.delete_requested.store(true, Ordering::SeqCst);
    }

    pub fn delete_requested(&self) -> bool {
        self.delete_requested.load(Ordering::SeqCst)
    }
}

/// Proof that a server is marked transferring; dropping it releases the mark.
pub struct TransferMark {
    server: Arc<Server>,
}

impl TransferMark {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for TransferMark {
    fn drop(&mut self) {
        self.server.transferring.store(false, Ordering::SeqCst);
    }
}

/// `<data>/<uuid>`.
pub fn data_dir(data_root: &Path, uuid: &str) -> PathBuf {
    data_root.join(uuid)
}

/// A canonical lowercase UUID (8-4-4-4-12 hex), the only names accepted
/// for servers so a path parameter can never name something else.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_mark_is_exclusive_and_released_on_drop() {
        let s = Arc::new(Server::new(ServerConfig::minimal("u")));
        let mark = s.try_mark_transferring().unwrap();
        assert!(s.is_transferring());
        assert!(s.try_mark_transferring().is_none());
        drop(mark);
        assert!(!s.is_transferring());
        assert!(s.try_mark_transferring().is_some());
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("9f1e2d3c-4b5a-4978-8f6e-5d4c3b2a1908"));
        assert!(!is_uuid("9F1E2D3C-4B5A-4978-8F6E-5D4C3B2A1908"));
        assert!(!is_uuid("../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!is_uuid("9f1e2d3c4b5a49788f6e5d4c3b2a1908"));
        assert!(!is_uuid(""));
    }

    #[test]
    fn disk_space_from_settings() {
        let mut c = ServerConfig::minimal("u");
        assert_eq!(c.disk_space_bytes(), None);
        c.settings = serde_json::json!({"build": {"disk_space": 0}});
        assert_eq!(c.disk_space_bytes(), None);
        c.settings = serde_json::json!({"build": {"disk_space": 2}});
        assert_eq!(c.disk_space_bytes(), Some(2 * 1024 * 1024));
    }
}
