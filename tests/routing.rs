//! PROTOCOL.md section 1: the URL map under one service prefix, the greeting,
//! 404s, the 405/400 answers on websocket paths, SERVER/SESSION segments.

mod support;

use support::*;

const SERVICES: [&str; 7] = [
    "/echo",
    "/disabled_websocket_echo",
    "/cookie_needed_echo",
    "/close",
    "/ticker",
    "/amplify",
    "/broadcast",
];

const UPGRADE_ONLY_WS: &str = "Can \"Upgrade\" only to \"WebSocket\".";
const CONNECTION_MUST_BE_UPGRADE: &str = "\"Connection\" must be \"Upgrade\".";

#[test]
fn greeting_on_prefix_and_prefix_slash() {
    let s = Server::start();
    for prefix in SERVICES {
        for path in [prefix.to_string(), format!("{prefix}/")] {
            let r = s.get(&path);
            assert_eq!(r.status, 200, "GET {path}");
            r.assert_header("Content-Type", "text/plain; charset=UTF-8");
            assert_eq!(r.text(), "Welcome to SockJS!\n", "GET {path}");
        }
    }
}

#[test]
fn unknown_paths_under_prefix_are_404() {
    let s = Server::start();
    let id = sid();
    let cases: Vec<(&str, String)> = vec![
        ("GET", "/echo/a".into()),
        ("GET", "/echo//".into()),
        ("GET", "/echo/a/a".into()),
        ("GET", "/echo/a/a/".into()),
        ("POST", "/echo/a./a/xhr".into()),
        ("POST", "/echo/a/a./xhr".into()),
        ("POST", "/echo/a./a/xhr_send".into()),
        ("POST", "/echo/a/a./xhr_streaming".into()),
        ("GET", "/echo/iframe.htm".into()),
        ("GET", "/echo/IFRAME.HTML".into()),
        ("GET", "/echo/iframe-/.html".into()),
        ("GET", "/echo/iframe.html/a".into()),
        ("POST", format!("/echo/000/{id}/unknown_transport")),
        ("GET", format!("/echo/000/{id}/unknown_transport")),
        ("POST", format!("/echo/000/{id}/xhr/extra")),
        ("POST", format!("/echo//{id}/xhr")),
        ("POST", "/echo/000//xhr".into()),
    ];
    for (method, path) in cases {
        let r = s.request(Request::new(method, &path));
        assert_eq!(r.status, 404, "{method} {path} must be 404");
    }
}

#[test]
fn dotted_server_or_session_segment_is_404_on_websocket() {
    let s = Server::start();
    for path in ["/echo/a./a/websocket", "/echo/a/a./websocket"] {
        let r = s.request(ws_request(path, &[]));
        assert_eq!(r.status, 404, "GET {path} with upgrade must be 404");
    }
}

#[test]
fn server_and_session_segments_accept_any_non_dotted_value() {
    let s = Server::start();
    let uuid = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b";
    let values = ["_", "1", "abcdefgh_i-j%20", uuid];
    // Each value as SESSION (under server 000) and as SERVER (fresh session).
    for v in values {
        let r = s.xhr("/echo", v);
        assert_eq!(r.status, 200, "session segment {v:?}");
        assert_eq!(r.text(), "o\n", "session segment {v:?}");
        let id = sid();
        let r = s.post(&format!("/echo/{v}/{id}/xhr"), b"");
        assert_eq!(r.status, 200, "server segment {v:?}");
        assert_eq!(r.text(), "o\n", "server segment {v:?}");
    }
    // And on the framed websocket path.
    for v in values {
        let mut ws = s.ws(&format!("/echo/{v}/{v}/websocket"));
        assert_eq!(
            ws.next_frame(),
            Frame::Open,
            "websocket with segments {v:?}"
        );
        ws.close();
    }
}

#[test]
fn same_session_under_different_server_ids_is_same_session() {
    let s = Server::start();
    let id = sid();
    let r = s.post(&format!("/echo/000/{id}/xhr"), b"");
    assert_eq!(r.text(), "o\n");
    let r = s.post(&format!("/echo/999/{id}/xhr_send"), br#"["via 999"]"#);
    assert_eq!(r.status, 204, "send under /999/ reaches the session");
    let r = s.post(&format!("/echo/abc/{id}/xhr"), b"");
    assert_eq!(
        one_frame_body(&r.text()),
        Frame::Messages(vec!["via 999".into()]),
        "poll under another server id sees the same session (not a new `o`)"
    );
}

#[test]
fn post_on_websocket_paths_is_405_with_allow_get() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/echo/websocket".to_string(),
        format!("/echo/000/{id}/websocket"),
    ] {
        let r = s.post(&path, b"");
        assert_eq!(r.status, 405, "POST {path}");
        r.assert_header("Allow", "GET");
        r.assert_no_header("Content-Type");
        assert!(
            r.body.is_empty(),
            "POST {path}: body must be empty, got {:?}",
            r.body_lossy()
        );
    }
}

#[test]
fn get_websocket_without_upgrade_is_400() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/echo/websocket".to_string(),
        format!("/echo/000/{id}/websocket"),
    ] {
        let r = s.get(&path);
        assert_eq!(r.status, 400, "plain GET {path}");
        assert!(
            r.body_lossy().contains(UPGRADE_ONLY_WS),
            "plain GET {path}: body {:?}",
            r.body_lossy()
        );
    }
}

#[test]
fn get_websocket_with_wrong_upgrade_is_400() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/echo/websocket".to_string(),
        format!("/echo/000/{id}/websocket"),
    ] {
        let r = s.request(ws_request(&path, &[("Upgrade", "h2c")]));
        assert_eq!(r.status, 400, "Upgrade: h2c on {path}");
        assert!(
            r.body_lossy().contains(UPGRADE_ONLY_WS),
            "Upgrade: h2c on {path}: body {:?}",
            r.body_lossy()
        );
        // Missing Upgrade header while everything else is a handshake.
        let r = s.request(ws_request(&path, &[("Upgrade", "")]));
        assert_eq!(r.status, 400, "no Upgrade on {path}");
        assert!(
            r.body_lossy().contains(UPGRADE_ONLY_WS),
            "no Upgrade on {path}: body {:?}",
            r.body_lossy()
        );
    }
}

#[test]
fn get_websocket_without_key_is_400() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/echo/websocket".to_string(),
        format!("/echo/000/{id}/websocket"),
    ] {
        let r = s.request(ws_request(&path, &[("Sec-WebSocket-Key", "")]));
        assert_eq!(
            r.status, 400,
            "handshake without Sec-WebSocket-Key on {path}"
        );
    }
}

#[test]
fn get_websocket_with_connection_close_is_400() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/echo/websocket".to_string(),
        format!("/echo/000/{id}/websocket"),
    ] {
        let r = s.request(ws_request(&path, &[("Connection", "close")]));
        assert_eq!(r.status, 400, "Connection: close on {path}");
        assert!(
            r.body_lossy().contains(CONNECTION_MUST_BE_UPGRADE),
            "Connection: close on {path}: body {:?}",
            r.body_lossy()
        );
    }
}

#[test]
fn disabled_websocket_service_answers_404_on_both_websocket_paths() {
    let s = Server::start();
    let id = sid();
    for path in [
        "/disabled_websocket_echo/websocket".to_string(),
        format!("/disabled_websocket_echo/000/{id}/websocket"),
    ] {
        let r = s.request(ws_request(&path, &[]));
        assert_eq!(r.status, 404, "handshake on {path}");
        let r = s.get(&path);
        assert_eq!(r.status, 404, "plain GET on {path}");
    }
    // The other transports still work there.
    let id = s.open_xhr_session("/disabled_websocket_echo");
    s.send_ok("/disabled_websocket_echo", &id, r#"["x"]"#);
    assert_eq!(
        s.poll_messages("/disabled_websocket_echo", &id, 1),
        vec!["x".to_string()]
    );
}
