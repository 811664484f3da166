//! `ferry serve` (the daemon, on a config file or the built-in development
//! config) and `ferry check-config` (validate a file and say what it means).

use std::path::{Path, PathBuf};

use super::args::{Args, Spec};
use super::Fail;
use crate::config::{self, Config};

pub const SERVE_HELP: &str = "ferry serve — run the node daemon

Usage:
  ferry serve [--config PATH]
  ferry serve --dev [--dir DIR] [--port N]

Options:
  --config PATH   the Wings-compatible config.yml [default: /etc/pterodactyl/config.yml]
  --dev           the built-in development config: loopback, data under DIR,
                  no Docker, no panel; the token is kept in DIR/token
  --dir DIR       development state and data [default: .ferry]
  --port N        development port [default: 8080]
  -h, --help      this text

SIGTERM or Ctrl-C stops the daemon; active transfers get 30 s to finish.
SIGHUP reopens the audit log (for logrotate) and re-reads the config file:
`debug` applies at once, other changes at the next restart.";

pub const CHECK_HELP: &str = "ferry check-config — validate a config file and print what it means

Usage:
  ferry check-config [--config PATH]

Options:
  --config PATH   the file [default: /etc/pterodactyl/config.yml]
  -h, --help      this text

Besides the file itself it checks the node around it: TLS files readable,
the data and state directories writable, the Docker Engine answering (when
system.environment is docker), the panel accepting the node's credentials
(when remote is set). Keys that neither ferry, Wings nor Pelican define are
warned about, with the nearest known key.

Exit status: 0 when all is well, 2 when it is not (each message names the
key and the problem).";

pub const SERVE_SPEC: Spec = Spec {
    values: &["config", "dir", "port"],
    switches: &["dev"],
    max_positionals: 0,
};

pub const CHECK_SPEC: Spec = Spec {
    values: &["config"],
    switches: &[],
    max_positionals: 0,
};

/// A config error exits 2 (SPEC §1). Unknown keys come back to be told
/// once there is somewhere to tell them.
fn load_config(args: &Args) -> Result<(Config, Vec<config::UnknownKey>), Fail> {
    let path = args
        .value("config")
        .map(str::to_string)
        .unwrap_or_else(|| config::default_path().to_string());
    config::load_checked(Path::new(&path)).map_err(|e| Fail::Config(e.to_string()))
}

/// The first local pre-flight failure as an exit-2 config error.
fn local_preflight(c: &Config) -> Result<(), Fail> {
    match super::preflight::local(c).into_iter().next() {
        Some(e) => Err(Fail::Config(e.to_string())),
        None => Ok(()),
    }
}

pub fn serve(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SERVE_SPEC)?;
    if args.help {
        println!("{SERVE_HELP}");
        return Ok(0);
    }
    let (config, unknown) = if args.has("dev") {
        if args.has("config") {
            return Err(Fail::usage("--dev and --config exclude each other"));
        }
        (dev_config(&args)?, Vec::new())
    } else {
        if args.has("dir") || args.has("port") {
            return Err(Fail::usage(
                "--dir and --port only go with --dev (the config file sets the rest)",
            ));
        }
        let loaded = load_config(&args)?;
        local_preflight(&loaded.0)?;
        loaded
    };
    crate::logger::init(config.debug);
    for w in &unknown {
        log::warn!("{w}");
    }
    let reload_from = (!args.has("dev"))
        .then(|| PathBuf::from(args.value("config").unwrap_or(config::default_path())));
    let code = crate::daemon::serve_reloading(config, reload_from);
    // The last lines ("stopped") are still queued for stderr.
    log::logger().flush();
    Ok(code)
}

/// The development config: the token is kept in `<dir>/token` across runs.
fn dev_config(args: &Args) -> Result<Config, Fail> {
    let dir = PathBuf::from(args.value("dir").unwrap_or(".ferry"));
    let port: u16 = match args.value("port") {
        Some(p) => p
            .parse()
            .map_err(|_| Fail::usage(format!("--port: `{p}` is not a port number")))?,
        None => 8080,
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fail::Runtime(format!("cannot create {}: {e}", dir.display())))?;
    let token_file = dir.join("token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes)
                .map_err(|e| Fail::Runtime(format!("no randomness for a token: {e}")))?;
            let token = hex::encode(bytes);
            write_private(&token_file, &token).map_err(Fail::Runtime)?;
            token
        }
    };
    let dir = std::fs::canonicalize(&dir)
        .map_err(|e| Fail::Runtime(format!("{}: {e}", dir.display())))?;
    println!("ferry development node");
    println!("  address: http://127.0.0.1:{port}");
    println!("  token:   {token}   (also in {})", token_file.display());
    println!("  data:    {}", dir.join("volumes").display());
    println!(
        "  try:     curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/api/system"
    );
    Ok(config::development(&dir, &token, port))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn check_config(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &CHECK_SPEC)?;
    if args.help {
        println!("{CHECK_HELP}");
        return Ok(0);
    }
    let (c, unknown) = load_config(&args)?;
    for w in &unknown {
        eprintln!("warning: {w}");
    }
    let mut failures = super::preflight::local(&c);
    failures.extend(super::preflight::remote(&c));
    if let Some(first) = failures.first() {
        for f in &failures[1..] {
            eprintln!("ferry: {f}");
        }
        return Err(Fail::Config(first.to_string()));
    }
    let t = &c.system.transfers;
    let threads = if t.compression_threads == 0 {
        "one per core".to_string()
    } else {
        t.compression_threads.to_string()
    };
    println!("config ok");
    // `[::1]:8080`, not the ambiguous `::1:8080`.
    let listen = match c.api.host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, c.api.port).to_string(),
        Err(_) => format!("{}:{}", c.api.host, c.api.port),
    };
    println!(
        "  listen:      {listen}{}",
        if c.api.ssl.is_some() { " (TLS)" } else { "" }
    );
    println!(
        "  panel:       {}",
        if c.standalone() {
            "none (standalone)"
        } else {
            &c.remote
        }
    );
    println!("  data:        {}", c.system.data.display());
    println!("  state:       {}", c.system.state_dir().display());
    println!("  environment: {:?}", c.system.environment);
    println!(
        "  docker:      {} (network {})",
        c.docker.socket.display(),
        c.docker.network
    );
    println!(
        "  transfers:   level {}, {threads} thread(s), upload cap {}, download cap {}, stop timeout {}s",
        t.compression_level,
        cap(t.upload_limit),
        cap(t.download_limit),
        t.stop_timeout.as_secs()
    );
    Ok(0)
}

fn cap(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "none".into()
    } else {
        format!("{} MiB/s", bytes_per_sec / (1024 * 1024))
    }
}
