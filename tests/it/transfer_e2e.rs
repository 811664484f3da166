//! Transfers end to end: two real nodes on loopback and a fake panel that
//! behaves like Pterodactyl's (SPEC §8). The full path, the panel's
//! follow-up delete, cancel from either side, a destination that dies, a
//! panel that is down, and double starts.

use crate::support::fake_panel;
use crate::support::node;

use std::time::{Duration, Instant};

use fake_panel::FakePanel;
use node::{make_server_tree, tree_listing, NodeOptions, TestNode, TOKEN};
use serde_json::json;

const SERVER: &str = "5b0f7a2c-3d4e-4f60-8a1b-2c3d4e5f6a7b";

struct Pair {
    panel: FakePanel,
    source: TestNode,
    dest: TestNode,
}

fn settings() -> serde_json::Value {
    json!({
        "uuid": SERVER,
        "meta": {"name": "Survival"},
        "build": {"disk_space": 0, "memory_limit": 1024},
        "container": {"image": "ferry-test/busybox:latest"},
        "egg": {"file_denylist": ["*.key", "start.sh"]},
    })
}

/// The destination boots first (the panel lists nothing for it), then the
/// server is put on the panel and the source boots holding it.
fn pair(source_transfers: &str) -> Pair {
    pair_with(source_transfers, vec![])
}

/// `env` goes to the source's process.
fn pair_with(source_transfers: &str, env: Vec<(String, String)>) -> Pair {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let dest = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    panel.add_server(SERVER, settings());
    let root = tempfile::tempdir().unwrap().keep();
    make_server_tree(&root.join("volumes").join(SERVER));
    let source = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(root),
        own_root: true,
        transfers_yaml: source_transfers.to_string(),
        env,
        ..Default::default()
    });
    Pair {
        panel,
        source,
        dest,
    }
}

impl Pair {
    /// What the panel does to start a transfer.
    fn start(&self) -> (u16, serde_json::Value) {
        self.panel.set_transferring(SERVER, true);
        let jwt = self.panel.mint_transfer_jwt(&self.dest.token, SERVER);
        self.source.request(
            "POST",
            &format!("/api/servers/{SERVER}/transfer"),
            Some(json!({
                "url": self.dest.url("/api/transfers"),
                "token": format!("Bearer {jwt}"),
                "server": {"uuid": SERVER, "start_on_completion": false},
                "server_id": 12,
            })),
        )
    }

    fn reports(&self) -> Vec<(String, u16)> {
        self.panel.transfer_reports(SERVER)
    }

    /// Nothing of the server on the destination: no directory, no staging
    /// leftovers, not registered.
    fn assert_destination_clean(&self) {
        assert!(
            !self.dest.server_dir(SERVER).exists(),
            "server directory left on the destination"
        );
        let staging = self.dest.data.join(".ferry-staging");
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "staging left behind: {left:?}");
        assert_eq!(self.dest.get(&format!("/api/servers/{SERVER}")).0, 404);
    }

    fn wait_source_released(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, view) = self.source.get(&format!("/api/servers/{SERVER}"));
            if view["is_transferring"] == false {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "source still marked transferring: {view}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn metrics(node: &TestNode) -> String {
    let mut resp = TestNode::agent()
        .get(&node.url("/metrics"))
        .header("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap();
    resp.body_mut().read_to_string().unwrap()
}

/// `ferry_transfer_stage_cpu_seconds_total{stage}` from a metrics page.
fn stage_cpu(metrics: &str, stage: &str) -> f64 {
    let prefix = format!("ferry_transfer_stage_cpu_seconds_total{{stage=\"{stage}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {stage} stage in\n{metrics}"))
}

#[test]
fn full_transfer_installs_an_identical_tree_and_reports_once() {
    let p = pair("");
    let before = tree_listing(&p.source.server_dir(SERVER));
    let (code, record) = p.start();
    assert_eq!(code, 202, "{record}");
    assert_eq!(record["direction"], "outgoing");
    let record = p.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(
        record["status"],
        "completed",
        "{record}\n{}",
        p.dest.log_text()
    );
    assert_eq!(
        record["progress"]["files_done"],
        record["progress"]["files_total"]
    );
    assert!(record["progress"]["wire_bytes"].as_u64().unwrap() > 0);
    // Identical on the destination: links, empty dirs, modes and the
    // files the egg's denylist names all travelled.
    assert_eq!(tree_listing(&p.dest.server_dir(SERVER)), before);
    // The source is untouched.
    assert_eq!(tree_listing(&p.source.server_dir(SERVER)), before);
    // Exactly one report: success, from the destination.
    assert!(p.panel.wait_until(Duration::from_secs(5), |_| true));
    assert_eq!(p.reports(), vec![("success".to_string(), 204)]);
    let success = p.panel.calls_to(
        "POST",
        &format!("/api/remote/servers/{SERVER}/transfer/success"),
    );
    assert_eq!(success.len(), 1);
    assert_eq!(success[0].body_str().trim(), "null");
    // The destination registered it with the panel's configuration.
    let (code, view) = p.dest.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(code, 200);
    assert_eq!(
        view["configuration"]["settings"]["meta"]["name"],
        "Survival"
    );
    // Both sides recorded it; the destination's record is incoming.
    let (_, dest_record) = p.dest.get(&format!("/api/servers/{SERVER}/transfer"));
    assert_eq!(
        (
            dest_record["direction"].as_str(),
            dest_record["status"].as_str()
        ),
        (Some("incoming"), Some("completed"))
    );
    // The destination knew the totals the source announced.
    assert_eq!(
        dest_record["progress"]["files_total"],
        record["progress"]["files_total"]
    );
    assert_eq!(
        dest_record["progress"]["bytes_total"],
        record["progress"]["bytes_total"]
    );
    // The installed directory is an ordinary server directory, not private staging.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.dest.server_dir(SERVER))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    let (_, all) = p.source.get("/api/transfers");
    assert_eq!(all.as_array().unwrap().len(), 1);
    // Each side's pipeline accounted CPU to its own stages, in /metrics
    // and in a log line at the end.
    let src_metrics = metrics(&p.source);
    let dst_metrics = metrics(&p.dest);
    let sides = [
        (
            &["walk", "deflate", "write", "send"][..],
            &src_metrics,
            &dst_metrics,
        ),
        (
            &["receive", "inflate", "unpack"][..],
            &dst_metrics,
            &src_metrics,
        ),
    ];
    for (stages, busy, idle) in sides {
        for stage in stages {
            assert!(stage_cpu(busy, stage) > 0.0, "{stage}: {busy}");
            assert_eq!(stage_cpu(idle, stage), 0.0, "{stage}: {idle}");
        }
    }
    assert!(p
        .source
        .wait_log("CPU by stage: walk ", Duration::from_secs(5)));
    assert!(p
        .dest
        .wait_log("CPU by stage: receive ", Duration::from_secs(5)));
    // Audit lines for every change on both sides.
    let statuses: Vec<String> = p
        .source
        .audit_lines()
        .iter()
        .map(|l| l["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["pending", "processing", "completed"]);
    assert!(p.dest.audit_lines().iter().any(|l| l["to"] == "completed"));

    // The panel's follow-up: delete on the source.
    let (code, _) = p
        .source
        .request("DELETE", &format!("/api/servers/{SERVER}"), None);
    assert_eq!(code, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.source.server_dir(SERVER).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.source.server_dir(SERVER).exists());
    assert_eq!(p.source.get(&format!("/api/servers/{SERVER}")).0, 404);
    assert_eq!(tree_listing(&p.dest.server_dir(SERVER)), before);
}

#[test]
fn double_start_is_409_and_power_is_refused_while_transferring() {
    // 1 MiB/s keeps the transfer running long enough to poke at it.
    let p = pair("upload_limit: 1\nsegment_size: 1\ntransport: auto");
    let (code, _) = p.start();
    assert_eq!(code, 202);
    let (code, body) = p.start();
    assert_eq!(
        (code, body["error"].as_str()),
        (
            409,
            Some("A transfer is already in progress for this server.")
        )
    );
    let (code, body) = p.source.request(
        "POST",
        &format!("/api/servers/{SERVER}/power"),
        Some(json!({"action": "start"})),
    );
    assert_eq!(
        (code, body["error"].as_str()),
        (
            409,
            Some("The server cannot be powered while it is being transferred.")
        )
    );
    let (code, _) = p.source.request(
        "DELETE",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({"reason": "test over"})),
    );
    assert_eq!(code, 202);
    p.source.wait_transfer_end(SERVER, Duration::from_secs(10));
}

#[test]
fn cancel_on_the_source_mid_stream_ends_within_a_second_with_nothing_left() {
    let p = pair("upload_limit: 1\nsegment_size: 1\ntransport: auto");
    assert_eq!(p.start().0, 202);
    // Mid-stream on both sides: a source that has packed bytes may not
    // have reached the destination yet (then only the source reports).
    p.source.wait_transfer_bytes(SERVER);
    p.dest.wait_transfer_bytes(SERVER);
    let asked = Instant::now();
    let (code, record) = p.source.request(
        "DELETE",
        &format!("/api/servers/{SERVER}/transfer"),
        Some(json!({"reason": "operator changed their mind"})),
    );
    assert_eq!(code, 202);
    assert_eq!(record["status"], "cancelling");
    let record = p.source.wait_transfer_end(SERVER, Duration::from_secs(5));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(record["status"], "cancelled");
    assert_eq!(record["cancel_reason"], "operator changed their mind");
    p.wait_source_released();
    // One failure report from the source; the destination cleaned up and
    // reported its own failure once.
    let reported = p.panel.wait_until(Duration::from_secs(10), |calls| {
        calls
            .iter()
            .filter(|c| c.path.ends_with("/transfer/failure"))
            .count()
            >= 2
    });
    assert!(
        reported,
        "reports: {:?}\n--- source log:\n{}\n--- destination log:\n{}",
        p.reports(),
        p.source.log_text(),
        p.dest.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let reports = p.reports();
    assert_eq!(
        reports.iter().filter(|(k, _)| k == "failure").count(),
        2,
        "{reports:?}"
    );
    assert!(reports.iter().all(|(k, _)| k == "failure"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.dest.server_dir(SERVER).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    p.dest.wait_transfer_end(SERVER, Duration::from_secs(10));
    p.assert_destination_clean();
    // A second cancel finds nothing to cancel.
    let (code, _) = p
        .source
        .request("DELETE", &format!("/api/servers/{SERVER}/transfer"), None);
    assert_eq!(code, 409);
    // And a retry is possible.
    let (code, _) = p.start();
    assert_eq!(code, 202);
    p.source
        .request("DELETE", &format!("/api/servers/{SERVER}/transfer"), None);
    p.source.wait_transfer_end(SERVER, Duration::from_secs(10));
}

#[test]
fn cancel_on_the_destination_mid_stream_fails_the_source_and_cleans_up() {
    let p = pair("upload_limit: 1\nsegment_size: 1\ntransport: auto");
    assert_eq!(p.start().0, 202);
    p.dest.wait_transfer_bytes(SERVER);
    let asked = Instant::now();
    let (code, record) = p.dest.request(
        "DELETE",
        &format!("/api/transfers/{SERVER}"),
        Some(json!({"reason": "disk maintenance"})),
    );
    assert_eq!(code, 202, "{record}");
    let dest_record = p.dest.wait_transfer_end(SERVER, Duration::from_secs(5));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(dest_record["status"], "cancelled");
    let source_record = p.source.wait_transfer_end(SERVER, Duration::from_secs(10));
    assert_eq!(source_record["status"], "failed", "{source_record}");
    p.wait_source_released();
    p.assert_destination_clean();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.reports().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        p.reports().iter().filter(|(k, _)| k == "failure").count(),
        2,
        "{:?}",
        p.reports()
    );
}

#[test]
fn destination_killed_mid_stream_fails_the_source_which_can_retry() {
    // The classic POST: the segmented transport resumes instead
    // (transport::a_killed_destination_restarts_and_the_transfer_resumes).
    let classic = vec![("FERRY_TRANSPORT".to_string(), "classic".to_string())];
    let mut p = pair_with("upload_limit: 1", classic);
    assert_eq!(p.start().0, 202);
    p.dest.wait_transfer_bytes(SERVER);
    p.dest.kill9();
    let record = p.source.wait_transfer_end(SERVER, Duration::from_secs(30));
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"].as_str().unwrap().contains("destination"),
        "{record}"
    );
    p.wait_source_released();
    let source_reports = p.reports();
    assert_eq!(source_reports, vec![("failure".to_string(), 204)]);
    // The destination restarts: it finishes the orphaned transfer as
    // failed, removes its staging, and the panel can try again. (The fake
    // panel lists every server to every node; the real one lists only the
    // node's own, so hide this one while the destination boots.)
    p.panel.remove_server(SERVER);
    let root = p.dest.keep_root();
    p.dest = TestNode::start_with(NodeOptions {
        remote: Some(p.panel.url()),
        root: Some(root),
        own_root: true,
        ..Default::default()
    });
    p.panel.add_server(SERVER, settings());
    p.assert_destination_clean();
    assert!(
        p.dest
            .audit_lines()
            .iter()
            .any(|l| l["to"] == "failed"
                && l["error"].as_str().is_some_and(|e| e.contains("restarted"))),
        "{:?}\n{}",
        p.dest.audit_lines(),
        p.dest.log_text()
    );
    let (code, _) = p.start();
    assert_eq!(code, 202);
    p.source
        .request("DELETE", &format!("/api/servers/{SERVER}/transfer"), None);
    p.source.wait_transfer_end(SERVER, Duration::from_secs(10));
}

#[test]
fn panel_failing_during_the_success_report_is_retried() {
    let p = pair("upload_limit: 2");
    assert_eq!(p.start().0, 202);
    // Once the destination streams (its configuration fetch is done), the
    // panel's next three answers are 500s: the success report is retried.
    p.dest.wait_transfer_bytes(SERVER);
    p.panel.fail_next(3);
    let record = p.source.wait_transfer_end(SERVER, Duration::from_secs(60));
    assert_eq!(record["status"], "completed", "{record}");
    let reports = p.reports();
    assert_eq!(
        reports,
        vec![
            ("success".to_string(), 500),
            ("success".to_string(), 500),
            ("success".to_string(), 500),
            ("success".to_string(), 204)
        ]
    );
    p.wait_source_released();
    let (_, view) = p.dest.get(&format!("/api/servers/{SERVER}"));
    assert_eq!(view["is_transferring"], false);
}

#[test]
fn bulk_cancel_with_a_reason_and_metrics() {
    let p = pair("upload_limit: 1\nsegment_size: 1\ntransport: auto");
    // Validation first: a reason is required, and no selector needs `everything`.
    let (code, body) = p.source.request(
        "POST",
        "/api/transfers/cancel",
        Some(json!({"everything": true})),
    );
    assert_eq!(
        (code, body["validation_errors"][0]["field"].as_str()),
        (400, Some("reason"))
    );
    let (code, body) = p.source.request(
        "POST",
        "/api/transfers/cancel",
        Some(json!({"reason": "x"})),
    );
    assert_eq!(
        (code, body["validation_errors"][0]["field"].as_str()),
        (400, Some("everything"))
    );

    let (code, started) = p.start();
    assert_eq!(code, 202);
    let (code, body) = p.source.request(
        "POST",
        "/api/transfers/cancel",
        Some(json!({"reason": "node maintenance", "direction": "incoming"})),
    );
    assert_eq!(
        (code, body["cancelled"].as_array().unwrap().len()),
        (202, 0),
        "no incoming transfer on the source"
    );
    let (code, body) = p.source.request(
        "POST",
        "/api/transfers/cancel",
        Some(
            json!({"reason": "node maintenance", "destination": format!("http://{}", p.dest.addr)}),
        ),
    );
    assert_eq!(code, 202);
    assert_eq!(body["cancelled"], json!([started["id"]]));
    let record = p.source.wait_transfer_end(SERVER, Duration::from_secs(5));
    assert_eq!(record["status"], "cancelled");
    assert_eq!(record["cancel_reason"], "node maintenance");
    let audit = p.source.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["to"] == "cancelling" && l["reason"] == "node maintenance"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["to"] == "cancelled" && l["reason"] == "node maintenance"),
        "{audit:?}"
    );

    let metrics = metrics(&p.source);
    for line in [
        "ferry_transfers_total{direction=\"outgoing\",status=\"cancelled\"} 1",
        "ferry_transfers_active{direction=\"outgoing\"} 0",
        "ferry_http_requests_total{route=\"transfers_cancel\",code=\"202\"} 2",
        "ferry_http_requests_total{route=\"transfers_cancel\",code=\"400\"} 2",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    assert!(metrics.contains("ferry_transfer_bytes_total{direction=\"outgoing\"}"));
    assert!(metrics.contains("ferry_open_connections "));
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("process_resident_memory_bytes ") && !l.ends_with(" 0")));
}
