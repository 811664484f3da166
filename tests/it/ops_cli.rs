//! The CLI as scripts and operators on a real node use it, against real
//! standalone nodes on loopback: `--json` output parses and carries the
//! record's fields, `--config` takes the node's address and token from its
//! config.yml on every client verb, and `ferry transfer` refuses (exit 3)
//! before the source is asked anything when the destination is unfit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::node::{make_server_tree, NodeOptions, TestNode};

const SERVER: &str = "6e2b9c1d-4f3a-4b5c-8d7e-9f0a1b2c3d4e";
const DEST_TOKEN: &str = "destination-token-for-ops-cli-0123";

struct Pair {
    src: TestNode,
    dst: TestNode,
    /// The source's config.yml with its real port (the node's own says 0).
    src_config: PathBuf,
    dst_config: PathBuf,
    dst_token_file: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A copy of a node's config naming the port it actually listens on, as
/// the config of a node in service does.
fn config_as_served(node: &TestNode, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    let fixed = text.replace("  port: 0\n", &format!("  port: {}\n", node.addr.port()));
    assert_ne!(text, fixed);
    std::fs::write(to, fixed).unwrap();
    to.to_path_buf()
}

/// `dest_has_server`: the destination already holds the server (it adopts
/// the directory at start).
fn pair(dest_has_server: bool) -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("src/volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    make_server_tree(&data);
    if dest_has_server {
        let there = tmp.path().join("dst/volumes").join(SERVER);
        std::fs::create_dir_all(&there).unwrap();
        std::fs::write(there.join("old.txt"), "stale").unwrap();
    }
    let src = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("src")),
        ..Default::default()
    });
    let dst = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("dst")),
        token: Some(DEST_TOKEN.into()),
        ..Default::default()
    });
    let src_config = config_as_served(&src, &tmp.path().join("src.yml"));
    let dst_config = config_as_served(&dst, &tmp.path().join("dst.yml"));
    let dst_token_file = tmp.path().join("dst.token");
    std::fs::write(&dst_token_file, DEST_TOKEN).unwrap();
    Pair {
        src,
        dst,
        src_config,
        dst_config,
        dst_token_file,
        _tmp: tmp,
    }
}

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout must be exactly one JSON object on one line.
fn one_object(o: &Output) -> Value {
    let text = out(o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {text}\nstderr: {}", err(o));
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Pair {
    fn transfer(&self, extra: &[&str]) -> Output {
        self.transfer_to(&self.dst.url(""), extra)
    }

    /// The source never heard of a transfer: nothing was asked of it.
    fn source_untouched(&self) {
        let (status, list) = self.src.get("/api/transfers");
        assert_eq!(status, 200);
        assert_eq!(list, serde_json::json!([]), "the source started something");
        assert!(self
            .src
            .server_dir(SERVER)
            .join("server.properties")
            .is_file());
    }
}

#[test]
fn json_transfer_and_status_with_the_nodes_own_configs() {
    let p = pair(false);
    let o = p.transfer(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let result = one_object(&o);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["server"], SERVER);
    assert_eq!(result["error"], Value::Null);
    assert_eq!(result["source"], p.src.url("").as_str());
    let id = result["transfer_id"].as_str().unwrap().to_string();
    assert_eq!(result["record"]["id"], id.as_str());
    assert_eq!(result["record"]["direction"], "outgoing");
    let progress = &result["record"]["progress"];
    assert!(
        progress["bytes_done"].as_u64().unwrap() > 3_000_000,
        "{result}"
    );
    assert_eq!(progress["files_done"], progress["files_total"]);
    // No bar or progress line reached stdout (it is the one object).
    assert!(!out(&o).contains('\r'));

    // status --json, address and token from the config: JSON Lines.
    let o = ferry(&[
        "status",
        "--json",
        "--config",
        p.dst_config.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let records: Vec<Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{}", out(&o));
    assert_eq!(records[0]["server"], SERVER);
    assert_eq!(records[0]["direction"], "incoming");
    assert_eq!(records[0]["status"], "completed");

    let o = ferry(&[
        "status",
        SERVER,
        "--json",
        "--config",
        p.src_config.to_str().unwrap(),
    ]);
    let record = one_object(&o);
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["status"], "completed");
    // A prefix that matches nothing: no lines, still success.
    let o = ferry(&[
        "status",
        "ffff",
        "--json",
        "--config",
        p.src_config.to_str().unwrap(),
    ]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), ""));

    // cancel --config reaches the node with the config's token: the answer
    // is "nothing active", not a refused token.
    let o = ferry(&["cancel", SERVER, "--config", p.src_config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no outgoing transfer"), "{}", err(&o));

    // token --config signs with the config's token.
    let o = ferry(&[
        "token",
        "--server",
        SERVER,
        "--config",
        p.dst_config.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let jwt = out(&o).trim().to_string();
    let claims =
        ferry::jwt::verify_transfer_token(Some(&format!("Bearer {jwt}")), DEST_TOKEN.as_bytes());
    assert!(claims.is_ok(), "{:?}", claims.err());
}

#[test]
fn a_destination_that_already_has_the_server_is_refused_before_the_source_is_asked() {
    let p = pair(true);
    let o = p.transfer(&["--json"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", out(&o), err(&o));
    let result = one_object(&o);
    assert_eq!(result["status"], "refused");
    assert_eq!(result["exit_code"], 3);
    let why = result["error"].as_str().unwrap();
    assert!(
        why.contains("already exists on the destination") && why.contains("nothing was stopped"),
        "{why}"
    );
    assert!(err(&o).contains("already exists"), "{}", err(&o));
    p.source_untouched();
    assert_eq!(
        std::fs::read_to_string(p.dst.server_dir(SERVER).join("old.txt")).unwrap(),
        "stale"
    );

    // Without the check, the source does start, and the destination
    // refuses only once the stream arrives: what the check spares.
    let o = p.transfer(&["--no-check", "--no-progress"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("already exists"), "{}", err(&o));
    let (_, list) = p.src.get("/api/transfers");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[test]
fn a_wrong_token_or_an_unreachable_destination_is_refused_with_exit_three() {
    let p = pair(false);
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-destination-token").unwrap();
    let o = ferry(&[
        "transfer",
        SERVER,
        "--to",
        &p.dst.url(""),
        "--config",
        p.src_config.to_str().unwrap(),
        "--dest-token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", out(&o), err(&o));
    let said = err(&o);
    assert!(
        said.contains("refused the token") && said.contains("--dest-token-file"),
        "{said}"
    );
    assert!(said.contains("nothing was stopped or sent"), "{said}");
    p.source_untouched();

    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let o = p.transfer_to(&closed, &["--json"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", out(&o), err(&o));
    let result = one_object(&o);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the destination"),
        "{result}"
    );
    p.source_untouched();

    // A usage mistake stays exit 2 and is not a result object.
    let o = ferry(&["transfer", SERVER, "--to", "nope", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(out(&o), "");
    // --config and --token-file name the token twice.
    let o = ferry(&["status", "--config", "x.yml", "--token-file", "t"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("exclude each other"), "{}", err(&o));
}

impl Pair {
    fn transfer_to(&self, to: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "transfer",
            SERVER,
            "--to",
            to,
            "--config",
            self.src_config.to_str().unwrap(),
            "--dest-token-file",
            self.dst_token_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ferry(&args)
    }
}

#[test]
fn a_destination_without_room_is_refused_when_the_cli_runs_on_the_source() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a small tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("src/volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    make_server_tree(&data); // a little over 3 MiB on disk
    let src = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("src")),
        ..Default::default()
    });
    // The destination's data directory is a 1 MiB tmpfs in the node's own
    // mount namespace (gone when the node exits).
    let dst_root = tmp.path().join("dst");
    let volumes = dst_root.join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let dst = TestNode::start_with(NodeOptions {
        root: Some(dst_root),
        token: Some(DEST_TOKEN.into()),
        launcher: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=1m tmpfs "$1" || exit 97; shift; exec "$@""#,
            "small",
            volumes.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    });
    let (_, system) = dst.get("/api/system");
    let free = system["data_free_bytes"].as_u64().unwrap();
    assert!(free <= 1024 * 1024, "{system}");

    let src_config = config_as_served(&src, &tmp.path().join("src.yml"));
    let dst_token = tmp.path().join("dst.token");
    std::fs::write(&dst_token, DEST_TOKEN).unwrap();
    let o = ferry(&[
        "transfer",
        SERVER,
        "--json",
        "--to",
        &dst.url(""),
        "--config",
        src_config.to_str().unwrap(),
        "--dest-token-file",
        dst_token.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", out(&o), err(&o));
    let result = one_object(&o);
    let why = result["error"].as_str().unwrap();
    assert!(
        why.contains("on disk") && why.contains("free in its data directory"),
        "{why}"
    );
    let (_, list) = src.get("/api/transfers");
    assert_eq!(list, serde_json::json!([]), "the source started something");
}
