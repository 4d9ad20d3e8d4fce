#!/usr/bin/env bash
# Soak tests for sockjs-gateway: churn, no loss, stalled readers (see
# bench/README-soak.md).
#
#   bench/soak.sh           full run  -> bench/soak-results.json       (~3 minutes)
#   bench/soak.sh --short   short run -> bench/soak-results-short.json (< 1 minute once built)
#
# Builds the gateway and sockjs-soak in release mode, starts one gateway
# (127.0.0.1:0, metrics on 127.0.0.1:0, --disconnect-delay 1s, one worker),
# runs the three scenarios against it with sockjs-soak, stops the gateway by PID (also on
# failure or Ctrl-C), prints the table and exits non-zero if any check failed
# or the gateway died.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=full
EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --short) MODE=short ;;
    --only) EXTRA+=(--only "$2"); shift ;;
    # Extra sockjs-soak flags, e.g. --set "--churn-sessions 10000 --churn-wave 500".
    --set) read -r -a more <<<"$2"; EXTRA+=("${more[@]}"); shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "usage: bench/soak.sh [--short] [--only churn,noloss,stalled] [--set "FLAGS"]" >&2; exit 2 ;;
  esac
  shift
done
if [[ $MODE == short ]]; then
  OUT=bench/soak-results-short.json
else
  OUT=bench/soak-results.json
fi

DISCONNECT_DELAY=1
SEND_TIMEOUT=10
# Where cargo put the binaries (CARGO_TARGET_DIR when set, as cargo does).
REL="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-soak.XXXXXX")"
LOG="$WORK/gateway.log"
SERVER_PID=""

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

clean_up_on_exit "soak: gateway log kept in $LOG"

# Churn waves hold thousands of connections: soft fd limit up to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "soak: building sockjs-gateway and sockjs-soak (release)..."
cargo build --release -p sockjs-gateway --bin sockjs-gateway -p sockjs-bench --bin sockjs-soak

# Not pinned to cores (unlike bench/run.sh): these are correctness and
# boundedness checks, not speed measurements, and on a shared 2-core machine
# a pinned process is stuck with whatever else runs on its core.
"$REL/sockjs-gateway" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --disconnect-delay "${DISCONNECT_DELAY}s" --send-timeout "${SEND_TIMEOUT}s" --workers 1 \
  2>"$LOG" &
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
"$REL/sockjs-soak" --mode "$MODE" --url "$URL" --metrics "$METRICS" \
  --server-pid "$SERVER_PID" --disconnect-delay "$DISCONNECT_DELAY" --send-timeout "$SEND_TIMEOUT" \
  --out "$OUT" "${EXTRA[@]}" \
  --meta "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src 2>/dev/null || echo '+dirty')" \
  --meta "gateway=--workers 1 --disconnect-delay ${DISCONNECT_DELAY}s --send-timeout ${SEND_TIMEOUT}s" \
  --meta "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc)" \
  || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "soak: FAILED: the gateway died during the run:" >&2
  tail -n 20 "$LOG" >&2
  SERVER_PID=""
  exit 1
fi
if [[ $status -ne 0 ]]; then
  echo "soak: FAILED (sockjs-soak exit $status); results in $OUT" >&2
  exit "$status"
fi
echo "soak: results in $OUT"
