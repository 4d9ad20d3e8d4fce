#!/usr/bin/env bash
# The sockjs-gateway benchmark: the gateway against a bare actix-ws echo
# server (baseline-echo), each pinned to core 0 with one worker, the load
# generator (sockjs-load) pinned to core 1; and the gateway in cluster mode
# (redis-server, 1 or 3 nodes, an nginx round-robin balancer, all on core 0).
#
#   bench/run.sh           full run    -> bench/results.json       (~10 minutes on a quiet machine)
#   bench/run.sh --cluster cluster run -> bench/results.json, its "cluster" section (~7 minutes)
#   bench/run.sh --quick   quick run, both kinds, small -> bench/results-quick.json (~1 minute once built)
#
# Every scenario gets fresh server processes, started here and stopped here by
# PID (also on failure or Ctrl-C). The quick run is the "does the benchmark
# still work" check: it fails on any lost, duplicated or reordered message or
# any error, never on speed. The full and cluster runs also fail on those, and
# wait for the machine to be quiet before each measurement (other work on a
# 2-core machine would be measured as the server's slowness).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=full
case "${1:-}" in
  "") ;;
  --quick) MODE=quick ;;
  --cluster) MODE=cluster ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "usage: bench/run.sh [--quick | --cluster]" >&2; exit 2 ;;
esac

if [[ $MODE == quick ]]; then
  OUT=bench/results-quick.json
else
  OUT=bench/results.json
fi
# Where cargo put the binaries (CARGO_TARGET_DIR when set, as cargo does).
REL="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-bench.XXXXXX")"
RUNS="$WORK/runs.jsonl"
SERVER_PID=""
FAILED=()
NOISY=()
# Runs of one measurement before it is kept although the machine was busy.
ATTEMPTS=4
# Every server-side process of a cluster shares core 0, as the one gateway does.
PIN=(taskset -c 0)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if [[ $MODE != full ]]; then
  require_cluster_tools bench
fi

clean_up_on_exit "bench: logs kept in $WORK"

# ---------------------------------------------------------------- limits
# Large idle runs need one fd per connection on each side. Only the soft
# limit can be raised without CAP_SYS_RESOURCE; the hard one caps N.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
if [[ $FD_LIMIT == unlimited ]]; then FD_LIMIT=1048576; fi
IDLE_WS_WANTED=100000
IDLE_WS=$IDLE_WS_WANTED
if (( FD_LIMIT - 2000 < IDLE_WS )); then
  IDLE_WS=$(( (FD_LIMIT - 2000) / 1000 * 1000 ))
  if [[ $MODE == full ]]; then
    echo "bench: RLIMIT_NOFILE is $FD_LIMIT here (hard limit, not raisable without CAP_SYS_RESOURCE):"
    echo "bench: the idle WebSocket scenario runs with $IDLE_WS sessions instead of $IDLE_WS_WANTED."
  fi
fi

# ---------------------------------------------------------------- build
BUILD_START=$(date +%s.%N)
if [[ $MODE == cluster ]]; then
  echo "bench: building sockjs-gateway and sockjs-load (release)..."
  cargo build --release -p sockjs-gateway --bin sockjs-gateway
  cargo build --release -p sockjs-bench --bin sockjs-load
else
  echo "bench: building sockjs-gateway, baseline-echo and sockjs-load (release)..."
  # Two invocations: built together, cargo would unify actix-web's features
  # and hand the baseline the gateway's HTTP/2 and TLS support, which a bare
  # actix-ws echo does not have (and which costs every connection memory).
  cargo build --release -p sockjs-gateway --bin sockjs-gateway
  cargo build --release -p sockjs-bench --bin sockjs-load --bin baseline-echo
fi
BUILD_S=$(awk -v a="$BUILD_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "bench: build took ${BUILD_S}s"

# ---------------------------------------------------------------- helpers
URL=""
start_server() { # name, then server flags
  local name=$1; shift
  local bin log
  case $name in
    gateway) bin=$REL/sockjs-gateway; set -- --config "$ROOT/bench/gateway.toml" "$@" ;;
    baseline) bin=$REL/baseline-echo ;;
  esac
  log="$WORK/$name-$(date +%s%N).log"
  taskset -c 0 "$bin" --listen 127.0.0.1:0 --workers 1 "$@" 2>"$log" &
  SERVER_PID=$!
  URL=""
  for _ in $(seq 200); do
    URL=$(grep -o -m1 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | sed 's/^listening on //' || true)
    [[ -n $URL ]] && return 0
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "bench: $name exited at startup:" >&2
      cat "$log" >&2
      SERVER_PID=""
      return 1
    fi
    sleep 0.05
  done
  echo "bench: $name did not say where it listens within 10 s" >&2
  return 1
}

# run SERVER SCENARIO SESSIONS [sockjs-load flags...]
run() {
  local server=$1 scenario=$2 sessions=$3; shift 3
  local server_flags=()
  if [[ $server == gateway && $scenario == idle-* ]]; then
    # Held sessions must outlive the hold: no disconnect, and no heartbeats
    # (the baseline sends none either).
    server_flags=(--disconnect-delay 600s --heartbeat-delay 600s)
  fi
  local attempt status
  for attempt in $(seq "$ATTEMPTS"); do
    echo
    if (( attempt == 1 )); then
      echo "== $server $scenario, $sessions sessions"
    else
      echo "== $server $scenario, $sessions sessions (attempt $attempt)"
    fi
    start_server "$server" "${server_flags[@]}"
    status=0
    taskset -c 1 "$REL/sockjs-load" run --url "$URL" --server "$server" \
      --scenario "$scenario" --sessions "$sessions" --server-pid "$SERVER_PID" \
      --out "$RUNS" "${COMMON[@]}" "$@" >/dev/null || status=$?
    stop_server
    # 3: clean, but other processes were busy meanwhile; measure again.
    (( status == 3 && attempt < ATTEMPTS )) || break
    echo "bench: the machine was busy during that run; running it again (the quietest run is kept)"
  done
  if (( status == 3 )); then
    NOISY+=("$server $scenario @$sessions")
  elif (( status != 0 )); then
    FAILED+=("$server $scenario @$sessions (exit $status)")
  fi
}

# cluster_run SETUP SCENARIO SESSIONS [sockjs-load flags]: one measurement
# on fresh cluster nodes (and balancer; Redis lives for the whole bench):
#   cluster-1      1 node behind nginx; the generator talks to nginx
#   cluster-3      3 nodes behind nginx (round robin, no stickiness)
#   hop-owner      3 nodes, no balancer: each session's requests to its owner
#   hop-forwarded  3 nodes, no balancer: each session opened at its owner,
#                  then its sends and polls to another node, which forwards them
# The server's CPU and RSS are those of every node, nginx and Redis together.
cluster_run() {
  local setup=$1 scenario=$2 sessions=$3; shift 3
  local nodes=3 url hop=() attempt status
  [[ $setup == cluster-1 ]] && nodes=1
  for attempt in $(seq "$ATTEMPTS"); do
    echo
    if (( attempt == 1 )); then
      echo "== $setup $scenario, $sessions sessions"
    else
      echo "== $setup $scenario, $sessions sessions (attempt $attempt)"
    fi
    status=0
    start_nodes "$nodes" || status=$?
    hop=()
    if (( status == 0 )); then
      case $setup in
        cluster-*) start_balancer "${NODE_URLS[@]}" || status=$?; url=$BALANCER_URL ;;
        hop-owner) url=${NODE_URLS[0]} ;;
        hop-forwarded) url=${NODE_URLS[0]}; hop=(--hop-url "${NODE_URLS[1]}") ;;
      esac
    fi
    if (( status == 0 )); then
      taskset -c 1 "$REL/sockjs-load" run --url "$url" "${hop[@]}" --server gateway \
        --setup "$setup" --scenario "$scenario" --sessions "$sessions" \
        --server-pid "$(cluster_procs all)" --out "$RUNS" "${COMMON[@]}" "$@" >/dev/null \
        || status=$?
      cluster_alive || { echo "bench: a cluster process died during the run" >&2; status=1; }
    fi
    stop_cluster
    (( status == 3 && attempt < ATTEMPTS )) || break
    echo "bench: the machine was busy during that run; running it again (the quietest run is kept)"
  done
  if (( status == 3 )); then
    NOISY+=("$setup $scenario @$sessions")
  elif (( status != 0 )); then
    FAILED+=("$setup $scenario @$sessions (exit $status)")
  fi
}

# cluster_pair REPS A B SCENARIO SESSIONS [flags]: set-ups A and B take turns.
cluster_pair() {
  local reps=$1 a=$2 b=$3 i; shift 3
  for i in $(seq "$reps"); do
    cluster_run "$a" "$@"
    cluster_run "$b" "$@"
  done
}

# The cluster measurements: the same three scenarios through nginx with one
# node and with three, and the cross-node hop.
cluster_scenarios() {
  local reps=$1 echo_n=$2 broadcast_n=$3 rounds=$4
  cluster_pair "$reps" cluster-1 cluster-3 ws-echo           "$echo_n"
  cluster_pair "$reps" cluster-1 cluster-3 xhr-polling-echo  "$echo_n"
  cluster_pair "$reps" cluster-1 cluster-3 broadcast         "$broadcast_n" --repeat "$rounds"
  # Saturated, the hop's cost shows as CPU per echo; with one session the
  # server is idle between requests and the latency added is the hop itself.
  cluster_pair "$reps" hop-owner hop-forwarded xhr-polling-echo "$echo_n"
  cluster_pair "$reps" hop-owner hop-forwarded xhr-polling-echo 1
}

# ---------------------------------------------------------------- scenarios
# pair REPS SCENARIO SESSIONS [flags]: gateway and baseline take turns, REPS
# times, so that each pair is measured under the same conditions; the report
# keeps the median run of each (rates vary by ~10% from run to run here).
pair() {
  local reps=$1 i; shift
  for i in $(seq "$reps"); do
    run gateway "$@"
    run baseline "$@"
  done
}

if [[ $MODE == quick ]]; then
  COMMON=(--duration 2 --warmup 0.5)
  pair 1 ws-echo                  20
  pair 1 raw-ws-echo              20
  run gateway xhr-streaming-echo  20
  run gateway xhr-streaming-echo-128k 20
  run gateway xhr-polling-echo    20
  run gateway broadcast           200 --repeat 20
  pair 1 idle-websocket           500 --sources 4 --hold 0.5
  run gateway idle-polling        500 --concurrency 20 --hold 0.5
  pair 1 connect-rate             4 --sources 4
  cluster_scenarios 1 20 200 20
elif [[ $MODE == cluster ]]; then
  # Bounded: 30 runs of ~13 s, at most 30 s of waiting for quiet and one
  # re-run each.
  ATTEMPTS=2
  COMMON=(--duration 10 --warmup 2 --quiet-wait 30 --quiet-threshold 15 --noisy-above 20)
  cluster_scenarios 3 100 2000 100
else
  COMMON=(--duration 15 --warmup 2 --quiet-wait 120 --quiet-threshold 15 --noisy-above 20)
  pair 3 ws-echo                  100
  pair 3 ws-echo                  1000 --concurrency 500
  pair 3 raw-ws-echo              100
  run gateway xhr-streaming-echo  100
  run gateway xhr-streaming-echo-128k 100
  run gateway xhr-polling-echo    100
  run gateway broadcast           10000 --repeat 100 --concurrency 500
  pair 1 idle-websocket           "$IDLE_WS" --sources 8 --hold 5 --concurrency 500
  # Polling sessions hold no connection while idle: no fd limit applies.
  run gateway idle-polling        100000 --concurrency 50 --hold 5
  pair 3 connect-rate             16 --sources 8
fi

# ---------------------------------------------------------------- report
echo
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | wc -l | tr -d ' ')
META=(
  --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  --meta "git_commit=$COMMIT"
  --meta "git_uncommitted_files=$DIRTY"
  --meta "rustc=$(rustc -V 2>/dev/null || echo unknown)"
  --meta "build_seconds=$BUILD_S"
  --meta "fd_limit=$FD_LIMIT"
)
if [[ $MODE != cluster ]]; then
  META+=(
    --meta "idle_websocket_sessions=$IDLE_WS (wanted $IDLE_WS_WANTED)"
    --meta "pinning=server: taskset -c 0 --workers 1; generator: taskset -c 1, one thread"
  )
fi
if [[ $MODE != full ]]; then
  META+=(
    --meta "cluster_pinning=redis-server, nginx (one worker process) and every node (--workers 1): taskset -c 0; generator: taskset -c 1"
    --meta "cluster_software=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), redis $("$REDIS_SERVER" --version | grep -o 'v=[^ ]*' | cut -c3-)"
  )
fi
report_status=0
"$REL/sockjs-load" report --mode "$MODE" --runs "$RUNS" --out "$OUT" "${META[@]}" \
  || report_status=$?

if [[ $MODE != full ]]; then
  echo
  echo "bench: $(cluster_log_summary)"
  if (( ${#CLUSTER_PANICS[@]} > 0 )); then
    FAILED+=("a cluster node panicked: ${CLUSTER_PANICS[*]}")
  fi
fi

if (( ${#NOISY[@]} > 0 )); then
  echo
  echo "bench: still measured on a busy machine after $ATTEMPTS tries (figures less reliable):"
  printf '  %s\n' "${NOISY[@]}"
fi
if (( ${#FAILED[@]} > 0 )); then
  echo
  echo "bench: FAILED runs (loss, duplication, reordering or errors; see error_samples in $OUT):"
  printf '  %s\n' "${FAILED[@]}"
  exit 1
fi
if (( report_status != 0 )); then
  exit "$report_status"
fi
