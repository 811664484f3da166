//! Stamps the binary with the commit it is built from, for `ferry -V` and
//! the `ferry_build_info` metric: `FERRY_COMMIT` from the environment (a
//! packager building outside git), else `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_COMMIT");
    // A new commit or checkout changes HEAD or the ref it points at. In a
    // worktree `.git` is a file, so ask git where they are.
    for path in git_watch_paths() {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("FERRY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FERRY_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn git_watch_paths() -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        out.push(format!("{dir}/HEAD"));
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        for p in [
            format!("{common}/{head_ref}"),
            format!("{common}/packed-refs"),
        ] {
            if std::path::Path::new(&p).exists() {
                out.push(p);
            }
        }
    }
    out
}
