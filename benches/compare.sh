#!/usr/bin/env bash
# The one command that regenerates BENCHMARKS.md and docs/benchmarks.svg (issue 5):
#   1. cargo bench --bench compare   gaio against mio, tokio, monoio (target/bench-results/compare.json)
#   2. cargo bench --bench http      if that bench exists (target/bench-results/http.json)
#   3. cargo bench --bench allocs    if that bench exists (target/bench-results/allocs.json)
#   3b. cargo bench --bench precision if that bench exists (target/bench-results/precision.json;
#      about 30 s)
#   3c. cargo bench --features rustls --bench tls (target/bench-results/tls.json and
#      benches/results/tls.md; about 1 minute)
#   3d. cargo bench --bench udp (target/bench-results/udp.json and benches/results/udp.md;
#      about 1 minute)
#   4. cargo bench --bench compare -- --report-only: every target/bench-results/*.json ->
#      BENCHMARKS.md (tables, issue-5 targets) and docs/benchmarks.svg (the chart).
# Results files from earlier runs are removed first, so the report never mixes runs; a bench
# that is missing or fails is reported as "no results", the report is still written, and the
# script then exits non-zero. Run it on an otherwise idle machine, in the foreground; it takes
# about 4 minutes here for compare alone (3 min 56 s in all on 2026-11-21, with http and allocs
# absent), about 8 with both (see benches/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."

results=target/bench-results
mkdir -p "$results"
rm -f "$results"/compare.json "$results"/http.json "$results"/allocs.json "$results"/precision.json \
  "$results"/tls.json "$results"/udp.json

failed=()
start=$(date +%s)
has_bench() { [ -e "benches/$1.rs" ] || [ -e "benches/$1/main.rs" ]; }

echo "== compare"
cargo bench --bench compare || failed+=(compare)

for b in http allocs precision; do
  if has_bench "$b"; then
    echo "== $b"
    cargo bench --bench "$b" || failed+=("$b")
  else
    echo "== $b: no such bench here; the report says so"
  fi
done

# TLS echo against tokio-rustls (about 1 minute), with the feature it needs.
if has_bench tls; then
  echo "== tls"
  cargo bench --features rustls --bench tls || failed+=(tls)
fi

# UDP echo against a hand-written mio loop (about 1 minute).
if has_bench udp; then
  echo "== udp"
  cargo bench --bench udp || failed+=(udp)
fi

echo "== report"
GAIO_BENCH_COMMAND="bash benches/compare.sh" \
  cargo bench --bench compare -- --report-only || failed+=(report)

echo "== done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
