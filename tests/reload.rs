//! SIGHUP and the TLS file watch: a certificate swapped under a running
//! gateway (open WebSocket and HTTP/2 streaming sessions keep going, new
//! clients get the new certificate), origins added and removed live, and
//! reloads that fail changing nothing. Real sockets, a real config file.

mod support;
mod tls_client;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::reload::{certificate_der, served_certificate, RELOAD_BOUND};
use support::{sid, Request, Server};
use tls_client::TestCert;

/// A config file (and TLS files) in a temp dir of their own.
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: support::fresh_temp_dir("reload"),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    fn write_config(&self, text: &str) {
        // Written aside and renamed: the gateway never reads half a file.
        let aside = self.dir.join("gateway.toml.new");
        std::fs::write(&aside, text).expect("write the config");
        std::fs::rename(aside, self.config()).expect("rename the config");
    }

    /// `cert`'s files as the gateway's cert.pem and key.pem.
    fn install(&self, cert: &Path, key: &Path) {
        std::fs::copy(cert, self.dir.join("cert.pem")).expect("copy the certificate");
        std::fs::copy(key, self.dir.join("key.pem")).expect("copy the key");
    }

    fn start(&self) -> Server {
        Server::start_with(&["--config", self.config().to_str().expect("UTF-8 path")])
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TLS: &str = "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";

/// Waits (bounded) until new connections are served `wanted`.
async fn until_served(port: u16, wanted: &[u8]) {
    let deadline = Instant::now() + RELOAD_BOUND;
    loop {
        let served = served_certificate(port).await;
        if served.as_deref() == Ok(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate not served within {RELOAD_BOUND:?}: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Both sessions (WebSocket and HTTP/2 xhr-streaming, over TLS) opened
/// before a swap, checked after it.
async fn open_sessions_still_work(old: &TestCert, server: &Server, swap: impl FnOnce()) {
    let mut ws = old.wss(server.port, "/echo/websocket").await;
    ws.send("before").await;
    assert_eq!(ws.next_text().await, "before");
    let mut h2 = old.h2(server.port).await;
    let id = sid();
    let mut stream = h2.post(&format!("/echo/000/{id}/xhr_streaming"), b"").await;
    assert_eq!(stream.status, 200);
    stream.take(2049).await;
    assert_eq!(stream.line().await, "o");

    swap();

    ws.send("after").await;
    assert_eq!(
        ws.next_text().await,
        "after",
        "the WebSocket session goes on"
    );
    let send = h2
        .post(&format!("/echo/000/{id}/xhr_send"), br#"["after"]"#)
        .await;
    assert_eq!(send.status, 204);
    assert_eq!(
        stream.line().await,
        r#"a["after"]"#,
        "the streaming session goes on"
    );
    // And a client trusting only the old certificate no longer gets in.
    let served = served_certificate(server.port).await.expect("a handshake");
    assert_ne!(served, certificate_der(&old.cert_path));
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_only() {
    let (old, new) = (TestCert::generate(), TestCert::generate());
    let setup = Setup::new();
    setup.install(&old.cert_path, &old.key_path);
    setup.write_config(TLS);
    let server = setup.start();
    assert_eq!(
        served_certificate(server.port).await.unwrap(),
        certificate_der(&old.cert_path)
    );

    open_sessions_still_work(&old, &server, || {
        // Files of other names, so that only the signal (not the watch of
        // cert.pem and key.pem) can be what serves them.
        std::fs::copy(&new.cert_path, setup.dir.join("renewed-cert.pem")).unwrap();
        std::fs::copy(&new.key_path, setup.dir.join("renewed-key.pem")).unwrap();
        setup.write_config("[tls]\ncert = \"renewed-cert.pem\"\nkey = \"renewed-key.pem\"\n");
        let outcome = server.reload();
        assert!(outcome.contains("TLS certificate"), "{outcome}");
    })
    .await;
    assert_eq!(
        served_certificate(server.port).await.unwrap(),
        certificate_der(&new.cert_path)
    );
    // A client trusting only the new certificate: a full session works.
    let mut ws = new.wss(server.port, "/echo/websocket").await;
    ws.send("new").await;
    assert_eq!(ws.next_text().await, "new");
}

#[tokio::test]
async fn certificate_files_changed_on_disk_are_served_without_a_signal() {
    let (old, new) = (TestCert::generate(), TestCert::generate());
    let setup = Setup::new();
    setup.install(&old.cert_path, &old.key_path);
    setup.write_config(TLS);
    let server = setup.start();
    let wanted = certificate_der(&new.cert_path);

    let mut ws = old.wss(server.port, "/echo/websocket").await;
    setup.install(&new.cert_path, &new.key_path);
    until_served(server.port, &wanted).await;
    server.wait_for_log("TLS certificate replaced", 1);
    ws.send("still here").await;
    assert_eq!(ws.next_text().await, "still here");
    assert_eq!(server.log_count("SIGHUP"), 0, "no signal was sent");
}

fn info_from(server: &Server, origin: &str) -> u16 {
    server
        .request(Request::get("/echo/info").header("Origin", origin))
        .status
}

#[test]
fn an_origin_added_then_removed_is_allowed_then_refused() {
    let setup = Setup::new();
    let origins = |list: &str| format!("[defaults]\nallowed_origins = [{list}]\n");
    setup.write_config(&origins(r#""https://a.example""#));
    let server = setup.start();
    assert_eq!(info_from(&server, "https://a.example"), 200);
    assert_eq!(info_from(&server, "https://b.example"), 403);

    setup.write_config(&origins(r#""https://a.example", "https://b.example""#));
    let outcome = server.reload();
    assert!(outcome.contains("allowed_origins"), "{outcome}");
    assert_eq!(info_from(&server, "https://b.example"), 200);

    // What cannot change live is named and kept; the rest still applies.
    setup.write_config(&format!(
        "workers = 3\n{}",
        origins(r#""https://a.example""#)
    ));
    let outcome = server.reload();
    assert!(outcome.contains("allowed_origins"), "{outcome}");
    server.wait_for_log("reload: workers cannot change live; keeping", 1);
    assert_eq!(info_from(&server, "https://b.example"), 403);
    assert_eq!(info_from(&server, "https://a.example"), 200);

    let outcome = server.reload();
    assert!(outcome.contains("nothing changed"), "{outcome}");
}

#[tokio::test]
async fn a_reload_that_fails_changes_nothing() {
    let (old, new) = (TestCert::generate(), TestCert::generate());
    let setup = Setup::new();
    setup.install(&old.cert_path, &old.key_path);
    let config = format!("{TLS}[defaults]\nallowed_origins = [\"https://a.example\"]\n");
    setup.write_config(&config);
    let server = setup.start();
    let old_der = certificate_der(&old.cert_path);
    // Bad TOML, with a new origin and a new certificate beside it.
    setup.install(&new.cert_path, &new.key_path);
    setup.write_config("[defaults\nallowed_origins = [\"https://b.example\"]\n");
    let outcome = server.reload();
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(
        outcome.contains("gateway.toml:1:"),
        "names the place: {outcome}"
    );

    // An unknown key.
    setup.write_config(&format!("{config}colour = \"blue\"\n"));
    let outcome = server.reload();
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(outcome.contains("colour"), "{outcome}");
    // The watch saw the new pair meanwhile: back to the old one first.
    setup.install(&old.cert_path, &old.key_path);
    until_served(server.port, &old_der).await;

    // A key that does not match its certificate, with an origin added.
    std::fs::copy(&new.key_path, setup.dir.join("key.pem")).unwrap();
    setup.write_config(&format!(
        "{TLS}[defaults]\nallowed_origins = [\"https://a.example\", \"https://b.example\"]\n"
    ));
    let outcome = server.reload();
    assert!(outcome.contains("reload failed"), "{outcome}");
    assert!(
        outcome.contains("not a usable certificate and key"),
        "{outcome}"
    );
    server.wait_for_log("TLS files changed but cannot be used yet", 1);

    assert_eq!(served_certificate(server.port).await.unwrap(), old_der);
    let mut h2 = old.h2(server.port).await;
    let refused = h2
        .request(
            "GET",
            "/echo/info",
            &[("origin", "https://b.example")],
            None,
        )
        .await;
    assert_eq!(refused.status, 403, "the origin list is unchanged");
    let allowed = h2
        .request(
            "GET",
            "/echo/info",
            &[("origin", "https://a.example")],
            None,
        )
        .await;
    assert_eq!(allowed.status, 200, "the gateway still serves");
}
