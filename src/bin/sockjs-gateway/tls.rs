//! `--tls-cert`/`--tls-key` (or the file's `[tls]`): the rustls server
//! configuration, with the ring provider only.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::settings::TlsFiles;

/// The server configuration for these PEM files; a refusal names the file.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let chain = certificate_chain(&files.cert)?;
    let key = private_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            format!(
                "{} and {}: not a usable certificate and key: {error}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    // ALPN is set by tls_listener.rs: `h2` then `http/1.1`, HTTP/2 for the
    // HTTP transports, HTTP/1.1 for WebSocket clients, which offer nothing
    // else (actix has no WebSocket over HTTP/2).
    Ok(config)
}

fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let refuse = |error: pem::Error| refusal(path, "certificate", error);
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(refuse)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(refuse)?;
    if chain.is_empty() {
        return Err(refusal(path, "certificate", pem::Error::NoItemsFound));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| refusal(path, "private key", error))
}

fn refusal(path: &Path, what: &str, error: pem::Error) -> String {
    let path = path.display();
    match error {
        pem::Error::Io(error) => format!("{path}: cannot read the TLS {what}: {error}"),
        pem::Error::NoItemsFound => format!("{path}: no PEM {what} in it"),
        error => format!("{path}: not a PEM {what}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let missing = server_config(&files("/nonexistent/cert.pem", "/nonexistent/key.pem"));
        assert!(missing
            .unwrap_err()
            .starts_with("/nonexistent/cert.pem: cannot read the TLS certificate"),);
        let empty = server_config(&files("/dev/null", "/dev/null")).unwrap_err();
        assert_eq!(empty, "/dev/null: no PEM certificate in it");
    }
}
