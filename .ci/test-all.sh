#!/usr/bin/env bash
# Runs every test of sockjs-gateway on a fresh machine, installing what the
# tests need first. The README's test command; CI runs it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== API docs without a warning, and what the crate would ship"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
.ci/check-package-list.sh

echo "== redis-server and nginx for the cluster tests and benchmark (apt-get, only if missing)"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
   || ! { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools nginx
fi

echo "== rabbitmq-server for the browser suite's STOMP section (apt-get, only if missing)"
if ! [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && ! command -v rabbitmq-server >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  # The tests start their own broker on loopback; a policy-rc.d answering
  # 101 ("action forbidden") keeps the package's postinst from starting the
  # system's rabbitmq and its epmd. One already there (Docker images carry
  # one) is left as it is; ours is removed however the install ends.
  ours=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    ours=1
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq rabbitmq-server
  if [ -n "$ours" ]; then as_root rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

echo "== unit, black-box and doc tests"
cargo test --workspace --all-targets
cargo test --doc

echo "== real browser: every sockjs-client release in headless Chromium, behind nginx and squid; STOMP to RabbitMQ"
client-js/run-browser-tests.sh

echo "== benchmark, quick mode (fails on lost, duplicated or reordered messages, never on speed)"
bench/run.sh --quick

echo "== soak, short mode (churn, no loss across every transport, stalled readers, no loss under attack)"
bench/soak.sh --short
