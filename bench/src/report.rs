//! `sockjs-load report`: gathers the run records (one JSON object per line)
//! into results.json with gateway/baseline ratios and the targets, and prints
//! the markdown table; cluster runs (those with a `setup`) go to its
//! `cluster` section (`cluster.rs`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::stats::round3;

mod cluster;

/// Runs during which other processes used more than this (percent of a
/// core) are set aside when a quieter run of the same scenario exists.
const QUIET_PCT: f64 = 20.0;

/// Scenario order in the table.
const ORDER: [&str; 9] = [
    "ws-echo",
    "raw-ws-echo",
    "xhr-streaming-echo",
    "xhr-streaming-echo-128k",
    "xhr-polling-echo",
    "broadcast",
    "idle-websocket",
    "idle-polling",
    "connect-rate",
];

pub struct Options {
    pub mode: String,
    pub runs: String,
    pub out: String,
    pub meta: Vec<(String, String)>,
}

pub fn report(opts: &Options) -> Result<bool, String> {
    let text = std::fs::read_to_string(&opts.runs).map_err(|e| format!("{}: {e}", opts.runs))?;
    let all_runs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", opts.runs))?;
    // Cluster runs carry the name of their set-up (cluster-1, hop-owner...).
    let (cluster_runs, single_runs): (Vec<Value>, Vec<Value>) =
        all_runs.into_iter().partition(|r| r["setup"].is_string());
    let all_ok = cluster_runs
        .iter()
        .chain(&single_runs)
        .all(|r| r["ok"].as_bool() == Some(true));
    let mut meta = Map::new();
    for (k, v) in &opts.meta {
        meta.insert(k.clone(), json!(v));
    }
    let mut machine = machine();
    if let (Some(m), Some(date)) = (machine.as_object_mut(), meta.remove("date")) {
        m.insert("date".into(), date);
    }
    let cluster = if cluster_runs.is_empty() {
        None
    } else {
        Some(cluster::section(cluster_runs))
    };

    // --mode cluster measures the cluster alone: only the "cluster" part of
    // the file is replaced. The full run measures no cluster: it keeps the
    // "cluster" part the file had.
    let previous: Option<Value> = std::fs::read_to_string(&opts.out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object);
    let results = if opts.mode == "cluster" {
        let mut section = cluster.clone().unwrap_or(json!({}));
        section["machine"] = machine;
        section["meta"] = Value::Object(meta);
        let mut results = previous.unwrap_or_else(|| json!({}));
        results["cluster"] = section;
        results
    } else {
        let (runs, discarded) = keep_medians(single_runs, |r| {
            (
                r["server"].as_str().unwrap_or("?").to_owned(),
                r["scenario"].as_str().unwrap_or("?").to_owned(),
                r["sessions"].as_u64().unwrap_or(0),
            )
        });
        let rows = single_rows(&runs);
        let targets = targets(&rows);
        print_single(opts, &rows, &targets);
        let mut results = json!({
            "mode": opts.mode,
            "machine": machine,
            "meta": meta,
            "all_runs_clean": all_ok,
            "ratios_gateway_over_baseline": comparisons(&rows),
            "targets": targets,
            "runs": runs,
            "other_runs": discarded,
        });
        match (&cluster, previous.as_ref().map(|p| &p["cluster"])) {
            (Some(c), _) => results["cluster"] = c.clone(),
            (None, Some(old)) if !old.is_null() => results["cluster"] = old.clone(),
            _ => {}
        }
        results
    };
    if let Some(c) = &cluster {
        println!();
        print!("{}", cluster::tables(c));
    }
    let pretty = serde_json::to_string_pretty(&results).expect("JSON");
    std::fs::write(&opts.out, pretty + "\n").map_err(|e| format!("{}: {e}", opts.out))?;
    println!();
    println!(
        "All runs free of loss, duplication, reordering and errors: {}",
        if all_ok { "yes" } else { "NO" }
    );
    println!("Written to {}", opts.out);
    Ok(all_ok)
}

/// Several runs of one measurement (repetitions, or re-runs because the
/// machine was busy): among the quiet ones (or, if none is quiet, the
/// quietest), keeps the run with the median rate, with the spread of rates;
/// returns the kept runs and the others.
fn keep_medians<K: Ord>(all: Vec<Value>, key: impl Fn(&Value) -> K) -> (Vec<Value>, Vec<Value>) {
    let mut groups: BTreeMap<K, Vec<Value>> = BTreeMap::new();
    for run in all {
        groups.entry(key(&run)).or_default().push(run);
    }
    let noise = |r: &Value| r["other_cpu_pct"].as_f64().unwrap_or(0.0);
    let rate = |r: &Value| r["msgs_per_s"].as_f64().unwrap_or(0.0);
    let mut runs = Vec::new();
    let mut discarded = Vec::new();
    for (_, group) in groups {
        let (mut quiet, noisy): (Vec<Value>, Vec<Value>) =
            group.into_iter().partition(|r| noise(r) <= QUIET_PCT);
        let mut candidates = if quiet.is_empty() {
            let mut all = noisy;
            all.sort_by(|a, b| noise(a).total_cmp(&noise(b)));
            let rest = all.split_off(1);
            discarded.extend(rest);
            all
        } else {
            discarded.extend(noisy);
            std::mem::take(&mut quiet)
        };
        candidates.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        let rates: Vec<f64> = candidates.iter().map(rate).collect();
        let mut median = candidates.remove((candidates.len() - 1) / 2);
        if rates.len() > 1 {
            median["repetitions_msgs_per_s"] = json!(rates);
        }
        discarded.extend(candidates);
        runs.push(median);
    }
    (runs, discarded)
}

/// (scenario order, sessions, scenario) -> server -> record
fn single_rows(runs: &[Value]) -> Rows {
    let mut rows: Rows = BTreeMap::new();
    for run in runs {
        let scenario = run["scenario"].as_str().unwrap_or("?").to_owned();
        let order = ORDER
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(ORDER.len());
        let sessions = run["sessions"].as_u64().unwrap_or(0);
        let server = run["server"].as_str().unwrap_or("?").to_owned();
        rows.entry((order, sessions, scenario))
            .or_default()
            .insert(server, run.clone());
    }
    rows
}

fn comparisons(rows: &Rows) -> Vec<Value> {
    let mut comparisons = Vec::new();
    for ((_, sessions, scenario), servers) in rows {
        let g = servers.get("gateway");
        let b = servers.get("baseline");
        let mut c = Map::new();
        c.insert("scenario".into(), json!(scenario));
        c.insert("sessions".into(), json!(sessions));
        if let (Some(g), Some(b)) = (g, b) {
            c.insert(
                "msgs_per_s".into(),
                ratio(&g["msgs_per_s"], &b["msgs_per_s"]),
            );
            for q in ["p50", "p99", "p99_9"] {
                c.insert(
                    format!("latency_{q}"),
                    ratio(&g["latency_us"][q], &b["latency_us"][q]),
                );
            }
            c.insert(
                "rss_per_session".into(),
                ratio(&g["rss_per_session_bytes"], &b["rss_per_session_bytes"]),
            );
            c.insert(
                "server_cpu_pct".into(),
                json!([g["server_cpu_pct"], b["server_cpu_pct"]]),
            );
            c.insert(
                "server_cpu_us_per_op".into(),
                json!([g["server_cpu_us_per_op"], b["server_cpu_us_per_op"]]),
            );
            c.insert(
                "generator_saturated".into(),
                json!([g["generator_saturated"], b["generator_saturated"]]),
            );
            c.insert(
                "from_cpu_per_op".into(),
                ratio(&b["server_cpu_us_per_op"], &g["server_cpu_us_per_op"]),
            );
            let (r, from) = compared(g, b);
            c.insert("ratio".into(), json!(r));
            c.insert("ratio_from".into(), json!(from));
        }
        comparisons.push(Value::Object(c));
    }
    comparisons
}

fn print_single(opts: &Options, rows: &Rows, targets: &Value) {
    println!("{}", table(rows));
    println!();
    println!(
        "Targets ({}):",
        if opts.mode == "full" {
            "full run"
        } else {
            "quick run: informational only, counts are small"
        }
    );
    println!();
    println!("| target | measured | status |");
    println!("|---|---|---|");
    for t in targets.as_array().into_iter().flatten() {
        println!(
            "| {} | {} | {} |",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
            if t["met"].as_bool() == Some(true) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}

/// Whether the generator's core was saturated in this run (its rate then
/// measures the generator).
fn saturated(run: &Value) -> bool {
    run["generator_saturated"].as_bool() == Some(true)
}

/// The gateway's standing against the baseline: the ratio of rates when
/// both runs measured the server, else the ratio of the server's CPU per
/// operation (baseline over gateway: above 1, the gateway does more with
/// the same CPU); and which of the two it is.
fn compared(g: &Value, b: &Value) -> (Option<f64>, &'static str) {
    if saturated(g) || saturated(b) {
        (
            ratio(&b["server_cpu_us_per_op"], &g["server_cpu_us_per_op"]).as_f64(),
            "server CPU per op (generator saturated)",
        )
    } else {
        (ratio(&g["msgs_per_s"], &b["msgs_per_s"]).as_f64(), "msgs/s")
    }
}

fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b != 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    }
}

type Rows = BTreeMap<(usize, u64, String), BTreeMap<String, Value>>;

fn targets(rows: &Rows) -> Value {
    let mut out = Vec::new();
    let mut add = |target: String, measured: String, met: bool| {
        out.push(json!({ "target": target, "measured": measured, "met": met }));
    };
    for ((_, sessions, scenario), servers) in rows {
        let g = servers.get("gateway");
        let b = servers.get("baseline");
        let r = |field: &str| match (g, b) {
            (Some(g), Some(b)) => ratio(&g[field], &b[field]).as_f64(),
            _ => None,
        };
        let gf = |path: &[&str]| {
            let mut v = g?;
            for p in path {
                v = &v[*p];
            }
            v.as_f64()
        };
        let standing = match (g, b) {
            (Some(g), Some(b)) => compared(g, b),
            _ => (None, ""),
        };
        let mut against_baseline = |what: &str, floor: f64| {
            if let (Some(x), from) = standing {
                add(
                    format!("{what} @{sessions}: ≥ {floor:.2}x baseline"),
                    format!("{x:.3}x ({from})"),
                    x >= floor,
                );
            }
        };
        match scenario.as_str() {
            "ws-echo" => {
                against_baseline("ws-echo", 0.95);
                if let (Some(g), Some(b)) = (g, b) {
                    let p99 = ratio(&g["latency_us"]["p99"], &b["latency_us"]["p99"]).as_f64();
                    if let Some(p99) = p99 {
                        add(
                            format!("ws-echo @{sessions}: p99 ≤ 1.10x baseline"),
                            format!("{p99:.3}x"),
                            p99 <= 1.10,
                        );
                    }
                }
            }
            "raw-ws-echo" => against_baseline("raw-ws-echo", 0.98),
            "connect-rate" => against_baseline("connect-rate (sessions/s)", 0.90),
            "idle-websocket" => {
                if let Some(rss) = r("rss_per_session_bytes") {
                    add(
                        format!("idle WebSocket @{sessions}: RSS/session ≤ 1.1x baseline"),
                        format!(
                            "{rss:.3}x ({} vs {})",
                            bytes(g.map(|g| &g["rss_per_session_bytes"])),
                            bytes(b.map(|b| &b["rss_per_session_bytes"]))
                        ),
                        rss <= 1.1,
                    );
                }
                if let Some(g) = g {
                    let held = g["held"].as_u64().unwrap_or(0);
                    let verified = g["verified_after_hold"].as_u64().unwrap_or(0);
                    add(
                        format!("idle WebSocket: all {sessions} sessions held and verified"),
                        format!("{held} held, {verified} verified after holding"),
                        held == *sessions && verified == *sessions,
                    );
                }
            }
            "idle-polling" => {
                if let Some(rss) = gf(&["rss_per_session_bytes"]) {
                    add(
                        format!("idle polling @{sessions}: RSS/session < 2 KiB"),
                        format!("{rss:.0} B"),
                        rss < 2048.0,
                    );
                }
            }
            "xhr-streaming-echo" | "xhr-streaming-echo-128k" | "xhr-polling-echo" => {
                let floor = if scenario.starts_with("xhr-streaming") {
                    40_000.0
                } else {
                    30_000.0
                };
                if let (Some(rate), Some(g)) = (gf(&["msgs_per_s"]), g) {
                    let conflicts = g["receiver_conflicts"].as_u64().unwrap_or(0);
                    add(
                        format!(
                            "{scenario} @{sessions}: ≥ {floor:.0} msg/s, no receiver conflicts"
                        ),
                        format!("{rate:.0} msg/s, {conflicts} conflicts"),
                        rate >= floor && conflicts == 0,
                    );
                }
            }
            "broadcast" => {
                if let Some(p99) = gf(&["fanout_ms", "p99"]) {
                    add(
                        format!("broadcast to {sessions}: fan-out p99 < 100 ms"),
                        format!("{p99:.1} ms"),
                        p99 < 100.0,
                    );
                }
            }
            _ => {}
        }
    }
    Value::Array(out)
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let mem_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    json!({
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "mem_gib": mem_kib.map(|k| round3(k as f64 / 1048576.0)),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

fn rate(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => {
            let n = x.round() as u64;
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        None => "–".into(),
    }
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn latencies(run: Option<&Value>) -> String {
    let Some(run) = run else { return "–".into() };
    if let Some(f) = run["fanout_ms"].as_object() {
        let g = |k: &str| {
            f.get(k)
                .and_then(Value::as_f64)
                .map(num)
                .unwrap_or("?".into())
        };
        let cpu = &run["round_cpu_ms"];
        let split = match (cpu["user"].as_f64(), cpu["kernel"].as_f64()) {
            (Some(u), Some(k)) => {
                format!("; CPU per round {} ms user + {} ms kernel", num(u), num(k))
            }
            _ => String::new(),
        };
        return format!(
            "{}/{}/{} ms (fan-out p50/p99/max){split}",
            g("p50"),
            g("p99"),
            g("max")
        );
    }
    let l = &run["latency_us"];
    if l.is_null() {
        return "–".into();
    }
    let g = |k: &str| l[k].as_f64().map(num).unwrap_or("?".into());
    format!("{}/{}/{} µs", g("p50"), g("p99"), g("p99_9"))
}

fn bytes(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(b) if b.abs() >= 1024.0 => format!("{:.2} KiB", b / 1024.0),
        Some(b) => format!("{b:.0} B"),
        None => "–".into(),
    }
}

/// The server's CPU share and CPU per operation: `98% 9.4 µs`.
fn cpu(v: Option<&Value>) -> String {
    let Some(r) = v else { return "–".into() };
    match (
        r["server_cpu_pct"].as_f64(),
        r["server_cpu_us_per_op"].as_f64(),
    ) {
        (Some(c), Some(op)) => format!("{c:.0}% {} µs", num(op)),
        (Some(c), None) => format!("{c:.0}%"),
        _ => "–".into(),
    }
}

fn errors(v: Option<&Value>) -> String {
    match v {
        Some(r) => {
            let n = ["errors", "lost", "duplicated", "reordered", "corrupt"]
                .iter()
                .map(|k| r[*k].as_u64().unwrap_or(0))
                .sum::<u64>();
            let conflicts = r["receiver_conflicts"].as_u64().unwrap_or(0);
            if conflicts > 0 {
                format!("{n} ({conflicts} c2010)")
            } else {
                n.to_string()
            }
        }
        None => "–".into(),
    }
}

fn table(rows: &Rows) -> String {
    let mut t = String::new();
    t.push_str("| scenario | sessions | gateway msgs/s | baseline msgs/s | ratio | server CPU, per op gw / bl | gateway p50/p99/p99.9 | baseline p50/p99/p99.9 | gateway RSS/session | baseline RSS/session | errors gw/bl |\n");
    t.push_str("|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|\n");
    for ((_, sessions, scenario), servers) in rows {
        let g = servers.get("gateway");
        let b = servers.get("baseline");
        let name = match scenario.as_str() {
            "connect-rate" => "connect-rate (sessions/s)".to_owned(),
            "broadcast" => "broadcast (deliveries/s)".to_owned(),
            "idle-websocket" | "idle-polling" => format!("{scenario} (setup sessions/s)"),
            s => s.to_owned(),
        };
        // † : the generator's core was saturated; the ratio is then that of
        // the server's CPU per operation.
        let ratio_text = match (g, b) {
            (Some(g), Some(b)) => match compared(g, b) {
                (Some(r), "msgs/s") => format!("{r:.3}"),
                (Some(r), _) => format!("{r:.3}†"),
                (None, _) => "–".into(),
            },
            _ => "–".into(),
        };
        let mark = |r: &Value| if saturated(r) { "†" } else { "" };
        let rss = |r: Option<&Value>| match r {
            Some(r) if scenario.starts_with("idle") => bytes(Some(&r["rss_per_session_bytes"])),
            Some(r) if !r["rss_per_session_bytes"].is_null() => {
                format!("({})", bytes(Some(&r["rss_per_session_bytes"])))
            }
            _ => "–".into(),
        };
        let gm = g
            .map(|g| format!("{}{}", rate(&g["msgs_per_s"]), mark(g)))
            .unwrap_or("–".into());
        let bm = b
            .map(|b| format!("{}{}", rate(&b["msgs_per_s"]), mark(b)))
            .unwrap_or("–".into());
        t.push_str(&format!(
            "| {name} | {sessions} | {gm} | {bm} | {ratio_text} | {} / {} | {} | {} | {} | {} | {}/{} |\n",
            cpu(g),
            cpu(b),
            latencies(g),
            latencies(b),
            rss(g),
            rss(b),
            errors(g),
            errors(b),
        ));
    }
    if rows.values().flatten().any(|(_, r)| saturated(r)) {
        t.push_str("\n† the generator's core was saturated in this run: its rate measures the generator; the ratio is the baseline's server CPU per operation over the gateway's.\n");
    }
    t
}
