//! `sockjs-soak`: soak tests for a running sockjs-gateway, on one thread.
//!
//! ```text
//! sockjs-soak --url http://127.0.0.1:PORT --metrics http://127.0.0.1:PORT/metrics \
//!     [--server-pid PID] [--mode short|full] [--out FILE] [--only churn,noloss,stalled]
//! ```
//!
//! A cluster: `--url` is the balancer, `--metrics` every node's endpoint and
//! `--server-pid` every node's PID, comma-separated; readings are summed.
//!
//! ```text
//! ```
//!
//! Runs the scenarios one after another against the same server (churn,
//! then no loss, then stalled readers, then no loss under attack; see their
//! modules), prints a table of
//! every check and writes the full figures as JSON. Exits 1 when a check
//! failed, 2 on bad usage. bench/soak.sh builds and starts the gateway and
//! drives this.

#[allow(dead_code)]
#[path = "../http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "../ws.rs"]
mod ws;

mod attack;
mod churn;
mod client;
mod metrics;
mod noloss;
mod stalled;

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const USAGE: &str = "\
usage: sockjs-soak --url http://IP:PORT --metrics http://IP:PORT/metrics[,URL...] [options]

  --metrics URLS            the server's /metrics; a cluster: every node's,
                            comma-separated (the readings are summed)
  --server-pid PIDS         read the server's RSS and CPU from /proc/PID (else
                            RSS from /metrics); a cluster: PID,... or LABEL=PID,...
  --mode short|full         the sizes below                                    [short]
  --out FILE                write the results as JSON
  --only LIST               comma-separated subset of churn,noloss,stalled,attack
  --sources K               spread client sockets over 127.0.0.2..(K+1)        [4]
  --disconnect-delay SECS   the server's --disconnect-delay                    [1]
  --send-timeout SECS       the server's --send-timeout                        [10]
  --meta KEY=VALUE          recorded in the JSON (repeatable)
 sizes (short / full):
  --churn-sessions N        sessions opened and abandoned        [2000 / 100000]
  --churn-wave N            sessions per wave                    [500 / 5000]
  --noloss-messages M       messages in all                      [20000 / 1000000]
  --noloss-sessions S       sessions                             [50 / 200]
  --stalled K               stalled readers on /broadcast        [10 / 100]
  --stalled-secs T          phase 2 (with them); phase 1: T/3, >= 3 s [5 / 60]
  --flood-rate R            flood broadcasts per second          [500]
  --flood-size BYTES        flood message size                   [4096]
  --stalled-kinds LIST      stalled transports, in turn          [websocket,xhr-streaming]
  --attack-messages M       no-loss messages, alone then attacked [5000 / 200000]
  --attack-sessions S       no-loss sessions of the attack phase [20 / 100]
  --attack-mib N            bytes per streaming attack, MiB      [4 / 64]
";

/// One pass/fail line of the report.
pub struct Check {
    pub name: String,
    pub measured: String,
    pub limit: String,
    pub ok: bool,
}

impl Check {
    pub fn new(name: &str, measured: String, limit: String, ok: bool) -> Check {
        Check {
            name: name.to_owned(),
            measured,
            limit,
            ok,
        }
    }

    fn json(&self) -> Value {
        json!({ "check": self.name, "measured": self.measured, "limit": self.limit, "ok": self.ok })
    }
}

/// What a scenario returns.
pub struct Outcome {
    pub name: &'static str,
    pub checks: Vec<Check>,
    pub details: Value,
    pub summary: String,
}

impl Outcome {
    pub fn new(name: &'static str, checks: Vec<Check>, details: Value, summary: String) -> Outcome {
        Outcome {
            name,
            checks,
            details,
            summary,
        }
    }

    fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

struct Options {
    url: String,
    metrics: String,
    procs: net::Procs,
    mode: String,
    out: Option<String>,
    only: Vec<String>,
    sources: usize,
    disconnect_delay: Duration,
    send_timeout: Duration,
    meta: Vec<(String, String)>,
    churn_sessions: usize,
    churn_wave: usize,
    noloss_messages: u64,
    noloss_sessions: usize,
    stalled: usize,
    stalled_secs: f64,
    flood_rate: u64,
    flood_size: usize,
    stalled_kinds: Vec<client::Kind>,
    attack_messages: u64,
    attack_sessions: usize,
    attack_mib: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut pairs = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or(format!("unexpected argument {flag}"))?;
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        pairs.push((name.to_owned(), value.clone()));
    }
    let known = [
        "url",
        "metrics",
        "server-pid",
        "mode",
        "out",
        "only",
        "sources",
        "disconnect-delay",
        "send-timeout",
        "meta",
        "churn-sessions",
        "churn-wave",
        "noloss-messages",
        "noloss-sessions",
        "stalled",
        "stalled-secs",
        "flood-rate",
        "flood-size",
        "stalled-kinds",
        "attack-messages",
        "attack-sessions",
        "attack-mib",
    ];
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(format!("unknown flag --{k}"));
    }
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    fn num<T: std::str::FromStr>(v: Option<String>, name: &str, default: T) -> Result<T, String> {
        match v {
            Some(v) => v.parse().map_err(|_| format!("--{name}: bad value {v}")),
            None => Ok(default),
        }
    }
    let mode = get("mode").unwrap_or_else(|| "short".into());
    let full = match mode.as_str() {
        "full" => true,
        "short" => false,
        other => return Err(format!("--mode {other}: short or full")),
    };
    let pick = |short: u64, full_v: u64| if full { full_v } else { short };
    let only: Vec<String> = get("only")
        .unwrap_or_else(|| "churn,noloss,stalled,attack".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    if let Some(bad) = only
        .iter()
        .find(|s| !["churn", "noloss", "stalled", "attack"].contains(&s.as_str()))
    {
        return Err(format!("--only: no scenario {bad}"));
    }
    let secs = |v: f64, name: &str| {
        if (0.0..=3600.0).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("--{name}: out of range"))
        }
    };
    let opts = Options {
        url: get("url").ok_or("--url is required")?,
        metrics: get("metrics").ok_or("--metrics is required")?,
        procs: match get("server-pid") {
            Some(p) => net::Procs::parse(&p).map_err(|e| format!("--server-pid: {e}"))?,
            None => net::Procs::default(),
        },
        out: get("out"),
        only,
        sources: num(get("sources"), "sources", 4)?,
        disconnect_delay: secs(
            num(get("disconnect-delay"), "disconnect-delay", 1.0)?,
            "disconnect-delay",
        )?,
        send_timeout: secs(
            num(get("send-timeout"), "send-timeout", 10.0)?,
            "send-timeout",
        )?,
        meta: pairs
            .iter()
            .filter(|(k, _)| k == "meta")
            .map(|(_, v)| {
                v.split_once('=')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or(format!("--meta {v}: KEY=VALUE"))
            })
            .collect::<Result<_, _>>()?,
        churn_sessions: num(
            get("churn-sessions"),
            "churn-sessions",
            pick(2_000, 100_000) as usize,
        )?,
        churn_wave: num(get("churn-wave"), "churn-wave", pick(500, 5_000) as usize)?,
        noloss_messages: num(
            get("noloss-messages"),
            "noloss-messages",
            pick(20_000, 1_000_000),
        )?,
        noloss_sessions: num(
            get("noloss-sessions"),
            "noloss-sessions",
            pick(50, 200) as usize,
        )?,
        stalled: num(get("stalled"), "stalled", pick(10, 100) as usize)?,
        stalled_secs: num(get("stalled-secs"), "stalled-secs", pick(5, 60) as f64)?,
        flood_rate: num(get("flood-rate"), "flood-rate", 500)?,
        flood_size: num(get("flood-size"), "flood-size", 4_096)?,
        stalled_kinds: get("stalled-kinds")
            .unwrap_or_else(|| "websocket,xhr-streaming".into())
            .split(',')
            .map(|k| match k {
                "websocket" => Ok(client::Kind::Websocket),
                "xhr-streaming" => Ok(client::Kind::XhrStreaming),
                "eventsource" => Ok(client::Kind::EventSource),
                other => Err(format!(
                    "--stalled-kinds: {other}? (websocket, xhr-streaming, eventsource)"
                )),
            })
            .collect::<Result<_, _>>()?,
        attack_messages: num(
            get("attack-messages"),
            "attack-messages",
            pick(5_000, 200_000),
        )?,
        attack_sessions: num(
            get("attack-sessions"),
            "attack-sessions",
            pick(20, 100) as usize,
        )?,
        attack_mib: num(get("attack-mib"), "attack-mib", pick(4, 64) as usize)?,
        mode,
    };
    if opts.churn_wave == 0
        || opts.noloss_sessions == 0
        || opts.noloss_messages == 0
        || opts.attack_sessions == 0
        || opts.attack_messages == 0
    {
        return Err("sizes must be positive".into());
    }
    if !(0.5..=600.0).contains(&opts.stalled_secs) {
        return Err("--stalled-secs: 0.5 to 600".into());
    }
    Ok(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return;
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sockjs-soak: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // A churn wave holds up to one connection per session (plus send and
    // metrics connections); the fd limit bounds the wave size.
    let fd_limit = net::raise_fd_limit(1 << 20);
    let needed = opts.churn_wave as u64 + 1_000;
    if opts.only.iter().any(|s| s == "churn") && fd_limit < needed {
        eprintln!(
            "sockjs-soak: the fd limit is {fd_limit}; a churn wave of {} needs about {needed}",
            opts.churn_wave
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let outcomes = local.block_on(&runtime, run_all(&opts));
    drop(local);
    let ok = outcomes.iter().all(Outcome::ok);

    print_table(&opts, &outcomes, ok);
    let record = json!({
        "mode": opts.mode,
        "ok": ok,
        "wall_s": churn::round3(started.elapsed().as_secs_f64()),
        "finished_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "meta": opts.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "settings": {
            "disconnect_delay_s": opts.disconnect_delay.as_secs_f64(),
            "send_timeout_s": opts.send_timeout.as_secs_f64(),
            "sources": opts.sources,
            "fd_limit": fd_limit,
        },
        "checks": outcomes.iter().flat_map(|o| o.checks.iter().map(move |c| {
            let mut v = c.json();
            v["scenario"] = json!(o.name);
            v
        })).collect::<Vec<_>>(),
        "scenarios": outcomes.iter().map(|o| (o.name.to_owned(), json!({
            "ok": o.ok(),
            "summary": o.summary,
            "checks": o.checks.iter().map(Check::json).collect::<Vec<_>>(),
            "details": o.details,
        }))).collect::<serde_json::Map<String, Value>>(),
    });
    if let Some(path) = &opts.out {
        let text = serde_json::to_string_pretty(&record).expect("JSON") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("sockjs-soak: {path}: {e}");
            std::process::exit(2);
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run_all(opts: &Options) -> Vec<Outcome> {
    let run_id = format!("k{:x}", std::process::id());
    let target = match net::Target::new(&opts.url, opts.sources) {
        Ok(t) => Rc::new(t),
        Err(e) => return vec![failed("setup", e)],
    };
    let mut outcomes = Vec::new();
    for name in ["churn", "noloss", "stalled", "attack"] {
        if !opts.only.iter().any(|s| s == name) {
            continue;
        }
        let metrics = match metrics::Metrics::new(&opts.metrics, opts.procs.clone()) {
            Ok(m) => m,
            Err(e) => {
                outcomes.push(failed(name, e));
                continue;
            }
        };
        let began = Instant::now();
        let cpu_before = (
            opts.procs.cpu_seconds(),
            net::cpu_seconds(None),
            net::system_busy_seconds(),
        );
        eprintln!("soak: {name} ...");
        let result = match name {
            "churn" => {
                churn::run(
                    churn::Config {
                        sessions: opts.churn_sessions,
                        wave: opts.churn_wave,
                        warmup_waves: 4,
                        concurrency: 200,
                        disconnect_delay: opts.disconnect_delay,
                        margin: Duration::from_secs(4),
                        run_id: run_id.clone(),
                    },
                    target.clone(),
                    metrics,
                )
                .await
            }
            "noloss" => {
                noloss::run(
                    noloss::Config {
                        sessions: opts.noloss_sessions,
                        messages: opts.noloss_messages,
                        // From strict request/response to deep pipelines.
                        windows: vec![1, 4, 32, 128],
                        batch: 32,
                        stall: Duration::from_secs(10),
                        bound: Duration::from_secs(if opts.mode == "full" { 420 } else { 40 }),
                        run_id: run_id.clone(),
                    },
                    target.clone(),
                    metrics,
                )
                .await
            }
            "attack" => {
                let (sessions, messages) = (opts.attack_sessions, opts.attack_messages);
                let full = opts.mode == "full";
                attack::run(
                    attack::Config {
                        noloss: Box::new(move |run_id: &str| noloss::Config {
                            sessions,
                            messages,
                            windows: vec![1, 4, 32, 128],
                            batch: 32,
                            stall: Duration::from_secs(10),
                            bound: Duration::from_secs(if full { 300 } else { 40 }),
                            run_id: run_id.to_owned(),
                        }),
                        run_id: run_id.clone(),
                        stream_bytes: opts.attack_mib << 20,
                        requests: if full { 2_000 } else { 100 },
                        empty_bodies: if full { 20 } else { 3 },
                    },
                    target.clone(),
                    &opts.metrics,
                    opts.procs.clone(),
                )
                .await
            }
            _ => {
                let phase2 = Duration::from_secs_f64(opts.stalled_secs);
                stalled::run(
                    stalled::Config {
                        stalled: opts.stalled,
                        stalled_kinds: opts.stalled_kinds.clone(),
                        active: 10,
                        warmup: Duration::from_secs(1),
                        // Long enough for a p99 over some thousand round trips.
                        phase1: (phase2 / 3).max(Duration::from_secs(3)),
                        phase2,
                        active_interval: Duration::from_millis(50),
                        flood_rate: opts.flood_rate,
                        flood_size: opts.flood_size,
                        send_timeout: opts.send_timeout,
                        disconnect_delay: opts.disconnect_delay,
                        rss_base_mib: 64.0,
                        rss_per_stalled_mib: 2.0,
                        run_id: run_id.clone(),
                    },
                    target.clone(),
                    metrics,
                )
                .await
            }
        };
        let mut outcome = result.unwrap_or_else(|e| failed(name, e));
        // CPU over the scenario, in % of one core: the server, this
        // generator, and everything else on the (shared) machine.
        let wall = began.elapsed().as_secs_f64().max(1e-9);
        let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(churn::round3(100.0 * (b - a) / wall)),
            _ => None,
        };
        let server = pct(cpu_before.0, opts.procs.cpu_seconds());
        let own = pct(cpu_before.1, net::cpu_seconds(None));
        let machine = pct(cpu_before.2, net::system_busy_seconds());
        let other = match (machine, server, own) {
            (Some(m), s, Some(g)) => Some(churn::round3((m - s.unwrap_or(0.0) - g).max(0.0))),
            _ => None,
        };
        if let Value::Object(d) = &mut outcome.details {
            d.insert("scenario_wall_s".into(), json!(churn::round3(wall)));
            d.insert(
                "cpu_pct_of_one_core".into(),
                json!({ "server": server, "generator": own, "other_processes": other }),
            );
        }
        if let Some(other) = other {
            outcome.summary += &format!(
                " [CPU: server {:.0}%, generator {:.0}%, other processes {other:.0}%]",
                server.unwrap_or(0.0),
                own.unwrap_or(0.0)
            );
        }
        eprintln!(
            "soak: {name} {} in {:.1}s: {}",
            if outcome.ok() { "passed" } else { "FAILED" },
            began.elapsed().as_secs_f64(),
            outcome.summary
        );
        outcomes.push(outcome);
    }
    outcomes
}

fn failed(name: &'static str, error: String) -> Outcome {
    Outcome::new(
        name,
        vec![Check::new(
            "scenario ran to the end",
            error.clone(),
            "no error".into(),
            false,
        )],
        json!({ "error": error }),
        format!("did not run to the end: {error}"),
    )
}

fn print_table(opts: &Options, outcomes: &[Outcome], ok: bool) {
    println!();
    println!("## sockjs-soak ({} mode)", opts.mode);
    println!();
    println!("| scenario | check | measured | limit | status |");
    println!("|---|---|---|---|---|");
    for o in outcomes {
        for c in &o.checks {
            println!(
                "| {} | {} | {} | {} | {} |",
                o.name,
                c.name,
                c.measured,
                c.limit,
                if c.ok { "ok" } else { "FAILED" }
            );
        }
    }
    println!();
    for o in outcomes {
        println!("- {}: {}", o.name, o.summary);
    }
    println!();
    println!("soak: {}", if ok { "all checks passed" } else { "FAILED" });
}
