//! `--tls-cert/--tls-key`: HTTPS with HTTP/2 by ALPN for the HTTP transports
//! (streaming included), WSS over HTTP/1.1, the JSESSIONID cookie marked
//! `SameSite=None; Secure`, and what happens to plain HTTP on a TLS port.
//! Real sockets, a certificate made by the test.

mod support;
mod tls_client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{expect_start_refused, sid, Server};
use tls_client::{TestCert, BOUND};

fn start(cert: &TestCert) -> Server {
    let server = Server::start_with(&cert.flags());
    assert!(
        server.log().contains("listening on https://127.0.0.1:"),
        "the log line says https:\n{}",
        server.log()
    );
    server
}

#[test]
fn a_tls_address_in_use_is_refused_naming_it_before_anything_listens() {
    let cert = TestCert::generate();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let taken = holder.local_addr().unwrap().to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--listen", &taken];
    args.extend(cert.flags());
    let (status, stderr) = support::start_refused_with(&args);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("error: cannot listen on {taken}: address already in use")
    );
}

#[tokio::test]
async fn a_tls_client_pipelining_requests_it_never_reads_is_not_buffered_for() {
    use tokio::io::AsyncWriteExt;

    const REQUESTS: usize = 100_000;
    const RSS_BOUND_KIB: u64 = 8 * 1024;
    let cert = TestCert::generate();
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend(cert.flags());
    let server = Server::start_with(&args);
    let metrics = support::metrics_port(&server);
    for _ in 0..50 {
        let mut h1 = cert.connect(server.port, &[b"http/1.1"]).await;
        h1.write_all(b"GET /echo/info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tls_client::bounded(
            "an /info answer",
            tokio::io::AsyncReadExt::read_to_end(&mut h1, &mut answer),
        )
        .await
        .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let before = support::rss_kib(server.pid());
    let (answered_before, _) =
        support::wait_until_answers_stop(metrics, server.pid(), Duration::from_secs(30));

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(tls_client::HOST).unwrap();
    let mut attacker = cert
        .connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let batch = b"GET /echo/info HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(1000);
    let mut written = 0;
    for _ in 0..REQUESTS / 1000 {
        // A write that cannot finish is the gateway no longer reading.
        match tokio::time::timeout(Duration::from_secs(2), attacker.write_all(&batch)).await {
            Ok(Ok(())) => written += 1000,
            _ => break,
        }
    }
    let (answered_after, peak) =
        support::wait_until_answers_stop(metrics, server.pid(), Duration::from_secs(60));
    let answered = answered_after - answered_before;
    assert!(
        answered < REQUESTS as u64 / 2,
        "answered {answered} of the {written} requests written, none of them read"
    );
    assert!(
        peak < before + RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    let mut wss = cert.wss(server.port, "/echo/000/tlspipe/websocket").await;
    assert_eq!(wss.next_text().await, "o");
    wss.send(r#"["still here"]"#).await;
    assert_eq!(wss.next_text().await, r#"a["still here"]"#);
    eprintln!(
        "TLS pipelining: {written} written, {answered} answered, RSS {before} -> peak {peak} KiB"
    );
    drop(attacker);
}

#[tokio::test]
async fn info_over_http2() {
    let cert = TestCert::generate();
    let server = start(&cert);
    let mut h2 = cert.h2(server.port).await;
    let info = h2.get("/echo/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    let body: serde_json::Value = serde_json::from_str(&info.text().await).expect("JSON");
    assert_eq!(body["websocket"], true);
}

#[tokio::test]
async fn xhr_streaming_over_http2_delivers_frames_as_they_are_sent() {
    let cert = TestCert::generate();
    let server = start(&cert);
    let mut h2 = cert.h2(server.port).await;
    let id = sid();

    let mut stream = h2.post(&format!("/echo/000/{id}/xhr_streaming"), b"").await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    for forbidden in ["connection", "transfer-encoding", "keep-alive", "upgrade"] {
        assert!(
            stream.header(forbidden).is_none(),
            "HTTP/2 forbids the hop-by-hop header {forbidden}"
        );
    }
    let prelude = stream.take(2049).await;
    assert_eq!(&prelude[..2048], &[b'h'; 2048][..]);
    assert_eq!(prelude[2048], b'\n');
    assert_eq!(stream.line().await, "o");

    // A send on another stream of the same connection comes back on the
    // streaming response, which is still open.
    let send = h2
        .post(&format!("/echo/000/{id}/xhr_send"), br#"["over h2"]"#)
        .await;
    assert_eq!(send.status, 204);
    assert_eq!(stream.line().await, r#"a["over h2"]"#);
}

#[tokio::test]
async fn the_jsessionid_cookie_is_same_site_none_and_secure_over_tls() {
    let cert = TestCert::generate();
    let server = start(&cert);
    let mut h2 = cert.h2(server.port).await;

    let poll = h2
        .post(&format!("/cookie_needed_echo/000/{}/xhr", sid()), b"")
        .await;
    assert_eq!(poll.status, 200);
    assert_eq!(
        poll.header("set-cookie"),
        Some("JSESSIONID=dummy; path=/; SameSite=None; Secure")
    );

    let with_cookie = h2
        .request(
            "POST",
            &format!("/cookie_needed_echo/000/{}/xhr", sid()),
            &[("cookie", "JSESSIONID=abc123")],
            Some(b""),
        )
        .await;
    assert_eq!(
        with_cookie.header("set-cookie"),
        Some("JSESSIONID=abc123; path=/; SameSite=None; Secure")
    );

    // A client's X-Forwarded-Proto says nothing about this connection.
    let plain = Server::start_with(&[]);
    let response = plain.request(
        support::Request::post(&format!("/cookie_needed_echo/000/{}/xhr", sid()), b"")
            .header("X-Forwarded-Proto", "https"),
    );
    response.assert_header("Set-Cookie", "JSESSIONID=dummy; path=/");
}

#[tokio::test]
async fn websocket_over_tls_uses_http1_and_echoes() {
    let cert = TestCert::generate();
    let server = start(&cert);

    let mut raw = cert.wss(server.port, "/echo/websocket").await;
    raw.send("raw over wss").await;
    assert_eq!(raw.next_text().await, "raw over wss");
    raw.close().await;

    let mut framed = cert.wss(server.port, "/echo/000/abc/websocket").await;
    assert_eq!(framed.next_text().await, "o");
    framed.send(r#"["framed over wss"]"#).await;
    assert_eq!(framed.next_text().await, r#"a["framed over wss"]"#);
    framed.close().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_cleanly_and_the_server_goes_on() {
    let cert = TestCert::generate();
    let server = start(&cert);

    let port = server.port;
    let answer = tokio::task::spawn_blocking(move || {
        let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        plain.set_read_timeout(Some(BOUND)).expect("read timeout");
        plain
            .write_all(b"GET /echo/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut answer = Vec::new();
        // Ends when the server closes the connection; a timeout fails it.
        plain
            .read_to_end(&mut answer)
            .expect("the server closes the connection");
        answer
    })
    .await
    .expect("plain client");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer on a TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );

    let mut h2 = cert.h2(server.port).await;
    assert_eq!(h2.get("/echo/info").await.status, 200);
}

#[test]
fn bad_tls_files_are_refused_naming_the_file() {
    let cert = TestCert::generate();
    let cert_path = cert.cert_path.to_str().unwrap();
    let key_path = cert.key_path.to_str().unwrap();

    let stderr =
        expect_start_refused(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key_path]);
    assert!(
        stderr.contains("error: /nonexistent/cert.pem: cannot read the TLS certificate"),
        "{stderr}"
    );

    // The key is no certificate, and the certificate holds no key.
    let stderr = expect_start_refused(&["--tls-cert", key_path, "--tls-key", key_path]);
    assert!(
        stderr.contains(&format!("error: {key_path}: no PEM certificate in it")),
        "{stderr}"
    );
    let stderr = expect_start_refused(&["--tls-cert", cert_path, "--tls-key", cert_path]);
    assert!(
        stderr.contains(&format!("error: {cert_path}: no PEM private key in it")),
        "{stderr}"
    );

    // Both or neither.
    let stderr = expect_start_refused(&["--tls-cert", cert_path]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[test]
fn the_config_file_tls_section_is_relative_to_the_file() {
    let cert = TestCert::generate();
    let dir = cert.cert_path.parent().expect("cert dir");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n").expect("write");
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    assert!(
        server.log().contains("listening on https://127.0.0.1:"),
        "{}",
        server.log()
    );
}

#[test]
fn a_relay_reaches_a_wss_upstream_it_trusts() {
    let cert = TestCert::generate();
    let upstream = start(&cert);
    let relay_flag = format!("/app=wss://localhost:{}/echo/websocket", upstream.port);
    let ca = cert.cert_path.to_str().expect("UTF-8 temp path");

    let relay = Server::start_with(&["--relay", &relay_flag, "--relay-ca", ca]);
    let id = relay.open_xhr_session("/app");
    relay.send_ok("/app", &id, r#"["over wss","ü"]"#);
    assert_eq!(relay.poll_messages("/app", &id, 2), ["over wss", "ü"]);

    // Without --relay-ca the self-signed upstream is not trusted.
    let untrusting = Server::start_with(&["--relay", &relay_flag]);
    let id = untrusting.open_xhr_session("/app");
    assert_eq!(
        untrusting.poll("/app", &id),
        support::close_frame(4502, "Upstream unavailable")
    );
    support::poll_until(
        "the refused upstream in the log",
        std::time::Duration::from_secs(10),
        || {
            untrusting
                .log()
                .contains("cannot reach wss://localhost")
                .then_some(())
        },
    );
}

#[tokio::test]
async fn a_stalled_tls_websocket_client_loses_its_connection_within_send_timeout_and_grace() {
    use support::stalled;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cert = TestCert::generate();
    let mut args = vec!["--send-timeout", "1s"];
    args.extend(cert.flags());
    let server = Server::start_with(&args);
    let tcp = tokio::net::TcpStream::from_std({
        let stream = stalled::tiny_window_stream(server.port);
        stream.set_nonblocking(true).unwrap();
        stream
    })
    .unwrap();
    let client_port = tcp.local_addr().unwrap().port();
    let name = rustls::pki_types::ServerName::try_from(tls_client::HOST).unwrap();
    let mut tls = cert
        .connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let upgrade = support::ws_request("/amplify/000/stalled-tls/websocket", &[]);
    tls.write_all(&upgrade.to_bytes(server.port)).await.unwrap();
    let mut head = [0; 12];
    tls_client::bounded("the upgrade's answer", tls.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // 200 messages of 256 KiB asked for, none of them read.
    let started = std::time::Instant::now();
    for _ in 0..200 {
        tls.write_all(&stalled::masked_text_frame(br#"["18"]"#))
            .await
            .unwrap();
    }
    tls.flush().await.unwrap();
    stalled::wait_until_server_lets_go(
        server.port,
        client_port,
        stalled::GONE_WITHIN,
        "stalled TLS websocket",
    );
    eprintln!(
        "stalled TLS websocket dropped {:?} after its requests",
        started.elapsed()
    );
    let mut wss = cert
        .wss(server.port, "/echo/000/tls-bystander/websocket")
        .await;
    assert_eq!(wss.next_text().await, "o");
    wss.send(r#"["still here"]"#).await;
    assert_eq!(wss.next_text().await, r#"a["still here"]"#);
    drop(tls);
}
