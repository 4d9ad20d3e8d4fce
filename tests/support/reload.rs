//! Reload test helpers: SIGHUP to the gateway, waiting for its reload log
//! lines, and a TLS client that reports which certificate it was served.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::{poll_until, Server};

/// How long a reload may take to be logged.
pub const RELOAD_BOUND: Duration = Duration::from_secs(10);

impl Server {
    /// Sends SIGHUP to the server process.
    pub fn hang_up(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {}", self.pid());
    }

    /// How many log lines so far contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Waits (bounded) until `text` has been logged `n` times in all, and
    /// returns the last such line.
    pub fn wait_for_log(&self, text: &str, n: usize) -> String {
        poll_until(
            &format!("log line #{n} with {text:?}"),
            RELOAD_BOUND,
            || {
                let log = self.log();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains(text)).collect();
                (lines.len() >= n).then(|| lines[n - 1].to_owned())
            },
        )
    }

    /// Sends SIGHUP and waits for the reload it causes to end (either
    /// way): the line that says how.
    pub fn reload(&self) -> String {
        let ended =
            |server: &Server| server.log_count("reload: done") + server.log_count("reload failed");
        let before = ended(self);
        self.hang_up();
        poll_until("the reload's outcome in the log", RELOAD_BOUND, || {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("reload: done") || l.contains("reload failed"))
                .collect();
            (ended(self) > before).then(|| lines[before].to_owned())
        })
    }
}

/// The DER of the first certificate in a PEM file.
pub fn certificate_der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .expect("a PEM certificate")
        .to_vec()
}

/// The leaf certificate a new TLS connection to `port` is served, or why
/// the handshake failed.
pub async fn served_certificate(port: u16) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("server name");
    let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let tls = tokio::time::timeout(RELOAD_BOUND, connect)
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    served
        .map(|der| der.to_vec())
        .ok_or_else(|| "no certificate served".to_owned())
}

/// Accepts any certificate (signatures still checked): the tests look at
/// which one was served, not whether to trust it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
