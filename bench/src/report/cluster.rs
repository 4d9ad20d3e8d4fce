//! The cluster part of the report: the same scenarios through an nginx
//! round-robin balancer in front of one node (`cluster-1`) and three nodes
//! (`cluster-3`), and the cost of a cross-node hop (`hop-owner` against
//! `hop-forwarded`: one session's requests sent to its owner, or to another
//! node that forwards each of them).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{cpu, errors, keep_medians, latencies, rate, ratio, ORDER};
use crate::stats::round3;

/// The set-ups compared, and what each one is.
const SETUPS: [(&str, &str); 4] = [
    ("cluster-1", "1 node (--redis) behind nginx"),
    ("cluster-3", "3 nodes (--redis) behind nginx, round robin, no stickiness"),
    (
        "hop-owner",
        "3 nodes, no balancer: every request of a session to its owner",
    ),
    (
        "hop-forwarded",
        "3 nodes, no balancer: the session opened at its owner, then every send and poll to another node, which forwards it",
    ),
];

/// Builds the `cluster` section of results.json from the cluster runs.
pub fn section(runs: Vec<Value>) -> Value {
    let all_ok = runs.iter().all(|r| r["ok"].as_bool() == Some(true));
    let (kept, others) = keep_medians(runs, |r| {
        (
            r["setup"].as_str().unwrap_or("?").to_owned(),
            r["scenario"].as_str().unwrap_or("?").to_owned(),
            r["sessions"].as_u64().unwrap_or(0),
        )
    });
    // (scenario order, sessions, scenario) -> setup -> run
    let mut rows: BTreeMap<(usize, u64, String), BTreeMap<String, Value>> = BTreeMap::new();
    for run in &kept {
        let scenario = run["scenario"].as_str().unwrap_or("?").to_owned();
        let order = ORDER
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(ORDER.len());
        rows.entry((order, run["sessions"].as_u64().unwrap_or(0), scenario))
            .or_default()
            .insert(run["setup"].as_str().unwrap_or("?").to_owned(), run.clone());
    }
    let mut comparisons = Vec::new();
    let mut hops = Vec::new();
    for ((_, sessions, scenario), setups) in &rows {
        let (one, three) = (setups.get("cluster-1"), setups.get("cluster-3"));
        if one.is_some() || three.is_some() {
            comparisons.push(json!({
                "scenario": scenario,
                "sessions": sessions,
                "unit": if scenario == "broadcast" { "deliveries/s" } else { "msgs/s" },
                "cluster-1": one.map(brief),
                "cluster-3": three.map(brief),
                "msgs_per_s_3_over_1": match (one, three) {
                    (Some(a), Some(b)) => ratio(&b["msgs_per_s"], &a["msgs_per_s"]),
                    _ => Value::Null,
                },
            }));
        }
        let (owner, forwarded) = (setups.get("hop-owner"), setups.get("hop-forwarded"));
        if let (Some(o), Some(f)) = (owner, forwarded) {
            let added = |q: &str| match (o["latency_us"][q].as_f64(), f["latency_us"][q].as_f64()) {
                (Some(a), Some(b)) => json!(round3(b - a)),
                _ => Value::Null,
            };
            hops.push(json!({
                "scenario": scenario,
                "sessions": sessions,
                "hop-owner": brief(o),
                "hop-forwarded": brief(f),
                "msgs_per_s_forwarded_over_owner": ratio(&f["msgs_per_s"], &o["msgs_per_s"]),
                "added_latency_us": { "p50": added("p50"), "p99": added("p99") },
                "server_cpu_us_per_op_forwarded_over_owner":
                    ratio(&f["server_cpu_us_per_op"], &o["server_cpu_us_per_op"]),
            }));
        }
    }
    json!({
        "all_runs_clean": all_ok,
        "setups": SETUPS.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "comparisons": comparisons,
        "hop": hops,
        "runs": kept,
        "other_runs": others,
    })
}

/// The figures of one run that the comparisons show.
fn brief(run: &Value) -> Value {
    let latency = if run["fanout_ms"].is_object() {
        json!({ "fanout_ms": run["fanout_ms"] })
    } else {
        json!({ "latency_us": run["latency_us"] })
    };
    let mut v = json!({
        "msgs_per_s": run["msgs_per_s"],
        "server_cpu_pct": run["server_cpu_pct"],
        "server_cpu_pct_by_process": run["server_cpu_pct_by_process"],
        "server_cpu_us_per_op": run["server_cpu_us_per_op"],
        "errors": errors(Some(run)),
    });
    if let (Some(o), Value::Object(l)) = (v.as_object_mut(), latency) {
        o.extend(l);
    }
    v
}

/// The markdown tables of the section, and the hop cost in words.
pub fn tables(section: &Value) -> String {
    let runs: Vec<&Value> = section["runs"].as_array().into_iter().flatten().collect();
    let find = |setup: &str, scenario: &str, sessions: &Value| {
        runs.iter().copied().find(|r| {
            r["setup"] == setup && r["scenario"] == scenario && &r["sessions"] == sessions
        })
    };
    let mut t = String::new();
    let comparisons = section["comparisons"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !comparisons.is_empty() {
        t.push_str("Cluster: nginx round robin (no stickiness) in front of 1 or 3 nodes sharing one Redis.\n\n");
        t.push_str("| scenario | sessions | cluster-1 msgs/s | cluster-3 msgs/s | 3/1 | cluster-1 p50/p99/p99.9 | cluster-3 p50/p99/p99.9 | server CPU 1/3 | errors 1/3 |\n");
        t.push_str("|---|---:|---:|---:|---:|---|---|---:|---:|\n");
        for c in &comparisons {
            let scenario = c["scenario"].as_str().unwrap_or("?");
            let one = find("cluster-1", scenario, &c["sessions"]);
            let three = find("cluster-3", scenario, &c["sessions"]);
            let name = if scenario == "broadcast" {
                "broadcast (deliveries/s)"
            } else {
                scenario
            };
            t.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} |\n",
                c["sessions"],
                one.map(|r| rate(&r["msgs_per_s"])).unwrap_or("–".into()),
                three.map(|r| rate(&r["msgs_per_s"])).unwrap_or("–".into()),
                c["msgs_per_s_3_over_1"]
                    .as_f64()
                    .map(|r| format!("{r:.3}"))
                    .unwrap_or("–".into()),
                latencies(one),
                latencies(three),
                cpu(one),
                cpu(three),
                errors(one),
                errors(three),
            ));
        }
    }
    let hops = section["hop"].as_array().cloned().unwrap_or_default();
    if !hops.is_empty() {
        t.push_str("\nCross-node hop: xhr-polling-echo on 3 nodes, no balancer; each session opened at its owner.\n\n");
        t.push_str("| sessions | later requests go to | msgs/s | p50/p99/p99.9 | server CPU | server CPU per echo | errors |\n");
        t.push_str("|---:|---|---:|---|---:|---:|---:|\n");
    }
    let mut costs = String::new();
    for h in &hops {
        let scenario = h["scenario"].as_str().unwrap_or("?");
        let owner = find("hop-owner", scenario, &h["sessions"]);
        let forwarded = find("hop-forwarded", scenario, &h["sessions"]);
        for (what, run) in [
            ("the owner", owner),
            ("another node (forwards each)", forwarded),
        ] {
            t.push_str(&format!(
                "| {} | {what} | {} | {} | {} | {} | {} |\n",
                h["sessions"],
                run.map(|r| rate(&r["msgs_per_s"])).unwrap_or("–".into()),
                latencies(run),
                cpu(run),
                run.and_then(|r| r["server_cpu_us_per_op"].as_f64())
                    .map(|c| format!("{c:.1} µs"))
                    .unwrap_or("–".into()),
                errors(run),
            ));
        }
        let r = h["msgs_per_s_forwarded_over_owner"].as_f64();
        let c = h["server_cpu_us_per_op_forwarded_over_owner"].as_f64();
        let a = &h["added_latency_us"];
        costs.push_str(&format!(
            "Hop cost at {} session(s): rate x{}, server CPU per echo x{}, latency {} µs p50, {} µs p99.\n",
            h["sessions"],
            r.map(|r| format!("{r:.3}")).unwrap_or("–".into()),
            c.map(|c| format!("{c:.2}")).unwrap_or("–".into()),
            a["p50"].as_f64().map(|x| format!("{x:+.0}")).unwrap_or("?".into()),
            a["p99"].as_f64().map(|x| format!("{x:+.0}")).unwrap_or("?".into()),
        ));
    }
    if !costs.is_empty() {
        t.push_str(
            "\n(An echo is one xhr_send and at least one poll: two forwarded requests or more.)\n",
        );
        t.push_str(&costs);
    }
    t
}
