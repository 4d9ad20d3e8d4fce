#!/usr/bin/env bash
# Checks what `cargo package` would ship to crates.io: the library, the
# binary, every sockjs-client bundle with its licences, and the LICENSE; and
# nothing of the browser suite, the benchmark, the fuzz corpora, CI or target.
set -euo pipefail
cd "$(dirname "$0")/.."

list=$(cargo package --list --allow-dirty -p sockjs-gateway)
fail=0
need() {
  if ! grep -qxF "$1" <<<"$list"; then
    echo "check-package-list: $1 is not in the package" >&2
    fail=1
  fi
}
need LICENSE
need README.md
need Cargo.toml
need src/lib.rs
need src/bin/sockjs-gateway/main.rs
need assets/sockjs-iframe-loader.js
for file in assets/sockjs-client/*; do
  need "$file"
done
need assets/sockjs-client/LICENSE
need assets/sockjs-client/COPYING
for dir in client-js bench fuzz .ci target; do
  if grep -q "^$dir/" <<<"$list"; then
    echo "check-package-list: the package ships $dir/:" >&2
    grep "^$dir/" <<<"$list" | head -5 >&2
    fail=1
  fi
done
if [ "$fail" = 0 ]; then
  echo "check-package-list: $(wc -l <<<"$list") files, library, binary, bundles and licences in; client-js/, bench/, fuzz/, .ci/, target/ out"
fi
exit "$fail"
