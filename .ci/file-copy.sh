#!/usr/bin/env bash
# File copy on both backends: builds the file-copy example (release) and copies a generated
# 256 MiB file with GAIO_BACKEND=epoll and GAIO_BACKEND=uring, buffered and with --direct
# (O_DIRECT), 32 requests in flight; then an odd-sized file (3 MiB + 4321 bytes, 64 KiB blocks)
# the same four ways, which exercises the O_DIRECT tail (padded write, then set_len). The
# example verifies every copy byte for byte and exits non-zero on any error or difference;
# each run is bounded by `timeout`. Files live under target/ (on the project's disk, which
# supports O_DIRECT; /tmp may be tmpfs) and are removed at the end. About 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the file-copy example (release)"
cargo build --release --example file-copy

bin=target/release/examples/file-copy
dir=target/file-copy-ci
rm -rf "$dir"
mkdir -p "$dir"
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT

fail() {
  echo "file-copy: FAIL: $*" >&2
  exit 1
}

head -c $((256 << 20)) /dev/urandom >"$dir/big.src"
head -c $(((3 << 20) + 4321)) /dev/urandom >"$dir/odd.src"

# As the test suite does: io_uring is skipped only where the kernel disables it.
backends=(epoll uring)
if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 0 ]; then
  echo "note: io_uring disabled by the kernel (kernel.io_uring_disabled); epoll only"
  backends=(epoll)
fi

for backend in "${backends[@]}"; do
  for direct in "" --direct; do
    for f in big odd; do
      extra=()
      [ "$f" = odd ] && extra=(--block 65536)
      rm -f "$dir/$f.dst"
      GAIO_BACKEND=$backend timeout 60 "$bin" "$dir/$f.src" "$dir/$f.dst" $direct "${extra[@]}" \
        || fail "$f file, GAIO_BACKEND=$backend ${direct:-buffered} (exit $?)"
      # Belt and braces: the example verified the copy itself; cmp says the same.
      cmp -s "$dir/$f.src" "$dir/$f.dst" || fail "$f file differs (GAIO_BACKEND=$backend ${direct:-buffered})"
    done
  done
done
echo
echo "file-copy: PASS (${backends[*]}; buffered, O_DIRECT; 256 MiB and odd-sized)"
