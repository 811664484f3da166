//! Signals and logs on a real node (issue 16): SIGHUP reopens the audit
//! log and never ends the daemon; under journald (`JOURNAL_STREAM`) lines
//! carry `<N>` priorities and no timestamp; access lines are labelled and
//! `/metrics` scrapes are logged at debug only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::fake_panel::FakePanel;
use crate::support::node::{make_server_tree, NodeOptions, TestNode, TOKEN};

const SERVER: &str = "6c1f8b3d-4e5f-4a71-9b2c-3d4e5f6a7b8c";

/// Starts a transfer of SERVER from `source` to `dest` and waits for its end.
fn transfer(panel: &FakePanel, source: &TestNode, dest: &TestNode) {
    let (code, body) = panel.begin_transfer(source, dest, SERVER);
    assert!(code < 300, "{code} {body}");
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}");
}

#[test]
fn sighup_reopens_the_audit_log_and_the_daemon_lives_on() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    panel.add_server(SERVER, json!({"uuid": SERVER, "build": {"disk_space": 0}}));
    let root = tempfile::tempdir().expect("tempdir").keep();
    make_server_tree(&root.join("volumes").join(SERVER));
    let mut source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        ..Default::default()
    });
    // logrotate without copytruncate: move the file aside, then SIGHUP.
    let audit = source.root.join("root/ferry/audit.log");
    let rotated = source.root.join("root/ferry/audit.log.1");
    // The file exists from the start (the manager opens it).
    std::fs::rename(&audit, &rotated).expect("rotate");
    source.signal(libc::SIGHUP);
    assert!(
        source.wait_log("SIGHUP: the audit log is reopened", Duration::from_secs(10)),
        "{}",
        source.log_text()
    );
    transfer(&panel, &source, &dest);
    assert!(source.alive(), "SIGHUP ended the daemon");
    let fresh = std::fs::read_to_string(&audit).expect("a new audit.log");
    assert!(
        fresh.contains(SERVER) && fresh.contains("completed"),
        "{fresh}"
    );
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    assert!(
        !old.contains(SERVER),
        "lines went to the rotated file: {old}"
    );
    assert!(
        source.log_text().contains("SIGHUP: re-read"),
        "{}",
        source.log_text()
    );
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "token: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\nsystem:\n  root_directory: {0}/root\n  data: {0}/volumes\n  environment: none\nsytem: {{}}\n",
            dir.path().display()
        ),
    )
    .expect("config");
    // stderr is a file; JOURNAL_STREAM names it as systemd would name the
    // journal's socket.
    let log_path = dir.path().join("stderr");
    let log = std::fs::File::create(&log_path).expect("log file");
    let meta = log.metadata().expect("stat");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("FERRY_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(pos) = text.find("listening on ") {
            let rest = &text[pos + 13..];
            break rest.lines().next().unwrap_or("").trim().to_string();
        }
        assert!(Instant::now() < deadline, "no start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let agent = TestNode::agent();
    let _ = agent
        .get(format!("http://{addr}/api/system"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call();
    let _ = agent
        .get(format!("http://{addr}/metrics"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("log");
    for line in text.lines() {
        assert!(
            line.starts_with("<3>")
                || line.starts_with("<4>")
                || line.starts_with("<6>")
                || line.starts_with("<7>"),
            "line without a priority: {line}\n{text}"
        );
        assert!(
            !line[3..].starts_with("20"),
            "timestamp under journald: {line}"
        );
    }
    assert!(text.contains("<4>config key `sytem`"), "{text}");
    assert!(text.contains("<6>listening on"), "{text}");
    assert!(
        text.contains("<6>access method=GET path=/api/system status=200"),
        "{text}"
    );
    // Info level: the scrape is not logged at all.
    assert!(!text.contains("path=/metrics"), "{text}");
}
