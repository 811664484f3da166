//! `ferry status [<server>]`: the node's transfer records as a table,
//! newest first. A full server uuid shows that server's latest transfer;
//! a shorter prefix filters the list by server or transfer id.

use serde_json::Value;

use super::args::{Args, Spec};
use super::client::{target, NodeClient};
use super::render::table;
use super::Fail;
use crate::server::is_uuid;

pub const HELP: &str = "ferry status — list a node's transfers

Usage:
  ferry status [<server>] [--json] [--config PATH | --token-file F] [--node URL]

With no argument, every transfer the node knows since it started, newest
first. With a server uuid, that server's latest transfer; with a prefix of
a server uuid or transfer id (as the table shows them), the matching ones.

Options:
  --json             one JSON object per line, each a transfer record as
                     GET /api/servers/<uuid>/transfer returns it, instead
                     of the table (nothing at all when none match)
  --config PATH      take the node's address and token from its config.yml
                     (run on the node itself, as root)
  --node URL         the node [default: http://127.0.0.1:8080, or the
                     config's api.host and api.port]
  --token-file F     its node token [default: .ferry/token]
  -h, --help         this text

Exit status: 0 when the node answered (even with no transfers), 1 when a
server uuid has no transfer or the node cannot be asked, 2 for usage or
config mistakes.";

pub const SPEC: Spec = Spec {
    values: &["config", "node", "token-file"],
    switches: &["json"],
    max_positionals: 1,
};

pub fn run(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SPEC)?;
    if args.help {
        println!("{HELP}");
        return Ok(0);
    }
    let filter = args.positional(0);
    if let Some(f) = filter {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Fail::usage(format!(
                "`{f}` is neither a server uuid nor a prefix of one (hex digits and dashes)"
            )));
        }
    }
    let t = target(&args)?;
    let node = t.url.clone();
    let client = NodeClient::new(&t.url, &t.token, &t.token_source);

    let records = match filter {
        Some(server) if is_uuid(server) => {
            let reply = client
                .request("GET", &format!("/api/servers/{server}/transfer"), None)
                .map_err(Fail::Runtime)?;
            match reply.status {
                200 => vec![reply.body],
                404 => {
                    eprintln!("ferry status: no transfer of {server} on {node} since it started");
                    return Ok(1);
                }
                s => {
                    return Err(Fail::Runtime(format!(
                        "the node answered HTTP {s}: {}",
                        reply.error()
                    )))
                }
            }
        }
        _ => {
            let reply = client
                .request("GET", "/api/transfers", None)
                .map_err(Fail::Runtime)?;
            let Some(list) = reply.body.as_array().filter(|_| reply.status == 200) else {
                return Err(Fail::Runtime(format!(
                    "the node answered HTTP {} to GET /api/transfers: {}",
                    reply.status,
                    reply.error()
                )));
            };
            let prefix = filter.unwrap_or("").to_ascii_lowercase();
            list.iter()
                .filter(|r| matches_prefix(r, &prefix))
                .cloned()
                .collect()
        }
    };
    if args.has("json") {
        // JSON Lines: a script reads one record per line, and an empty
        // answer is simply no lines.
        for r in &records {
            println!("{r}");
        }
        return Ok(0);
    }
    sessions(&client, filter.unwrap_or(""));
    if records.is_empty() {
        match filter {
            Some(f) => println!("no transfers on {node} match `{f}`"),
            None => println!("no transfers on {node} since it started"),
        }
        return Ok(0);
    }
    print!("{}", table(&records));
    Ok(0)
}

/// The segmented transport's sessions this node receives (SPEC §10):
/// which can resume and how much each holds. Quiet when the node has none
/// (or predates them).
fn sessions(client: &NodeClient, prefix: &str) {
    let Ok(reply) = client.request("GET", "/api/transfers/sessions", None) else {
        return;
    };
    let Some(list) = reply.body.as_array().filter(|_| reply.status == 200) else {
        return;
    };
    let prefix = prefix.to_ascii_lowercase();
    for s in list {
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if !text("server").starts_with(&prefix) && !text("transfer").starts_with(&prefix) {
            continue;
        }
        let held = s.get("held").and_then(Value::as_u64).unwrap_or(0);
        let what = if s.get("resumable").and_then(Value::as_bool) == Some(true) {
            "resumable"
        } else {
            "ended"
        };
        println!(
            "session {} of {} from {}: {} ({what}), holds {}",
            text("session").chars().take(8).collect::<String>(),
            text("server"),
            text("peer"),
            text("state"),
            crate::transfer::progress::human_bytes(held)
        );
    }
}

fn matches_prefix(record: &Value, prefix: &str) -> bool {
    ["server", "id"].iter().any(|key| {
        record
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_server_or_id() {
        let r = serde_json::json!({"id": "9b74654f-x", "server": "0b8c2e5e-y"});
        assert!(matches_prefix(&r, ""));
        assert!(matches_prefix(&r, "0b8c"));
        assert!(matches_prefix(&r, "9b7"));
        assert!(!matches_prefix(&r, "ff"));
    }
}
