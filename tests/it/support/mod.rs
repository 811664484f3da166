//! Code shared by the integration tests: real nodes (`node`), the fake panel
//! (`fake_panel`), throwaway certificates (`certs`), the HTTP server harness
//! (`http_common`), hostile transfer bodies (`adv`) and archive helpers
//! (`archive_support`). Each test area uses what it needs, so some helpers
//! are unused by a given build of the suite.
#![allow(dead_code)]

pub mod adv;
pub mod archive_support;
pub mod certs;
pub mod fake_panel;
pub mod http_common;
pub mod node;
pub mod proxy;

/// Runs a test that changes or measures process-wide state (the `log`
/// crate's one logger, the peak-RSS mark, the open-files limit) in a child
/// process of its own, so the other tests of this one binary can neither
/// disturb it nor be disturbed. In the parent it waits for the child,
/// asserts it passed and returns `true` (the caller then returns); in the
/// child it returns `false` and the test body runs.
pub fn rerun_in_own_process(module: &str, test: &str) -> bool {
    const MARK: &str = "FERRY_IT_OWN_PROCESS";
    if std::env::var_os(MARK).is_some() {
        return false;
    }
    let name = format!("{}::{test}", module.strip_prefix("it::").unwrap_or(module));
    let exe = std::env::current_exe().expect("the test binary's own path");
    let out = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(MARK, "1")
        .output()
        .expect("the test binary runs again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} failed in its own process:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "{name} did not run in its own process:\n{text}"
    );
    true
}

/// A multipart/form-data body from (name, filename, bytes) parts, as a
/// browser or curl writes it, closed by the final boundary.
pub fn multipart_body(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, bytes) in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = filename {
            out.extend_from_slice(
                format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
