//! Attack: the no-loss sessions run twice, first alone, then while hostile
//! clients hammer the same gateway: a client pipelining `/info` and never
//! reading, a header flood, 60 KB session ids, a DNS-rebinding origin, a
//! WebSocket frame header announcing 2^62 bytes, and xhr_send bodies of
//! empty strings (a million in all). Each attack bounds its own size (it
//! stops after its byte or request budget, when the gateway closes it, or
//! when a write cannot finish in a second), so a gateway that does not
//! defend itself cannot take the machine down with it.
//!
//! Only the no-loss checks can fail (lost, duplicated, reordered messages,
//! failed sessions); the gateway's peak RSS and the round-trip p99 with and
//! without attacks are reported. soak.sh fails the run if the gateway died.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::churn::round3;
use crate::metrics::Metrics;
use crate::net::{Procs, Target};
use crate::noloss;
use crate::{Check, Outcome};

pub struct Config {
    /// The no-loss run, made twice (with a fresh run id each time).
    pub noloss: Box<dyn Fn(&str) -> noloss::Config>,
    pub run_id: String,
    /// Budget of the pipelining and lying-frame attacks, in bytes each.
    pub stream_bytes: usize,
    /// Requests per request-at-a-time attack (header flood, ids, origin).
    pub requests: usize,
    /// xhr_send bodies of empty strings (349,000 strings each, under 1 MiB).
    pub empty_bodies: usize,
}

/// A write that cannot finish within this is the gateway not reading.
const WRITE_BOUND: Duration = Duration::from_secs(1);
/// One answer, at most.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

pub async fn run(
    cfg: Config,
    target: Rc<Target>,
    metrics_urls: &str,
    procs: Procs,
) -> Result<Outcome, String> {
    let calm = sampled(
        &procs,
        &target,
        &format!("{}canarya", cfg.run_id),
        noloss::run(
            (cfg.noloss)(&format!("{}a", cfg.run_id)),
            target.clone(),
            Metrics::new(metrics_urls, procs.clone())?,
        ),
    )
    .await;
    let (calm, calm_rss, calm_canary) = (calm.0?, calm.1, calm.2);

    let stop = Rc::new(Cell::new(false));
    let mut attacks = JoinSet::new();
    let addr = target.addr;
    let host = target.host.clone();
    {
        let (stop, host) = (stop.clone(), host.clone());
        let budget = cfg.stream_bytes;
        attacks.spawn_local(
            async move { ("pipelining", pipelining(addr, &host, budget, stop).await) },
        );
    }
    for (name, kind) in [
        ("header_flood", Repeat::HeaderFlood),
        ("long_session_ids", Repeat::LongIds),
        ("dns_rebinding", Repeat::Rebinding),
    ] {
        let (stop, host) = (stop.clone(), host.clone());
        let n = cfg.requests;
        attacks.spawn_local(async move { (name, repeat(addr, &host, kind, n, stop).await) });
    }
    {
        let (stop, host) = (stop.clone(), host.clone());
        let budget = cfg.stream_bytes;
        let sid = format!("{}lie", cfg.run_id);
        attacks.spawn_local(async move {
            (
                "lying_frame_header",
                lying_frame(addr, &host, &sid, budget, stop).await,
            )
        });
    }
    {
        let (stop, host) = (stop.clone(), host.clone());
        let n = cfg.empty_bodies;
        let sid = format!("{}empty", cfg.run_id);
        attacks.spawn_local(async move {
            (
                "empty_strings",
                empty_strings(addr, &host, &sid, n, stop).await,
            )
        });
    }

    let hostile = sampled(
        &procs,
        &target,
        &format!("{}canaryb", cfg.run_id),
        noloss::run(
            (cfg.noloss)(&format!("{}b", cfg.run_id)),
            target.clone(),
            Metrics::new(metrics_urls, procs.clone())?,
        ),
    )
    .await;
    stop.set(true);
    let mut reports = serde_json::Map::new();
    let joined = timeout(Duration::from_secs(15), async {
        while let Some(done) = attacks.join_next().await {
            if let Ok((name, report)) = done {
                reports.insert(name.to_owned(), report);
            }
        }
    })
    .await;
    if joined.is_err() {
        attacks.abort_all();
    }
    let (hostile, hostile_rss, hostile_canary) = (hostile.0?, hostile.1, hostile.2);

    let p99 = |o: &Outcome| o.details["total"]["latency_ms"]["p99"].as_f64();
    let mib = |kib: u64| round3(kib as f64 / 1024.0);
    let mut checks = Vec::new();
    for (when, outcome) in [("alone", &calm), ("under attack", &hostile)] {
        for c in &outcome.checks {
            checks.push(Check::new(
                &format!("{when}: {}", c.name),
                c.measured.clone(),
                c.limit.clone(),
                c.ok,
            ));
        }
    }
    let fmt = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:.2} ms"));
    checks.push(Check::new(
        "round-trip p99 under attack vs alone (reported)",
        format!("{} vs {}", fmt(p99(&hostile)), fmt(p99(&calm))),
        "-".into(),
        true,
    ));
    checks.push(Check::new(
        "canary echo (one every 50 ms): every one answered, both runs",
        format!(
            "{} of {} alone, {} of {} under attack",
            calm_canary.answered(),
            calm_canary.sent,
            hostile_canary.answered(),
            hostile_canary.sent
        ),
        "all".into(),
        calm_canary.complete() && hostile_canary.complete(),
    ));
    checks.push(Check::new(
        "canary echo p50 / p99 / max under attack vs alone (reported)",
        format!("{} vs {}", hostile_canary.shown(), calm_canary.shown()),
        "-".into(),
        true,
    ));
    checks.push(Check::new(
        "gateway peak RSS under attack vs alone (reported)",
        format!("{} MiB vs {} MiB", mib(hostile_rss), mib(calm_rss)),
        "-".into(),
        true,
    ));
    let summary = format!(
        "no loss alone: {}; under attack: {}; peak RSS {} MiB alone, {} MiB under attack",
        calm.summary,
        hostile.summary,
        mib(calm_rss),
        mib(hostile_rss)
    );
    let details = json!({
        "alone": calm.details,
        "under_attack": hostile.details,
        "p99_ms_alone": p99(&calm),
        "p99_ms_under_attack": p99(&hostile),
        "canary_ms_alone": calm_canary.details(),
        "canary_ms_under_attack": hostile_canary.details(),
        "peak_rss_mib_alone": mib(calm_rss),
        "peak_rss_mib_under_attack": mib(hostile_rss),
        "attacks": reports,
    });
    Ok(Outcome::new("attack", checks, details, summary))
}

/// Runs `work` while sampling the server's RSS every 100 ms and timing a
/// canary echo session (one message every [`CANARY_EVERY`]); its result,
/// the peak in KiB and the canary's round trips.
async fn sampled<T>(
    procs: &Procs,
    target: &Target,
    canary_sid: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, u64, Canary) {
    let peak = Cell::new(procs.rss_kib().unwrap_or(0));
    let sampler = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak.set(peak.get().max(procs.rss_kib().unwrap_or(0)));
        }
    };
    let canary = Rc::new(std::cell::RefCell::new(Canary::default()));
    // The canary stops at its first error, which it records; the work goes on.
    let echoing = async {
        canary_echo(target, canary_sid, canary.clone()).await;
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = work => r,
        _ = sampler => unreachable!("the sampler never ends"),
        _ = echoing => unreachable!("the canary waits once it stopped"),
    };
    peak.set(peak.get().max(procs.rss_kib().unwrap_or(0)));
    let canary = canary.take();
    (result, peak.get(), canary)
}

/// How often the canary session sends.
const CANARY_EVERY: Duration = Duration::from_millis(50);

/// Round trips of an ordinary echo session beside the load.
#[derive(Default)]
struct Canary {
    sent: usize,
    round_trips: Vec<Duration>,
    error: Option<String>,
}

impl Canary {
    fn answered(&self) -> usize {
        self.round_trips.len()
    }

    /// Every message sent was echoed, except at most the one in flight when
    /// the run ended.
    fn complete(&self) -> bool {
        self.error.is_none() && self.sent > 0 && self.sent - self.answered() <= 1
    }

    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let mut sorted = self.round_trips.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * p).ceil() as usize).checked_sub(1)?;
        sorted.get(at).map(|d| round3(d.as_secs_f64() * 1000.0))
    }

    fn shown(&self) -> String {
        let ms = |p| {
            self.percentile_ms(p)
                .map_or("-".to_owned(), |v| format!("{v:.2}"))
        };
        let error = self
            .error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        format!("{} / {} / {} ms{error}", ms(0.5), ms(0.99), ms(1.0))
    }

    fn details(&self) -> Value {
        json!({
            "sent": self.sent,
            "answered": self.answered(),
            "p50": self.percentile_ms(0.5),
            "p99": self.percentile_ms(0.99),
            "max": self.percentile_ms(1.0),
            "error": self.error,
        })
    }
}

/// Sends a message on a framed WebSocket echo session every
/// [`CANARY_EVERY`] and times its echo, for as long as it is polled.
async fn canary_echo(target: &Target, sid: &str, canary: Rc<std::cell::RefCell<Canary>>) {
    let fail = |error: String| canary.borrow_mut().error = Some(error);
    // Not /echo: the no-loss run checks the server's message counts there.
    let base = format!("/cookie_needed_echo/000/{sid}");
    let mut ws = match crate::client::open_ws(target, &base, false).await {
        Ok(ws) => ws,
        Err(error) => return fail(error),
    };
    let mut ticks = tokio::time::interval(CANARY_EVERY);
    for n in 0u64.. {
        ticks.tick().await;
        let sent_at = std::time::Instant::now();
        let payload = format!("[\"canary {n}\"]");
        canary.borrow_mut().sent += 1;
        if let Err(error) = ws.send_text(payload.as_bytes()).await {
            return fail(error);
        }
        let expected = format!("a[\"canary {n}\"]");
        loop {
            match ws.recv().await {
                Ok(crate::ws::Msg::Text(t)) if t == b"h" => continue,
                Ok(crate::ws::Msg::Text(t)) if t == expected.as_bytes() => break,
                Ok(crate::ws::Msg::Text(t)) => {
                    let t = crate::client::shown(t);
                    return fail(format!("canary: {t} for {expected}"));
                }
                Ok(_) => return fail("canary: not a text frame".into()),
                Err(error) => return fail(error),
            }
        }
        canary.borrow_mut().round_trips.push(sent_at.elapsed());
    }
}

/// Writes `bytes` within [`WRITE_BOUND`]: `false` when it could not (the
/// gateway stopped reading) or the connection is gone.
async fn write_bounded(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        timeout(WRITE_BOUND, stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// The status code of the next response head, reading at most 64 KiB.
async fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = timeout(ANSWER_BOUND, read).await;
    let line = std::str::from_utf8(&head[..head.len().min(12)]).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Pipelines `/info` requests and reads nothing, until `budget` bytes are
/// written or a write cannot finish; then holds the connection until `stop`.
async fn pipelining(
    addr: std::net::SocketAddr,
    host: &str,
    budget: usize,
    stop: Rc<Cell<bool>>,
) -> Value {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return json!({ "error": "connect" });
    };
    let batch = format!("GET /ticker/info HTTP/1.1\r\nHost: {host}\r\n\r\n").repeat(1000);
    let mut written = 0;
    let mut blocked = false;
    while written < budget && !stop.get() {
        if !write_bounded(&mut stream, batch.as_bytes()).await {
            blocked = true;
            break;
        }
        written += batch.len();
    }
    while !stop.get() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    json!({ "bytes_written": written, "requests_written": written / (batch.len() / 1000), "gateway_stopped_reading": blocked })
}

#[derive(Clone, Copy)]
enum Repeat {
    HeaderFlood,
    LongIds,
    Rebinding,
}

/// One hostile request at a time on fresh connections, `n` of them at most;
/// the answers' statuses counted.
async fn repeat(
    addr: std::net::SocketAddr,
    host: &str,
    kind: Repeat,
    n: usize,
    stop: Rc<Cell<bool>>,
) -> Value {
    let request = match kind {
        Repeat::HeaderFlood => format!(
            "GET /ticker/info HTTP/1.1\r\nHost: {host}\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(40_000)
        ),
        Repeat::LongIds => format!(
            "POST /ticker/000/{}/xhr HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n",
            "i".repeat(60_000)
        ),
        Repeat::Rebinding => {
            let port = addr.port();
            format!(
                "GET /ticker/info HTTP/1.1\r\nHost: evil.test:{port}\r\nOrigin: http://evil.test:{port}\r\n\r\n"
            )
        }
    };
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut sent = 0;
    while sent < n && !stop.get() {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            *statuses.entry("connect failed".into()).or_default() += 1;
            continue;
        };
        sent += 1;
        let answer = if write_bounded(&mut stream, request.as_bytes()).await {
            status(&mut stream).await
        } else {
            None
        };
        let key = answer.map_or("no answer".to_owned(), |s| s.to_string());
        *statuses.entry(key).or_default() += 1;
    }
    json!({ "requests": sent, "statuses": statuses })
}

/// A framed WebSocket whose first frame announces 2^62 bytes, then zero
/// bytes until `budget`, a write that cannot finish, or the gateway closes.
async fn lying_frame(
    addr: std::net::SocketAddr,
    host: &str,
    sid: &str,
    budget: usize,
    stop: Rc<Cell<bool>>,
) -> Value {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return json!({ "error": "connect" });
    };
    let handshake = format!(
        "GET /amplify/0/{sid}/websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    if !write_bounded(&mut stream, handshake.as_bytes()).await {
        return json!({ "error": "handshake not taken" });
    }
    let upgraded = status(&mut stream).await;
    let mut header = vec![0x81u8, 0xff];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut written = 0;
    let mut ended = "budget";
    if write_bounded(&mut stream, &header).await {
        let zeros = vec![0u8; 64 * 1024];
        while written < budget {
            if stop.get() {
                ended = "scenario over";
                break;
            }
            if !write_bounded(&mut stream, &zeros).await {
                ended = "gateway stopped reading or closed";
                break;
            }
            written += zeros.len();
        }
    } else {
        ended = "gateway stopped reading or closed";
    }
    json!({ "handshake_status": upgraded, "payload_bytes_written": written, "ended": ended })
}

/// An xhr session sent `n` bodies of 349,000 empty strings each (just under
/// 1 MiB), its streaming receiver never read.
async fn empty_strings(
    addr: std::net::SocketAddr,
    host: &str,
    sid: &str,
    n: usize,
    stop: Rc<Cell<bool>>,
) -> Value {
    let base = format!("/disabled_websocket_echo/000/{sid}");
    let post = |path: &str, body_len: usize| {
        format!("POST {base}/{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n")
    };
    const STRINGS: usize = 349_000;
    let mut body = String::with_capacity(STRINGS * 3 + 2);
    body.push('[');
    for i in 0..STRINGS {
        if i > 0 {
            body.push(',');
        }
        body.push_str("\"\"");
    }
    body.push(']');
    // A streaming receiver held open and never read keeps the session alive
    // (until the gateway gives it up) while its echoes pile up.
    let mut receiver = TcpStream::connect(addr).await.ok();
    let mut opened = None;
    if let Some(stream) = &mut receiver {
        if write_bounded(stream, post("xhr_streaming", 0).as_bytes()).await {
            opened = status(stream).await;
        }
    }
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut sent = 0;
    while sent < n && !stop.get() {
        sent += 1;
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            *statuses.entry("connect failed".into()).or_default() += 1;
            continue;
        };
        let mut request = post("xhr_send", body.len()).into_bytes();
        request.extend_from_slice(body.as_bytes());
        let answer = if write_bounded(&mut stream, &request).await {
            status(&mut stream).await
        } else {
            None
        };
        let key = answer.map_or("no answer".to_owned(), |s| s.to_string());
        *statuses.entry(key).or_default() += 1;
    }
    drop(receiver);
    json!({
        "open_status": opened,
        "bodies": sent,
        "empty_strings": sent * STRINGS,
        "statuses": statuses,
    })
}
