//! `--relay`: SockJS sessions relayed to real upstream servers (WebSocket
//! and newline-delimited TCP) started inside the test, over every kind of
//! transport; upstream down, upstream closing, client vanishing, and
//! backpressure in both directions.

mod support;
mod upstreams;

use std::time::Duration;

use support::{
    close_frame, eventsource, metric_value, metrics_port, scrape, sid, ws_connect, xhr_streaming,
    Frame, Request, Server, Streaming, Ws,
};
use upstreams::Seen;

const TRANSPORTS: [&str; 5] = [
    "websocket",
    "websocket-raw",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
];

/// One SockJS client session on one transport, through the test's raw clients.
enum Client<'a> {
    Ws(Ws),
    Raw(Ws),
    Streaming(&'a Server, String, Streaming),
    Polling(&'a Server, String),
    EventSource(&'a Server, String, Streaming),
}

impl<'a> Client<'a> {
    /// Opens a session and takes its open frame (raw WebSocket has none).
    #[track_caller]
    fn open(server: &'a Server, prefix: &str, transport: &str) -> Client<'a> {
        let id = sid();
        let mut client = match transport {
            "websocket" => Client::Ws(ws_connect(
                server.port,
                &format!("{prefix}/000/{id}/websocket"),
                &[],
            )),
            "websocket-raw" => {
                return Client::Raw(ws_connect(server.port, &format!("{prefix}/websocket"), &[]))
            }
            "xhr-streaming" => {
                let mut stream = xhr_streaming(server.port, prefix, &id);
                stream.expect_prelude();
                Client::Streaming(server, id, stream)
            }
            "xhr-polling" => Client::Polling(server, id),
            "eventsource" => {
                let mut stream = eventsource(server.port, prefix, &id);
                stream.expect_eventsource_prelude();
                Client::EventSource(server, id, stream)
            }
            other => panic!("no transport {other}"),
        };
        assert_eq!(client.next_frame(prefix), Frame::Open, "{transport}");
        client
    }

    fn send(&mut self, prefix: &str, messages: &[&str]) {
        let json = serde_json::to_string(messages).unwrap();
        match self {
            Client::Ws(ws) => ws.send_text(&json),
            Client::Raw(ws) => messages.iter().for_each(|m| ws.send_text(m)),
            Client::Streaming(server, id, _)
            | Client::Polling(server, id)
            | Client::EventSource(server, id, _) => server.send_ok(prefix, id, &json),
        }
    }

    /// The next frame that is not a heartbeat.
    #[track_caller]
    fn next_frame(&mut self, prefix: &str) -> Frame {
        loop {
            let frame = match self {
                Client::Ws(ws) => ws.next_frame(),
                Client::Raw(ws) => match ws.next_event() {
                    support::WsEvent::Text(text) => Frame::Messages(vec![text]),
                    support::WsEvent::Close(Some((code, reason))) => {
                        Frame::Close(code.into(), reason)
                    }
                    other => panic!("raw websocket: {other:?}"),
                },
                Client::Streaming(_, _, stream) => stream.next_frame(),
                Client::Polling(server, id) => server.poll(prefix, id),
                Client::EventSource(_, _, stream) => stream.next_event_frame(),
            };
            if frame != Frame::Heartbeat {
                return frame;
            }
        }
    }

    #[track_caller]
    fn messages(&mut self, prefix: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_frame(prefix) {
                Frame::Messages(m) => out.extend(m),
                other => panic!("expected messages, got {other:?} after {out:?}"),
            }
        }
        out
    }
}

fn relay_flag(prefix: &str, url: String) -> String {
    format!("{prefix}={url}")
}

/// Every message through the relay and back, in order, on each transport.
#[track_caller]
fn round_trips(server: &Server, prefix: &str, upstream: &upstreams::Upstream) {
    let numbered: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    let mut batch: Vec<&str> = vec!["hello", "ü 😀 \u{2028} \" \\ <>", " "];
    batch.extend(numbered.iter().map(String::as_str));
    let expected: Vec<String> = batch.iter().map(|m| format!("up:{m}")).collect();
    for transport in TRANSPORTS {
        let mut client = Client::open(server, prefix, transport);
        upstream.expect_connected();
        client.send(prefix, &batch[..3]);
        client.send(prefix, &batch[3..]);
        assert_eq!(
            client.messages(prefix, batch.len()),
            expected,
            "{transport}"
        );
        client.send(prefix, &["bye"]);
        upstream.expect_closed();
    }
}

#[test]
fn websocket_upstream_round_trips_over_every_transport() {
    let upstream = upstreams::websocket();
    let url = format!("ws://127.0.0.1:{}/socket", upstream.port);
    let server = Server::start_with(&["--relay", &relay_flag("/app", url)]);
    round_trips(&server, "/app", &upstream);
}

#[test]
fn tcp_upstream_round_trips_over_every_transport() {
    let upstream = upstreams::lines();
    let url = format!("tcp://127.0.0.1:{}", upstream.port);
    let server = Server::start_with(&["--relay", &relay_flag("/lines", url)]);
    round_trips(&server, "/lines", &upstream);
}

#[test]
fn the_handshake_names_the_client_and_forwards_chosen_headers() {
    let upstream = upstreams::websocket();
    let url = format!("ws://127.0.0.1:{}/", upstream.port);
    let server = Server::start_with(&[
        "--relay",
        &relay_flag("/app", url),
        "--relay-forward-header",
        "Cookie",
        "--relay-forward-header",
        "Authorization",
    ]);
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    let mut ws = ws_connect(
        server.port,
        "/app/000/hdr/websocket",
        &[("Cookie", "session=abc"), ("Authorization", "Bearer t0k")],
    );
    assert_eq!(ws.next_frame(), Frame::Open);
    let headers = upstream.expect_connected();
    assert_eq!(
        header(&headers, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        header(&headers, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(header(&headers, "cookie").as_deref(), Some("session=abc"));
    assert_eq!(
        header(&headers, "authorization").as_deref(),
        Some("Bearer t0k")
    );

    // Over HTTP transports the session's first request is what counts; a
    // header that is not on the list is never forwarded.
    let id = sid();
    let open = server.request(
        Request::post(&format!("/app/000/{id}/xhr"), b"")
            .header("Cookie", "session=xyz")
            .header("X-Secret", "no"),
    );
    assert_eq!(open.text(), "o\n");
    let headers = upstream.expect_connected();
    assert_eq!(header(&headers, "cookie").as_deref(), Some("session=xyz"));
    assert_eq!(header(&headers, "authorization"), None);
    assert_eq!(header(&headers, "x-secret"), None);
}

#[test]
fn an_upstream_that_is_down_closes_the_session_at_once() {
    let down = upstreams::closed_port();
    let server = Server::start_with(&[
        "--relay",
        &format!("/ws-down=ws://127.0.0.1:{down}/"),
        "--relay",
        &format!("/tcp-down=tcp://127.0.0.1:{down}"),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let unavailable = close_frame(4502, "Upstream unavailable");
    for prefix in ["/ws-down", "/tcp-down"] {
        let mut ws = ws_connect(server.port, &format!("{prefix}/000/d/websocket"), &[]);
        assert_eq!(ws.next_frame(), Frame::Open);
        assert_eq!(ws.next_frame(), unavailable, "{prefix} over websocket");

        let id = server.open_xhr_session(prefix);
        assert_eq!(server.poll(prefix, &id), unavailable, "{prefix} over xhr");
    }
    support::poll_until(
        "the unreachable upstream in the log",
        Duration::from_secs(10),
        || {
            server
                .log()
                .contains("cannot reach ws://127.0.0.1")
                .then_some(())
        },
    );
    let metrics = scrape(metrics_port(&server));
    assert_eq!(
        metric_value(
            &metrics,
            r#"sockjs_relay_upstream_failures_total{service="/ws-down",stage="connect"}"#
        ),
        2.0
    );
}

#[test]
fn the_upstreams_close_reaches_the_client() {
    let ws_upstream = upstreams::websocket();
    let lines = upstreams::lines();
    let server = Server::start_with(&[
        "--relay",
        &format!("/app=ws://127.0.0.1:{}/", ws_upstream.port),
        "--relay",
        &format!("/lines=tcp://127.0.0.1:{}", lines.port),
    ]);
    let cases = [
        ("close 3003 bye now", close_frame(3003, "bye now")),
        ("close 4999 ", close_frame(4999, "")),
        ("close 1000 done", close_frame(4500, "done")),
        ("close 1001 ", close_frame(4500, "Upstream closed")),
        ("close 1011 oops", close_frame(4501, "oops")),
        ("drop", close_frame(4501, "Upstream connection lost")),
    ];
    for (command, expected) in cases {
        for transport in ["websocket", "xhr-streaming"] {
            let mut client = Client::open(&server, "/app", transport);
            ws_upstream.expect_connected();
            client.send("/app", &["first", command]);
            assert_eq!(client.messages("/app", 1), ["up:first"]);
            assert_eq!(
                client.next_frame("/app"),
                expected,
                "{command} over {transport}"
            );
        }
    }
    let mut client = Client::open(&server, "/lines", "xhr-polling");
    client.send("/lines", &["one", "bye"]);
    assert_eq!(client.messages("/lines", 1), ["up:one"]);
    assert_eq!(
        client.next_frame("/lines"),
        close_frame(4500, "Upstream closed")
    );
}

#[test]
fn the_clients_close_or_disappearance_closes_the_upstream() {
    let upstream = upstreams::websocket();
    let server = Server::start_with(&[
        "--relay",
        &format!("/app=ws://127.0.0.1:{}/", upstream.port),
        "--disconnect-delay",
        "300ms",
    ]);

    // A client's own close, code and reason, over framed and raw WebSocket.
    let mut ws = ws_connect(server.port, "/app/000/c1/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    upstream.expect_connected();
    ws.ws
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 3001.into(),
            reason: "leaving".into(),
        }))
        .unwrap();
    assert_eq!(upstream.expect_closed(), Some((3001, "leaving".into())));

    let mut raw = ws_connect(server.port, "/app/websocket", &[]);
    upstream.expect_connected();
    raw.ws.close(None).unwrap();
    assert_eq!(raw.read_until_closed().1, None);
    assert_eq!(upstream.expect_closed(), Some((1000, String::new())));

    // A WebSocket client that vanishes without a close frame.
    let ws = ws_connect(server.port, "/app/000/c2/websocket", &[]);
    upstream.expect_connected();
    drop(ws);
    assert_eq!(upstream.expect_closed(), Some((1001, "Client gone".into())));

    // A streaming receiver dropped mid-response, and a polling client that
    // never comes back (the session expires after the disconnect delay).
    let mut client = Client::open(&server, "/app", "xhr-streaming");
    upstream.expect_connected();
    if let Client::Streaming(_, _, stream) = client {
        stream.abort();
    }
    assert_eq!(upstream.expect_closed(), Some((1001, "Client gone".into())));

    client = Client::open(&server, "/app", "xhr-polling");
    upstream.expect_connected();
    drop(client);
    assert_eq!(upstream.expect_closed(), Some((1001, "Client gone".into())));
}

/// A stalled upstream holds back only its own client, and loses nothing.
#[test]
fn a_slow_upstream_slows_only_its_own_client() {
    let (stalled, release, received) = upstreams::stalled_lines();
    let echo = upstreams::websocket();
    let server = Server::start_with(&[
        "--relay",
        &format!("/slow=tcp://127.0.0.1:{}", stalled.port),
        "--relay",
        &format!("/app=ws://127.0.0.1:{}/", echo.port),
        "--max-message-bytes",
        "65536",
    ]);
    let mut slow = ws_connect(server.port, "/slow/websocket", &[]);
    stalled.expect_connected();
    const COUNT: usize = 32 * 1024;
    let (done_tx, done) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let filler = "y".repeat(1000);
        for i in 0..COUNT {
            slow.send_text(&format!("{i:05} {filler}"));
        }
        let _ = done_tx.send(());
        slow
    });

    // While 32 MiB wait behind the stalled upstream, another session works.
    let mut other = Client::open(&server, "/app", "websocket");
    echo.expect_connected();
    for round in 0..20 {
        let message = format!("still here {round}");
        other.send("/app", &[&message]);
        assert_eq!(other.messages("/app", 1), [format!("up:{message}")]);
    }
    assert!(
        done.try_recv().is_err(),
        "32 MiB went into a relay whose upstream reads nothing: nothing held the client back"
    );

    // Released, the upstream gets every message, once, in order.
    release.send(()).unwrap();
    done.recv_timeout(Duration::from_secs(60))
        .expect("the client's writes complete once the upstream reads");
    let mut slow = writer.join().unwrap();
    slow.ws.close(None).unwrap();
    slow.read_until_closed();
    let lines = received
        .recv_timeout(Duration::from_secs(30))
        .expect("the upstream connection ends after the client closes");
    assert_eq!(lines.len(), COUNT);
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("{i:05} ")),
            "line {i}: {:.20}",
            line
        );
    }
}

/// A client that stops reading stops its upstream's writes (what is held is
/// bounded by the outgoing queue and the kernel's socket buffers, whose
/// receive side autotunes up to `tcp_rmem`), and is closed after the send
/// timeout.
#[test]
fn a_client_that_stops_reading_holds_back_its_upstream() {
    let upstream = upstreams::websocket();
    let server = Server::start_with(&[
        "--relay",
        &format!("/app=ws://127.0.0.1:{}/", upstream.port),
        "--send-timeout",
        "3s",
        "--max-queued-bytes",
        "65536",
    ]);
    let mut ws = ws_connect(server.port, "/app/000/slowreader/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    upstream.expect_connected();
    ws.send_text(r#"["flood"]"#);
    let written = match upstream.next(Duration::from_secs(30)) {
        Seen::Blocked(written) => written,
        other => panic!("expected the upstream to be held back, got {other:?}"),
    };
    eprintln!("the upstream was held back after {written} bytes");
    assert!(
        written < 256 << 20,
        "the upstream wrote {written} bytes before it was held back"
    );
    assert_eq!(
        upstream.expect_closed(),
        Some((1001, "Client too slow".into()))
    );
    drop(ws);
}

#[test]
fn relay_metrics_count_connects() {
    let upstream = upstreams::websocket();
    let server = Server::start_with(&[
        "--relay",
        &format!("/app=ws://127.0.0.1:{}/", upstream.port),
        "--metrics",
        "127.0.0.1:0",
    ]);
    for _ in 0..3 {
        let mut client = Client::open(&server, "/app", "xhr-polling");
        upstream.expect_connected();
        client.send("/app", &["x"]);
        assert_eq!(client.messages("/app", 1), ["up:x"]);
    }
    let metrics = scrape(metrics_port(&server));
    assert_eq!(
        metric_value(
            &metrics,
            r#"sockjs_relay_upstream_connects_total{service="/app"}"#
        ),
        3.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"sockjs_relay_upstream_connect_seconds_count{service="/app"}"#
        ),
        3.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"sockjs_messages_total{service="/app",direction="out"}"#
        ),
        3.0
    );
}

#[test]
fn bad_relay_flags_are_refused_at_start() {
    for (flag, reason) in [
        ("/app=http://127.0.0.1:1/", "ws://, wss:// or tcp://"),
        ("/app", "PREFIX=URL"),
        ("app=ws://127.0.0.1:1/", "starts with /"),
        ("/app=tcp://127.0.0.1", "HOST:PORT"),
    ] {
        let log = support::expect_start_refused(&["--relay", flag]);
        assert!(log.contains(reason), "--relay {flag}: {log}");
    }
    let twice = support::expect_start_refused(&[
        "--relay",
        "/app=ws://127.0.0.1:1/",
        "--relay",
        "/app=ws://127.0.0.1:2/",
    ]);
    assert!(
        twice.contains("the prefix `/app` is given twice"),
        "{twice}"
    );
    let zero = support::expect_start_refused(&["--relay-connect-timeout", "0s"]);
    assert!(zero.contains("a timeout must be above zero"), "{zero}");
}

/// An upstream that takes the TCP connection and never answers the
/// handshake: the session is closed once `--relay-connect-timeout` passes.
#[test]
fn the_relay_connect_timeout_bounds_a_silent_upstream() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let server = Server::start_with(&[
        "--relay",
        &format!("/silent=ws://127.0.0.1:{port}/"),
        "--relay-connect-timeout",
        "300ms",
    ]);
    let id = server.open_xhr_session("/silent");
    let started = std::time::Instant::now();
    assert_eq!(
        server.poll("/silent", &id),
        close_frame(4502, "Upstream unavailable")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}, the default timeout is 10 s",
        started.elapsed()
    );
    drop(silent);
}
