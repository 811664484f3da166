//! The `ferry` command line: verb dispatch and what the verbs share.
//! `src/main.rs` only hands `argv` to [`run`] and exits with its status.
//!
//! Exit statuses: 0 ok, 1 runtime failure, 2 usage or config error,
//! 3 when `ferry transfer`'s destination check refused (nothing touched),
//! 130 when Ctrl-C cancelled a transfer. The verb table ([`COMMANDS`]) is
//! what the man page and the shell completions are generated from.

pub mod args;
pub mod cancel;
pub mod client;
pub mod completions;
pub mod display;
pub mod helptext;
pub mod manpage;
pub mod precheck;
pub mod preflight;
pub mod render;
pub mod serve;
pub mod signal;
pub mod status;
pub mod token;
pub mod transfer;
pub mod watch;

use args::Usage;

pub const USAGE: &str = "ferry — moves game servers between nodes (Wings-compatible)

Usage:
  ferry serve [--config PATH]            run the node daemon
  ferry serve --dev [--dir DIR] [--port N]
                                         run on the built-in development config
                                         (loopback, data under DIR (./.ferry), no Docker, no panel)
  ferry check-config [--config PATH]     validate a config file and print what it means
  ferry transfer <server> --to URL [--json]
                                         send a server to another node, with a progress bar
  ferry status [<server>] [--json]       list a node's transfers
  ferry cancel <server> [--incoming]     cancel a server's active transfer
  ferry token --server UUID --key-file F
                                         mint a transfer (or websocket) JWT with a node token
  ferry completions bash|zsh|fish        a shell completion script, on stdout
  ferry man                              the manual page (roff), on stdout
  ferry help [<verb>]                    this text, or a verb's own help
  ferry -V, --version                    the version and the commit it was built from

`ferry <verb> --help` explains each verb and its options. The client verbs
(transfer, status, cancel, token) take the node's URL and token from
--config PATH (a node's config.yml), or talk to http://127.0.0.1:8080 with
the token in .ferry/token unless given --node URL and --token-file F.
The config path defaults to /etc/pterodactyl/config.yml
(/etc/pelican/config.yml when only that one exists).";

/// A verb: its `--help` text and the options its parser accepts. The man
/// page and the shell completions are generated from this table.
pub struct Command {
    pub name: &'static str,
    pub help: &'static str,
    pub spec: &'static args::Spec<'static>,
    /// The fixed words its first positional takes, if any (for completion).
    pub words: &'static [&'static str],
}

/// Every verb that has its own `--help`, in the order `ferry help` lists them.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "serve",
        help: serve::SERVE_HELP,
        spec: &serve::SERVE_SPEC,
        words: &[],
    },
    Command {
        name: "check-config",
        help: serve::CHECK_HELP,
        spec: &serve::CHECK_SPEC,
        words: &[],
    },
    Command {
        name: "transfer",
        help: transfer::HELP,
        spec: &transfer::SPEC,
        words: &[],
    },
    Command {
        name: "status",
        help: status::HELP,
        spec: &status::SPEC,
        words: &[],
    },
    Command {
        name: "cancel",
        help: cancel::HELP,
        spec: &cancel::SPEC,
        words: &[],
    },
    Command {
        name: "token",
        help: token::HELP,
        spec: &token::SPEC,
        words: &[],
    },
    Command {
        name: "completions",
        help: completions::HELP,
        spec: &completions::SPEC,
        words: completions::SHELLS,
    },
    Command {
        name: "man",
        help: manpage::HELP,
        spec: &manpage::SPEC,
        words: &[],
    },
];

/// The names of [`COMMANDS`].
pub fn verbs() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.name)
}

/// Why a verb failed; each maps to an exit status and a message.
#[derive(Debug)]
pub enum Fail {
    /// Bad usage: the message plus a pointer to `--help`; exit 2.
    Usage(String),
    /// An invalid config file; exit 2 (SPEC §1).
    Config(String),
    /// Anything that went wrong at run time; exit 1.
    Runtime(String),
}

impl Fail {
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail::Usage(message.into())
    }
}

impl From<Usage> for Fail {
    fn from(u: Usage) -> Fail {
        Fail::Usage(u.0)
    }
}

/// Runs `ferry <args…>` and returns the exit status.
pub fn run(args: &[String]) -> u8 {
    let Some(verb) = args.first().map(String::as_str) else {
        eprintln!("{USAGE}");
        return 2;
    };
    let rest = &args[1..];
    let result = match verb {
        "serve" => serve::serve(rest),
        "check-config" => serve::check_config(rest),
        "transfer" => transfer::run(rest),
        "status" => status::run(rest),
        "cancel" => cancel::run(rest),
        "token" => token::run(rest),
        "completions" => completions::run(rest),
        "man" => manpage::run(rest),
        // `ferry help <verb>` is `ferry <verb> --help`.
        "help" if !rest.is_empty() => {
            let verb = rest[0].as_str();
            if !verbs().any(|v| v == verb) {
                eprintln!("ferry: unknown command `{verb}`\n\n{USAGE}");
                return 2;
            }
            return run(&[verb.to_string(), "--help".to_string()]);
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(0)
        }
        "--version" | "-V" | "version" => {
            println!("ferry {} ({})", crate::VERSION, crate::COMMIT);
            Ok(0)
        }
        other => {
            eprintln!("ferry: unknown command `{other}`\n\n{USAGE}");
            return 2;
        }
    };
    match result {
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(Fail::Usage(message)) => {
            eprintln!("ferry {verb}: {message}\nRun `ferry {verb} --help` for usage.");
            2
        }
        Err(Fail::Config(message)) => {
            eprintln!("ferry: {message}");
            2
        }
        Err(Fail::Runtime(message)) => {
            eprintln!("ferry {verb}: {message}");
            1
        }
    }
}

/// Server arguments are full lowercase uuids, as the panel and the node use them.
pub fn check_uuid(server: &str) -> Result<(), Fail> {
    if crate::server::is_uuid(server) {
        Ok(())
    } else {
        Err(Fail::usage(format!(
            "`{server}` is not a server uuid (36 lowercase hex digits and dashes, like 0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::helptext::Help;
    use super::*;

    /// `--help` is the source of truth for the man page and completions:
    /// every option a verb's parser accepts is in its help, and the help
    /// documents no option the parser would refuse.
    #[test]
    fn every_help_documents_exactly_what_its_parser_accepts() {
        for c in COMMANDS {
            let help = Help::parse(c.help);
            assert_eq!(help.title, format!("ferry {}", c.name));
            assert!(!help.summary.is_empty(), "{}: no summary", c.name);
            let mut documented: Vec<String> = help
                .options()
                .iter()
                .map(|o| o.name.clone())
                .filter(|n| n != "help")
                .collect();
            let mut accepted: Vec<String> = c
                .spec
                .values
                .iter()
                .chain(c.spec.switches)
                .map(|s| s.to_string())
                .collect();
            documented.sort();
            accepted.sort();
            assert_eq!(documented, accepted, "{}", c.name);
            for o in help.options() {
                let takes = c.spec.values.contains(&o.name.as_str());
                assert_eq!(o.value.is_some(), takes, "{} --{}", c.name, o.name);
            }
            assert!(
                USAGE.contains(&format!("ferry {}", c.name)),
                "`ferry help` lacks {}",
                c.name
            );
        }
    }
}
