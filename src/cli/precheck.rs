//! `ferry transfer`'s look at the destination before the source is asked
//! to stop anything: it answers, it is a Wings-compatible node, it takes
//! the token the transfer JWT will be signed with, and the server is not
//! already there (which the destination would refuse with 409 only after
//! the source had stopped the server), and, when both numbers are known,
//! that the server fits: its size on disk (counted here when the CLI runs
//! on the source with `--config`) against the free space a ferry
//! destination reports in `GET /api/system` (Wings reports none). Only
//! read-only requests are made, so the check changes nothing.

use serde_json::Value;

use super::client::NodeClient;
use crate::transfer::progress::human_bytes;

/// Why the destination is not fit; said before anything was touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `dest` is the destination's base URL (without `/api/transfers`);
/// `needed` the server's size on disk when known.
pub fn check(dest: &NodeClient, server: &str, needed: Option<u64>) -> Result<(), Refusal> {
    let base = &dest.base;
    let system = dest
        .request("GET", "/api/system", None)
        .map_err(|e| Refusal(destination_words(&e)))?;
    judge_system(base, system.status, &system.body)?;
    judge_space(base, needed, &system.body)?;
    let there = dest
        .request("GET", &format!("/api/servers/{server}"), None)
        .map_err(|e| Refusal(destination_words(&e)))?;
    judge_server(base, server, there.status, &there.body)
}

/// The client's advice speaks of "the node"; here it is the destination.
fn destination_words(message: &str) -> String {
    message
        .replacen("the node at", "the destination at", 1)
        .replace("Pass --node URL to use another one", "check --to")
}

/// `GET /api/system` must be a node's answer: 200 with a JSON object that
/// has a `version` (Wings and ferry both send one).
pub fn judge_system(base: &str, status: u16, body: &Value) -> Result<(), Refusal> {
    match status {
        200 if body.get("version").is_some() => Ok(()),
        200 => Err(Refusal(format!(
            "{base} answered GET /api/system without a node's fields; is --to a Wings or ferry node's API address?"
        ))),
        404 => Err(Refusal(format!(
            "{base} has no /api/system; is --to a Wings or ferry node's API address?"
        ))),
        s => Err(Refusal(format!(
            "the destination at {base} answered GET /api/system with HTTP {s}"
        ))),
    }
}

/// The server must fit in what the destination says is free; when either
/// number is unknown the destination decides later, as it always does.
pub fn judge_space(base: &str, needed: Option<u64>, system: &Value) -> Result<(), Refusal> {
    let free = system.get("data_free_bytes").and_then(Value::as_u64);
    match (needed, free) {
        (Some(needed), Some(free)) if needed > free => Err(Refusal(format!(
            "the server takes {} on disk and the destination {base} has {} free in its data directory",
            human_bytes(needed),
            human_bytes(free)
        ))),
        _ => Ok(()),
    }
}

/// The server's size on disk under the source's data directory, as the
/// source will announce it; None when it is not on this machine.
pub fn local_size(data: &std::path::Path, server: &str) -> Result<Option<u64>, Refusal> {
    let dir = data.join(server);
    if !dir.is_dir() {
        return Ok(None);
    }
    let never = std::sync::atomic::AtomicBool::new(false);
    match crate::archive::scan(&dir, &never) {
        Ok(totals) => Ok(Some(totals.disk_bytes)),
        // The source would refuse the same entry, after stopping the server.
        Err(e) => Err(Refusal(format!(
            "the source could not send {}: {e}",
            dir.display()
        ))),
    }
}

/// `GET /api/servers/<uuid>` must be 404: a server already there would
/// make the destination refuse the transfer after the source stopped it.
pub fn judge_server(base: &str, server: &str, status: u16, body: &Value) -> Result<(), Refusal> {
    match status {
        404 => Ok(()),
        200 => {
            let state = body
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            Err(Refusal(format!(
                "server {server} already exists on the destination {base} (state {state}); it would refuse the transfer. Delete it there first if it is a stale copy"
            )))
        }
        s => Err(Refusal(format!(
            "the destination at {base} answered GET /api/servers/{server} with HTTP {s}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &str = "0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e";

    #[test]
    fn a_node_answers_with_its_version() {
        assert!(judge_system("http://d", 200, &json!({"version": "1.11.0"})).is_ok());
        let e = judge_system("http://d", 200, &json!({"hello": 1})).unwrap_err();
        assert!(e.0.contains("is --to a Wings or ferry node"), "{e}");
        assert!(judge_system("http://d", 404, &Value::Null).is_err());
        assert!(judge_system("http://d", 502, &Value::Null)
            .unwrap_err()
            .0
            .contains("HTTP 502"));
    }

    #[test]
    fn the_server_must_fit_when_both_sizes_are_known() {
        let system = json!({"version": "x", "data_free_bytes": 1000});
        assert!(judge_space("http://d", Some(1000), &system).is_ok());
        let e = judge_space("http://d", Some(1001), &system).unwrap_err();
        assert!(
            e.0.contains("1001 B on disk") && e.0.contains("1000 B free"),
            "{e}"
        );
        // Wings reports no free space; an unknown size checks nothing.
        assert!(judge_space("http://d", Some(1 << 40), &json!({"version": "x"})).is_ok());
        assert!(judge_space("http://d", None, &system).is_ok());
    }

    #[test]
    fn the_server_must_be_absent() {
        assert!(judge_server("http://d", S, 404, &Value::Null).is_ok());
        let e = judge_server("http://d", S, 200, &json!({"state": "offline"})).unwrap_err();
        assert!(
            e.0.contains("already exists") && e.0.contains("offline"),
            "{e}"
        );
        assert!(judge_server("http://d", S, 500, &Value::Null).is_err());
    }
}
