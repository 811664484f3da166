//! The node trusts no answer from its panel (issue 13 items 3 and 7): a
//! page number near `u64::MAX`, an answer over the 32 MiB limit, an answer
//! that is not UTF-8, server ids that are not UUIDs. Each is refused with
//! a clear error at once (never retried for 30 s), logged, and the node
//! comes up and serves its API all the same.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fake_panel::FakePanel;
use crate::support::node::{NodeOptions, TestNode, TOKEN};
use ferry::panel::{PanelClient, PanelError, PanelOptions};
use serde_json::json;

const GOOD: &str = "6d5c4b3a-2f1e-4d0c-9b8a-7f6e5d4c3b2a";

/// What the scripted panel answers to every request.
#[derive(Clone)]
enum Answer {
    /// 200 with this body and its Content-Length.
    Body(Vec<u8>),
    /// 200 announcing `len` bytes and sending them as long as the client
    /// reads.
    Huge(u64),
}

/// A panel that answers every request the same way and counts them.
struct ScriptedPanel {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl ScriptedPanel {
    fn start(answer: Answer) -> ScriptedPanel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let answer = answer.clone();
                let count = Arc::clone(&count);
                std::thread::spawn(move || serve(stream, &answer, &count));
            }
        });
        ScriptedPanel { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One connection: read heads (no request here has a body), answer each.
fn serve(stream: TcpStream, answer: &Answer, count: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut lines = BufReader::new(stream);
    loop {
        let mut line = String::new();
        // The head ends at the first empty line.
        let mut first = true;
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" && !first => break,
                Ok(_) => first = false,
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        let written = match answer {
            Answer::Body(body) => out
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )
                .and_then(|()| out.write_all(body)),
            Answer::Huge(len) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
                );
                let chunk = vec![b' '; 1 << 20];
                let mut left = *len;
                let mut r = out.write_all(head.as_bytes());
                while r.is_ok() && left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    r = out.write_all(&chunk[..n]);
                    left -= n as u64;
                }
                r
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// The client a node builds, with its default 30 s retry budget: a
/// refusal must not spend it.
fn client(url: &str) -> PanelClient {
    PanelClient::new(url, "testtokenid", TOKEN, PanelOptions::default())
}

/// `list_servers` against `panel`: the error, after one request and well
/// under the retry budget.
fn refused_at_once(panel: &ScriptedPanel) -> PanelError {
    let started = Instant::now();
    let err = client(&panel.url())
        .list_servers()
        .expect_err("the answer should be refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?} (retried?)",
        started.elapsed()
    );
    assert_eq!(panel.requests(), 1, "a broken answer was asked again");
    err
}

/// A node booting against `panel`: it comes up within seconds, logs
/// `expect` in its boot-list error, and serves its API.
fn node_boots_despite(panel: &ScriptedPanel, expect: &str) {
    let started = Instant::now();
    let node = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the node took {took:?} to start"
    );
    assert!(
        node.wait_log("cannot list this node's servers", Duration::from_secs(5)),
        "{}",
        node.log_text()
    );
    let log = node.log_text();
    assert!(
        log.contains(expect),
        "the log should say {expect:?}:\n{log}"
    );
    let (code, _) = node.get("/api/system");
    assert_eq!(code, 200);
    assert_eq!(node.get("/api/servers").1, json!([]));
}

#[test]
fn an_answer_over_the_size_limit_is_refused_at_once() {
    let panel = ScriptedPanel::start(Answer::Huge(33 * 1024 * 1024));
    let err = refused_at_once(&panel);
    assert!(matches!(err, PanelError::BadResponse(_)), "{err:?}");
    assert!(
        err.to_string().contains("larger than 33554432 bytes"),
        "{err}"
    );
    let panel = ScriptedPanel::start(Answer::Huge(33 * 1024 * 1024));
    node_boots_despite(&panel, "larger than 33554432 bytes");
}

#[test]
fn an_answer_that_is_not_utf8_is_refused_at_once() {
    let mut body = br#"{"data": [{"uuid": ""#.to_vec();
    body.extend_from_slice(b"\xff\xfe\x80");
    body.extend_from_slice(br#""}], "meta": {"current_page": 1, "last_page": 1}}"#);
    let panel = ScriptedPanel::start(Answer::Body(body.clone()));
    let err = refused_at_once(&panel);
    assert!(matches!(err, PanelError::BadResponse(_)), "{err:?}");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    let panel = ScriptedPanel::start(Answer::Body(body));
    node_boots_despite(&panel, "not UTF-8");
}

/// `meta.current_page` at `u64::MAX` used to overflow (a panic in debug
/// builds, which the test binary is); now no page after it is asked for.
/// A `last_page` beyond the page limit is refused without a request.
#[test]
fn page_numbers_near_u64_max_do_not_overflow() {
    let page = |current: u64, last: u64| {
        json!({
            "data": [{"uuid": GOOD, "settings": {"uuid": GOOD}}],
            "meta": {"current_page": current, "last_page": last},
        })
        .to_string()
        .into_bytes()
    };
    for (current, last) in [(u64::MAX, 3), (u64::MAX, u64::MAX - 1), (u64::MAX - 1, 2)] {
        let panel = ScriptedPanel::start(Answer::Body(page(current, last)));
        let result = client(&panel.url()).list_servers();
        if last > ferry::panel::MAX_PAGES {
            let err = result.expect_err("too many pages");
            assert!(err.to_string().contains("pages of servers"), "{err}");
        } else {
            let servers = result.unwrap_or_else(|e| panic!("({current}, {last}): {e}"));
            assert_eq!(servers.len(), 1);
            assert_eq!(servers[0].uuid, GOOD);
        }
        assert_eq!(panel.requests(), 1, "({current}, {last})");
    }
    // A page number that is not a u64 at all is a clear error.
    let panel = ScriptedPanel::start(Answer::Body(
        br#"{"data": [], "meta": {"current_page": 1e30, "last_page": -1}}"#.to_vec(),
    ));
    let err = refused_at_once(&panel);
    assert!(matches!(err, PanelError::BadResponse(_)), "{err:?}");

    // A node booting on such a list registers the one good server.
    let panel = ScriptedPanel::start(Answer::Body(page(u64::MAX, 3)));
    let node = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        ..Default::default()
    });
    assert!(
        node.wait_log("panel: 1 server(s) on this node", Duration::from_secs(5)),
        "{}",
        node.log_text()
    );
    let (code, view) = node.get(&format!("/api/servers/{GOOD}"));
    assert_eq!(code, 200, "{view}");
}

/// SPEC §2: the boot list's ids become directory and file names. Ids that
/// are not server UUIDs (`..`, paths, upper case) are skipped and logged;
/// the node starts, registers the good server, and writes nothing outside
/// its state directory.
#[test]
fn boot_list_ids_that_are_not_uuids_are_skipped_and_logged() {
    let panel = FakePanel::start("testtokenid", TOKEN);
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let bad = [
        "..".to_string(),
        "../../outside".to_string(),
        format!("/../../..{}", outside.join("abs").display()),
        GOOD.to_uppercase(),
    ];
    for id in &bad {
        panel.add_server(id, json!({"uuid": id}));
    }
    panel.add_server(GOOD, json!({"uuid": GOOD}));
    let node = TestNode::start_with(NodeOptions {
        remote: Some(panel.url()),
        root: Some(tmp.path().join("node")),
        ..Default::default()
    });
    assert!(
        node.wait_log("panel: 1 server(s) on this node", Duration::from_secs(5)),
        "{}",
        node.log_text()
    );
    let log = node.log_text();
    for id in &bad {
        assert!(
            log.contains(&format!("skipping server {id:?}")),
            "{id:?} was not logged:\n{log}"
        );
    }
    let (code, list) = node.get("/api/servers");
    assert_eq!(code, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["uuid"].as_str())
        .collect();
    assert_eq!(ids, [GOOD], "{list}");
    assert!(!outside.exists(), "the node wrote outside its root");
    // Nothing but the node's own root beside it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["node"]);
}
