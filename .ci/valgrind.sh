#!/usr/bin/env bash
# Valgrind memcheck over a subset of the test suite, on the epoll backend.
#
# Builds the test binaries (release profile, which keeps debug info), then runs each selected
# test in a process of its own under
#   valgrind --error-exitcode=1 --leak-check=full --suppressions=.ci/valgrind.supp
# with GAIO_BACKEND=epoll (the io_uring half skips: memcheck does not model io_uring's shared
# rings, so it cannot check what the kernel writes into them) and NEXTEST_EXECUTION_MODE set as
# nextest sets it, so the descriptor-counting tests run their checks. Any memcheck error, any
# definite or possible leak not covered by the suppression file (std noise only, justified
# there), or a failing test fails the script. It prints each test and the total time; about two
# minutes on the 2-core machine it was written on, so .ci/run runs it.
#
#   bash .ci/valgrind.sh            # the subset below
#   bash .ci/valgrind.sh faults epoll::peer_half_close   # one test of one file
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is not installed (apt-get install valgrind)" >&2
  exit 1
fi

build=$(cargo test --release --no-run 2>&1) || { echo "$build" >&2; exit 1; }
bin() {
  if [ "$1" = lib ]; then
    echo "$build" | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | head -1
  else
    echo "$build" | sed -n "s/.*Executable tests\/$1.rs (\(.*\))/\1/p" | head -1
  fi
}

export GAIO_BACKEND=epoll
export NEXTEST_EXECUTION_MODE=process-per-test
export PROPTEST_CASES=12
VG=(valgrind --error-exitcode=1 --leak-check=full --suppressions=.ci/valgrind.supp -q)

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Output of a test that passes cleanly is dropped; a failure's is shown whole.
run() {
  local file=$1 test=$2 exe
  exe=$(bin "$file")
  [ -n "$exe" ] || { echo "no test binary for $file" >&2; exit 1; }
  local t0=$SECONDS
  if "${VG[@]}" "$exe" "$test" --exact --test-threads=1 -q >"$log" 2>&1; then
    echo "ok   $file $test ($((SECONDS - t0)) s)"
  else
    echo "FAIL $file $test"
    cat "$log"
    failed+=("$file $test")
  fi
}

start=$SECONDS
if [ $# -eq 2 ]; then
  run "$1" "$2"
else
  # The library's unit tests (swap slices, the deadline heap, connection ids), all of them.
  if "${VG[@]}" "$(bin lib)" --test-threads=1 -q >"$log" 2>&1; then
    echo "ok   lib (all unit tests)"
  else
    echo "FAIL lib (all unit tests)"
    cat "$log"
    failed+=("lib")
  fi
  for t in echo_tiny context_passing eof_fan_out; do run echo "epoll::$t"; done
  for t in free_pending_reads close_fails_pending_requests pending_request_keeps_conn \
           no_leak_after_free no_leak_after_close no_leak_after_watcher_drop; do
    run lifecycle "epoll::$t"
  done
  for t in read_full_deadline_keeps_partial free_is_not_deadline; do run deadline "epoll::$t"; done
  for t in connect_and_echo cancel_keeps_partial_progress pipe_read_write_eof detach_with_pending; do
    run ops "epoll::$t"
  done
  # write_deadline_peer_never_reads is left out: it asserts a deadline fires within 1 s of
  # its instant, which memcheck's slowdown (pushing 64 MiB through send) can break.
  for t in peer_reset_during_read_full peer_half_close \
           close_while_wait_io_blocks consumer_pauses submissions_from_8_threads \
           free_and_close_with_thousands_in_flight; do
    run faults "epoll::$t"
  done
  for t in zero_length_buffers closed_and_never_open_descriptors non_socket_descriptors \
           listening_socket_given_to_read past_and_far_deadlines every_call_after_close; do
    run bad_input "epoll::$t"
  done
  run model epoll::model
  run model_files epoll::model_files
  run model_conns epoll::model_conns
fi

echo "== valgrind: $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'valgrind found errors or a test failed in: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "valgrind: clean"
