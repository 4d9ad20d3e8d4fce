//! PROTOCOL.md section 3 (sessions) and the xhr parts of section 9 (xhr,
//! xhr_streaming, xhr_send), streaming over HTTP/1.0, heartbeats, and the
//! section 10 services over xhr.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

const JS: &str = "application/javascript; charset=UTF-8";

fn msgs(v: &[&str]) -> Frame {
    Frame::Messages(v.iter().map(|s| s.to_string()).collect())
}

// ---------------------------------------------------------------------------
// xhr polling
// ---------------------------------------------------------------------------

#[test]
fn xhr_new_session_gets_open_frame() {
    let s = Server::start();
    let r = s.xhr("/echo", &sid());
    assert_eq!(r.status, 200);
    r.assert_header("Content-Type", JS);
    assert_eq!(r.text(), "o\n");
}

#[test]
fn xhr_poll_carries_exactly_one_frame() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    s.send_ok("/echo", &id, r#"["a","b"]"#);
    let r = s.xhr("/echo", &id);
    assert_eq!(r.status, 200);
    r.assert_header("Content-Type", JS);
    let body = r.text();
    // One frame, one newline, and the response is over (read to its end).
    let f = one_frame_body(&body);
    match f {
        Frame::Messages(m) => assert!(
            m == vec!["a".to_string(), "b".to_string()] || m == vec!["a".to_string()],
            "first poll after sending a,b: {m:?}"
        ),
        other => panic!("expected a[...] frame, got {other:?}"),
    }
}

#[test]
fn xhr_poll_long_polls_until_a_message() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let mut waiting = send_only(s.port, &Request::post(&format!("/echo/000/{id}/xhr"), b""));
    // Nothing is queued: the poll must stay open.
    waiting.expect_silence(Duration::from_millis(500));
    s.send_ok("/echo", &id, r#"["wake up"]"#);
    let r = waiting.read_response("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a[\"wake up\"]\n");
}

#[test]
fn xhr_send_to_unknown_session_is_404() {
    let s = Server::start();
    let r = s.xhr_send("/echo", &sid(), br#"["x"]"#);
    assert_eq!(r.status, 404);
}

#[test]
fn xhr_send_success_is_204_text_plain_empty_body() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let r = s.xhr_send("/echo", &id, br#"["x"]"#);
    assert_eq!(r.status, 204);
    r.assert_header("Content-Type", "text/plain; charset=UTF-8");
    r.assert_header("Cache-Control", NO_CACHE);
    r.assert_header("Access-Control-Allow-Origin", "*");
    assert!(r.body.is_empty());
    if let Some(len) = r.header("Content-Length") {
        assert_eq!(len, "0", "204 must not announce a body");
    }
}

#[test]
fn xhr_send_accepts_every_content_type() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let types = [
        Some("text/plain"),
        Some("T"),
        Some("application/json"),
        Some("application/xml"),
        Some("text/xml"),
        None,
        Some("text/plain; charset=UTF-8"),
        Some("application/json; charset=utf-8"),
        Some("application/xml;charset=UTF-8"),
        Some("text/xml; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
    ];
    for (i, ct) in types.iter().enumerate() {
        let msg = format!("ct-{i}");
        let body = json_array(&[&msg]);
        let mut req = Request::post(&format!("/echo/000/{id}/xhr_send"), body.as_bytes());
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let r = s.request(req);
        assert_eq!(r.status, 204, "Content-Type {ct:?}: {}", r.body_lossy());
        assert_eq!(s.poll("/echo", &id), msgs(&[&msg]), "Content-Type {ct:?}");
    }
}

#[test]
fn xhr_send_empty_body_is_500_payload_expected() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let r = s.xhr_send("/echo", &id, b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text().trim_end(), "Payload expected.");
}

/// After rejected bodies, a good one must be the only thing delivered.
fn assert_only_next_message_delivered(s: &Server, id: &str) {
    s.send_ok("/echo", id, r#"["after"]"#);
    assert_eq!(
        s.poll("/echo", id),
        msgs(&["after"]),
        "a rejected body must deliver none of its messages"
    );
}

#[test]
fn xhr_send_broken_json_is_500_broken_json_encoding() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    for body in [
        &br#"["x"#[..],
        br#"x"#,
        br#"[x]"#,
        br#"["a" "b"]"#,
        br#"["a",]"#,
        br#"{"#,
        br#"["a"]]"#,
    ] {
        let r = s.xhr_send("/echo", &id, body);
        assert_eq!(r.status, 500, "body {:?}", String::from_utf8_lossy(body));
        assert_eq!(
            r.text().trim_end(),
            "Broken JSON encoding.",
            "body {:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn xhr_send_invalid_utf8_is_500_broken_json_encoding() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let r = s.xhr_send("/echo", &id, b"[\"ok\",\"\xff\xfe\"]");
    assert_eq!(r.status, 500);
    assert_eq!(r.text().trim_end(), "Broken JSON encoding.");
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn xhr_send_array_with_non_string_is_500_and_delivers_nothing() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    for body in [
        r#"["a",1]"#,
        r#"["a",null]"#,
        r#"["a",["b"]]"#,
        r#"[{"a":"b"}]"#,
        r#"[true]"#,
    ] {
        let r = s.xhr_send("/echo", &id, body.as_bytes());
        assert_eq!(r.status, 500, "body {body}");
        assert_eq!(
            r.text().trim_end(),
            "Payload must be a JSON array of strings.",
            "body {body}"
        );
    }
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn xhr_send_non_array_json_is_500_and_delivers_nothing() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    for body in [r#"{"a":"b"}"#, "42"] {
        let r = s.xhr_send("/echo", &id, body.as_bytes());
        assert_eq!(r.status, 500, "body {body}");
    }
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn xhr_send_empty_array_delivers_nothing() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    s.send_ok("/echo", &id, "[]");
    s.send_ok("/echo", &id, r#"["x"]"#);
    assert_eq!(s.poll("/echo", &id), msgs(&["x"]));
}

/// Sends `body` on a fresh connection from a second thread (the server may
/// answer before reading it all) and reads the response.
fn send_big(s: &Server, path: &str, body: Vec<u8>) -> Response {
    let mut conn = s.connect();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        s.port,
        body.len()
    );
    conn.write_all(head.as_bytes());
    let mut w = conn.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
        let _ = w.flush();
    });
    let r = conn.read_response("POST");
    drop(conn);
    let _ = writer.join();
    r
}

#[test]
fn xhr_send_body_over_1mib_is_413() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    // ["xxx…"] of 1 MiB + 1 bytes.
    let n = 1024 * 1024 + 1 - 4;
    let body = format!("[\"{}\"]", "x".repeat(n)).into_bytes();
    assert_eq!(body.len(), 1024 * 1024 + 1);
    let r = send_big(&s, &format!("/echo/000/{id}/xhr_send"), body);
    assert_eq!(r.status, 413);
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn xhr_send_body_of_exactly_1mib_is_accepted() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let n = 1024 * 1024 - 4;
    let msg = "y".repeat(n);
    let body = format!("[\"{msg}\"]").into_bytes();
    assert_eq!(body.len(), 1024 * 1024);
    let r = send_big(&s, &format!("/echo/000/{id}/xhr_send"), body);
    assert_eq!(r.status, 204, "{}", r.body_lossy());
    let got = s.poll_messages("/echo", &id, 1);
    assert!(got[0] == msg, "1 MiB message came back altered");
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

#[test]
fn queued_messages_go_in_order_to_next_receiver() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    s.send_ok("/echo", &id, r#"["a"]"#);
    s.send_ok("/echo", &id, r#"["b","c"]"#);
    s.send_ok("/echo", &id, r#"["d"]"#);
    assert_eq!(s.poll_messages("/echo", &id, 4), vec!["a", "b", "c", "d"]);
}

#[test]
fn thousand_messages_in_order_over_xhr_send_and_poll() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let mut conn = s.connect();
    for i in 0..1000 {
        let body = json_array(&[&format!("m{i}")]);
        let r = conn.request(&Request::post(
            &format!("/echo/000/{id}/xhr_send"),
            body.as_bytes(),
        ));
        assert_eq!(r.status, 204, "send #{i}");
    }
    let got = s.poll_messages("/echo", &id, 1000);
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn second_receiver_gets_2010_and_first_is_undisturbed() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let mut first = xhr_streaming(s.port, "/echo", &id);
    first.expect_prelude(); // attached

    let r = s.xhr("/echo", &id);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");

    let mut second = xhr_streaming(s.port, "/echo", &id);
    second.expect_prelude();
    assert_eq!(
        second.next_frame(),
        close_frame(2010, "Another connection still open")
    );
    second.expect_end();

    s.send_ok("/echo", &id, r#"["still here"]"#);
    assert_eq!(first.next_frame(), msgs(&["still here"]));
}

#[test]
fn second_polling_receiver_gets_2010_while_long_poll_waits() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let mut waiting = send_only(s.port, &Request::post(&format!("/echo/000/{id}/xhr"), b""));
    waiting.expect_silence(Duration::from_millis(300));
    let r = s.xhr("/echo", &id);
    assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
    s.send_ok("/echo", &id, r#"["for the first"]"#);
    let r = waiting.read_response("POST");
    assert_eq!(r.text(), "a[\"for the first\"]\n");
}

#[test]
fn different_sessions_do_not_collide() {
    let s = Server::start();
    let a = sid();
    let b = sid();
    assert_eq!(s.post(&format!("/echo/000/{a}/xhr"), b"").text(), "o\n");
    assert_eq!(s.post(&format!("/echo/001/{b}/xhr"), b"").text(), "o\n");
    s.send_ok("/echo", &a, r#"["for a"]"#);
    let r = s.post(&format!("/echo/001/{b}/xhr_send"), br#"["for b"]"#);
    assert_eq!(r.status, 204);
    assert_eq!(s.poll("/echo", &a), msgs(&["for a"]));
    let r = s.post(&format!("/echo/001/{b}/xhr"), b"");
    assert_eq!(one_frame_body(&r.text()), msgs(&["for b"]));
}

#[test]
fn disconnect_delay_expiry_forgets_session_and_same_id_is_new() {
    let s = Server::start_with(&["--disconnect-delay", "200ms"]);
    let id = s.open_xhr_session("/echo");
    // xhr_send is not a receiver: it does not keep the session alive.
    poll_until(
        "session expiry (xhr_send 404)",
        Duration::from_secs(10),
        || {
            let r = s.xhr_send("/echo", &id, b"[]");
            match r.status {
                404 => Some(()),
                204 => None,
                other => panic!("unexpected status {other}"),
            }
        },
    );
    let r = s.xhr("/echo", &id);
    assert_eq!(r.text(), "o\n", "an expired id starts a new session");
}

#[test]
fn session_lives_while_receiver_attached_beyond_disconnect_delay() {
    let s = Server::start_with(&["--disconnect-delay", "300ms", "--heartbeat-delay", "1200ms"]);
    let id = s.open_xhr_session("/echo");
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude();
    // The heartbeat proves 1.2 s passed with the receiver attached.
    assert_eq!(st.next_frame(), Frame::Heartbeat);
    s.send_ok("/echo", &id, r#"["alive"]"#);
    assert_eq!(st.next_frame(), msgs(&["alive"]));
}

#[test]
fn dropped_streaming_receiver_gives_1002_to_later_receiver() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = s.open_xhr_session("/echo");
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude(); // attached
    st.abort();
    let f = poll_until(
        "1002 after a dropped receiver",
        Duration::from_secs(10),
        || {
            match s.poll("/echo", &id) {
                Frame::Close(2010, _) => None, // server has not noticed yet
                other => Some(other),
            }
        },
    );
    assert_eq!(f, close_frame(1002, "Connection interrupted"));
    // And again for the next receiver while the session is remembered.
    assert_eq!(
        s.poll("/echo", &id),
        close_frame(1002, "Connection interrupted")
    );
}

#[test]
fn dropped_long_poll_receiver_gives_1002_to_later_receiver() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = s.open_xhr_session("/echo");
    let mut waiting = send_only(s.port, &Request::post(&format!("/echo/000/{id}/xhr"), b""));
    waiting.expect_silence(Duration::from_millis(100));
    // Prove it is attached: another receiver is refused.
    let r = s.xhr("/echo", &id);
    assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
    waiting.shutdown();
    drop(waiting);
    let f = poll_until(
        "1002 after a dropped long-poll",
        Duration::from_secs(10),
        || match s.poll("/echo", &id) {
            Frame::Close(2010, _) => None,
            other => Some(other),
        },
    );
    assert_eq!(f, close_frame(1002, "Connection interrupted"));
}

#[test]
fn app_close_goes_to_attached_streaming_receiver_and_every_later_one() {
    let s = Server::start();
    let id = sid();
    let mut st = xhr_streaming(s.port, "/close", &id);
    st.expect_prelude();
    assert_eq!(st.next_frame(), Frame::Open);
    assert_eq!(st.next_frame(), close_frame(3000, "Go away!"));
    st.expect_end();
    for _ in 0..2 {
        let r = s.xhr("/close", &id);
        assert_eq!(
            r.text(),
            "c[3000,\"Go away!\"]\n",
            "a closed session is not reopened"
        );
    }
    let mut st = xhr_streaming(s.port, "/close", &id);
    st.expect_prelude();
    assert_eq!(st.next_frame(), close_frame(3000, "Go away!"));
    st.expect_end();
}

#[test]
fn app_close_over_polling_open_then_close_frames() {
    let s = Server::start();
    let id = sid();
    assert_eq!(s.xhr("/close", &id).text(), "o\n");
    assert_eq!(s.xhr("/close", &id).text(), "c[3000,\"Go away!\"]\n");
    assert_eq!(s.xhr("/close", &id).text(), "c[3000,\"Go away!\"]\n");
}

/// sockjs-client closes with 1006 when a send fails: a send racing the
/// close frame must not hide the application's code.
#[test]
fn send_to_closed_session_is_dropped_and_answered_204() {
    let s = Server::start();
    let id = sid();
    assert_eq!(s.xhr("/close", &id).text(), "o\n");
    assert_eq!(s.xhr("/close", &id).text(), "c[3000,\"Go away!\"]\n");
    let send = s.xhr_send("/close", &id, br#"["late"]"#);
    assert_eq!((send.status, send.text()), (204, String::new()));
    let send = s.request(
        Request::post(
            &format!("/close/000/{id}/jsonp_send"),
            b"d=%5B%22late%22%5D",
        )
        .header("Content-Type", "application/x-www-form-urlencoded"),
    );
    assert_eq!((send.status, send.text()), (200, "ok".to_owned()));
    assert_eq!(s.xhr("/close", &id).text(), "c[3000,\"Go away!\"]\n");
    // Broken JSON is still refused: the body is read before the session.
    assert_eq!(s.xhr_send("/close", &id, b"[").status, 500);
}

#[test]
fn closed_session_is_forgotten_after_disconnect_delay() {
    let s = Server::start_with(&["--disconnect-delay", "200ms", "--heartbeat-delay", "1s"]);
    let id = sid();
    assert_eq!(s.xhr("/close", &id).text(), "o\n");
    assert_eq!(s.xhr("/close", &id).text(), "c[3000,\"Go away!\"]\n");
    // Clock: a heartbeat on another session arrives after 1 s, well past
    // the 200 ms disconnect delay of the closed session.
    let clock = s.open_xhr_session("/echo");
    assert_eq!(s.poll("/echo", &clock), Frame::Heartbeat);
    assert_eq!(
        s.xhr("/close", &id).text(),
        "o\n",
        "after disconnect_delay the id is a new session"
    );
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[test]
fn heartbeat_frame_on_idle_poll_and_stream() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = s.open_xhr_session("/echo");
    assert_eq!(s.poll("/echo", &id), Frame::Heartbeat);
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude();
    assert_eq!(st.next_line(), "h\n");
    assert_eq!(st.next_line(), "h\n");
}

// ---------------------------------------------------------------------------
// xhr_streaming
// ---------------------------------------------------------------------------

#[test]
fn xhr_streaming_prelude_then_frames_each_with_newline() {
    let s = Server::start();
    let id = sid();
    let mut st = xhr_streaming(s.port, "/echo", &id);
    assert_eq!(st.header("Content-Type"), Some(JS));
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
    st.expect_prelude();
    assert_eq!(st.next_line(), "o\n");
    s.send_ok("/echo", &id, r#"["one"]"#);
    assert_eq!(st.next_line(), "a[\"one\"]\n");
    s.send_ok("/echo", &id, r#"["two"]"#);
    assert_eq!(st.next_line(), "a[\"two\"]\n");
}

#[test]
fn xhr_streaming_ends_at_response_limit_and_session_lives_on() {
    let s = Server::start();
    let id = sid();
    let big = |i: usize| format!("{i}{}", "z".repeat(999));
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude();
    assert_eq!(st.next_frame(), Frame::Open);
    // Frames of ~1006 bytes; /echo has response_limit 4096, so the fifth
    // frame crosses it and the response must end right after it.
    for i in 0..5 {
        s.send_ok("/echo", &id, &json_array(&[&big(i)]));
        assert_eq!(st.next_frame(), msgs(&[&big(i)]), "frame {i}");
    }
    st.expect_end();
    // The session lives on; a queued message waits for the next receiver.
    s.send_ok("/echo", &id, &json_array(&[&big(5)]));
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude();
    assert_eq!(
        st.next_frame(),
        msgs(&[&big(5)]),
        "no `o` for a live session"
    );
}

#[test]
fn xhr_streaming_http10_has_no_framing_and_closes_at_end() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::post(&format!("/close/000/{id}/xhr_streaming"), b"").http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"), "{:?}", st.head.headers);
    assert!(!st.has_header("Content-Length"), "{:?}", st.head.headers);
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
    assert_eq!(st.body_kind(), BodyKind::UntilEof);
    st.expect_prelude();
    assert_eq!(st.next_line(), "o\n");
    assert_eq!(st.next_line(), "c[3000,\"Go away!\"]\n");
    st.expect_end(); // EOF: the connection is closed
}

#[test]
fn xhr_streaming_http10_frames_arrive_as_written_until_limit() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::post(&format!("/echo/000/{id}/xhr_streaming"), b"").http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"));
    assert!(!st.has_header("Content-Length"));
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
    st.expect_prelude();
    assert_eq!(st.next_line(), "o\n");
    s.send_ok("/echo", &id, r#"["small"]"#);
    assert_eq!(
        st.next_line(),
        "a[\"small\"]\n",
        "frame must arrive unbuffered"
    );
    let big = "q".repeat(1000);
    for _ in 0..5 {
        s.send_ok("/echo", &id, &json_array(&[&big]));
        assert_eq!(st.next_frame(), msgs(&[&big]));
    }
    st.expect_end();
}

#[test]
fn xhr_poll_over_http10() {
    let s = Server::start();
    let id = sid();
    let r = s.request(Request::post(&format!("/echo/000/{id}/xhr"), b"").http10());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "o\n");
}

// ---------------------------------------------------------------------------
// Section 10 services over xhr
// ---------------------------------------------------------------------------

#[test]
fn ticker_sends_tick() {
    let s = Server::start();
    let id = s.open_xhr_session("/ticker");
    assert_eq!(s.poll("/ticker", &id), msgs(&["tick!"]));
}

#[test]
fn amplify_replies_with_two_to_the_n_x() {
    let s = Server::start();
    let id = s.open_xhr_session("/amplify");
    for n in [1u32, 3, 10, 18] {
        s.send_ok("/amplify", &id, &json_array(&[&n.to_string()]));
        let got = s.poll_messages("/amplify", &id, 1);
        assert!(
            got[0] == "x".repeat(1 << n),
            "amplify {n}: got {} chars",
            got[0].len()
        );
    }
}

#[test]
fn broadcast_reaches_every_open_session() {
    let s = Server::start();
    let a = s.open_xhr_session("/broadcast");
    let b = s.open_xhr_session("/broadcast");
    s.send_ok("/broadcast", &a, r#"["hello all"]"#);
    assert_eq!(s.poll("/broadcast", &a), msgs(&["hello all"]));
    assert_eq!(s.poll("/broadcast", &b), msgs(&["hello all"]));
}
