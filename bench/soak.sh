#!/usr/bin/env bash
# Soak tests for sockjs-gateway: churn, no loss, stalled readers, no loss under attack (see
# bench/README-soak.md), on one gateway and on a cluster.
#
#   bench/soak.sh                    full run, one gateway -> bench/soak-results.json         (~3 minutes)
#   bench/soak.sh --cluster          full run, cluster     -> bench/soak-results-cluster.json (~3.5 minutes)
#   bench/soak.sh --short            short run, one gateway, then the cluster      (~1 minute once built)
#                                    -> bench/soak-results-short.json, bench/soak-results-cluster-short.json
#   bench/soak.sh --cluster --short  the cluster part of --short alone
#   bench/soak.sh --only churn,...   some scenarios only -> the same names with -only added
#
# Builds the gateway and sockjs-soak in release mode. One gateway: started on
# 127.0.0.1:0, metrics on 127.0.0.1:0, --disconnect-delay 1s, one worker; the
# three scenarios run against it. Cluster: redis-server, 3 nodes with the same
# flags and --redis, an nginx round-robin balancer without stickiness in front;
# the same three scenarios run through nginx, every reading summed over the
# nodes' /metrics. Every process is stopped by PID (also on failure or Ctrl-C). Prints
# the table and exits non-zero if any check failed, or a gateway died or panicked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=full
CLUSTER=no
ONLY=""
EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --short) MODE=short ;;
    --cluster) CLUSTER=only ;;
    --only) ONLY=$2; shift ;;
    # Extra sockjs-soak flags, e.g. --set "--churn-sessions 10000 --churn-wave 500".
    --set) read -r -a more <<<"$2"; EXTRA+=("${more[@]}"); shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "usage: bench/soak.sh [--short] [--cluster] [--only churn,noloss,stalled,attack] [--set \"FLAGS\"]" >&2; exit 2 ;;
  esac
  shift
done
# --short runs the cluster part too, so that CI covers it.
if [[ $MODE == short && $CLUSTER == no ]]; then
  CLUSTER=also
fi
SUFFIX=""
[[ $MODE == short ]] && SUFFIX=-short
# A partial run writes a file of its own: it must not stand in for a full one.
[[ -n $ONLY ]] && SUFFIX="$SUFFIX-only"

DISCONNECT_DELAY=1
SEND_TIMEOUT=10
GATEWAY_FLAGS=(--disconnect-delay "${DISCONNECT_DELAY}s" --send-timeout "${SEND_TIMEOUT}s")
CLUSTER_NODES=3
# Where cargo put the binaries (CARGO_TARGET_DIR when set, as cargo does).
REL="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-soak.XXXXXX")"
LOG="$WORK/gateway.log"
SERVER_PID=""

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

clean_up_on_exit "soak: logs kept in $WORK"

if [[ $CLUSTER != no ]]; then
  require_cluster_tools soak
fi

# Churn waves hold thousands of connections: soft fd limit up to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "soak: building sockjs-gateway and sockjs-soak (release)..."
cargo build --release -p sockjs-gateway --bin sockjs-gateway -p sockjs-bench --bin sockjs-soak

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src 2>/dev/null || echo '+dirty')"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc)"
FAILED=()

# soak OUT URL METRICS PROCS [sockjs-soak flags]: one sockjs-soak run.
soak() {
  local out=$1 url=$2 metrics=$3 procs=$4 status=0
  shift 4
  "$REL/sockjs-soak" --mode "$MODE" --url "$url" --metrics "$metrics" \
    --server-pid "$procs" --disconnect-delay "$DISCONNECT_DELAY" --send-timeout "$SEND_TIMEOUT" \
    --out "$out" --meta "commit=$COMMIT" --meta "cpu=$CPU" "$@" "${EXTRA[@]}" || status=$?
  return "$status"
}

# ---------------------------------------------------------------- one gateway
# Not pinned to cores (unlike bench/run.sh): these are correctness and
# boundedness checks, not speed measurements, and on a shared 2-core machine
# a pinned process is stuck with whatever else runs on its core.
if [[ $CLUSTER != only ]]; then
  OUT=bench/soak-results$SUFFIX.json
  "$REL/sockjs-gateway" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
    "${GATEWAY_FLAGS[@]}" --workers 1 2>"$LOG" &
  SERVER_PID=$!
  URL=""
  METRICS=""
  for _ in $(seq 200); do
    URL=$(grep -o -m1 'listening on http://127\.0\.0\.1:[0-9]*' "$LOG" | sed 's/^listening on //' || true)
    METRICS=$(grep -o -m1 'metrics on http://127\.0\.0\.1:[0-9]*/metrics' "$LOG" | sed 's/^metrics on //' || true)
    [[ -n $URL && -n $METRICS ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "soak: the gateway exited at startup:" >&2
      cat "$LOG" >&2
      SERVER_PID=""
      exit 1
    fi
    sleep 0.05
  done
  if [[ -z $URL || -z $METRICS ]]; then
    echo "soak: the gateway did not say where it listens within 10 s" >&2
    exit 1
  fi
  echo "soak: gateway PID $SERVER_PID on $URL, metrics $METRICS"

  status=0
  soak "$OUT" "$URL" "$METRICS" "$SERVER_PID" ${ONLY:+--only "$ONLY"} \
    --meta "gateway=--workers 1 ${GATEWAY_FLAGS[*]}" || status=$?
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "soak: FAILED: the gateway died during the run:" >&2
    tail -n 20 "$LOG" >&2
    SERVER_PID=""
    exit 1
  fi
  stop_server
  if grep -q -E 'panicked' "$LOG"; then
    FAILED+=("one gateway: a panic in its log: $(grep -m1 -E 'panicked' "$LOG")")
  fi
  if [[ $status -ne 0 ]]; then
    FAILED+=("one gateway: sockjs-soak exit $status; results in $OUT")
  fi
  echo "soak: results in $OUT"
fi

# ---------------------------------------------------------------- cluster
if [[ $CLUSTER != no ]]; then
  OUT=bench/soak-results-cluster$SUFFIX.json
  echo
  echo "soak: cluster: redis-server, $CLUSTER_NODES nodes, nginx round robin in front"
  start_nodes "$CLUSTER_NODES" "${GATEWAY_FLAGS[@]}"
  start_balancer "${NODE_URLS[@]}"
  echo "soak: redis $REDIS_URL; nodes ${NODE_URLS[*]} (PIDs ${NODE_PIDS[*]}); nginx $BALANCER_URL (PID $NGINX_PID)"
  METRICS=$(IFS=,; echo "${NODE_METRICS[*]}")
  status=0
  soak "$OUT" "$BALANCER_URL" "$METRICS" "$(cluster_procs nodes)" ${ONLY:+--only "$ONLY"} \
    --meta "gateway=$CLUSTER_NODES nodes, each --workers 1 ${GATEWAY_FLAGS[*]} --redis" \
    --meta "balancer=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), round robin, no stickiness" \
    --meta "redis=$("$REDIS_SERVER" --version | grep -o 'v=[^ ]*' | cut -c3-)" || status=$?
  if ! cluster_alive; then
    FAILED+=("cluster: a node or nginx died during the run (logs in $WORK)")
  fi
  stop_cluster
  echo "soak: cluster: $(cluster_log_summary)"
  for p in "${CLUSTER_PANICS[@]}"; do FAILED+=("cluster: a panic: $p"); done
  if [[ $status -ne 0 ]]; then
    FAILED+=("cluster: sockjs-soak exit $status; results in $OUT")
  fi
  echo "soak: results in $OUT"
fi

if (( ${#FAILED[@]} > 0 )); then
  echo >&2
  echo "soak: FAILED:" >&2
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
