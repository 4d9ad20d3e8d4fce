# Shared by bench/run.sh and bench/soak.sh: stopping the server they started,
# and cleaning up when they exit.

# Stops the server whose PID is in $SERVER_PID (if any): SIGTERM, then up to
# 10 s for it to exit (the gateway's --shutdown-timeout is 5 s), then SIGKILL.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID
  SERVER_PID=""
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stops the server on any exit; removes $WORK after a success, else says
# "$1" on stderr (where the logs were kept). Ctrl-C and SIGTERM exit 130.
clean_up_on_exit() {
  KEPT_MESSAGE=$1
  trap on_exit EXIT
  trap 'exit 130' INT TERM
}

on_exit() {
  local status=$?
  stop_server
  if [[ $status -eq 0 ]]; then
    rm -rf "$WORK"
  else
    echo "$KEPT_MESSAGE" >&2
  fi
  exit "$status"
}
