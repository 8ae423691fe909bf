#!/usr/bin/env bash
# Outside verifying client: runs the echo-server example as a separate process and drives it
# with `echo-bench --connect ADDR --server-pid PID --quick`, which verifies every echoed byte
# and checks that the server's descriptor count returns to its starting value after each
# workload. Runs once per backend (GAIO_BACKEND=epoll, then auto) with the server's accept
# thread, then once per backend with `--accept-mode watcher` (the whole server on one wait_io
# loop, accepting through accept requests). Exits non-zero on any failure: build error, server
# not starting, bench failure, or server dying during the run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the examples (release)"
cargo build --release --example echo-server --example echo-bench

server_bin=target/release/examples/echo-server
bench_bin=target/release/examples/echo-bench
workdir=$(mktemp -d)
server_pid=""

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

fail() {
  echo "outside-client: FAIL: $*" >&2
  if [ -s "$workdir/server.err" ]; then
    echo "--- echo-server stderr:" >&2
    tail -n 20 "$workdir/server.err" >&2
  fi
  exit 1
}

run_backend() {
  local backend=$1 accept_mode=${2:-thread}
  echo
  echo "== GAIO_BACKEND=$backend, --accept-mode $accept_mode: echo-server in the background, echo-bench --connect"
  : >"$workdir/server.out"
  : >"$workdir/server.err"
  GAIO_BACKEND=$backend "$server_bin" --addr 127.0.0.1:0 --accept-mode "$accept_mode" \
    >"$workdir/server.out" 2>"$workdir/server.err" &
  server_pid=$!

  # The server's first stdout line is `listening on ADDR`; wait for it (at most 10 s).
  local line="" addr=""
  for _ in $(seq 1 100); do
    line=$(head -n 1 "$workdir/server.out" 2>/dev/null || true)
    case "$line" in
      "listening on "*) addr=${line#listening on }; break ;;
    esac
    kill -0 "$server_pid" 2>/dev/null || fail "echo-server (GAIO_BACKEND=$backend, --accept-mode $accept_mode) exited before listening"
    sleep 0.1
  done
  [ -n "$addr" ] || fail "echo-server printed no 'listening on' line within 10 s (got: '$line')"
  echo "echo-server pid $server_pid listening on $addr"

  GAIO_BACKEND=$backend timeout 120 "$bench_bin" --connect "$addr" --server-pid "$server_pid" --quick \
    || fail "echo-bench against the outside server failed (GAIO_BACKEND=$backend, --accept-mode $accept_mode, exit $?)"

  kill -0 "$server_pid" 2>/dev/null || fail "echo-server died during the run (GAIO_BACKEND=$backend, --accept-mode $accept_mode)"
  echo "echo-server's own report: $(head -n 1 "$workdir/server.err")"
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  if [ -s "$workdir/server.err" ] && grep -v -e '^echo-server: backend' "$workdir/server.err" | grep -q .; then
    fail "echo-server logged errors (GAIO_BACKEND=$backend, --accept-mode $accept_mode)"
  fi
}

run_backend epoll
run_backend auto
run_backend epoll watcher
run_backend auto watcher
echo
echo "outside-client: PASS (epoll, auto; accept thread and accept requests)"
