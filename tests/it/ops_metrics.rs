//! `/metrics` for a real Prometheus (issue 16): build info, process
//! metrics, the duration histogram and rate gauges present at zero from the
//! start, and a read-only `metrics.token` good for `/metrics` alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::node::{TestNode, TOKEN};

const METRICS_TOKEN: &str = "prometheus-only-0123456789";

#[test]
fn metrics_token_reads_metrics_only_and_series_start_at_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "token: {TOKEN}\napi:\n  host: 127.0.0.1\n  port: 0\nsystem:\n  root_directory: {0}/root\n  data: {0}/volumes\n  environment: none\nmetrics:\n  token: {METRICS_TOKEN}\n",
            dir.path().display()
        ),
    )
    .expect("config");
    let log_path = dir.path().join("stderr");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(pos) = text.find("listening on ") {
            break text[pos + 13..]
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        assert!(Instant::now() < deadline, "no start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let agent = TestNode::agent();
    let get = |path: &str, token: &str| {
        let mut r = agent
            .get(format!("http://{addr}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("request");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, body) = get("/metrics", METRICS_TOKEN);
    assert_eq!(status, 200, "{body}");
    // The node token still reads metrics; the metrics token reads nothing else.
    assert_eq!(get("/metrics", TOKEN).0, 200);
    assert_eq!(get("/api/system", METRICS_TOKEN).0, 403);
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    let line = body
        .lines()
        .find(|l| l.starts_with("ferry_build_info{"))
        .unwrap_or_else(|| panic!("no build info:\n{body}"));
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.contains("commit=\"") && !line.contains("commit=\"\""),
        "{line}"
    );
    for series in [
        "ferry_transfers_total{direction=\"outgoing\",status=\"failed\"} 0",
        "ferry_transfers_total{direction=\"incoming\",status=\"completed\"} 0",
        "ferry_transfer_duration_seconds_bucket{direction=\"outgoing\",le=\"+Inf\"} 0",
        "ferry_transfer_duration_seconds_count{direction=\"incoming\"} 0",
        "ferry_transfer_bytes_per_second{direction=\"incoming\"} 0",
    ] {
        assert!(body.contains(series), "missing `{series}`:\n{body}");
    }
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{body}"))
    };
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 120.0,
        "{started} vs {now}"
    );
    assert!(value("process_resident_memory_bytes") > 0.0);
}
