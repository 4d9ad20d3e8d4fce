//! Bounds, caps and the origin policy: what keeps one client from harming
//! the gateway or anyone else.

mod in_process;
mod support;

use std::sync::mpsc;
use std::time::Duration;

use in_process::InProcess;
use sockjs_gateway::protocol::session::message_cost;
use sockjs_gateway::{Options, Overflow, Session, SockJs};
use support::{close_frame, rss_kib, ws_connect, Conn, Frame, Request, Server};

const GOOD: &str = "http://good.example";
const EVIL: &str = "http://evil.example";

fn with_origin(request: Request, origin: &str) -> Request {
    request.header("Origin", origin)
}

#[test]
fn a_refused_origin_gets_403_and_no_cors_on_every_endpoint() {
    let server = Server::start_with(&["--allowed-origin", GOOD]);
    let requests = [
        Request::get("/echo/info"),
        Request::options("/echo/info"),
        Request::post("/echo/000/o1/xhr", b""),
        Request::post("/echo/000/o1/xhr_streaming", b""),
        Request::post("/echo/000/o1/xhr_send", br#"["x"]"#),
        Request::options("/echo/000/o1/xhr"),
        Request::get("/echo/000/o1/eventsource"),
        Request::get("/echo/000/o1/htmlfile?c=cb"),
        Request::get("/echo/iframe.html"),
        Request::get("/echo"),
    ];
    for request in requests {
        let label = format!("{} {}", request.method, request.path);
        let response = server.request(with_origin(request, EVIL));
        assert_eq!(response.status, 403, "{label}");
        assert_eq!(response.text().trim_end(), "Origin not allowed.", "{label}");
        response.assert_no_header("Access-Control-Allow-Origin");
        response.assert_no_header("Access-Control-Allow-Credentials");
    }
    for path in ["/echo/websocket", "/echo/000/o2/websocket"] {
        let mut conn = server.connect();
        let response = conn.request(&support::ws_request(path, &[("Origin", EVIL)]));
        assert_eq!(response.status, 403, "{path}");
    }
}

#[test]
fn an_allowed_origin_and_the_gateways_own_pages_get_through() {
    let server = Server::start_with(&["--allowed-origin", GOOD]);
    let info = server.request(with_origin(Request::get("/echo/info"), GOOD));
    assert_eq!(info.status, 200);
    info.assert_header("Access-Control-Allow-Origin", GOOD);
    let body: serde_json::Value = serde_json::from_str(&info.text()).unwrap();
    assert_eq!(
        body["origins"],
        serde_json::json!([GOOD]),
        "/info reflects the policy"
    );

    let poll = server.request(with_origin(Request::post("/echo/000/a1/xhr", b""), GOOD));
    assert_eq!((poll.status, poll.text()), (200, "o\n".to_owned()));
    let own = format!("http://127.0.0.1:{}", server.port);
    let send = server.request(with_origin(
        Request::post("/echo/000/a1/xhr_send", br#"["x"]"#),
        &own,
    ));
    assert_eq!(
        send.status, 204,
        "the iframe transports post from the gateway's own origin"
    );
    let no_origin = server.post("/echo/000/a1/xhr", b"");
    assert_eq!(
        no_origin.text(),
        "a[\"x\"]\n",
        "requests without Origin are not browser pages"
    );

    let mut ws = ws_connect(server.port, "/echo/000/a2/websocket", &[("Origin", GOOD)]);
    assert_eq!(ws.next_frame(), Frame::Open);
}

#[test]
fn a_dns_rebinding_page_is_refused_though_its_origin_equals_its_host() {
    let server = Server::start_with(&["--allowed-origin", GOOD]);
    // evil.test resolved to 127.0.0.1: the browser sends the page's own name
    // in both headers.
    let evil_host = format!("evil.test:{}", server.port);
    let evil_origin = format!("http://{evil_host}");
    let rebound = |request: Request| {
        request
            .header("Host", &evil_host)
            .header("Origin", &evil_origin)
    };
    let requests = [
        Request::get("/echo/info"),
        Request::post("/echo/000/r1/xhr", b""),
        Request::post("/echo/000/r1/xhr_streaming", b""),
        Request::post("/echo/000/r1/xhr_send", br#"["x"]"#),
        Request::get("/echo/000/r1/eventsource"),
        Request::get("/echo/iframe.html"),
        support::ws_request("/echo/000/r2/websocket", &[]),
        support::ws_request("/echo/websocket", &[]),
    ];
    for request in requests {
        let label = format!("{} {}", request.method, request.path);
        let response = server.request(rebound(request));
        assert_eq!(
            (response.status, response.text().trim_end()),
            (403, "Origin not allowed."),
            "{label}"
        );
        response.assert_no_header("Access-Control-Allow-Origin");
    }

    // The listed origin, and the gateway's own pages reached by address or
    // as localhost, still get through.
    let listed = server.request(with_origin(Request::post("/echo/000/r3/xhr", b""), GOOD));
    assert_eq!((listed.status, listed.text()), (200, "o\n".to_owned()));
    let local = format!("localhost:{}", server.port);
    let own = server.request(
        Request::post("/echo/000/r3/xhr_send", br#"["from the iframe"]"#)
            .header("Host", &local)
            .header("Origin", &format!("http://{local}")),
    );
    assert_eq!(own.status, 204, "{}", own.body_lossy());
    assert_eq!(
        server.poll("/echo", "r3"),
        Frame::Messages(vec!["from the iframe".into()]),
        "nothing of the rebinding page's arrived"
    );
}

#[test]
fn an_origin_list_turns_jsonp_off_unless_asked_and_guards_the_iframe() {
    let strict = Server::start_with(&["--allowed-origin", GOOD]);
    assert_eq!(strict.get("/echo/000/j1/jsonp?c=cb").status, 404);
    assert_eq!(
        strict.post("/echo/000/j1/jsonp_send", b"d=%5B%5D").status,
        404
    );
    let iframe = strict.get("/echo/iframe.html");
    iframe.assert_header(
        "Content-Security-Policy",
        &format!("frame-ancestors 'self' {GOOD}"),
    );

    let lenient = Server::start_with(&["--allowed-origin", GOOD, "--allow-jsonp"]);
    let poll = lenient.get("/echo/000/j1/jsonp?c=cb");
    assert_eq!(
        (poll.status, poll.text()),
        (200, "/**/cb(\"o\");\r\n".to_owned())
    );

    let open = Server::start();
    open.get("/echo/iframe.html")
        .assert_no_header("Content-Security-Policy");
}

#[test]
fn sessions_beyond_the_cap_get_503_and_the_others_are_unharmed() {
    let server = Server::start_with(&["--max-sessions", "2", "--disconnect-delay", "200ms"]);
    assert_eq!(server.xhr("/echo", "cap1").text(), "o\n");
    let mut ws = ws_connect(server.port, "/echo/000/cap2/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);

    let refused = server.xhr("/echo", "cap3");
    assert_eq!(
        (refused.status, refused.text().trim_end()),
        (503, "Too many sessions.")
    );
    let refused = server.request(support::ws_request("/echo/websocket", &[]));
    assert_eq!(refused.status, 503);
    assert_eq!(
        server.get("/echo/info").status,
        200,
        "/info is not a session"
    );
    assert_eq!(server.xhr("/other_service_is_404", "x").status, 404);
    assert_eq!(
        server.xhr("/amplify", "own-cap").text(),
        "o\n",
        "the cap is per service"
    );

    server.send_ok("/echo", "cap1", r#"["still served"]"#);
    assert_eq!(
        server.poll("/echo", "cap1"),
        Frame::Messages(vec!["still served".into()])
    );
    ws.send_text(r#"["me too"]"#);
    assert_eq!(ws.messages(1), vec!["me too".to_owned()]);

    // Once the WebSocket closes, its place is free again.
    ws.ws.close(None).unwrap();
    support::poll_until("a place to free up", Duration::from_secs(10), || {
        (server.xhr("/echo", "cap4").status == 200).then_some(())
    });
}

#[test]
fn oversized_headers_get_431() {
    let server = Server::start();
    let response =
        server.request(Request::get("/echo/info").header("X-Padding", &"a".repeat(40_000)));
    assert_eq!(response.status, 431);
    assert_eq!(server.get("/echo/info").status, 200);
}

#[test]
fn a_slowloris_request_is_dropped() {
    let server = Server::start();
    let mut conn = Conn::open(server.port);
    conn.write_all(b"GET /echo/info HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    // The head never completes: the server gives up with 408 and hangs up.
    let head = conn.read_head();
    assert_eq!(head.status, 408);
    assert!(conn.closed_within(Duration::from_secs(10)));
    assert_eq!(server.get("/echo/info").status, 200);
}

/// A handler that pushes `size`-byte messages until sending fails, then
/// reports why the session closed.
fn flood(size: usize, options: Options, report: mpsc::Sender<String>) -> SockJs {
    SockJs::new("/flood", options, move |session: Session| {
        let report = report.clone();
        async move {
            let mut n = 0u64;
            loop {
                let message = format!("{n:08}{}", "x".repeat(size));
                if session.send(message).await.is_err() {
                    break;
                }
                n += 1;
            }
            let _ = report.send(format!("{:?}", session.closed().await));
        }
    })
}

#[test]
fn a_client_that_stops_reading_is_closed_after_send_timeout_and_loses_nothing_before() {
    let (tx, rx) = mpsc::channel();
    let options = Options {
        send_timeout: Duration::from_millis(300),
        max_queued_bytes: 64 * 1024,
        response_limit: usize::MAX,
        ..Options::default()
    };
    let server = InProcess::start(vec![flood(16 * 1024, options, tx)]);
    let mut stream =
        Conn::open(server.port).stream(&Request::post("/flood/0/s/xhr_streaming", b""));
    stream.next_line(); // prelude
                        // The client reads nothing more: the server's buffers fill, then its queue.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the session closed"),
        "SendTimeout"
    );
    let mut expected = 0u64;
    loop {
        match stream.next_frame() {
            Frame::Open => {}
            Frame::Messages(messages) => {
                for message in messages {
                    assert_eq!(
                        message[..8].parse::<u64>().unwrap(),
                        expected,
                        "in order, none lost"
                    );
                    expected += 1;
                }
            }
            frame => {
                assert_eq!(frame, close_frame(4008, "Send timeout"));
                break;
            }
        }
    }
    assert!(expected > 0);
}

#[test]
fn drop_oldest_keeps_the_newest_and_never_blocks_the_sender() {
    let (tx, rx) = mpsc::channel();
    let options = Options {
        overflow: Overflow::DropOldest,
        max_queued_bytes: 25 * message_cost(4),
        ..Options::default()
    };
    let server = InProcess::start(vec![SockJs::new(
        "/feed",
        options,
        move |session: Session| {
            let report = tx.clone();
            async move {
                for n in 0..1000 {
                    session.send(format!("{n:04}")).await.unwrap();
                }
                let _ = report.send("sent all".to_owned());
            }
        },
    )]);
    assert_eq!(server.poll("/feed/0/s/xhr"), Frame::Open);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "sent all"
    );
    let Frame::Messages(kept) = server.poll("/feed/0/s/xhr") else {
        panic!("expected the newest messages");
    };
    assert_eq!(kept.len(), 25, "room for 25 4-byte messages");
    assert_eq!(kept.last().map(String::as_str), Some("0999"));
    let numbers: Vec<u32> = kept.iter().map(|m| m.parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the kept ones in order"
    );
}

#[test]
fn sigterm_closes_every_session_with_1001_and_exits_in_time() {
    let mut server = Server::start_with(&["--shutdown-timeout", "3s"]);
    let mut ws = ws_connect(server.port, "/echo/000/sd1/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    let mut stream = server
        .connect()
        .stream(&Request::post("/echo/000/sd2/xhr_streaming", b""));
    stream.next_line(); // prelude
    assert_eq!(stream.next_frame(), Frame::Open);
    let started = std::time::Instant::now();

    server.terminate();

    let going_away = close_frame(1001, "Server shutting down");
    assert_eq!(ws.next_frame(), going_away);
    assert_eq!(stream.next_frame(), going_away);
    assert_eq!(
        stream.read_line(),
        None,
        "the streaming response ends after its close frame"
    );
    let status = server
        .exited_within(Duration::from_secs(10))
        .expect("the gateway exits");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_websocket_client_that_stops_reading_is_closed_after_send_timeout() {
    let (tx, rx) = mpsc::channel();
    let options = Options {
        send_timeout: Duration::from_millis(300),
        max_queued_bytes: 64 * 1024,
        ..Options::default()
    };
    let server = InProcess::start(vec![flood(16 * 1024, options, tx)]);
    let mut ws = ws_connect(server.port, "/flood/0/w/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    // The client reads nothing more.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the session closed"),
        "SendTimeout"
    );
    let mut again = ws_connect(server.port, "/flood/0/w2/websocket", &[]);
    assert_eq!(again.next_frame(), Frame::Open, "the service is unharmed");
}

#[test]
fn a_session_bound_to_its_client_address_refuses_other_addresses() {
    let server = Server::start_with(&["--bind-session", "ip", "--trusted-proxy", "127.0.0.1/32"]);
    let from = |ip: &str, request: Request| server.request(request.header("X-Forwarded-For", ip));
    let open = from("198.51.100.1", Request::post("/echo/000/b1/xhr", b""));
    assert_eq!(open.text(), "o\n");
    let stranger = from(
        "198.51.100.2",
        Request::post("/echo/000/b1/xhr_send", br#"["intruder"]"#),
    );
    assert_eq!(stranger.status, 404);
    let stranger = from("198.51.100.2", Request::post("/echo/000/b1/xhr", b""));
    assert_eq!(
        stranger.status, 404,
        "no receiver for another address either"
    );
    let owner = from(
        "198.51.100.1",
        Request::post("/echo/000/b1/xhr_send", br#"["mine"]"#),
    );
    assert_eq!(owner.status, 204);
    let poll = from("198.51.100.1", Request::post("/echo/000/b1/xhr", b""));
    assert_eq!(
        poll.text(),
        "a[\"mine\"]\n",
        "nothing of the intruder's arrived"
    );
}

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let server = Server::start_with(&["--bind-session", "ip"]);
    // Not a trusted proxy: X-Forwarded-For is ignored, so both are 127.0.0.1.
    let open = server
        .request(Request::post("/echo/000/b2/xhr", b"").header("X-Forwarded-For", "198.51.100.1"));
    assert_eq!(open.text(), "o\n");
    let send = server.request(
        Request::post("/echo/000/b2/xhr_send", br#"["x"]"#)
            .header("X-Forwarded-For", "203.0.113.50"),
    );
    assert_eq!(send.status, 204);
}

#[test]
fn a_session_bound_to_a_cookie_refuses_other_cookies() {
    let server = Server::start_with(&["--bind-session", "cookie:token"]);
    let with = |token: &str, request: Request| {
        server.request(request.header("Cookie", &format!("a=1; token={token}")))
    };
    assert_eq!(
        with("alice", Request::post("/echo/000/c1/xhr", b"")).text(),
        "o\n"
    );
    assert_eq!(
        with(
            "mallory",
            Request::post("/echo/000/c1/xhr_send", br#"["x"]"#)
        )
        .status,
        404
    );
    assert_eq!(
        server.post("/echo/000/c1/xhr_send", br#"["x"]"#).status,
        404,
        "no cookie at all"
    );
    assert_eq!(
        with("alice", Request::post("/echo/000/c1/xhr_send", br#"["y"]"#)).status,
        204
    );
    assert_eq!(
        with("alice", Request::post("/echo/000/c1/xhr", b"")).text(),
        "a[\"y\"]\n"
    );
}

/// A handler that queues until the queue is full, then closes the session
/// as too slow, as the broadcast service does with a member that stopped reading.
fn close_when_full(options: Options) -> SockJs {
    SockJs::new("/full", options, |session: Session| async move {
        let mut n = 0u64;
        loop {
            match session.try_send(format!("{n:08}{}", "x".repeat(16 * 1024))) {
                Ok(()) => n += 1,
                Err(sockjs_gateway::SendError::Full) => {
                    session.close(4009, "Too slow to keep up");
                    break;
                }
                Err(_) => break,
            }
            actix_rt::task::yield_now().await;
        }
    })
}

#[test]
fn a_closed_session_whose_client_never_reads_its_close_is_let_go() {
    let options = Options {
        send_timeout: Duration::from_millis(300),
        max_queued_bytes: 64 * 1024,
        disconnect_delay: Duration::from_millis(200),
        response_limit: usize::MAX,
        ..Options::default()
    };
    let service = close_when_full(options);
    let server = InProcess::start(vec![service.clone()]);
    let mut ws = ws_connect(server.port, "/full/0/w/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    let mut stream = Conn::open(server.port).stream(&Request::post("/full/0/s/xhr_streaming", b""));
    stream.next_line(); // prelude
                        // Neither client reads any more. Both sessions must be let go, so their
                        // place and memory are not held until the TCP connections die.
    support::poll_until(
        "both stalled sessions to be let go",
        Duration::from_secs(20),
        || (service.session_count() == 0).then_some(()),
    );
}

#[test]
fn a_send_body_that_trickles_in_gets_408_and_the_session_lives_on() {
    let server = Server::start_with(&["--body-timeout", "300ms"]);
    assert_eq!(server.xhr("/echo", "slow").text(), "o\n");
    let mut conn = server.connect();
    // Announces 100 bytes, sends 2, then nothing.
    conn.write_all(b"POST /echo/000/slow/xhr_send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n[\"");
    let head = conn.read_head();
    assert_eq!(head.status, 408);
    server.send_ok("/echo", "slow", r#"["still fine"]"#);
    assert_eq!(
        server.poll("/echo", "slow"),
        Frame::Messages(vec!["still fine".into()])
    );
}

#[test]
fn ids_over_128_bytes_get_404_on_every_session_path_and_128_still_work() {
    let server = Server::start_with(&["--allow-jsonp"]);
    let over = "i".repeat(129);
    let long_server = format!("{}/s", "9".repeat(129));
    let requests = |server_and_session: &str| {
        let at = |name: &str| format!("/echo/{server_and_session}/{name}");
        vec![
            Request::post(&at("xhr"), b""),
            Request::post(&at("xhr_streaming"), b""),
            Request::post(&at("xhr_send"), br#"["x"]"#),
            Request::options(&at("xhr")),
            Request::options(&at("xhr_send")),
            Request::get(&at("eventsource")),
            Request::get(&at("htmlfile?c=cb")),
            Request::get(&at("jsonp?c=cb")),
            Request::post(&at("jsonp_send"), b"d=%5B%22x%22%5D")
                .header("Content-Type", "application/x-www-form-urlencoded"),
            support::ws_request(&at("websocket"), &[]),
            Request::post(&at("websocket"), b""),
        ]
    };
    for ids in [format!("000/{over}"), long_server] {
        for request in requests(&ids) {
            let label = format!("{} {}", request.method, request.path);
            let response = server.request(request);
            assert_eq!(
                (response.status, response.text().trim_end()),
                (404, "Server or session id longer than 128 bytes."),
                "{label}"
            );
        }
    }

    let longest = "i".repeat(128);
    assert_eq!(server.xhr("/echo", &longest).text(), "o\n");
    server.send_ok("/echo", &longest, r#"["at the cap"]"#);
    assert_eq!(
        server.poll("/echo", &longest),
        Frame::Messages(vec!["at the cap".into()])
    );
    let ws_id = format!("w{}", "i".repeat(127));
    let mut ws = ws_connect(server.port, &format!("/echo/000/{ws_id}/websocket"), &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
}

/// A loopback connection whose receive buffer is as small as the kernel
/// allows, so what the client leaves unread stays with the server.
fn connect_with_small_receive_buffer(port: u16) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect")
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

#[test]
fn a_client_pipelining_requests_it_never_reads_is_not_buffered_for() {
    use std::io::Write;

    const REQUESTS: usize = 100_000;
    /// What the gateway may grow by while the attack runs (it grew by
    /// 41 MiB before reads were gated on writes).
    const RSS_BOUND_KIB: u64 = 8 * 1024;

    let server = Server::start_with(&["--metrics", "127.0.0.1:0"]);
    let metrics = support::metrics_port(&server);
    let answered = || {
        support::metric_value(
            &support::scrape(metrics),
            r#"sockjs_http_responses_total{status="200"}"#,
        ) as u64
    };
    // Warm up the paths the attack uses, so what grows is what it piles up.
    for _ in 0..100 {
        assert_eq!(server.get("/echo/info").status, 200);
    }
    let before = rss_kib(server.pid());
    let answered_before = answered();

    let mut attacker = connect_with_small_receive_buffer(server.port);
    attacker
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = b"GET /echo/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let batch: Vec<u8> = request.repeat(1000);
    let mut written = 0;
    for _ in 0..REQUESTS / 1000 {
        // A write that cannot finish is the gateway no longer reading: what
        // the attack was meant to bring about.
        if attacker.write_all(&batch).is_err() {
            break;
        }
        written += 1000;
    }

    // The gateway stops answering the attacker once its answers pile up.
    let (answered_after, peak) =
        support::wait_until_answers_stop(metrics, server.pid(), Duration::from_secs(60));
    let answered_attack = answered_after - answered_before;
    assert!(
        answered_attack < REQUESTS as u64 / 2,
        "answered {answered_attack} of the {written} requests written, none of them read"
    );
    assert!(
        peak < before + RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB"
    );

    // Everyone else is served as before.
    let mut ws = ws_connect(server.port, "/echo/000/pipe/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["still here"]"#);
    assert_eq!(ws.messages(1), vec!["still here".to_owned()]);
    assert_eq!(server.get("/echo/info").status, 200);
    eprintln!(
        "pipelining: {written} requests written, {answered_attack} answered, RSS {before} -> peak {peak} KiB"
    );
    drop(attacker);
}

#[test]
fn smuggled_requests_get_400_and_never_reach_a_session() {
    let server = Server::start();
    assert_eq!(server.xhr("/echo", "smuggle").text(), "o\n");
    let smuggled = "POST /echo/000/smuggle/xhr_send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n\r\n[\"sneaked\"]";
    let heads = [
        // Content-Length and Transfer-Encoding together (CL.TE / TE.CL).
        format!("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Two Content-Lengths that disagree.
        format!(
            "Content-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        // A Transfer-Encoding that is not chunked last.
        format!("Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
    ];
    for head in heads {
        let mut conn = server.connect();
        conn.write_all(
            format!("POST /echo/000/other/xhr_send HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}")
                .as_bytes(),
        );
        let response = conn.read_head();
        assert_eq!(response.status, 400, "{head:?}");
        assert!(conn.closed_within(Duration::from_secs(10)), "{head:?}");
    }
    server.send_ok("/echo", "smuggle", r#"["mine"]"#);
    assert_eq!(
        server.poll("/echo", "smuggle"),
        Frame::Messages(vec!["mine".into()]),
        "nothing smuggled arrived"
    );
}

#[test]
fn a_ping_flood_whose_pongs_are_never_read_is_not_buffered_for() {
    use std::io::Write;

    const PINGS: usize = 1_000_000;
    const RSS_BOUND_KIB: u64 = 8 * 1024;
    let server = Server::start();
    let mut warm = ws_connect(server.port, "/echo/000/warm/websocket", &[]);
    assert_eq!(warm.next_frame(), Frame::Open);
    let before = rss_kib(server.pid());

    let mut flood = connect_with_small_receive_buffer(server.port);
    flood
        .write_all(&support::ws_request("/echo/000/pings/websocket", &[]).to_bytes(server.port))
        .unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // A masked ping with an empty payload, 6 bytes, again and again.
    let ping = [0x89u8, 0x80, 1, 2, 3, 4];
    let batch = ping.repeat(10_000);
    let mut sent = 0;
    let mut peak = before;
    while sent < PINGS {
        if flood.write_all(&batch).is_err() {
            break; // the gateway stopped reading: the backpressure wanted
        }
        sent += 10_000;
        peak = peak.max(rss_kib(server.pid()));
    }
    warm.send_text(r#"["unharmed"]"#);
    assert_eq!(warm.messages(1), vec!["unharmed".to_owned()]);
    peak = peak.max(rss_kib(server.pid()));
    assert!(
        peak < before + RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB after {sent} pings"
    );
    eprintln!("ping flood: {sent} pings sent, RSS {before} -> peak {peak} KiB");
    drop(flood);
}

#[test]
fn header_floods_and_deeply_nested_json_get_their_status_and_harm_nothing() {
    let server = Server::start();
    let mut many = Request::get("/echo/info");
    for n in 0..200 {
        many = many.header(&format!("X-Flood-{n}"), "x");
    }
    assert_eq!(server.request(many).status, 431, "200 headers");

    assert_eq!(server.xhr("/echo", "deep").text(), "o\n");
    let deep = format!("{}{}", "[".repeat(400_000), "]".repeat(400_000));
    let response = server.xhr_send("/echo", "deep", deep.as_bytes());
    assert_eq!(
        (response.status, response.text().trim_end()),
        (500, "Payload must be a JSON array of strings."),
        "800 KB of nesting"
    );
    let mut ws = ws_connect(server.port, "/echo/000/deepws/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(&deep);
    let (_, close) = ws.read_until_closed();
    assert_eq!(
        close,
        Some((1003, "Payload must be a JSON array of strings.".to_owned())),
        "a WebSocket message that is no array of strings closes its session"
    );
    server.send_ok("/echo", "deep", r#"["fine"]"#);
    assert_eq!(
        server.poll("/echo", "deep"),
        Frame::Messages(vec!["fine".into()])
    );
}
