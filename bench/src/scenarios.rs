//! The scenarios. Each one is bounded in count and time, stops by itself and
//! returns one JSON record. All tasks run on one thread (a `LocalSet`), so
//! shared state is `Rc<RefCell<_>>`.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};

use crate::http::{drain_lines, Body, Http};
use crate::net::{cpu_seconds, system_busy_seconds, Procs, Target};
use crate::stats::{latency_json, message, parse_message, round3, SeqCheck, Shared, Stats};
use crate::ws::{Msg, Ws};

/// Generator CPU (percent of its one core) from which a run's rate is
/// taken as the generator's limit rather than the server's.
const GENERATOR_SATURATED_PCT: f64 = 90.0;

/// How long one echo may take before its message counts as lost.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one connect + handshake + first frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one broadcast round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Server {
    /// sockjs-gateway: SockJS framing on the framed paths.
    Gateway,
    /// baseline-echo: plain text echo on every path.
    Baseline,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Gateway => "gateway",
            Server::Baseline => "baseline",
        }
    }
}

/// How messages travel over one WebSocket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `o` first, then `a[...]` frames; the client sends `["..."]`.
    Sockjs,
    /// One text message per application message.
    Raw,
}

pub struct Config {
    pub target: Rc<Target>,
    pub server: Server,
    pub scenario: String,
    pub sessions: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// The server's processes (a cluster: nodes, balancer, Redis): their
    /// CPU and RSS are measured, summed.
    pub server_procs: Procs,
    /// xhr scenarios: every request of a session after the one that opens
    /// it goes here instead of `target` (another cluster node than the
    /// owner, so that each is forwarded).
    pub hop: Option<Rc<Target>>,
    /// A name for the set-up measured (`cluster-3`, ...), recorded as is.
    pub setup: Option<String>,
    /// Bytes per message.
    pub size: usize,
    /// Echo scenarios: each session echoes exactly this many messages, and
    /// the run ends when all have, whatever the duration.
    pub messages: Option<u64>,
    /// Broadcast rounds.
    pub repeat: usize,
    /// How long idle sessions are held before the RSS reading.
    pub hold: Duration,
    /// Concurrent opens during setup; concurrent loops in connect-rate.
    pub concurrency: usize,
    /// Makes session ids unique across runs.
    pub run_id: String,
}

impl Config {
    fn sid(&self, i: usize) -> String {
        format!("{}s{i}", self.run_id)
    }

    /// Whether a session that has sent `seq` messages sends another.
    fn sends_more(&self, seq: u64, window_end: Instant) -> bool {
        match self.messages {
            Some(count) => seq < count,
            None => Instant::now() < window_end,
        }
    }
}

/// The measured part of an echo run: the window, or with `--messages` until
/// every session is done (at most [`MESSAGES_BOUND`]).
async fn measure_echoes(
    cfg: &Config,
    window: (Instant, Instant),
    tasks: &mut JoinSet<()>,
    stats: &Shared,
) -> Value {
    let procs = &cfg.server_procs;
    if cfg.messages.is_some() {
        let meter = Meter::start(procs);
        join_bounded(tasks, MESSAGES_BOUND, stats).await;
        return meter.stop();
    }
    sleep_until(window.0.into()).await;
    let meter = Meter::start(procs);
    sleep_until(window.1.into()).await;
    meter.stop()
}

/// How long a `--messages` run may take (a server under callgrind is slow).
const MESSAGES_BOUND: Duration = Duration::from_secs(600);

pub async fn run(cfg: Rc<Config>) -> Result<Value, String> {
    match (cfg.scenario.as_str(), cfg.server) {
        ("ws-echo", Server::Gateway) => ws_echo(cfg, Framing::Sockjs, framed_path).await,
        ("ws-echo", Server::Baseline) => ws_echo(cfg, Framing::Raw, framed_path).await,
        ("raw-ws-echo", _) => ws_echo(cfg, Framing::Raw, |_| "/echo/websocket".into()).await,
        ("xhr-streaming-echo", Server::Gateway) => xhr_echo(cfg, true, "/echo").await,
        // The peers' default response_limit (128 KiB; /echo has 4 KiB): a
        // service of its own, from bench/gateway.toml.
        ("xhr-streaming-echo-128k", Server::Gateway) => xhr_echo(cfg, true, "/echo-128k").await,
        ("xhr-polling-echo", Server::Gateway) => xhr_echo(cfg, false, "/echo").await,
        ("broadcast", Server::Gateway) => broadcast(cfg).await,
        ("idle-websocket", _) => idle_websocket(cfg).await,
        ("idle-polling", Server::Gateway) => idle_polling(cfg).await,
        ("connect-rate", _) => connect_rate(cfg).await,
        (name, server) => Err(format!("no scenario {name} for the {}", server.name())),
    }
}

fn framed_path(sid: &str) -> String {
    format!("/echo/0/{sid}/websocket")
}

fn framing_for(cfg: &Config) -> Framing {
    match cfg.server {
        Server::Gateway => Framing::Sockjs,
        Server::Baseline => Framing::Raw,
    }
}

/// CPU and RSS readings around the measured window.
struct Meter {
    procs: Procs,
    at: Instant,
    server_cpu: Option<f64>,
    server_user_cpu: Option<f64>,
    each_cpu: Vec<Option<f64>>,
    own_cpu: Option<f64>,
    machine_busy: Option<f64>,
}

impl Meter {
    fn start(procs: &Procs) -> Meter {
        Meter {
            procs: procs.clone(),
            at: Instant::now(),
            server_cpu: procs.cpu_seconds(),
            server_user_cpu: procs.user_cpu_seconds(),
            each_cpu: procs
                .each()
                .iter()
                .map(|(_, p)| cpu_seconds(Some(*p)))
                .collect(),
            own_cpu: cpu_seconds(None),
            machine_busy: system_busy_seconds(),
        }
    }

    fn stop(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => json!(round3(100.0 * (a - b) / wall)),
            _ => Value::Null,
        };
        let server = pct(self.server_cpu, self.procs.cpu_seconds());
        let server_user = pct(self.server_user_cpu, self.procs.user_cpu_seconds());
        // Several server processes (a cluster): each one's share too.
        let each: serde_json::Map<String, Value> = if self.procs.each().len() > 1 {
            self.procs
                .each()
                .iter()
                .zip(&self.each_cpu)
                .map(|((label, pid), before)| {
                    (label.clone(), pct(*before, cpu_seconds(Some(*pid))))
                })
                .collect()
        } else {
            serde_json::Map::new()
        };
        let own = pct(self.own_cpu, cpu_seconds(None));
        let machine = pct(self.machine_busy, system_busy_seconds());
        // What neither side used: other processes on the machine (noise).
        let other = match (machine.as_f64(), server.as_f64(), own.as_f64()) {
            (Some(m), s, Some(g)) => json!(round3((m - s.unwrap_or(0.0) - g).max(0.0))),
            _ => Value::Null,
        };
        json!({
            "wall_s": round3(wall),
            "server_cpu_pct": server,
            "server_user_cpu_pct": server_user,
            "generator_cpu_pct": own,
            "other_cpu_pct": other,
            "server_cpu_pct_by_process": if each.is_empty() { Value::Null } else { Value::Object(each) },
        })
    }
}

/// The record every scenario returns, before its own fields are added.
fn record(
    cfg: &Config,
    s: &Stats,
    meter: Value,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
) -> Value {
    let wall = meter["wall_s"].as_f64().unwrap_or(0.0);
    let per_session = match (rss_before, rss_after) {
        (Some(b), Some(a)) if cfg.sessions > 0 => {
            json!(((a as f64 - b as f64) * 1024.0 / cfg.sessions as f64).round())
        }
        _ => Value::Null,
    };
    let msgs_per_s = if wall > 0.0 {
        s.counted as f64 / wall
    } else {
        0.0
    };
    // What one operation (a message, a delivery, a session: what
    // msgs_per_s counts) costs the server, all its processes, in CPU time.
    let cpu_per_op = match meter["server_cpu_pct"].as_f64() {
        Some(c) if msgs_per_s > 0.0 => json!(round3(c * 1e4 / msgs_per_s)),
        _ => Value::Null,
    };
    let user_cpu_per_op = match meter["server_user_cpu_pct"].as_f64() {
        Some(c) if msgs_per_s > 0.0 => json!(round3(c * 1e4 / msgs_per_s)),
        _ => Value::Null,
    };
    // The generator is one thread: near 100% of its core, the rate measures
    // the generator, and only the CPU per operation measures the server.
    let generator_saturated = meter["generator_cpu_pct"]
        .as_f64()
        .map(|g| g >= GENERATOR_SATURATED_PCT);
    json!({
        "server": cfg.server.name(),
        "setup": cfg.setup,
        "hop": cfg.hop.as_ref().map(|h| h.host.clone()),
        "scenario": cfg.scenario,
        "sessions": cfg.sessions,
        "message_bytes": cfg.size,
        "duration_s": round3(wall),
        "messages": s.counted,
        "messages_total": s.total,
        "msgs_per_s": round3(msgs_per_s),
        "latency_us": s.latency_json(),
        "server_cpu_pct": meter["server_cpu_pct"],
        "server_user_cpu_pct": meter["server_user_cpu_pct"],
        "generator_cpu_pct": meter["generator_cpu_pct"],
        "other_cpu_pct": meter["other_cpu_pct"],
        "server_cpu_pct_by_process": meter["server_cpu_pct_by_process"],
        "server_cpu_us_per_op": cpu_per_op,
        "server_user_cpu_us_per_op": user_cpu_per_op,
        "generator_saturated": generator_saturated,
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "rss_per_session_bytes": per_session,
        "errors": s.errors,
        "lost": s.lost,
        "duplicated": s.duplicated,
        "reordered": s.reordered,
        "corrupt": s.corrupt,
        "receiver_conflicts": s.receiver_conflicts,
        "error_samples": s.samples,
        "ok": s.clean(),
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Runs `make(i)` for i in 0..n with at most `concurrency` at once; collects
/// the successes by index and counts failures as errors.
async fn open_all<T, F, Fut>(
    n: usize,
    concurrency: usize,
    stats: &Shared,
    make: F,
) -> Vec<Option<T>>
where
    T: 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + 'static,
{
    let slots: Rc<RefCell<Vec<Option<T>>>> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let permits = std::sync::Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let fut = make(i);
        let slots = slots.clone();
        let stats = stats.clone();
        tasks.spawn_local(async move {
            match timeout(OPEN_TIMEOUT, fut).await {
                Ok(Ok(value)) => slots.borrow_mut()[i] = Some(value),
                Ok(Err(e)) => stats.borrow_mut().error(format!("open {i}: {e}")),
                Err(_) => stats.borrow_mut().error(format!("open {i}: timed out")),
            }
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Rc::try_unwrap(slots)
        .ok()
        .expect("all open tasks finished")
        .into_inner()
}

/// Connects and handshakes; with SockJS framing also reads the `o` frame.
async fn open_ws(target: Rc<Target>, path: String, framing: Framing) -> Result<Ws, String> {
    let stream = target.connect().await?;
    let mut ws = Ws::handshake(stream, &target.host, &path).await?;
    if framing == Framing::Sockjs {
        match ws.recv().await? {
            Msg::Text(t) if t == b"o" => {}
            Msg::Text(t) => {
                return Err(format!(
                    "first frame {:?}, not o",
                    String::from_utf8_lossy(t)
                ))
            }
            Msg::Binary => return Err("binary first frame".into()),
            Msg::Close(code) => return Err(format!("closed at open ({code:?})")),
        }
    }
    Ok(ws)
}

/// Checks the messages of one incoming text message against `check`; `true`
/// once the message with sequence number `want` was among them.
fn take_messages(
    framing: Framing,
    text: &[u8],
    sid: &str,
    want: u64,
    check: &mut SeqCheck,
    stats: &Shared,
) -> Result<bool, String> {
    let mut got = false;
    let mut one = |m: &str, stats: &mut Stats| match parse_message(m) {
        Some((s, seq)) if s == sid => {
            let seen = check.see(seq);
            stats.seen(seen, sid, seq);
            got |= seq == want;
        }
        _ => stats.corrupt(sid, m.as_bytes()),
    };
    match framing {
        Framing::Raw => match std::str::from_utf8(text) {
            Ok(m) => one(m, &mut stats.borrow_mut()),
            Err(_) => stats.borrow_mut().corrupt(sid, text),
        },
        Framing::Sockjs => match text.first() {
            Some(b'h') if text.len() == 1 => {}
            Some(b'a') => match serde_json::from_slice::<Vec<String>>(&text[1..]) {
                Ok(messages) => {
                    let mut s = stats.borrow_mut();
                    for m in &messages {
                        one(m, &mut s);
                    }
                }
                Err(_) => stats.borrow_mut().corrupt(sid, text),
            },
            Some(b'c') => return Err(format!("{sid}: closed: {}", String::from_utf8_lossy(text))),
            _ => stats.borrow_mut().corrupt(sid, text),
        },
    }
    Ok(got)
}

fn outgoing(framing: Framing, msg: &str) -> Vec<u8> {
    match framing {
        Framing::Raw => msg.as_bytes().to_vec(),
        Framing::Sockjs => format!("[\"{msg}\"]").into_bytes(),
    }
}

/// Sends message `seq` of session `sid` and waits for its echo.
async fn ws_exchange(
    ws: &mut Ws,
    framing: Framing,
    sid: &str,
    seq: u64,
    size: usize,
    check: &mut SeqCheck,
    stats: &Shared,
) -> Result<Duration, String> {
    let payload = outgoing(framing, &message(sid, seq, size));
    let sent = Instant::now();
    ws.send_text(&payload).await?;
    let deadline = tokio::time::Instant::now() + ECHO_TIMEOUT;
    loop {
        let got = match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => {
                stats.borrow_mut().lost += 1;
                return Err(format!(
                    "{sid}: no echo of message {seq} within {ECHO_TIMEOUT:?}"
                ));
            }
            Ok(Err(e)) => {
                stats.borrow_mut().lost += 1;
                return Err(format!("{sid}: waiting for echo {seq}: {e}"));
            }
            Ok(Ok(Msg::Text(t))) => take_messages(framing, t, sid, seq, check, stats)?,
            Ok(Ok(Msg::Binary)) => {
                stats.borrow_mut().corrupt(sid, b"<binary>");
                false
            }
            Ok(Ok(Msg::Close(code))) => {
                stats.borrow_mut().lost += 1;
                return Err(format!(
                    "{sid}: closed by the server ({code:?}) before echo {seq}"
                ));
            }
        };
        if got {
            return Ok(sent.elapsed());
        }
    }
}

/// Waits for the session tasks, bounded; a task still running is an error.
async fn join_bounded(tasks: &mut JoinSet<()>, bound: Duration, stats: &Shared) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if timeout(bound, all).await.is_err() {
        let left = tasks.len();
        stats.borrow_mut().error(format!(
            "{left} session task(s) still running after the run; aborted"
        ));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Request/response echo over WebSockets: `ws-echo` and `raw-ws-echo`.
async fn ws_echo(
    cfg: Rc<Config>,
    framing: Framing,
    path: fn(&str) -> String,
) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let rss_before = procs.rss_kib();
    let setup_stats = Stats::new((Instant::now(), Instant::now()));
    let sockets = open_all(cfg.sessions, cfg.concurrency, &setup_stats, |i| {
        open_ws(cfg.target.clone(), path(&cfg.sid(i)), framing)
    })
    .await;
    let opened = sockets.iter().filter(|s| s.is_some()).count();

    let stats = measured_after_setup(&cfg, &setup_stats);
    let window = stats.borrow().window;
    let mut tasks = JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let Some(mut ws) = ws else { continue };
        let stats = stats.clone();
        let cfg = cfg.clone();
        tasks.spawn_local(async move {
            let sid = cfg.sid(i);
            let mut check = SeqCheck::new();
            let mut seq = 0;
            while cfg.sends_more(seq, window.1) {
                seq += 1;
                match ws_exchange(&mut ws, framing, &sid, seq, cfg.size, &mut check, &stats).await {
                    Ok(latency) => stats.borrow_mut().record(latency, Instant::now()),
                    Err(e) => {
                        stats.borrow_mut().error(e);
                        break;
                    }
                }
            }
            stats.borrow_mut().lost += check.lost();
        });
    }
    let measured = measure_echoes(&cfg, window, &mut tasks, &stats).await;
    let rss_after = procs.rss_kib();
    join_bounded(&mut tasks, ECHO_TIMEOUT + Duration::from_secs(5), &stats).await;
    let s = stats.borrow();
    Ok(merge(
        record(&cfg, &s, measured, rss_before, rss_after),
        json!({ "opened": opened, "path": path("SESSION") }),
    ))
}

/// A new HTTP connection to the server.
async fn http(target: &Target) -> Result<Http, String> {
    Ok(Http::new(target.connect().await?))
}

/// What one receiver frame means to the xhr scenarios.
enum FrameEvent {
    Nothing,
    Messages(Vec<String>),
    Conflict,
    Fatal(String),
}

fn classify_frame(line: &[u8]) -> FrameEvent {
    match line.first() {
        Some(b'h') if line.len() == 1 => FrameEvent::Nothing,
        // The xhr_streaming prelude: 2048 'h'.
        Some(b'h') if line.len() == 2048 && line.iter().all(|&b| b == b'h') => FrameEvent::Nothing,
        Some(b'a') => match serde_json::from_slice::<Vec<String>>(&line[1..]) {
            Ok(messages) => FrameEvent::Messages(messages),
            Err(_) => FrameEvent::Fatal(format!("bad frame {:?}", String::from_utf8_lossy(line))),
        },
        Some(b'c') if line.starts_with(b"c[2010,") => FrameEvent::Conflict,
        _ => FrameEvent::Fatal(format!(
            "unexpected frame {:?}",
            String::from_utf8_lossy(line)
        )),
    }
}

/// A receiver connection: for streaming, the response still going on it
/// (`body`) and the bytes read of it that do not make a whole frame yet.
struct ReceiverConn {
    conn: Http,
    body: Option<Body>,
    pending: Vec<u8>,
}

/// Opens a session with its first receiver; returns the connection with the
/// response still going (streaming) or done (polling), after the `o` frame.
async fn open_xhr_session(
    target: &Target,
    base: &str,
    streaming: bool,
) -> Result<ReceiverConn, String> {
    let mut conn = http(target).await?;
    let path = format!("{base}/{}", if streaming { "xhr_streaming" } else { "xhr" });
    let mut head = conn.post(&target.host, &path, b"").await?;
    if head.status != 200 {
        return Err(format!("{path}: status {}", head.status));
    }
    let mut pending = Vec::new();
    loop {
        if !conn.read_body(&mut head.body, &mut pending).await? && !pending.contains(&b'\n') {
            return Err(format!("{path}: response ended before the o frame"));
        }
        let mut lines = Vec::new();
        drain_lines(&mut pending, |l| lines.push(l.to_vec()));
        for line in lines {
            match line.as_slice() {
                b"o" => {
                    if streaming {
                        return Ok(ReceiverConn {
                            conn,
                            body: Some(head.body),
                            pending,
                        });
                    }
                    conn.read_to_end(&mut head.body, &mut pending).await?;
                    return Ok(ReceiverConn {
                        conn,
                        body: None,
                        pending: Vec::new(),
                    });
                }
                l if l.len() == 2048 && l.iter().all(|&b| b == b'h') => {}
                other => {
                    return Err(format!(
                        "{path}: first frame {:?}",
                        String::from_utf8_lossy(other)
                    ));
                }
            }
        }
    }
}

/// The receiver side of one xhr session: long-polls (or streams) forever,
/// passing message batches to the driver; ends on a fatal frame or error.
/// `receiver` is the connection that opened the session; with `moved`, the
/// next receiver requests go to `target` on a new connection instead.
async fn xhr_receiver(
    target: Rc<Target>,
    base: String,
    streaming: bool,
    receiver: ReceiverConn,
    mut moved: bool,
    tx: mpsc::UnboundedSender<Vec<String>>,
    stats: Shared,
) {
    let ReceiverConn {
        mut conn,
        mut body,
        mut pending,
    } = receiver;
    let path = format!("{base}/{}", if streaming { "xhr_streaming" } else { "xhr" });
    let result: Result<(), String> = async {
        loop {
            if let Some(mut current) = body.take() {
                loop {
                    let more = conn.read_body(&mut current, &mut pending).await?;
                    let mut events = Vec::new();
                    drain_lines(&mut pending, |l| events.push(classify_frame(l)));
                    for event in events {
                        match event {
                            FrameEvent::Nothing => {}
                            FrameEvent::Messages(m) => {
                                if tx.send(m).is_err() {
                                    return Ok(());
                                }
                            }
                            FrameEvent::Conflict => {
                                let mut s = stats.borrow_mut();
                                s.receiver_conflicts += 1;
                                s.error(format!("{path}: c[2010] receiver conflict"));
                            }
                            FrameEvent::Fatal(e) => return Err(format!("{path}: {e}")),
                        }
                    }
                    if !more {
                        break;
                    }
                }
                if !pending.is_empty() {
                    return Err(format!("{path}: response ended inside a frame"));
                }
            }
            if !conn.reusable() || moved {
                conn = http(&target).await?;
                moved = false;
            }
            let head = conn.post(&target.host, &path, b"").await?;
            if head.status != 200 {
                return Err(format!("{path}: status {}", head.status));
            }
            body = Some(head.body);
        }
    }
    .await;
    if let Err(e) = result {
        stats.borrow_mut().error(e);
    }
}

/// Request/response echo over XHR: sends by `xhr_send`, receives by one
/// streaming or polling receiver per session, reopened as the protocol says.
/// With `cfg.hop`, the session is opened at `cfg.target` (which then owns
/// it, in a cluster) and every later request goes to `cfg.hop`.
async fn xhr_echo(cfg: Rc<Config>, streaming: bool, prefix: &'static str) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let rss_before = procs.rss_kib();
    let later = cfg.hop.clone().unwrap_or_else(|| cfg.target.clone());
    let setup_stats = Stats::new((Instant::now(), Instant::now()));
    let opened = open_all(cfg.sessions, cfg.concurrency, &setup_stats, |i| {
        let target = cfg.target.clone();
        let later = later.clone();
        let base = format!("{prefix}/0/{}", cfg.sid(i));
        async move {
            let receiver = open_xhr_session(&target, &base, streaming).await?;
            let send = http(&later).await?;
            Ok((receiver, send))
        }
    })
    .await;
    let opened_count = opened.iter().filter(|s| s.is_some()).count();

    let stats = measured_after_setup(&cfg, &setup_stats);
    let window = stats.borrow().window;
    let mut tasks = JoinSet::new();
    for (i, parts) in opened.into_iter().enumerate() {
        let Some((recv, mut send)) = parts else {
            continue;
        };
        let stats = stats.clone();
        let cfg = cfg.clone();
        let later = later.clone();
        tasks.spawn_local(async move {
            let sid = cfg.sid(i);
            let base = format!("{prefix}/0/{sid}");
            let send_path = format!("{base}/xhr_send");
            let (tx, mut rx) = mpsc::unbounded_channel();
            let receiver = tokio::task::spawn_local(xhr_receiver(
                later.clone(),
                base,
                streaming,
                recv,
                cfg.hop.is_some(),
                tx,
                stats.clone(),
            ));
            let mut check = SeqCheck::new();
            let mut seq = 0;
            let mut sink = Vec::new();
            let result: Result<(), String> = async {
                while cfg.sends_more(seq, window.1) {
                    seq += 1;
                    let payload = outgoing(Framing::Sockjs, &message(&sid, seq, cfg.size));
                    let sent = Instant::now();
                    if !send.reusable() {
                        send = http(&later).await?;
                    }
                    let mut head = send.post(&later.host, &send_path, &payload).await?;
                    sink.clear();
                    send.read_to_end(&mut head.body, &mut sink).await?;
                    if head.status != 204 {
                        stats.borrow_mut().lost += 1;
                        return Err(format!(
                            "{send_path}: status {} {:?}",
                            head.status,
                            String::from_utf8_lossy(&sink)
                        ));
                    }
                    let deadline = tokio::time::Instant::now() + ECHO_TIMEOUT;
                    loop {
                        let batch = match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(batch)) => batch,
                            Ok(None) => {
                                stats.borrow_mut().lost += 1;
                                return Err(format!("{sid}: receiver ended before echo {seq}"));
                            }
                            Err(_) => {
                                stats.borrow_mut().lost += 1;
                                return Err(format!(
                                    "{sid}: no echo of {seq} within {ECHO_TIMEOUT:?}"
                                ));
                            }
                        };
                        let mut got = false;
                        let mut s = stats.borrow_mut();
                        for m in &batch {
                            match parse_message(m) {
                                Some((from, n)) if from == sid => {
                                    let seen = check.see(n);
                                    s.seen(seen, &sid, n);
                                    got |= n == seq;
                                }
                                _ => s.corrupt(&sid, m.as_bytes()),
                            }
                        }
                        if got {
                            s.record(sent.elapsed(), Instant::now());
                            break;
                        }
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                stats.borrow_mut().error(e);
            }
            // Anything still queued must not be a surprise.
            receiver.abort();
            let _ = receiver.await;
            while let Ok(batch) = rx.try_recv() {
                let mut s = stats.borrow_mut();
                for m in &batch {
                    s.corrupt(&sid, m.as_bytes());
                }
            }
            stats.borrow_mut().lost += check.lost();
        });
    }
    let measured = measure_echoes(&cfg, window, &mut tasks, &stats).await;
    let rss_after = procs.rss_kib();
    join_bounded(&mut tasks, ECHO_TIMEOUT + Duration::from_secs(5), &stats).await;
    let s = stats.borrow();
    Ok(merge(
        record(&cfg, &s, measured, rss_before, rss_after),
        json!({
            "opened": opened_count,
            "transport": if streaming { "xhr_streaming" } else { "xhr" },
        }),
    ))
}

/// Broadcast fan-out state shared by the reader tasks.
struct Round {
    number: u64,
    sent_at: Instant,
    arrived: usize,
    last: Instant,
}

/// N framed WebSocket sessions on /broadcast; session 0 sends one message per
/// round; the round's fan-out time is until the last session has it.
async fn broadcast(cfg: Rc<Config>) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let n = cfg.sessions.max(1);
    let rss_before = procs.rss_kib();
    let stats = Stats::new((Instant::now(), Instant::now()));
    let sockets = open_all(n, cfg.concurrency, &stats, |i| {
        open_ws(
            cfg.target.clone(),
            format!("/broadcast/0/{}/websocket", cfg.sid(i)),
            Framing::Sockjs,
        )
    })
    .await;
    if sockets.iter().any(|s| s.is_none()) {
        let s = stats.borrow();
        return Ok(record(&cfg, &s, json!({}), rss_before, None));
    }
    // Joining the broadcast list happens in the server's session task, right
    // after `o`: give the last ones a moment before the first round.
    sleep(Duration::from_millis(200)).await;

    let round = Rc::new(RefCell::new(Round {
        number: 0,
        sent_at: Instant::now(),
        arrived: 0,
        last: Instant::now(),
    }));
    let round_done = Rc::new(Notify::new());
    let (go_tx, mut go_rx) = mpsc::unbounded_channel::<u64>();
    let size = cfg.size;
    let mut tasks = JoinSet::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let mut ws = ws.expect("all opened");
        let stats = stats.clone();
        let round = round.clone();
        let round_done = round_done.clone();
        let mut go = (i == 0).then(|| std::mem::replace(&mut go_rx, mpsc::unbounded_channel().1));
        let sid = cfg.sid(i);
        tasks.spawn_local(async move {
            let mut check = SeqCheck::new();
            let result: Result<(), String> = async {
                loop {
                    // Session 0 also sends: it waits for a command or a message.
                    let text: Vec<u8> = match go.as_mut() {
                        Some(go) => {
                            tokio::select! {
                                cmd = go.recv() => {
                                    let Some(r) = cmd else { return Ok(()) };
                                    let payload = outgoing(Framing::Sockjs, &message("b", r, size));
                                    round.borrow_mut().sent_at = Instant::now();
                                    ws.send_text(&payload).await?;
                                    continue;
                                }
                                msg = async { ws.recv().await.map(|m| match m {
                                    Msg::Text(t) => Some(t.to_vec()),
                                    _ => None,
                                }) } => msg?.ok_or("non-text message")?,
                            }
                        }
                        None => match ws.recv().await? {
                            Msg::Text(t) => t.to_vec(),
                            _ => return Err("non-text message".into()),
                        },
                    };
                    let now = Instant::now();
                    let messages = match text.first() {
                        Some(b'h') if text.len() == 1 => continue,
                        Some(b'a') => {
                            serde_json::from_slice::<Vec<String>>(&text[1..]).map_err(|_| {
                                format!("bad frame {:?}", String::from_utf8_lossy(&text))
                            })?
                        }
                        _ => {
                            return Err(format!(
                                "unexpected frame {:?}",
                                String::from_utf8_lossy(&text)
                            ))
                        }
                    };
                    for m in &messages {
                        let Some(("b", r)) = parse_message(m) else {
                            stats.borrow_mut().corrupt(&sid, m.as_bytes());
                            continue;
                        };
                        let seen = check.see(r);
                        stats.borrow_mut().seen(seen, &sid, r);
                        let mut current = round.borrow_mut();
                        if r == current.number {
                            current.arrived += 1;
                            current.last = now;
                            if current.arrived == n {
                                round_done.notify_one();
                            }
                        }
                    }
                }
            }
            .await;
            if let Err(e) = result {
                stats.borrow_mut().error(format!("{sid}: {e}"));
            }
            stats.borrow_mut().lost += check.lost();
        });
    }

    let mut fanout = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)
        .expect("histogram bounds");
    let meter = Meter::start(procs);
    let mut delivered = 0u64;
    for r in 1..=cfg.repeat as u64 {
        {
            let mut current = round.borrow_mut();
            current.number = r;
            current.arrived = 0;
        }
        let _ = go_tx.send(r);
        match timeout(ROUND_TIMEOUT, round_done.notified()).await {
            Ok(()) => {
                let current = round.borrow();
                fanout
                    .record((current.last - current.sent_at).as_nanos().max(1) as u64)
                    .ok();
                delivered += n as u64;
            }
            Err(_) => {
                let arrived = round.borrow().arrived;
                let mut s = stats.borrow_mut();
                s.lost += (n - arrived) as u64;
                s.error(format!(
                    "round {r}: only {arrived} of {n} sessions got it within {ROUND_TIMEOUT:?}"
                ));
                break;
            }
        }
        // Let the last writes settle so rounds do not overlap.
        sleep(Duration::from_millis(5)).await;
    }
    let measured = meter.stop();
    let rss_after = procs.rss_kib();
    drop(go_tx);
    // Readers never end by themselves: a short grace for stragglers, then stop.
    sleep(Duration::from_millis(200)).await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut s = stats.borrow_mut();
    s.counted = delivered;
    let wall = measured["wall_s"].as_f64().unwrap_or(0.0);
    let base = record(&cfg, &s, measured, rss_before, rss_after);
    // The server's CPU time for one round, split: what the kernel spent
    // (on loopback also the receivers' TCP work) is a floor no user-space
    // change moves.
    let per_round_ms = |per_op: &Value| per_op.as_f64().map(|us| round3(us * n as f64 / 1e3));
    let all_ms = per_round_ms(&base["server_cpu_us_per_op"]);
    let user_ms = per_round_ms(&base["server_user_cpu_us_per_op"]);
    let kernel_ms = all_ms.zip(user_ms).map(|(a, u)| round3(a - u));
    Ok(merge(
        base,
        json!({
            "round_cpu_ms": { "user": user_ms, "kernel": kernel_ms },
            "rounds": fanout.len(),
            "fanout_ms": latency_json(&fanout, 1e6),
            "latency_us": Value::Null,
            "deliveries_per_s": if wall > 0.0 { round3(delivered as f64 / wall) } else { 0.0 },
        }),
    ))
}

/// N WebSocket sessions, each verified with one echo, held; RSS per session.
async fn idle_websocket(cfg: Rc<Config>) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let framing = framing_for(&cfg);
    sleep(Duration::from_millis(300)).await;
    let rss_before = procs.rss_kib();
    let stats = Stats::new((Instant::now(), Instant::now() + Duration::from_secs(86_400)));
    let setup_started = Instant::now();
    let meter = Meter::start(procs);
    let sockets = open_all(cfg.sessions, cfg.concurrency, &stats, |i| {
        let target = cfg.target.clone();
        let sid = cfg.sid(i);
        let stats = stats.clone();
        let size = cfg.size;
        async move {
            let mut ws = open_ws(target, framed_path(&sid), framing).await?;
            let mut check = SeqCheck::new();
            let latency = ws_exchange(&mut ws, framing, &sid, 1, size, &mut check, &stats).await?;
            stats.borrow_mut().record_always(latency);
            ws.shrink();
            Ok((ws, check))
        }
    })
    .await;
    let setup_s = setup_started.elapsed().as_secs_f64();
    let setup_meter = meter.stop();
    let held = sockets.iter().filter(|s| s.is_some()).count();
    sleep(cfg.hold).await;
    let rss_after = procs.rss_kib();

    // Still there? One more echo on every session.
    let verified = Rc::new(RefCell::new(0usize));
    let mut sockets = sockets;
    let permits = std::sync::Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    // The sessions stay open until the record is made.
    let kept: Rc<RefCell<Vec<(Ws, SeqCheck)>>> = Rc::new(RefCell::new(Vec::with_capacity(held)));
    for (i, slot) in sockets.drain(..).enumerate() {
        let Some((mut ws, mut check)) = slot else {
            continue;
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let stats = stats.clone();
        let verified = verified.clone();
        let sid = cfg.sid(i);
        let size = cfg.size;
        let kept = kept.clone();
        tasks.spawn_local(async move {
            match ws_exchange(&mut ws, framing, &sid, 2, size, &mut check, &stats).await {
                Ok(_) => *verified.borrow_mut() += 1,
                Err(e) => stats.borrow_mut().error(format!("after holding: {e}")),
            }
            ws.shrink();
            kept.borrow_mut().push((ws, check));
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    join_bounded(&mut tasks, ECHO_TIMEOUT + Duration::from_secs(30), &stats).await;
    for (_, check) in kept.borrow().iter() {
        stats.borrow_mut().lost += check.lost();
    }
    let verified = *verified.borrow();
    let s = stats.borrow();
    let mut value = record(&cfg, &s, setup_meter, rss_before, rss_after);
    value["msgs_per_s"] = json!(round3(held as f64 / setup_s.max(1e-9)));
    value["ok"] = json!(s.clean() && held == cfg.sessions && verified == cfg.sessions);
    drop(kept);
    Ok(merge(
        value,
        json!({
            "kind": "websocket",
            "held": held,
            "verified_after_hold": verified,
            "hold_s": cfg.hold.as_secs_f64(),
            "setup_s": round3(setup_s),
            "setup_sessions_per_s": round3(held as f64 / setup_s.max(1e-9)),
            "sources": cfg.target_sources(),
        }),
    ))
}

/// One poll on `conn`: the single frame it carries.
async fn poll_once(conn: &mut Http, target: &Target, path: &str) -> Result<Vec<u8>, String> {
    let mut head = conn.post(&target.host, path, b"").await?;
    let mut body = Vec::new();
    conn.read_to_end(&mut head.body, &mut body).await?;
    if head.status != 200 {
        return Err(format!("{path}: status {}", head.status));
    }
    if body.last() != Some(&b'\n') || body[..body.len() - 1].contains(&b'\n') {
        return Err(format!(
            "{path}: not one frame: {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    body.pop();
    Ok(body)
}

/// `xhr_send` of message `seq`, then polls until its echo: the verification.
async fn polling_exchange(
    conn: &mut Http,
    target: &Target,
    sid: &str,
    seq: u64,
    size: usize,
    check: &mut SeqCheck,
    stats: &Shared,
) -> Result<Duration, String> {
    let base = format!("/echo/0/{sid}");
    let payload = outgoing(Framing::Sockjs, &message(sid, seq, size));
    let sent = Instant::now();
    let mut head = conn
        .post(&target.host, &format!("{base}/xhr_send"), &payload)
        .await?;
    let mut sink = Vec::new();
    conn.read_to_end(&mut head.body, &mut sink).await?;
    if head.status != 204 {
        stats.borrow_mut().lost += 1;
        return Err(format!("{base}/xhr_send: status {}", head.status));
    }
    loop {
        if !conn.reusable() {
            *conn = http(target).await?;
        }
        let frame = timeout(
            ECHO_TIMEOUT,
            poll_once(conn, target, &format!("{base}/xhr")),
        )
        .await
        .map_err(|_| {
            stats.borrow_mut().lost += 1;
            format!("{sid}: no echo of {seq} within {ECHO_TIMEOUT:?}")
        })??;
        if take_messages(Framing::Sockjs, &frame, sid, seq, check, stats)? {
            return Ok(sent.elapsed());
        }
    }
}

/// N polling sessions with no receiver attached, each verified with one echo
/// (xhr_send + one poll), held; RSS per session.
async fn idle_polling(cfg: Rc<Config>) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let stats = Stats::new((Instant::now(), Instant::now() + Duration::from_secs(86_400)));
    let workers = cfg.concurrency.clamp(1, cfg.sessions.max(1));
    // `workers` keep-alive connections, each serving every `workers`-th
    // session. They are opened and used once before the first RSS reading so
    // that their buffers do not count as per-session memory.
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut conn = http(&cfg.target).await?;
        let mut head = conn.request("GET", &cfg.target.host, "/echo", b"").await?;
        let mut sink = Vec::new();
        conn.read_to_end(&mut head.body, &mut sink).await?;
        if head.status != 200 {
            return Err(format!("GET /echo: status {}", head.status));
        }
        conns.push(Some(conn));
    }
    let conns = Rc::new(RefCell::new(conns));
    sleep(Duration::from_millis(300)).await;
    let rss_before = procs.rss_kib();
    let setup_started = Instant::now();
    let meter = Meter::start(procs);
    let checks: Rc<RefCell<Vec<Option<SeqCheck>>>> =
        Rc::new(RefCell::new((0..cfg.sessions).map(|_| None).collect()));

    let phase = |seq: u64| {
        let mut tasks = JoinSet::new();
        for w in 0..workers {
            let cfg = cfg.clone();
            let stats = stats.clone();
            let checks = checks.clone();
            let conns = conns.clone();
            tasks.spawn_local(async move {
                let mut conn: Option<Http> = conns.borrow_mut()[w].take();
                for i in (w..cfg.sessions).step_by(workers) {
                    let sid = cfg.sid(i);
                    let result: Result<(), String> = async {
                        let c = match conn.as_mut() {
                            Some(c) if c.reusable() => c,
                            _ => conn.insert(http(&cfg.target).await?),
                        };
                        let mut check = if seq == 1 {
                            let path = format!("/echo/0/{sid}/xhr");
                            let first = timeout(OPEN_TIMEOUT, poll_once(c, &cfg.target, &path))
                                .await
                                .map_err(|_| format!("{path}: no o frame"))??;
                            if first != b"o" {
                                return Err(format!(
                                    "{path}: first frame {:?}",
                                    String::from_utf8_lossy(&first)
                                ));
                            }
                            SeqCheck::new()
                        } else {
                            checks.borrow_mut()[i].take().ok_or("session not opened")?
                        };
                        let latency = polling_exchange(
                            c,
                            &cfg.target,
                            &sid,
                            seq,
                            cfg.size,
                            &mut check,
                            &stats,
                        )
                        .await;
                        checks.borrow_mut()[i] = Some(check);
                        stats.borrow_mut().record_always(latency?);
                        Ok(())
                    }
                    .await;
                    if let Err(e) = result {
                        stats.borrow_mut().error(format!("{sid}: {e}"));
                        conn = None;
                    }
                }
                conns.borrow_mut()[w] = conn;
            });
        }
        tasks
    };
    let mut tasks = phase(1);
    let setup_bound = Duration::from_secs(60) + Duration::from_millis(cfg.sessions as u64);
    join_bounded(&mut tasks, setup_bound, &stats).await;
    let setup_s = setup_started.elapsed().as_secs_f64();
    let setup_meter = meter.stop();
    let held = checks.borrow().iter().filter(|c| c.is_some()).count();
    sleep(cfg.hold).await;
    let rss_after = procs.rss_kib();
    let failures_before = stats.borrow().errors;
    let mut tasks = phase(2);
    join_bounded(&mut tasks, setup_bound, &stats).await;
    let verified = held.saturating_sub((stats.borrow().errors - failures_before) as usize);
    for check in checks.borrow().iter().flatten() {
        stats.borrow_mut().lost += check.lost();
    }
    let s = stats.borrow();
    let mut value = record(&cfg, &s, setup_meter, rss_before, rss_after);
    value["msgs_per_s"] = json!(round3(held as f64 / setup_s.max(1e-9)));
    value["ok"] = json!(s.clean() && held == cfg.sessions && verified == cfg.sessions);
    Ok(merge(
        value,
        json!({
            "kind": "polling",
            "held": held,
            "verified_after_hold": verified,
            "hold_s": cfg.hold.as_secs_f64(),
            "setup_s": round3(setup_s),
            "setup_sessions_per_s": round3(held as f64 / setup_s.max(1e-9)),
            "connections": workers,
        }),
    ))
}

/// Sessions opened and closed as fast as C loops can: open, first frame
/// (gateway: `o`; baseline: one echo), close handshake.
async fn connect_rate(cfg: Rc<Config>) -> Result<Value, String> {
    let procs = &cfg.server_procs;
    let framing = framing_for(&cfg);
    let rss_before = procs.rss_kib();
    let t0 = Instant::now();
    let window = (t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration);
    let stats = Stats::new(window);
    let mut tasks = JoinSet::new();
    for w in 0..cfg.sessions.max(1) {
        let cfg = cfg.clone();
        let stats = stats.clone();
        tasks.spawn_local(async move {
            let mut k = 0u64;
            while Instant::now() < window.1 {
                k += 1;
                let sid = format!("{}c{w}x{k}", cfg.run_id);
                let started = Instant::now();
                let result: Result<(), String> = async {
                    let mut ws = timeout(
                        OPEN_TIMEOUT,
                        open_ws(cfg.target.clone(), framed_path(&sid), framing),
                    )
                    .await
                    .map_err(|_| "open timed out".to_string())??;
                    if framing == Framing::Raw {
                        let mut check = SeqCheck::new();
                        ws_exchange(&mut ws, framing, &sid, 1, cfg.size, &mut check, &stats)
                            .await?;
                    }
                    let opened = started.elapsed();
                    ws.close(Duration::from_secs(5)).await?;
                    stats.borrow_mut().record(opened, Instant::now());
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    stats.borrow_mut().error(format!("{sid}: {e}"));
                    // Do not spin on a refusing server.
                    sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    sleep_until(window.0.into()).await;
    let meter = Meter::start(procs);
    sleep_until(window.1.into()).await;
    let measured = meter.stop();
    let rss_after = procs.rss_kib();
    join_bounded(&mut tasks, OPEN_TIMEOUT + Duration::from_secs(10), &stats).await;
    let s = stats.borrow();
    let mut value = record(&cfg, &s, measured, rss_before, rss_after);
    value["rss_per_session_bytes"] = Value::Null;
    Ok(merge(
        value,
        json!({
            "loops": cfg.sessions,
            "unit": "sessions/s",
            "per_session": if cfg.server == Server::Gateway { "open, read o, close" } else { "open, echo one message, close" },
        }),
    ))
}

impl Config {
    fn target_sources(&self) -> usize {
        self.target.source_count()
    }
}

/// The statistics of a run's measured window, which starts now (after its
/// warm-up), carrying the errors and error samples of the setup before it.
fn measured_after_setup(cfg: &Config, setup_stats: &Shared) -> Shared {
    let t0 = Instant::now();
    let stats = Stats::new((t0 + cfg.warmup, t0 + cfg.warmup + cfg.duration));
    {
        let setup = setup_stats.borrow();
        let mut s = stats.borrow_mut();
        s.errors += setup.errors;
        s.samples.extend(setup.samples.iter().cloned());
    }
    stats
}
