//! IPv6 listening (issue 13 item 5): `api.host: "::1"` and `"::"` pass
//! `check-config`, and a node started on them serves its authenticated
//! API, its websocket and a whole transfer between two IPv6 nodes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::fake_panel::FakePanel;
use crate::support::node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use ferry::jwt::mint_websocket_token;
use serde_json::json;
use tungstenite::Message;

const SERVER: &str = "3e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b";

fn node_on(host: &str, panel: Option<&FakePanel>, root: Option<&Path>) -> TestNode {
    TestNode::start_with(NodeOptions {
        host: Some(host.to_string()),
        remote: panel.map(FakePanel::url),
        root: root.map(Path::to_path_buf),
        ..Default::default()
    })
}

/// `check-config` on a node's own config file: the exit status and what
/// it printed.
fn check_config(node: &TestNode) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check-config")
        .arg("--config")
        .arg(&node.config_path)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ferry");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_node_on_ipv6_loopback_serves_its_api_and_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("volumes").join(SERVER)).unwrap();
    let node = node_on("::1", None, Some(tmp.path()));
    assert!(node.addr.is_ipv6(), "{}", node.addr);
    assert!(
        node.url("/").starts_with("http://[::1]:"),
        "{}",
        node.url("/")
    );
    let (code, system) = node.get("/api/system");
    assert_eq!(code, 200, "{system}");
    assert!(system["version"].is_string(), "{system}");
    // Authenticated routes still want the token (a wrong one is 403, as
    // Wings).
    let (code, _) = node.request_auth("GET", "/api/servers", None, Some("Bearer wrong-token"));
    assert_eq!(code, 403);
    let (code, servers) = node.get("/api/servers");
    assert_eq!(code, 200);
    assert!(servers.to_string().contains(SERVER), "{servers}");
    // The event stream: an upgrade, then `auth success`.
    let url = format!("ws://{}/api/servers/{SERVER}/ws", node.addr);
    let (mut ws, _) = tungstenite::connect(url.as_str()).expect("websocket over IPv6");
    let token = mint_websocket_token(
        TOKEN.as_bytes(),
        SERVER,
        &["websocket.connect"],
        Duration::from_secs(600),
    );
    ws.send(Message::text(
        json!({"event": "auth", "args": [token]}).to_string(),
    ))
    .unwrap();
    let first = loop {
        match ws.read().expect("an event") {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(first.contains("auth success"), "{first}");
    // The same config passes check-config, which names the address.
    let (code, out) = check_config(&node);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("[::1]:0"), "{out}");
}

/// `::` listens on every address, IPv4 included (Linux's default
/// dual-stack socket): the node answers on ::1 and on 127.0.0.1.
#[test]
fn a_node_on_the_ipv6_wildcard_answers_both_families() {
    let node = node_on("::", None, None);
    assert_eq!(
        node.addr.ip(),
        std::net::Ipv6Addr::LOCALHOST,
        "{}",
        node.addr
    );
    assert_eq!(node.get("/api/system").0, 200);
    let v4 = format!("http://127.0.0.1:{}/api/system", node.addr.port());
    let resp = TestNode::agent()
        .get(&v4)
        .header("Authorization", &format!("Bearer {}", node.token))
        .call()
        .expect("IPv4 on the wildcard");
    assert_eq!(resp.status().as_u16(), 200);
    let (code, out) = check_config(&node);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("[::]:0"), "{out}");
}

/// A whole transfer between two nodes listening on IPv6 only: the source
/// reaches `http://[::1]:port/api/transfers`, the destination installs an
/// identical tree and reports success to the panel.
#[test]
fn a_transfer_between_two_ipv6_nodes_completes() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = node_on("::1", Some(&panel), None);
    panel.add_server(
        SERVER,
        json!({"uuid": SERVER, "meta": {"name": "v6"}, "build": {"disk_space": 0}}),
    );
    let root = tempfile::tempdir().unwrap();
    make_server_tree(&root.path().join("volumes").join(SERVER));
    let source = node_on("::", Some(&panel), Some(root.path()));
    let before = tree_listing(&source.server_dir(SERVER));
    let (code, body) = panel.begin_transfer(&source, &dest, SERVER);
    assert_eq!(code, 202, "{body}");
    let record = source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}\n{}",
        source.log_text(),
        dest.log_text()
    );
    assert_eq!(tree_listing(&dest.server_dir(SERVER)), before);
    assert!(panel.wait_until(Duration::from_secs(5), |_| true));
    assert_eq!(
        panel.transfer_reports(SERVER),
        vec![("success".to_string(), 204)]
    );
}
