//! TLS test helpers: a self-signed certificate made for the test (rcgen,
//! ring), written to a temp dir for the gateway's `--tls-cert/--tls-key`,
//! and clients that trust only it: an HTTP/2 client on the `h2` crate and a
//! WSS client on tokio-tungstenite, both over tokio-rustls.
//!
//! Every wait is bounded by [`BOUND`].

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Upper bound on every wait.
pub const BOUND: Duration = Duration::from_secs(10);

/// The name the certificate is for and the client asks for.
pub const HOST: &str = "localhost";

/// A certificate and key for `localhost` and 127.0.0.1 in a temp dir,
/// removed on drop.
pub struct TestCert {
    dir: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    roots: RootCertStore,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let certified =
            rcgen::generate_simple_self_signed(vec![HOST.to_owned(), "127.0.0.1".to_owned()])
                .expect("generate a certificate");
        let dir = crate::support::fresh_temp_dir("tls");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
        let mut roots = RootCertStore::empty();
        roots
            .add(certified.cert.der().clone())
            .expect("trust the test certificate");
        TestCert {
            dir,
            cert_path,
            key_path,
            roots,
        }
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert_path.to_str().expect("UTF-8 temp path"),
            "--tls-key",
            self.key_path.to_str().expect("UTF-8 temp path"),
        ]
    }

    /// A connector trusting only this certificate, offering these ALPN
    /// protocols.
    pub fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to the gateway, handshake done.
    pub async fn connect(&self, port: u16, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = bounded("TCP connect", TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("TCP connect");
        let name = ServerName::try_from(HOST).expect("server name");
        bounded("TLS handshake", self.connector(alpn).connect(name, tcp))
            .await
            .expect("TLS handshake")
    }

    /// An HTTP/2 connection; panics unless ALPN chose `h2`.
    pub async fn h2(&self, port: u16) -> H2 {
        let tls = self.connect(port, &[b"h2", b"http/1.1"]).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the server must choose h2 when the client offers it"
        );
        let (client, connection) = bounded("h2 handshake", h2::client::handshake(tls))
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        H2 { client, port }
    }

    /// A WebSocket over TLS, offering only HTTP/1.1 by ALPN as browsers do
    /// for WebSocket.
    pub async fn wss(&self, port: u16, path: &str) -> Wss {
        let tls = self.connect(port, &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let url = format!("wss://{HOST}:{port}{path}");
        let (ws, response) = bounded(
            "WebSocket handshake",
            tokio_tungstenite::client_async(url, tls),
        )
        .await
        .expect("WebSocket handshake");
        assert_eq!(response.status(), 101);
        Wss(ws)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `future`, or a panic naming `what` after [`BOUND`].
pub async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {BOUND:?}"))
}

/// One HTTP/2 connection; each request is a stream of it.
pub struct H2 {
    client: SendRequest<Bytes>,
    port: u16,
}

/// A response whose body is read as it arrives.
pub struct H2Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: h2::RecvStream,
    /// Received and not yet taken.
    pub buffered: Vec<u8>,
}

impl H2 {
    /// Sends a request (with `body`, if any) and waits for the response head.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> H2Response {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://{HOST}:{}{path}", self.port));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let mut client = bounded("h2 ready", self.client.clone().ready())
            .await
            .expect("h2 connection ready");
        let (response, mut send) = client
            .send_request(request, body.is_none())
            .expect("send request");
        if let Some(body) = body {
            send.send_data(Bytes::copy_from_slice(body), true)
                .expect("send body");
        }
        let response = bounded("h2 response head", response)
            .await
            .expect("h2 response");
        let (head, body) = response.into_parts();
        H2Response {
            status: head.status.as_u16(),
            headers: head.headers,
            body,
            buffered: Vec::new(),
        }
    }

    pub async fn get(&mut self, path: &str) -> H2Response {
        self.request("GET", path, &[], None).await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> H2Response {
        self.request("POST", path, &[], Some(body)).await
    }
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads the next DATA frame into `buffered`; false at the end of the body.
    async fn read_more(&mut self) -> bool {
        match bounded("h2 body data", self.body.data()).await {
            Some(chunk) => {
                let chunk = chunk.expect("h2 body");
                let _ = self.body.flow_control().release_capacity(chunk.len());
                self.buffered.extend_from_slice(&chunk);
                true
            }
            None => false,
        }
    }

    /// Exactly `n` bytes of the body, as soon as they have arrived.
    pub async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            assert!(
                self.read_more().await,
                "body ended after {:?}, {n} bytes expected",
                String::from_utf8_lossy(&self.buffered)
            );
        }
        self.buffered.drain(..n).collect()
    }

    /// The next `\n`-terminated line of the body, without the `\n`.
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                return String::from_utf8(line[..end].to_vec()).expect("UTF-8 line");
            }
            assert!(
                self.read_more().await,
                "body ended inside a line: {:?}",
                String::from_utf8_lossy(&self.buffered)
            );
        }
    }

    /// The rest of the body.
    pub async fn text(mut self) -> String {
        while self.read_more().await {}
        String::from_utf8(self.buffered).expect("UTF-8 body")
    }
}

/// A WebSocket client over TLS.
pub struct Wss(WebSocketStream<TlsStream<TcpStream>>);

impl Wss {
    pub async fn send(&mut self, text: &str) {
        bounded("WebSocket send", self.0.send(Message::text(text)))
            .await
            .expect("WebSocket send");
    }

    /// The next text message (pings are answered by tungstenite).
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = bounded("WebSocket message", self.0.next())
                .await
                .expect("WebSocket open")
                .expect("WebSocket message");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = bounded("WebSocket close", self.0.close(None)).await;
    }
}
