//! `sockjs-load`: a load generator that speaks SockJS itself over real
//! loopback connections, on one thread (pin it to one core).
//!
//! ```text
//! sockjs-load run --url http://127.0.0.1:PORT --server gateway --scenario ws-echo \
//!     --sessions 100 --duration 15 [--server-pid PID[,PID...]] [--out runs.jsonl]
//! sockjs-load report --mode full --runs runs.jsonl --out results.json [--meta key=value]...
//! ```
//!
//! `run` prints one JSON record (and appends it to `--out`); it exits 1 when
//! any message was lost, duplicated or reordered, or any error happened.
//! See bench/README.md for the scenarios; bench/run.sh drives the whole thing.

mod http;
mod net;
mod report;
mod scenarios;
mod stats;
mod ws;

use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use scenarios::{Config, Server};

const USAGE: &str = "\
usage:
  sockjs-load run --url http://IP:PORT --server gateway|baseline --scenario NAME [options]
  sockjs-load report --mode quick|full|cluster --runs FILE --out FILE [--meta KEY=VALUE]...

report: runs with a --setup go to the \"cluster\" section of the file;
  --mode cluster replaces only that section, --mode full keeps it as it was

scenarios: ws-echo, raw-ws-echo, xhr-streaming-echo, xhr-polling-echo,
           broadcast, idle-websocket, idle-polling, connect-rate

run options:
  --sessions N       sessions (connect-rate: concurrent open/close loops)   [100]
  --duration SECS    measured time                                          [10]
  --warmup SECS      unmeasured time before it                              [1]
  --server-pid PIDS  read the server's CPU and RSS from /proc/PID; a cluster
                     gives every process, comma-separated, each PID or
                     LABEL=PID: the figures are summed (and CPU per label)
  --sources K        spread connections over 127.0.0.2..127.0.0.(K+1)       [0]
  --size BYTES       message size                                           [32]
  --messages N       echo scenarios: each session echoes exactly N messages,
                     then the run ends (for instruction counts: see
                     bench/instructions.sh); the duration is then unused
  --repeat R         broadcast rounds                                       [50]
  --hold SECS        idle: how long sessions are held before the reading    [2]
  --concurrency C    opens in flight during setup                           [200]
  --out FILE         append the JSON record to FILE
  --quiet-wait SECS  first wait up to SECS for other processes to go quiet  [0]
  --quiet-threshold PCT  ... i.e. below PCT% of one core                    [15]
  --noisy-above PCT  exit 3 (after writing the record) when other processes
                     used more than PCT% of a core during the measurement
  --hop-url URL      xhr scenarios: open each session at --url, then send
                     every later request of it (sends, receivers) to URL
                     (another cluster node: each request is forwarded)
  --setup NAME       name of the set-up measured (e.g. cluster-3), recorded
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("report") => report(&args[1..]),
        Some("-h" | "--help") => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprint!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

/// `--flag value` pairs; a repeated flag keeps every value.
fn flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {flag}"));
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        out.push((flag[2..].to_owned(), value.clone()));
    }
    Ok(out)
}

fn get<'a>(flags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(
    flags: &[(String, String)],
    name: &str,
    default: T,
) -> Result<T, String> {
    match get(flags, name) {
        Some(v) => v.parse().map_err(|_| format!("--{name}: bad value {v}")),
        None => Ok(default),
    }
}

fn seconds(flags: &[(String, String)], name: &str, default: f64) -> Result<Duration, String> {
    let s: f64 = number(flags, name, default)?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("--{name}: out of range"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn run(args: &[String]) -> i32 {
    let cfg = match parse_run(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sockjs-load: {e}\n\n{USAGE}");
            return 2;
        }
    };
    let f = flags(args).unwrap_or_default();
    let out = get(&f, "out").map(str::to_owned);
    let noisy_above: Option<f64> = get(&f, "noisy-above").and_then(|v| v.parse().ok());
    let (quiet_wait, quiet_threshold) = match (
        seconds(&f, "quiet-wait", 0.0),
        number(&f, "quiet-threshold", 15.0f64),
    ) {
        (Ok(w), Ok(t)) => (w, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sockjs-load: {e}");
            return 2;
        }
    };
    // One fd per client connection: xhr sessions hold two (receiver, sender);
    // idle polling sessions hold none (a few keep-alive connections serve them).
    let connections = match cfg.scenario.as_str() {
        "idle-polling" => cfg.concurrency,
        s if s.starts_with("xhr") => 2 * cfg.sessions.max(cfg.concurrency),
        _ => cfg.sessions.max(cfg.concurrency),
    };
    let needed = connections as u64 + 256;
    let limit = net::raise_fd_limit(needed + 4096);
    if limit < needed {
        eprintln!("sockjs-load: the fd limit is {limit}, this run needs about {needed}");
        return 2;
    }
    let label = format!("{} {} @{}", cfg.server.name(), cfg.scenario, cfg.sessions);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let cfg = Rc::new(cfg);
    let quiet = (quiet_wait, quiet_threshold);
    let result = local.block_on(&runtime, async move {
        let (waited, other) = wait_for_quiet(&cfg.server_procs, quiet.0, quiet.1).await;
        scenarios::run(cfg).await.map(|mut record| {
            record["quiet_wait_s"] = serde_json::json!(stats::round3(waited));
            record["other_cpu_pct_before"] = serde_json::json!(other.map(stats::round3));
            record
        })
    });
    // Tasks that still hold sockets go with the runtime, not one by one.
    drop(local);
    let record = match result {
        Ok(record) => record,
        Err(e) => {
            eprintln!("sockjs-load: {label}: {e}");
            return 2;
        }
    };
    let line = serde_json::to_string(&record).expect("JSON");
    println!("{line}");
    if let Some(path) = out {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("sockjs-load: {path}: {e}");
            return 2;
        }
    }
    eprintln!("{}", summary(&label, &record));
    if record["ok"].as_bool() != Some(true) {
        eprintln!("sockjs-load: {label}: FAILED: {}", record["error_samples"]);
        return 1;
    }
    match (noisy_above, record["other_cpu_pct"].as_f64()) {
        (Some(limit), Some(other)) if other > limit => {
            eprintln!(
                "sockjs-load: {label}: other processes used {other:.0}% of a core meanwhile: noisy"
            );
            3
        }
        _ => 0,
    }
}

/// Waits (at most `max`) until other processes use less than `threshold`
/// percent of a core over one second: the machine is shared, and a compile
/// next door would be measured as the server's slowness. Returns the time
/// waited and the last reading.
async fn wait_for_quiet(server: &net::Procs, max: Duration, threshold: f64) -> (f64, Option<f64>) {
    let started = std::time::Instant::now();
    if max.is_zero() {
        return (0.0, None);
    }
    loop {
        let other = net::other_cpu_pct(server, Duration::from_secs(1)).await;
        match other {
            Some(o) if o < threshold => return (started.elapsed().as_secs_f64(), Some(o)),
            None => return (started.elapsed().as_secs_f64(), None),
            Some(o) if started.elapsed() >= max => {
                eprintln!("sockjs-load: machine still busy ({o:.0}% of a core used by other processes); measuring anyway");
                return (started.elapsed().as_secs_f64(), Some(o));
            }
            Some(_) => {}
        }
    }
}

fn summary(label: &str, r: &serde_json::Value) -> String {
    let l = &r["latency_us"];
    let f = &r["fanout_ms"];
    let latency = if !f.is_null() {
        format!(
            "fan-out p50 {} p99 {} max {} ms",
            f["p50"], f["p99"], f["max"]
        )
    } else if !l.is_null() {
        format!("p50 {} p99 {} p99.9 {} µs", l["p50"], l["p99"], l["p99_9"])
    } else {
        String::new()
    };
    format!(
        "{label}: {} /s, {latency}, server CPU {}%, generator CPU {}%, other CPU {}%, RSS {} -> {} KiB ({} B/session), errors {} lost {} dup {} reorder {} conflicts {}",
        r["msgs_per_s"],
        r["server_cpu_pct"],
        r["generator_cpu_pct"],
        r["other_cpu_pct"],
        r["server_rss_kib_before"],
        r["server_rss_kib_after"],
        r["rss_per_session_bytes"],
        r["errors"],
        r["lost"],
        r["duplicated"],
        r["reordered"],
        r["receiver_conflicts"],
    )
}

fn parse_run(args: &[String]) -> Result<Config, String> {
    let f = flags(args)?;
    let known = [
        "url",
        "server",
        "scenario",
        "sessions",
        "duration",
        "warmup",
        "server-pid",
        "sources",
        "size",
        "messages",
        "repeat",
        "hold",
        "concurrency",
        "out",
        "quiet-wait",
        "quiet-threshold",
        "noisy-above",
        "hop-url",
        "setup",
    ];
    if let Some((k, _)) = f.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(format!("unknown flag --{k}"));
    }
    let url = get(&f, "url").ok_or("--url is required")?;
    let server = match get(&f, "server").ok_or("--server is required")? {
        "gateway" => Server::Gateway,
        "baseline" => Server::Baseline,
        other => return Err(format!("--server {other}: gateway or baseline")),
    };
    let scenario = get(&f, "scenario")
        .ok_or("--scenario is required")?
        .to_owned();
    let sources = number(&f, "sources", 0usize)?;
    let size = number(&f, "size", 32usize)?;
    if !(16..=65_536).contains(&size) {
        return Err("--size: 16 to 65536".into());
    }
    let server_procs = match get(&f, "server-pid") {
        Some(p) => net::Procs::parse(p).map_err(|e| format!("--server-pid: {e}"))?,
        None => net::Procs::default(),
    };
    let scenario_echoes = scenario.ends_with("echo");
    let hop = match get(&f, "hop-url") {
        Some(_) if !scenario.starts_with("xhr-") => {
            return Err("--hop-url: only for the xhr scenarios".into())
        }
        Some(u) => Some(Rc::new(net::Target::new(u, sources)?)),
        None => None,
    };
    Ok(Config {
        target: Rc::new(net::Target::new(url, sources)?),
        server,
        scenario,
        sessions: number(&f, "sessions", 100usize)?,
        duration: seconds(&f, "duration", 10.0)?,
        warmup: seconds(&f, "warmup", 1.0)?,
        server_procs,
        hop,
        setup: get(&f, "setup").map(str::to_owned),
        size,
        messages: match get(&f, "messages") {
            Some(_) if !scenario_echoes => {
                return Err("--messages: only for the echo scenarios".into())
            }
            Some(_) => Some(number(&f, "messages", 0u64)?).filter(|&n| n > 0),
            None => None,
        },
        repeat: number(&f, "repeat", 50usize)?,
        hold: seconds(&f, "hold", 2.0)?,
        concurrency: number(&f, "concurrency", 200usize)?,
        run_id: format!("r{:x}", std::process::id()),
    })
}

fn report(args: &[String]) -> i32 {
    let parsed = (|| -> Result<report::Options, String> {
        let f = flags(args)?;
        let meta = f
            .iter()
            .filter(|(k, _)| k == "meta")
            .map(|(_, v)| {
                v.split_once('=')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or(format!("--meta {v}: expected KEY=VALUE"))
            })
            .collect::<Result<_, _>>()?;
        Ok(report::Options {
            mode: get(&f, "mode").unwrap_or("full").to_owned(),
            runs: get(&f, "runs").ok_or("--runs is required")?.to_owned(),
            out: get(&f, "out").ok_or("--out is required")?.to_owned(),
            meta,
        })
    })();
    match parsed.and_then(|o| report::report(&o)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("sockjs-load report: {e}");
            2
        }
    }
}
