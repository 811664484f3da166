//! TLS listener configuration: PEM certificate chain and private key into a
//! rustls `ServerConfig` (ring provider), with errors that name the file.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsFiles;

fn pem_error(what: &str, path: &Path, e: pem::Error) -> io::Error {
    let kind = match &e {
        pem::Error::Io(io) => io.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    let detail = match e {
        pem::Error::NoItemsFound => format!("no PEM {what} found in the file"),
        other => other.to_string(),
    };
    io::Error::new(
        kind,
        format!("TLS {what} file {}: {detail}", path.display()),
    )
}

/// Which of the two configured files a TLS problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    /// Also a key that does not belong to the certificate.
    Key,
}

pub(crate) fn load(files: &TlsFiles) -> io::Result<Arc<ServerConfig>> {
    load_named(files).map_err(|(_, e)| e)
}

/// As `load`, saying which file is at fault, so a pre-flight can name the
/// config key (`api.ssl.cert` or `api.ssl.key`).
pub(crate) fn load_named(files: &TlsFiles) -> Result<Arc<ServerConfig>, (TlsFile, io::Error)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_error("certificate", &files.cert, e))
        .and_then(|certs| {
            certs
                .collect::<Result<_, _>>()
                .map_err(|e| pem_error("certificate", &files.cert, e))
        })
        .map_err(|e| (TlsFile::Cert, e))?;
    if certs.is_empty() {
        return Err((
            TlsFile::Cert,
            pem_error("certificate", &files.cert, pem::Error::NoItemsFound),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| (TlsFile::Key, pem_error("private key", &files.key, e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Cert, io::Error::other(e)))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            (
                TlsFile::Key,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "TLS certificate {} and key {} are not usable together: {e}",
                        files.cert.display(),
                        files.key.display()
                    ),
                ),
            )
        })?;
    // Only HTTP/1.1 is spoken; saying so stops h2-capable clients guessing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("key.pem"),
        };
        let err = load(&files).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let junk: PathBuf = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk,
        };
        let err = load(&files).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(load_named(&files).unwrap_err().0, TlsFile::Cert);
        // A directory opens on Linux; reading it is what fails.
        let files = TlsFiles {
            cert: dir.path().to_path_buf(),
            key: dir.path().join("key.pem"),
        };
        assert_eq!(load_named(&files).unwrap_err().0, TlsFile::Cert);
    }
}
