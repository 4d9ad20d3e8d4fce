//! TLS for `wss://` upstreams: rustls with the ring provider, trusting the
//! public roots (webpki-roots) and any certificate authority the operator adds.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

pub(super) fn client_config(extra_roots: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (_added, ignored) = roots.add_parsable_certificates(extra_roots);
    if ignored > 0 {
        log::warn!("relay: {ignored} trusted certificate(s) could not be used");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Every certificate in a PEM file.
pub(super) fn read_pem_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certificates.is_empty() {
        return Err(format!("{path}: no certificate in the file"));
    }
    Ok(certificates)
}
