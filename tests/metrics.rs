//! `--metrics`: Prometheus counters checked against the traffic sent.

mod support;

use std::time::Duration;

use support::{
    metric_value as value, metrics_port, scrape, ws_connect, Conn, Frame, Request, Server,
};

#[test]
fn counters_follow_the_traffic() {
    let server = Server::start_with(&["--metrics", "127.0.0.1:0", "--disconnect-delay", "200ms"]);
    let port = metrics_port(&server);
    assert_eq!(
        Conn::open(port).request(&Request::get("/healthz")).status,
        200
    );

    let id = server.open_xhr_session("/echo");
    server.send_ok("/echo", &id, r#"["abc","de"]"#);
    assert_eq!(
        server.poll("/echo", &id),
        Frame::Messages(vec!["abc".into(), "de".into()])
    );
    let mut ws = ws_connect(server.port, "/echo/000/mws/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(r#"["fghi"]"#);
    assert_eq!(ws.messages(1), vec!["fghi".to_owned()]);
    assert_eq!(server.xhr("/close", "mclose").text(), "o\n");
    assert_eq!(server.get("/echo/info").status, 200);

    let m = scrape(port);
    assert_eq!(
        value(
            &m,
            r#"sockjs_messages_total{service="/echo",direction="in"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"sockjs_messages_total{service="/echo",direction="out"}"#
        ),
        3.0
    );
    assert_eq!(
        value(&m, r#"sockjs_bytes_total{service="/echo",direction="in"}"#),
        9.0
    );
    assert_eq!(
        value(&m, r#"sockjs_bytes_total{service="/echo",direction="out"}"#),
        9.0
    );
    assert_eq!(
        value(
            &m,
            r#"sockjs_sessions_opened_total{service="/echo",transport="xhr-polling"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"sockjs_sessions_opened_total{service="/echo",transport="websocket"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"sockjs_sessions_open{service="/echo",transport="websocket"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, r#"sockjs_info_latency_seconds_count{service="/echo"}"#),
        1.0
    );
    assert!(value(&m, r#"sockjs_http_responses_total{status="200"}"#) >= 4.0);
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);

    // The /close session is forgotten after disconnect_delay, counted by its code.
    support::poll_until(
        "the closed session to be counted",
        Duration::from_secs(10),
        || {
            let m = scrape(port);
            m.contains(r#"sockjs_sessions_closed_total{service="/close",reason="application",code="3000"} 1"#)
            .then_some(())
        },
    );
    ws.ws.close(None).unwrap();
    support::poll_until(
        "the WebSocket session to be counted closed",
        Duration::from_secs(10),
        || {
            let m = scrape(port);
            (value(
                &m,
                r#"sockjs_sessions_open{service="/echo",transport="websocket"}"#,
            ) == 0.0)
                .then_some(())
        },
    );
}
