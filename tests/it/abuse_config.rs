//! Every kind of bad config is caught before the node runs (issue 13 item
//! 5, SPEC §1): `check-config` and `serve` both exit 2 naming the key, and
//! `serve` never gets as far as exiting 1 with a socket or TLS error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::certs;
use crate::support::node::{give_to_nobody, wait_exit, NOBODY};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A standalone, Docker-less config in `dir`: `api` and `system` blocks
/// as given (indented lines after the key), everything else fixed.
fn config(dir: &Path, name: &str, api: &str, system: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yml"));
    let text = format!("token: {TOKEN}\napi:\n{api}system:\n  environment: none\n{system}");
    std::fs::write(&path, text).expect("write config");
    path
}

fn dirs(root: &Path) -> String {
    format!(
        "  root_directory: {0}/root\n  data: {0}/volumes\n  backup_directory: {0}/backups\n  log_directory: {0}/log\n",
        root.display()
    )
}

/// Runs `ferry <verb> --config <path>` (as `nobody` when `unprivileged`)
/// and returns its exit status and stderr. A `serve` that starts instead
/// of refusing is killed and reported.
fn run(verb: &str, path: &Path, unprivileged: bool) -> (Option<i32>, String) {
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_ferry"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
    };
    let mut child = cmd
        .arg(verb)
        .arg("--config")
        .arg(path)
        .env_remove("JOURNAL_STREAM")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // Ten seconds: a refusal takes milliseconds; a node that started
    // would run until killed (then wait_exit panics naming the config).
    let status = wait_exit(&mut child, Duration::from_secs(10));
    (status.code(), reader.join().unwrap_or_default())
}

/// Both verbs exit 2, naming `key` and saying `what`.
fn refused(path: &Path, key: &str, what: &str, unprivileged: bool) {
    for verb in ["check-config", "serve"] {
        let (code, err) = run(verb, path, unprivileged);
        assert_eq!(
            code,
            Some(2),
            "{verb} on {}: {err}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(what),
            "{verb} should name `{key}` and say {what:?}: {err}"
        );
    }
}

#[test]
fn every_kind_of_bad_config_exits_2_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok_dirs = dirs(d);
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let tls = |cert: &Path, key: &Path| {
        format!(
            "  host: 127.0.0.1\n  port: 0\n  ssl:\n    enabled: true\n    cert: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    };
    let local = "  host: 127.0.0.1\n  port: 0\n";
    let cases: Vec<(&str, String, String, &str, &str)> = vec![
        // (name, api, system, key, what the message says)
        (
            "cert-missing",
            tls(&d.join("missing.pem"), &junk),
            ok_dirs.clone(),
            "api.ssl.cert",
            "missing.pem",
        ),
        (
            "cert-not-pem",
            tls(&junk, &junk),
            ok_dirs.clone(),
            "api.ssl.cert",
            "junk.pem",
        ),
        (
            "cert-is-a-directory",
            tls(d, &junk),
            ok_dirs.clone(),
            "api.ssl.cert",
            "certificate",
        ),
        (
            "host-not-here",
            "  host: 192.0.2.1\n  port: 0\n".into(),
            ok_dirs.clone(),
            "api.host",
            "not an address of this machine",
        ),
        (
            "host-v6-not-here",
            "  host: \"2001:db8::1\"\n  port: 0\n".into(),
            ok_dirs.clone(),
            "api.host",
            "not an address of this machine",
        ),
        (
            "host-a-name",
            "  host: localhost\n  port: 0\n".into(),
            ok_dirs.clone(),
            "api.host",
            "must be an IP address",
        ),
        (
            "port-too-big",
            "  host: 127.0.0.1\n  port: 70000\n".into(),
            ok_dirs.clone(),
            "api.port",
            "65535",
        ),
        (
            "data-under-a-file",
            local.into(),
            format!(
                "  root_directory: {0}/root\n  data: {1}/volumes\n",
                d.display(),
                junk.display()
            ),
            "system.data",
            "junk.pem",
        ),
        (
            "root-is-a-file",
            local.into(),
            format!(
                "  root_directory: {0}\n  data: {1}/volumes\n",
                junk.display(),
                d.display()
            ),
            "system.root_directory",
            "not a directory",
        ),
    ];
    for (name, api, system, key, what) in &cases {
        let path = config(d, name, api, system);
        refused(&path, key, what, false);
    }

    // A key that is not the certificate's, and a key that is not PEM.
    let certs_dir = tempfile::tempdir().unwrap();
    if let Some((cert, _key, _ca)) = certs::make_certs(certs_dir.path()) {
        let other_key = certs_dir.path().join("ca.key");
        let path = config(d, "key-of-another-cert", &tls(&cert, &other_key), &ok_dirs);
        refused(&path, "api.ssl.key", "not usable together", false);
        let path = config(d, "key-not-pem", &tls(&cert, &junk), &ok_dirs);
        refused(&path, "api.ssl.key", "private key", false);
    }

    // And a good config passes check-config (the cases above are refused
    // for their one fault, not for the frame around them).
    let path = config(d, "good", local, &ok_dirs);
    let (code, err) = run("check-config", &path, false);
    assert_eq!(code, Some(0), "{err}");

    // A port another process holds is not a config problem: check-config
    // passes (a running node holds its own port), serve fails at run time
    // naming the address.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let path = config(
        d,
        "port-in-use",
        &format!("  host: 127.0.0.1\n  port: {port}\n"),
        &ok_dirs,
    );
    let (code, err) = run("check-config", &path, false);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run("serve", &path, false);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// An operator running ferry as an ordinary user: a privileged port and a
/// root directory the user cannot write are config problems, exit 2.
#[test]
fn an_unprivileged_node_is_told_about_ports_and_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The user must reach and read the configs.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mine = d.join("mine");
    std::fs::create_dir(&mine).unwrap();
    give_to_nobody(&mine, false);
    let theirs = d.join("theirs");
    std::fs::create_dir(&theirs).unwrap();

    // Where privileged ports end on this kernel (0 in some containers:
    // then there is none to test).
    let unprivileged_start: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start > 80 {
        let path = config(
            d,
            "privileged-port",
            "  host: 127.0.0.1\n  port: 80\n",
            &dirs(&mine),
        );
        refused(&path, "api.port", "port 80", true);
    } else {
        eprintln!("note: every port is unprivileged here; the port case is not tested");
    }

    let path = config(
        d,
        "root-not-writable",
        "  host: 127.0.0.1\n  port: 0\n",
        &format!(
            "  root_directory: {0}/root\n  data: {1}/volumes\n",
            theirs.display(),
            mine.display()
        ),
    );
    refused(&path, "system.root_directory", "not writable", true);

    // The same user on a port it may take, in its own directories: fine.
    let path = config(d, "good", "  host: 127.0.0.1\n  port: 0\n", &dirs(&mine));
    let (code, err) = run("check-config", &path, true);
    assert_eq!(code, Some(0), "{err}");
}
