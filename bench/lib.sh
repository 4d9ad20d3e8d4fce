# Shared by bench/run.sh and bench/soak.sh: starting and stopping the
# processes they run (one gateway; or a cluster: redis-server, gateway nodes
# and an nginx balancer), and cleaning up when they exit.
#
# The caller sets REL (where the binaries are), WORK (a scratch directory)
# and SERVER_PID="" before sourcing this, and may set PIN to a command
# prefix for the cluster's processes, e.g. PIN=(taskset -c 0).
# Everything listens on 127.0.0.1 only and is stopped by its PID.

PIN=("${PIN[@]+"${PIN[@]}"}")

# Stops the given processes: SIGTERM to all, up to 10 s for them to exit
# (the gateway's --shutdown-timeout is 5 s), then SIGKILL to the rest.
stop_pids() {
  local pid alive
  (( $# > 0 )) || return 0
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    (( alive )) || break
    sleep 0.1
  done
  for pid in "$@"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# Stops the server whose PID is in $SERVER_PID (if any).
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID
  SERVER_PID=""
  stop_pids "$pid"
}

# ---------------------------------------------------------------- cluster
# One redis-server, N gateway nodes (--redis, each on 127.0.0.1:0 with its
# --metrics on 127.0.0.1:0) and an nginx round-robin balancer without
# stickiness in front of them.
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
REDIS_PID="" REDIS_PORT="" REDIS_URL=""
NODE_PIDS=() NODE_URLS=() NODE_METRICS=() NODE_IDS=() NODE_LOGS=()
NGINX_PID="" BALANCER_URL=""
# Node logs that showed a panic, with the line ("LOG: LINE").
CLUSTER_PANICS=()
# Every node log of the run, for the summary of their warnings and errors.
CLUSTER_LOGS=()

# Says what is missing for cluster mode, if anything.
cluster_tools_missing() {
  local missing=()
  command -v "$REDIS_SERVER" >/dev/null || missing+=(redis-server)
  command -v "$REDIS_CLI" >/dev/null || missing+=(redis-cli)
  [[ -x $NGINX ]] || missing+=(nginx)
  if (( ${#missing[@]} > 0 )); then
    echo "cluster mode needs ${missing[*]} (apt-get install -y redis-server nginx)"
  fi
}

# Exits with 2, saying what is missing (after PREFIX), when cluster mode
# cannot run here.
require_cluster_tools() {
  local missing
  missing=$(cluster_tools_missing)
  if [[ -n $missing ]]; then
    echo "$1: $missing" >&2
    exit 2
  fi
}

# Prints a loopback port nothing listens on, below the ephemeral range (so
# no client socket takes it before it is bound). Whoever binds it checks:
# the starters below try another port when the bind fails.
free_port() {
  local low high port
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  high=$(( low - 1 ))
  low=$(( low > 11024 ? low - 10000 : 1024 ))
  for _ in $(seq 50); do
    port=$(( low + (RANDOM * 32768 + RANDOM) % (high - low + 1) ))
    if ! ( exec 3<>"/dev/tcp/127.0.0.1/$port" ) 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Whether GET PATH on 127.0.0.1:PORT answers 200 within 2 s.
http_ok() {
  local line
  line=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    IFS= read -r -t 2 line <&3 && printf '%s' "$line"
  ) || return 1
  [[ $line == "HTTP/1."[01]" 200"* ]]
}

# Starts redis-server (no persistence) on a free loopback port, once per
# bench; waits (bounded) until it says it is ready and answers PING.
start_redis() {
  [[ -z $REDIS_PID ]] || return 0
  local log="" port attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port) || break
    log="$WORK/redis-$attempt.log"
    "${PIN[@]}" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      >"$log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
      if grep -q 'Ready to accept connections' "$log" \
        && [[ $("$REDIS_CLI" -p "$port" ping 2>/dev/null) == PONG ]]; then
        REDIS_PORT=$port
        REDIS_URL="redis://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pids "$REDIS_PID"
    REDIS_PID=""
  done
  echo "redis-server did not start on a free port in 5 tries (last log: ${log:-none})" >&2
  if [[ -n $log ]]; then tail -n 5 "$log" >&2; fi
  return 1
}

stop_redis() {
  [[ -n $REDIS_PID ]] || return 0
  local pid=$REDIS_PID
  REDIS_PID=""
  stop_pids "$pid"
}

# Starts one gateway node with --redis (extra gateway flags as arguments);
# waits (bounded) for its listening, cluster node and metrics lines, then
# for its lease in Redis (other nodes forward to it only once it is there).
start_node() {
  local i=${#NODE_PIDS[@]} log pid url="" metrics="" id=""
  log="$WORK/node$i-$(date +%s%N).log"
  "${PIN[@]}" "$REL/sockjs-gateway" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
    --redis "$REDIS_URL" --workers 1 "$@" 2>"$log" &
  pid=$!
  NODE_PIDS+=("$pid")
  NODE_LOGS+=("$log")
  CLUSTER_LOGS+=("$log")
  for _ in $(seq 200); do
    url=$(grep -o -m1 'listening on http://127\.0\.0\.1:[0-9]*' "$log" | sed 's/^listening on //' || true)
    metrics=$(grep -o -m1 'metrics on http://127\.0\.0\.1:[0-9]*/metrics' "$log" | sed 's/^metrics on //' || true)
    id=$(grep -o -m1 'cluster node [^ ]*' "$log" | sed 's/^cluster node //' || true)
    [[ -n $url && -n $metrics && -n $id ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster node $i exited at startup:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.05
  done
  if [[ -z $url || -z $metrics || -z $id ]]; then
    echo "cluster node $i did not say where it listens within 10 s (log: $log)" >&2
    return 1
  fi
  NODE_URLS+=("$url")
  NODE_METRICS+=("$metrics")
  NODE_IDS+=("$id")
  for _ in $(seq 100); do
    [[ -n $("$REDIS_CLI" -p "$REDIS_PORT" get "sockjs:node:$id" 2>/dev/null) ]] && return 0
    sleep 0.05
  done
  echo "cluster node $i ($id) has no lease in Redis after 5 s (log: $log)" >&2
  return 1
}

# Starts nginx as a round-robin balancer, no stickiness, in front of the
# given upstream URLs (http://IP:PORT), on a free loopback port; waits
# (bounded) until GET /echo through it answers 200. Sets BALANCER_URL.
start_balancer() {
  local dir port servers="" u fds conf attempt
  dir="$WORK/nginx-$(date +%s%N)"
  mkdir -p "$dir/logs" "$dir/tmp"
  for u in "$@"; do
    servers+="    server ${u#http://} max_fails=1 fail_timeout=1s;"$'\n'
  done
  # nginx holds two sockets per proxied connection: as many as it may.
  fds=$(ulimit -n)
  [[ $fds == unlimited ]] && fds=65536
  for attempt in 1 2 3 4 5; do
    port=$(free_port) || break
    conf="$dir/nginx.conf"
    cat >"$conf" <<EOF
# Generated by bench/lib.sh for one run.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $fds;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $(( fds > 65535 ? 65535 : fds - 32 )); }
http {
  access_log off;
  client_body_temp_path $dir/tmp/client_body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  # WebSocket upgrades get "Connection: upgrade"; every other request an
  # empty Connection header, so that upstream connections are kept alive.
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  upstream sockjs_nodes {
$servers    # Round robin (the default), no stickiness. Idle connections to
    # the nodes are kept for reuse: every hanging long-poll and send holds
    # one, and with a cache smaller than that (keepalive 32) most requests
    # opened a new connection to a node, which halved xhr-polling-echo
    # through 3 nodes at 100 sessions. They are dropped before the nodes'
    # own 5 s keep-alive would close them under a new request (a POST sent
    # on a connection the node is closing is not retried: the client gets 502).
    keepalive 1024;
    keepalive_timeout 2s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://sockjs_nodes;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      # Streaming receivers and long-polls pass through as they come.
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
    }
  }
}
EOF
    "${PIN[@]}" "$NGINX" -p "$dir/" -c "$conf" -e "$dir/logs/error.log" 2>>"$dir/logs/stderr.log" &
    NGINX_PID=$!
    for _ in $(seq 200); do
      if http_ok "$port" /echo; then
        BALANCER_URL="http://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pids "$NGINX_PID"
    NGINX_PID=""
  done
  echo "nginx did not start on a free port in 5 tries:" >&2
  cat "$dir/logs/stderr.log" "$dir/logs/error.log" >&2 2>/dev/null || true
  return 1
}

# Starts Redis (once) and N nodes with the given gateway flags.
start_nodes() {
  local n=$1 i
  shift
  start_redis || return 1
  for (( i = 0; i < n; i++ )); do
    start_node "$@" || return 1
  done
}

# The cluster's processes for --server-pid: LABEL=PID,... (nodes, then the
# balancer and Redis when asked for).
cluster_procs() {
  local with_others=$1 i out=()
  for i in "${!NODE_PIDS[@]}"; do out+=("node$i=${NODE_PIDS[$i]}"); done
  if [[ $with_others == all ]]; then
    [[ -n $NGINX_PID ]] && out+=("nginx=$NGINX_PID")
    [[ -n $REDIS_PID ]] && out+=("redis=$REDIS_PID")
  fi
  local IFS=,
  echo "${out[*]}"
}

# Whether every node and the balancer are still running.
cluster_alive() {
  local pid
  for pid in "${NODE_PIDS[@]}" $NGINX_PID; do
    kill -0 "$pid" 2>/dev/null || return 1
  done
}

# Stops the balancer, then the nodes (Redis stays for the next run), and
# notes any panic in the nodes' logs in CLUSTER_PANICS.
stop_cluster() {
  local log line
  if [[ -n $NGINX_PID ]]; then
    stop_pids "$NGINX_PID"
    NGINX_PID=""
  fi
  if (( ${#NODE_PIDS[@]} > 0 )); then
    stop_pids "${NODE_PIDS[@]}"
  fi
  for log in "${NODE_LOGS[@]}"; do
    line=$(grep -m1 -E 'panicked|a session handler panicked' "$log" || true)
    [[ -n $line ]] && CLUSTER_PANICS+=("$log: $line")
  done
  NODE_PIDS=() NODE_URLS=() NODE_METRICS=() NODE_IDS=() NODE_LOGS=()
  BALANCER_URL=""
}

# Prints the warnings and errors the nodes logged over the whole run,
# counted by message (session ids and numbers folded), most frequent first.
cluster_log_summary() {
  (( ${#CLUSTER_LOGS[@]} > 0 )) || return 0
  local lines
  lines=$(grep -h -E '^\[[^]]* (WARN|ERROR) ' "${CLUSTER_LOGS[@]}" 2>/dev/null \
    | sed -E 's/^\[[^ ]+ //; s/\]//; s/[0-9a-f]{8,}|[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 15 || true)
  if [[ -n $lines ]]; then
    echo "warnings and errors in the nodes' logs (count, level and module, message):"
    echo "$lines"
  else
    echo "no warning or error in the nodes' logs"
  fi
}

# ---------------------------------------------------------------- exit
# Stops everything on any exit; removes $WORK after a success, else says
# "$1" on stderr (where the logs were kept). Ctrl-C and SIGTERM exit 130.
clean_up_on_exit() {
  KEPT_MESSAGE=$1
  trap on_exit EXIT
  trap 'exit 130' INT TERM
}

on_exit() {
  local status=$?
  stop_server
  stop_cluster
  stop_redis
  if [[ $status -eq 0 ]]; then
    rm -rf "$WORK"
  else
    echo "$KEPT_MESSAGE" >&2
  fi
  exit "$status"
}
