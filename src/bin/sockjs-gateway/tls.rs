//! `--tls-cert`/`--tls-key` (or the file's `[tls]`): the rustls server
//! configuration, with the ring provider only. The certificate is served
//! through [`Certificates`], so a reload or a change of the files on disk
//! replaces it for new handshakes while open connections keep theirs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::settings::TlsFiles;

/// The server configuration for these PEM files, and the certificates it
/// serves from; a refusal names the file.
pub fn server_config(files: &TlsFiles) -> Result<(ServerConfig, Arc<Certificates>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Arc::new(Certificates {
        current: RwLock::new(Arc::new(certified_key(files, &provider)?)),
        files: Mutex::new(files.clone()),
        provider: provider.clone(),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    // ALPN is set by tls_listener.rs: `h2` then `http/1.1`, HTTP/2 for the
    // HTTP transports, HTTP/1.1 for WebSocket clients, which offer nothing
    // else (actix has no WebSocket over HTTP/2).
    Ok((config, certificates))
}

/// The certificate and key every new TLS handshake is answered with.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    /// Where they were read from (a reload may name other files).
    files: Mutex<TlsFiles>,
    provider: Arc<CryptoProvider>,
}

/// A certificate and key read and checked, not served yet.
pub struct Loaded {
    files: TlsFiles,
    key: CertifiedKey,
}

impl Loaded {
    /// The files it was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl Certificates {
    /// Reads and checks `files` (the key must match the certificate)
    /// without serving them: a reload changes nothing until all is read.
    pub fn load(&self, files: &TlsFiles) -> Result<Loaded, String> {
        Ok(Loaded {
            files: files.clone(),
            key: certified_key(files, &self.provider)?,
        })
    }

    /// New handshakes get `loaded`. Whether it differs from what was served.
    pub fn serve(&self, loaded: Loaded) -> bool {
        *self.files.lock() = loaded.files;
        let mut current = self.current.write();
        let changed = current.cert != loaded.key.cert;
        *current = Arc::new(loaded.key);
        changed
    }

    fn files(&self) -> TlsFiles {
        self.files.lock().clone()
    }
}

/// How often [`watch`] looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Replaces the served certificate when its files change on disk (their
/// modification time or size, looked at every second), once both read and
/// match: a pair caught half written is tried again on the next change.
pub fn watch(certificates: Arc<Certificates>) {
    let spawned = std::thread::Builder::new()
        .name("tls-watch".into())
        .spawn(move || {
            let mut files = certificates.files();
            let mut seen = stamps(&files);
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                let now_files = certificates.files();
                let now = stamps(&now_files);
                if now_files != files {
                    // A reload named other files: it loaded them already.
                    (files, seen) = (now_files, now);
                    continue;
                }
                if now == seen {
                    continue;
                }
                seen = now;
                match certificates.load(&files) {
                    Ok(loaded) => {
                        if certificates.serve(loaded) {
                            log::info!(
                                "reload: TLS certificate replaced from {} (the files changed)",
                                files.cert.display()
                            );
                        }
                    }
                    Err(error) => log::warn!(
                        "reload: TLS files changed but cannot be used yet, keeping the served certificate: {error}"
                    ),
                }
            }
        });
    if let Err(error) = spawned {
        log::error!("cannot watch the TLS files: {error}");
    }
}

type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &TlsFiles) -> (Stamp, Stamp) {
    let stamp = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    (stamp(&files.cert), stamp(&files.key))
}

/// The certificate chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = certificate_chain(&files.cert)?;
    let key = private_key(&files.key)?;
    let unusable = |error: rustls::Error| {
        format!(
            "{} and {}: not a usable certificate and key: {error}",
            files.cert.display(),
            files.key.display()
        )
    };
    let key = CertifiedKey::from_der(chain, key, provider).map_err(unusable)?;
    // from_der lets a key whose public half it cannot tell pass; a reload
    // must not serve a pair that fails every handshake.
    key.keys_match().map_err(unusable)?;
    Ok(key)
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
            .map(drop)
            .unwrap_err()
            .starts_with("/nonexistent/cert.pem: cannot read the TLS certificate"),);
        let empty = server_config(&files("/dev/null", "/dev/null"))
            .map(drop)
            .unwrap_err();
        assert_eq!(empty, "/dev/null: no PEM certificate in it");
    }
}
