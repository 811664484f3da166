//! `ferry::panel::PanelClient` against the fake panel: pagination, headers,
//! reports (204, 409 not retried), retries on 500 and giving up when the
//! panel is down.

use crate::support::fake_panel;

use std::time::{Duration, Instant};

use fake_panel::FakePanel;
use ferry::panel::{PanelClient, PanelError, PanelOptions};
use serde_json::json;

const TOKEN_ID: &str = "tokenid0123456";
const TOKEN: &str = "node-secret-token-0123456789abcdef";

fn uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

fn quick() -> PanelOptions {
    PanelOptions {
        timeout: Duration::from_secs(2),
        retry_for: Duration::from_millis(1200),
    }
}

fn client(panel: &FakePanel) -> PanelClient {
    PanelClient::new(&format!("{}/", panel.url()), TOKEN_ID, TOKEN, quick())
}

#[test]
fn lists_all_pages_like_wings() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    for i in 0..120 {
        panel.add_server(
            &uuid(i),
            json!({"uuid": uuid(i), "meta": {"name": format!("s{i}")}}),
        );
    }
    let servers = client(&panel).list_servers().unwrap();
    assert_eq!(servers.len(), 120);
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.uuid, uuid(i));
        assert_eq!(s.settings["meta"]["name"], format!("s{i}"));
        assert_eq!(s.process_configuration["stop"]["type"], "command");
    }
    // Page 0 (answered as page 1 by Laravel), then 2 and 3: no page twice.
    let pages: Vec<String> = panel
        .calls_to("GET", "/api/remote/servers")
        .iter()
        .map(|c| {
            assert_eq!(c.query_param("per_page"), Some("50"));
            c.query_param("page").unwrap().to_string()
        })
        .collect();
    assert_eq!(pages, ["0", "2", "3"]);
}

#[test]
fn lists_an_empty_node_with_one_request() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    assert!(client(&panel).list_servers().unwrap().is_empty());
    assert_eq!(panel.calls().len(), 1);
}

#[test]
fn sends_wings_headers_and_no_expect() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(1);
    panel.add_server(&id, json!({"uuid": id}));
    panel.set_transferring(&id, true);
    let c = client(&panel);
    c.server(&id).unwrap();
    c.report_transfer(&id, true).unwrap();
    let calls = panel.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {TOKEN_ID}.{TOKEN}").as_str())
        );
        assert_eq!(
            call.header("accept"),
            Some("application/vnd.pterodactyl.v1+json")
        );
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(
            call.header("user-agent"),
            Some(format!("ferry/{}", ferry::VERSION).as_str())
        );
        assert_eq!(call.header("expect"), None);
    }
    assert_eq!(calls[0].path, format!("/api/remote/servers/{id}"));
    assert_eq!(calls[1].method, "POST");
    assert_eq!(
        calls[1].path,
        format!("/api/remote/servers/{id}/transfer/success")
    );
    assert_eq!(calls[1].body_str(), "null");
}

#[test]
fn server_configuration_and_unknown_server() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(7);
    panel.add_server_with(
        &id,
        json!({"uuid": id, "build": {"disk_space": 512}}),
        json!({"stop": {"type": "signal", "value": "SIGTERM"}}),
    );
    let s = client(&panel).server(&id).unwrap();
    assert_eq!(s.uuid, id);
    assert_eq!(s.settings["build"]["disk_space"], 512);
    assert_eq!(s.process_configuration["stop"]["value"], "SIGTERM");
    match client(&panel).server(&uuid(8)) {
        Err(PanelError::Refused(404, _)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn reports_clear_the_mark_and_409_is_not_retried() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(2);
    panel.add_server(&id, json!({"uuid": id}));
    panel.set_transferring(&id, true);
    let c = client(&panel);
    c.report_transfer(&id, false).unwrap();
    assert!(!panel.is_transferring(&id));
    // Not being transferred any more: 409, logged, Ok, one request.
    let started = Instant::now();
    c.report_transfer(&id, true).unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        panel.transfer_reports(&id),
        [("failure".to_string(), 204), ("success".to_string(), 409)]
    );
}

#[test]
fn other_4xx_are_refused_at_once() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(3);
    panel.add_server(&id, json!({"uuid": id}));
    let wrong = PanelClient::new(&panel.url(), TOKEN_ID, "wrong-token-wrong-token", quick());
    match wrong.report_transfer(&id, true) {
        Err(PanelError::Refused(403, body)) => assert!(body.contains("not authorized"), "{body}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wrong.list_servers(),
        Err(PanelError::Refused(403, _))
    ));
    assert_eq!(panel.calls().len(), 2);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(4);
    panel.add_server(&id, json!({"uuid": id}));
    panel.set_transferring(&id, true);
    panel.fail_next(2);
    client(&panel).report_transfer(&id, true).unwrap();
    let reports = panel.transfer_reports(&id);
    assert_eq!(
        reports,
        [
            ("success".to_string(), 500),
            ("success".to_string(), 500),
            ("success".to_string(), 204)
        ]
    );
    let calls = panel.calls();
    // 250 ms, then 500 ms between attempts.
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(240));
    assert!(calls[2].at - calls[1].at >= Duration::from_millis(490));
    assert!(!panel.is_transferring(&id));
}

#[test]
fn persistent_500_gives_up_after_retry_for() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    panel.fail_next(1000);
    let started = Instant::now();
    match client(&panel).list_servers() {
        Err(PanelError::Unreachable(why)) => assert!(why.contains("500"), "{why}"),
        other => panic!("{other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // 0, 250, 750 ms and the last try at the deadline (1200 ms); a slow
    // machine may lose the last one.
    let attempts = panel.calls().len();
    assert!((3..=4).contains(&attempts), "{attempts} attempts");
}

#[test]
fn down_panel_is_unreachable_after_retry_for_and_back_up_works() {
    let panel = FakePanel::start(TOKEN_ID, TOKEN);
    let id = uuid(5);
    panel.add_server(&id, json!({"uuid": id}));
    panel.set_transferring(&id, true);
    let c = client(&panel);
    // A pooled connection exists before the panel goes away.
    c.server(&id).unwrap();
    panel.go_down();
    let started = Instant::now();
    assert!(matches!(
        c.report_transfer(&id, true),
        Err(PanelError::Unreachable(_))
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert!(panel.is_transferring(&id), "no report can have arrived");

    // The panel comes back during the retries: the report gets through.
    let retry = PanelClient::new(
        &panel.url(),
        TOKEN_ID,
        TOKEN,
        PanelOptions {
            timeout: Duration::from_secs(2),
            retry_for: Duration::from_secs(5),
        },
    );
    let reporter = std::thread::spawn(move || retry.report_transfer(&id, true));
    std::thread::sleep(Duration::from_millis(400));
    panel.come_up();
    reporter.join().unwrap().unwrap();
    assert!(!panel.is_transferring(&uuid(5)));
    assert_eq!(
        panel.transfer_reports(&uuid(5)),
        [("success".to_string(), 204)]
    );
}
