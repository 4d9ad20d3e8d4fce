//! PROTOCOL.md sections 3 and 9: the eventsource receiver (`GET
//! PREFIX/SERVER/SESSION/eventsource`), fed by `xhr_send`.

mod support;

use std::time::Duration;

use support::*;

fn msgs(v: &[&str]) -> Frame {
    Frame::Messages(v.iter().map(|s| s.to_string()).collect())
}

/// Opens an eventsource receiver and reads its prelude.
fn attach(s: &Server, prefix: &str, id: &str) -> Streaming {
    let mut st = eventsource(s.port, prefix, id);
    st.expect_eventsource_prelude();
    st
}

/// Collects `n` messages from `a[...]` events (skipping `h`).
fn event_messages(st: &mut Streaming, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match st.next_event_frame() {
            Frame::Messages(m) => out.extend(m),
            Frame::Heartbeat => {}
            other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
        }
    }
    assert_eq!(out.len(), n, "more messages than expected: {out:?}");
    out
}

/// Sends one message written as `json_literal` over xhr_send to a fresh
/// eventsource session and returns the raw literal of the echoed message.
fn roundtrip_literal(s: &Server, json_literal: &str) -> String {
    let id = sid();
    let mut st = attach(s, "/echo", &id);
    assert_eq!(st.next_event_frame(), Frame::Open);
    s.send_ok("/echo", &id, &format!("[{json_literal}]"));
    let raw = st.read_event().expect("echoed event");
    let frame = decode_uri(&raw);
    let lits = raw_array_literals(&frame);
    assert_eq!(lits.len(), 1, "expected one message in {:.200}", frame);
    lits.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------
// Headers, prelude, framing
// ---------------------------------------------------------------------------

#[test]
fn eventsource_is_200_event_stream_not_cacheable_unbuffered() {
    let s = Server::start();
    let st = eventsource(s.port, "/echo", &sid());
    assert_eq!(
        st.head.header_all("Content-Type"),
        vec!["text/event-stream"]
    );
    assert_eq!(st.head.header_all("Cache-Control"), vec![NO_CACHE]);
    assert!(!st.has_header("Expires"), "{:?}", st.head.headers);
    assert!(!st.has_header("Last-Modified"), "{:?}", st.head.headers);
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
}

#[test]
fn eventsource_unknown_session_gets_prelude_then_open_frame() {
    let s = Server::start();
    let mut st = eventsource(s.port, "/echo", &sid());
    assert_eq!(st.read_exact(2), b"\r\n", "prelude");
    assert_eq!(st.read_exact(11), b"data: o\r\n\r\n", "first event");
}

#[test]
fn eventsource_frames_are_data_lines_and_messages_arrive_in_order() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.read_event().as_deref(), Some("o"));
    s.send_ok("/echo", &id, r#"["one"]"#);
    assert_eq!(st.read_event().as_deref(), Some(r#"a["one"]"#));
    s.send_ok("/echo", &id, r#"["two","three"]"#);
    s.send_ok("/echo", &id, r#"["four"]"#);
    assert_eq!(
        event_messages(&mut st, 3),
        vec!["two", "three", "four"],
        "messages in order"
    );
}

/// sockjs-client hands every `data:` payload to `decodeURI`, so a `%` in a
/// frame must go out as `%25` (a raw `%61` would arrive as `a`, a lone `%`
/// would make the client throw).
#[test]
fn eventsource_percent_in_messages_survives_client_decode_uri() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.next_event_frame(), Frame::Open);
    let sent = ["100%", "%61bc", "%E2%82%AC", "%", "%%25", "a%2", "%3B%23"];
    s.send_ok("/echo", &id, &json_array(&sent));
    assert_eq!(event_messages(&mut st, sent.len()), sent);
}

// ---------------------------------------------------------------------------
// response_limit
// ---------------------------------------------------------------------------

#[test]
fn eventsource_ends_at_response_limit_and_session_lives_on() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.next_event_frame(), Frame::Open);
    s.send_ok("/echo", &id, r#"["small"]"#);
    assert_eq!(st.next_event_frame(), msgs(&["small"]));
    // /echo has response_limit 4096: a 4096-byte message crosses it.
    let big = "L".repeat(4096);
    s.send_ok("/echo", &id, &json_array(&[&big]));
    assert_eq!(st.next_event_frame(), msgs(&[&big]));
    st.expect_end();
    // The session lives on: a queued message goes to the next receiver.
    s.send_ok("/echo", &id, r#"["next"]"#);
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(
        st.next_event_frame(),
        msgs(&["next"]),
        "no `o` for a live session"
    );
}

// ---------------------------------------------------------------------------
// Application close, 2010, 1002
// ---------------------------------------------------------------------------

#[test]
fn eventsource_app_close_gives_open_then_close_and_later_receivers_get_close() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/close", &id);
    assert_eq!(st.next_event_frame(), Frame::Open);
    assert_eq!(st.next_event_frame(), close_frame(3000, "Go away!"));
    st.expect_end();
    for i in 0..2 {
        let mut st = attach(&s, "/close", &id);
        assert_eq!(
            st.read_event().as_deref(),
            Some(r#"c[3000,"Go away!"]"#),
            "later receiver #{i}"
        );
        st.expect_end();
    }
}

#[test]
fn eventsource_second_receiver_gets_2010_and_first_is_undisturbed() {
    let s = Server::start();
    let id = sid();
    let mut first = attach(&s, "/echo", &id);
    assert_eq!(first.next_event_frame(), Frame::Open);

    let mut second = attach(&s, "/echo", &id);
    assert_eq!(
        second.read_event().as_deref(),
        Some(r#"c[2010,"Another connection still open"]"#)
    );
    second.expect_end();

    s.send_ok("/echo", &id, r#"["still here"]"#);
    assert_eq!(first.next_event_frame(), msgs(&["still here"]));
}

#[test]
fn eventsource_dropped_receiver_gives_1002_to_next_receiver() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.next_event_frame(), Frame::Open);
    st.abort();
    let f = poll_until(
        "1002 after a dropped eventsource",
        Duration::from_secs(10),
        || {
            let mut next = attach(&s, "/echo", &id);
            match next.next_event_frame() {
                Frame::Close(2010, _) => None, // not noticed yet
                other => {
                    next.expect_end();
                    Some(other)
                }
            }
        },
    );
    assert_eq!(f, close_frame(1002, "Connection interrupted"));
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[test]
fn eventsource_idle_receiver_gets_heartbeats() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.read_event().as_deref(), Some("o"));
    for i in 0..3 {
        assert_eq!(st.read_event().as_deref(), Some("h"), "heartbeat #{i}");
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.0
// ---------------------------------------------------------------------------

#[test]
fn eventsource_http10_has_no_framing_and_closes_at_end() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::get(&format!("/close/000/{id}/eventsource")).http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"), "{:?}", st.head.headers);
    assert!(!st.has_header("Content-Length"), "{:?}", st.head.headers);
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
    assert_eq!(st.body_kind(), BodyKind::UntilEof);
    st.expect_eventsource_prelude();
    assert_eq!(st.read_event().as_deref(), Some("o"));
    assert_eq!(st.read_event().as_deref(), Some(r#"c[3000,"Go away!"]"#));
    st.expect_end(); // EOF: the connection is closed
}

#[test]
fn eventsource_http10_frames_arrive_as_written() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::get(&format!("/echo/000/{id}/eventsource")).http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"), "{:?}", st.head.headers);
    assert!(!st.has_header("Content-Length"), "{:?}", st.head.headers);
    assert_eq!(st.body_kind(), BodyKind::UntilEof);
    st.expect_eventsource_prelude();
    assert_eq!(st.read_event().as_deref(), Some("o"));
    s.send_ok("/echo", &id, r#"["unbuffered"]"#);
    assert_eq!(st.read_event().as_deref(), Some(r#"a["unbuffered"]"#));
    let big = "B".repeat(4096);
    s.send_ok("/echo", &id, &json_array(&[&big]));
    assert_eq!(st.next_event_frame(), msgs(&[&big]));
    st.expect_end();
}

// ---------------------------------------------------------------------------
// Unicode and size
// ---------------------------------------------------------------------------

#[test]
fn eventsource_every_escaped_range_round_trips_escaped() {
    let s = Server::start();
    let msg = escaped_ranges_string();
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
    // Sent raw (serde_json leaves U+200C… unescaped), still escaped out.
    let raw = serde_json::to_string(&msg).unwrap();
    check_escaping(&roundtrip_literal(&s, &raw), &msg);
}

#[test]
fn eventsource_latin1_round_trip() {
    let s = Server::start();
    let msg: String = (0u32..=0xFF).map(|c| char::from_u32(c).unwrap()).collect();
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
}

#[test]
fn eventsource_emoji_sent_as_surrogate_pair_escapes_round_trip() {
    let s = Server::start();
    let msg = "😀 🎉 é 中文 \u{10FFFF}";
    let lit = client_escape(msg);
    assert!(lit.contains("\\ud83d\\ude00"), "{lit}");
    check_escaping(&roundtrip_literal(&s, &lit), msg);
}

#[test]
fn eventsource_64k_message_round_trip() {
    let s = Server::start();
    let unit = "abc\u{2028}é😀\n\u{ffff}<&>\"\\0123456789";
    let mut msg = String::new();
    while msg.len() < 64 * 1024 {
        msg.push_str(unit);
    }
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
}
