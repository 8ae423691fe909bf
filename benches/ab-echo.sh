#!/usr/bin/env bash
# A/B of two builds of the library: runs one build's `echo-server` example under `perf stat`
# (task-clock, context switches) and drives it with another build's `echo-bench` (so the
# client stays the same while the server changes), printing stream and ping-pong figures.
#
#   benches/ab-echo.sh SERVER_EXAMPLES_DIR CLIENT_EXAMPLES_DIR epoll|uring [echo-bench args]
#
# e.g. build a commit in a second clone (`cargo build --release --examples`) and run, in
# alternation, both servers with the same client:
#   benches/ab-echo.sh ../old/target/release/examples ../old/target/release/examples epoll --secs 2
#   benches/ab-echo.sh target/release/examples ../old/target/release/examples epoll --secs 2
# Run it in the foreground on an otherwise idle machine, several rounds each way.
set -euo pipefail
if [ $# -lt 3 ]; then sed -n 2,12p "$0"; exit 2; fi
S=$1; C=$2; B=$3; shift 3
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$S/echo-server" --addr 127.0.0.1:0 --backend "$B" > "$OUT/server" 2>&1 &
SP=$!
for _ in $(seq 200); do grep -q listening "$OUT/server" && break; sleep 0.05; done
ADDR=$(grep -o '127.0.0.1:[0-9]*' "$OUT/server" | head -1)
perf stat -e task-clock,context-switches -p "$SP" -o "$OUT/perf" &
PP=$!
"$C/echo-bench" --connect "$ADDR" --server-pid "$SP" "$@" 2>&1 | grep -E "^stream|^ping-pong|FAIL"
kill -INT "$PP"; wait "$PP" 2>/dev/null || true
kill "$SP"; wait "$SP" 2>/dev/null || true
grep -E "task-clock|context" "$OUT/perf"
