//! `ferry transfer`: plays the panel's part in standalone mode. It mints
//! the destination's transfer JWT from the destination's node token, asks
//! the source node to send the server, and follows the transfer record to
//! its end with a progress bar (plus the node's log lines from the
//! websocket). Ctrl-C cancels the transfer on the node, waits for it to
//! end and exits 130; the exit status is 0 only for `completed`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::args::{Args, Spec};
use super::client::{node_url, read_token, NodeClient, DEFAULT_NODE, DEFAULT_TOKEN_FILE};
use super::display::{stdout_is_tty, Display};
use super::render::{self, is_terminal, RateMeter, Snapshot};
use super::watch::{self, Note};
use super::{signal, Fail};
use crate::transfer::progress::human_bytes;

pub const HELP: &str = "ferry transfer — send a server from a node to another node

Usage:
  ferry transfer <server-uuid> --to <dest-base-url> [options]

Options:
  --to URL               the destination node, e.g. http://10.0.0.2:8080
                         (its /api/transfers route is used)
  --node URL             the source node [default: http://127.0.0.1:8080]
  --token-file F         the source node's token [default: .ferry/token]
  --dest-token-file F    the destination node's token, used to mint the
                         transfer JWT [default: the --token-file]
  --start                start the server on the destination when it arrives
  --no-progress          plain progress lines even on a terminal
  -h, --help             this text

Progress is a live bar on a terminal and a line every 2 s otherwise.
Ctrl-C cancels the transfer on the node, waits for it to stop and exits 130.
Exit status: 0 when the transfer completed, 1 when it failed or was
cancelled elsewhere, 2 for usage mistakes, 130 after Ctrl-C.";

const SPEC: Spec = Spec {
    values: &["to", "node", "token-file", "dest-token-file"],
    switches: &["start", "no-progress"],
    max_positionals: 1,
};

/// What the node records as the reason when Ctrl-C cancels.
pub const CANCEL_REASON: &str = "cancelled from the CLI";
/// The transfer JWT's lifetime: the destination checks it once, when the
/// source connects (after the source stops the server, up to its timeout).
const JWT_TTL: Duration = Duration::from_secs(15 * 60);
const POLL_EVERY: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);
/// How long the node may stay unreachable before the CLI gives up watching.
const LOST_AFTER: Duration = Duration::from_secs(15);
/// How long a cancel may take before the CLI stops waiting for it.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// `http://host:port` → `http://host:port/api/transfers` (kept if given).
pub fn destination_url(raw: &str) -> Result<String, String> {
    let base = node_url(raw, "to")?;
    if base.ends_with("/api/transfers") {
        Ok(base)
    } else {
        Ok(format!("{base}/api/transfers"))
    }
}

pub fn run(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SPEC)?;
    if args.help {
        println!("{HELP}");
        return Ok(0);
    }
    let server = args.positional(0).ok_or_else(|| {
        Fail::usage(
            "transfer needs the server's uuid: ferry transfer <server-uuid> --to <dest-base-url>",
        )
    })?;
    super::check_uuid(server)?;
    let to = args.value("to").ok_or_else(|| {
        Fail::usage(
            "transfer needs --to <dest-base-url>, the destination node (e.g. http://10.0.0.2:8080)",
        )
    })?;
    let dest = destination_url(to).map_err(Fail::Usage)?;
    let node = node_url(args.value("node").unwrap_or(DEFAULT_NODE), "node").map_err(Fail::Usage)?;
    if dest == format!("{node}/api/transfers") {
        return Err(Fail::usage(
            "--to names the source node itself; a server cannot be sent to the node that holds it",
        ));
    }
    let token_file = args.value("token-file").unwrap_or(DEFAULT_TOKEN_FILE);
    let dest_token_file = args.value("dest-token-file").unwrap_or(token_file);
    let token = read_token(token_file, "token-file").map_err(Fail::Runtime)?;
    let dest_token = read_token(dest_token_file, "dest-token-file").map_err(Fail::Runtime)?;

    // Before anything starts, so a Ctrl-C at any point cancels cleanly.
    signal::install();
    let client = NodeClient::new(&node, &token, token_file);
    let mut display = Display::new(stdout_is_tty() && !args.has("no-progress"));
    // Connected before the POST so the first log lines are not missed.
    let watch = watch::start(&node, server, &token);

    if signal::interrupted() {
        eprintln!("ferry transfer: interrupted before the transfer started; nothing was sent");
        return Ok(130);
    }
    let jwt = crate::jwt::mint_transfer_token(dest_token.as_bytes(), server, JWT_TTL);
    let body = json!({
        "url": dest,
        "token": format!("Bearer {jwt}"),
        "server": {"uuid": server, "start_on_completion": args.has("start")},
    });
    let reply = client
        .request(
            "POST",
            &format!("/api/servers/{server}/transfer"),
            Some(&body),
        )
        .map_err(Fail::Runtime)?;
    match reply.status {
        202 => {}
        404 => return Err(Fail::Runtime(format!("server {server} is not on the node at {node} (`ferry status` lists its transfers; GET /api/servers lists its servers)"))),
        409 => return Err(Fail::Runtime(format!("{} (`ferry status {server}` shows it; `ferry cancel {server}` stops it)", reply.error()))),
        status => return Err(Fail::Runtime(format!("the node did not start the transfer (HTTP {status}): {}", reply.error()))),
    }
    let id = reply
        .body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    display.line(&format!(
        "transfer {} of {server}: {node} -> {dest}",
        id.chars().take(8).collect::<String>()
    ));
    // Said only now: before the POST, a refused websocket usually means
    // the server is not there, which the POST explains better.
    let watch = match watch {
        Ok(w) => Some(w),
        Err(e) => {
            log_quietly(&mut display, &format!("(no live log lines: {e})"));
            None
        }
    };
    let (record, cancelled_here) = follow(
        &client,
        server,
        &id,
        reply.body,
        watch.as_ref(),
        &mut display,
    )?;
    Ok(conclude(&record, cancelled_here, display.elapsed()))
}

/// Polls the record until it is terminal, cancelling on Ctrl-C.
/// Returns the final record and whether this CLI asked for the cancel.
fn follow(
    client: &NodeClient,
    server: &str,
    id: &str,
    mut record: Value,
    watch: Option<&watch::Watch>,
    display: &mut Display,
) -> Result<(Value, bool), Fail> {
    let path = format!("/api/servers/{server}/transfer");
    let mut meter = RateMeter::new(Duration::from_secs(3));
    let mut cancel_sent: Option<Instant> = None;
    let mut next_poll = Instant::now();
    let mut failing_since: Option<Instant> = None;
    loop {
        if signal::interrupted() && cancel_sent.is_none() {
            cancel_sent = Some(Instant::now());
            display.line("Ctrl-C: cancelling the transfer (Ctrl-C again quits at once)...");
            match client.request("DELETE", &path, Some(&json!({ "reason": CANCEL_REASON }))) {
                Ok(r) if r.status == 202 => {}
                Ok(r) => display.line(&format!("cancel: {}", r.error())),
                Err(e) => display.line(&format!("cancel failed: {e}")),
            }
            next_poll = Instant::now();
        }
        if let Some(w) = watch {
            for note in w.notes.try_iter() {
                // The node's own upload bar repeats what ours shows.
                if let Note::Log(line) = note {
                    if !line.contains("Uploading [") {
                        display.line(&render::log_message(&line));
                    }
                }
            }
        }
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + POLL_EVERY;
            match client.request("GET", &path, None) {
                Ok(r) if r.status == 200 => {
                    failing_since = None;
                    if r.body.get("id").and_then(Value::as_str) != Some(id) {
                        return Err(Fail::Runtime(format!(
                            "another transfer of {server} replaced this one on the node; `ferry status {server}` shows it"
                        )));
                    }
                    record = r.body;
                }
                Ok(r) => lost(
                    &mut failing_since,
                    server,
                    &format!("HTTP {}: {}", r.status, r.error()),
                )?,
                Err(e) => lost(&mut failing_since, server, &e)?,
            }
            let snapshot = Snapshot::from_record(&record);
            meter.add(Instant::now(), snapshot.bytes_done);
            if is_terminal(&snapshot.status) {
                display.finish(&snapshot);
                return Ok((record, cancel_sent.is_some()));
            }
            display.update(&snapshot.with_rate(meter.rate()));
        }
        if cancel_sent.is_some_and(|t| t.elapsed() > CANCEL_WAIT) {
            display.line(&format!(
                "the node has not finished cancelling after {CANCEL_WAIT:?}; `ferry status {server}` shows how it ends"
            ));
            return Ok((record, true));
        }
        std::thread::sleep(TICK);
    }
}

/// Tolerates a node that blips; gives up after [`LOST_AFTER`].
fn lost(since: &mut Option<Instant>, server: &str, why: &str) -> Result<(), Fail> {
    let first = *since.get_or_insert_with(Instant::now);
    if first.elapsed() > LOST_AFTER {
        return Err(Fail::Runtime(format!(
            "lost contact with the node for {LOST_AFTER:?} ({why}); the transfer may still be running: `ferry status {server}`"
        )));
    }
    Ok(())
}

/// Prints the outcome and picks the exit status.
fn conclude(record: &Value, cancelled_here: bool, elapsed: Duration) -> i32 {
    let s = Snapshot::from_record(record);
    let secs = elapsed.as_secs_f64().max(0.001);
    match s.status.as_str() {
        "completed" => {
            println!(
                "completed: {} files, {} in {:.1} s ({}/s)",
                s.files_done,
                human_bytes(s.bytes_done),
                secs,
                human_bytes((s.bytes_done as f64 / secs) as u64)
            );
            0
        }
        _ if cancelled_here => {
            eprintln!("ferry transfer: cancelled ({})", s.status);
            130
        }
        status => {
            let error = record.get("error").and_then(Value::as_str);
            let reason = record.get("cancel_reason").and_then(Value::as_str);
            match (error, reason) {
                (Some(e), _) => eprintln!("ferry transfer: {status}: {e}"),
                (None, Some(r)) => eprintln!("ferry transfer: {status}: {r}"),
                (None, None) => eprintln!("ferry transfer: {status}"),
            }
            1
        }
    }
}

/// Side notes go only to plain output; a terminal user sees the bar.
fn log_quietly(display: &mut Display, text: &str) {
    if !stdout_is_tty() {
        display.line(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_urls() {
        assert_eq!(
            destination_url("http://d:8080").unwrap(),
            "http://d:8080/api/transfers"
        );
        assert_eq!(
            destination_url("http://d:8080/").unwrap(),
            "http://d:8080/api/transfers"
        );
        assert_eq!(
            destination_url("https://d/api/transfers").unwrap(),
            "https://d/api/transfers"
        );
        assert!(destination_url("d:8080").unwrap_err().starts_with("--to"));
    }

    #[test]
    fn exit_status_follows_the_outcome() {
        let rec = |status: &str| json!({"status": status, "error": "boom", "progress": {}});
        assert_eq!(
            conclude(&rec("completed"), false, Duration::from_secs(1)),
            0
        );
        assert_eq!(conclude(&rec("completed"), true, Duration::from_secs(1)), 0);
        assert_eq!(conclude(&rec("failed"), false, Duration::from_secs(1)), 1);
        assert_eq!(
            conclude(&rec("cancelled"), false, Duration::from_secs(1)),
            1
        );
        assert_eq!(
            conclude(&rec("cancelled"), true, Duration::from_secs(1)),
            130
        );
        assert_eq!(conclude(&rec("failed"), true, Duration::from_secs(1)), 130);
    }
}
