//! No loss: S sessions over the five transports (round robin) push M
//! sequence-numbered messages in all through the echo service, each session
//! keeping a window of messages in flight; every echo must come back exactly
//! once and in order. Streaming receivers are reopened when `response_limit`
//! (4096 on /echo) ends them, polling ones after every frame, so the
//! receiver hand-over is crossed thousands of times per session.
//!
//! After its last echo each session keeps reading for a short while: a
//! message arriving then is a duplicate.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::churn::round3;
use crate::client::{open_ws, parse_soak, soak_message, ws_frame, Frame, Kind, Receiver, Sender};
use crate::metrics::Metrics;
use crate::net::Target;
use crate::stats::{latency_json, Seen, SeqCheck};
use crate::{Check, Outcome};

/// How long a session keeps reading after its last echo.
const DRAIN: Duration = Duration::from_millis(300);
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Config {
    pub sessions: usize,
    pub messages: u64,
    /// Messages in flight per session: session i uses
    /// `windows[(i / 5) % windows.len()]` (every transport gets each).
    pub windows: Vec<u64>,
    /// Messages per xhr_send / jsonp_send request at most.
    pub batch: u64,
    /// No echo for this long: the session fails (its missing messages are lost).
    pub stall: Duration,
    /// Bound on the whole scenario.
    pub bound: Duration,
    pub run_id: String,
}

/// One session's sequence check and counters.
struct Track {
    sid: String,
    kind: Kind,
    quota: u64,
    window: u64,
    check: SeqCheck,
    /// Highest sequence number handed to the transport.
    sent: u64,
    unique: u64,
    duplicated: u64,
    reordered: u64,
    corrupt: u64,
    conflicts: u64,
    late: u64,
    errors: Vec<String>,
    receiver_requests: u64,
    send_requests: u64,
    secs: f64,
    completed: bool,
    /// When each message still awaited was handed to the transport.
    sent_at: VecDeque<(u64, Instant)>,
    /// Round trips, send to echo, in nanoseconds.
    latency: Histogram<u64>,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("bounds")
}

impl Track {
    fn new(sid: String, kind: Kind, quota: u64, window: u64) -> Track {
        Track {
            sid,
            kind,
            quota,
            window,
            check: SeqCheck::new(),
            sent: 0,
            unique: 0,
            duplicated: 0,
            reordered: 0,
            corrupt: 0,
            conflicts: 0,
            late: 0,
            errors: Vec::new(),
            receiver_requests: 0,
            send_requests: 0,
            secs: 0.0,
            completed: false,
            sent_at: VecDeque::new(),
            latency: latency_histogram(),
        }
    }

    /// Messages from `from` to `to` handed to the transport now.
    fn sending(&mut self, from: u64, to: u64) {
        let now = Instant::now();
        self.sent_at.extend((from..=to).map(|seq| (seq, now)));
        self.sent = to;
    }

    /// The round trip of `seq`, first seen now.
    fn timed(&mut self, seq: u64) {
        while let Some(&(first, at)) = self.sent_at.front() {
            if first > seq {
                break;
            }
            self.sent_at.pop_front();
            if first == seq {
                let _ = self.latency.record(at.elapsed().as_nanos() as u64);
                break;
            }
        }
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < 3 {
            self.errors
                .push(format!("{} {}: {e}", self.sid, self.kind.name()));
        }
    }

    /// Takes one frame; `Err` ends the session.
    fn frame(&mut self, frame: Frame, draining: bool) -> Result<(), String> {
        match frame {
            Frame::Heartbeat => Ok(()),
            Frame::Messages(messages) => {
                for m in &messages {
                    if draining {
                        self.late += 1;
                    }
                    match parse_soak(m) {
                        Some((s, seq)) if s == self.sid && seq >= 1 && seq <= self.sent => {
                            match self.check.see(seq) {
                                Seen::InOrder | Seen::Gap(_) => {
                                    self.unique += 1;
                                    self.timed(seq);
                                }
                                Seen::Reordered => {
                                    self.unique += 1;
                                    self.reordered += 1;
                                    self.error(format!("message {seq} out of order"));
                                }
                                Seen::Duplicate => {
                                    self.duplicated += 1;
                                    self.error(format!("message {seq} again"));
                                }
                            }
                        }
                        _ => {
                            self.corrupt += 1;
                            self.error(format!("unexpected message {:?}", &m[..m.len().min(80)]));
                        }
                    }
                }
                Ok(())
            }
            Frame::Close(2010, reason) => {
                self.conflicts += 1;
                Err(format!("receiver conflict: c[2010,{reason:?}]"))
            }
            Frame::Close(code, reason) => {
                Err(format!("closed by the server: c[{code},{reason:?}]"))
            }
            Frame::Open => Err("a second o frame".into()),
        }
    }
}

async fn ws_session(cfg: Rc<Config>, target: Rc<Target>, t: Rc<RefCell<Track>>) {
    let started = Instant::now();
    let (sid, quota, window) = {
        let t = t.borrow();
        (t.sid.clone(), t.quota, t.window)
    };
    let base = format!("/echo/0/{sid}");
    let mut ws = match timeout(OPEN_TIMEOUT, open_ws(&target, &base, false)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return t.borrow_mut().error(format!("open: {e}")),
        Err(_) => return t.borrow_mut().error("open timed out".into()),
    };
    let mut next = 1u64;
    let result: Result<(), String> = async {
        loop {
            while next <= quota && next - 1 - t.borrow().unique < window {
                t.borrow_mut().sending(next, next);
                let payload = serde_json::to_string(&[soak_message(&sid, next)]).expect("JSON");
                ws.send_text(payload.as_bytes()).await?;
                next += 1;
            }
            if t.borrow().unique >= quota {
                return Ok(());
            }
            let msg = timeout(cfg.stall, ws.recv()).await.map_err(|_| {
                format!(
                    "no echo for {:?} ({} of {quota} back)",
                    cfg.stall,
                    t.borrow().unique
                )
            })??;
            t.borrow_mut().frame(ws_frame(msg)?, false)?;
        }
    }
    .await;
    t.borrow_mut().secs = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        return t.borrow_mut().error(e);
    }
    t.borrow_mut().completed = true;
    // Anything after the last echo is one too many.
    let until = tokio::time::Instant::now() + DRAIN;
    while let Ok(Ok(msg)) = tokio::time::timeout_at(until, ws.recv()).await {
        match ws_frame(msg) {
            Ok(frame) => {
                if let Err(e) = t.borrow_mut().frame(frame, true) {
                    t.borrow_mut().error(format!("after the last echo: {e}"));
                    break;
                }
            }
            Err(_) => break,
        }
    }
}

async fn http_session(cfg: Rc<Config>, target: Rc<Target>, t: Rc<RefCell<Track>>) {
    let started = Instant::now();
    let (sid, kind, quota, window) = {
        let t = t.borrow();
        (t.sid.clone(), t.kind, t.quota, t.window)
    };
    let base = format!("/echo/0/{sid}");
    let mut recv = Receiver::new(kind, target.clone(), &base, false);
    let mut send = Sender::new(kind, target.clone(), &base, false);
    let mut frames = Vec::new();
    match timeout(OPEN_TIMEOUT, recv.next(&mut frames)).await {
        Ok(Ok(())) if matches!(frames.as_slice(), [Frame::Open]) => {}
        Ok(Ok(())) => return t.borrow_mut().error(format!("first frames {frames:?}")),
        Ok(Err(e)) => return t.borrow_mut().error(format!("open: {e}")),
        Err(_) => return t.borrow_mut().error("open timed out".into()),
    }
    let failed = Cell::new(false);
    let to_sender = Notify::new();
    let to_receiver = Notify::new();
    let fail = |e: String| {
        t.borrow_mut().error(e);
        failed.set(true);
        to_sender.notify_one();
        to_receiver.notify_one();
    };
    let sender = async {
        let mut next = 1u64;
        let mut batch = Vec::with_capacity(cfg.batch as usize);
        while next <= quota && !failed.get() {
            let inflight = next - 1 - t.borrow().unique;
            if inflight >= window {
                to_sender.notified().await;
                continue;
            }
            let n = cfg.batch.min(quota - next + 1).min(window - inflight);
            batch.clear();
            batch.extend((next..next + n).map(|s| soak_message(&sid, s)));
            // The echo may be read before the send request is answered.
            t.borrow_mut().sending(next, next + n - 1);
            if let Err(e) = send.send(&batch).await {
                fail(format!("send: {e}"));
                break;
            }
            next += n;
        }
    };
    let receiver = async {
        while t.borrow().unique < quota && !failed.get() {
            frames.clear();
            tokio::select! {
                r = timeout(cfg.stall, recv.next(&mut frames)) => match r {
                    Err(_) => {
                        let unique = t.borrow().unique;
                        fail(format!("no echo for {:?} ({unique} of {quota} back)", cfg.stall));
                    }
                    Ok(Err(e)) => fail(e),
                    Ok(Ok(())) => {
                        for frame in frames.drain(..) {
                            let r = t.borrow_mut().frame(frame, false);
                            if let Err(e) = r {
                                fail(e);
                                break;
                            }
                        }
                        to_sender.notify_one();
                    }
                },
                _ = to_receiver.notified() => {}
            }
        }
    };
    tokio::join!(sender, receiver);
    {
        let mut t = t.borrow_mut();
        t.secs = started.elapsed().as_secs_f64();
        t.receiver_requests = recv.requests;
        t.send_requests = send.requests;
        if failed.get() {
            return;
        }
        t.completed = true;
    }
    let until = tokio::time::Instant::now() + DRAIN;
    loop {
        frames.clear();
        match tokio::time::timeout_at(until, recv.next(&mut frames)).await {
            Ok(Ok(())) => {
                for frame in frames.drain(..) {
                    if let Err(e) = t.borrow_mut().frame(frame, true) {
                        t.borrow_mut().error(format!("after the last echo: {e}"));
                    }
                }
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    t.borrow_mut().receiver_requests = recv.requests;
}

#[derive(Default)]
struct Sum {
    sessions: usize,
    completed: usize,
    quota: u64,
    sent: u64,
    unique: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    corrupt: u64,
    conflicts: u64,
    late: u64,
    failed: usize,
    receiver_requests: u64,
    send_requests: u64,
    secs_max: f64,
    latency: Option<Histogram<u64>>,
}

impl Sum {
    fn add(&mut self, t: &Track) {
        self.sessions += 1;
        self.completed += t.completed as usize;
        self.quota += t.quota;
        self.sent += t.sent;
        self.unique += t.unique;
        // Never sent (the session failed first) counts as lost too.
        self.lost += t.quota - t.unique.min(t.quota);
        self.duplicated += t.duplicated;
        self.reordered += t.reordered;
        self.corrupt += t.corrupt;
        self.conflicts += t.conflicts;
        self.late += t.late;
        self.failed += (!t.completed) as usize;
        self.receiver_requests += t.receiver_requests;
        self.send_requests += t.send_requests;
        self.secs_max = self.secs_max.max(t.secs);
        let _ = self
            .latency
            .get_or_insert_with(latency_histogram)
            .add(&t.latency);
    }

    fn latency_ms(&self) -> serde_json::Value {
        self.latency
            .as_ref()
            .map_or(serde_json::Value::Null, |h| latency_json(h, 1e6))
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "sessions": self.sessions,
            "completed": self.completed,
            "messages": self.quota,
            "sent": self.sent,
            "received": self.unique,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "corrupt": self.corrupt,
            "receiver_conflicts": self.conflicts,
            "after_last_echo": self.late,
            "failed_sessions": self.failed,
            "receiver_requests": self.receiver_requests,
            "send_requests": self.send_requests,
            "secs": round3(self.secs_max),
            "msgs_per_s": round3(self.unique as f64 / self.secs_max.max(1e-9)),
            "latency_ms": self.latency_ms(),
        })
    }
}

pub async fn run(cfg: Config, target: Rc<Target>, mut metrics: Metrics) -> Result<Outcome, String> {
    let cfg = Rc::new(cfg);
    let before = metrics.scrape().await?;
    let started = Instant::now();
    let mut tracks = Vec::with_capacity(cfg.sessions);
    let mut tasks = JoinSet::new();
    let per = cfg.messages / cfg.sessions as u64;
    let extra = (cfg.messages % cfg.sessions as u64) as usize;
    for i in 0..cfg.sessions {
        let kind = Kind::ALL[i % Kind::ALL.len()];
        let quota = per + (i < extra) as u64;
        let window = cfg.windows[(i / Kind::ALL.len()) % cfg.windows.len()];
        let t = Rc::new(RefCell::new(Track::new(
            format!("{}n{i}", cfg.run_id),
            kind,
            quota,
            window,
        )));
        tracks.push(t.clone());
        let (cfg, target) = (cfg.clone(), target.clone());
        if kind == Kind::Websocket {
            tasks.spawn_local(ws_session(cfg, target, t));
        } else {
            tasks.spawn_local(http_session(cfg, target, t));
        }
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    let timed_out = timeout(cfg.bound, all).await.is_err();
    if timed_out {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let secs = started.elapsed().as_secs_f64();
    let after = metrics.scrape().await?;

    let mut total = Sum::default();
    let mut by_kind: BTreeMap<Kind, Sum> = BTreeMap::new();
    let mut errors = Vec::new();
    for t in &tracks {
        let t = t.borrow();
        total.add(&t);
        by_kind.entry(t.kind).or_default().add(&t);
        for e in &t.errors {
            if errors.len() < 12 {
                errors.push(e.clone());
            }
        }
    }
    let msgs_per_s = total.unique as f64 / secs.max(1e-9);
    let server_in = after.sum(
        "sockjs_messages_total",
        &[("service", "/echo"), ("direction", "in")],
    ) - before.sum(
        "sockjs_messages_total",
        &[("service", "/echo"), ("direction", "in")],
    );
    let server_out = after.sum(
        "sockjs_messages_total",
        &[("service", "/echo"), ("direction", "out")],
    ) - before.sum(
        "sockjs_messages_total",
        &[("service", "/echo"), ("direction", "out")],
    );
    // Every HTTP response a node gives is counted there: with several nodes,
    // a request forwarded to the session's owner is counted twice (by the
    // node the balancer chose and by the owner).
    let responses = after.sum("sockjs_http_responses_total", &[])
        - before.sum("sockjs_http_responses_total", &[]);
    let ws_sessions = by_kind.get(&Kind::Websocket).map_or(0, |s| s.sessions) as u64;
    let client_requests = total.receiver_requests + total.send_requests + ws_sessions;
    let forwarded = responses as i64 - client_requests as i64;
    let mut checks = vec![
        Check::new(
            "every echo back exactly once, in order",
            format!(
                "{} of {} back; lost {}, duplicated {}, reordered {}, corrupt {}",
                total.unique,
                cfg.messages,
                total.lost,
                total.duplicated,
                total.reordered,
                total.corrupt
            ),
            "0 lost/dup/reordered/corrupt".into(),
            total.unique == cfg.messages
                && total.lost == 0
                && total.duplicated == 0
                && total.reordered == 0
                && total.corrupt == 0,
        ),
        Check::new(
            "sessions completed, no receiver conflict or error",
            format!(
                "{} of {} completed, {} conflicts{}",
                total.completed,
                cfg.sessions,
                total.conflicts,
                if timed_out {
                    ", scenario bound hit"
                } else {
                    ""
                }
            ),
            format!("{}, 0", cfg.sessions),
            total.completed == cfg.sessions && total.conflicts == 0 && !timed_out,
        ),
        Check::new(
            "server counted the messages in and out",
            format!("in {server_in}, out {server_out}"),
            format!("{} each", total.sent),
            server_in as u64 == total.sent && server_out as u64 == total.sent,
        ),
    ];
    if metrics.nodes() > 1 {
        // Else the balancer kept each session on one node and no request
        // took the cross-node path this is meant to soak.
        checks.push(Check::new(
            "requests forwarded between the nodes",
            format!(
                "{forwarded} of {} HTTP requests",
                total.receiver_requests + total.send_requests
            ),
            "> 0".into(),
            forwarded > 0,
        ));
    }
    let transports: serde_json::Map<String, serde_json::Value> = by_kind
        .iter()
        .map(|(k, s)| (k.name().to_owned(), s.json()))
        .collect();
    for (k, s) in &by_kind {
        eprintln!(
            "soak noloss: {:<13} {:>3} sessions, {:>8} of {:>8} back in {:>6.1}s ({:>7.0}/s), lost {} dup {} reordered {} conflicts {}, {} receiver + {} send requests",
            k.name(),
            s.sessions,
            s.unique,
            s.quota,
            s.secs_max,
            s.unique as f64 / s.secs_max.max(1e-9),
            s.lost,
            s.duplicated,
            s.reordered,
            s.conflicts,
            s.receiver_requests,
            s.send_requests
        );
    }
    let details = json!({
        "sessions": cfg.sessions,
        "messages": cfg.messages,
        "windows": cfg.windows,
        "batch": cfg.batch,
        "secs": round3(secs),
        "msgs_per_s": round3(msgs_per_s),
        "total": total.json(),
        "transports": transports,
        "server_messages_in": server_in,
        "server_messages_out": server_out,
        "nodes": metrics.nodes(),
        "server_http_responses": responses,
        "client_requests": client_requests,
        "forwarded_requests": if metrics.nodes() > 1 { json!(forwarded) } else { json!(null) },
        "error_samples": errors,
    });
    let p99 = total
        .latency
        .as_ref()
        .filter(|h| !h.is_empty())
        .map_or("-".to_owned(), |h| {
            format!("{:.2} ms", h.value_at_quantile(0.99) as f64 / 1e6)
        });
    let mut summary = format!(
        "{} msgs through {} sessions in {:.1}s: {:.0} msgs/s, round trip p99 {p99}; lost {} dup {} reordered {}",
        total.unique, cfg.sessions, secs, msgs_per_s, total.lost, total.duplicated, total.reordered
    );
    if metrics.nodes() > 1 {
        summary += &format!(
            "; {} nodes, {forwarded} of {} HTTP requests forwarded to the owner",
            metrics.nodes(),
            total.receiver_requests + total.send_requests
        );
    }
    Ok(Outcome::new("noloss", checks, details, summary))
}
