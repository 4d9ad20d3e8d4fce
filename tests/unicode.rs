//! PROTOCOL.md section 2: outgoing escaping (lowercase `\uXXXX` for the
//! listed ranges, control characters included), incoming `\uXXXX` decoding
//! (surrogate pairs, lone surrogates), `[]`, and round trips over xhr and
//! both WebSockets.

mod support;

use support::*;

/// Sends one message with the given JSON string literal over xhr_send and
/// returns the raw literal of the single echoed message from the next poll.
fn xhr_roundtrip_literal(s: &Server, id: &str, json_literal: &str) -> String {
    let body = format!("[{json_literal}]");
    s.send_ok("/echo", id, &body);
    let r = s.xhr("/echo", id);
    assert_eq!(r.status, 200);
    let text = r.text();
    let frame = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("poll body must end with \\n: {:.200}", text));
    let lits = raw_array_literals(frame);
    assert_eq!(lits.len(), 1, "expected one message in {:.200}", frame);
    lits.into_iter().next().unwrap()
}

fn ws_roundtrip_literal(ws: &mut Ws, json_literal: &str) -> String {
    ws.send_text(&format!("[{json_literal}]"));
    loop {
        let t = ws.next_text();
        if t == "h" {
            continue;
        }
        let lits = raw_array_literals(&t);
        assert_eq!(lits.len(), 1, "expected one message in {:.200}", t);
        return lits.into_iter().next().unwrap();
    }
}

fn framed_ws(s: &Server) -> Ws {
    let mut ws = s.ws(&format!("/echo/000/{}/websocket", sid()));
    assert_eq!(ws.next_frame(), Frame::Open);
    ws
}

fn all_latin1() -> String {
    (0u32..=0xFF).map(|c| char::from_u32(c).unwrap()).collect()
}

fn sample_non_ascii() -> String {
    "é ß 中文 русский 😀 🎉 \u{10FFFF} \u{FFFD} \u{2027} \u{2030} \u{205F} \u{2070} \u{FFEF}"
        .to_string()
}

fn message_64k() -> String {
    let unit = format!("abc\u{2028}é😀\n\u{ffff}{}", "0123456789");
    let mut s = String::new();
    while s.len() < 64 * 1024 {
        s.push_str(&unit);
    }
    s
}

// ---------------------------------------------------------------------------
// Escaping of outgoing frames
// ---------------------------------------------------------------------------

/// Control characters go out as `JSON.stringify` writes them: the five with a
/// short JSON escape use it (the reference conformance suite expects
/// `\n` and `\r` verbatim), every other one is a lowercase `\u00xx`.
#[test]
fn control_chars_go_out_as_json_stringify_writes_them() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let lit = xhr_roundtrip_literal(
        &s,
        &id,
        &client_escape("a\nb\tc\rd\u{8}e\u{c}f\u{0}g\u{1f}"),
    );
    assert_eq!(lit, "a\\nb\\tc\\rd\\be\\ff\\u0000g\\u001f");
}

#[test]
fn escaped_ranges_use_lowercase_hex() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = "\u{200c}\u{200F}\u{2028}\u{202f}\u{2060}\u{206F}\u{fff0}\u{FFFF}\u{FFFE}";
    let lit = xhr_roundtrip_literal(&s, &id, &client_escape(msg));
    assert_eq!(
        lit,
        "\\u200c\\u200f\\u2028\\u202f\\u2060\\u206f\\ufff0\\uffff\\ufffe"
    );
}

#[test]
fn every_escaped_range_goes_out_escaped_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = escaped_ranges_string();
    let lit = xhr_roundtrip_literal(&s, &id, &client_escape(&msg));
    check_escaping(&lit, &msg);
}

#[test]
fn every_escaped_range_goes_out_escaped_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    let msg = escaped_ranges_string();
    let lit = ws_roundtrip_literal(&mut ws, &client_escape(&msg));
    check_escaping(&lit, &msg);
}

#[test]
fn escaped_ranges_sent_raw_come_back_escaped() {
    // serde_json writes U+200C… as raw UTF-8; the server must still escape.
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = escaped_ranges_string();
    let raw_literal = serde_json::to_string(&msg).unwrap();
    let lit = xhr_roundtrip_literal(&s, &id, &raw_literal);
    check_escaping(&lit, &msg);
    let mut ws = framed_ws(&s);
    let lit = ws_roundtrip_literal(&mut ws, &raw_literal);
    check_escaping(&lit, &msg);
}

// ---------------------------------------------------------------------------
// Incoming decoding
// ---------------------------------------------------------------------------

#[test]
fn incoming_surrogate_pair_escape_decodes_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    s.send_ok("/echo", &id, r#"["\ud83d\ude00 \uD83C\uDF89"]"#);
    assert_eq!(s.poll_messages("/echo", &id, 1), vec!["😀 🎉"]);
}

#[test]
fn incoming_surrogate_pair_escape_decodes_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    ws.send_text(r#"["\ud83d\ude00 \uD83C\uDF89"]"#);
    assert_eq!(ws.messages(1), vec!["😀 🎉"]);
}

#[test]
fn incoming_lone_surrogate_becomes_replacement_char_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let r = s.xhr_send("/echo", &id, br#"["\ud800"]"#);
    assert_eq!(
        r.status,
        204,
        "lone surrogate must be accepted: {}",
        r.body_lossy()
    );
    // poll() decodes with serde_json, which refuses a lone surrogate escape.
    assert_eq!(s.poll_messages("/echo", &id, 1), vec!["\u{FFFD}"]);
    let r = s.xhr_send("/echo", &id, br#"["a\udc00b"]"#);
    assert_eq!(r.status, 204, "lone low surrogate must be accepted");
    assert_eq!(s.poll_messages("/echo", &id, 1), vec!["a\u{FFFD}b"]);
}

#[test]
fn incoming_lone_surrogate_becomes_replacement_char_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    ws.send_text(r#"["\ud800"]"#);
    assert_eq!(ws.messages(1), vec!["\u{FFFD}"]);
}

#[test]
fn empty_array_delivers_nothing_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    ws.send_text("[]");
    ws.send_text(r#"["x"]"#);
    assert_eq!(ws.next_frame(), Frame::Messages(vec!["x".into()]));
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn latin1_round_trip_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = all_latin1();
    // As the browser client sends it (all \u escapes) and as raw UTF-8.
    let lit = xhr_roundtrip_literal(&s, &id, &client_escape(&msg));
    check_escaping(&lit, &msg);
    let lit = xhr_roundtrip_literal(&s, &id, &serde_json::to_string(&msg).unwrap());
    check_escaping(&lit, &msg);
}

#[test]
fn latin1_round_trip_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    let msg = all_latin1();
    let lit = ws_roundtrip_literal(&mut ws, &client_escape(&msg));
    check_escaping(&lit, &msg);
    let lit = ws_roundtrip_literal(&mut ws, &serde_json::to_string(&msg).unwrap());
    check_escaping(&lit, &msg);
}

#[test]
fn emoji_and_non_ascii_round_trip_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = sample_non_ascii();
    let lit = xhr_roundtrip_literal(&s, &id, &client_escape(&msg));
    check_escaping(&lit, &msg);
    let lit = xhr_roundtrip_literal(&s, &id, &serde_json::to_string(&msg).unwrap());
    check_escaping(&lit, &msg);
}

#[test]
fn emoji_and_non_ascii_round_trip_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    let msg = sample_non_ascii();
    let lit = ws_roundtrip_literal(&mut ws, &client_escape(&msg));
    check_escaping(&lit, &msg);
    let lit = ws_roundtrip_literal(&mut ws, &serde_json::to_string(&msg).unwrap());
    check_escaping(&lit, &msg);
}

#[test]
fn message_64k_round_trip_over_xhr() {
    let s = Server::start();
    let id = s.open_xhr_session("/echo");
    let msg = message_64k();
    let lit = xhr_roundtrip_literal(&s, &id, &client_escape(&msg));
    check_escaping(&lit, &msg);
}

#[test]
fn message_64k_round_trip_over_xhr_streaming() {
    let s = Server::start();
    let id = sid();
    let mut st = xhr_streaming(s.port, "/echo", &id);
    st.expect_prelude();
    assert_eq!(st.next_frame(), Frame::Open);
    let msg = message_64k();
    s.send_ok("/echo", &id, &format!("[{}]", client_escape(&msg)));
    let line = st.next_line();
    let lits = raw_array_literals(line.strip_suffix('\n').unwrap());
    assert_eq!(lits.len(), 1);
    check_escaping(&lits[0], &msg);
}

#[test]
fn message_64k_round_trip_over_websocket() {
    let s = Server::start();
    let mut ws = framed_ws(&s);
    let msg = message_64k();
    let lit = ws_roundtrip_literal(&mut ws, &client_escape(&msg));
    check_escaping(&lit, &msg);
}

#[test]
fn raw_websocket_round_trips_unicode_exactly() {
    let s = Server::start();
    let mut ws = s.ws("/echo/websocket");
    for msg in [
        escaped_ranges_string(),
        all_latin1(),
        sample_non_ascii(),
        message_64k(),
    ] {
        ws.send_text(&msg);
        let got = ws.next_text();
        assert!(
            got == msg,
            "raw websocket altered a message of {} chars",
            msg.chars().count()
        );
    }
}
