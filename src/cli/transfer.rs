//! `ferry transfer`: plays the panel's part in standalone mode. It mints
//! the destination's transfer JWT from the destination's node token, asks
//! the source node to send the server, and follows the transfer record to
//! its end with a progress bar (plus the node's log lines from the
//! websocket). Ctrl-C cancels the transfer on the node, waits for it to
//! end and exits 130; the exit status is 0 only for `completed`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::args::{Args, Spec};
use super::client::{node_url, read_token, target, NodeClient, DEFAULT_NODE};
use super::display::{stdout_is_tty, Display};
use super::render::{self, is_terminal, RateMeter, Snapshot};
use super::watch::{self, Note};
use super::{precheck, signal, Fail};
use crate::transfer::progress::human_bytes;

pub const HELP: &str = "ferry transfer — send a server from a node to another node

Usage:
  ferry transfer <server-uuid> --to <dest-base-url> [options]

Before the source is asked to send (and so to stop the server), the
destination is checked with read-only requests: it answers, it is a
Wings-compatible node, it accepts the destination token, the server is
not already there, and, run on the source with --config against a ferry
destination, the server's size on disk fits in the destination's free
space. When it is not fit, nothing is touched and the exit status is 3.

Options:
  --to URL               the destination node, e.g. http://10.0.0.2:8080
                         (its /api/transfers route is used)
  --config PATH          take the source node's address and token from its
                         config.yml (run on the source, as root)
  --node URL             the source node [default: http://127.0.0.1:8080,
                         or the config's api.host and api.port]
  --token-file F         the source node's token [default: .ferry/token]
  --dest-token-file F    the destination node's token, used to mint the
                         transfer JWT [default: the source's token]
  --start                start the server on the destination when it arrives
  --json                 no progress; one JSON object on stdout at the end
                         (status, exit_code, error, the final record)
  --no-check             skip the destination check (for a destination
                         behind a proxy that only passes /api/transfers)
  --no-progress          plain progress lines even on a terminal
  -h, --help             this text

Progress is a live bar on a terminal and a line every 2 s otherwise. Its
sizes are binary (1 MiB = 1,048,576 bytes) and count the server's files
as they are on disk, before compression; upload_limit and download_limit
cap the compressed archive on the wire, so a capped transfer of data that
compresses well shows a rate above its cap.
Ctrl-C cancels the transfer on the node, waits for it to stop and exits 130.

Exit status: 0 when the transfer completed, 1 when it failed, could not
start or was cancelled elsewhere, 2 for usage or config mistakes, 3 when
the destination check refused (nothing was touched), 130 after Ctrl-C.";

pub const SPEC: Spec = Spec {
    values: &["to", "config", "node", "token-file", "dest-token-file"],
    switches: &["start", "json", "no-check", "no-progress"],
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
/// The exit status when the destination check refused.
pub const REFUSED: i32 = 3;

/// `http://host:port` → `http://host:port/api/transfers` (kept if given).
pub fn destination_url(raw: &str) -> Result<String, String> {
    let base = node_url(raw, "to")?;
    if base.ends_with("/api/transfers") {
        Ok(base)
    } else {
        Ok(format!("{base}/api/transfers"))
    }
}

/// How a `ferry transfer` ended, for a person and (with `--json`) a script.
#[derive(Debug)]
struct Ending {
    code: i32,
    /// The record's final status, or `refused` / `not_started`.
    status: String,
    error: Option<String>,
    /// The line a person reads: stdout on success, stderr otherwise.
    text: String,
    record: Value,
    cancelled_here: bool,
}

impl Ending {
    /// It ended before the source was asked to send.
    fn early(status: &str, code: i32, error: String) -> Ending {
        Ending {
            code,
            status: status.to_string(),
            text: format!("ferry transfer: {error}"),
            error: Some(error),
            record: Value::Null,
            cancelled_here: false,
        }
    }
}

/// Who and where, for the `--json` object.
#[derive(Debug, Default)]
struct Route {
    server: String,
    source: String,
    destination: String,
}

pub fn run(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SPEC)?;
    if args.help {
        println!("{HELP}");
        return Ok(0);
    }
    let json = args.has("json");
    let mut route = Route::default();
    let started = Instant::now();
    let ending = match send(&args, json, &mut route) {
        Ok(ending) => ending,
        // A usage mistake is never a result object: it is the caller's bug.
        Err(Fail::Usage(m)) => return Err(Fail::Usage(m)),
        Err(e) if !json => return Err(e),
        Err(Fail::Config(m)) => Ending::early("not_started", 2, m),
        Err(Fail::Runtime(m)) => Ending::early("not_started", 1, m),
    };
    if json {
        if ending.code != 0 {
            eprintln!("{}", ending.text);
        }
        println!("{}", result_object(&ending, &route, started.elapsed()));
    } else if ending.code == 0 {
        println!("{}", ending.text);
    } else {
        eprintln!("{}", ending.text);
    }
    Ok(ending.code)
}

/// The `--json` result: one object, whatever the outcome.
fn result_object(e: &Ending, route: &Route, elapsed: Duration) -> Value {
    let text = |key: &str| e.record.get(key).cloned().unwrap_or(Value::Null);
    json!({
        "status": e.status,
        "exit_code": e.code,
        "server": route.server,
        "transfer_id": text("id"),
        "source": route.source,
        "destination": route.destination,
        "error": e.error,
        "cancel_reason": text("cancel_reason"),
        "cancelled_here": e.cancelled_here,
        "elapsed_seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "record": e.record,
    })
}

fn send(args: &Args, json: bool, route: &mut Route) -> Result<Ending, Fail> {
    let server = args.positional(0).ok_or_else(|| {
        Fail::usage(
            "transfer needs the server's uuid: ferry transfer <server-uuid> --to <dest-base-url>",
        )
    })?;
    super::check_uuid(server)?;
    route.server = server.to_string();
    let to = args.value("to").ok_or_else(|| {
        Fail::usage(
            "transfer needs --to <dest-base-url>, the destination node (e.g. http://10.0.0.2:8080)",
        )
    })?;
    let dest = destination_url(to).map_err(Fail::Usage)?;
    route.destination = dest.clone();
    let same_node = |node: &str| {
        if dest == format!("{node}/api/transfers") {
            Err(Fail::usage(
                "--to names the source node itself; a server cannot be sent to the node that holds it",
            ))
        } else {
            Ok(())
        }
    };
    // Usage mistakes are named before any file is read.
    if !args.has("config") {
        let node =
            node_url(args.value("node").unwrap_or(DEFAULT_NODE), "node").map_err(Fail::Usage)?;
        same_node(&node)?;
        route.source = node;
    }
    let source = target(args)?;
    let node = source.url.clone();
    same_node(&node)?;
    route.source = node.clone();
    let (dest_token, dest_token_source) = match args.value("dest-token-file") {
        Some(f) => (
            read_token(f, "dest-token-file").map_err(Fail::Runtime)?,
            f.to_string(),
        ),
        None => (source.token.clone(), source.token_source.clone()),
    };

    // Before anything starts, so a Ctrl-C at any point cancels cleanly.
    signal::install();
    let client = NodeClient::new(&node, &source.token, &source.token_source);
    if !args.has("no-check") {
        let dest_base = dest.trim_end_matches("/api/transfers");
        let dest_client = NodeClient::new(dest_base, &dest_token, &dest_token_source)
            .token_flag("--dest-token-file");
        // On the source itself (--config), the server's size is known here.
        let needed = match &source.config {
            Some(c) => precheck::local_size(&c.system.data, server),
            None => Ok(None),
        };
        if let Err(refusal) =
            needed.and_then(|needed| precheck::check(&dest_client, server, needed))
        {
            return Ok(Ending::early(
                "refused",
                REFUSED,
                format!("{refusal}; nothing was stopped or sent"),
            ));
        }
    }
    let mut display = if json {
        Display::silent()
    } else {
        Display::new(stdout_is_tty() && !args.has("no-progress"))
    };
    // Connected before the POST so the first log lines are not missed.
    let watch = watch::start(&node, server, &source.token);

    if signal::interrupted() {
        return Ok(Ending::early(
            "not_started",
            130,
            "interrupted before the transfer started; nothing was sent".to_string(),
        ));
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
    Ok(conclude(record, cancelled_here, display.elapsed()))
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

/// The outcome's words and exit status.
fn conclude(record: Value, cancelled_here: bool, elapsed: Duration) -> Ending {
    let s = Snapshot::from_record(&record);
    let secs = elapsed.as_secs_f64().max(0.001);
    let error = record
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string);
    let reason = record.get("cancel_reason").and_then(Value::as_str);
    let (code, text) = match s.status.as_str() {
        "completed" => (
            0,
            format!(
                "completed: {} files, {} in {:.1} s ({}/s)",
                s.files_done,
                human_bytes(s.bytes_done),
                secs,
                human_bytes((s.bytes_done as f64 / secs) as u64)
            ),
        ),
        _ if cancelled_here => (130, format!("ferry transfer: cancelled ({})", s.status)),
        status => match (&error, reason) {
            (Some(e), _) => (1, format!("ferry transfer: {status}: {e}")),
            (None, Some(r)) => (1, format!("ferry transfer: {status}: {r}")),
            (None, None) => (1, format!("ferry transfer: {status}")),
        },
    };
    Ending {
        code,
        status: s.status,
        error,
        text,
        record,
        cancelled_here,
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
        let conclude = |r: &Value, here, d| super::conclude(r.clone(), here, d).code;
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
