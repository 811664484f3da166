//! Settings → the body of `POST /containers/create`: mounts, ports,
//! environment, resource limits and the hardening Wings applies, with the
//! same values Wings sends (env order and precedence, memory overhead,
//! swap, CPU quota, port bindings, labels).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::settings::{parse_settings, ContainerSettings};
use crate::environment::{EnvError, ServerSpec};

/// Where the server's data directory appears inside the container.
pub const CONTAINER_HOME: &str = "/home/container";

const MIB: i64 = 1024 * 1024;

/// Wings' defaults for the knobs ferry has no config key for.
const TMPFS_SIZE_MIB: u32 = 100;
const PIDS_LIMIT: i64 = 512;
const CAP_DROP: [&str; 10] = [
    "setpcap",
    "mknod",
    "audit_write",
    "net_raw",
    "dac_override",
    "fowner",
    "fsetid",
    "net_bind_service",
    "sys_chroot",
    "setfcap",
];

/// Node-level choices that shape every container (not part of a server's settings).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `docker.network.name`; `none` and `host` are Docker's built-in modes.
    pub network: String,
    /// `system.user`: the container process runs as this uid:gid when set.
    pub user: Option<(u32, u32)>,
    /// Exported as `TZ` when set.
    pub timezone: Option<String>,
}

/// `KEY=value` list: `TZ` (optional), `STARTUP`, `SERVER_MEMORY`, `SERVER_IP`,
/// `SERVER_PORT`, then the server's variables; a variable cannot override
/// one of the built-ins (Wings' precedence).
pub fn env_list(s: &ContainerSettings, timezone: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(tz) = timezone.filter(|t| !t.is_empty()) {
        out.push(format!("TZ={tz}"));
    }
    out.push(format!("STARTUP={}", s.invocation));
    out.push(format!("SERVER_MEMORY={}", s.memory_limit_mib));
    out.push(format!("SERVER_IP={}", s.default_ip));
    out.push(format!("SERVER_PORT={}", s.default_port));
    let builtin: Vec<String> = out
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    for (k, v) in &s.environment {
        if !builtin.iter().any(|b| b == k) {
            out.push(format!("{k}={v}"));
        }
    }
    out
}

/// Wings' default hard-limit headroom over the advertised memory, so runtimes
/// that overshoot slightly (Java) are not OOM-killed at once.
fn memory_overhead(memory_mib: i64) -> f64 {
    if memory_mib <= 2048 {
        1.15
    } else if memory_mib <= 4096 {
        1.10
    } else {
        1.05
    }
}

/// The hard memory limit in bytes (`Memory`); 0 = unlimited.
pub fn memory_bytes(memory_mib: i64) -> i64 {
    if memory_mib <= 0 {
        return 0;
    }
    (memory_mib as f64 * memory_overhead(memory_mib) * MIB as f64).round() as i64
}

/// Resource fields of `HostConfig`, as Wings computes them.
pub fn resources(s: &ContainerSettings) -> Map<String, Value> {
    let mut r = Map::new();
    let memory = memory_bytes(s.memory_limit_mib);
    r.insert("Memory".into(), json!(memory));
    r.insert(
        "MemoryReservation".into(),
        json!(s.memory_limit_mib.max(0) * MIB),
    );
    // Docker's MemorySwap is memory + swap; -1 unlimited. Without a memory
    // limit the Engine refuses a swap limit, so it is left out then.
    if memory > 0 {
        let swap = if s.swap_mib < 0 {
            -1
        } else {
            memory + s.swap_mib * MIB
        };
        r.insert("MemorySwap".into(), json!(swap));
    }
    // Only with a limit: some Java versions misread the CPU count otherwise
    // (pterodactyl/panel#3988).
    if s.cpu_limit > 0 {
        r.insert("CpuQuota".into(), json!(s.cpu_limit * 1000));
        r.insert("CpuPeriod".into(), json!(100_000));
        r.insert("CpuShares".into(), json!(1024));
    }
    // The Engine accepts 10..=1000; 0 means "not set".
    if (10..=1000).contains(&s.io_weight) {
        r.insert("BlkioWeight".into(), json!(s.io_weight));
    }
    if !s.threads.is_empty() {
        r.insert("CpusetCpus".into(), json!(s.threads));
    }
    r.insert("OomKillDisable".into(), json!(s.oom_disabled));
    r.insert("PidsLimit".into(), json!(PIDS_LIMIT));
    r
}

/// True for Docker's built-in network modes that need no network object.
pub fn is_builtin_network(name: &str) -> bool {
    matches!(name, "none" | "host" | "bridge" | "default") || name.starts_with("container:")
}

/// Only the characters Docker allows in a container name, so the uuid can
/// go into a URL path unescaped.
pub fn check_container_name(name: &str) -> Result<(), EnvError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EnvError::BadSettings(format!(
            "server identifier {name:?} cannot name a container"
        )))
    }
}

/// The body of `POST /containers/create?name=<uuid>` for a server.
pub fn create_body(server: &ServerSpec, opts: &CreateOptions) -> Result<Value, EnvError> {
    check_container_name(&server.uuid)?;
    let s = parse_settings(&server.settings)?;
    let data_dir = server.data_dir.to_str().ok_or_else(|| {
        EnvError::BadSettings(format!(
            "data directory {} is not valid UTF-8",
            server.data_dir.display()
        ))
    })?;

    let mut mounts = vec![json!({
        "Type": "bind", "Source": data_dir, "Target": CONTAINER_HOME, "ReadOnly": false,
    })];
    for m in &s.mounts {
        mounts.push(json!({
            "Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only,
        }));
    }

    // Each allocated port is bound for tcp and udp on its ip. With `none`
    // or `host` networking there is nothing to publish.
    let mut exposed = Map::new();
    let mut bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if !matches!(opts.network.as_str(), "none" | "host") {
        for (ip, ports) in &s.mappings {
            for port in ports {
                for proto in ["tcp", "udp"] {
                    let key = format!("{port}/{proto}");
                    exposed.insert(key.clone(), json!({}));
                    bindings
                        .entry(key)
                        .or_default()
                        .push(json!({"HostIp": ip, "HostPort": port.to_string()}));
                }
            }
        }
    }

    let mut host = resources(&s);
    host.insert("Mounts".into(), Value::Array(mounts));
    host.insert("PortBindings".into(), json!(bindings));
    host.insert(
        "Tmpfs".into(),
        json!({"/tmp": format!("rw,exec,nosuid,size={TMPFS_SIZE_MIB}M")}),
    );
    host.insert(
        "LogConfig".into(),
        json!({"Type": "json-file", "Config": {"max-size": "5m", "max-file": "1"}}),
    );
    host.insert("SecurityOpt".into(), json!(["no-new-privileges"]));
    host.insert("ReadonlyRootfs".into(), json!(true));
    host.insert("CapDrop".into(), json!(CAP_DROP));
    let network = if opts.network.is_empty() {
        "default"
    } else {
        opts.network.as_str()
    };
    host.insert("NetworkMode".into(), json!(network));

    let mut body = json!({
        "Hostname": server.uuid,
        // Wings runs servers on a TTY: console output is raw, and stdin
        // stays open for commands whether or not anyone is attached.
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "OpenStdin": true,
        "StdinOnce": false,
        "Tty": true,
        "Image": s.image,
        "WorkingDir": CONTAINER_HOME,
        "Env": env_list(&s, opts.timezone.as_deref()),
        "ExposedPorts": exposed,
        "Labels": {"Service": "Pterodactyl", "ContainerType": "server_process"},
        "HostConfig": host,
    });
    if let Some((uid, gid)) = opts.user {
        body["User"] = json!(format!("{uid}:{gid}"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn server(settings: Value) -> ServerSpec {
        ServerSpec {
            uuid: "0b5d4c5e-6c1f-4a8e-9e52-3f7f1c2a9d10".into(),
            settings,
            process_configuration: json!({}),
            data_dir: PathBuf::from("/var/lib/pterodactyl/volumes/0b5d4c5e"),
        }
    }

    fn full_settings() -> Value {
        json!({
            "uuid": "0b5d4c5e-6c1f-4a8e-9e52-3f7f1c2a9d10",
            "invocation": "java -Xmx{{SERVER_MEMORY}}M -jar server.jar",
            "environment": {"server_jarfile": "server.jar", "VERSION": 1.20, "EULA": true,
                            "startup": "evil", "Empty": null},
            "build": {"memory_limit": 1024, "swap": 512, "io_weight": 500, "cpu_limit": 150,
                      "disk_space": 4096, "threads": "0-1", "oom_disabled": true},
            "container": {"image": "ghcr.io/pterodactyl/yolks:java_17"},
            "allocations": {"default": {"ip": "10.0.0.5", "port": 25565},
                            "mappings": {"10.0.0.5": [25565, 25566, 70000]}},
            "mounts": [{"source": "/srv/maps", "target": "/home/container/maps", "read_only": true}]
        })
    }

    fn opts(network: &str) -> CreateOptions {
        CreateOptions {
            network: network.into(),
            user: Some((988, 988)),
            timezone: Some("UTC".into()),
        }
    }

    #[test]
    fn image_is_required() {
        let err = create_body(&server(json!({"build": {}})), &opts("none")).unwrap_err();
        assert!(matches!(err, EnvError::BadSettings(ref m) if m.contains("container.image")));
        let err = parse_settings(&json!({"container": {"image": "  "}})).unwrap_err();
        assert!(matches!(err, EnvError::BadSettings(_)));
        let err = parse_settings(&json!({"container": {"image": "a b?c"}})).unwrap_err();
        assert!(matches!(err, EnvError::BadSettings(ref m) if m.contains("not a valid image")));
    }

    #[test]
    fn minimal_settings_take_defaults() {
        let s = parse_settings(&json!({"container": {"image": "alpine"}})).unwrap();
        assert_eq!(s.memory_limit_mib, 0);
        assert_eq!(s.swap_mib, 0);
        assert_eq!(s.default_port, 0);
        assert!(s.mappings.is_empty() && s.environment.is_empty());
        let r = resources(&s);
        assert_eq!(r["Memory"], 0);
        assert!(
            !r.contains_key("MemorySwap"),
            "no swap limit without memory"
        );
        assert!(!r.contains_key("CpuQuota"));
        assert!(!r.contains_key("BlkioWeight"));
        assert_eq!(r["OomKillDisable"], false);
    }

    #[test]
    fn env_has_builtins_first_and_they_win() {
        let s = parse_settings(&full_settings()).unwrap();
        let env = env_list(&s, Some("UTC"));
        assert_eq!(
            env[..5],
            [
                "TZ=UTC",
                "STARTUP=java -Xmx{{SERVER_MEMORY}}M -jar server.jar",
                "SERVER_MEMORY=1024",
                "SERVER_IP=10.0.0.5",
                "SERVER_PORT=25565",
            ]
        );
        assert!(env.contains(&"SERVER_JARFILE=server.jar".to_string()));
        assert!(env.contains(&"VERSION=1.2".to_string()));
        assert!(env.contains(&"EULA=true".to_string()));
        assert!(env.contains(&"EMPTY=".to_string()));
        assert!(!env.iter().any(|e| e == "STARTUP=evil"));
        assert!(!env_list(&s, None).iter().any(|e| e.starts_with("TZ=")));
    }

    #[test]
    fn limits_follow_wings() {
        let s = parse_settings(&full_settings()).unwrap();
        let r = resources(&s);
        let memory = (1024.0 * 1.15 * 1048576.0f64).round() as i64;
        assert_eq!(r["Memory"], memory);
        assert_eq!(r["MemoryReservation"], 1024 * 1048576);
        assert_eq!(r["MemorySwap"], memory + 512 * 1048576);
        assert_eq!(r["CpuQuota"], 150_000);
        assert_eq!(r["CpuPeriod"], 100_000);
        assert_eq!(r["BlkioWeight"], 500);
        assert_eq!(r["CpusetCpus"], "0-1");
        assert_eq!(r["OomKillDisable"], true);

        let unlimited_swap = ContainerSettings {
            swap_mib: -1,
            ..s.clone()
        };
        assert_eq!(resources(&unlimited_swap)["MemorySwap"], -1);
        let no_swap = ContainerSettings { swap_mib: 0, ..s };
        assert_eq!(resources(&no_swap)["MemorySwap"], memory);
        assert_eq!(
            memory_bytes(4096),
            (4096.0 * 1.10 * 1048576.0f64).round() as i64
        );
        assert_eq!(
            memory_bytes(8192),
            (8192.0 * 1.05 * 1048576.0f64).round() as i64
        );
    }

    #[test]
    fn create_body_shape() {
        let b = create_body(&server(full_settings()), &opts("pterodactyl_nw")).unwrap();
        assert_eq!(b["Image"], "ghcr.io/pterodactyl/yolks:java_17");
        assert_eq!(b["WorkingDir"], "/home/container");
        assert_eq!(b["OpenStdin"], true);
        assert_eq!(b["StdinOnce"], false);
        assert_eq!(b["User"], "988:988");
        assert_eq!(b["Labels"]["Service"], "Pterodactyl");
        assert_eq!(b["Labels"]["ContainerType"], "server_process");
        let h = &b["HostConfig"];
        assert_eq!(h["NetworkMode"], "pterodactyl_nw");
        assert_eq!(
            h["Mounts"][0]["Source"],
            "/var/lib/pterodactyl/volumes/0b5d4c5e"
        );
        assert_eq!(h["Mounts"][0]["Target"], "/home/container");
        assert_eq!(h["Mounts"][1]["Target"], "/home/container/maps");
        assert_eq!(h["Mounts"][1]["ReadOnly"], true);
        // 70000 is not a port; two valid ports × tcp/udp.
        assert_eq!(b["ExposedPorts"].as_object().unwrap().len(), 4);
        assert_eq!(
            h["PortBindings"]["25566/udp"],
            json!([{"HostIp": "10.0.0.5", "HostPort": "25566"}])
        );
        assert_eq!(h["Memory"], memory_bytes(1024));
    }

    #[test]
    fn no_ports_published_without_a_network() {
        let b = create_body(&server(full_settings()), &opts("none")).unwrap();
        assert_eq!(b["HostConfig"]["NetworkMode"], "none");
        assert_eq!(b["HostConfig"]["PortBindings"], json!({}));
        assert_eq!(b["ExposedPorts"], json!({}));
    }

    #[test]
    fn local_only_image_and_bad_names() {
        let s = parse_settings(&json!({"container": {"image": "~ferry-test/busybox"}})).unwrap();
        assert_eq!(s.image, "ferry-test/busybox");
        assert!(s.local_only);
        let mut bad = server(full_settings());
        bad.uuid = "../etc".into();
        assert!(matches!(
            create_body(&bad, &opts("none")),
            Err(EnvError::BadSettings(_))
        ));
    }
}
