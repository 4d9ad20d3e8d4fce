#!/usr/bin/env bash
# User-space instructions per echoed message, counted by callgrind: the
# figure that does not move with the machine's other load.
#
#   bench/instructions.sh [--sessions N] [--out FILE]     (default 100, bench/instructions.json)
#
# Each server (the gateway, and the bare actix-ws echo as the baseline) runs
# under callgrind with one worker, twice per scenario: SESSIONS sessions echo
# LOW messages each, then HIGH messages each (sockjs-load --messages). The
# start-up, the handshakes and the shutdown are the same in both runs, so
#   per message = (Ir(HIGH run) - Ir(LOW run)) / (SESSIONS * (HIGH - LOW))
# is what one more echoed message costs the server, and nothing else.
# Needs valgrind (apt-get install valgrind). Takes a few minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SESSIONS=100
OUT=bench/instructions.json
LOW=20
HIGH=120
while [[ $# -gt 0 ]]; do
  case $1 in
    --sessions) SESSIONS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: bench/instructions.sh [--sessions N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
command -v valgrind >/dev/null || { echo "instructions: valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

REL="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-instructions.XXXXXX")"
SERVER_PID=""
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    # callgrind writes its counts as the process exits.
    for _ in $(seq 600); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT

echo "instructions: building (release; the baseline apart, as bench/run.sh does)..."
cargo build --release -p sockjs-gateway --bin sockjs-gateway
cargo build --release -p sockjs-bench --bin sockjs-load --bin baseline-echo

# counted SERVER SCENARIO MESSAGES: the server's total Ir for one run.
counted() {
  local server=$1 scenario=$2 messages=$3 bin log out url=""
  case $server in
    gateway) bin=$REL/sockjs-gateway ;;
    baseline) bin=$REL/baseline-echo ;;
  esac
  log="$WORK/$server-$scenario-$messages.log"
  out="$WORK/$server-$scenario-$messages.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen 127.0.0.1:0 --workers 1 2>"$log" &
  SERVER_PID=$!
  for _ in $(seq 600); do
    url=$(grep -o -m1 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | sed 's/^listening on //' || true)
    [[ -n $url ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  [[ -n $url ]] || { echo "instructions: $server did not start within 60 s" >&2; return 1; }
  "$REL/sockjs-load" run --url "$url" --server "$server" --scenario "$scenario" \
    --sessions "$SESSIONS" --messages "$messages" --warmup 0 --concurrency 20 >"$WORK/load.json"
  stop_server
  grep -m1 '^summary:' "$out" | awk '{ print $2 }'
}

RESULTS=()
row() { # SERVER SCENARIO
  local low high per
  low=$(counted "$1" "$2" "$LOW")
  high=$(counted "$1" "$2" "$HIGH")
  per=$(( (high - low) / (SESSIONS * (HIGH - LOW)) ))
  printf 'instructions: %-8s %-16s %8s Ir per message\n' "$1" "$2" "$per"
  RESULTS+=("{\"server\": \"$1\", \"scenario\": \"$2\", \"ir_per_message\": $per}")
}

row baseline ws-echo
row gateway ws-echo
row baseline raw-ws-echo
row gateway raw-ws-echo
row gateway xhr-polling-echo

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src 2>/dev/null || echo '+dirty')"
{
  echo "{"
  echo "  \"commit\": \"$COMMIT\","
  echo "  \"tool\": \"valgrind --tool=callgrind, one worker, $SESSIONS sessions, ($HIGH - $LOW) messages each\","
  echo "  \"runs\": ["
  for i in "${!RESULTS[@]}"; do
    sep=","; (( i == ${#RESULTS[@]} - 1 )) && sep=""
    echo "    ${RESULTS[$i]}$sep"
  done
  echo "  ]"
  echo "}"
} >"$OUT"
echo "instructions: written to $OUT"
