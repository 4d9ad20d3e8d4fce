//! Churn: sessions opened over every transport (round robin), each verified
//! with its `o` frame and one echo, then abandoned without a clean close, in
//! waves; afterwards the server must be back to no live session within
//! `disconnect_delay` + a margin, and its RSS within 10% of the reading
//! taken after an uncounted warm-up wave.
//!
//! How a session is abandoned varies with its index (each combination
//! evenly): its connections are dropped with a FIN or reset (SO_LINGER 0);
//! streaming receivers (WebSocket, xhr-streaming, eventsource) are dropped
//! while attached; polling sessions either have a long-poll hanging when
//! their connection goes, or simply never come back.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::client::{soak_message, Frame, Kind, Receiver, Session};
use crate::metrics::Metrics;
use crate::net::Target;
use crate::ws::Ws;
use crate::{Check, Outcome};

const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Config {
    pub sessions: usize,
    pub wave: usize,
    /// Uncounted full-size waves before the RSS baseline: the allocator
    /// keeps growing (fragmentation) for a few waves before it levels off.
    pub warmup_waves: usize,
    pub concurrency: usize,
    pub disconnect_delay: Duration,
    /// Allowed on top of `disconnect_delay` for the live count to reach 0.
    pub margin: Duration,
    pub run_id: String,
}

/// What is kept of a verified session until its wave is dropped (only
/// held, never read again: dropping it is the point).
#[allow(dead_code)]
enum Held {
    Ws(Box<Ws>),
    Recv(Box<Receiver>),
    Nothing,
}

async fn one(
    kind: Kind,
    target: Rc<Target>,
    sid: String,
    rst: bool,
    attach: bool,
) -> Result<Held, String> {
    let base = format!("/echo/0/{sid}");
    let mut session = Session::open(kind, &target, &base, rst).await?;
    // From `o` on: a polling session has no receiver now, so it expires
    // disconnect_delay after this unless the client comes back in time.
    let opened = Instant::now();
    let since = |e: String| format!("{e} ({} ms after o)", opened.elapsed().as_millis());
    let msg = soak_message(&sid, 1);
    session
        .send(std::slice::from_ref(&msg))
        .await
        .map_err(since)?;
    let mut frames = Vec::new();
    'echo: loop {
        session.next(&mut frames).await.map_err(since)?;
        for frame in frames.drain(..) {
            match frame {
                Frame::Heartbeat => {}
                Frame::Messages(m) if m.len() == 1 && m[0] == msg => break 'echo,
                other => {
                    return Err(since(format!(
                        "{base} {}: expected the echo, got {other:?}",
                        kind.name()
                    )))
                }
            }
        }
    }
    Ok(match session {
        Session::Ws(ws) => Held::Ws(ws),
        Session::Http { mut recv, send } => {
            // The send connection is an idle keep-alive one: gone now.
            drop(send);
            if !kind.polling() {
                Held::Recv(Box::new(recv))
            } else if attach {
                recv.attach_and_forget().await?;
                Held::Recv(Box::new(recv))
            } else {
                Held::Nothing
            }
        }
    })
}

struct WaveResult {
    verified: usize,
    errors: Vec<String>,
    error_count: usize,
    secs: f64,
    live_held: f64,
}

async fn wave(
    cfg: &Config,
    target: &Rc<Target>,
    metrics: &mut Metrics,
    label: &str,
    n: usize,
) -> Result<WaveResult, String> {
    let started = Instant::now();
    let permits = std::sync::Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut held = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let mut error_count = 0;
    let mut take = |r: Result<Result<Held, String>, tokio::task::JoinError>,
                    held: &mut Vec<Held>| match r {
        Ok(Ok(h)) => held.push(h),
        Ok(Err(e)) => {
            error_count += 1;
            if errors.len() < 10 {
                errors.push(e);
            }
        }
        Err(e) => {
            error_count += 1;
            if errors.len() < 10 {
                errors.push(format!("task: {e}"));
            }
        }
    };
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.expect("open");
        let kind = Kind::ALL[i % Kind::ALL.len()];
        let nth = i / Kind::ALL.len();
        let rst = nth % 2 == 1;
        let attach = (nth / 2).is_multiple_of(2);
        let sid = format!("{}{label}x{i}", cfg.run_id);
        let target = target.clone();
        tasks.spawn_local(async move {
            let r = match timeout(OPEN_TIMEOUT, one(kind, target, sid.clone(), rst, attach)).await {
                Ok(r) => r.map_err(|e| format!("{sid} {}: {e}", kind.name())),
                Err(_) => Err(format!(
                    "{sid} {}: not verified within {OPEN_TIMEOUT:?}",
                    kind.name()
                )),
            };
            drop(permit);
            r
        });
        while let Some(r) = tasks.try_join_next() {
            take(r, &mut held);
        }
    }
    while let Some(r) = tasks.join_next().await {
        take(r, &mut held);
    }
    let verified = held.len();
    let secs = started.elapsed().as_secs_f64();
    let live_held = metrics.scrape().await?.live("/echo");
    // Abandoned: every connection of the wave goes at once.
    drop(held);
    Ok(WaveResult {
        verified,
        errors,
        error_count,
        secs,
        live_held,
    })
}

pub async fn run(cfg: Config, target: Rc<Target>, mut metrics: Metrics) -> Result<Outcome, String> {
    let started = Instant::now();
    let zero_bound = cfg.disconnect_delay + cfg.margin;
    let opened_before = metrics
        .scrape()
        .await?
        .sum("sockjs_sessions_opened_total", &[("service", "/echo")]);

    // Every wave (warm-up or counted) is opened, verified, held, dropped;
    // then the server must be back to 0 live /echo sessions (bounded, measured
    // from the drop) before the RSS is read and the next wave starts, so
    // that every wave has the same peak.
    let waves = cfg.sessions.div_ceil(cfg.wave.max(1));
    let warm_n = cfg.wave.min(cfg.sessions);
    let total_waves = cfg.warmup_waves + waves;
    let mut verified = 0;
    let mut opening_s = 0.0;
    let mut errors: Vec<String> = Vec::new();
    let mut error_count = 0;
    let mut wave_records = Vec::new();
    let mut zero_times: Vec<f64> = Vec::new();
    let mut waves_not_zero = 0;
    let mut live_not_all = 0;
    let mut rss_before = 0;
    let mut rss_after = 0;
    let mut counted_rss: Vec<(f64, f64)> = Vec::new();
    let mut last = None;
    let mut zero_last = None;
    for w in 0..total_waves {
        let warmup = w < cfg.warmup_waves;
        let n = if warmup {
            warm_n
        } else {
            let c = w - cfg.warmup_waves;
            cfg.wave.min(cfg.sessions - c * cfg.wave)
        };
        let label = if warmup {
            format!("w{w}")
        } else {
            format!("c{}", w - cfg.warmup_waves)
        };
        let r = wave(&cfg, &target, &mut metrics, &label, n).await?;
        let dropped = Instant::now();
        let (zero, scrape) = metrics
            .wait_for(
                Duration::from_millis(100),
                zero_bound.saturating_sub(dropped.elapsed()),
                |s| s.live("/echo") == 0.0,
            )
            .await?;
        let zero = zero.map(|_| dropped.elapsed().as_secs_f64());
        match zero {
            Some(t) => zero_times.push(t),
            None => waves_not_zero += 1,
        }
        let rss = metrics.settled_rss(Duration::from_secs(3)).await?;
        error_count += r.error_count;
        for e in r.errors {
            if errors.len() < 10 {
                errors.push(e);
            }
        }
        // Informational: polling sessions left without a receiver expire
        // disconnect_delay after their last poll, which may be before the
        // end of a wave that takes longer than that.
        if r.live_held < n as f64 {
            live_not_all += 1;
        }
        if warmup {
            rss_before = rss;
        } else {
            verified += r.verified;
            opening_s += r.secs;
            counted_rss.push(((verified) as f64, rss as f64));
            rss_after = rss;
            zero_last = zero;
        }
        eprintln!(
            "soak churn: {} {}/{}: {} of {n} verified in {:.1}s, {} live while held, 0 live {} after the drop, RSS {:.1} MiB",
            if warmup { "warm-up wave" } else { "wave" },
            if warmup { w + 1 } else { w + 1 - cfg.warmup_waves },
            if warmup { cfg.warmup_waves } else { waves },
            r.verified,
            r.secs,
            r.live_held,
            zero.map_or(format!("NOT within {:.1}s", zero_bound.as_secs_f64()), |t| format!("{t:.2}s")),
            mib(rss)
        );
        wave_records.push(json!({
            "warmup": warmup,
            "sessions": n,
            "verified": r.verified,
            "errors": r.error_count,
            "open_s": round3(r.secs),
            "live_while_held": r.live_held,
            "zero_live_after_s": zero.map(round3),
            "live_left": scrape.live("/echo"),
            "rss_mib": round3(mib(rss)),
        }));
        last = Some(scrape);
    }
    let last = last.ok_or("no wave ran")?;
    let zero_max = zero_times.iter().cloned().fold(0.0, f64::max);
    let live_left = last.live("/echo");
    let opened_after = last.sum("sockjs_sessions_opened_total", &[("service", "/echo")]);
    let opened_want = cfg.sessions + cfg.warmup_waves * warm_n;
    let growth = rss_after as f64 / rss_before.max(1) as f64 - 1.0;
    // Least-squares slope of the counted waves' RSS against sessions so far.
    let slope = {
        let n = counted_rss.len() as f64;
        let (sx, sy) = counted_rss
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (num, den) = counted_rss.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
        });
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    };

    let checks = vec![
        Check::new(
            "sessions opened and verified (o + one echo)",
            format!("{verified} of {}, {error_count} errors", cfg.sessions),
            format!("{}", cfg.sessions),
            verified == cfg.sessions && error_count == 0,
        ),
        Check::new(
            "live /echo sessions back to 0 after the last wave",
            match zero_last {
                Some(t) => format!("0 after {t:.2}s"),
                None => format!("{live_left} still live"),
            },
            format!("within {:.1}s", zero_bound.as_secs_f64()),
            zero_last.is_some(),
        ),
        Check::new(
            "every wave back to 0 live before the next",
            format!(
                "{} of {} (slowest {zero_max:.2}s)",
                total_waves - waves_not_zero,
                total_waves
            ),
            format!("{total_waves}, within {:.1}s", zero_bound.as_secs_f64()),
            waves_not_zero == 0,
        ),
        Check::new(
            "server RSS after vs before (after warm-up)",
            format!(
                "{:.1} -> {:.1} MiB ({:+.1}%)",
                mib(rss_before),
                mib(rss_after),
                100.0 * growth
            ),
            "<= +10%".into(),
            growth <= 0.10,
        ),
        Check::new(
            "server counted every session opened",
            format!("{}", opened_after - opened_before),
            format!("{opened_want}"),
            (opened_after - opened_before) as usize == opened_want,
        ),
    ];
    let details = json!({
        "sessions": cfg.sessions,
        "wave_size": cfg.wave,
        "waves": waves,
        "warmup_waves": cfg.warmup_waves,
        "warmup_sessions": cfg.warmup_waves * warm_n,
        "concurrency": cfg.concurrency,
        "transports": Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "abandon": "per transport, evenly: FIN or RST (SO_LINGER 0); polling: long-poll hanging or no receiver",
        "verified": verified,
        "waves_with_fewer_live_than_held": live_not_all,
        "errors": error_count,
        "error_samples": errors,
        "open_sessions_per_s": round3(verified as f64 / opening_s.max(1e-9)),
        "zero_after_last_wave_s": zero_last.map(round3),
        "zero_after_s_max_over_waves": round3(zero_max),
        "zero_bound_s": zero_bound.as_secs_f64(),
        "live_left": live_left,
        "rss_mib_before": round3(mib(rss_before)),
        "rss_mib_after": round3(mib(rss_after)),
        "rss_growth_pct": round3(100.0 * growth),
        "rss_slope_bytes_per_session": round3(slope),
        "closed_by_reason": last.closes("/echo"),
        "waves_detail": wave_records,
        "wall_s": round3(started.elapsed().as_secs_f64()),
    });
    let summary = format!(
        "{verified} sessions in {waves} waves (+{} warm-up), opened at {:.0}/s; 0 live {} after the last drop; RSS {:.1} -> {:.1} MiB ({:+.1}%, slope {:.1} B/session)",
        cfg.warmup_waves,
        verified as f64 / opening_s.max(1e-9),
        zero_last.map_or("-".into(), |t| format!("{t:.2}s")),
        mib(rss_before),
        mib(rss_after),
        100.0 * growth,
        slope
    );
    Ok(Outcome::new("churn", checks, details, summary))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
