//! The server registry: every server this node holds, persisted as one
//! JSON file per server under `<root>/ferry/servers/`, loaded at start and
//! (with a panel) replaced by the panel's list.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{is_uuid, Server, ServerConfig};

#[derive(Debug)]
pub enum RegistryError {
    /// The server is already registered.
    Exists,
    Io(String),
}

/// A server id is a file and directory name: only UUIDs (SPEC §2).
fn refuse_non_uuid(config: &ServerConfig) -> Result<(), RegistryError> {
    if is_uuid(&config.uuid) {
        return Ok(());
    }
    Err(RegistryError::Io(format!(
        "server id {:?} is not a uuid",
        config.uuid
    )))
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::Exists => write!(f, "server already registered"),
            RegistryError::Io(m) => write!(f, "{m}"),
        }
    }
}

pub struct Registry {
    dir: PathBuf,
    servers: RwLock<HashMap<String, Arc<Server>>>,
}

impl Registry {
    /// Opens (creating if needed) the registry directory and loads it.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        fs::create_dir_all(dir)
            .map_err(|e| RegistryError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let mut servers = HashMap::new();
        let entries = fs::read_dir(dir)
            .map_err(|e| RegistryError::Io(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ServerConfig>(&b).map_err(|e| e.to_string()))
            {
                Ok(config) if is_uuid(&config.uuid) => {
                    servers.insert(config.uuid.clone(), Arc::new(Server::new(config)));
                }
                Ok(config) => log::warn!(
                    "registry: ignoring {} (server uuid `{}` is not a uuid)",
                    path.display(),
                    config.uuid
                ),
                Err(e) => log::warn!("registry: ignoring unreadable {}: {e}", path.display()),
            }
        }
        log::info!(
            "registry: {} server(s) loaded from {}",
            servers.len(),
            dir.display()
        );
        Ok(Registry {
            dir: dir.to_path_buf(),
            servers: RwLock::new(servers),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Server>>> {
        self.servers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Server>>> {
        self.servers.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, uuid: &str) -> Option<Arc<Server>> {
        self.read().get(uuid).cloned()
    }

    pub fn contains(&self, uuid: &str) -> bool {
        self.read().contains_key(uuid)
    }

    /// All servers, sorted by uuid for stable listings.
    pub fn list(&self) -> Vec<Arc<Server>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        all
    }

    /// Registers a new server and persists it; refuses an existing uuid.
    pub fn insert(&self, config: ServerConfig) -> Result<Arc<Server>, RegistryError> {
        refuse_non_uuid(&config)?;
        let mut servers = self.write();
        if servers.contains_key(&config.uuid) {
            return Err(RegistryError::Exists);
        }
        self.persist(&config)?;
        let server = Arc::new(Server::new(config));
        servers.insert(server.uuid.clone(), Arc::clone(&server));
        Ok(server)
    }

    /// Registers or replaces a server's configuration.
    pub fn upsert(&self, config: ServerConfig) -> Result<Arc<Server>, RegistryError> {
        refuse_non_uuid(&config)?;
        let mut servers = self.write();
        self.persist(&config)?;
        if let Some(existing) = servers.get(&config.uuid) {
            existing.set_config(config);
            return Ok(Arc::clone(existing));
        }
        let server = Arc::new(Server::new(config));
        servers.insert(server.uuid.clone(), Arc::clone(&server));
        Ok(server)
    }

    /// Forgets a server (its data is the caller's business).
    pub fn remove(&self, uuid: &str) -> Option<Arc<Server>> {
        let removed = self.write().remove(uuid);
        if removed.is_some() {
            if let Err(e) = crate::statefile::remove(&self.file(uuid)) {
                log::warn!("registry: cannot remove {}: {e}", self.file(uuid).display());
            }
        }
        removed
    }

    /// Makes the registry equal to the panel's list: the panel wins.
    pub fn replace_all(&self, configs: Vec<ServerConfig>) -> Result<(), RegistryError> {
        let keep: std::collections::HashSet<String> =
            configs.iter().map(|c| c.uuid.clone()).collect();
        for server in self.list() {
            if !keep.contains(&server.uuid) {
                log::info!(
                    "registry: {} is not on the panel's list any more; forgetting it (its data stays on disk)",
                    server.uuid
                );
                self.remove(&server.uuid);
            }
        }
        for config in configs {
            self.upsert(config)?;
        }
        Ok(())
    }

    /// Standalone mode: registers every directory under `data` named by a
    /// uuid and not registered yet, with a minimal configuration.
    pub fn adopt_directories(&self, data: &Path) -> Result<Vec<String>, RegistryError> {
        let mut adopted = Vec::new();
        let entries = match fs::read_dir(data) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(adopted),
            Err(e) => {
                return Err(RegistryError::Io(format!(
                    "cannot read {}: {e}",
                    data.display()
                )))
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // file_type() does not follow links: a symlink named like a
            // server is not adopted.
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && is_uuid(&name) && !self.contains(&name) {
                self.insert(ServerConfig::minimal(&name))?;
                log::info!(
                    "registry: adopted {name} from {} with a minimal configuration",
                    data.display()
                );
                adopted.push(name);
            }
        }
        Ok(adopted)
    }

    fn file(&self, uuid: &str) -> PathBuf {
        self.dir.join(format!("{uuid}.json"))
    }

    /// Written with `statefile`: a crash never leaves a torn entry.
    fn persist(&self, config: &ServerConfig) -> Result<(), RegistryError> {
        let path = self.file(&config.uuid);
        crate::statefile::write_json(&path, config)
            .map_err(|e| RegistryError::Io(format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "11111111-1111-4111-8111-111111111111";
    const B: &str = "22222222-2222-4222-8222-222222222222";

    #[test]
    fn ids_that_are_not_uuids_are_refused_at_insert_and_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        for bad in [
            "..",
            "../../etc",
            "/abs",
            "",
            "11111111-1111-4111-8111-11111111111G",
        ] {
            assert!(reg.insert(ServerConfig::minimal(bad)).is_err(), "{bad:?}");
            assert!(reg.upsert(ServerConfig::minimal(bad)).is_err(), "{bad:?}");
        }
        assert!(reg.list().is_empty());
        // A registry file on disk with a path for an id is not loaded.
        reg.insert(ServerConfig::minimal(A)).unwrap();
        drop(reg);
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_file())
            .unwrap();
        let text = std::fs::read_to_string(&file).unwrap().replace(A, "../x");
        std::fs::write(&file, text).unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        assert!(!reg.contains(A) && !reg.contains("../x"));
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.insert(ServerConfig::minimal(A)).unwrap();
        assert!(matches!(
            reg.insert(ServerConfig::minimal(A)),
            Err(RegistryError::Exists)
        ));
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert!(reg.contains(A));
        reg.remove(A);
        drop(reg);
        assert!(!Registry::open(dir.path()).unwrap().contains(A));
    }

    #[test]
    fn panel_list_wins() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.insert(ServerConfig::minimal(A)).unwrap();
        let mut b = ServerConfig::minimal(B);
        b.settings = serde_json::json!({"uuid": B, "build": {"disk_space": 5}});
        reg.replace_all(vec![b.clone()]).unwrap();
        assert!(!reg.contains(A));
        assert_eq!(reg.get(B).unwrap().config(), b);
    }

    #[test]
    fn adopts_uuid_directories_but_not_links_or_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join(A)).unwrap();
        fs::create_dir_all(data.join("not-a-server")).unwrap();
        std::os::unix::fs::symlink("/etc", data.join(B)).unwrap();
        let reg = Registry::open(&dir.path().join("reg")).unwrap();
        assert_eq!(reg.adopt_directories(&data).unwrap(), vec![A.to_string()]);
        assert_eq!(reg.list().len(), 1);
        assert!(reg.adopt_directories(&data).unwrap().is_empty());
    }

    #[test]
    fn ignores_corrupt_entries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.json"), b"{not json").unwrap();
        fs::write(dir.path().join("y.json"), br#"{"uuid":"../etc"}"#).unwrap();
        assert!(Registry::open(dir.path()).unwrap().list().is_empty());
    }
}
