//! Stalled readers on /broadcast. One flooder sends broadcasts at a fixed
//! rate; A active members (WebSocket and xhr-streaming, alternating) each
//! send a timestamped message every few milliseconds and time its way back to
//! themselves, and check that every other sender's messages reach them in
//! order. Phase 1 runs like that; then K stalled clients join (WebSocket and
//! xhr-streaming: open, read `o`, never read again, keep the socket open) and
//! phase 2 runs as long again or longer. Measured: the actives' round trips
//! in both phases (and in the part of phase 2 while stalled clients were still
//! open), the server's RSS every 100 ms, and whether the server closed every
//! stalled client (4009 "Too slow to keep up" or 4008 "Send timeout").

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{interval, sleep_until, timeout, MissedTickBehavior};

use crate::churn::{mib, round3};
use crate::client::{open_ws, parse_frame, Frame, Kind, Receiver, Sender};
use crate::metrics::{Metrics, Scrape};
use crate::net::Target;
use crate::ws::{Msg, Ws};
use crate::{Check, Outcome};

const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
const SERVICE: &str = "/broadcast";

pub struct Config {
    pub stalled: usize,
    /// Transports of the stalled clients, taken in turn.
    pub stalled_kinds: Vec<Kind>,
    pub active: usize,
    pub warmup: Duration,
    pub phase1: Duration,
    pub phase2: Duration,
    /// Each active member sends one message this often.
    pub active_interval: Duration,
    /// Flood messages per second, and their size.
    pub flood_rate: u64,
    pub flood_size: usize,
    pub send_timeout: Duration,
    pub disconnect_delay: Duration,
    /// RSS bound: `rss_base_mib` + K x `rss_per_stalled_mib`.
    pub rss_base_mib: f64,
    pub rss_per_stalled_mib: f64,
    pub run_id: String,
}

/// What the active members and the flooder share.
struct Shared {
    epoch: Instant,
    /// (sent at, seconds since epoch; round trip, ns; member kind)
    samples: RefCell<Vec<(f64, u64, Kind)>>,
    errors: RefCell<Vec<String>>,
    error_count: Cell<u64>,
    own_sent: Cell<u64>,
    own_back: Cell<u64>,
    own_lost: Cell<u64>,
    own_duplicated: Cell<u64>,
    /// Other senders' messages: gaps, and duplicated or reordered ones.
    others_missing: Cell<u64>,
    others_out_of_order: Cell<u64>,
    others_seen: Cell<u64>,
    flood_sent: Cell<u64>,
    flood_frames_back: Cell<u64>,
    closed_actives: Cell<u64>,
}

impl Shared {
    fn error(&self, e: String) {
        self.error_count.set(self.error_count.get() + 1);
        let mut errors = self.errors.borrow_mut();
        if errors.len() < 10 {
            errors.push(e);
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// One active member's view: its own sequence and every other sender's.
struct Member {
    id: usize,
    kind: Kind,
    sent: u64,
    back: u64,
    last: HashMap<String, u64>,
}

impl Member {
    fn new(id: usize, kind: Kind) -> Member {
        Member {
            id,
            kind,
            sent: 0,
            back: 0,
            last: HashMap::new(),
        }
    }

    fn next_message(&mut self, sh: &Shared) -> String {
        self.sent += 1;
        sh.own_sent.set(sh.own_sent.get() + 1);
        format!("A{}:{}:{}", self.id, self.sent, sh.now_ns())
    }

    /// Takes one frame; `Err` when the server closed the session.
    fn frame(&mut self, frame: Frame, sh: &Shared) -> Result<(), String> {
        let messages = match frame {
            Frame::Messages(m) => m,
            Frame::Heartbeat => return Ok(()),
            Frame::Close(code, reason) => {
                sh.closed_actives.set(sh.closed_actives.get() + 1);
                return Err(format!("closed by the server: c[{code},{reason:?}]"));
            }
            Frame::Open => return Err("a second o frame".into()),
        };
        let now = sh.now_ns();
        for m in &messages {
            let mut parts = m.splitn(3, ':');
            let (Some(from), Some(Ok(seq)), Some(rest)) = (
                parts.next(),
                parts.next().map(str::parse::<u64>),
                parts.next(),
            ) else {
                sh.error(format!("unexpected message {:?}", &m[..m.len().min(60)]));
                continue;
            };
            if from.strip_prefix('A').and_then(|n| n.parse().ok()) == Some(self.id) {
                let expected = self.back + 1;
                if seq == expected {
                    self.back = seq;
                    sh.own_back.set(sh.own_back.get() + 1);
                    let sent_ns: u64 = rest.parse().unwrap_or(now);
                    sh.samples.borrow_mut().push((
                        sent_ns as f64 / 1e9,
                        now.saturating_sub(sent_ns).max(1),
                        self.kind,
                    ));
                } else if seq > expected {
                    sh.own_lost.set(sh.own_lost.get() + seq - expected);
                    sh.error(format!(
                        "A{}: own messages {expected}..{seq} missing",
                        self.id
                    ));
                    self.back = seq;
                    sh.own_back.set(sh.own_back.get() + 1);
                } else {
                    sh.own_duplicated.set(sh.own_duplicated.get() + 1);
                    sh.error(format!("A{}: own message {seq} again", self.id));
                }
                continue;
            }
            sh.others_seen.set(sh.others_seen.get() + 1);
            match self.last.get_mut(from) {
                None => {
                    self.last.insert(from.to_owned(), seq);
                }
                Some(last) if seq == *last + 1 => *last = seq,
                Some(last) if seq > *last + 1 => {
                    sh.others_missing
                        .set(sh.others_missing.get() + seq - *last - 1);
                    sh.error(format!(
                        "A{}: messages {}..{seq} of {from} missing",
                        self.id,
                        *last + 1
                    ));
                    *last = seq;
                }
                Some(_) => {
                    sh.others_out_of_order.set(sh.others_out_of_order.get() + 1);
                    sh.error(format!(
                        "A{}: message {seq} of {from} out of order",
                        self.id
                    ));
                }
            }
        }
        Ok(())
    }

    fn all_back(&self) -> bool {
        self.back >= self.sent
    }
}

/// A member on a framed WebSocket: sends on its ticks, reads all the time.
async fn active_ws(
    mut m: Member,
    mut ws: Ws,
    every: Duration,
    sh: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drain_until: Option<tokio::time::Instant> = None;
    let result: Result<(), String> = async {
        loop {
            let stopping = *stop.borrow();
            if stopping {
                if m.all_back() {
                    return Ok(());
                }
                drain_until.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(5));
            }
            tokio::select! {
                _ = tick.tick(), if !stopping => {
                    let payload = serde_json::to_string(&[m.next_message(&sh)]).expect("JSON");
                    ws.send_text(payload.as_bytes()).await?;
                }
                text = async {
                    match ws.recv().await? {
                        Msg::Text(t) => Ok(t.to_vec()),
                        other => Err(match other {
                            Msg::Close(code) => format!("WebSocket closed ({code:?})"),
                            _ => "binary message".to_string(),
                        }),
                    }
                } => {
                    let text: Vec<u8> = text?;
                    m.frame(parse_frame(&text)?, &sh)?;
                }
                _ = stop.changed(), if !stopping => {}
                _ = sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                    return Err(format!("{} of its own messages not back 5 s after the end", m.sent - m.back));
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        sh.error(format!("active A{} websocket: {e}", m.id));
    }
}

/// A member on xhr-streaming (receiver reopened at `response_limit`) sending
/// by xhr_send.
async fn active_xhr(
    m: Member,
    mut recv: Receiver,
    mut send: Sender,
    every: Duration,
    sh: Rc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let id = m.id;
    let m = RefCell::new(m);
    let failed = Cell::new(false);
    let mut stop_s = stop.clone();
    let sender = async {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_s.changed() => {}
            }
            if *stop_s.borrow() || failed.get() {
                return;
            }
            let msg = m.borrow_mut().next_message(&sh);
            if let Err(e) = send.send(&[msg]).await {
                sh.error(format!("active A{id} xhr_send: {e}"));
                failed.set(true);
                return;
            }
        }
    };
    let mut stop_r = stop;
    let receiver = async {
        let mut frames = Vec::new();
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            let stopping = *stop_r.borrow();
            if failed.get() {
                return;
            }
            if stopping {
                if m.borrow().all_back() {
                    return;
                }
                drain_until.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(5));
            }
            frames.clear();
            tokio::select! {
                r = recv.next(&mut frames) => {
                    if let Err(e) = r {
                        sh.error(format!("active A{id} xhr-streaming: {e}"));
                        failed.set(true);
                        return;
                    }
                    for frame in frames.drain(..) {
                        if let Err(e) = m.borrow_mut().frame(frame, &sh) {
                            sh.error(format!("active A{id} xhr-streaming: {e}"));
                            failed.set(true);
                            return;
                        }
                    }
                }
                _ = stop_r.changed(), if !stopping => {}
                _ = sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                    let m = m.borrow();
                    sh.error(format!("active A{id} xhr-streaming: {} of its own messages not back 5 s after the end", m.sent - m.back));
                    return;
                }
            }
        }
    };
    tokio::join!(sender, receiver);
}

/// The flooder: `rate` messages a second, sent every 10 ms in one frame;
/// reads (and only counts) what the broadcast sends back to it.
async fn flooder(
    mut ws: Ws,
    rate: u64,
    size: usize,
    sh: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let per_tick = (rate / 100).max(1);
    let mut seq = 0u64;
    let mut messages = Vec::with_capacity(per_tick as usize);
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    messages.clear();
                    for _ in 0..per_tick {
                        seq += 1;
                        let mut m = format!("F:{seq}:");
                        while m.len() < size {
                            m.push('x');
                        }
                        messages.push(m);
                    }
                    let payload = serde_json::to_string(&messages).expect("JSON");
                    ws.send_text(payload.as_bytes()).await?;
                    sh.flood_sent.set(seq);
                }
                r = ws.recv() => match r? {
                    Msg::Text(t) if t.first() == Some(&b'a') => {
                        sh.flood_frames_back.set(sh.flood_frames_back.get() + 1);
                    }
                    Msg::Text(t) if t == b"h" => {}
                    Msg::Text(t) => return Err(format!("frame {:?}", crate::client::shown(t))),
                    Msg::Binary => return Err("binary message".into()),
                    Msg::Close(code) => return Err(format!("WebSocket closed ({code:?})")),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        sh.error(format!("flooder: {e}"));
    }
}

/// A stalled client: reads `o`, then never reads again (only held).
#[allow(dead_code)]
enum Stalled {
    Ws(Box<Ws>),
    Xhr(Box<Receiver>),
}

async fn open_stalled(kind: Kind, target: Rc<Target>, base: String) -> Result<Stalled, String> {
    if kind == Kind::Websocket {
        return Ok(Stalled::Ws(Box::new(open_ws(&target, &base, false).await?)));
    }
    let mut recv = Receiver::new(kind, target, &base, false);
    let mut frames = Vec::new();
    recv.next(&mut frames).await?;
    // The flood may have come in the same read as `o`.
    match frames.first() {
        Some(Frame::Open) => Ok(Stalled::Xhr(Box::new(recv))),
        other => Err(format!("{base}: first frame {other:?}")),
    }
}

/// One metrics reading during the run.
struct Reading {
    at: f64,
    rss: u64,
    live: f64,
    /// Closes of /broadcast sessions that only stalled clients get: 4009,
    /// 4008, and `timeout` (no receiver for disconnect_delay: an
    /// xhr-streaming receiver ends at response_limit and is never reopened).
    closed_stalled: f64,
    queued: f64,
}

fn reading(sh: &Shared, metrics: &Metrics, s: &Scrape) -> Reading {
    Reading {
        at: sh.epoch.elapsed().as_secs_f64(),
        rss: metrics.rss(s).unwrap_or(0),
        live: s.live(SERVICE),
        closed_stalled: closed_stalled(s),
        queued: s.sum("sockjs_outgoing_queue_bytes", &[("service", SERVICE)]),
    }
}

fn timeouts(s: &Scrape) -> f64 {
    s.sum(
        "sockjs_sessions_closed_total",
        &[("service", SERVICE), ("reason", "timeout")],
    )
}

fn closed_stalled(s: &Scrape) -> f64 {
    s.closed_with(SERVICE, "4009") + s.closed_with(SERVICE, "4008") + timeouts(s)
}

fn hist_json(samples: &[(f64, u64, Kind)], from: f64, to: f64) -> (Value, Option<f64>, u64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
    for &(at, ns, _) in samples {
        if at >= from && at < to {
            let _ = h.record(ns);
        }
    }
    if h.is_empty() {
        return (Value::Null, None, 0);
    }
    let ms = |q: f64| round3(h.value_at_quantile(q) as f64 / 1e6);
    (
        json!({
            "count": h.len(),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p99_9_ms": ms(0.999),
            "max_ms": round3(h.max() as f64 / 1e6),
        }),
        Some(h.value_at_quantile(0.99) as f64 / 1e6),
        h.len(),
    )
}

pub async fn run(cfg: Config, target: Rc<Target>, mut metrics: Metrics) -> Result<Outcome, String> {
    let sh = Rc::new(Shared {
        epoch: Instant::now(),
        samples: RefCell::new(Vec::new()),
        errors: RefCell::new(Vec::new()),
        error_count: Cell::new(0),
        own_sent: Cell::new(0),
        own_back: Cell::new(0),
        own_lost: Cell::new(0),
        own_duplicated: Cell::new(0),
        others_missing: Cell::new(0),
        others_out_of_order: Cell::new(0),
        others_seen: Cell::new(0),
        flood_sent: Cell::new(0),
        flood_frames_back: Cell::new(0),
        closed_actives: Cell::new(0),
    });
    let start_scrape = metrics.scrape().await?;
    let live_at_start = start_scrape.live(SERVICE);
    let (stop_actives_tx, stop_actives) = watch::channel(false);
    let (stop_flood_tx, stop_flood) = watch::channel(false);

    // The flooder and the active members.
    let base = |name: String| format!("{SERVICE}/0/{}{name}", cfg.run_id);
    let flood_ws = timeout(OPEN_TIMEOUT, open_ws(&target, &base("flood".into()), false))
        .await
        .map_err(|_| "flooder: open timed out".to_string())??;
    // All open before any sends, so that every first frame is `o` alone.
    let mut opened = Vec::new();
    for i in 0..cfg.active {
        let kind = if i % 2 == 0 {
            Kind::Websocket
        } else {
            Kind::XhrStreaming
        };
        let b = base(format!("a{i}"));
        let member = Member::new(i, kind);
        if kind == Kind::Websocket {
            let ws = timeout(OPEN_TIMEOUT, open_ws(&target, &b, false))
                .await
                .map_err(|_| format!("active {i}: open timed out"))??;
            opened.push((member, Ok(ws)));
        } else {
            let mut recv = Receiver::new(kind, target.clone(), &b, false);
            let mut frames = Vec::new();
            timeout(OPEN_TIMEOUT, recv.next(&mut frames))
                .await
                .map_err(|_| format!("active {i}: open timed out"))??;
            if !matches!(frames.as_slice(), [Frame::Open]) {
                return Err(format!("active {i}: first frames {frames:?}"));
            }
            let send = Sender::new(kind, target.clone(), &b, false);
            opened.push((member, Err((recv, send))));
        }
    }
    let mut actives = JoinSet::new();
    for (member, conn) in opened {
        let (every, sh, stop) = (cfg.active_interval, sh.clone(), stop_actives.clone());
        match conn {
            Ok(ws) => actives.spawn_local(active_ws(member, ws, every, sh, stop)),
            Err((recv, send)) => {
                actives.spawn_local(active_xhr(member, recv, send, every, sh, stop))
            }
        };
    }
    let flood = tokio::task::spawn_local(flooder(
        flood_ws,
        cfg.flood_rate,
        cfg.flood_size,
        sh.clone(),
        stop_flood,
    ));

    // The monitor: metrics every 100 ms until told to stop.
    let readings: Rc<RefCell<Vec<Reading>>> = Rc::new(RefCell::new(Vec::new()));
    let (stop_monitor_tx, mut stop_monitor) = watch::channel(false);
    let monitor = {
        let readings = readings.clone();
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            let mut tick = interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_monitor.changed() => return metrics,
                }
                match metrics.scrape().await {
                    Ok(s) => readings.borrow_mut().push(reading(&sh, &metrics, &s)),
                    Err(e) => sh.error(format!("monitor: {e}")),
                }
            }
        })
    };

    let t_phase1 = sh.epoch.elapsed().as_secs_f64() + cfg.warmup.as_secs_f64();
    let phase1_end = Instant::now() + cfg.warmup + cfg.phase1;
    sleep_until(phase1_end.into()).await;
    let t_phase1_end = sh.epoch.elapsed().as_secs_f64();

    // The stalled clients join.
    let closed_before = closed_stalled(&start_scrape);
    let mut opens = JoinSet::new();
    for k in 0..cfg.stalled {
        let kind = cfg.stalled_kinds[k % cfg.stalled_kinds.len()];
        let (target, b) = (target.clone(), base(format!("s{k}")));
        opens.spawn_local(async move {
            timeout(OPEN_TIMEOUT, open_stalled(kind, target, b))
                .await
                .map_err(|_| format!("stalled {k}: open timed out"))?
        });
    }
    let mut stalled = Vec::with_capacity(cfg.stalled);
    let mut stalled_errors = 0;
    while let Some(r) = opens.join_next().await {
        match r {
            Ok(Ok(s)) => stalled.push(s),
            Ok(Err(e)) => {
                stalled_errors += 1;
                sh.error(e);
            }
            Err(e) => {
                stalled_errors += 1;
                sh.error(format!("stalled open: {e}"));
            }
        }
    }
    let t_phase2 = sh.epoch.elapsed().as_secs_f64();
    eprintln!(
        "soak stalled: phase 1 done ({:.1}s); {} stalled clients open ({} failed)",
        t_phase1_end - t_phase1,
        stalled.len(),
        stalled_errors
    );
    sleep_until((Instant::now() + cfg.phase2).into()).await;
    let t_phase2_end = sh.epoch.elapsed().as_secs_f64();

    // Wind down: actives first (their last messages must come back), then the flood.
    let _ = stop_actives_tx.send(true);
    let all = async { while actives.join_next().await.is_some() {} };
    if timeout(Duration::from_secs(10), all).await.is_err() {
        sh.error("active members still running 10 s after the end".into());
        actives.abort_all();
    }
    let _ = stop_flood_tx.send(true);
    let _ = timeout(Duration::from_secs(5), flood).await;
    let _ = stop_monitor_tx.send(true);
    let mut metrics = monitor.await.map_err(|e| format!("monitor: {e}"))?;

    // Every stalled client must have been closed by the server: bounded wait
    // for those not closed yet (4008 needs --send-timeout of no progress).
    let want = closed_before + cfg.stalled as f64;
    let members = live_at_start + cfg.active as f64 + 1.0;
    let closed_bound = cfg.send_timeout + Duration::from_secs(5);
    let (closed_wait, s) = metrics
        .wait_for(Duration::from_millis(100), closed_bound, |s| {
            closed_stalled(s) >= want && s.live(SERVICE) <= members
        })
        .await?;
    let closed_4009 = s.closed_with(SERVICE, "4009") - start_scrape.closed_with(SERVICE, "4009");
    let closed_4008 = s.closed_with(SERVICE, "4008") - start_scrape.closed_with(SERVICE, "4008");
    let closed_timeout = timeouts(&s) - timeouts(&start_scrape);
    let closed_all = closed_stalled(&s) - closed_before;
    let live_with_stalled_held = s.live(SERVICE);
    // When the last stalled client was closed, from the readings.
    // The monitor has stopped: its readings are final.
    let readings = std::mem::take(&mut *readings.borrow_mut());
    let all_closed_at = readings
        .iter()
        .find(|r| r.at >= t_phase2 && r.closed_stalled >= want && r.live <= members)
        .map(|r| r.at);
    drop(stalled);
    // Everybody gone: /broadcast must be back to its count before the run.
    let gone_bound = cfg.disconnect_delay + Duration::from_secs(5);
    let (gone, s_end) = metrics
        .wait_for(Duration::from_millis(100), gone_bound, |s| {
            s.live(SERVICE) <= live_at_start
        })
        .await?;

    // Figures.
    let samples = sh.samples.borrow();
    let (lat1, p99_1, n1) = hist_json(&samples, t_phase1, t_phase1_end);
    let (lat2, p99_2, n2) = hist_json(&samples, t_phase2, t_phase2_end);
    let stalled_open_until = all_closed_at.unwrap_or(t_phase2_end).min(t_phase2_end);
    let (lat2s, p99_2s, n2s) = hist_json(&samples, t_phase2, stalled_open_until);
    let rss_max = |from: f64, to: f64| {
        readings
            .iter()
            .filter(|r| r.at >= from && r.at < to)
            .map(|r| r.rss)
            .max()
            .unwrap_or(0)
    };
    let rss_p1 = rss_max(0.0, t_phase1_end);
    let rss_p2 = rss_max(t_phase1_end, f64::MAX);
    let rss_overall = rss_p1.max(rss_p2);
    let rss_bound = cfg.rss_base_mib + cfg.stalled as f64 * cfg.rss_per_stalled_mib;
    let rss_series: Vec<Value> = readings
        .iter()
        .step_by((readings.len() / 200).max(1))
        .map(|r| json!([round3(r.at), round3(mib(r.rss)), r.live, r.queued]))
        .collect();
    let flood_secs = t_phase2_end - (t_phase1 - cfg.warmup.as_secs_f64());
    let latency_ok = |p99: Option<f64>| match (p99_1, p99) {
        (Some(base), Some(p)) => !(p > 3.0 * base && p > 50.0),
        _ => false,
    };
    let fmt_p99 = |p: Option<f64>| p.map_or("-".into(), |p| format!("{p:.2} ms"));

    let mut checks = vec![
        Check::new(
            "server RSS bounded (max over the run)",
            format!("{:.1} MiB", mib(rss_overall)),
            format!("<= {rss_bound:.0} MiB (64 + K x 2)"),
            mib(rss_overall) <= rss_bound && rss_overall > 0,
        ),
        Check::new(
            "active p99 with stalled readers vs without",
            format!("{} vs {}", fmt_p99(p99_2), fmt_p99(p99_1)),
            "not (> 3x and > 50 ms)".into(),
            latency_ok(p99_2),
        ),
        Check::new(
            "stalled clients closed by the server",
            format!(
                "{} of {} ({} x 4009, {} x 4008, {} x no receiver for disconnect_delay){}{}",
                closed_all,
                cfg.stalled,
                closed_4009,
                closed_4008,
                closed_timeout,
                if closed_wait.is_none() {
                    format!(
                        "; {} still live (of {} stalled + {} active + flooder) and {:.2} MiB queued {:.0}s after the flood stopped",
                        s.live(SERVICE) - live_at_start,
                        cfg.stalled,
                        cfg.active,
                        s.sum("sockjs_outgoing_queue_bytes", &[("service", SERVICE)]) / 1048576.0,
                        closed_bound.as_secs_f64()
                    )
                } else {
                    String::new()
                },
                match (all_closed_at, closed_wait) {
                    (Some(at), _) => format!(", all {:.1}s after they joined", at - t_phase2),
                    (None, Some(w)) => format!(
                        ", the last {:.1}s after the flood stopped",
                        w.as_secs_f64()
                    ),
                    (None, None) => String::new(),
                }
            ),
            format!("{}", cfg.stalled),
            closed_wait.is_some() && closed_all >= cfg.stalled as f64 && stalled_errors == 0,
        ),
        Check::new(
            "active members: own messages back once, in order; others in order",
            format!(
                "{} of {} back, lost {}, dup {}; others: {} missing, {} out of order; {} actives closed; {} errors",
                sh.own_back.get(),
                sh.own_sent.get(),
                sh.own_lost.get(),
                sh.own_duplicated.get(),
                sh.others_missing.get(),
                sh.others_out_of_order.get(),
                sh.closed_actives.get(),
                sh.error_count.get()
            ),
            "all, 0".into(),
            sh.own_back.get() == sh.own_sent.get()
                && sh.own_lost.get() == 0
                && sh.own_duplicated.get() == 0
                && sh.others_missing.get() == 0
                && sh.others_out_of_order.get() == 0
                && sh.closed_actives.get() == 0
                && sh.error_count.get() == 0,
        ),
        Check::new(
            "/broadcast sessions gone after the clients left",
            match gone {
                Some(t) => format!("after {:.2}s", t.as_secs_f64()),
                None => format!("{} still live", s_end.live(SERVICE) - live_at_start),
            },
            format!("within {:.0}s", gone_bound.as_secs_f64()),
            gone.is_some(),
        ),
    ];
    if n2s >= 50 && all_closed_at.is_some_and(|at| at < t_phase2_end) {
        checks.insert(
            2,
            Check::new(
                "active p99 while stalled readers were open vs without",
                format!("{} vs {}", fmt_p99(p99_2s), fmt_p99(p99_1)),
                "not (> 3x and > 50 ms)".into(),
                latency_ok(p99_2s),
            ),
        );
    }
    let by_kind = |kind: Kind, from: f64, to: f64| {
        let s: Vec<(f64, u64, Kind)> = samples.iter().filter(|x| x.2 == kind).cloned().collect();
        hist_json(&s, from, to).0
    };
    let details = json!({
        "stalled": cfg.stalled,
        "stalled_kinds": cfg.stalled_kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "active": cfg.active,
        "active_kinds": "websocket and xhr-streaming, alternating",
        "active_interval_ms": cfg.active_interval.as_secs_f64() * 1e3,
        "flood_rate_target": cfg.flood_rate,
        "flood_message_bytes": cfg.flood_size,
        "flood_sent": sh.flood_sent.get(),
        "flood_rate_actual": round3(sh.flood_sent.get() as f64 / flood_secs.max(1e-9)),
        "phase1_s": round3(t_phase1_end - t_phase1),
        "phase2_s": round3(t_phase2_end - t_phase2),
        "latency_phase1": lat1,
        "latency_phase2": lat2,
        "latency_phase2_while_stalled_open": lat2s,
        "latency_phase1_by_transport": {
            "websocket": by_kind(Kind::Websocket, t_phase1, t_phase1_end),
            "xhr-streaming": by_kind(Kind::XhrStreaming, t_phase1, t_phase1_end),
        },
        "latency_phase2_by_transport": {
            "websocket": by_kind(Kind::Websocket, t_phase2, t_phase2_end),
            "xhr-streaming": by_kind(Kind::XhrStreaming, t_phase2, t_phase2_end),
        },
        "samples": [n1, n2, n2s],
        "rss_mib_max_phase1": round3(mib(rss_p1)),
        "rss_mib_max_phase2": round3(mib(rss_p2)),
        "rss_mib_max": round3(mib(rss_overall)),
        "rss_mib_bound": rss_bound,
        "closed_4009": closed_4009,
        "closed_4008": closed_4008,
        "closed_timeout": closed_timeout,
        "all_stalled_closed_after_s": all_closed_at.map(|at| round3(at - t_phase2)),
        "live_broadcast_after_phase2": live_with_stalled_held,
        "closed_by_reason": s_end.closes(SERVICE),
        "own_sent": sh.own_sent.get(),
        "own_back": sh.own_back.get(),
        "others_seen": sh.others_seen.get(),
        "errors": sh.error_count.get(),
        "error_samples": *sh.errors.borrow(),
        "rss_series_mib": rss_series,
        "rss_series_columns": ["t_s", "rss_mib", "live_broadcast_sessions", "outgoing_queue_bytes"],
    });
    let summary = format!(
        "K={} stalled: p50/p99 {}/{} ms without, {}/{} ms with; max RSS {:.1} MiB; closed: {} x 4009, {} x 4008, {} x timeout",
        cfg.stalled,
        lat1["p50_ms"],
        lat1["p99_ms"],
        lat2["p50_ms"],
        lat2["p99_ms"],
        mib(rss_overall),
        closed_4009,
        closed_4008,
        closed_timeout
    );
    Ok(Outcome::new("stalled", checks, details, summary))
}
