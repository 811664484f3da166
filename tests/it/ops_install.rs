//! `make install` into a temporary root (DESTDIR), as a packager or an
//! operator runs it: the files land where systemd, man and the shells look
//! for them, `systemd-analyze verify` accepts the unit, the completion
//! script loads in bash and completes, the man page renders. And the
//! unit's capability set is enough for a real transfer: two nodes run
//! under `setpriv` with exactly the unit's `CapabilityBoundingSet=` and
//! `NoNewPrivileges=`, and the destination chowns what it receives.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::node::{make_server_tree, NodeOptions, TestNode};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `make install DESTDIR=<dest> BIN=<the test binary> <extra…>`: BIN keeps
/// the test from building a release binary.
fn make_install(dest: &Path, extra: &[&str]) -> Output {
    let out = Command::new("make")
        .current_dir(repo())
        .arg("--no-print-directory")
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BIN={}", env!("CARGO_BIN_EXE_ferry")))
        .args(extra)
        .output()
        .expect("make");
    assert!(out.status.success(), "make install: {}", text(&out));
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn make_install_lays_out_the_files_and_the_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    make_install(&dest, &[]);
    let prefix = dest.join("usr/local");
    let expected = [
        ("bin/ferry", 0o755),
        ("lib/systemd/system/ferry.service", 0o644),
        ("share/man/man1/ferry.1", 0o644),
        ("share/bash-completion/completions/ferry", 0o644),
        ("share/zsh/site-functions/_ferry", 0o644),
        ("share/fish/vendor_completions.d/ferry.fish", 0o644),
    ];
    for (file, want) in expected {
        assert_eq!(mode(&prefix.join(file)), want, "{file}");
    }
    // Nothing outside PREFIX.
    let top: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec!["usr"]);

    // The installed binary is the one given and runs.
    let v = Command::new(prefix.join("bin/ferry"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(text(&v).starts_with("ferry "), "{}", text(&v));

    // The unit names the binary where it will be, not where it was built.
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/ferry.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/ferry serve\n"),
        "{unit}"
    );
    assert!(!unit.contains('@'), "unsubstituted placeholder: {unit}");

    // systemd-analyze checks that ExecStart exists and that
    // Documentation=man:ferry(1) opens, so point both into the temp root.
    let check = tmp.path().join("check");
    std::fs::create_dir_all(&check).unwrap();
    let relocated = unit.replace(
        "ExecStart=/usr/local/bin/ferry",
        &format!("ExecStart={}", prefix.join("bin/ferry").display()),
    );
    std::fs::write(check.join("ferry.service"), relocated).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(check.join("ferry.service"))
        .env("MANPATH", prefix.join("share/man"))
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let said = text(&out);
    assert!(out.status.success(), "verify failed: {said}");
    // A directive systemd does not understand is only a warning; none allowed.
    assert!(
        !said.contains("ferry.service:"),
        "verify warned about the unit: {said}"
    );

    // The same check fails on a broken unit, so the above means something.
    std::fs::write(
        check.join("broken.service"),
        "[Service]\nExecStart=/no/such/ferry serve\n",
    )
    .unwrap();
    let broken = Command::new("systemd-analyze")
        .arg("verify")
        .arg(check.join("broken.service"))
        .output()
        .unwrap();
    assert!(!broken.status.success(), "{}", text(&broken));
}

#[test]
fn prefix_moves_every_path_and_the_units_execstart() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    make_install(&dest, &["PREFIX=/opt/ferry"]);
    let unit =
        std::fs::read_to_string(dest.join("opt/ferry/lib/systemd/system/ferry.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/ferry/bin/ferry serve\n"),
        "{unit}"
    );
    assert!(dest.join("opt/ferry/bin/ferry").is_file());
    assert!(dest.join("opt/ferry/share/man/man1/ferry.1").is_file());
    assert!(!dest.join("usr").exists());
}

/// Runs bash completion for the words typed so far (the last is the one
/// being completed) and returns what it offers.
fn complete(script: &Path, cwd: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}' && COMP_WORDS=({}) && COMP_CWORD={} && _ferry && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(&program)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_installed_completions_load_and_complete_verbs_options_and_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    make_install(&dest, &[]);
    let bash = dest.join("usr/local/share/bash-completion/completions/ferry");
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!("source '{}' && complete -p ferry", bash.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "complete -F _ferry ferry"
    );

    assert_eq!(complete(&bash, tmp.path(), &["ferry", "tr"]), ["transfer"]);
    assert_eq!(
        complete(&bash, tmp.path(), &["ferry", "transfer", "--js"]),
        ["--json"]
    );
    assert_eq!(
        complete(&bash, tmp.path(), &["ferry", "status", "--con"]),
        ["--config"]
    );
    assert_eq!(
        complete(&bash, tmp.path(), &["ferry", "completions", "z"]),
        ["zsh"]
    );
    // A path option completes file names; a URL option offers nothing.
    std::fs::write(tmp.path().join("config.yml"), "").unwrap();
    assert_eq!(
        complete(&bash, tmp.path(), &["ferry", "serve", "--config", "con"]),
        ["config.yml"]
    );
    assert!(complete(&bash, tmp.path(), &["ferry", "transfer", "--to", "con"]).is_empty());

    // zsh and fish, when this machine has them, at least parse the scripts.
    for (shell, file, flag) in [
        ("zsh", "share/zsh/site-functions/_ferry", "-n"),
        (
            "fish",
            "share/fish/vendor_completions.d/ferry.fish",
            "--no-execute",
        ),
    ] {
        if Command::new(shell).arg("-c").arg("true").output().is_ok() {
            let out = Command::new(shell)
                .arg(flag)
                .arg(dest.join("usr/local").join(file))
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {}", text(&out));
        }
    }
}

#[test]
fn the_installed_man_page_renders_every_verb() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    make_install(&dest, &[]);
    let page = dest.join("usr/local/share/man/man1/ferry.1");
    // groff with every warning on: a roff mistake shows here.
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff (Debian's groff-base)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff: {}",
        text(&out)
    );
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("PAGER", "cat")
        .output()
        .expect("man (Debian's man-db)");
    assert!(out.status.success(), "{}", text(&out));
    // Not a terminal: man-db strips the bold and underline itself.
    let plain = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "NAME",
        "ferry - moves game servers between nodes",
        "SYNOPSIS",
        "EXIT STATUS",
    ] {
        assert!(plain.contains(needle), "no `{needle}` in:\n{plain}");
    }
    for verb in [
        "serve",
        "check-config",
        "transfer",
        "status",
        "cancel",
        "token",
    ] {
        assert!(plain.contains(&format!("ferry {verb}")), "no {verb}");
    }
}

/// The unit's `CapabilityBoundingSet=` as `setpriv --bounding-set` wants it.
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(repo().join("dist/ferry.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    assert!(unit.contains("\nNoNewPrivileges=yes\n"));
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

/// `setpriv` keeping only `caps` (`-all,+chown,…`), as systemd would.
fn launcher_with(caps: &str) -> Vec<String> {
    // The inheritable and ambient sets are emptied too: only the
    // bounding set remains, as under systemd with AmbientCapabilities=.
    [
        "setpriv",
        "--no-new-privs",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        &format!("--bounding-set={caps}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn the_units_capability_set_is_enough_to_send_receive_and_chown() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to drop capabilities and chown");
        return;
    }
    const SERVER: &str = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    let caps = unit_capabilities();
    let launcher = launcher_with(&caps);

    let tmp = tempfile::tempdir().unwrap();
    let src_root = tmp.path().join("src");
    let data = src_root.join("volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    make_server_tree(&data);
    // The container's user owns the files, some unreadable to others: the
    // source reads them through CAP_DAC_READ_SEARCH / CAP_DAC_OVERRIDE.
    std::fs::create_dir_all(data.join("private")).unwrap();
    std::fs::write(data.join("private/ops.json"), "[]").unwrap();
    for (path, m) in [
        ("private/ops.json", 0o600),
        ("private", 0o700),
        ("secret.key", 0o600),
    ] {
        let p = data.join(path);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        std::os::unix::fs::lchown(&p, Some(4321), Some(4321)).unwrap();
    }
    let src = TestNode::start_with(NodeOptions {
        root: Some(src_root),
        launcher: launcher.clone(),
        ..Default::default()
    });
    let dst = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("dst")),
        launcher,
        system_yaml: "  user:\n    uid: 988\n    gid: 988\n".into(),
        ..Default::default()
    });
    // The node really runs with the reduced set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", dst.pid())).unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    // linux/capability.h: CHOWN 0, DAC_OVERRIDE 1, DAC_READ_SEARCH 2,
    // FOWNER 3, NET_BIND_SERVICE 10, SYS_NICE 23.
    let wanted: u64 = [0u32, 1, 2, 3, 10, 23].iter().map(|c| 1u64 << c).sum();
    assert_eq!(bnd, wanted, "CapBnd of the node: {bnd:x}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    let dst_token = tmp.path().join("dst.token");
    std::fs::write(&dst_token, &dst.token).unwrap();
    let src_token = tmp.path().join("src.token");
    std::fs::write(&src_token, &src.token).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["transfer", SERVER, "--json"])
        .arg("--node")
        .arg(src.url(""))
        .arg("--to")
        .arg(dst.url(""))
        .arg("--token-file")
        .arg(&src_token)
        .arg("--dest-token-file")
        .arg(&dst_token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsource log:\n{}\ndestination log:\n{}",
        text(&out),
        src.log_text(),
        dst.log_text()
    );
    let arrived = dst.server_dir(SERVER);
    for path in [
        "private/ops.json",
        "private",
        "secret.key",
        "server.properties",
        "world/region/r.0.0.mca",
    ] {
        let m = std::fs::symlink_metadata(arrived.join(path)).unwrap();
        assert_eq!((m.uid(), m.gid()), (988, 988), "{path}");
    }
    assert_eq!(mode(&arrived.join("private/ops.json")), 0o600);
    assert_eq!(
        std::fs::read_to_string(arrived.join("private/ops.json")).unwrap(),
        "[]"
    );
    // With CAP_SYS_NICE the API threads got their raised priority.
    assert!(
        !dst.log_text().contains("keep the default priority"),
        "{}",
        dst.log_text()
    );
    // The source's copy is untouched, owner and all.
    assert_eq!(
        std::fs::metadata(data.join("secret.key")).unwrap().uid(),
        4321
    );

    // And the set is not larger than it looks: without CAP_CHOWN the
    // same transfer fails on the destination and leaves nothing there.
    let without_chown = TestNode::start_with(NodeOptions {
        root: Some(tmp.path().join("dst2")),
        launcher: launcher_with(&caps.replace("+chown,", "")),
        system_yaml: "  user:\n    uid: 988\n    gid: 988\n".into(),
        ..Default::default()
    });
    let token2 = tmp.path().join("dst2.token");
    std::fs::write(&token2, &without_chown.token).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["transfer", SERVER, "--json", "--node"])
        .arg(src.url(""))
        .arg("--to")
        .arg(without_chown.url(""))
        .arg("--token-file")
        .arg(&src_token)
        .arg("--dest-token-file")
        .arg(&token2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    assert!(!without_chown.server_dir(SERVER).exists());
}

/// Runs the rest of the command line the way `ProtectSystem=strict` plus
/// `ReadWritePaths=<root>` leave the file system: in a private mount
/// namespace, every mount read-only except `<root>` (and /proc, /sys,
/// /dev, which systemd leaves to other directives).
fn sandbox_launcher(root: &Path) -> Vec<String> {
    const SCRIPT: &str = r#"r="$1"; shift
mount --bind "$r" "$r" || exit 97
for m in $(findmnt -rn -o TARGET); do
  case "$m" in "$r"|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;;
    *) mount -o remount,bind,ro "$m" 2>/dev/null ;; esac
done
touch /ferry-sandbox-probe 2>/dev/null && exit 98
exec "$@""#;
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        SCRIPT,
        "sandbox",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([root.display().to_string()])
    .collect()
}

#[test]
fn under_the_units_read_only_file_system_ferry_transfers_and_reaches_docker() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a mount namespace");
        return;
    }
    const SERVER: &str = "4d2e3f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("src/volumes").join(SERVER);
    std::fs::create_dir_all(&data).unwrap();
    make_server_tree(&data);
    // Everything the node writes (state, data, staging, backups, logs) is
    // under its root in the test config, as under /var/lib/pterodactyl.
    let node = |name: &str| {
        let root = tmp.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        TestNode::start_with(NodeOptions {
            root: Some(root.clone()),
            launcher: sandbox_launcher(&root),
            ..Default::default()
        })
    };
    let src = node("src");
    let dst = node("dst");
    // The node really cannot write outside its root.
    let probe = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", dst.pid()))
        .args(["touch", "/var/tmp/ferry-sandbox-probe"])
        .output()
        .unwrap();
    assert!(!probe.status.success(), "the sandbox is writable");
    assert!(
        text(&probe).contains("Read-only file system"),
        "{}",
        text(&probe)
    );

    let token = tmp.path().join("token");
    std::fs::write(&token, &src.token).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["transfer", SERVER, "--json", "--node"])
        .arg(src.url(""))
        .arg("--to")
        .arg(dst.url(""))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsource:\n{}\ndestination:\n{}",
        text(&out),
        src.log_text(),
        dst.log_text()
    );
    assert!(dst
        .server_dir(SERVER)
        .join("world/region/r.0.0.mca")
        .is_file());
    assert!(dst.root.join("root/ferry/audit.log").is_file());

    // Docker through its socket on a read-only mount: a docker node pings
    // the Engine at start and exits when it cannot.
    let socket = ferry::environment::docker::socket_from_env(Path::new("/var/run/docker.sock"))
        .expect("DOCKER_HOST must be unix://");
    let reachable = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    if !reachable {
        if std::env::var("FERRY_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!(
                "FERRY_REQUIRE_DOCKER=1 but {} does not answer",
                socket.display()
            );
        }
        eprintln!(
            "skipping the Docker half: no Engine at {}",
            socket.display()
        );
        return;
    }
    let root = tmp.path().join("docker");
    std::fs::create_dir_all(&root).unwrap();
    let docker = TestNode::start_with(NodeOptions {
        root: Some(root.clone()),
        environment: Some("docker".into()),
        docker_socket: Some(socket.display().to_string()),
        launcher: sandbox_launcher(&root),
        ..Default::default()
    });
    assert!(
        docker.wait_log("docker: engine", std::time::Duration::from_secs(5)),
        "{}",
        docker.log_text()
    );
    let (status, _) = docker.get("/api/servers");
    assert_eq!(status, 200, "{}", docker.log_text());
}
