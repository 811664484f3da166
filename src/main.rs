//! The `ferry` binary: a thin command-line front over the library.
//!
//! Verbs: `serve`, `check-config`, `token` (more arrive with the CLI issue).
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferry::config::{self, Config};

const USAGE: &str = "ferry — moves game servers between nodes (Wings-compatible)

Usage:
  ferry serve [--config PATH]            run the node daemon
  ferry serve --dev [--dir DIR] [--port N]
                                         run on the built-in development config
                                         (loopback, data under DIR (./.ferry), no Docker, no panel)
  ferry check-config [--config PATH]     validate a config file and print what it means
  ferry token --server UUID --key-file F [--ttl SECONDS] [--websocket PERMISSIONS]
                                         mint a transfer (or websocket) JWT with a node token
  ferry help                             this text

The config path defaults to /etc/pterodactyl/config.yml.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(verb) = args.first().map(String::as_str) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let code = match verb {
        "serve" => serve(rest),
        "check-config" => check_config(rest),
        "token" => token(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            0
        }
        "--version" | "version" => {
            println!("ferry {}", ferry::VERSION);
            0
        }
        other => {
            eprintln!("ferry: unknown command `{other}`\n\n{USAGE}");
            2
        }
    };
    ExitCode::from(code as u8)
}

/// Flag parser: `--name value` pairs and bare `--switch`es.
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String], switches: &[&str]) -> Result<Flags, String> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`"));
            };
            if switches.contains(&name) {
                pairs.push((name.to_string(), None));
            } else {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                pairs.push((name.to_string(), Some(value.clone())));
            }
        }
        Ok(Flags { pairs })
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

fn usage_error(message: &str) -> i32 {
    eprintln!("ferry: {message}\nRun `ferry help` for usage.");
    2
}

fn load_config(flags: &Flags) -> Result<Config, i32> {
    let path = flags.value("config").unwrap_or(config::DEFAULT_PATH);
    config::load(Path::new(path)).map_err(|e| {
        eprintln!("ferry: {e}");
        2
    })
}

fn serve(args: &[String]) -> i32 {
    let flags = match Flags::parse(args, &["dev"]).and_then(|f| {
        f.check_known(&["config", "dev", "dir", "port"])?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let config = if flags.has("dev") {
        match dev_config(&flags) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ferry: {e}");
                return 1;
            }
        }
    } else {
        match load_config(&flags) {
            Ok(c) => c,
            Err(code) => return code,
        }
    };
    ferry::logger::init(config.debug);
    ferry::daemon::serve(config)
}

/// The development config: token kept in `<dir>/token` across runs.
fn dev_config(flags: &Flags) -> Result<Config, String> {
    let dir = PathBuf::from(flags.value("dir").unwrap_or(".ferry"));
    let port: u16 = match flags.value("port") {
        Some(p) => p
            .parse()
            .map_err(|_| format!("--port: `{p}` is not a port number"))?,
        None => 8080,
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let token_file = dir.join("token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
            let token = hex::encode(bytes);
            write_private(&token_file, &token)?;
            token
        }
    };
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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

fn check_config(args: &[String]) -> i32 {
    let flags = match Flags::parse(args, &[]).and_then(|f| {
        f.check_known(&["config"])?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let c = match load_config(&flags) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let t = &c.system.transfers;
    println!("config ok");
    println!(
        "  listen:      {}:{}{}",
        c.api.host,
        c.api.port,
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
        "  transfers:   level {}, {} thread(s), upload cap {}, download cap {}, stop timeout {}s",
        t.compression_level,
        if t.compression_threads == 0 {
            "one per core".to_string()
        } else {
            t.compression_threads.to_string()
        },
        cap(t.upload_limit),
        cap(t.download_limit),
        t.stop_timeout.as_secs()
    );
    0
}

fn cap(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "none".into()
    } else {
        format!("{} MiB/s", bytes_per_sec / (1024 * 1024))
    }
}

fn token(args: &[String]) -> i32 {
    let flags = match Flags::parse(args, &[]).and_then(|f| {
        f.check_known(&["server", "key-file", "ttl", "websocket"])?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let Some(server) = flags.value("server") else {
        return usage_error("token needs --server UUID");
    };
    if !ferry::server::is_uuid(server) {
        return usage_error(&format!(
            "--server: `{server}` is not a lowercase server uuid"
        ));
    }
    let Some(key_file) = flags.value("key-file") else {
        return usage_error("token needs --key-file F (a file holding the node token)");
    };
    let key = match std::fs::read_to_string(key_file) {
        Ok(k) => k.trim().to_string(),
        Err(e) => {
            eprintln!("ferry: cannot read {key_file}: {e}");
            return 1;
        }
    };
    let ttl = match flags.value("ttl").map(str::parse::<u64>) {
        None => 900,
        Some(Ok(t)) => t,
        Some(Err(_)) => return usage_error("--ttl must be a number of seconds"),
    };
    let ttl = std::time::Duration::from_secs(ttl);
    let jwt = match flags.value("websocket") {
        Some(perms) => {
            let perms: Vec<&str> = perms.split(',').filter(|p| !p.is_empty()).collect();
            ferry::jwt::mint_websocket_token(key.as_bytes(), server, &perms, ttl)
        }
        None => ferry::jwt::mint_transfer_token(key.as_bytes(), server, ttl),
    };
    println!("{jwt}");
    0
}
