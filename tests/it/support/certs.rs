//! Test certificates: a throwaway CA and a leaf for `localhost` and
//! 127.0.0.1 signed by it, made with the openssl CLI.

/// A test CA and a `localhost` leaf signed by it, made with the openssl CLI
/// (installed with apt-get when missing). `None` (with the reason printed)
/// only when openssl can't be had.
pub fn make_certs(
    dir: &std::path::Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use std::process::{Command, Stdio};
    let have = |_: ()| {
        Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have(()) {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "openssl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !have(()) {
            eprintln!("SKIPPED: the openssl CLI is not available and could not be installed");
            return None;
        }
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ferry test CA",
    ]);
    run(&ca_args);
    let mut leaf_args = vec!["req"];
    leaf_args.extend(ec);
    leaf_args.extend([
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&leaf_args);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Some((
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    ))
}
