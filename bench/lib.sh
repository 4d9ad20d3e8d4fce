# Shared by bench/run.sh and bench/soak.sh: stopping the server they started.

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
