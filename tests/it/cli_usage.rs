//! The command line's contract without a node: `--help` on every verb
//! exits 0, usage mistakes exit 2 naming the mistake and pointing at
//! `--help`, and run-time problems exit 1 saying what to do.

use std::process::{Command, Output};

const SERVER: &str = "0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e";

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every verb the binary has.
const VERBS: [&str; 6] = [
    "serve",
    "check-config",
    "transfer",
    "status",
    "cancel",
    "token",
];

#[test]
fn every_verb_has_help_that_exits_zero() {
    for verb in VERBS {
        for flag in ["--help", "-h"] {
            let out = ferry(&[verb, flag]);
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{verb} {flag}: {}",
                text(&out.stderr)
            );
            assert!(
                stdout.contains("Usage:") && stdout.contains(&format!("ferry {verb}")),
                "{verb}: {stdout}"
            );
        }
    }
    // Help wins even over a mistake on the same line.
    assert_eq!(
        ferry(&["transfer", "--bogus", "--help"]).status.code(),
        Some(0)
    );
    let out = ferry(&["help"]);
    assert_eq!(out.status.code(), Some(0));
    for verb in VERBS {
        assert!(
            text(&out.stdout).contains(&format!("ferry {verb}")),
            "help lacks {verb}"
        );
    }
}

#[test]
fn usage_mistakes_exit_two_and_say_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (&["transfer"], "needs the server's uuid"),
        (&["transfer", SERVER], "needs --to"),
        (
            &["transfer", "my-server", "--to", "http://d:8080"],
            "is not a server uuid",
        ),
        (
            &["transfer", SERVER, "--to", "d:8080"],
            "--to: `d:8080` is not an http:// or https:// URL",
        ),
        (
            &["transfer", SERVER, "--to", "http://d:8080", "--bogus"],
            "unknown option --bogus",
        ),
        (&["transfer", SERVER, "--to"], "--to needs a value"),
        (
            &["transfer", SERVER, "--to", "http://d", "--start=yes"],
            "--start takes no value",
        ),
        (
            &["transfer", SERVER, "--to", "http://127.0.0.1:8080"],
            "names the source node itself",
        ),
        (
            &["transfer", SERVER, "--to", "http://d", "--node", "ftp://n"],
            "--node",
        ),
        (&["status", "a", "b"], "unexpected argument `b`"),
        (&["status", "xyz!"], "neither a server uuid nor a prefix"),
        (&["cancel"], "needs the server's uuid"),
        (&["cancel", SERVER, "--reason"], "--reason needs a value"),
        (
            &["cancel", SERVER, "--reason", " "],
            "--reason must not be empty",
        ),
        (&["token", "--key-file", "f"], "needs --server"),
        (
            &[
                "token",
                "--server",
                SERVER,
                "--key-file",
                "f",
                "--ttl",
                "soon",
            ],
            "--ttl",
        ),
        (&["serve", "--port", "1"], "only go with --dev"),
        (
            &["serve", "--dev", "--port", "http"],
            "is not a port number",
        ),
        (&["check-config", "extra"], "unexpected argument `extra`"),
    ];
    for (args, needle) in cases {
        let out = ferry(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` not in {stderr}"
        );
        assert!(
            stderr.contains(&format!("Run `ferry {} --help`", args[0])),
            "{args:?}: {stderr}"
        );
    }
    let out = ferry(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown command `frobnicate`"));
    assert_eq!(ferry(&[]).status.code(), Some(2));
}

#[test]
fn runtime_problems_exit_one_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "some-node-token-0123456789\n").unwrap();
    let token = token.to_str().unwrap();

    // Nothing listens on port 1.
    let out = ferry(&[
        "status",
        "--node",
        "http://127.0.0.1:1",
        "--token-file",
        token,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the node at http://127.0.0.1:1") && stderr.contains("--node"),
        "{stderr}"
    );

    let missing = dir.path().join("nope");
    let out = ferry(&["cancel", SERVER, "--token-file", missing.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the token file") && stderr.contains("--token-file"),
        "{stderr}"
    );

    let out = ferry(
        &[
            "transfer",
            SERVER,
            "--to",
            "http://127.0.0.1:2",
            "--node",
            "http://127.0.0.1:1",
        ]
        .into_iter()
        .chain([
            "--token-file",
            token,
            "--dest-token-file",
            missing.to_str().unwrap(),
        ])
        .collect::<Vec<_>>(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--dest-token-file"), "{stderr}");

    // `token` still mints: three base64url segments.
    let out = ferry(&["token", "--server", SERVER, "--key-file", token]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().split('.').count(), 3);
}
