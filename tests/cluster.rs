//! Cluster mode over real sockets: several gateway nodes sharing a real
//! `redis-server`, requests of one session spread over the nodes.

mod support;

use std::time::{Duration, Instant};

use support::redis::Redis;
use support::*;

/// sockjs_gateway::cluster::NODE_LEASE, the bound on declaring a dead node's
/// sessions lost.
const NODE_LEASE: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(3);

fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

fn nodes(redis: &Redis, n: usize) -> Vec<Server> {
    (0..n).map(|_| node(redis, &[])).collect()
}

fn node_id(server: &Server) -> String {
    poll_until("the cluster node line", Duration::from_secs(10), || {
        let log = server.log();
        let rest = log.split("cluster node ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

#[test]
fn xhr_polling_session_across_three_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let sid = n[0].open_xhr_session("/echo");
    let started = Instant::now();
    for i in 0..200 {
        let message = format!("m{i}");
        n[(i + 1) % 3].send_ok("/echo", &sid, &json_array(&[&message]));
        let got = n[(i + 2) % 3].poll_messages("/echo", &sid, 1);
        assert_eq!(got, [message], "round {i}");
    }
    let per_round = started.elapsed() / 200;
    eprintln!("cross-node xhr round trip (send via one node, poll via another): {per_round:?}");
    // Batches too: ten sends through one node, one poll through another.
    for i in 0..10 {
        n[1].send_ok("/echo", &sid, &json_array(&[&format!("b{i}")]));
    }
    let batch = n[2].poll_messages("/echo", &sid, 10);
    let expected: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(batch, expected);
    // The handler ran once, on the owner: one echo per message, none twice.
    n[0].send_ok("/echo", &sid, r#"["last"]"#);
    assert_eq!(n[1].poll_messages("/echo", &sid, 1), ["last"]);
}

/// A forwarded 204 has no body at all: on a keep-alive connection the next
/// response starts right after its head (a chunked end written after a
/// 204 once read as the start of the next response).
#[test]
fn forwarded_answers_keep_the_connection_usable() {
    let redis = Redis::start();
    let n = nodes(&redis, 2);
    let sid = n[0].open_xhr_session("/echo");
    let mut conn = n[1].connect();
    for i in 0..3 {
        let message = format!("k{i}");
        let body = json_array(&[&message]);
        let send = Request::post(&format!("/echo/000/{sid}/xhr_send"), body.as_bytes());
        let sent = conn.request(&send);
        assert_eq!(sent.status, 204, "{}", sent.body_lossy());
        assert!(sent.body.is_empty());
        assert!(conn.take_buffered().is_empty(), "bytes after the 204");
        let poll = conn.request(&Request::post(&format!("/echo/000/{sid}/xhr"), b""));
        assert_eq!(poll.status, 200);
        assert_eq!(one_frame_body(&poll.text()), Frame::Messages(vec![message]));
    }
}

#[test]
fn xhr_streaming_through_another_node_and_the_single_receiver_rule() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let sid = n[0].open_xhr_session("/echo");
    let mut stream = xhr_streaming(n[1].port, "/echo", &sid);
    stream.expect_prelude();
    for i in 0..5 {
        let message = format!("s{i}");
        n[2].send_ok("/echo", &sid, &json_array(&[&message]));
        assert_eq!(stream.next_frame(), Frame::Messages(vec![message]));
    }
    let second = n[2].poll("/echo", &sid);
    assert_eq!(second, close_frame(2010, "Another connection still open"));
    n[0].send_ok("/echo", &sid, r#"["after"]"#);
    assert_eq!(stream.next_frame(), Frame::Messages(vec!["after".into()]));

    // A session a streaming receiver opens on one node streams o there.
    let fresh = support::sid();
    let mut opened = xhr_streaming(n[2].port, "/echo", &fresh);
    opened.expect_prelude();
    assert_eq!(opened.next_frame(), Frame::Open);
    n[0].send_ok("/echo", &fresh, r#"["x"]"#);
    assert_eq!(opened.next_frame(), Frame::Messages(vec!["x".into()]));
}

#[test]
fn eventsource_htmlfile_and_jsonp_across_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);

    let sid = n[0].open_xhr_session("/echo");
    let mut events = eventsource(n[1].port, "/echo", &sid);
    events.expect_eventsource_prelude();
    n[2].send_ok("/echo", &sid, r#"["es"]"#);
    assert_eq!(
        events.next_event_frame(),
        Frame::Messages(vec!["es".into()])
    );

    let sid = n[0].open_xhr_session("/echo");
    let mut page = htmlfile(n[1].port, "/echo", &sid, "cb");
    page.read_htmlfile_prelude();
    n[2].send_ok("/echo", &sid, r#"["hf"]"#);
    assert_eq!(
        page.next_htmlfile_frame(),
        Frame::Messages(vec!["hf".into()])
    );

    let sid = n[0].open_jsonp_session("/echo");
    n[1].jsonp_send_form_ok("/echo", &sid, r#"["jp"]"#);
    assert_eq!(n[2].jsonp_messages("/echo", &sid, 1), ["jp"]);
}

#[test]
fn broadcast_reaches_every_member_on_every_node_in_one_order() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let polled = n[0].open_xhr_session("/broadcast");
    let mut raw = n[1].ws("/broadcast/websocket");
    let framed_sid = sid();
    let mut framed = n[2].ws(&format!("/broadcast/000/{framed_sid}/websocket"));
    assert_eq!(framed.next_frame(), Frame::Open);
    // The raw member's own message proves it is registered: it must come
    // back to it like to the others.
    raw.send_text("sync");
    assert_eq!(n[1].poll_messages("/broadcast", &polled, 1), ["sync"]);
    assert_eq!(raw.next_text(), "sync");
    assert_eq!(framed.messages(1), ["sync"]);

    const EACH: usize = 30;
    for i in 0..EACH {
        n[2].send_ok("/broadcast", &polled, &json_array(&[&format!("p{i}")]));
        raw.send_text(&format!("r{i}"));
        framed.send_text(&json_array(&[&format!("f{i}")]));
    }
    let total = 3 * EACH;
    let from_polled = n[1].poll_messages("/broadcast", &polled, total);
    let from_raw: Vec<String> = (0..total).map(|_| raw.next_text()).collect();
    let from_framed = framed.messages(total);
    for (who, got) in [("raw", &from_raw), ("framed", &from_framed)] {
        assert_eq!(got, &from_polled, "{who} member saw another order");
    }
    for prefix in ["p", "r", "f"] {
        let mine: Vec<&String> = from_polled
            .iter()
            .filter(|m| m.starts_with(prefix))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(
            mine,
            expected.iter().collect::<Vec<_>>(),
            "{prefix}: once each, in order"
        );
    }
}

#[test]
fn a_dead_owner_s_sessions_close_and_the_others_keep_working() {
    let redis = Redis::start();
    // Sessions must outlive the wait for the dead node's lease.
    let long = ["--disconnect-delay", "30s"];
    let mut n: Vec<Server> = (0..3).map(|_| node(&redis, &long)).collect();
    let dead_id = node_id(&n[0]);
    let owned_by_dead = n[0].open_xhr_session("/echo");
    let also_owned_by_dead = n[0].open_xhr_session("/echo");
    let owned_by_b = n[1].open_xhr_session("/echo");
    let mut attached = xhr_streaming(n[1].port, "/echo", &owned_by_dead);
    attached.expect_prelude();

    let killed = Instant::now();
    n[0].kill();
    // The streaming receiver forwarded through B ends with the owner-lost
    // close (it does not hang, and is not cut short).
    assert_eq!(
        attached.next_frame(),
        close_frame(4503, "Session owner lost")
    );
    attached.expect_end();
    assert!(killed.elapsed() < NODE_LEASE, "{:?}", killed.elapsed());
    assert_eq!(
        n[2].poll("/echo", &owned_by_dead),
        close_frame(4503, "Session owner lost")
    );
    assert!(killed.elapsed() < NODE_LEASE + SLACK);
    // Later receivers, on any node, get the same close frame.
    assert_eq!(
        n[1].poll("/echo", &owned_by_dead),
        close_frame(4503, "Session owner lost")
    );
    // A send to it is dropped as after any close, and answered as
    // delivered, so the client reads the close code from its receiver.
    let send = n[1].xhr_send("/echo", &owned_by_dead, br#"["x"]"#);
    assert_eq!(send.status, 204);
    assert_eq!(
        n[1].poll("/echo", &owned_by_dead),
        close_frame(4503, "Session owner lost")
    );

    // Once the lease is gone, the owner is declared lost without a connect.
    let lease = format!("sockjs:node:{dead_id}");
    poll_until(
        "the dead node's lease to expire",
        NODE_LEASE + SLACK,
        || (redis.command(&["EXISTS", &lease]) == ":0").then_some(()),
    );
    assert_eq!(
        n[2].poll("/echo", &also_owned_by_dead),
        close_frame(4503, "Session owner lost")
    );

    // Sessions of live nodes are unaffected.
    n[2].send_ok("/echo", &owned_by_b, r#"["still here"]"#);
    assert_eq!(n[2].poll_messages("/echo", &owned_by_b, 1), ["still here"]);

    // A restarted node rejoins: its new sessions work across nodes.
    n[0] = node(&redis, &long);
    let fresh = n[0].open_xhr_session("/echo");
    n[1].send_ok("/echo", &fresh, r#"["rejoined"]"#);
    assert_eq!(n[2].poll_messages("/echo", &fresh, 1), ["rejoined"]);
}

/// The receiver a client holds through a live node while the owner dies:
/// every transport's response ends with the owner-lost close, wrapped as
/// that transport wraps frames, instead of breaking off.
#[test]
fn receivers_forwarded_when_the_owner_dies_end_with_a_close_frame() {
    let redis = Redis::start();
    let long = ["--disconnect-delay", "30s"];
    let mut owner = node(&redis, &long);
    let relay = node(
        &redis,
        &["--disconnect-delay", "30s", "--metrics", "127.0.0.1:0"],
    );
    let lost = r#"c[4503,"Session owner lost"]"#;
    let cases = [
        ("xhr", format!("{lost}\n")),
        ("eventsource", format!("\r\ndata: {lost}\r\n\r\n")),
        (
            "jsonp?c=cb",
            format!("/**/cb({});\r\n", serde_json::to_string(lost).unwrap()),
        ),
    ];
    let mut pending = Vec::new();
    for (receiver, _) in &cases {
        let sid = owner.open_xhr_session("/echo");
        let method_path = format!("/echo/000/{sid}/{receiver}");
        let request = if *receiver == "xhr" {
            Request::post(&method_path, b"")
        } else {
            Request::get(&method_path)
        };
        // The head comes back only once the owner answered: the receiver
        // is attached there, its body streaming through the relay node.
        let stream = relay.connect().stream(&request);
        assert_eq!(stream.status, 200, "{receiver}");
        pending.push(stream);
    }
    owner.kill();
    for ((receiver, expected), mut stream) in cases.iter().zip(pending) {
        let body = String::from_utf8(stream.read_to_end()).unwrap();
        assert_eq!(&body, expected, "{receiver}");
    }
    let m = scrape(metrics_port(&relay));
    assert_eq!(
        metric_value(
            &m,
            r#"sockjs_cluster_streams_broken_total{service="/echo"}"#
        ),
        3.0
    );
    assert_eq!(metric_value(&m, &routes("forwarded")), 3.0);
}

/// A node restarted on a dead owner's address before its lease ran out is
/// not taken for the owner: it refuses the forward, and the session is
/// lost, not opened anew there.
#[test]
fn a_node_on_a_dead_owner_s_address_is_not_the_owner() {
    let redis = Redis::start();
    let long = ["--disconnect-delay", "30s"];
    let mut owner = node(&redis, &long);
    let other = node(&redis, &long);
    let sid = owner.open_xhr_session("/echo");
    let address = format!("127.0.0.1:{}", owner.port);
    owner.kill();
    let url = redis.url();
    let successor = Server::start_at(&address, &["--redis", &url, "--disconnect-delay", "30s"]);
    assert_eq!(
        other.poll("/echo", &sid),
        close_frame(4503, "Session owner lost")
    );
    assert_eq!(other.xhr_send("/echo", &sid, br#"["x"]"#).status, 204);
    // Asked directly, as a forward to the dead node would be.
    let forwarded = successor.request(
        Request::post(&format!("/echo/000/{}/xhr", support::sid()), b"")
            .header("X-SockJS-Gateway-Forwarded", "0123456789abcdef"),
    );
    assert_eq!(forwarded.status, 421);
    assert_eq!(forwarded.text(), "Not the session's owner.");
    // Its own sessions work across nodes.
    let fresh = successor.open_xhr_session("/echo");
    other.send_ok("/echo", &fresh, r#"["new"]"#);
    assert_eq!(successor.poll_messages("/echo", &fresh, 1), ["new"]);
}

/// A node that stops (SIGSTOP: its sockets stay open, nothing answers) is
/// found out like a dead one: a receiver streaming from it through a live
/// node ends with 4503 once a heartbeat is overdue, and a new receiver gets
/// 4503 once the stopped node's answer is overdue and its lease gone.
#[test]
fn a_stopped_owner_does_not_hold_its_clients() {
    let redis = Redis::start();
    let flags = ["--heartbeat-delay", "1s", "--disconnect-delay", "30s"];
    let owner = node(&redis, &flags);
    let relay = node(&redis, &flags);
    let streamed = owner.open_xhr_session("/echo");
    let polled = owner.open_xhr_session("/echo");
    let mut stream = xhr_streaming(relay.port, "/echo", &streamed);
    stream.expect_prelude();
    assert_eq!(
        stream.next_frame(),
        Frame::Heartbeat,
        "the owner's heartbeat"
    );
    signal(&owner, "STOP");
    let stopped = Instant::now();
    let lost = close_frame(4503, "Session owner lost");
    let mut frame = stream.next_frame();
    while frame == Frame::Heartbeat {
        frame = stream.next_frame();
    }
    assert_eq!(frame, lost);
    stream.expect_end();
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(relay.poll("/echo", &polled), lost);
    assert!(stopped.elapsed() < NODE_LEASE + Duration::from_secs(10));
    signal(&owner, "CONT");
}

fn signal(server: &Server, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

/// A node remembers for a moment where the sessions it forwarded to live.
/// When such a session has ended on its owner, the owner refuses the
/// forward (421) and the node asks Redis again: a send then finds no
/// session, a receiver opens a new one here, recorded here, as on one node.
#[test]
fn a_remembered_owner_that_no_longer_holds_the_session_is_asked_again() {
    let redis = Redis::start();
    let owner = node(
        &redis,
        &["--disconnect-delay", "300ms", "--metrics", "127.0.0.1:0"],
    );
    let relay = node(&redis, &["--disconnect-delay", "300ms"]);
    let relay_id = node_id(&relay);
    let for_send = owner.open_xhr_session("/echo");
    let for_poll = owner.open_xhr_session("/echo");
    // Forwarded once each: the relay now knows their owner.
    relay.send_ok("/echo", &for_send, r#"["a"]"#);
    relay.send_ok("/echo", &for_poll, r#"["b"]"#);
    for sid in [&for_send, &for_poll] {
        let record = format!("sockjs:session:/echo:{sid}");
        poll_until(
            "the session to end on its owner",
            Duration::from_secs(5),
            || (redis.command(&["EXISTS", &record]) == ":0").then_some(()),
        );
    }
    let send = relay.xhr_send("/echo", &for_send, br#"["late"]"#);
    assert_eq!(send.status, 404);
    assert_eq!(send.text(), "Session not found.");
    assert_eq!(relay.poll("/echo", &for_poll), Frame::Open);
    assert_eq!(
        redis.get(&format!("sockjs:session:/echo:{for_poll}")),
        Some(relay_id)
    );
    // Both went to the remembered owner first, which refused them.
    let m = scrape(metrics_port(&owner));
    assert_eq!(metric_value(&m, &routes("misdirected")), 2.0);
}

/// A Redis that stops answering without closing its connections (stalled,
/// or a silent network failure): broadcast members are told they may miss
/// messages instead of waiting on a subscription that hears nothing.
#[test]
fn a_stalled_subscription_closes_the_broadcast_members() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let mut member = a.ws(&format!("/broadcast/000/{}/websocket", sid()));
    assert_eq!(member.next_frame(), Frame::Open);
    member.send_text(r#"["before"]"#);
    assert_eq!(member.messages(1), ["before"]);
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "15000", "ALL"]), "+OK");
    let stalled = Instant::now();
    assert_eq!(
        member.next_frame(),
        close_frame(4504, "Cluster backplane unavailable")
    );
    assert!(
        stalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        stalled.elapsed()
    );
    // Logged just before the close went out; stderr is read by another thread.
    poll_until(
        "the unanswered ping in the node's log",
        Duration::from_secs(5),
        || a.log().contains("does not answer its ping").then_some(()),
    );
}

#[test]
fn without_redis_websockets_keep_working_and_cross_node_work_is_refused() {
    let mut redis = Redis::start();
    let a = node(&redis, &["--metrics", "127.0.0.1:0"]);
    let b = node(&redis, &[]);
    let health_port = metrics_port(&a);
    let healthz = || Conn::open(health_port).request(&Request::get("/healthz"));
    poll_until("healthz to say reachable", Duration::from_secs(5), || {
        healthz().text().contains("redis: reachable").then_some(())
    });
    let local = a.open_xhr_session("/echo");
    let mut ws = a.ws("/echo/websocket");

    let port = redis.port;
    redis.kill();
    ws.send_text("still");
    assert_eq!(ws.next_text(), "still");
    let refused = poll_until(
        "a new session to be refused",
        Duration::from_secs(5),
        || {
            let r = a.xhr("/echo", &sid());
            (r.status == 503).then_some(r)
        },
    );
    assert_eq!(refused.text(), "Cluster backplane unavailable.");
    // Refused or not, a session response of a cookie_needed service sets
    // JSESSIONID.
    let refused_cookie = a.request(Request::post(
        &format!("/cookie_needed_echo/000/{}/xhr", sid()),
        b"",
    ));
    assert_eq!(refused_cookie.status, 503);
    assert_eq!(
        refused_cookie.header_all("Set-Cookie"),
        ["JSESSIONID=dummy; path=/"]
    );
    let health = poll_until("healthz to say unreachable", Duration::from_secs(5), || {
        let r = healthz();
        r.text().contains("redis: unreachable").then_some(r)
    });
    assert_eq!(health.status, 200);
    assert!(a.log().contains("is unreachable"), "the outage is logged");
    let during = scrape(health_port);
    assert_eq!(metric_value(&during, "sockjs_cluster_backplane_up"), 0.0);
    assert!(metric_value(&during, &routes("refused")) >= 1.0);
    // A session this node owns needs no Redis.
    a.send_ok("/echo", &local, r#"["local"]"#);
    assert_eq!(a.poll_messages("/echo", &local, 1), ["local"]);
    ws.send_text("again");
    assert_eq!(ws.next_text(), "again");

    let _redis = Redis::start_on(port);
    let sid = poll_until(
        "new sessions to work again",
        Duration::from_secs(10),
        || {
            let sid = sid();
            (a.xhr("/echo", &sid).text() == "o\n").then_some(sid)
        },
    );
    b.send_ok("/echo", &sid, r#"["back"]"#);
    assert_eq!(b.poll_messages("/echo", &sid, 1), ["back"]);
    assert_eq!(
        a.log().matches("is unreachable").count(),
        1,
        "once per outage"
    );

    // What a's metrics say of it all: a session B owns, sent to through A.
    let on_b = b.open_xhr_session("/echo");
    a.send_ok("/echo", &on_b, r#"["via a"]"#);
    assert_eq!(b.poll_messages("/echo", &on_b, 1), ["via a"]);
    // A forwarded answer carries the owner's cookie, once.
    let cookie_sid = b.open_xhr_session("/cookie_needed_echo");
    let via_a = a.request(
        Request::post(
            &format!("/cookie_needed_echo/000/{cookie_sid}/xhr_send"),
            br#"["c"]"#,
        )
        .header("Cookie", "JSESSIONID=abc"),
    );
    assert_eq!(via_a.status, 204);
    assert_eq!(via_a.header_all("Set-Cookie"), ["JSESSIONID=abc; path=/"]);
    let after = scrape(health_port);
    assert_eq!(metric_value(&after, "sockjs_cluster_backplane_up"), 1.0);
    assert_eq!(metric_value(&after, &routes("forwarded")), 1.0);
    assert!(metric_value(&after, &routes("here")) >= 1.0);
    assert!(
        metric_value(
            &after,
            r#"sockjs_cluster_route_seconds_count{service="/echo"}"#
        ) >= 2.0
    );
}

fn routes(outcome: &str) -> String {
    format!(r#"sockjs_cluster_routes_total{{service="/echo",outcome="{outcome}"}}"#)
}

#[test]
fn refuses_bad_cluster_settings() {
    let err = expect_start_refused(&["--redis", "http://127.0.0.1:6379"]);
    assert!(err.contains("redis://"), "{err}");
    let err = expect_start_refused(&["--redis", "redis://127.0.0.1:1", "--advertise", "nowhere"]);
    assert!(err.contains("HOST:PORT"), "{err}");
}
