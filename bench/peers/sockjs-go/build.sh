#!/usr/bin/env bash
# build.sh OUT: builds the echo into OUT from Debian's packages
# (golang-go, golang-github-igm-sockjs-go-dev, which brings gorilla/websocket),
# offline: a GOPATH of links gives the packages their import paths.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$(realpath -m "$1")"
SRC=/usr/share/gocode/src
GOPATH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sockjs-go-path.XXXXXX")"
trap 'rm -rf "$GOPATH_DIR"' EXIT
mkdir -p "$GOPATH_DIR/src/github.com/igm/sockjs-go" "$GOPATH_DIR/src/github.com/gorilla" "$GOPATH_DIR/src/echo"
# The module is v3; Debian installs it without the /v3 directory.
ln -s "$SRC/github.com/igm/sockjs-go" "$GOPATH_DIR/src/github.com/igm/sockjs-go/v3"
ln -s "$SRC/github.com/gorilla/websocket" "$GOPATH_DIR/src/github.com/gorilla/websocket"
cp "$HERE/main.go" "$GOPATH_DIR/src/echo/"
cd "$GOPATH_DIR/src/echo"
GO111MODULE=off GOPATH="$GOPATH_DIR" GOFLAGS= go build -o "$OUT" .
