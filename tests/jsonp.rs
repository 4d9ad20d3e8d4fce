//! PROTOCOL.md sections 3 and 9: jsonp polling (`GET
//! PREFIX/SERVER/SESSION/jsonp?c=CALLBACK`), its callback check, and
//! `jsonp_send` (form-encoded and raw bodies, error texts).

mod support;

use std::time::Duration;

use support::*;

const JS: &str = "application/javascript; charset=UTF-8";
const FORM: &str = "application/x-www-form-urlencoded";

fn msgs(v: &[&str]) -> Frame {
    Frame::Messages(v.iter().map(|s| s.to_string()).collect())
}

fn jsonp_path(prefix: &str, id: &str) -> String {
    format!("{prefix}/000/{id}/jsonp?c=cb")
}

/// Sends `body` (with `content_type`) over jsonp_send, which must succeed,
/// then polls once and returns the raw literal of the single echoed
/// message (after undoing the JS string literal around the frame).
fn roundtrip_literal(s: &Server, id: &str, content_type: Option<&str>, body: &[u8]) -> String {
    let r = s.jsonp_send("/echo", id, content_type, body);
    assert_eq!(r.status, 200, "jsonp_send: {}", r.body_lossy());
    let r = s.jsonp("/echo", id, "cb");
    assert_eq!(r.status, 200);
    let frame = decode_js_literal(&jsonp_literal(&r.text(), "cb"));
    let lits = raw_array_literals(&frame);
    assert_eq!(lits.len(), 1, "expected one message in {:.200}", frame);
    lits.into_iter().next().unwrap()
}

/// After rejected bodies, a good one must be the only thing delivered.
#[track_caller]
fn assert_only_next_message_delivered(s: &Server, id: &str) {
    s.jsonp_send_form_ok("/echo", id, r#"["after"]"#);
    assert_eq!(
        s.jsonp_poll("/echo", id),
        msgs(&["after"]),
        "a rejected body must deliver none of its messages"
    );
}

// ---------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------

#[test]
fn jsonp_is_200_javascript_nosniff_not_cacheable() {
    let s = Server::start();
    let r = s.jsonp("/echo", &sid(), "cb");
    assert_eq!(r.status, 200);
    r.assert_header("Content-Type", JS);
    r.assert_header("X-Content-Type-Options", "nosniff");
    r.assert_header("Cache-Control", NO_CACHE);
    r.assert_no_header("Expires");
    r.assert_no_header("Last-Modified");
}

#[test]
fn jsonp_unknown_session_gets_open_frame() {
    let s = Server::start();
    let r = s.jsonp("/echo", &sid(), "cb");
    assert_eq!(r.text(), "/**/cb(\"o\");\r\n");
}

#[test]
fn jsonp_carries_one_frame_and_messages_arrive_in_order() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    s.jsonp_send_form_ok("/echo", &id, r#"["x"]"#);
    // One frame per request, byte for byte.
    let r = s.jsonp("/echo", &id, "cb");
    assert_eq!(r.text(), "/**/cb(\"a[\\\"x\\\"]\");\r\n");
    s.jsonp_send_form_ok("/echo", &id, r#"["a"]"#);
    s.jsonp_send_form_ok("/echo", &id, r#"["b","c"]"#);
    s.jsonp_send_form_ok("/echo", &id, r#"["d"]"#);
    assert_eq!(s.jsonp_messages("/echo", &id, 4), vec!["a", "b", "c", "d"]);
}

#[test]
fn jsonp_long_polls_until_a_message() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let mut waiting = send_only(s.port, &Request::get(&jsonp_path("/echo", &id)));
    waiting.expect_silence(Duration::from_millis(500));
    s.jsonp_send_form_ok("/echo", &id, r#"["wake up"]"#);
    let r = waiting.read_response("GET");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/**/cb(\"a[\\\"wake up\\\"]\");\r\n");
}

#[test]
fn jsonp_message_past_response_limit_is_one_frame_and_response_ends() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let big = "L".repeat(4096);
    s.jsonp_send_form_ok("/echo", &id, &json_array(&[&big]));
    s.jsonp_send_form_ok("/echo", &id, r#"["after"]"#);
    // The whole response was read to its end; it holds exactly one frame.
    let got = s.jsonp_messages("/echo", &id, 2);
    assert!(got[0] == big, "4096-byte message came back altered");
    assert_eq!(got[1], "after");
}

#[test]
fn jsonp_app_close_gives_open_then_close_and_later_receivers_get_close() {
    let s = Server::start();
    let id = sid();
    assert_eq!(s.jsonp("/close", &id, "cb").text(), "/**/cb(\"o\");\r\n");
    for i in 0..3 {
        assert_eq!(
            s.jsonp("/close", &id, "cb").text(),
            "/**/cb(\"c[3000,\\\"Go away!\\\"]\");\r\n",
            "receiver #{i} after the close"
        );
    }
}

#[test]
fn jsonp_second_receiver_gets_2010_and_first_is_undisturbed() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let mut waiting = send_only(s.port, &Request::get(&jsonp_path("/echo", &id)));
    waiting.expect_silence(Duration::from_millis(300));
    assert_eq!(
        s.jsonp_poll("/echo", &id),
        close_frame(2010, "Another connection still open")
    );
    s.jsonp_send_form_ok("/echo", &id, r#"["for the first"]"#);
    let r = waiting.read_response("GET");
    assert_eq!(r.status, 200);
    assert_eq!(
        parse_frame(&decode_js_literal(&jsonp_literal(&r.text(), "cb"))),
        msgs(&["for the first"])
    );
}

#[test]
fn jsonp_dropped_receiver_gives_1002_to_next_receiver() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = s.open_jsonp_session("/echo");
    let mut waiting = send_only(s.port, &Request::get(&jsonp_path("/echo", &id)));
    waiting.expect_silence(Duration::from_millis(100));
    // Prove it is attached: another receiver is refused.
    assert_eq!(
        s.jsonp_poll("/echo", &id),
        close_frame(2010, "Another connection still open")
    );
    waiting.shutdown();
    drop(waiting);
    let f = poll_until(
        "1002 after a dropped jsonp poll",
        Duration::from_secs(10),
        || match s.jsonp_poll("/echo", &id) {
            Frame::Close(2010, _) => None,
            other => Some(other),
        },
    );
    assert_eq!(f, close_frame(1002, "Connection interrupted"));
    assert_eq!(
        s.jsonp_poll("/echo", &id),
        close_frame(1002, "Connection interrupted"),
        "and again for the next receiver"
    );
}

#[test]
fn jsonp_idle_poll_gets_heartbeat() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let id = s.open_jsonp_session("/echo");
    for i in 0..2 {
        assert_eq!(
            s.jsonp("/echo", &id, "cb").text(),
            "/**/cb(\"h\");\r\n",
            "heartbeat poll #{i}"
        );
    }
}

// ---------------------------------------------------------------------------
// Callback check
// ---------------------------------------------------------------------------

#[test]
fn jsonp_missing_callback_is_500_callback_required() {
    let s = Server::start();
    for query in ["", "?", "?x=1", "?cb=x", "?C=x"] {
        let r = s.get(&format!("/echo/000/{}/jsonp{query}", sid()));
        assert_eq!(r.status, 500, "query {query:?}: {}", r.body_lossy());
        assert_eq!(
            r.text().trim_end(),
            "\"callback\" parameter required",
            "query {query:?}"
        );
    }
}

#[test]
fn jsonp_invalid_callback_is_500_invalid_callback() {
    let s = Server::start();
    let too_long = "a".repeat(33);
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
        let r = s.get(&format!("/echo/000/{}/jsonp?c={cb}", sid()));
        assert_eq!(r.status, 500, "c={cb}: {}", r.body_lossy());
        assert_eq!(
            r.text().trim_end(),
            "invalid \"callback\" parameter",
            "c={cb}"
        );
    }
}

#[test]
fn jsonp_valid_callbacks_wrap_the_frame() {
    let s = Server::start();
    let long = "abcdefghijklmnopqrstuvwxyzABCDEF";
    assert_eq!(long.len(), 32);
    let long_query = format!("c={long}");
    // (query, callback the body must call)
    let cases = [
        ("c=a.b-c_D9", "a.b-c_D9"),
        (long_query.as_str(), long),
        ("callback=cb2", "cb2"),
        ("c=%63allback", "callback"),
        ("c=x&t=123", "x"),
    ];
    for (query, cb) in cases {
        let r = s.get(&format!("/echo/000/{}/jsonp?{query}", sid()));
        assert_eq!(r.status, 200, "?{query}: {}", r.body_lossy());
        assert_eq!(r.text(), format!("/**/{cb}(\"o\");\r\n"), "?{query}");
    }
}

// ---------------------------------------------------------------------------
// jsonp_send
// ---------------------------------------------------------------------------

#[test]
fn jsonp_send_form_success_is_200_ok_text_plain_not_cacheable() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let r = s.jsonp_send("/echo", &id, Some(FORM), b"d=%5B%22x%22%5D");
    assert_eq!(r.status, 200, "{}", r.body_lossy());
    r.assert_header("Content-Type", "text/plain; charset=UTF-8");
    r.assert_header("Cache-Control", NO_CACHE);
    r.assert_no_header("Expires");
    r.assert_no_header("Last-Modified");
    assert_eq!(r.text(), "ok");
    assert_eq!(s.jsonp_poll("/echo", &id), msgs(&["x"]));
}

#[test]
fn jsonp_send_form_is_url_decoded() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let cases: [(&str, &[u8], &str); 5] = [
        // `+` is a space in form encoding (browsers submit spaces so).
        ("plus is space", b"d=%5B%22a+b%22%5D", "a b"),
        ("raw JSON chars", b"d=[\"raw\"]", "raw"),
        (
            "UTF-8 escapes",
            b"d=%5B%22%C3%A9%E2%82%AC%F0%9F%98%80%22%5D",
            "é€😀",
        ),
        ("other fields", b"x=1&d=%5B%22second%22%5D&y=2", "second"),
        ("%25 is %", b"d=%5B%22100%25%22%5D", "100%"),
    ];
    for (what, body, want) in cases {
        for ct in [FORM, "application/x-www-form-urlencoded; charset=UTF-8"] {
            let r = s.jsonp_send("/echo", &id, Some(ct), body);
            assert_eq!(r.status, 200, "{what} ({ct}): {}", r.body_lossy());
            assert_eq!(r.text(), "ok", "{what}");
            assert_eq!(s.jsonp_poll("/echo", &id), msgs(&[want]), "{what} ({ct})");
        }
    }
}

#[test]
fn jsonp_send_raw_body_is_json_array() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    for ct in [Some("text/plain"), Some("text/plain; charset=UTF-8"), None] {
        let r = s.jsonp_send("/echo", &id, ct, br#"["raw1","raw2"]"#);
        assert_eq!(r.status, 200, "Content-Type {ct:?}: {}", r.body_lossy());
        r.assert_header("Content-Type", "text/plain; charset=UTF-8");
        assert_eq!(r.text(), "ok");
        assert_eq!(
            s.jsonp_messages("/echo", &id, 2),
            vec!["raw1", "raw2"],
            "Content-Type {ct:?}"
        );
    }
}

#[test]
fn jsonp_send_raw_body_is_not_percent_decoded() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let r = s.jsonp_send("/echo", &id, Some("text/plain"), br#"["%61bc","a+b"]"#);
    assert_eq!(r.status, 200, "{}", r.body_lossy());
    assert_eq!(s.jsonp_messages("/echo", &id, 2), vec!["%61bc", "a+b"]);
}

#[test]
fn jsonp_send_without_payload_is_500_payload_expected() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let cases: [(Option<&str>, &[u8]); 6] = [
        (Some(FORM), b""),
        (Some("text/plain"), b""),
        (None, b""),
        (Some(FORM), b"d="),
        (Some(FORM), b"p=p"),
        (Some(FORM), b"d=&p=p"),
    ];
    for (ct, body) in cases {
        let r = s.jsonp_send("/echo", &id, ct, body);
        let what = format!("{ct:?} {:?}", String::from_utf8_lossy(body));
        assert_eq!(r.status, 500, "{what}: {}", r.body_lossy());
        assert_eq!(r.text().trim_end(), "Payload expected.", "{what}");
    }
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn jsonp_send_broken_json_is_500_broken_json_encoding() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let cases: [(Option<&str>, &[u8]); 8] = [
        (Some("text/plain"), br#"["x"#),
        (Some("text/plain"), b"x"),
        (Some("text/plain"), br#"["a" "b"]"#),
        (Some("text/plain"), br#"["a"]]"#),
        (None, br#"["a",]"#),
        (Some(FORM), b"d=%5B%22x"),
        (Some(FORM), b"d=x"),
        (Some(FORM), b"d=%5B%22a%22%5D%5D"),
    ];
    for (ct, body) in cases {
        let r = s.jsonp_send("/echo", &id, ct, body);
        let what = format!("{ct:?} {:?}", String::from_utf8_lossy(body));
        assert_eq!(r.status, 500, "{what}: {}", r.body_lossy());
        assert_eq!(r.text().trim_end(), "Broken JSON encoding.", "{what}");
    }
    assert_only_next_message_delivered(&s, &id);
}

#[test]
fn jsonp_send_to_unknown_session_is_404() {
    let s = Server::start();
    let r = s.jsonp_send("/echo", &sid(), Some(FORM), b"d=%5B%22x%22%5D");
    assert_eq!(r.status, 404);
    let r = s.jsonp_send("/echo", &sid(), Some("text/plain"), br#"["x"]"#);
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------
// Unicode and size
// ---------------------------------------------------------------------------

#[test]
fn jsonp_every_escaped_range_round_trips_escaped() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let msg = escaped_ranges_string();
    let body = format!("[{}]", client_escape(&msg));
    let lit = roundtrip_literal(&s, &id, Some("text/plain"), body.as_bytes());
    check_escaping(&lit, &msg);
    // Sent raw (serde_json leaves U+200C… unescaped), form-encoded.
    let body = format!("d={}", form_urlencode(&json_array(&[&msg])));
    let lit = roundtrip_literal(&s, &id, Some(FORM), body.as_bytes());
    check_escaping(&lit, &msg);
}

#[test]
fn jsonp_latin1_round_trip() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let msg: String = (0u32..=0xFF).map(|c| char::from_u32(c).unwrap()).collect();
    let body = format!("[{}]", client_escape(&msg));
    let lit = roundtrip_literal(&s, &id, Some("text/plain"), body.as_bytes());
    check_escaping(&lit, &msg);
    let body = format!("d={}", form_urlencode(&json_array(&[&msg])));
    let lit = roundtrip_literal(&s, &id, Some(FORM), body.as_bytes());
    check_escaping(&lit, &msg);
}

#[test]
fn jsonp_emoji_sent_as_surrogate_pair_escapes_round_trip() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let msg = "😀 🎉 é 中文 \u{10FFFF}";
    let lit = client_escape(msg);
    assert!(lit.contains("\\ud83d\\ude00"), "{lit}");
    let body = format!("[{lit}]");
    check_escaping(
        &roundtrip_literal(&s, &id, Some("text/plain"), body.as_bytes()),
        msg,
    );
    let body = format!("d={}", form_urlencode(&body));
    check_escaping(
        &roundtrip_literal(&s, &id, Some(FORM), body.as_bytes()),
        msg,
    );
}

#[test]
fn jsonp_64k_message_round_trip() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    let unit = "abc\u{2028}é😀\n\u{ffff}<&>\"\\%+0123456789</script>";
    let mut msg = String::new();
    while msg.len() < 64 * 1024 {
        msg.push_str(unit);
    }
    let body = format!("[{}]", client_escape(&msg));
    let lit = roundtrip_literal(&s, &id, Some("text/plain"), body.as_bytes());
    check_escaping(&lit, &msg);
    let body = format!("d={}", form_urlencode(&json_array(&[&msg])));
    let lit = roundtrip_literal(&s, &id, Some(FORM), body.as_bytes());
    check_escaping(&lit, &msg);
}
