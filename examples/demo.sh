#!/bin/sh
# The first command of README.md: build libgreen (no tests) and run the
# token ring example.  Arguments are passed on to examples/token_ring.
#   JOBS=n   parallel make jobs (default 2)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}

packages="build-essential autoconf automake libtool pkg-config libunwind-dev"

. tests/prepare.sh
. examples/echo_port.sh
# shellcheck disable=SC2086
install_missing demo.sh $packages
bootstrap
mkdir -p build
(cd build && ../configure --disable-tests && make -j"$jobs")

echo "==> build/examples/token_ring $*"
build/examples/token_ring "$@"
echo
echo "==> build/examples/preempt_demo"
build/examples/preempt_demo
echo
echo "==> build/examples/race_hunt   (deterministic runs: find a race by seed, replay it)"
build/examples/race_hunt
echo

# The echo server in plain blocking calls, a thread per connection: green
# threads under the LD_PRELOAD shim, then pthreads, each loaded for 3 s by
# 2000 connections (bench/echo_bench.sh is the full table, beside Go).
(cd build && make -j"$jobs" bench/echo_load >/dev/null)
echo "==> examples/echo_server under LD_PRELOAD=libgreen-preload.so, and with --pthreads"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for mode in green pthreads; do
    out=$(mktemp)
    if test $mode = green; then
        GREEN_WORKERS=2 LD_PRELOAD=$PWD/build/preload/.libs/libgreen-preload.so \
            LD_LIBRARY_PATH=$PWD/build/.libs build/examples/.libs/echo_server >"$out" &
    else
        LD_LIBRARY_PATH=$PWD/build/.libs build/examples/.libs/echo_server --pthreads >"$out" &
    fi
    pid=$!
    port=$(echo_port "$out" "$pid")
    printf '%-9s ' "$mode"
    build/bench/echo_load --port "$port" --conns 2000 --secs 3 --warmup 1 2>/dev/null | tail -1
    kill "$pid"
    wait "$pid" 2>/dev/null || true  # killed: not a failure
    rm -f "$out"
done
