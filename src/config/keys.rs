//! Known keys and typo warnings: which keys Wings and Pelican define that
//! ferry does not use (accepted quietly), which a file has that nobody
//! defines (listed, with the nearest known key), and the debug log of the
//! keys a load ignored. ferry's own keys are whatever the `Reader` looks up.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde_norway::Value;

use super::{parse_as, Config, ConfigError, PanelFamily, Reader};

/// Keys Wings and Pelican define that ferry does not use: accepted quietly.
/// A `.*` entry accepts everything under it (opaque Wings subtrees). Taken
/// from Wings' and Pelican's `config/config.go` and `config/config_docker.go`.
/// ferry's own keys need no entry: every key the reader looks up is known.
const WINGS_KEYS: &[&str] = &[
    "app_name",
    "uuid",
    "token_id",
    "token",
    "debug",
    "remote",
    "remote_query.*",
    "allowed_mounts",
    "allowed_origins",
    "allow_cors_private_network",
    "ignore_panel_config_updates",
    "throttles.*",
    "api.host",
    "api.port",
    "api.ssl.*",
    "api.disable_remote_download",
    "api.upload_limit",
    "api.trusted_proxies",
    "system.root_directory",
    "system.log_directory",
    "system.data",
    "system.archive_directory",
    "system.backup_directory",
    "system.tmp_directory",
    "system.username",
    "system.timezone",
    "system.user.*",
    "system.passwd.*",
    "system.machine_id.*",
    "system.disk_check_interval",
    "system.activity_send_interval",
    "system.activity_send_count",
    "system.check_permissions_on_boot",
    "system.enable_log_rotate",
    "system.websocket_log_count",
    "system.sftp.*",
    "system.crash_detection.*",
    "system.backups.*",
    "system.transfers.download_limit",
    "system.openat_mode",
    "docker.network.*",
    "docker.domainname",
    "docker.registries.*",
    "docker.tmpfs_size",
    "docker.container_pid_limit",
    "docker.installer_limits.*",
    "docker.overhead.*",
    "docker.use_performant_inspect",
    "docker.userns_mode",
    "docker.log_config.*",
    "docker.socket",
    // Keys the other ferry sessions add (listed here too so a config written
    // for a newer ferry is not warned about by this one).
    "system.install_log_directory",
    "system.transfers.upload_limit",
    "system.transfers.compression_level",
    "system.transfers.compression_threads",
    "system.transfers.stop_timeout",
    "system.transfers.segment_size",
    "system.transfers.resume_window",
    "system.transfers.precopy",
    "system.transfers.transport",
    "system.environment",
    "metrics.token",
];

/// A key nobody defines, with the nearest known key when one is close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config key `{}` is unknown to ferry, Wings and Pelican and is ignored",
            self.key
        )?;
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        Ok(())
    }
}

/// Reads a config file and lists its unknown keys (for `check-config` and
/// `serve`, which print them once the logger runs).
pub fn load_checked(path: &Path) -> Result<(Config, Vec<UnknownKey>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: String::new(),
        problem: format!("cannot read config file {}: {e}", path.display()),
    })?;
    let config = parse_as(&text, PanelFamily::of_config_path(path))?;
    Ok((config, unknown_key_warnings(&text)))
}

/// Every leaf key of `text` that neither ferry nor Wings/Pelican defines.
pub fn unknown_key_warnings(text: &str) -> Vec<UnknownKey> {
    let Ok(root) = serde_norway::from_str::<Value>(text) else {
        return Vec::new();
    };
    // ferry's own keys: whatever the reader looks up. On an invalid file it
    // stops early, which only narrows the list (WINGS_KEYS still holds).
    let mut reader = Reader {
        root: &root,
        used: BTreeSet::new(),
        family: PanelFamily::Pterodactyl,
    };
    let _ = reader.config();
    let mut leaves = Vec::new();
    leaf_keys(&root, "", &mut leaves);
    leaves
        .into_iter()
        .filter(|k| !is_known(k, &reader.used))
        .map(|key| {
            let suggestion = suggest(&key, &reader.used);
            UnknownKey { key, suggestion }
        })
        .collect()
}

/// The dotted name of the mapping key `k` under `prefix` (`system.data`);
/// a key that is not a string (a number, a bool) is named by its debug form.
fn dotted_key(prefix: &str, k: &Value) -> String {
    let name = match k {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}.{name}")
    }
}

fn leaf_keys(node: &Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Mapping(map) = node else { return };
    for (k, v) in map {
        let key = dotted_key(prefix, k);
        match v {
            Value::Mapping(m) if !m.is_empty() => leaf_keys(v, &key, out),
            _ => out.push(key),
        }
    }
}

fn is_known(key: &str, ferry: &BTreeSet<String>) -> bool {
    let under = |p: &str| key == p || key.starts_with(&format!("{p}."));
    ferry.iter().any(|k| under(k))
        || WINGS_KEYS.iter().any(|k| match k.strip_suffix(".*") {
            Some(p) => under(p),
            None => key == *k,
        })
}

/// The known key nearest `key` by edit distance, when it is plausibly a typo.
fn suggest(key: &str, ferry: &BTreeSet<String>) -> Option<String> {
    let segments = key.split('.').count();
    let candidates = ferry
        .iter()
        .map(String::as_str)
        .chain(WINGS_KEYS.iter().map(|k| k.trim_end_matches(".*")));
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        // A wildcard subtree: compare with the key cut to the subtree's depth.
        let depth = c.split('.').count();
        let probe: String = if depth < segments {
            key.split('.').take(depth).collect::<Vec<_>>().join(".")
        } else {
            key.to_string()
        };
        let d = edit_distance(&probe, c);
        if best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            let rest = &key[probe.len()..];
            best = Some((d, format!("{c}{rest}")));
        }
    }
    let (d, s) = best?;
    (d > 0 && d <= 2 + key.len() / 8).then_some(s)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Every leaf key of `node` not in `used` (nor under a used key).
pub(super) fn unknown_keys(node: &Value, prefix: &str, used: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Mapping(map) = node {
        for (k, v) in map {
            let key = dotted_key(prefix, k);
            if used.contains(&key) {
                continue;
            }
            let nested = unknown_keys(v, &key, used);
            if matches!(v, Value::Mapping(_))
                && used.iter().any(|u| u.starts_with(&format!("{key}.")))
            {
                out.extend(nested);
            } else {
                out.push(key);
            }
        }
    }
    out
}

#[cfg(test)]
mod known_key_tests {
    use super::*;

    const BASE: &str = "token: 0123456789abcdef0123456789abcdef\n";

    fn warn(extra: &str) -> Vec<UnknownKey> {
        unknown_key_warnings(&format!("{BASE}{extra}"))
    }

    #[test]
    fn typos_warn_with_the_nearest_key() {
        let w = warn("sytem:\n  data: /srv\nsystem:\n  transfer:\n    upload_limit: 5\n");
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].key, "sytem.data");
        assert_eq!(w[0].suggestion.as_deref(), Some("system.data"));
        assert_eq!(w[1].key, "system.transfer.upload_limit");
        assert_eq!(
            w[1].suggestion.as_deref(),
            Some("system.transfers.upload_limit")
        );
        assert!(w[1]
            .to_string()
            .contains("did you mean `system.transfers.upload_limit`"));
    }

    #[test]
    fn wings_and_pelican_keys_are_quiet() {
        let w = warn(
            "app_name: Pelican\nsystem:\n  sftp:\n    bind_port: 2022\n  log_directory: /var/log/pelican\n  crash_detection:\n    enabled: true\ndocker:\n  network:\n    name: pelican_nw\n    interfaces:\n      v4:\n        subnet: 172.18.0.0/16\n  tmpfs_size: 100\nthrottles:\n  enabled: true\nallowed_mounts: []\nremote_query:\n  timeout: 30\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_key_far_from_any_gets_no_suggestion() {
        let w = warn("completely_unrelated_setting: 1\n");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].suggestion, None);
    }
}
