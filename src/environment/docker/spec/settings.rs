//! The panel's `settings` for a server, read leniently into
//! [`ContainerSettings`]: a missing or odd-typed field takes its default,
//! except `container.image`, which is required and checked.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::environment::EnvError;

/// An extra bind mount from `settings.mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// The parts of the panel's `settings` that make a container, parsed leniently:
/// a missing or odd-typed field takes its default, except `container.image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// The image as the Engine names it (a leading `~` removed).
    pub image: String,
    /// `~image` in the panel means "local image, never pull" (as in Wings).
    pub local_only: bool,
    pub invocation: String,
    /// `environment`, keys upper-cased, values stringified; sorted by key.
    pub environment: BTreeMap<String, String>,
    pub memory_limit_mib: i64,
    /// -1 unlimited, 0 none, n MiB of swap on top of the memory limit.
    pub swap_mib: i64,
    pub io_weight: i64,
    /// Percent of one core; 0 = unlimited.
    pub cpu_limit: i64,
    pub threads: String,
    pub oom_disabled: bool,
    pub default_ip: String,
    pub default_port: i64,
    /// `allocations.mappings`: ip → ports, sorted by ip.
    pub mappings: BTreeMap<String, Vec<u16>>,
    pub mounts: Vec<ExtraMount>,
}

/// A number that may arrive as an integer, a float or a numeric string.
fn lenient_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn lenient_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        Some(Value::String(s)) => matches!(s.trim(), "1" | "true" | "TRUE" | "True"),
        _ => false,
    }
}

/// Environment values as Wings renders them: strings as-is, numbers and
/// booleans in their JSON text, null as empty.
pub(super) fn env_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn lenient_str(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Reads the container-relevant settings; `container.image` is required.
pub fn parse_settings(settings: &Value) -> Result<ContainerSettings, EnvError> {
    let raw_image = settings
        .pointer("/container/image")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    let (image, local_only) = match raw_image.strip_prefix('~') {
        Some(rest) => (rest.trim().to_string(), true),
        None => (raw_image.to_string(), false),
    };
    if image.is_empty() {
        return Err(EnvError::BadSettings(
            "container.image is required to create a container".into(),
        ));
    }
    // The reference goes into request paths: only its own alphabet is allowed.
    if !image
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/' | b':' | b'@'))
    {
        return Err(EnvError::BadSettings(format!(
            "container.image {image:?} is not a valid image reference"
        )));
    }

    let mut environment = BTreeMap::new();
    if let Some(map) = settings.get("environment").and_then(Value::as_object) {
        for (k, v) in map {
            let key = k.trim().to_ascii_uppercase();
            // A name with '=' or NUL cannot be an environment variable.
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                continue;
            }
            environment.insert(key, env_value(v));
        }
    }

    let build = settings.get("build");
    let b = |name: &str| build.and_then(|b| b.get(name));

    let mut mappings: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    if let Some(map) = settings
        .pointer("/allocations/mappings")
        .and_then(Value::as_object)
    {
        for (ip, ports) in map {
            let list = mappings.entry(ip.clone()).or_default();
            for p in ports.as_array().into_iter().flatten() {
                // Ports outside 1..=65535 are skipped, as Wings does.
                if let Some(port) = lenient_i64(Some(p)).and_then(|n| u16::try_from(n).ok()) {
                    if port != 0 && !list.contains(&port) {
                        list.push(port);
                    }
                }
            }
        }
    }

    let mut mounts = Vec::new();
    for m in settings
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let source = lenient_str(m.get("source"));
        let target = lenient_str(m.get("target"));
        if source.is_empty() || target.is_empty() {
            continue;
        }
        mounts.push(ExtraMount {
            source,
            target,
            read_only: lenient_bool(m.get("read_only")),
        });
    }

    Ok(ContainerSettings {
        image,
        local_only,
        invocation: lenient_str(settings.get("invocation")),
        environment,
        memory_limit_mib: lenient_i64(b("memory_limit")).unwrap_or(0).max(0),
        swap_mib: lenient_i64(b("swap")).unwrap_or(0).max(-1),
        io_weight: lenient_i64(b("io_weight")).unwrap_or(0),
        cpu_limit: lenient_i64(b("cpu_limit")).unwrap_or(0).max(0),
        threads: lenient_str(b("threads")).trim().to_string(),
        oom_disabled: lenient_bool(b("oom_disabled")),
        default_ip: lenient_str(settings.pointer("/allocations/default/ip")),
        default_port: lenient_i64(settings.pointer("/allocations/default/port")).unwrap_or(0),
        mappings,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_numbers_and_bools() {
        let s = parse_settings(&json!({
            "container": {"image": "alpine"},
            "build": {"memory_limit": "2048", "swap": -5, "cpu_limit": 50.0, "oom_disabled": 1},
            "allocations": {"default": {"ip": "0.0.0.0", "port": "27015"}}
        }))
        .unwrap();
        assert_eq!(s.memory_limit_mib, 2048);
        assert_eq!(s.swap_mib, -1);
        assert_eq!(s.cpu_limit, 50);
        assert!(s.oom_disabled);
        assert_eq!(s.default_port, 27015);
    }
}
