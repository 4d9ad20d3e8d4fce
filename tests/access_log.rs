//! `--access-log`: one line per ended session, on every transport and for
//! every way a session ends, read back from the file the gateway writes.

mod support;
mod upstreams;

use std::time::Duration;

use serde_json::{json, Value};
use support::access_log::{by_session, plain_fields, LogFile};
use support::{
    close_frame, metric_value, metrics_port, poll_until, scrape, sid, start_refused_with,
    ws_connect, Conn, Frame, Request, Server,
};
use tokio_tungstenite::tungstenite;

/// A gateway writing JSON lines to `log`, trusting 127.0.0.1 to name clients.
fn json_gateway(log: &LogFile) -> Server {
    Server::start_with(&[
        "--access-log",
        log.path_str(),
        "--access-log-format",
        "json",
        "--trusted-proxy",
        "127.0.0.1",
        "--disconnect-delay",
        "300ms",
    ])
}

/// Closes from the client side and waits for the connection to end.
fn close_with(ws: &mut support::Ws, code: u16, reason: &str) {
    ws.ws
        .close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
        .unwrap();
    // tungstenite takes the server's answering close itself.
    let (texts, _) = ws.read_until_closed();
    assert!(texts.is_empty(), "{texts:?}");
}

/// The fields that do not depend on timing.
fn fixed(record: &Value) -> Value {
    let mut record = record.clone();
    let object = record.as_object_mut().expect("an object");
    for key in ["time", "start", "duration_ms"] {
        assert!(
            object.remove(key).is_some(),
            "{key} missing from {record:?}"
        );
    }
    record
}

fn post(path: &str, client: &str) -> Request {
    Request::post(path, b"").header("X-Forwarded-For", client)
}

fn get(path: &str, client: &str) -> Request {
    Request::get(path).header("X-Forwarded-For", client)
}

#[test]
fn websocket_sessions_closed_by_the_client_log_their_traffic_and_close() {
    let log = LogFile::new("access-ws");
    let server = json_gateway(&log);
    // A handshake refused (no key) opens no session, and logs none.
    let refused = server.request(support::ws_request(
        "/echo/000/refused/websocket",
        &[("Sec-WebSocket-Key", "")],
    ));
    assert_eq!(refused.status, 400, "{}", refused.body_lossy());
    let id = sid();
    let mut ws = ws_connect(
        server.port,
        &format!("/echo/000/{id}/websocket"),
        &[("X-Forwarded-For", "203.0.113.1")],
    );
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["hello","wörld"]"#);
    assert_eq!(ws.messages(2), ["hello", "wörld"]);
    close_with(&mut ws, 4000, "bye \"now\"");
    let record = log.json_record("the websocket session's line", by_session(&id));
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/echo", "session": id, "transport": "websocket",
            "transports": ["websocket"], "client": "203.0.113.1",
            "messages_in": 2, "bytes_in": 11, "messages_out": 2, "bytes_out": 11,
            "end": "client", "code": 4000, "reason": "bye \"now\"",
        })
    );
    assert!(record["duration_ms"].as_f64().unwrap() > 0.0);
    // Its line would have come first.
    assert!(
        !log.lines().iter().any(|line| line.contains("refused")),
        "{:?}",
        log.lines()
    );
}

#[test]
fn raw_websocket_sessions_have_no_session_id() {
    let log = LogFile::new("access-raw");
    let server = json_gateway(&log);
    let mut ws = ws_connect(
        server.port,
        "/echo/websocket",
        &[("X-Forwarded-For", "203.0.113.2")],
    );
    ws.send_text("abc");
    assert_eq!(ws.next_text(), "abc");
    close_with(&mut ws, 1000, "");
    let record = log.json_record("the raw websocket's line", |r| r["client"] == "203.0.113.2");
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/echo", "session": null, "transport": "websocket-raw",
            "transports": ["websocket-raw"], "client": "203.0.113.2",
            "messages_in": 1, "bytes_in": 3, "messages_out": 1, "bytes_out": 3,
            "end": "client", "code": 1000, "reason": "",
        })
    );
}

#[test]
fn a_server_close_over_xhr_streaming_and_htmlfile_logs_its_code_and_reason() {
    let log = LogFile::new("access-close");
    let server = json_gateway(&log);
    let streaming = sid();
    let mut body = Conn::open(server.port).stream(&post(
        &format!("/close/000/{streaming}/xhr_streaming"),
        "203.0.113.3",
    ));
    body.read_to_end();
    let htmlfile = sid();
    let mut body = Conn::open(server.port).stream(&get(
        &format!("/close/000/{htmlfile}/htmlfile?c=cb"),
        "203.0.113.4",
    ));
    body.read_to_end();
    for (id, transport, client) in [
        (&streaming, "xhr-streaming", "203.0.113.3"),
        (&htmlfile, "htmlfile", "203.0.113.4"),
    ] {
        let record = log.json_record(transport, by_session(id));
        assert_eq!(
            fixed(&record),
            json!({
                "service": "/close", "session": id, "transport": transport,
                "transports": [transport], "client": client,
                "messages_in": 0, "bytes_in": 0, "messages_out": 0, "bytes_out": 0,
                "end": "closed", "code": 3000, "reason": "Go away!",
            })
        );
    }
}

#[test]
fn polling_sessions_log_the_transports_they_used_and_time_out() {
    let log = LogFile::new("access-timeout");
    let server = json_gateway(&log);
    let xhr = sid();
    let first = server.request(post(&format!("/echo/000/{xhr}/xhr"), "203.0.113.5"));
    assert_eq!(first.text(), "o\n");
    server.send_ok("/echo", &xhr, r#"["x","yz"]"#);
    // The second poll comes by xhr_streaming (both transports are logged),
    // and its connection drops: interrupted. The jsonp session times out.
    let mut streaming = support::xhr_streaming(server.port, "/echo", &xhr);
    streaming.expect_prelude();
    assert_eq!(
        streaming.next_frame(),
        Frame::Messages(vec!["x".into(), "yz".into()])
    );
    drop(streaming);
    let jsonp = sid();
    let first = server.request(get(&format!("/echo/000/{jsonp}/jsonp?c=cb"), "203.0.113.6"));
    assert_eq!(first.status, 200);
    server.jsonp_send_form_ok("/echo", &jsonp, r#"["ping"]"#);
    assert_eq!(server.jsonp_messages("/echo", &jsonp, 1), ["ping"]);

    let record = log.json_record("the xhr session's line", by_session(&xhr));
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/echo", "session": xhr, "transport": "xhr-polling",
            "transports": ["xhr-polling", "xhr-streaming"], "client": "203.0.113.5",
            "messages_in": 2, "bytes_in": 3, "messages_out": 2, "bytes_out": 3,
            "end": "interrupted", "code": 1002, "reason": "Connection interrupted",
        })
    );
    let record = log.json_record("the jsonp session's line", by_session(&jsonp));
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/echo", "session": jsonp, "transport": "jsonp-polling",
            "transports": ["jsonp-polling"], "client": "203.0.113.6",
            "messages_in": 1, "bytes_in": 4, "messages_out": 1, "bytes_out": 4,
            "end": "timeout", "code": null, "reason": null,
        })
    );
}

#[test]
fn a_dropped_eventsource_connection_is_interrupted() {
    let log = LogFile::new("access-interrupted");
    let server = json_gateway(&log);
    let id = sid();
    let mut events =
        Conn::open(server.port).stream(&get(&format!("/echo/000/{id}/eventsource"), "203.0.113.7"));
    events.expect_eventsource_prelude();
    assert_eq!(events.next_event_frame(), Frame::Open);
    server.send_ok("/echo", &id, r#"["hi"]"#);
    assert_eq!(
        events.next_event_frame(),
        Frame::Messages(vec!["hi".into()])
    );
    events.abort();
    let record = log.json_record("the eventsource session's line", by_session(&id));
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/echo", "session": id, "transport": "eventsource",
            "transports": ["eventsource"], "client": "203.0.113.7",
            "messages_in": 1, "bytes_in": 2, "messages_out": 1, "bytes_out": 2,
            "end": "interrupted", "code": 1002, "reason": "Connection interrupted",
        })
    );
}

#[test]
fn plain_lines_carry_every_field_in_order() {
    let log = LogFile::new("access-plain");
    let server = Server::start_with(&[
        "--access-log",
        log.path_str(),
        "--disconnect-delay",
        "300ms",
    ]);
    let ws_id = sid();
    let mut ws = server.ws(&format!("/close/000/{ws_id}/websocket"));
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(ws.next_frame(), close_frame(3000, "Go away!"));
    // No --trusted-proxy: the header names nobody.
    let xhr_id = sid();
    let path = format!("/close/000/{xhr_id}/xhr");
    assert_eq!(server.request(post(&path, "203.0.113.8")).text(), "o\n");
    assert_eq!(
        server.poll("/close", &xhr_id),
        close_frame(3000, "Go away!")
    );

    for (id, transport) in [(&ws_id, "websocket "), (&xhr_id, "xhr-polling ")] {
        let line = log.plain_line(&format!("session={id} "));
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
        let transports = match transport {
            "websocket " => String::new(),
            _ => " transports=xhr-polling".to_owned(),
        };
        let head = format!("/close {transport}127.0.0.1 session={id}{transports} duration=");
        assert!(rest.starts_with(&head), "{line}");
        assert!(
            rest.ends_with(" in=0/0B out=0/0B end=closed code=3000 reason=\"Go away!\""),
            "{line}"
        );
        let duration = &plain_fields(&line)["duration"];
        let seconds: f64 = duration.strip_suffix('s').unwrap().parse().unwrap();
        assert!((0.0..5.0).contains(&seconds), "{line}");
    }
}

#[test]
fn a_log_file_that_cannot_be_opened_refuses_to_start() {
    let (status, stderr) = start_refused_with(&[
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "/nonexistent-directory/access.log",
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: cannot open access log /nonexistent-directory/access.log: no such file or directory"
        ),
        "{stderr}"
    );
}

/// The writer is held up for real: the log is a FIFO that nobody reads
/// until the end, so once the pipe and the writer's buffer are full, the
/// queue (8 lines here) fills and further lines are dropped and counted,
/// while every session still opens and closes at once.
#[test]
fn a_writer_that_cannot_keep_up_drops_lines_and_counts_them() {
    let dir = support::fresh_temp_dir("access-fifo");
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // Opening a FIFO waits for the other end: the gateway opens it to write.
    let (opened, reader) = std::sync::mpsc::channel();
    let reading = fifo.clone();
    std::thread::spawn(move || {
        let _ = opened.send(std::fs::File::open(reading).expect("open the FIFO to read"));
    });
    let server = Server::start_with(&[
        "--access-log",
        fifo.to_str().unwrap(),
        "--access-log-buffer",
        "8",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let reader = reader
        .recv_timeout(Duration::from_secs(10))
        .expect("the gateway opened the FIFO");
    let metrics = metrics_port(&server);

    // Long session ids make long lines: a pipe (64 KiB) and the writer's
    // buffer (64 KiB) take about 280 of them (measured) before the writer blocks.
    const SESSIONS: usize = 1200;
    const THREADS: usize = 4;
    let port = server.port;
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                for n in 0..SESSIONS / THREADS {
                    let id = format!("{thread}-{n}-{}", "x".repeat(100));
                    let mut ws = ws_connect(port, &format!("/close/000/{id}/websocket"), &[]);
                    assert_eq!(ws.next_frame(), Frame::Open);
                    assert_eq!(ws.next_frame(), close_frame(3000, "Go away!"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("every session opened and closed");
    }
    let figures = |text: &str| {
        (
            metric_value(text, "sockjs_access_log_lines_total") as usize,
            metric_value(text, "sockjs_access_log_dropped_total") as usize,
        )
    };
    let (_, dropped) = figures(&scrape(metrics));
    assert!(dropped > 0, "nothing dropped with nobody reading");

    // Now read: what was queued gets written, and written + dropped adds up.
    let read_lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = read_lines.clone();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(reader);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
            assert!(
                line.ends_with("end=closed code=3000 reason=\"Go away!\"\n"),
                "{line}"
            );
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            line.clear();
        }
    });
    let (written, dropped) = poll_until(
        "every line written or dropped, and read",
        Duration::from_secs(20),
        || {
            let (written, dropped) = figures(&scrape(metrics));
            let read = read_lines.load(std::sync::atomic::Ordering::SeqCst);
            (written + dropped == SESSIONS && read == written).then_some((written, dropped))
        },
    );
    assert!(
        written > 8 && dropped > 0,
        "{written} written, {dropped} dropped"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sessions_open_at_shutdown_are_logged_before_the_process_exits() {
    let log = LogFile::new("access-shutdown");
    let mut server = json_gateway(&log);
    let mut ws = server.ws("/echo/000/held/websocket");
    assert_eq!(ws.next_frame(), Frame::Open);
    // A polling session with no receiver attached when the signal comes.
    let idle = server.open_xhr_session("/echo");
    server.terminate();
    assert_eq!(ws.next_frame(), close_frame(1001, "Server shutting down"));
    assert!(server.exited_within(Duration::from_secs(15)).is_some());
    for id in ["held", idle.as_str()] {
        let record = log.json_record(id, by_session(id));
        assert_eq!(record["end"], "shutdown", "{record}");
        assert_eq!(record["code"], 1001, "{record}");
    }
}

#[test]
fn relay_sessions_are_logged_with_the_relay_s_close() {
    let log = LogFile::new("access-relay");
    let upstream = upstreams::lines();
    let relay = format!("/lines=tcp://127.0.0.1:{}", upstream.port);
    let server = Server::start_with(&[
        "--access-log",
        log.path_str(),
        "--access-log-format",
        "json",
        "--relay",
        &relay,
    ]);
    let id = sid();
    let mut ws = server.ws(&format!("/lines/000/{id}/websocket"));
    assert_eq!(ws.next_frame(), Frame::Open);
    upstream.expect_connected();
    ws.send_text(r#"["hi"]"#);
    assert_eq!(ws.messages(1), ["up:hi"]);
    ws.send_text(r#"["bye"]"#);
    assert_eq!(ws.next_frame(), close_frame(4500, "Upstream closed"));
    let record = log.json_record("the relay session's line", by_session(&id));
    assert_eq!(
        fixed(&record),
        json!({
            "service": "/lines", "session": id, "transport": "websocket",
            "transports": ["websocket"], "client": "127.0.0.1",
            "messages_in": 2, "bytes_in": 5, "messages_out": 1, "bytes_out": 5,
            "end": "closed", "code": 4500, "reason": "Upstream closed",
        })
    );
}

#[test]
fn the_config_file_names_the_log_relative_to_itself() {
    let dir = support::fresh_temp_dir("access-config");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        "access_log = \"sessions.log\"\naccess_log_format = \"json\"\n",
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let mut ws = server.ws("/close/websocket");
    let (_, close) = ws.read_until_closed();
    assert_eq!(close, Some((3000, "Go away!".to_owned())));
    let path = dir.join("sessions.log");
    let line = poll_until("the line in sessions.log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&path).ok()?;
        text.lines().next().map(str::to_owned)
    });
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["transport"], "websocket-raw");
    assert_eq!(record["code"], 3000);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dash_writes_the_log_to_standard_output() {
    let (server, stdout) = Server::start_reading_stdout(&["--access-log", "-"]);
    let mut ws = ws_connect(server.port, "/close/000/to-stdout/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(ws.next_frame(), close_frame(3000, "Go away!"));
    let line = stdout
        .recv_timeout(Duration::from_secs(10))
        .expect("a line on standard output");
    assert!(
        line.contains(" /close websocket 127.0.0.1 session=to-stdout duration="),
        "{line}"
    );
}
