//! PROTOCOL.md sections 3 and 9: the htmlfile receiver (`GET
//! PREFIX/SERVER/SESSION/htmlfile?c=CALLBACK`), fed by `xhr_send`, and its
//! callback check.

mod support;

use std::time::Duration;

use support::*;

const HTML: &str = "text/html; charset=UTF-8";

fn msgs(v: &[&str]) -> Frame {
    Frame::Messages(v.iter().map(|s| s.to_string()).collect())
}

/// Checks a whole htmlfile prelude: the section 9 head for `callback`,
/// padded with spaces to more than 1024 bytes, then `\r\n\r\n`.
#[track_caller]
fn check_prelude(prelude: &str, callback: &str) {
    let head = prelude
        .strip_suffix("\r\n\r\n")
        .unwrap_or_else(|| panic!("prelude must end with \\r\\n\\r\\n: {prelude:?}"));
    assert!(
        head.len() > 1024,
        "head must be padded past 1024 bytes, is {} bytes",
        head.len()
    );
    let trimmed = head.trim_end_matches(' ');
    // The template may or may not keep the newline after `</script>`.
    let trimmed = trimmed.strip_suffix('\n').unwrap_or(trimmed);
    assert_eq!(trimmed, htmlfile_head(callback), "htmlfile head");
    assert!(
        head[trimmed.len()..]
            .trim_start_matches('\n')
            .bytes()
            .all(|b| b == b' '),
        "padding must be spaces"
    );
}

/// Opens an htmlfile receiver with callback `cb` and reads its prelude.
fn attach(s: &Server, prefix: &str, id: &str) -> Streaming {
    let mut st = htmlfile(s.port, prefix, id, "cb");
    let prelude = st.read_htmlfile_prelude();
    check_prelude(&prelude, "cb");
    st
}

/// Collects `n` messages from `a[...]` frames (skipping `h`).
fn html_messages(st: &mut Streaming, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match st.next_htmlfile_frame() {
            Frame::Messages(m) => out.extend(m),
            Frame::Heartbeat => {}
            other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
        }
    }
    assert_eq!(out.len(), n, "more messages than expected: {out:?}");
    out
}

/// Sends one message written as `json_literal` over xhr_send to a fresh
/// htmlfile session and returns the raw literal of the echoed message
/// (after undoing the JS string literal around the frame).
fn roundtrip_literal(s: &Server, json_literal: &str) -> String {
    let id = sid();
    let mut st = attach(s, "/echo", &id);
    assert_eq!(st.next_htmlfile_frame(), Frame::Open);
    s.send_ok("/echo", &id, &format!("[{json_literal}]"));
    let js = st.read_htmlfile_script().expect("echoed frame");
    let frame = decode_js_literal(&js);
    let lits = raw_array_literals(&frame);
    assert_eq!(lits.len(), 1, "expected one message in {:.200}", frame);
    lits.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------
// Headers, prelude, framing
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_is_200_html_not_cacheable_unbuffered() {
    let s = Server::start();
    let st = htmlfile(s.port, "/echo", &sid(), "cb");
    assert_eq!(st.head.header_all("Content-Type"), vec![HTML]);
    assert_eq!(st.head.header_all("Cache-Control"), vec![NO_CACHE]);
    assert!(!st.has_header("Expires"), "{:?}", st.head.headers);
    assert!(!st.has_header("Last-Modified"), "{:?}", st.head.headers);
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
}

#[test]
fn htmlfile_prelude_is_exact_head_padded_past_1024_bytes() {
    let s = Server::start();
    for cb in ["cb", "a.b-c_D9", "abcdefghijklmnopqrstuvwxyzABCDEF"] {
        let mut st = htmlfile(s.port, "/echo", &sid(), cb);
        let prelude = st.read_htmlfile_prelude();
        check_prelude(&prelude, cb);
    }
}

#[test]
fn htmlfile_unknown_session_gets_open_frame_script() {
    let s = Server::start();
    let mut st = attach(&s, "/echo", &sid());
    let want: &[u8] = b"<script>\np(\"o\");\n</script>\r\n";
    assert_eq!(st.read_exact(want.len()), want, "first frame");
}

#[test]
fn htmlfile_frames_are_script_calls_and_messages_arrive_in_order() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"));
    s.send_ok("/echo", &id, r#"["x"]"#);
    // Section 9's example, byte for byte.
    let want: &[u8] = b"<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n";
    assert_eq!(
        String::from_utf8_lossy(&st.read_exact(want.len())),
        String::from_utf8_lossy(want)
    );
    s.send_ok("/echo", &id, r#"["two","three"]"#);
    s.send_ok("/echo", &id, r#"["four"]"#);
    assert_eq!(
        html_messages(&mut st, 3),
        vec!["two", "three", "four"],
        "messages in order"
    );
}

// ---------------------------------------------------------------------------
// response_limit
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_ends_at_response_limit_and_session_lives_on() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.next_htmlfile_frame(), Frame::Open);
    s.send_ok("/echo", &id, r#"["small"]"#);
    assert_eq!(st.next_htmlfile_frame(), msgs(&["small"]));
    // /echo has response_limit 4096: a 4096-byte message crosses it.
    let big = "L".repeat(4096);
    s.send_ok("/echo", &id, &json_array(&[&big]));
    assert_eq!(st.next_htmlfile_frame(), msgs(&[&big]));
    st.expect_end();
    s.send_ok("/echo", &id, r#"["next"]"#);
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(
        st.next_htmlfile_frame(),
        msgs(&["next"]),
        "no `o` for a live session"
    );
}

// ---------------------------------------------------------------------------
// Application close, 2010, 1002
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_app_close_gives_open_then_close_and_later_receivers_get_close() {
    let s = Server::start();
    let id = sid();
    let mut st = attach(&s, "/close", &id);
    assert_eq!(st.next_htmlfile_frame(), Frame::Open);
    assert_eq!(st.next_htmlfile_frame(), close_frame(3000, "Go away!"));
    st.expect_end();
    for i in 0..2 {
        let mut st = attach(&s, "/close", &id);
        assert_eq!(
            st.read_htmlfile_script().as_deref(),
            Some(r#"c[3000,\"Go away!\"]"#),
            "later receiver #{i}"
        );
        st.expect_end();
    }
}

#[test]
fn htmlfile_second_receiver_gets_2010_and_first_is_undisturbed() {
    let s = Server::start();
    let id = sid();
    let mut first = attach(&s, "/echo", &id);
    assert_eq!(first.next_htmlfile_frame(), Frame::Open);

    let mut second = attach(&s, "/echo", &id);
    assert_eq!(
        second.next_htmlfile_frame(),
        close_frame(2010, "Another connection still open")
    );
    second.expect_end();

    s.send_ok("/echo", &id, r#"["still here"]"#);
    assert_eq!(first.next_htmlfile_frame(), msgs(&["still here"]));
}

#[test]
fn htmlfile_dropped_receiver_gives_1002_to_next_receiver() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.next_htmlfile_frame(), Frame::Open);
    st.abort();
    let f = poll_until(
        "1002 after a dropped htmlfile",
        Duration::from_secs(10),
        || {
            let mut next = attach(&s, "/echo", &id);
            match next.next_htmlfile_frame() {
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
fn htmlfile_idle_receiver_gets_heartbeats() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = sid();
    let mut st = attach(&s, "/echo", &id);
    assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"));
    for i in 0..3 {
        assert_eq!(
            st.read_htmlfile_script().as_deref(),
            Some("h"),
            "heartbeat #{i}"
        );
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.0
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_http10_has_no_framing_and_closes_at_end() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::get(&format!("/close/000/{id}/htmlfile?c=cb")).http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"), "{:?}", st.head.headers);
    assert!(!st.has_header("Content-Length"), "{:?}", st.head.headers);
    assert_eq!(st.head.header_all("X-Accel-Buffering"), vec!["no"]);
    assert_eq!(st.body_kind(), BodyKind::UntilEof);
    check_prelude(&st.read_htmlfile_prelude(), "cb");
    assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"));
    assert_eq!(
        st.read_htmlfile_script().as_deref(),
        Some(r#"c[3000,\"Go away!\"]"#)
    );
    st.expect_end(); // EOF: the connection is closed
}

#[test]
fn htmlfile_http10_frames_arrive_as_written() {
    let s = Server::start();
    let id = sid();
    let mut st = s
        .connect()
        .stream(&Request::get(&format!("/echo/000/{id}/htmlfile?c=cb")).http10());
    assert_eq!(st.status, 200);
    assert!(!st.has_header("Transfer-Encoding"), "{:?}", st.head.headers);
    assert!(!st.has_header("Content-Length"), "{:?}", st.head.headers);
    assert_eq!(st.body_kind(), BodyKind::UntilEof);
    check_prelude(&st.read_htmlfile_prelude(), "cb");
    assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"));
    s.send_ok("/echo", &id, r#"["unbuffered"]"#);
    assert_eq!(st.next_htmlfile_frame(), msgs(&["unbuffered"]));
    let big = "B".repeat(4096);
    s.send_ok("/echo", &id, &json_array(&[&big]));
    assert_eq!(st.next_htmlfile_frame(), msgs(&[&big]));
    st.expect_end();
}

// ---------------------------------------------------------------------------
// Callback check
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_missing_callback_is_500_callback_required() {
    let s = Server::start();
    for query in ["", "?", "?x=1", "?cb=x", "?C=x"] {
        let r = s.get(&format!("/echo/000/{}/htmlfile{query}", sid()));
        assert_eq!(r.status, 500, "query {query:?}: {}", r.body_lossy());
        assert_eq!(
            r.text().trim_end(),
            "\"callback\" parameter required",
            "query {query:?}"
        );
    }
}

#[test]
fn htmlfile_invalid_callback_is_500_invalid_callback() {
    let s = Server::start();
    let too_long = "a".repeat(33);
    // Query values as sent (percent-encoded where a browser would).
    let bad = [
        "%20",
        "*",
        "abc(",
        "abc%28",
        "a;b",
        "%3Cx%3E",
        too_long.as_str(),
        "a%22b",
        "a'b",
        "a+b",
        "a%2Fb",
        "a%00b",
        "a%E2%80%A8b",
        "%C3%A9",
    ];
    for cb in bad {
        let r = s.get(&format!("/echo/000/{}/htmlfile?c={cb}", sid()));
        assert_eq!(r.status, 500, "c={cb}: {}", r.body_lossy());
        assert_eq!(
            r.text().trim_end(),
            "invalid \"callback\" parameter",
            "c={cb}"
        );
    }
}

#[test]
fn htmlfile_valid_callbacks_are_written_into_the_head() {
    let s = Server::start();
    let long = "abcdefghijklmnopqrstuvwxyzABCDEF";
    assert_eq!(long.len(), 32);
    let long_query = format!("c={long}");
    // (query, callback the page must call)
    let cases = [
        ("c=a.b-c_D9", "a.b-c_D9"),
        (long_query.as_str(), long),
        ("callback=cb2", "cb2"),
        ("c=%63allback", "callback"),
        ("c=x&t=123", "x"),
    ];
    for (query, cb) in cases {
        let mut st = s.connect().stream(&Request::get(&format!(
            "/echo/000/{}/htmlfile?{query}",
            sid()
        )));
        assert_eq!(st.status, 200, "?{query}");
        check_prelude(&st.read_htmlfile_prelude(), cb);
        assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"), "?{query}");
    }
}

// ---------------------------------------------------------------------------
// Unicode and size
// ---------------------------------------------------------------------------

#[test]
fn htmlfile_every_escaped_range_round_trips_escaped() {
    let s = Server::start();
    let msg = escaped_ranges_string();
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
    let raw = serde_json::to_string(&msg).unwrap();
    check_escaping(&roundtrip_literal(&s, &raw), &msg);
}

#[test]
fn htmlfile_latin1_round_trip() {
    let s = Server::start();
    let msg: String = (0u32..=0xFF).map(|c| char::from_u32(c).unwrap()).collect();
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
    let raw = serde_json::to_string(&msg).unwrap();
    check_escaping(&roundtrip_literal(&s, &raw), &msg);
}

#[test]
fn htmlfile_emoji_sent_as_surrogate_pair_escapes_round_trip() {
    let s = Server::start();
    let msg = "😀 🎉 é 中文 \u{10FFFF}";
    let lit = client_escape(msg);
    assert!(lit.contains("\\ud83d\\ude00"), "{lit}");
    check_escaping(&roundtrip_literal(&s, &lit), msg);
}

#[test]
fn htmlfile_64k_message_round_trip() {
    let s = Server::start();
    let unit = "abc\u{2028}é😀\n\u{ffff}<&>\"\\%0123456789</script>";
    let mut msg = String::new();
    while msg.len() < 64 * 1024 {
        msg.push_str(unit);
    }
    check_escaping(&roundtrip_literal(&s, &client_escape(&msg)), &msg);
}
