//! The token replay guard (SPEC §4): a transfer token that served a
//! finished transfer is refused until it expires. The used tokens are
//! kept in `<root>/ferry/used-tokens.json`, written with `statefile`, so
//! a restart does not reopen them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{statefile, timefmt};

/// Seconds a token stays remembered past its `exp` (the JWT leeway).
const LEEWAY: u64 = 60;

pub struct ReplayGuard {
    path: PathBuf,
    /// Replay key → expiry (unix seconds).
    used: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    /// Loads the guard from `<state_dir>/used-tokens.json` (empty if absent
    /// or unreadable: a torn file cannot exist, see `statefile`).
    pub fn open(state_dir: &Path) -> ReplayGuard {
        let path = state_dir.join("used-tokens.json");
        let used = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ReplayGuard {
            path,
            used: Mutex::new(used),
        }
    }

    /// True when a finished transfer already used this token.
    pub fn is_used(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Remembers a token until it expires (plus leeway) and persists the
    /// list; expired entries are dropped on the way.
    pub fn remember(&self, key: &str, expires_at: u64) {
        let now = timefmt::now_unix();
        let mut used = self.lock();
        used.retain(|_, exp| *exp + LEEWAY >= now);
        used.insert(key.to_string(), expires_at);
        if let Err(e) = statefile::write_json(&self.path, &*used) {
            log::warn!(
                "cannot persist the used-token list in {}: {e}",
                self.path.display()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_tokens_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let now = timefmt::now_unix();
        let guard = ReplayGuard::open(dir.path());
        guard.remember("old", now - 3600);
        guard.remember("k1", now + 600);
        let guard = ReplayGuard::open(dir.path());
        assert!(guard.is_used("k1"));
        assert!(!guard.is_used("k2"));
        guard.remember("k2", now + 600);
        assert!(!ReplayGuard::open(dir.path()).is_used("old"), "expired");
    }
}
