//! PROTOCOL.md section 4: the framed (`PREFIX/SERVER/SESSION/websocket`) and
//! raw (`PREFIX/websocket`) WebSocket transports, plus section 10 services
//! over WebSocket.

mod support;

use support::*;

fn msgs(v: &[&str]) -> Frame {
    Frame::Messages(v.iter().map(|s| s.to_string()).collect())
}

fn framed(s: &Server, prefix: &str) -> Ws {
    let mut ws = s.ws(&format!("{prefix}/000/{}/websocket", sid()));
    assert_eq!(ws.next_frame(), Frame::Open);
    ws
}

fn assert_handshake_head(head: &Head, what: &str) {
    assert_eq!(head.status, 101, "{what}");
    let upgrade = head.header_all("Upgrade");
    assert!(
        upgrade.len() == 1 && upgrade[0].eq_ignore_ascii_case("websocket"),
        "{what}: Upgrade header {upgrade:?}"
    );
    assert!(
        head.header_tokens("Connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade")),
        "{what}: Connection header {:?}",
        head.header_all("Connection")
    );
    assert_eq!(
        head.header_all("Sec-WebSocket-Accept"),
        vec![WS_ACCEPT],
        "{what}: Sec-WebSocket-Accept"
    );
    assert!(
        !head.has_header("Content-Length"),
        "{what}: 101 must not carry Content-Length: {:?}",
        head.headers
    );
}

// ---------------------------------------------------------------------------
// 4.1 framed
// ---------------------------------------------------------------------------

#[test]
fn framed_handshake_has_rfc_accept_and_no_content_length() {
    let s = Server::start();
    let mut ws = s.ws(&format!("/echo/000/{}/websocket", sid()));
    assert_handshake_head(&ws.head, "framed handshake");
    assert_eq!(ws.next_frame(), Frame::Open);
}

#[test]
fn framed_handshake_accepts_connection_keep_alive_upgrade() {
    let s = Server::start();
    let path = format!("/echo/000/{}/websocket", sid());
    let mut ws = ws_connect(s.port, &path, &[("Connection", "keep-alive, Upgrade")]);
    assert_handshake_head(&ws.head, "Connection: keep-alive, Upgrade");
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["ka"]"#);
    assert_eq!(ws.next_frame(), msgs(&["ka"]));
}

#[test]
fn framed_handshake_upgrade_value_is_case_insensitive() {
    let s = Server::start();
    let path = format!("/echo/000/{}/websocket", sid());
    let mut ws = ws_connect(
        s.port,
        &path,
        &[("Upgrade", "WebSocket"), ("Connection", "upgrade")],
    );
    assert_eq!(ws.next_frame(), Frame::Open);
}

#[test]
fn framed_echo_of_array_of_strings() {
    let s = Server::start();
    let mut ws = framed(&s, "/echo");
    ws.send_text(r#"["a","b"]"#);
    assert_eq!(ws.messages(2), vec!["a", "b"]);
    ws.send_text(r#"["c"]"#);
    assert_eq!(ws.next_frame(), msgs(&["c"]));
}

#[test]
fn framed_accepts_single_json_string() {
    let s = Server::start();
    let mut ws = framed(&s, "/echo");
    ws.send_text(r#""hello""#);
    assert_eq!(ws.next_frame(), msgs(&["hello"]));
}

#[test]
fn framed_ignores_empty_message_and_empty_array() {
    let s = Server::start();
    let mut ws = framed(&s, "/echo");
    ws.send_text("");
    ws.send_text("[]");
    ws.send_text(r#"["after"]"#);
    assert_eq!(ws.next_frame(), msgs(&["after"]));
}

#[test]
fn framed_broken_json_closes_connection_and_delivers_nothing() {
    let s = Server::start();
    for broken in [r#"["x"#, "x", r#"["a" "b"]"#] {
        let mut ws = framed(&s, "/echo");
        ws.send_text(broken);
        let (texts, _close) = ws.read_until_closed();
        assert!(
            texts.iter().all(|t| !t.starts_with('a')),
            "broken JSON {broken:?} delivered something: {texts:?}"
        );
    }
}

#[test]
fn two_websockets_with_same_session_id_are_independent() {
    let s = Server::start();
    let path = format!("/echo/000/{}/websocket", sid());
    let mut one = s.ws(&path);
    let mut two = s.ws(&path);
    assert_eq!(one.next_frame(), Frame::Open);
    assert_eq!(two.next_frame(), Frame::Open);
    one.send_text(r#"["to one"]"#);
    assert_eq!(one.next_frame(), msgs(&["to one"]));
    two.send_text(r#"["to two"]"#);
    assert_eq!(
        two.next_frame(),
        msgs(&["to two"]),
        "the second connection must not see the first one's messages"
    );
    one.close();
    // Still alive after the other closed.
    two.send_text(r#"["again"]"#);
    assert_eq!(two.next_frame(), msgs(&["again"]));
}

#[test]
fn websocket_session_id_can_be_reused_after_close() {
    let s = Server::start();
    let path = format!("/echo/000/{}/websocket", sid());
    let mut ws = s.ws(&path);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.close();
    let mut ws = s.ws(&path);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["reused"]"#);
    assert_eq!(ws.next_frame(), msgs(&["reused"]));
}

#[test]
fn websocket_is_not_in_session_registry() {
    let s = Server::start();
    let id = sid();
    let mut ws = s.ws(&format!("/echo/000/{id}/websocket"));
    assert_eq!(ws.next_frame(), Frame::Open);
    // The same id over xhr is a separate, new session.
    let r = s.xhr_send("/echo", &id, br#"["x"]"#);
    assert_eq!(
        r.status, 404,
        "a websocket session is not reachable by xhr_send"
    );
    assert_eq!(s.xhr("/echo", &id).text(), "o\n");
}

#[test]
fn framed_close_service_sends_open_then_3000_then_closes() {
    let s = Server::start();
    let mut ws = s.ws(&format!("/close/000/{}/websocket", sid()));
    assert_eq!(ws.next_frame(), Frame::Open);
    assert_eq!(ws.next_frame(), close_frame(3000, "Go away!"));
    let (texts, _close) = ws.read_until_closed();
    assert!(texts.is_empty(), "nothing after the c frame: {texts:?}");
}

#[test]
fn framed_heartbeat_is_h_frame_or_ping() {
    let s = Server::start_with(&["--heartbeat-delay", "200ms"]);
    let mut ws = framed(&s, "/echo");
    // A WebSocket ping (Err) is a legal heartbeat too. Heartbeats repeat
    // while the connection stays idle.
    for i in 0..3 {
        if let Ok(t) = ws.next_text_or_ping() {
            assert_eq!(t, "h", "idle frame #{i} must be a heartbeat");
        }
    }
    // The connection is still usable.
    ws.send_text(r#"["after hb"]"#);
    assert_eq!(ws.messages(1), vec!["after hb"]);
}

#[test]
fn thousand_messages_in_order_over_websocket() {
    let s = Server::start();
    let mut ws = framed(&s, "/echo");
    for i in 0..1000 {
        ws.send_text(&json_array(&[&format!("m{i}")]));
    }
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(ws.messages(1000), want);
}

// ---------------------------------------------------------------------------
// 4.2 raw
// ---------------------------------------------------------------------------

#[test]
fn raw_handshake_has_rfc_accept_and_no_content_length() {
    let s = Server::start();
    let ws = s.ws("/echo/websocket");
    assert_handshake_head(&ws.head, "raw handshake");
    ws.close();
}

#[test]
fn raw_handshake_accepts_connection_keep_alive_upgrade() {
    let s = Server::start();
    let mut ws = ws_connect(
        s.port,
        "/echo/websocket",
        &[("Connection", "keep-alive, Upgrade")],
    );
    assert_handshake_head(&ws.head, "raw, Connection: keep-alive, Upgrade");
    ws.send_text("ka");
    assert_eq!(ws.next_text(), "ka");
}

#[test]
fn raw_websocket_echoes_text_without_framing() {
    let s = Server::start();
    let mut ws = s.ws("/echo/websocket");
    for m in ["hello", r#"["not","parsed"]"#, "o", "a[\"x\"]"] {
        ws.send_text(m);
        assert_eq!(ws.next_text(), m);
    }
}

#[test]
fn raw_close_service_sends_close_frame_3000_go_away() {
    let s = Server::start();
    let mut ws = s.ws("/close/websocket");
    let (texts, close) = ws.read_until_closed();
    assert!(
        texts.is_empty(),
        "no frames on the raw websocket: {texts:?}"
    );
    assert_eq!(close, Some((3000, "Go away!".to_string())));
}

// ---------------------------------------------------------------------------
// Section 10 services over WebSocket
// ---------------------------------------------------------------------------

#[test]
fn amplify_over_websocket() {
    let s = Server::start();
    let mut ws = framed(&s, "/amplify");
    ws.send_text(r#"["4"]"#);
    assert_eq!(ws.messages(1), vec!["x".repeat(16)]);
    let mut raw = s.ws("/amplify/websocket");
    raw.send_text("2");
    assert_eq!(raw.next_text(), "xxxx");
}

#[test]
fn broadcast_over_websocket_reaches_every_session() {
    let s = Server::start();
    let mut a = framed(&s, "/broadcast");
    let mut b = framed(&s, "/broadcast");
    // Make sure both sessions are registered before broadcasting.
    a.send_text(r#"["sync-a"]"#);
    assert_eq!(a.messages(1), vec!["sync-a"]);
    assert_eq!(b.messages(1), vec!["sync-a"]);
    b.send_text(r#"["from b"]"#);
    assert_eq!(a.messages(1), vec!["from b"]);
    assert_eq!(b.messages(1), vec!["from b"]);
}

#[test]
fn ticker_over_websocket() {
    let s = Server::start();
    let mut ws = framed(&s, "/ticker");
    assert_eq!(ws.messages(1), vec!["tick!"]);
    assert_eq!(ws.messages(1), vec!["tick!"]);
}
