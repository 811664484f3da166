//! The operator's view of config.yml (issue 16): typos warned with the
//! nearest key, `check-config` as a pre-flight, and `serve` refusing a node
//! whose files are not there with exit 2 naming the key.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::fake_panel::FakePanel;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn ferry(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ferry")
}

/// A standalone, Docker-less config under `dir`, plus `extra` lines.
fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.yml");
    let text = format!(
        "token: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\nsystem:\n  root_directory: {0}\n  data: {0}/volumes\n  environment: none\n{extra}",
        dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_config_warns_about_typos_and_names_the_suggestion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        "sytem:\n  data: /srv\ndocker:\n  sockt: /run/docker.sock\n  network:\n    name: pterodactyl_nw\n",
    );
    let out = ferry(&["check-config"], &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("`sytem.data`") && err.contains("did you mean `system.data`?"),
        "{err}"
    );
    assert!(err.contains("did you mean `docker.socket`?"), "{err}");
    // Wings' own keys are not warned about.
    assert!(!err.contains("docker.network"), "{err}");
}

#[test]
fn serve_warns_about_typos_once_the_logger_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), "  transfer:\n    upload_limit: 5\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("did you mean") || line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("WARN")
            && seen.contains("system.transfer.upload_limit")
            && seen.contains("did you mean `system.transfers.upload_limit`?"),
        "{seen}"
    );
}

#[test]
fn check_config_failures_exit_2_and_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A certificate that is not there: check-config and serve both exit 2.
    let path = write_config(
        dir.path(),
        &format!(
            "api:\n  ssl:\n    enabled: true\n    cert: {0}/missing.pem\n    key: {0}/missing.key\n",
            dir.path().display()
        ),
    );
    // (the api block above repeats `api`; YAML keeps the last, so rewrite)
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replacen("api:\n  host: 127.0.0.1\n  port: 0\n", "", 1);
    std::fs::write(&path, text).expect("write");
    for verb in ["check-config", "serve"] {
        let out = ferry(&[verb], &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{verb}: {err}");
        assert!(
            err.contains("`api.ssl.cert`") && err.contains("missing.pem"),
            "{verb}: {err}"
        );
    }

    // The Docker Engine not answering names docker.socket.
    let path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).expect("read").replace(
        "  environment: none\n",
        &format!(
            "  environment: docker\ndocker:\n  socket: {}/no-docker.sock\n",
            dir.path().display()
        ),
    );
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`docker.socket`"), "{err}");

    // A panel that refuses the node's credentials names token_id.
    let panel = FakePanel::start("the-right-id", TOKEN);
    let path = write_config(
        dir.path(),
        &format!(
            "remote: {}\nuuid: node-uuid\ntoken_id: a-wrong-id\n",
            panel.url()
        ),
    );
    let out = ferry(&["check-config"], &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`token_id`") && err.contains("refused"),
        "{err}"
    );

    // And with the right credentials, all is well.
    let path = write_config(
        dir.path(),
        &format!(
            "remote: {}\nuuid: node-uuid\ntoken_id: the-right-id\n",
            panel.url()
        ),
    );
    let out = ferry(&["check-config"], &path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
}
