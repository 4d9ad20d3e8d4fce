#!/usr/bin/env bash
# Real-browser tests for sockjs-gateway (headless Chromium, nginx, squid,
# RabbitMQ).
#
#   client-js/run-browser-tests.sh [options passed to browser-tests.js]
#     --only matrix,releases,proxies,forward-proxy,relay,stomp,cluster,demo   run some sections only
#     --transport NAME[,NAME]      matrix rows for these transports only
#     --demo-from-file             test demo.html before the gateway serves it at /
#     --verbose                    browser console, page errors
#
# Installs what is missing (Debian's chromium, nginx, squid and rabbitmq-server; the npm packages
# from package-lock.json), builds the gateway, runs the tests. Exits
# non-zero on any failure, including a browser or nginx that cannot start.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

say() { printf '[run-browser-tests] %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# 1. System packages: only when missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/squid ] || missing+=(squid)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  # The tests start their own servers: a policy-rc.d answering 101 keeps
  # the packages' postinst from starting system ones (rabbitmq, its epmd).
  # One already there is left alone; ours goes however the install ends.
  ours=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    ours=1
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  as_root apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
  if [ -n "$ours" ]; then as_root rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || die "/usr/lib/rabbitmq/bin/rabbitmq-server is still missing"
[ -x /usr/sbin/squid ] || die "/usr/sbin/squid is still missing"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is still missing"
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || die "nginx is still missing"

# 2. npm packages: npm ci when node_modules is missing or was installed
#    from another package-lock.json.
command -v node >/dev/null 2>&1 || die "node is not installed"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
lock_hash="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
stamp="$here/node_modules/.installed-from-lock"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ] \
   || [ ! -f "$here/node_modules/playwright-core/package.json" ] \
   || [ ! -f "$here/node_modules/sockjs-client/dist/sockjs.min.js" ] \
   || [ ! -f "$here/node_modules/stompjs/lib/stomp.js" ] \
   || [ ! -f "$here/node_modules/@stomp/stompjs/bundles/stomp.umd.js" ]; then
  say "npm ci in $here"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  echo "$lock_hash" > "$stamp"
fi

# 3. The gateway.
say "cargo build --bin sockjs-gateway"
(cd "$root" && cargo build --bin sockjs-gateway) || die "cargo build failed"

# 4. The browser tests (they bound themselves to 11.5 minutes; this is the
#    backstop).
say "running browser tests"
cd "$here"
status=0
timeout --kill-after=15 750 node browser-tests.js "$@" || status=$?
if [ "$status" -ne 0 ]; then
  [ "$status" -eq 124 ] && say "FAIL: browser tests hit the 750 s backstop"
  say "FAIL: browser tests exited with status $status"
  exit "$status"
fi
say "all browser tests passed"
