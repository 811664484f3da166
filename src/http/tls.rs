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

pub(crate) fn load(files: &TlsFiles) -> io::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_error("certificate", &files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("certificate", &files.cert, e))?;
    if certs.is_empty() {
        return Err(pem_error(
            "certificate",
            &files.cert,
            pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_error("private key", &files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TLS certificate {} and key {} are not usable together: {e}",
                    files.cert.display(),
                    files.key.display()
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
    }
}
