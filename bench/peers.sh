#!/usr/bin/env bash
# The peers beside the baseline, measured as bench/run.sh measures the
# gateway: each server pinned to core 0 (one worker; node has one thread),
# the load generator pinned to core 1, interleaved rounds of the baseline,
# the gateway, sockjs-node 0.3.24 (its README's echo service at /echo) and
# sockjs-go v3 (its webecho example's handler, raw WebSockets on), ws-echo
# and raw-ws-echo at 1,000 sessions.
#
#   bench/peers.sh [--rounds R] [--servers LIST] [--out FILE]
#     default: 2 rounds, baseline,gateway,sockjs-node,sockjs-go, bench/peers-results.json
#     (~3 minutes once built). With --servers baseline,gateway it is the
#     at-the-ceiling check repeated: bench/peers.sh --rounds 8 --servers
#     baseline,gateway --out bench/pairs-results.json (~6 minutes).
#
# sockjs-node needs Node.js and npm: sockjs 0.3.24 is installed from npm
# into bench/peers/sockjs-node. sockjs-go 3.0.2 and Go come from Debian's
# packages (installed with apt-get when missing; Go modules are not
# fetched) and the echo is built into the scratch directory. A ratio is
# against the baseline's run of the same round: by messages/s, or by
# server CPU per message when the generator's core was saturated (as in
# bench/run.sh). The summary gives each server's lowest, median and
# highest ratio, and for the gateway how many rounds met the issue's aims
# (0.95 framed, 0.98 raw, p99 at most 1.10x).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ROUNDS=2
OUT=bench/peers-results.json
SERVERS=(baseline gateway sockjs-node sockjs-go)
usage() { echo "usage: bench/peers.sh [--rounds R] [--servers baseline,gateway,...] [--out FILE]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --servers) IFS=, read -r -a SERVERS <<<"$2"; shift ;;
    --out) OUT=$2; shift ;;
    *) usage ;;
  esac
  shift
done
[[ ${SERVERS[0]:-} == baseline && ${#SERVERS[@]} -ge 2 ]] || {
  echo "peers: the baseline comes first, and at least one server after it" >&2
  usage
}
wants() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
for server in "${SERVERS[@]}"; do
  case $server in baseline | gateway | sockjs-node | sockjs-go) ;; *) echo "peers: no server $server" >&2; usage ;; esac
done
if wants sockjs-node; then
  command -v node >/dev/null || { echo "peers: node is needed" >&2; exit 2; }
fi
SOCKJS_GO_SRC=/usr/share/gocode/src/github.com/igm/sockjs-go
if wants sockjs-go && { ! command -v go >/dev/null || [[ ! -d $SOCKJS_GO_SRC ]]; }; then
  echo "peers: installing golang-go and golang-github-igm-sockjs-go-dev (apt-get)..."
  as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    golang-go golang-github-igm-sockjs-go-dev
fi

REL="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-peers.XXXXXX")"
SERVER_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
clean_up_on_exit "peers: logs kept in $WORK"

echo "peers: building (release; the baseline apart, as bench/run.sh does)..."
cargo build --release -p sockjs-gateway --bin sockjs-gateway
cargo build --release -p sockjs-bench --bin sockjs-load --bin baseline-echo
if wants sockjs-node && [[ ! -d bench/peers/sockjs-node/node_modules/sockjs ]]; then
  (cd bench/peers/sockjs-node && npm ci --silent --no-audit --no-fund)
fi
if wants sockjs-go; then
  bench/peers/sockjs-go/build.sh "$WORK/sockjs-go-echo"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# measure SERVER SCENARIO: one run, appended to $WORK/runs.jsonl.
measure() {
  local server=$1 scenario=$2 log="$WORK/$1.log" url="" load_as=(--server "$1")
  local cmd=()
  case $server in
    gateway) cmd=("$REL/sockjs-gateway" --listen 127.0.0.1:0 --workers 1 --config bench/gateway.toml) ;;
    baseline) cmd=("$REL/baseline-echo" --listen 127.0.0.1:0 --workers 1) ;;
    # It speaks SockJS as the gateway does: the generator drives it as one.
    sockjs-node) cmd=(node bench/peers/sockjs-node/server.js 0); load_as=(--server gateway --setup sockjs-node) ;;
    sockjs-go) cmd=("$WORK/sockjs-go-echo" 0); load_as=(--server gateway --setup sockjs-go) ;;
  esac
  taskset -c 0 "${cmd[@]}" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 300); do
    url=$(grep -o -m1 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | sed 's/^listening on //' || true)
    [[ -n $url ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  [[ -n $url ]] || { echo "peers: $server did not start within 30 s" >&2; return 1; }
  taskset -c 1 "$REL/sockjs-load" run --url "$url" "${load_as[@]}" --scenario "$scenario" \
    --sessions 1000 --server-pid "$SERVER_PID" --duration 8 --warmup 1 \
    --out "$WORK/runs.jsonl" >/dev/null
  stop_server
}

for scenario in ws-echo raw-ws-echo; do
  for round in $(seq "$ROUNDS"); do
    for server in "${SERVERS[@]}"; do
      echo "peers: $scenario round $round: $server"
      measure "$server" "$scenario"
    done
  done
done

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$WORK/runs.jsonl" "$OUT" "$COMMIT" "${#SERVERS[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
def kib(b):
    return "–" if b is None else f"{b / 1024:.1f} KiB"
def name(r):
    return r.get("setup") or r["server"]
rows, out = [], {"commit": sys.argv[3], "sessions": 1000, "rounds": []}
for scenario in ("ws-echo", "raw-ws-echo"):
    these = [r for r in runs if r["scenario"] == scenario]
    # Runs come in rounds: the baseline first, then each other server.
    per_round = int(sys.argv[4])
    for i in range(0, len(these), per_round):
        base = these[i]
        for r in these[i + 1:i + per_round]:
            saturated = bool(r.get("generator_saturated") or base.get("generator_saturated"))
            if saturated:
                ratio = base["server_cpu_us_per_op"] / r["server_cpu_us_per_op"]
            else:
                ratio = r["msgs_per_s"] / base["msgs_per_s"]
            entry = {
                "scenario": scenario, "server": name(r), "msgs_per_s": r["msgs_per_s"],
                "baseline_msgs_per_s": base["msgs_per_s"],
                "server_cpu_us_per_op": r["server_cpu_us_per_op"],
                "baseline_server_cpu_us_per_op": base["server_cpu_us_per_op"],
                "generator_saturated": saturated, "ratio": round(ratio, 3),
                "p99_us": r["latency_us"]["p99"], "baseline_p99_us": base["latency_us"]["p99"],
                "rss_per_session_bytes": r.get("rss_per_session_bytes"),
                "baseline_rss_per_session_bytes": base.get("rss_per_session_bytes"),
                "errors": r["errors"], "lost": r["lost"],
            }
            out["rounds"].append(entry)
            rows.append(entry)
print("| scenario | server | msgs/s | baseline msgs/s | ratio | server CPU per op (server / baseline) | p99 (server / baseline) | RSS per session (server / baseline) |")
print("|---|---|---:|---:|---:|---|---|---|")
for e in rows:
    mark = "†" if e["generator_saturated"] else ""
    print(f"| {e['scenario']} | {e['server']} | {e['msgs_per_s']:,.0f} | {e['baseline_msgs_per_s']:,.0f} | "
          f"{e['ratio']:.2f}{mark} | {e['server_cpu_us_per_op']:.1f} / {e['baseline_server_cpu_us_per_op']:.1f} µs | "
          f"{e['p99_us'] / 1000:.1f} / {e['baseline_p99_us'] / 1000:.1f} ms | "
          f"{kib(e['rss_per_session_bytes'])} / {kib(e['baseline_rss_per_session_bytes'])} |")
print()
print("| scenario | server | rounds | lowest | median | highest | rounds meeting the aim |")
print("|---|---|---:|---:|---:|---:|---|")
AIMS = {"ws-echo": 0.95, "raw-ws-echo": 0.98}
summary = []
for scenario in ("ws-echo", "raw-ws-echo"):
    for server in dict.fromkeys(e["server"] for e in rows if e["scenario"] == scenario):
        these = [e for e in rows if e["scenario"] == scenario and e["server"] == server]
        ratios = sorted(e["ratio"] for e in these)
        entry = {"scenario": scenario, "server": server, "rounds": len(these),
                 "lowest": ratios[0], "median": statistics.median(ratios), "highest": ratios[-1]}
        met = "–"
        if server == "gateway":
            entry["met_ratio"] = sum(r >= AIMS[scenario] for r in ratios)
            entry["met_p99"] = sum(e["p99_us"] <= 1.10 * e["baseline_p99_us"] for e in these)
            met = (f"{entry['met_ratio']} of {len(these)} at least {AIMS[scenario]}; "
                   f"{entry['met_p99']} of {len(these)} p99 at most 1.10x")
        summary.append(entry)
        print(f"| {scenario} | {server} | {len(these)} | {ratios[0]:.2f} | {entry['median']:.2f} | "
              f"{ratios[-1]:.2f} | {met} |")
out["summary"] = summary
json.dump(out, open(sys.argv[2], "w"), indent=2)
bad = [e for e in rows if e["errors"] or e["lost"]]
print("peers: errors or loss in", len(bad), "runs")
sys.exit(1 if bad else 0)
PY
echo "peers: written to $OUT"
