//! The library's session API, over real connections to services mounted
//! in-process with handlers written for each test.

mod in_process;
mod support;

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use in_process::InProcess;
use sockjs_gateway::{Options, SendError, Session, SockJs, Transports};
use support::{close_frame, ws_connect, Conn, Frame, Request, WsEvent};
use tokio_tungstenite::tungstenite;

const WAIT: Duration = Duration::from_secs(10);

fn short_options() -> Options {
    Options {
        disconnect_delay: Duration::from_millis(300),
        ..Options::default()
    }
}

/// A service whose handler first reports something about its session on
/// `report`, then echoes.
fn reporting_echo(
    prefix: &str,
    options: Options,
    report: Sender<String>,
    describe: fn(&Session) -> String,
) -> SockJs {
    SockJs::new(prefix, options, move |session: Session| {
        let report = report.clone();
        async move {
            let _ = report.send(describe(&session));
            while let Some(message) = session.recv().await {
                if session.send(message).await.is_err() {
                    break;
                }
            }
        }
    })
}

fn next(report: &Receiver<String>) -> String {
    report.recv_timeout(WAIT).expect("the handler reported")
}

#[test]
fn one_handler_runs_unchanged_on_every_transport_and_knows_which() {
    let (tx, rx) = mpsc::channel();
    let server = InProcess::start(vec![reporting_echo("/app", Options::default(), tx, |s| {
        s.peer().transport().to_owned()
    })]);

    assert_eq!(server.poll("/app/0/p1/xhr"), Frame::Open);
    assert_eq!(next(&rx), "xhr-polling");
    assert_eq!(
        server.post("/app/0/p1/xhr_send", br#"["polled"]"#).status,
        204
    );
    assert_eq!(
        server.poll("/app/0/p1/xhr"),
        Frame::Messages(vec!["polled".into()])
    );

    let mut stream = Conn::open(server.port).stream(&Request::post("/app/0/s1/xhr_streaming", b""));
    stream.next_line(); // prelude
    assert_eq!(stream.next_frame(), Frame::Open);
    assert_eq!(next(&rx), "xhr-streaming");
    assert_eq!(
        server.post("/app/0/s1/xhr_send", br#"["streamed"]"#).status,
        204
    );
    assert_eq!(
        stream.next_frame(),
        Frame::Messages(vec!["streamed".into()])
    );

    let mut ws = ws_connect(server.port, "/app/0/w1/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(next(&rx), "websocket");
    ws.send_text(r#"["framed"]"#);
    assert_eq!(ws.messages(1), vec!["framed".to_owned()]);

    let mut raw = ws_connect(server.port, "/app/websocket", &[]);
    raw.send_text("raw");
    assert_eq!(raw.next_event(), WsEvent::Text("raw".into()));
    assert_eq!(next(&rx), "websocket-raw");
}

#[test]
fn peer_shows_allowed_headers_address_path_and_query_but_never_the_session_id() {
    let (tx, rx) = mpsc::channel();
    let server = InProcess::start(vec![reporting_echo("/app", Options::default(), tx, |s| {
        let peer = s.peer();
        format!(
            "{}|{}|{}|{:?}|{:?}|{}|{:?}",
            peer.remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            peer.path(),
            peer.query(),
            peer.header("User-Agent"),
            peer.header("x-forwarded-for"),
            s.id(),
            peer.header("authorization"),
        )
    })]);
    let request = Request::post("/app/000/secret-session-id/xhr?token=t1", b"")
        .header("User-Agent", "probe/1.0")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("Authorization", "Bearer hidden");
    let response = Conn::open(server.port).request(&request);
    assert_eq!(response.text(), "o\n");
    let report = next(&rx);
    let fields: Vec<&str> = report.split('|').collect();
    assert_eq!(fields[0], "127.0.0.1");
    assert_eq!(fields[1], "/app");
    assert_eq!(fields[2], "token=t1");
    assert_eq!(fields[3], r#"Some("probe/1.0")"#);
    assert_eq!(fields[4], r#"Some("203.0.113.7")"#);
    assert!(
        fields[5].parse::<u64>().is_ok(),
        "opaque numeric id: {report}"
    );
    assert_eq!(
        fields[6], "None",
        "headers outside the allow-list stay hidden"
    );
    assert!(!report.contains("secret-session-id"), "{report}");
}

/// Runs `handler`, and reports how each session ended.
fn service_reporting_close<F, Fut>(
    prefix: &str,
    options: Options,
    report: Sender<String>,
    handler: F,
) -> SockJs
where
    F: Fn(Session) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let handler = std::sync::Arc::new(handler);
    SockJs::new(prefix, options, move |session: Session| {
        let report = report.clone();
        let handler = handler.clone();
        async move {
            let watcher = session.clone();
            actix_rt::spawn(async move {
                let reason = watcher.closed().await;
                let _ = report.send(format!("{reason:?}"));
            });
            handler(session).await;
        }
    })
}

async fn echo(session: Session) {
    while let Some(message) = session.recv().await {
        if session.send(message).await.is_err() {
            break;
        }
    }
}

#[test]
fn application_learns_why_each_session_closed() {
    let (tx, rx) = mpsc::channel();
    let server = InProcess::start(vec![
        service_reporting_close("/echo", short_options(), tx.clone(), echo),
        service_reporting_close("/bye", short_options(), tx, |session: Session| async move {
            session.close(4001, "done here");
        }),
    ]);

    // A dropped long-poll interrupts its session.
    assert_eq!(server.poll("/echo/0/drop/xhr"), Frame::Open);
    let mut conn = Conn::open(server.port);
    conn.send(&Request::post("/echo/0/drop/xhr", b""));
    // The second poll is attached once a third is refused with 2010.
    support::poll_until("the long-poll to attach", WAIT, || {
        match server.poll("/echo/0/drop/xhr") {
            Frame::Close(2010, _) => Some(()),
            _ => None,
        }
    });
    conn.shutdown();
    drop(conn);
    assert_eq!(next(&rx), "Interrupted");
    assert_eq!(
        server.poll("/echo/0/drop/xhr"),
        close_frame(1002, "Connection interrupted")
    );

    // No receiver within disconnect_delay: timeout.
    assert_eq!(server.poll("/echo/0/idle/xhr"), Frame::Open);
    assert_eq!(next(&rx), "Timeout");
    assert_eq!(
        server.poll("/echo/0/idle/xhr"),
        Frame::Open,
        "a forgotten id starts anew"
    );

    // The client closes its WebSocket with a code and reason.
    let mut ws = ws_connect(server.port, "/echo/0/w/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.ws
        .close(Some(tungstenite::protocol::CloseFrame {
            code: 4000u16.into(),
            reason: "client leaves".into(),
        }))
        .unwrap();
    assert_eq!(
        next(&rx),
        r#"Client { code: 4000, reason: "client leaves" }"#
    );

    // The application closes.
    let mut ws = ws_connect(server.port, "/bye/0/w/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(ws.next_frame(), close_frame(4001, "done here"));
    assert_eq!(
        next(&rx),
        r#"Application { code: 4001, reason: "done here" }"#
    );
}

#[test]
fn a_handler_that_returns_closes_its_session_normally() {
    let server = InProcess::start(vec![SockJs::new(
        "/once",
        Options::default(),
        |session: Session| async move {
            let _ = session.send("only message").await;
        },
    )]);
    let mut ws = ws_connect(server.port, "/once/0/a/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(
        ws.next_frame(),
        Frame::Messages(vec!["only message".into()])
    );
    assert_eq!(ws.next_frame(), close_frame(1000, "Normal closure"));
}

#[test]
fn a_panicking_handler_closes_only_its_own_session_with_1011() {
    let server = InProcess::start(vec![
        SockJs::new(
            "/faulty",
            Options::default(),
            |session: Session| async move {
                if session.recv().await.as_deref() == Some("boom") {
                    panic!("handler bug");
                }
            },
        ),
        SockJs::new("/echo", Options::default(), echo),
    ]);
    let mut bystander = ws_connect(server.port, "/echo/0/b/websocket", &[]);
    assert_eq!(bystander.next_frame(), Frame::Open);

    let mut ws = ws_connect(server.port, "/faulty/0/a/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["boom"]"#);
    assert_eq!(ws.next_frame(), close_frame(1011, "Internal error"));

    bystander.send_text(r#"["still here"]"#);
    assert_eq!(bystander.messages(1), vec!["still here".to_owned()]);
    let mut again = ws_connect(server.port, "/faulty/0/c/websocket", &[]);
    assert_eq!(again.next_frame(), Frame::Open, "the service keeps serving");
}

#[test]
fn send_waits_while_the_queue_is_full_and_try_send_says_so() {
    let (tx, rx) = mpsc::channel();
    let options = Options {
        max_queued_bytes: 8,
        ..Options::default()
    };
    let server = InProcess::start(vec![SockJs::new("/q", options, move |session: Session| {
        let report = tx.clone();
        async move {
            session.try_send("12345678").unwrap();
            let refused = session.try_send("abc");
            let _ = report.send(format!("{refused:?}"));
            session.send("after drain").await.unwrap();
            let _ = report.send("sent".to_owned());
        }
    })]);
    assert_eq!(server.poll("/q/0/s/xhr"), Frame::Open);
    assert_eq!(next(&rx), format!("{:?}", Err::<(), _>(SendError::Full)));
    assert_eq!(
        server.poll("/q/0/s/xhr"),
        Frame::Messages(vec!["12345678".into()])
    );
    assert_eq!(
        next(&rx),
        "sent",
        "send went through once the queue drained"
    );
    assert_eq!(
        server.poll("/q/0/s/xhr"),
        Frame::Messages(vec!["after drain".into()])
    );
}

#[test]
fn messages_sent_without_a_receiver_wait_in_order() {
    let server = InProcess::start(vec![SockJs::new(
        "/burst",
        Options::default(),
        |session: Session| async move {
            for i in 0..1000 {
                session.send(i.to_string()).await.unwrap();
            }
            session.close(3000, "done");
        },
    )]);
    assert_eq!(server.poll("/burst/0/s/xhr"), Frame::Open);
    let mut received = Vec::new();
    loop {
        match server.poll("/burst/0/s/xhr") {
            Frame::Messages(m) => received.extend(m),
            Frame::Close(3000, _) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}

#[test]
fn transports_can_be_switched_off_one_by_one() {
    let options = Options {
        transports: Transports {
            websocket: false,
            xhr_streaming: false,
            ..Transports::default()
        },
        ..Options::default()
    };
    let server = InProcess::start(vec![SockJs::new("/some", options, echo)]);
    let info = Conn::open(server.port).request(&Request::get("/some/info"));
    assert!(
        info.text().contains(r#""websocket":false"#),
        "{}",
        info.text()
    );
    for path in [
        "/some/0/a/xhr_streaming",
        "/some/websocket",
        "/some/0/a/websocket",
    ] {
        let method = if path.ends_with("streaming") {
            "POST"
        } else {
            "GET"
        };
        let response = Conn::open(server.port).request(&Request::new(method, path));
        assert_eq!(response.status, 404, "{path}");
    }
    assert_eq!(
        server.poll("/some/0/a/xhr"),
        Frame::Open,
        "the others still work"
    );
}

#[test]
fn zero_heartbeat_delay_turns_heartbeats_off() {
    let quiet = Options {
        heartbeat_delay: Duration::ZERO,
        ..Options::default()
    };
    let chatty = Options {
        heartbeat_delay: Duration::from_millis(100),
        ..Options::default()
    };
    let server = InProcess::start(vec![
        SockJs::new("/quiet", quiet, echo),
        SockJs::new("/chatty", chatty, echo),
    ]);
    let mut quiet = ws_connect(server.port, "/quiet/0/q/websocket", &[]);
    assert_eq!(quiet.next_frame(), Frame::Open);
    let mut chatty = ws_connect(server.port, "/chatty/0/c/websocket", &[]);
    assert_eq!(chatty.next_frame(), Frame::Open);
    // Three heartbeats on the other service are the clock: 300 ms went by.
    for _ in 0..3 {
        assert_eq!(chatty.next_frame(), Frame::Heartbeat);
    }
    quiet.send_text(r#"["ping"]"#);
    assert_eq!(
        quiet.next_frame(),
        Frame::Messages(vec!["ping".into()]),
        "no heartbeat came before the echo"
    );
}

#[test]
fn a_body_over_max_message_bytes_is_refused_with_413_and_delivers_nothing() {
    let options = Options {
        max_message_bytes: 64,
        ..Options::default()
    };
    let server = InProcess::start(vec![SockJs::new("/small", options, echo)]);
    assert_eq!(server.poll("/small/0/s/xhr"), Frame::Open);
    let big = format!(r#"["{}"]"#, "x".repeat(100));
    let response = server.post("/small/0/s/xhr_send", big.as_bytes());
    assert_eq!(response.status, 413);
    assert_eq!(response.text().trim_end(), "Payload too large.");
    assert_eq!(
        server.post("/small/0/s/xhr_send", br#"["fits"]"#).status,
        204
    );
    assert_eq!(
        server.poll("/small/0/s/xhr"),
        Frame::Messages(vec!["fits".into()])
    );
}

#[test]
fn two_services_in_one_app_keep_their_sessions_apart() {
    let (tx, rx) = mpsc::channel();
    let server = InProcess::start(vec![
        reporting_echo("/a", Options::default(), tx.clone(), |s| {
            s.peer().path().to_owned()
        }),
        reporting_echo("/b", Options::default(), tx, |s| s.peer().path().to_owned()),
    ]);
    assert_eq!(server.poll("/a/0/same/xhr"), Frame::Open);
    assert_eq!(next(&rx), "/a");
    assert_eq!(
        server.poll("/b/0/same/xhr"),
        Frame::Open,
        "a new session under /b"
    );
    assert_eq!(next(&rx), "/b");
    assert_eq!(
        server.post("/a/0/same/xhr_send", br#"["for a"]"#).status,
        204
    );
    assert_eq!(
        server.post("/b/0/same/xhr_send", br#"["for b"]"#).status,
        204
    );
    assert_eq!(
        server.poll("/a/0/same/xhr"),
        Frame::Messages(vec!["for a".into()])
    );
    assert_eq!(
        server.poll("/b/0/same/xhr"),
        Frame::Messages(vec!["for b".into()])
    );
}

struct User(String);

#[test]
fn the_admission_check_refuses_before_any_session_and_carries_data_into_admitted_ones() {
    let (tx, rx) = mpsc::channel();
    let service = SockJs::new("/private", Options::default(), move |session: Session| {
        let report = tx.clone();
        async move {
            let user = session.data::<User>().map(|u| u.0.clone());
            let _ = report.send(format!("{user:?}"));
        }
    })
    .with_admission(|request: sockjs_gateway::AdmissionRequest| async move {
        match request.cookie("token") {
            Some("secret") => Ok(Some(
                std::sync::Arc::new(User("ada".into())) as sockjs_gateway::SessionData
            )),
            _ => Err(sockjs_gateway::Refusal::new(401, "Log in first.")),
        }
    });
    let server = InProcess::start(vec![service]);
    let refused = Conn::open(server.port).request(&Request::get("/private/info"));
    assert_eq!(
        (refused.status, refused.text()),
        (401, "Log in first.".to_owned())
    );
    let refused = server.post("/private/0/s/xhr", b"");
    assert_eq!(refused.status, 401);
    let refused = server.post("/private/0/s/xhr_send", br#"["x"]"#);
    assert_eq!(refused.status, 404, "no session was created");
    let mut conn = Conn::open(server.port);
    let refused = conn.request(&support::ws_request("/private/0/w/websocket", &[]));
    assert_eq!(refused.status, 401);

    let admitted = Conn::open(server.port)
        .request(&Request::post("/private/0/s/xhr", b"").header("Cookie", "token=secret"));
    assert_eq!(admitted.text(), "o\n");
    assert_eq!(next(&rx), r#"Some("ada")"#);
    let mut ws = ws_connect(
        server.port,
        "/private/0/w/websocket",
        &[("Cookie", "token=secret")],
    );
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(next(&rx), r#"Some("ada")"#);
}

#[test]
fn an_end_observer_hears_every_session_once_with_its_record() {
    use sockjs_gateway::{SessionEnd, SessionRecord};
    let (ended, records) = mpsc::channel::<SessionRecord>();
    let ended = std::sync::Mutex::new(ended);
    let echo = SockJs::new("/echo", short_options(), |session: Session| async move {
        while let Some(message) = session.recv().await {
            let _ = session.send(message).await;
        }
    })
    .on_session_end(move |record| {
        let _ = ended.lock().unwrap().send(record);
    });
    let server = InProcess::start(vec![echo]);
    let mut ws = ws_connect(server.port, "/echo/0/observed/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["one","two"]"#);
    assert_eq!(ws.messages(2), ["one", "two"]);
    ws.ws
        .close(Some(tungstenite::protocol::CloseFrame {
            code: 4000u16.into(),
            reason: "done".into(),
        }))
        .unwrap();
    let record = records.recv_timeout(WAIT).expect("the session's record");
    assert_eq!(record.service, "/echo");
    assert_eq!(record.session_id.as_deref(), Some("observed"));
    assert_eq!(record.transport, "websocket");
    assert_eq!(record.client_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        (record.traffic.messages_in, record.traffic.bytes_in),
        (2, 6)
    );
    assert_eq!(
        (record.traffic.messages_out, record.traffic.bytes_out),
        (2, 6)
    );
    assert_eq!(
        record.end,
        SessionEnd::ClientClosed {
            code: 4000,
            reason: "done".into()
        }
    );
    assert!(
        records.recv_timeout(Duration::from_millis(500)).is_err(),
        "one record per session"
    );
}

#[test]
fn shutdown_returns_once_attached_receivers_took_their_close_not_at_its_timeout() {
    let service = SockJs::new("/echo", Options::default(), echo);
    let server = InProcess::start(vec![service.clone()]);
    let mut ws = ws_connect(server.port, "/echo/000/sd1/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    let mut stream =
        Conn::open(server.port).stream(&Request::post("/echo/000/sd2/xhr_streaming", b""));
    stream.next_line(); // prelude
    assert_eq!(stream.next_frame(), Frame::Open);
    assert_eq!(
        server.poll("/echo/000/sd3/xhr"),
        Frame::Open,
        "a session with no receiver"
    );

    let (done_tx, done_rx) = mpsc::channel();
    let stopping = std::thread::spawn(move || {
        actix_rt::System::new().block_on(service.shutdown(Duration::from_secs(120)));
        done_tx.send(()).unwrap();
    });

    let going_away = close_frame(1001, "Server shutting down");
    assert_eq!(ws.next_frame(), going_away);
    assert_eq!(stream.next_frame(), going_away);
    done_rx
        .recv_timeout(WAIT)
        .expect("shutdown returned once both receivers were done, long before its 120 s");
    stopping.join().unwrap();
    assert_eq!(
        server.poll("/echo/000/sd3/xhr"),
        going_away,
        "the session without a receiver kept its close for the next request"
    );
    assert_eq!(
        server.post("/echo/000/sd4/xhr", b"").status,
        503,
        "no new session"
    );
}
