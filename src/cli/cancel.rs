//! `ferry cancel <server>`: asks a node to cancel the server's active
//! transfer (outgoing, or incoming with `--incoming`), then waits briefly
//! for it to end so the answer says how it ended.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::args::{Args, Spec};
use super::client::{target, NodeClient};
use super::render::is_terminal;
use super::Fail;

pub const HELP: &str = "ferry cancel — cancel a server's active transfer on a node

Usage:
  ferry cancel <server-uuid> [--incoming] [--reason R] [--config PATH | --token-file F] [--node URL]

Cancels the outgoing transfer of the server on the node (the source), or
with --incoming the one the node is receiving (the destination). The
transfer stops within about a second; nothing is left on the destination.

Options:
  --incoming         cancel the transfer this node receives
  --reason R         recorded in the transfer, its logs and the audit log
                     [default: cancelled from the CLI]
  --config PATH      take the node's address and token from its config.yml
  --node URL         the node [default: http://127.0.0.1:8080, or the
                     config's api.host and api.port]
  --token-file F     its node token [default: .ferry/token]
  -h, --help         this text

Exit status: 0 once the node accepted the cancel, 1 when there was nothing
to cancel or the node refused, 2 for usage mistakes.";

pub const SPEC: Spec = Spec {
    values: &["reason", "config", "node", "token-file"],
    switches: &["incoming"],
    max_positionals: 1,
};

/// How long to wait for the cancelled transfer to reach its end.
const SETTLE: Duration = Duration::from_secs(10);

pub fn run(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SPEC)?;
    if args.help {
        println!("{HELP}");
        return Ok(0);
    }
    let server = args
        .positional(0)
        .ok_or_else(|| Fail::usage("cancel needs the server's uuid: ferry cancel <server-uuid>"))?;
    super::check_uuid(server)?;
    let reason = args
        .value("reason")
        .unwrap_or(super::transfer::CANCEL_REASON);
    if reason.trim().is_empty() {
        return Err(Fail::usage("--reason must not be empty"));
    }
    let t = target(&args)?;
    let node = t.url.clone();
    let client = NodeClient::new(&t.url, &t.token, &t.token_source);

    let (path, direction) = if args.has("incoming") {
        (format!("/api/transfers/{server}"), "incoming")
    } else {
        (format!("/api/servers/{server}/transfer"), "outgoing")
    };
    let reply = client
        .request("DELETE", &path, Some(&json!({ "reason": reason })))
        .map_err(Fail::Runtime)?;
    match reply.status {
        202 => {}
        404 => {
            return Err(Fail::Runtime(format!(
                "server {server} is not on the node at {node}"
            )))
        }
        409 => {
            let hint = if direction == "outgoing" {
                "; add --incoming to cancel a transfer this node receives"
            } else {
                ""
            };
            return Err(Fail::Runtime(format!(
                "{} (no {direction} transfer of {server} is active on {node}; `ferry status {server}` shows its last one{hint})",
                reply.error()
            )));
        }
        s => {
            return Err(Fail::Runtime(format!(
                "the node answered HTTP {s}: {}",
                reply.error()
            )))
        }
    }
    let id = reply
        .body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let short: String = id.chars().take(8).collect();
    println!("cancelling {direction} transfer {short} of {server}");
    match settle(&client, server, &id) {
        Some(status) => println!("transfer {short} is {status}"),
        None => println!(
            "transfer {short} is still cancelling; `ferry status {server}` shows how it ends"
        ),
    }
    Ok(0)
}

/// The terminal status of transfer `id`, polled for up to [`SETTLE`].
fn settle(client: &NodeClient, server: &str, id: &str) -> Option<String> {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        if let Ok(r) = client.request("GET", &format!("/api/servers/{server}/transfer"), None) {
            let same = r.body.get("id").and_then(Value::as_str) == Some(id);
            let status = r.body.get("status").and_then(Value::as_str).unwrap_or("");
            if r.status == 200 && same && is_terminal(status) {
                return Some(status.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
