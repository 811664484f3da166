//! Which certificate authorities outgoing HTTPS trusts (the panel,
//! destination nodes, the CLI talking to a node): the system's, found the
//! way Go's `crypto/x509` finds them, since Wings trusts those and an
//! operator with a private CA installed it there: `SSL_CERT_FILE` or the
//! first distribution bundle that exists, plus every PEM file in
//! `SSL_CERT_DIR`. Mozilla's bundled roots only when the system has none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Bundle files, in Go's order.
const BUNDLE_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
/// A bundle larger than this is not a certificate bundle.
const MAX_BUNDLE: u64 = 16 << 20;

/// TLS settings for an HTTPS client: ureq's defaults with these roots.
pub fn tls_config() -> TlsConfig {
    TlsConfig::builder().root_certs(root_certs()).build()
}

/// TLS settings for a client of `url`: the system's roots only when it
/// speaks HTTPS (its redirects are not followed). Reading them costs tens
/// of milliseconds and about a MiB of memory (a few hundred files,
/// parsed), which a plain-HTTP transfer between nodes never needs.
pub fn tls_config_for(url: &str) -> TlsConfig {
    if url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        tls_config()
    } else {
        TlsConfig::default()
    }
}

/// The roots for every HTTPS client in this process (read once).
pub fn root_certs() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default();
            load(file.as_deref(), &dirs)
        })
        .clone()
}

/// `file` (else the first bundle file that exists) and the PEM files in
/// `dirs`; Mozilla's roots when none of them holds a certificate.
fn load(file: Option<&Path>, dirs: &[PathBuf]) -> RootCerts {
    let mut certs = Vec::new();
    let mut sources = Vec::new();
    let bundle = file
        .map(Path::to_path_buf)
        .or_else(|| BUNDLE_FILES.iter().map(PathBuf::from).find(|p| p.is_file()));
    if let Some(path) = bundle {
        if add_file(&path, &mut certs) > 0 {
            sources.push(path.display().to_string());
        }
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            log::warn!("TLS: cannot read SSL_CERT_DIR {}", dir.display());
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        let files = paths
            .iter()
            .filter(|p| p.is_file())
            .filter(|p| add_file(p, &mut certs) > 0)
            .count();
        if files > 0 {
            sources.push(format!("{files} files in {}", dir.display()));
        }
    }
    // The bundle and the directory usually hold the same certificates.
    let mut seen = std::collections::HashSet::new();
    certs.retain(|c| seen.insert(c.der().to_vec()));
    if certs.is_empty() {
        log::info!(
            "TLS: no system certificate authorities found; trusting Mozilla's bundled roots"
        );
        return RootCerts::WebPki;
    }
    log::debug!(
        "TLS: trusting {} certificate authorities from {}",
        certs.len(),
        sources.join(", ")
    );
    RootCerts::Specific(Arc::new(certs))
}

/// Adds the certificates of one PEM file; returns how many.
fn add_file(path: &Path, certs: &mut Vec<Certificate<'static>>) -> usize {
    if std::fs::metadata(path).map_or(true, |m| m.len() > MAX_BUNDLE) {
        log::warn!(
            "TLS: {} is unreadable or too large for a certificate bundle; skipped",
            path.display()
        );
        return 0;
    }
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            log::warn!("TLS: cannot read {}: {e}", path.display());
            return 0;
        }
    };
    let before = certs.len();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c.to_owned()),
            Ok(_) => {}
            Err(e) => {
                log::warn!(
                    "TLS: {}: {e}; the rest of the file is skipped",
                    path.display()
                );
                break;
            }
        }
    }
    certs.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM_A: &str = "-----BEGIN CERTIFICATE-----\nMIIBczCCARmgAwIBAgIUUFAkR0oy5Ft3wIu3yiVYOwnfnWkwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";

    #[test]
    fn an_explicit_file_and_a_directory_are_read_and_nothing_falls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bundle.pem");
        std::fs::write(&file, format!("{PEM_A}{PEM_A}")).unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("one.pem"), PEM_A).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a certificate").unwrap();
        match load(Some(&file), std::slice::from_ref(&dir)) {
            // The same certificate three times, kept once.
            RootCerts::Specific(certs) => assert_eq!(certs.len(), 1),
            _ => panic!("expected the file's and the directory's certificates"),
        }
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(load(Some(&empty), &[]), RootCerts::WebPki));
        let missing = tmp.path().join("missing.pem");
        assert!(matches!(load(Some(&missing), &[]), RootCerts::WebPki));
    }

    #[test]
    fn only_an_https_url_gets_the_system_roots() {
        // Plain HTTP: ureq's defaults, nothing read (never used).
        let plain = tls_config_for("http://10.0.0.2:8080/api/transfers");
        assert!(matches!(plain.root_certs(), RootCerts::WebPki));
        // HTTPS, any case: the process's roots, whatever this machine has.
        for url in ["https://node.example/api/transfers", "HTTPS://node.example"] {
            let config = tls_config_for(url);
            assert_eq!(
                std::mem::discriminant(config.root_certs()),
                std::mem::discriminant(&root_certs()),
                "{url}"
            );
        }
    }
}
