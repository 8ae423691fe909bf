#!/usr/bin/env bash
# The TLS examples as separate processes, on both backends: tls-echo-server with a
# certificate and key that `openssl req` makes (the --cert/--key path), driven by the
# tls-echo-client example (8 connections x 1 MiB, every byte checked, close_notify both ways)
# and by `openssl s_client` (a line echoed back, the certificate verified against the CA
# file). Then the server without --cert/--key, which makes a self-signed certificate and
# names it on stderr, with the client trusting that file. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the TLS examples (release)"
cargo build --release --features rustls --example tls-echo-server --example tls-echo-client

server_bin=target/release/examples/tls-echo-server
client_bin=target/release/examples/tls-echo-client
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
  echo "tls-echo: FAIL: $*" >&2
  [ -s "$workdir/server.err" ] && tail -n 20 "$workdir/server.err" >&2
  exit 1
}

# Starts the server with "$@"; sets $addr.
start_server() {
  : > "$workdir/server.out"
  "$server_bin" "$@" > "$workdir/server.out" 2> "$workdir/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q '^listening on ' "$workdir/server.out" && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited at start"
    sleep 0.1
  done
  addr=$(awk '/^listening on /{print $3; exit}' "$workdir/server.out")
  [ -n "$addr" ] || fail "no 'listening on' line"
}

stop_server() {
  kill -0 "$server_pid" 2>/dev/null || fail "the server died during the run"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE \
  -keyout "$workdir/key.pem" -out "$workdir/cert.pem" 2>/dev/null

for backend in epoll uring; do
  echo "== tls-echo-server --backend $backend (openssl's certificate)"
  start_server --backend "$backend" --cert "$workdir/cert.pem" --key "$workdir/key.pem"
  timeout 120 "$client_bin" --connect "$addr" --ca "$workdir/cert.pem" --conns 8 \
    --backend "$backend" || fail "tls-echo-client against the $backend server"
  # s_client reads the line from a fifo kept open until the echo is back (stdin's end
  # makes it close the session, which must not come before the echo).
  rm -f "$workdir/in"; mkfifo "$workdir/in"
  timeout 20 openssl s_client -connect "$addr" -servername localhost -CAfile "$workdir/cert.pem" \
    -verify_return_error -brief < "$workdir/in" > "$workdir/s_client.out" 2>/dev/null &
  s_client=$!
  exec 3> "$workdir/in"
  echo "hello over tls" >&3
  for _ in $(seq 100); do
    grep -q '^hello over tls$' "$workdir/s_client.out" && break
    sleep 0.1
  done
  exec 3>&-
  wait "$s_client" || fail "openssl s_client failed"
  grep -q '^hello over tls$' "$workdir/s_client.out" || fail "openssl s_client got no echo"
  echo "openssl s_client: echoed, certificate verified"
  stop_server
done

echo "== tls-echo-server with its own self-signed certificate"
start_server
ca=$(grep -o '[^ ]*/cert\.pem' "$workdir/server.err" | head -n 1)
[ -s "$ca" ] || fail "the server named no certificate file"
timeout 120 "$client_bin" --connect "$addr" --ca "$ca" --conns 2 --bytes 100000 --chunk 1000 \
  || fail "tls-echo-client against the self-signed server"
stop_server
rm -rf "$(dirname "$ca")"
