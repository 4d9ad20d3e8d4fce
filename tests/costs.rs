//! Memory bounded by what things cost, not by what they claim: empty
//! messages, lying WebSocket frame headers and clients that stop reading,
//! against the real binary, with its RSS read from /proc.

mod support;

use std::time::{Duration, Instant};

use support::stalled::{self, GONE_WITHIN};
use support::{Conn, Frame, Request, Server, WsEvent};
use tokio_tungstenite::tungstenite;

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A JSON array of empty strings that fills `limit` bytes.
fn empty_strings(limit: usize) -> (Vec<u8>, usize) {
    let count = (limit - 1) / 3;
    let mut body = Vec::with_capacity(limit);
    body.push(b'[');
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"\"");
    }
    body.push(b']');
    (body, count)
}

#[test]
fn a_flood_of_empty_strings_hits_the_bounds_like_any_payload() {
    let server = Server::start_with(&["--disconnect-delay", "60s"]);
    let pid = server.pid();
    assert_eq!(server.xhr("/echo", "empties").text(), "o\n");
    let before = proc_kib(pid, "VmRSS");
    let (body, count) = empty_strings(1024 * 1024);
    assert_eq!((body.len(), count), (1024 * 1024, 349_525));
    // 20 MiB of sends, 7 million empty strings; nobody polls the session.
    let request = Request::post("/echo/000/empties/xhr_send", &body);
    let sends: Vec<Conn> = (0..20)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(&request);
            conn
        })
        .collect();
    // Another session is served meanwhile.
    assert_eq!(server.xhr("/echo", "bystander").text(), "o\n");
    server.send_ok("/echo", "bystander", r#"["still served"]"#);
    assert_eq!(
        server.poll("/echo", "bystander"),
        Frame::Messages(vec!["still served".into()])
    );
    // The receiver takes them in frames of at most 64 KiB of queued cost;
    // each frame makes room, and the waiting sends move on.
    let mut taken = 0;
    for _ in 0..100 {
        let frame = server.xhr("/echo", "empties").text();
        let batch = frame
            .trim_end()
            .strip_prefix("a[")
            .expect("a frame of messages");
        let messages = batch.matches("\"\"").count();
        assert!(
            (1..=64 * 1024 / 64).contains(&messages),
            "{messages} messages in one frame"
        );
        taken += messages;
    }
    let peak = proc_kib(pid, "VmHWM");
    let after = proc_kib(pid, "VmRSS");
    eprintln!("RSS {before} KiB before, {after} KiB after {taken} messages taken, peak {peak} KiB");
    assert!(
        peak < 128 * 1024,
        "peak RSS {peak} KiB for 20 MiB of empty strings"
    );
    drop(sends);
}

/// A masked client frame header announcing `length` payload bytes.
fn frame_header(fin: bool, opcode: u8, length: u64) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    if length < 126 {
        out.push(0x80 | length as u8);
    } else if length <= u64::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&length.to_be_bytes());
    }
    out.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    out
}

/// Writes `chunks()` to the socket from a thread until the socket refuses
/// or `limit` bytes went; returns how many went.
fn stream_out(
    socket: &std::net::TcpStream,
    limit: usize,
    mut chunk: impl FnMut() -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    let mut socket = socket.try_clone().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut sent = 0;
        while sent < limit {
            let bytes = chunk();
            if socket.write_all(&bytes).is_err() {
                break;
            }
            sent += bytes.len();
        }
        sent
    })
}

/// Reads until the close frame and then the end of the connection.
/// Returns the close, and how long until it came and until the end.
fn close_and_end(ws: &mut support::Ws) -> (Option<(u16, String)>, Duration, Duration) {
    let started = Instant::now();
    let close = loop {
        match ws.next_event() {
            WsEvent::Text(_) => continue,
            WsEvent::Close(close) => break (close, started.elapsed()),
            WsEvent::Gone(error) => panic!("connection ended without a close: {error}"),
            WsEvent::Binary(_) => panic!("binary from the server"),
        }
    };
    // After the close, the server hangs up: a read ends (EOF or reset)
    // within the read timeout.
    loop {
        match ws.ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if support::is_timeout(&e) => {
                panic!("the server kept the connection open after its close")
            }
            Err(_) => break,
        }
    }
    (close.0, close.1, started.elapsed())
}

#[test]
fn a_websocket_frame_header_announcing_more_than_the_bound_gets_1009_before_its_payload() {
    let server = Server::start();
    let pid = server.pid();
    let mut bystander = server.ws("/echo/000/bystander/websocket");
    assert_eq!(bystander.next_frame(), Frame::Open);
    for (path, framed) in [
        ("/echo/000/liar/websocket", true),
        ("/echo/websocket", false),
    ] {
        let mut ws = server.ws(path);
        if framed {
            assert_eq!(ws.next_frame(), Frame::Open);
        }
        ws.send_text(r#"["before"]"#);
        assert_eq!(
            ws.next_text(),
            if framed {
                r#"a["before"]"#
            } else {
                r#"["before"]"#
            }
        );
        // A text frame announcing 2^62 bytes, then 256 MiB of it.
        let mut first = Some(frame_header(true, 1, 1 << 62));
        let writer = stream_out(ws.ws.get_ref(), 256 << 20, move || {
            first.take().unwrap_or_else(|| vec![b'x'; 64 * 1024])
        });
        let (close, closed, ended) = close_and_end(&mut ws);
        let sent = writer.join().unwrap();
        let peak = proc_kib(pid, "VmHWM");
        eprintln!(
            "{path}: {close:?} after {closed:?}, connection ended after {ended:?}, \
             {sent} bytes sent, peak RSS {peak} KiB"
        );
        assert_eq!(close.map(|(code, _)| code), Some(1009), "{path}");
        // What comes after the cut is read and dropped until the connection ends.
        assert!(
            ended < Duration::from_secs(5),
            "{path}: ended after {ended:?}"
        );
        assert!(peak < 64 * 1024, "{path}: peak RSS {peak} KiB");
    }
    bystander.send_text(r#"["still here"]"#);
    assert_eq!(bystander.messages(1), vec!["still here".to_owned()]);
}

#[test]
fn a_never_ending_fragmented_websocket_message_gets_1009() {
    let server = Server::start();
    let pid = server.pid();
    for path in ["/echo/000/fragments/websocket", "/echo/websocket"] {
        let mut ws = server.ws(path);
        let mut first = true;
        let writer = stream_out(ws.ws.get_ref(), 256 << 20, move || {
            let mut frame = frame_header(false, if first { 1 } else { 0 }, 1000);
            first = false;
            frame.resize(frame.len() + 1000, b'x' ^ 0x11);
            frame
        });
        let (close, closed, ended) = close_and_end(&mut ws);
        let sent = writer.join().unwrap();
        let peak = proc_kib(pid, "VmHWM");
        eprintln!(
            "{path}: {close:?} after {closed:?}, connection ended after {ended:?}, \
             {sent} bytes sent, peak RSS {peak} KiB"
        );
        assert_eq!(close.map(|(code, _)| code), Some(1009), "{path}");
        assert!(peak < 64 * 1024, "{path}: peak RSS {peak} KiB");
    }
}

/// At most this many empty strings fit one frame: 64 KiB of queued cost.
const EMPTIES_PER_FRAME: usize = 64 * 1024 / 64;

fn check_batch(transport: &str, frame: Frame, got: &mut usize) {
    match frame {
        Frame::Messages(batch) => {
            assert!(
                batch.len() <= EMPTIES_PER_FRAME,
                "{transport}: {} messages in one frame",
                batch.len()
            );
            *got += batch.len();
        }
        other => panic!("{transport}: {other:?}"),
    }
}

#[test]
fn frames_carry_at_most_64_kib_of_queued_messages_on_every_transport() {
    let server = Server::start();
    let port = server.port;
    let mut ws = server.ws("/broadcast/000/f-ws/websocket");
    assert_eq!(ws.next_frame(), Frame::Open);
    let mut raw = server.ws("/broadcast/websocket");
    let mut xhr = support::xhr_streaming(port, "/broadcast", "f-xhr");
    xhr.next_line(); // prelude
    assert_eq!(xhr.next_frame(), Frame::Open);
    let mut es = support::eventsource(port, "/broadcast", "f-es");
    es.expect_eventsource_prelude();
    assert_eq!(es.next_event_frame(), Frame::Open);
    let mut html = support::htmlfile(port, "/broadcast", "f-html", "cb");
    html.read_htmlfile_prelude();
    assert_eq!(html.next_htmlfile_frame(), Frame::Open);
    assert_eq!(server.poll("/broadcast", "f-poll"), Frame::Open);
    // The raw member is in once it answers: its first broadcast comes back.
    raw.send_text("joined");
    assert_eq!(raw.next_text(), "joined");
    let total = 5000;
    assert_eq!(ws.next_frame(), Frame::Messages(vec!["joined".into()]));
    assert_eq!(xhr.next_frame(), Frame::Messages(vec!["joined".into()]));
    assert_eq!(
        es.next_event_frame(),
        Frame::Messages(vec!["joined".into()])
    );
    assert_eq!(
        html.next_htmlfile_frame(),
        Frame::Messages(vec!["joined".into()])
    );
    assert_eq!(
        server.poll("/broadcast", "f-poll"),
        Frame::Messages(vec!["joined".into()])
    );
    let empties = format!("[{}]", vec!["\"\""; total].join(","));
    ws.send_text(&empties);
    let (mut on_ws, mut on_xhr, mut on_es, mut on_html, mut on_poll) = (0, 0, 0, 0, 0);
    while on_ws < total {
        check_batch("websocket", ws.next_frame(), &mut on_ws);
    }
    while on_xhr < total {
        check_batch("xhr-streaming", xhr.next_frame(), &mut on_xhr);
    }
    while on_es < total {
        check_batch("eventsource", es.next_event_frame(), &mut on_es);
    }
    while on_html < total {
        check_batch("htmlfile", html.next_htmlfile_frame(), &mut on_html);
    }
    while on_poll < total {
        check_batch(
            "xhr-polling",
            server.poll("/broadcast", "f-poll"),
            &mut on_poll,
        );
    }
    assert_eq!(
        (on_ws, on_xhr, on_es, on_html, on_poll),
        (total, total, total, total, total)
    );
    for _ in 0..total {
        assert_eq!(raw.next_text(), "", "raw WebSocket: one message per frame");
    }
}

/// A connection to the server whose receive buffer is 4 KiB.
fn tiny_window_conn(port: u16) -> Conn {
    Conn::from_stream(stalled::tiny_window_stream(port), port)
}

/// Waits until the server's end of the connection is gone, then checks the
/// client's end sees it (EOF or reset after at most what its buffer held).
fn expect_dropped(
    server: &Server,
    conn: &mut Conn,
    since: Instant,
    within: Duration,
    what: &str,
) -> Duration {
    use std::io::Read;
    let client_port = conn.stream.local_addr().unwrap().port();
    stalled::wait_until_server_lets_go(server.port, client_port, within, what);
    let gone = since.elapsed();
    let mut buffer = [0; 64 * 1024];
    let mut drained = 0;
    loop {
        match conn.stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
        assert!(drained < 1 << 20, "{what}: the connection still delivers");
    }
    gone
}

#[test]
fn a_stalled_websocket_client_loses_its_connection_within_send_timeout_and_grace() {
    let server = Server::start_with(&["--send-timeout", "1s"]);
    let mut conn = tiny_window_conn(server.port);
    conn.send(&support::ws_request("/amplify/000/stalled/websocket", &[]));
    assert_eq!(conn.read_head().status, 101);
    let mut bystander = server.ws("/echo/000/bystander/websocket");
    assert_eq!(bystander.next_frame(), Frame::Open);
    // Asks for 200 messages of 256 KiB (50 MiB, more than every buffer on
    // the way holds), and reads none of them.
    let started = Instant::now();
    let ask = stalled::masked_text_frame(br#"["18"]"#);
    for _ in 0..200 {
        conn.write_all(&ask);
    }
    let gone = expect_dropped(&server, &mut conn, started, GONE_WITHIN, "websocket");
    eprintln!("stalled websocket dropped {gone:?} after its last request");
    bystander.send_text(r#"["still here"]"#);
    assert_eq!(bystander.messages(1), vec!["still here".to_owned()]);
}

/// Reads `chunk` bytes every `pause` until the connection ends; returns
/// how much came.
fn trickle_until_the_end(mut stream: std::net::TcpStream, chunk: usize, pause: Duration) -> usize {
    use std::io::Read;
    let mut buffer = vec![0; chunk];
    let mut taken = 0;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return taken,
            Ok(n) => taken += n,
        }
        // The client's pace, not a wait for anything.
        std::thread::sleep(pause);
    }
}

#[test]
fn a_trickling_websocket_client_is_closed_as_too_slow_and_loses_its_connection_within_the_grace() {
    let server = Server::start_with(&["--send-timeout", "1s"]);
    let mut conn = tiny_window_conn(server.port);
    conn.send(&support::ws_request("/amplify/000/trickle/websocket", &[]));
    assert_eq!(conn.read_head().status, 101);
    // 4 KiB every 50 ms (80 KiB/s): each 256 KiB frame takes the client
    // about 3 s, three times the send timeout, though it never stops.
    let reader = conn.stream.try_clone().unwrap();
    let trickle =
        std::thread::spawn(move || trickle_until_the_end(reader, 4096, Duration::from_millis(50)));
    let started = Instant::now();
    for _ in 0..200 {
        conn.write_all(&stalled::masked_text_frame(br#"["18"]"#));
    }
    let client_port = conn.stream.local_addr().unwrap().port();
    stalled::wait_until_server_lets_go(
        server.port,
        client_port,
        GONE_WITHIN,
        "trickling websocket",
    );
    let gone = started.elapsed();
    let taken = trickle.join().unwrap();
    eprintln!("trickling websocket dropped {gone:?} after its requests, {taken} bytes taken");
    assert!(
        taken < 2 << 20,
        "took {taken} bytes: the session was not given up"
    );
    let mut bystander = server.ws("/echo/000/trickle-bystander/websocket");
    assert_eq!(bystander.next_frame(), Frame::Open);
    bystander.send_text(r#"["still here"]"#);
    assert_eq!(bystander.messages(1), vec!["still here".to_owned()]);
}

#[test]
fn a_broadcast_member_that_stops_reading_loses_its_connection_within_send_timeout_and_grace() {
    let server = Server::start_with(&["--send-timeout", "1s"]);
    let mut stalled_member = tiny_window_conn(server.port);
    stalled_member.send(&support::ws_request(
        "/broadcast/000/stalled/websocket",
        &[],
    ));
    assert_eq!(stalled_member.read_head().status, 101);
    let mut listener = server.ws("/broadcast/000/listener/websocket");
    assert_eq!(listener.next_frame(), Frame::Open);
    let mut speaker = server.ws("/broadcast/000/speaker/websocket");
    assert_eq!(speaker.next_frame(), Frame::Open);
    let listening = std::thread::spawn(move || listener.messages(400));
    // 400 messages of 16 KiB (6.4 MB): more than the stalled member's queue
    // and every buffer on its way hold. The speaker hears each one before it
    // says the next, as the listener reads along.
    let started = Instant::now();
    let body = "y".repeat(16 * 1024);
    for n in 0..400 {
        let message = format!("{n} {body}");
        speaker.send_text(&serde_json::to_string(&[&message]).unwrap());
        assert_eq!(speaker.messages(1), vec![message], "the speaker hears {n}");
    }
    let client_port = stalled_member.stream.local_addr().unwrap().port();
    stalled::wait_until_server_lets_go(
        server.port,
        client_port,
        GONE_WITHIN,
        "stalled broadcast member",
    );
    eprintln!(
        "stalled broadcast member dropped {:?} after the first message",
        started.elapsed()
    );
    let heard = listening.join().expect("the listener hears every message");
    for (n, message) in heard.iter().enumerate() {
        assert!(
            message.starts_with(&format!("{n} ")),
            "message {n} in order"
        );
    }
}

#[test]
fn sigterm_with_a_stalled_client_still_closes_the_others_with_1001_and_exits_in_time() {
    let mut server = Server::start_with(&["--shutdown-timeout", "3s", "--send-timeout", "30s"]);
    let mut stalled_client = tiny_window_conn(server.port);
    stalled_client.send(&support::ws_request("/amplify/000/stalled/websocket", &[]));
    assert_eq!(stalled_client.read_head().status, 101);
    for _ in 0..200 {
        stalled_client.write_all(&stalled::masked_text_frame(br#"["18"]"#));
    }
    let mut ws = server.ws("/echo/000/leaving/websocket");
    assert_eq!(ws.next_frame(), Frame::Open);
    let started = Instant::now();
    server.terminate();
    assert_eq!(
        ws.next_frame(),
        support::close_frame(1001, "Server shutting down")
    );
    let status = server
        .exited_within(Duration::from_secs(10))
        .expect("the gateway exits though a client takes nothing");
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    eprintln!("shutdown with a stalled client took {took:?}");
    assert!(took < Duration::from_secs(3 + 2), "{took:?}");
}

#[test]
fn a_tcp_relay_stops_reading_its_upstream_when_the_client_queue_is_full_even_for_empty_lines() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_port = listener.local_addr().unwrap().port();
    let (written_tx, written) = std::sync::mpsc::channel();
    // The upstream writes 20 MB of bare newlines, 20 million empty messages,
    // for as long as the gateway takes them (a write that waits 2 s ends it).
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let chunk = vec![b'\n'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 20_000_000 && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let _ = written_tx.send(sent);
    });
    let server = Server::start_with(&[
        "--relay",
        &format!("/up=tcp://127.0.0.1:{upstream_port}"),
        "--disconnect-delay",
        "30s",
    ]);
    let pid = server.pid();
    // A session whose client polls once, then takes nothing.
    assert_eq!(server.xhr("/up", "quiet").text(), "o\n");
    let sent = written
        .recv_timeout(Duration::from_secs(30))
        .expect("the upstream's writes stop");
    let peak = proc_kib(pid, "VmHWM");
    eprintln!("the upstream got {sent} bytes in before it was held back; peak RSS {peak} KiB");
    assert!(
        sent < 10_000_000,
        "the relay read {sent} bytes for a client that takes nothing"
    );
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    // The session still holds them in order: the first frame is a batch of them.
    let frame = server.xhr("/up", "quiet").text();
    assert!(frame.starts_with("a[\"\""), "{frame:.40}");
}

#[test]
fn a_stalled_http_streaming_client_loses_its_connection_within_send_timeout_and_grace() {
    let server = Server::start_with(&["--send-timeout", "1s"]);
    for (transport, method, path) in [
        (
            "xhr-streaming",
            "POST",
            "/amplify/000/stalled-xhr/xhr_streaming",
        ),
        ("eventsource", "GET", "/amplify/000/stalled-es/eventsource"),
        ("htmlfile", "GET", "/amplify/000/stalled-html/htmlfile?c=cb"),
    ] {
        let mut conn = tiny_window_conn(server.port);
        conn.send(&Request::new(method, path));
        assert_eq!(conn.read_head().status, 200, "{transport}");
        let sid = path.split('/').nth(3).unwrap();
        // 40 messages of 256 KiB, none of them read: the response ends by
        // its size limit, but its last frame never gets out.
        let started = Instant::now();
        server.send_ok(
            "/amplify",
            sid,
            &format!("[{}]", vec!["\"18\""; 40].join(",")),
        );
        // A response that went to the kernel whole ends, and actix closes the
        // idle connection after its 5 s keep-alive; one actix cannot flush
        // is reset after the send timeout and the grace.
        let within = Duration::from_secs(5 + 3);
        let gone = expect_dropped(&server, &mut conn, started, within, transport);
        eprintln!("stalled {transport} dropped {gone:?} after its request");
        assert_eq!(
            server.xhr("/echo", &format!("{sid}-bystander")).text(),
            "o\n"
        );
    }
}

#[test]
fn a_websocket_upstream_frame_header_announcing_more_than_the_bound_closes_the_relayed_session() {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_port = listener.local_addr().unwrap().port();
    let (sent_tx, sent) = std::sync::mpsc::channel();
    // An upstream that accepts the handshake, then sends a text frame
    // header announcing 2^62 bytes and streams 64 MiB of it.
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut key = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("sec-websocket-key") {
                    key = value.trim().to_owned();
                }
            }
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut stream = stream;
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut frame = vec![0x81, 127];
        frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut sent = 0;
        if stream.write_all(head.as_bytes()).is_ok() && stream.write_all(&frame).is_ok() {
            let chunk = vec![b'x'; 64 * 1024];
            while sent < 64 << 20 && stream.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
        }
        let _ = sent_tx.send(sent);
    });
    let server = Server::start_with(&["--relay", &format!("/up=ws://127.0.0.1:{upstream_port}/")]);
    let pid = server.pid();
    let mut ws = server.ws("/up/000/liar-upstream/websocket");
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(
        ws.next_frame(),
        support::close_frame(4501, "Upstream message too large")
    );
    let sent = sent.recv_timeout(Duration::from_secs(20)).unwrap();
    let peak = proc_kib(pid, "VmHWM");
    eprintln!("upstream liar: {sent} bytes sent after the header, peak RSS {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}
