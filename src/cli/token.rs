//! `ferry token`: mints a transfer JWT (or a websocket JWT) with a node
//! token, for scripts and for testing a node by hand with curl.

use std::time::Duration;

use super::args::{Args, Spec};
use super::client::read_token;
use super::Fail;

pub const HELP: &str = "ferry token — mint a transfer or websocket JWT with a node token

Usage:
  ferry token --server UUID (--key-file F | --config PATH) [--ttl SECONDS] [--websocket PERMISSIONS]

Options:
  --server UUID            the server the token is for
  --key-file F             a file holding the node token that verifies it
                           (the destination's for a transfer token)
  --config PATH            take that node token from the node's config.yml
  --ttl SECONDS            lifetime [default: 900]
  --websocket PERMISSIONS  mint a websocket token instead, with these
                           comma-separated permissions (e.g. admin.websocket.transfer)
  -h, --help               this text

The token is printed on stdout; a transfer token goes in the panel's body
as \"token\": \"Bearer <jwt>\".";

pub const SPEC: Spec = Spec {
    values: &["server", "key-file", "config", "ttl", "websocket"],
    switches: &[],
    max_positionals: 0,
};

pub fn run(raw: &[String]) -> Result<i32, Fail> {
    let args = Args::parse(raw, &SPEC)?;
    if args.help {
        println!("{HELP}");
        return Ok(0);
    }
    let server = args
        .value("server")
        .ok_or_else(|| Fail::usage("token needs --server UUID"))?;
    super::check_uuid(server)?;
    let ttl = match args.value("ttl").map(str::parse::<u64>) {
        None => 900,
        Some(Ok(t)) if t > 0 => t,
        Some(_) => return Err(Fail::usage("--ttl must be a positive number of seconds")),
    };
    let key = match (args.value("key-file"), args.value("config")) {
        (Some(_), Some(_)) => {
            return Err(Fail::usage(
                "--key-file and --config exclude each other (both name the node token)",
            ))
        }
        (Some(file), None) => read_token(file, "key-file").map_err(Fail::Runtime)?,
        (None, Some(path)) => {
            crate::config::load_checked(std::path::Path::new(path))
                .map_err(|e| Fail::Config(e.to_string()))?
                .0
                .token
        }
        (None, None) => {
            return Err(Fail::usage(
                "token needs --key-file F or --config PATH (where the node token is)",
            ))
        }
    };
    let ttl = Duration::from_secs(ttl);
    let jwt = match args.value("websocket") {
        Some(perms) => {
            let perms: Vec<&str> = perms
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            crate::jwt::mint_websocket_token(key.as_bytes(), server, &perms, ttl)
        }
        None => crate::jwt::mint_transfer_token(key.as_bytes(), server, ttl),
    };
    println!("{jwt}");
    Ok(0)
}
