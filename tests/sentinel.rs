//! A Redis Sentinel failover under a three-node cluster behind nginx: a
//! primary, a replica and three sentinels on loopback, three gateway nodes
//! on `--redis redis+sentinel://...` (one of them from its config file), an
//! nginx round-robin balancer with no stickiness, sessions on every
//! transport and a broadcast running; the primary is SIGKILLed mid-run.
//!
//! What must hold (README, "Cluster", Sentinel):
//! - WebSocket sessions are untouched (they never need Redis);
//! - HTTP-transport sessions keep working: a request that needed Redis in
//!   the failover gets `503 Cluster backplane unavailable.` and a later
//!   one succeeds, every message echoed once, in order;
//! - a broadcast member is closed only with 4504, only when its node's
//!   subscription was lost, and what it heard before has no gap; members
//!   that join afterwards hear every later message;
//! - the nodes find the new primary and re-assert their leases and session
//!   records there.
//!
//! It prints the windows the README quotes: kill to the first new session,
//! and to the first broadcast heard again on each node.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::sentinel::{Nginx, SentinelSetup};
use support::*;
use tokio_tungstenite::tungstenite;

const UNAVAILABLE: &str = "Cluster backplane unavailable.";
const CLOSED_4504: (u16, &str) = (4504, "Cluster backplane unavailable");
/// Bound on the failover as the nodes see it (the sentinels' own takes
/// 2-4 s with `down-after-milliseconds 1000`).
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// Client pacing between a refused request and the next (a client's
/// back-off, not a wait for an event).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pacing of each echo client's rounds and of the broadcast publisher.
const ROUND_PAUSE: Duration = Duration::from_millis(50);

/// Every request of the test goes through a fresh connection to nginx.
fn request(port: u16, req: Request) -> Response {
    Conn::open(port).request(&req)
}

/// An `xhr_streaming` receiver through nginx (which takes the
/// `X-Accel-Buffering: no` the support helper checks for).
fn streaming(port: u16, prefix: &str, sid: &str) -> Streaming {
    let s = Conn::open(port).stream(&Request::post(
        &format!("{prefix}/000/{sid}/xhr_streaming"),
        b"",
    ));
    assert_eq!(s.status, 200, "xhr_streaming status");
    s
}

/// Shared between the clients and the main thread.
#[derive(Default)]
struct Run {
    stop: AtomicBool,
    /// Broadcast messages the publisher has sent so far.
    sent: AtomicUsize,
    /// Requests answered `503 Cluster backplane unavailable.`, per client.
    refused: Mutex<Vec<(String, usize)>>,
}

impl Run {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Sends one HTTP request until it is answered with `ok`, counting the
/// `503`s (which must carry the documented text) and panicking on anything
/// else or after [`FAILOVER_BOUND`].
#[track_caller]
fn until_accepted(
    what: &str,
    refused: &mut usize,
    mut attempt: impl FnMut() -> Response,
    ok: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        let r = attempt();
        if ok(&r) {
            return r;
        }
        assert_eq!(r.status, 503, "{what}: {} {}", r.status, r.body_lossy());
        assert_eq!(r.text(), UNAVAILABLE, "{what}: the 503's text");
        *refused += 1;
        assert!(
            Instant::now() < deadline,
            "{what}: refused for {FAILOVER_BOUND:?}"
        );
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// The HTTP transports, as echo clients.
#[derive(Clone, Copy, Debug)]
enum Http {
    XhrPolling,
    Jsonp,
    XhrStreaming,
    EventSource,
}

/// An `/echo` session on `transport` through the balancer: sends `e0`,
/// `e1`, ... and checks each echo comes back once, in order, until told to
/// stop; returns the number of rounds.
fn http_echo(b: u16, transport: Http, run: Arc<Run>) -> JoinHandle<usize> {
    let id = sid();
    let name = format!("{transport:?}");
    // Open the session before the thread starts: it exists before the kill.
    let mut refused = 0;
    let mut stream = match transport {
        Http::XhrPolling => {
            let r = request(b, Request::post(&format!("/echo/000/{id}/xhr"), b""));
            assert_eq!((r.status, r.text()), (200, "o\n".into()));
            None
        }
        Http::Jsonp => {
            let r = request(b, Request::get(&format!("/echo/000/{id}/jsonp?c=cb")));
            assert_eq!(r.text(), "/**/cb(\"o\");\r\n");
            None
        }
        Http::XhrStreaming => {
            let mut s = streaming(b, "/echo", &id);
            s.expect_prelude();
            assert_eq!(s.next_frame(), Frame::Open);
            Some(s)
        }
        Http::EventSource => {
            let mut s = eventsource(b, "/echo", &id);
            s.expect_eventsource_prelude();
            assert_eq!(s.next_event_frame(), Frame::Open);
            Some(s)
        }
    };
    std::thread::spawn(move || {
        let mut round = 0;
        while !run.stopped() {
            let message = format!("e{round}");
            let body = json_array(&[&message]);
            match transport {
                Http::Jsonp => {
                    let form = format!("d={}", form_urlencode(&body));
                    until_accepted(
                        &format!("{name} send {message}"),
                        &mut refused,
                        || {
                            request(
                                b,
                                Request::post(
                                    &format!("/echo/000/{id}/jsonp_send"),
                                    form.as_bytes(),
                                )
                                .header("Content-Type", "application/x-www-form-urlencoded"),
                            )
                        },
                        |r| r.status == 200 && r.text() == "ok",
                    );
                }
                _ => {
                    until_accepted(
                        &format!("{name} send {message}"),
                        &mut refused,
                        || {
                            request(
                                b,
                                Request::post(&format!("/echo/000/{id}/xhr_send"), body.as_bytes()),
                            )
                        },
                        |r| r.status == 204,
                    );
                }
            }
            let echoed = loop {
                let frame = match (transport, stream.as_mut()) {
                    (Http::XhrStreaming, Some(s)) => s.next_frame(),
                    (Http::EventSource, Some(s)) => s.next_event_frame(),
                    (Http::XhrPolling, _) => {
                        let r = until_accepted(
                            &format!("{name} poll"),
                            &mut refused,
                            || request(b, Request::post(&format!("/echo/000/{id}/xhr"), b"")),
                            |r| r.status == 200,
                        );
                        one_frame_body(&r.text())
                    }
                    (Http::Jsonp, _) => {
                        let r = until_accepted(
                            &format!("{name} poll"),
                            &mut refused,
                            || request(b, Request::get(&format!("/echo/000/{id}/jsonp?c=cb"))),
                            |r| r.status == 200,
                        );
                        parse_frame(&decode_js_literal(&jsonp_literal(&r.text(), "cb")))
                    }
                    _ => unreachable!(),
                };
                match frame {
                    Frame::Heartbeat => continue,
                    Frame::Messages(m) => break m,
                    other => panic!("{name} session {id}: {other:?} in round {round}"),
                }
            };
            assert_eq!(echoed, [message], "{name} session {id}, round {round}");
            round += 1;
            std::thread::sleep(ROUND_PAUSE);
        }
        run.refused.lock().unwrap().push((name, refused));
        round
    })
}

/// An `/echo` xhr-streaming session opened now and left idle, so that no
/// node remembers its owner (a node does for 2 s after it forwarded to
/// it): from `start` on, its sends through the balancer need Redis on
/// every node but the owner. Sends `i0`, `i1`, ... each until accepted, every
/// [`RETRY_PAUSE`]; returns the rounds and the 503s met.
fn idle_session(
    b: u16,
    id: String,
    start: Arc<AtomicBool>,
    run: Arc<Run>,
) -> JoinHandle<(usize, usize)> {
    let mut s = streaming(b, "/echo", &id);
    s.expect_prelude();
    assert_eq!(s.next_frame(), Frame::Open);
    std::thread::spawn(move || {
        // Heartbeats every second pace this wait.
        while !start.load(Ordering::Acquire) {
            assert_eq!(s.next_frame(), Frame::Heartbeat, "idle session {id}");
        }
        let (mut round, mut refused) = (0, 0);
        while !run.stopped() {
            let message = format!("i{round}");
            until_accepted(
                &format!("idle session send {message}"),
                &mut refused,
                || {
                    request(
                        b,
                        Request::post(
                            &format!("/echo/000/{id}/xhr_send"),
                            json_array(&[&message]).as_bytes(),
                        ),
                    )
                },
                |r| r.status == 204,
            );
            loop {
                match s.next_frame() {
                    Frame::Heartbeat => continue,
                    Frame::Messages(m) => {
                        assert_eq!(m, [message.as_str()], "idle session {id}");
                        break;
                    }
                    other => panic!("idle session {id}: {other:?}"),
                }
            }
            round += 1;
            std::thread::sleep(RETRY_PAUSE);
        }
        (round, refused)
    })
}

/// An `/echo` WebSocket (framed, or raw) through the balancer, echoing
/// until told to stop; it must never be closed.
fn ws_echo(b: u16, framed: bool, run: Arc<Run>) -> JoinHandle<usize> {
    let mut ws = if framed {
        let mut ws = ws_connect(b, &format!("/echo/000/{}/websocket", sid()), &[]);
        assert_eq!(ws.next_frame(), Frame::Open);
        ws
    } else {
        ws_connect(b, "/echo/websocket", &[])
    };
    std::thread::spawn(move || {
        let mut round = 0;
        while !run.stopped() {
            let message = format!("w{round}");
            if framed {
                ws.send_text(&json_array(&[&message]));
                let echoed = loop {
                    match ws.next_frame() {
                        Frame::Heartbeat => continue,
                        Frame::Messages(m) => break m,
                        other => panic!("framed websocket: {other:?} in round {round}"),
                    }
                };
                assert_eq!(echoed, [message]);
            } else {
                ws.send_text(&message);
                assert_eq!(ws.next_text(), message, "raw websocket, round {round}");
            }
            round += 1;
            std::thread::sleep(ROUND_PAUSE);
        }
        round
    })
}

/// What one broadcast member heard, and how it ended.
#[derive(Debug)]
struct Heard {
    transport: &'static str,
    messages: Vec<String>,
    closed: Option<(u16, String)>,
}

/// The transports a broadcast member uses.
#[derive(Clone, Copy, Debug)]
enum Member {
    WebSocket,
    XhrStreaming,
    EventSource,
    XhrPolling,
}

/// A `/broadcast` member through the balancer (or straight to a node's
/// `port`), recording what it hears until it is closed or told to stop.
/// Returns once the session is open (`o` read).
fn member(port: u16, transport: Member, stop: Arc<AtomicBool>) -> JoinHandle<Heard> {
    let id = sid();
    let name: &'static str = match transport {
        Member::WebSocket => "websocket",
        Member::XhrStreaming => "xhr-streaming",
        Member::EventSource => "eventsource",
        Member::XhrPolling => "xhr-polling",
    };
    enum Receiver {
        Ws(Ws),
        Stream(Streaming, bool),
        Poll,
    }
    let mut receiver = match transport {
        Member::WebSocket => {
            let mut ws = ws_connect(port, &format!("/broadcast/000/{id}/websocket"), &[]);
            assert_eq!(ws.next_frame(), Frame::Open);
            Receiver::Ws(ws)
        }
        Member::XhrStreaming => {
            let mut s = streaming(port, "/broadcast", &id);
            s.expect_prelude();
            assert_eq!(s.next_frame(), Frame::Open);
            Receiver::Stream(s, false)
        }
        Member::EventSource => {
            let mut s = eventsource(port, "/broadcast", &id);
            s.expect_eventsource_prelude();
            assert_eq!(s.next_event_frame(), Frame::Open);
            Receiver::Stream(s, true)
        }
        Member::XhrPolling => {
            let mut refused = 0;
            let r = until_accepted(
                "broadcast member open",
                &mut refused,
                || {
                    request(
                        port,
                        Request::post(&format!("/broadcast/000/{id}/xhr"), b""),
                    )
                },
                |r| r.status == 200,
            );
            assert_eq!(r.text(), "o\n");
            Receiver::Poll
        }
    };
    std::thread::spawn(move || {
        let mut heard = Heard {
            transport: name,
            messages: Vec::new(),
            closed: None,
        };
        let mut refused = 0;
        while !stop.load(Ordering::Acquire) {
            // Heartbeats (every second) bound each wait.
            let frame = match &mut receiver {
                Receiver::Ws(ws) => match ws.next_event() {
                    WsEvent::Text(t) => parse_frame(&t),
                    other => panic!("broadcast websocket member: {other:?}"),
                },
                Receiver::Stream(s, false) => s.next_frame(),
                Receiver::Stream(s, true) => s.next_event_frame(),
                Receiver::Poll => {
                    let r = until_accepted(
                        "broadcast member poll",
                        &mut refused,
                        || {
                            request(
                                port,
                                Request::post(&format!("/broadcast/000/{id}/xhr"), b""),
                            )
                        },
                        |r| r.status == 200,
                    );
                    one_frame_body(&r.text())
                }
            };
            match frame {
                Frame::Heartbeat => {}
                Frame::Messages(m) => heard.messages.extend(m),
                Frame::Close(code, reason) => {
                    heard.closed = Some((code as u16, reason));
                    break;
                }
                Frame::Open => panic!("a second o"),
            }
        }
        heard
    })
}

/// The broadcast publisher: a framed WebSocket member through the balancer
/// that sends `b0`, `b1`, ... every [`ROUND_PAUSE`] until told to stop.
/// Closed (4504: Redis did not take a message, or its node lost the
/// subscription), it joins again and goes on with the next number.
/// Returns every number it sent and the closes it met.
fn publisher(b: u16, run: Arc<Run>) -> JoinHandle<(usize, Vec<(u16, String)>)> {
    let connect = move || {
        let mut ws = ws_connect(b, &format!("/broadcast/000/{}/websocket", sid()), &[]);
        assert_eq!(ws.next_frame(), Frame::Open);
        ws.ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        ws
    };
    let mut ws = connect();
    std::thread::spawn(move || {
        let mut next = 0;
        let mut closes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !run.stopped() {
            assert!(Instant::now() < deadline, "publisher ran for 60 s");
            let _ = ws.ws.send(tungstenite::Message::text(json_array(&[&format!(
                "b{next}"
            )])));
            next += 1;
            run.sent.store(next, Ordering::Release);
            // Takes what came in (its own messages among them), to see a close.
            let until = Instant::now() + ROUND_PAUSE;
            let mut closed = None;
            while Instant::now() < until && closed.is_none() {
                match ws.ws.read() {
                    Ok(tungstenite::Message::Text(t)) => {
                        if let Frame::Close(code, reason) = parse_frame(t.as_str()) {
                            closed = Some((code as u16, reason));
                        }
                    }
                    Ok(tungstenite::Message::Close(_)) => closed = Some((0, "closed".into())),
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                    Err(e) => panic!("publisher websocket: {e}"),
                }
            }
            if let Some(close) = closed {
                assert_eq!(
                    (close.0, close.1.as_str()),
                    CLOSED_4504,
                    "the publisher's close"
                );
                closes.push(close);
                // Joins again (refused with 4504 until its node subscribed).
                ws = connect();
            }
        }
        (next, closes)
    })
}

/// Waits until a `/broadcast` member straight on the node at `port` hears
/// its own message: the node's subscription (on the new primary) is up.
/// Refusals (4504) are retried; returns when it was heard.
fn broadcast_heard_again(port: u16, label: &str) -> Instant {
    let deadline = Instant::now() + FAILOVER_BOUND;
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "{label}: no broadcast heard within {FAILOVER_BOUND:?}"
        );
        let mut ws = ws_connect(port, &format!("/broadcast/000/{}/websocket", sid()), &[]);
        assert_eq!(ws.next_frame(), Frame::Open);
        let probe = format!("probe-{label}-{attempt}");
        ws.send_text(&json_array(&[&probe]));
        loop {
            match ws.next_frame() {
                Frame::Heartbeat => continue,
                Frame::Messages(m) if m.contains(&probe) => return Instant::now(),
                Frame::Messages(_) => continue,
                Frame::Close(code, reason) => {
                    assert_eq!((code as u16, reason.as_str()), CLOSED_4504, "{label}");
                    break;
                }
                Frame::Open => panic!("{label}: a second o"),
            }
        }
        std::thread::sleep(RETRY_PAUSE);
    }
    unreachable!()
}

/// Waits until the publisher has sent `n` messages in all.
fn until_sent(run: &Run, n: usize) {
    poll_until(
        &format!("the publisher to send {n} messages"),
        FAILOVER_BOUND,
        || (run.sent.load(Ordering::Acquire) >= n).then_some(()),
    );
}

/// The numbers of the `bN` messages in `messages`, in the order heard.
fn numbers(messages: &[String]) -> Vec<usize> {
    messages
        .iter()
        .filter_map(|m| m.strip_prefix('b')?.parse().ok())
        .collect()
}

fn node_ids(nodes: &[Server]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            poll_until("the cluster node line", Duration::from_secs(10), || {
                let log = n.log();
                let rest = log.split("cluster node ").nth(1)?;
                Some(rest.split_whitespace().next()?.to_owned())
            })
        })
        .collect()
}

#[test]
fn a_sentinel_failover_under_three_nodes_behind_nginx() {
    let started = Instant::now();
    let mut setup = SentinelSetup::start();
    let url = setup.url();
    let set_up = started.elapsed();

    // Two nodes take the set-up on the command line, one from its file.
    let flags = ["--heartbeat-delay", "1s", "--trusted-proxy", "127.0.0.1/32"];
    let config = fresh_temp_dir("sentinel-config").join("gateway.toml");
    std::fs::write(&config, format!("redis = \"{url}\"\n")).expect("write config");
    let mut nodes: Vec<Server> = (0..2)
        .map(|_| {
            let mut args = vec!["--redis", url.as_str()];
            args.extend_from_slice(&flags);
            Server::start_with(&args)
        })
        .collect();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(&flags);
    nodes.push(Server::start_with(&args));
    let ids = node_ids(&nodes);
    for (node, id) in nodes.iter().zip(&ids) {
        poll_until(
            "the node's lease on the primary",
            Duration::from_secs(10),
            || {
                setup
                    .primary
                    .try_cli(&["GET", &format!("sockjs:node:{id}")])
                    .filter(|address| *address == format!("127.0.0.1:{}", node.port))
            },
        );
    }
    let nginx = Nginx::start(&nodes.iter().map(|n| n.port).collect::<Vec<_>>());
    let b = nginx.port;

    // Sessions on every transport, all opened through the balancer.
    let run = Arc::new(Run::default());
    let ws_clients = vec![
        ("websocket", ws_echo(b, true, run.clone())),
        ("raw websocket", ws_echo(b, false, run.clone())),
    ];
    let http_clients: Vec<(Http, JoinHandle<usize>)> = [
        Http::XhrPolling,
        Http::Jsonp,
        Http::XhrStreaming,
        Http::EventSource,
    ]
    .into_iter()
    .map(|t| (t, http_echo(b, t, run.clone())))
    .collect();
    let idle_start = Arc::new(AtomicBool::new(false));
    let idle_id = sid();
    let idle = idle_session(b, idle_id.clone(), idle_start.clone(), run.clone());
    let members_stop = Arc::new(AtomicBool::new(false));
    let transports = [
        Member::WebSocket,
        Member::XhrStreaming,
        Member::EventSource,
        Member::XhrPolling,
    ];
    // Two of each, so they land on more than one node.
    let members: Vec<JoinHandle<Heard>> = transports
        .iter()
        .chain(transports.iter())
        .map(|t| member(b, *t, members_stop.clone()))
        .collect();
    // Every member has registered once its node delivers to it; the
    // publisher runs until the end.
    let broadcasting = publisher(b, run.clone());
    for n in &nodes {
        broadcast_heard_again(n.port, "before");
    }

    // Every client makes progress first (the publisher's pace is theirs).
    until_sent(&run, 20);
    let old_primary = setup.primary.port;
    let killed_pid = setup.primary.pid().expect("primary running");
    let killed = Instant::now();
    setup.primary.kill();
    idle_start.store(true, Ordering::Release);
    eprintln!("SIGKILLed the primary (127.0.0.1:{old_primary}, pid {killed_pid})");

    // Kill to the first broadcast heard again, on each node, measured at
    // once on all three.
    let probes: Vec<JoinHandle<Duration>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let port = n.port;
            std::thread::spawn(move || broadcast_heard_again(port, &format!("node{i}")) - killed)
        })
        .collect();
    // Kill to the sentinels naming the replica (asked every 20 ms).
    let sentinel_ports: Vec<u16> = setup.sentinels.iter().map(|s| s.port).collect();
    let replica_port = setup.replica.port;
    let switch = std::thread::spawn(move || {
        poll_until("the sentinels to name the replica", FAILOVER_BOUND, || {
            let reply = std::process::Command::new("redis-cli")
                .args(["-p", &sentinel_ports[0].to_string(), "--raw"])
                .args([
                    "SENTINEL",
                    "GET-MASTER-ADDR-BY-NAME",
                    support::sentinel::MASTER,
                ])
                .output()
                .ok()?;
            let port: u16 = String::from_utf8_lossy(&reply.stdout)
                .lines()
                .nth(1)?
                .parse()
                .ok()?;
            (port == replica_port).then(|| killed.elapsed())
        })
    });
    // Kill to the first new session (an xhr-polling one, through nginx).
    let mut refused_new = 0;
    until_accepted(
        "a new session",
        &mut refused_new,
        || request(b, Request::post(&format!("/echo/000/{}/xhr", sid()), b"")),
        |r| r.status == 200 && r.text() == "o\n",
    );
    let first_session = killed.elapsed();
    let heard_again: Vec<Duration> = probes
        .into_iter()
        .map(|p| p.join().expect("broadcast probe"))
        .collect();
    assert!(
        refused_new > 0,
        "no new session was refused in the failover"
    );
    let switched = switch.join().expect("sentinel watch");
    assert_eq!(setup.named_primary(), Some(setup.replica.port));
    eprintln!(
        "failover: kill -> sentinels name the replica {switched:?}; kill -> first new session {first_session:?} ({refused_new} attempts \
         answered 503 before it, one every {RETRY_PAUSE:?}); kill -> broadcast heard again, \
         per node: {heard_again:?}"
    );

    // Every node follows the sentinels, and its lease and session records
    // are on the new primary.
    for (node, id) in nodes.iter().zip(&ids) {
        let log = node.log();
        assert!(
            log.contains(&format!(
                "Sentinel primary `sockjs-test` is now 127.0.0.1:{} (was 127.0.0.1:{old_primary})",
                setup.replica.port
            )),
            "node {id} did not log the switch:\n{log}"
        );
        assert!(
            log.contains("subscription to sockjs:broadcast:/broadcast lost"),
            "node {id} kept its subscription through the kill?\n{log}"
        );
        poll_until(
            "the node's lease on the new primary",
            Duration::from_secs(5),
            || {
                setup
                    .replica
                    .try_cli(&["GET", &format!("sockjs:node:{id}")])
                    .filter(|address| *address == format!("127.0.0.1:{}", node.port))
            },
        );
    }
    // The idle session's record too (its owner re-asserted it, if the
    // replica had not had it already).
    let record = setup
        .replica
        .cli(&["GET", &format!("sockjs:session:/echo:{idle_id}")]);
    assert!(
        ids.contains(&record),
        "the idle session's record: {record:?}"
    );
    assert!(
        setup.replica.cli(&["ROLE"]).starts_with("master"),
        "the replica was promoted"
    );

    // New members on every transport, through the balancer, hear every
    // later message; the publisher keeps going meanwhile.
    let later_stop = Arc::new(AtomicBool::new(false));
    let later: Vec<JoinHandle<Heard>> = transports
        .iter()
        .chain(transports.iter())
        .map(|t| member(b, *t, later_stop.clone()))
        .collect();
    // Each hears what is sent from the moment its node delivers to it.
    until_sent(&run, run.sent.load(Ordering::Acquire) + 30);

    run.stop.store(true, Ordering::Release);
    let (sent, publisher_closes) = broadcasting.join().expect("publisher");
    for (name, client) in ws_clients {
        let rounds = client.join().unwrap_or_else(|_| panic!("{name} client"));
        assert!(rounds > 20, "{name}: {rounds} rounds");
        eprintln!("{name}: {rounds} echoes, never closed");
    }
    for (transport, client) in http_clients {
        let rounds = client
            .join()
            .unwrap_or_else(|_| panic!("{transport:?} client"));
        assert!(rounds > 10, "{transport:?}: {rounds} rounds");
        eprintln!("{transport:?}: {rounds} echoes in order");
    }
    let (idle_rounds, idle_refused) = idle.join().expect("idle session");
    assert!(
        idle_refused > 0,
        "the idle session's sends never needed Redis in the failover"
    );
    eprintln!(
        "idle xhr-streaming session: {idle_rounds} sends from the kill on, {idle_refused} \
         answered 503 first, each then accepted, every echo once, in order"
    );
    eprintln!(
        "503s per HTTP client: {:?}; publisher sent {sent}, closed {} times",
        run.refused.lock().unwrap(),
        publisher_closes.len()
    );
    // Every member hears heartbeats each second: stopping takes at most that.
    members_stop.store(true, Ordering::Release);
    later_stop.store(true, Ordering::Release);
    let before: Vec<Heard> = members
        .into_iter()
        .map(|m| m.join().expect("member"))
        .collect();
    let after: Vec<Heard> = later
        .into_iter()
        .map(|m| m.join().expect("member"))
        .collect();

    // What was published: every number someone heard.
    let published: BTreeSet<usize> = before
        .iter()
        .chain(&after)
        .flat_map(|h| numbers(&h.messages))
        .collect();
    let last = *published.last().expect("messages were published");
    for heard in &before {
        let got = numbers(&heard.messages);
        assert!(!got.is_empty(), "{heard:?}");
        let expected: Vec<usize> = published
            .range(got[0]..=*got.last().unwrap())
            .copied()
            .collect();
        assert_eq!(
            got, expected,
            "a member heard out of order or with a gap: {}",
            heard.transport
        );
        match &heard.closed {
            Some((code, reason)) => assert_eq!((*code, reason.as_str()), CLOSED_4504),
            None => assert_eq!(*got.last().unwrap(), last, "{heard:?}"),
        }
    }
    let closed = before.iter().filter(|h| h.closed.is_some()).count();
    eprintln!(
        "members before the kill: {closed} of {} closed with 4504 (their node's subscription \
         was lost); each heard a gap-free run of the {} messages published",
        before.len(),
        published.len()
    );
    for heard in &after {
        assert_eq!(
            heard.closed, None,
            "a member that joined after the failover: {heard:?}"
        );
        let got = numbers(&heard.messages);
        assert!(got.len() >= 20, "{heard:?}");
        let expected: Vec<usize> = published.range(got[0]..).copied().collect();
        assert_eq!(
            got, expected,
            "a new member missed a message: {}",
            heard.transport
        );
    }
    drop(nginx);
    drop(nodes);
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
    eprintln!("set-up {set_up:?}, whole test {:?}", started.elapsed());
}
