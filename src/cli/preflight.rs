//! `check-config`'s pre-flight: does the node's world match its config?
//! TLS files readable, data and state directories writable, the Docker
//! Engine answering, the panel accepting the node's credentials. Every
//! failure names the config key it is about, so the operator knows which
//! line to fix. `serve` runs the local checks (TLS, directories) before it
//! starts, and exits 2 naming the key (SPEC §1).

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError, EnvironmentKind};

/// The checks that need nothing but the local filesystem.
pub fn local(c: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if let Some(ssl) = &c.api.ssl {
        let mut unreadable = false;
        for (key, path) in [("api.ssl.cert", &ssl.cert), ("api.ssl.key", &ssl.key)] {
            if let Err(e) = std::fs::File::open(path) {
                out.push(problem(key, format!("cannot read {}: {e}", path.display())));
                unreadable = true;
            }
        }
        // Both open: they must also load as the listener will load them
        // (PEM, a key of the certificate), or `serve` would fail later.
        let files = crate::http::TlsFiles {
            cert: ssl.cert.clone(),
            key: ssl.key.clone(),
        };
        if let (false, Err((file, e))) = (unreadable, files.check()) {
            let key = match file {
                crate::http::TlsFile::Cert => "api.ssl.cert",
                crate::http::TlsFile::Key => "api.ssl.key",
            };
            out.push(problem(key, e.to_string()));
        }
    }
    if let Some(e) = listen_problem(&c.api.host, c.api.port) {
        out.push(e);
    }
    for (key, dir) in [
        ("system.data", c.system.data.as_path()),
        ("system.root_directory", c.system.root_directory.as_path()),
    ] {
        if let Err(why) = writable(dir) {
            out.push(problem(key, why));
        }
    }
    out
}

/// The checks that reach other daemons: the Docker Engine and the panel.
pub fn remote(c: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if c.system.environment == EnvironmentKind::Docker {
        let socket = crate::environment::docker::socket_from_env(&c.docker.socket)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                crate::environment::docker::DockerEnvironment::connect(&s, &c.docker.network)
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = socket {
            out.push(problem("docker.socket", why));
        }
    }
    if !c.standalone() {
        let options = crate::panel::PanelOptions {
            timeout: Duration::from_secs(10),
            retry_for: Duration::ZERO,
        };
        let panel = crate::panel::PanelClient::new(&c.remote, &c.token_id, &c.token, options);
        match panel.list_servers() {
            Ok(_) => {}
            Err(crate::panel::PanelError::Refused(status, body)) if status == 401 || status == 403 => {
                out.push(problem(
                    "token_id",
                    format!("the panel refused the node's credentials (token_id and token): {status} {body}"),
                ))
            }
            Err(e) => out.push(problem("remote", e.to_string())),
        }
    }
    out
}

/// Whether the node could listen on `host:port`: a host that is not an
/// address of this machine, or a port this user may not take, is a config
/// problem; a port in use is not (a running node holds its own port while
/// `check-config` is run; `serve` then fails to bind and says so).
fn listen_problem(host: &str, port: u16) -> Option<ConfigError> {
    // The config parser accepted only IP addresses.
    let ip: std::net::IpAddr = host.parse().ok()?;
    let addr = std::net::SocketAddr::new(ip, port);
    let e = std::net::TcpListener::bind(addr).err()?;
    match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => Some(problem(
            "api.host",
            format!("{ip} is not an address of this machine ({e})"),
        )),
        Some(libc::EACCES) => Some(problem(
            "api.port",
            format!(
                "this user may not listen on port {port} ({e}; ports below 1024 need privileges)"
            ),
        )),
        Some(libc::EAFNOSUPPORT) => Some(problem(
            "api.host",
            format!("{ip}: this machine has no such address family ({e})"),
        )),
        _ => None,
    }
}

fn problem(key: &str, problem: String) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem,
    }
}

/// A directory is writable if a file can be created in it; a missing one
/// if its nearest existing parent is (ferry creates it at start).
fn writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => return Err(format!("{} does not exist", dir.display())),
        }
    }
    if !probe.is_dir() {
        return Err(format!("{} is not a directory", probe.display()));
    }
    let file = probe.join(format!(".ferry-preflight-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&file);
            Ok(())
        }
        Err(e) if probe == dir => Err(format!("{} is not writable: {e}", dir.display())),
        Err(e) => Err(format!(
            "{} does not exist and {} is not writable: {e}",
            dir.display(),
            probe.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tls_file_and_unwritable_dir_name_their_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").expect("write");
        let text = format!(
            "token: 0123456789abcdef0123456789abcdef\napi:\n  ssl:\n    enabled: true\n    cert: {0}/missing.pem\n    key: {0}/file\nsystem:\n  root_directory: {0}/root\n  data: {0}/file/volumes\n  environment: none\n",
            dir.path().display()
        );
        let c = crate::config::parse(&text).expect("valid");
        let keys: Vec<String> = local(&c).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["api.ssl.cert", "system.data"]);
    }
}
