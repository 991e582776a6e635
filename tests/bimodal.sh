#!/bin/bash
# make check: the bimodal table's server and client work together (issue 20)
# -- a smoke test, not a measurement: nothing here depends on the speed of
# the machine or on idle CPUs.
#
# bench/bimodal_server runs on one worker under libgreen-preload.so with a
# 100 us quantum, then with --pthreads; bench/bimodal_load sends each of them
# 1 s of Poisson arrivals at 5% of a CPU, 2% of them 2 ms long, over 64
# connections, and every request must be answered (errors=0, and as many
# requests as the schedule had).  Run from the build directory (automake does).
set -u
top=${abs_top_builddir:-.}
shim=$top/preload/.libs/libgreen-preload.so
prog=$top/bench/.libs/bimodal_server
test -x "$prog" || prog=$top/bench/bimodal_server
load=$top/bench/bimodal_load

fail() { echo "bimodal.sh: FAIL: $*"; exit 1; }
. "$(dirname "$0")/../examples/echo_port.sh"
test -f "$shim" || { echo "bimodal.sh: $shim not built (static only?): skipped"; exit 77; }

. "$(dirname "$0")/shim_preload.sh"
preload=$(shim_preload "$prog" "$shim")

out=$(mktemp) || fail "mktemp"
pid=
trap 'test -n "$pid" && kill $pid 2>/dev/null; rm -f "$out" "$out.err" "$out.load"' EXIT

serve_and_load() { # label env... -- program args...: start, load, check, stop
    local label=$1
    shift
    env "$@" >"$out" 2>"$out.err" &
    pid=$!
    port=$(echo_port "$out" "$pid") || fail "$label: the server did not start: $(cat "$out.err")"
    "$load" --port "$port" --load 5 --secs 1 --warmup 0.1 --short-us 5 --long-us 2000 \
        --long-frac 0.02 --seed 7 >"$out.load" 2>&1 || fail "$label: bimodal_load: $(cat "$out.load")"
    kill $pid
    wait $pid 2>/dev/null
    pid=
    grep -q ' errors=0$' "$out.load" || fail "$label: unanswered requests: $(cat "$out.load")"
    grep -Eq ' reqs=[1-9][0-9]* long=[1-9]' "$out.load" || fail "$label: no requests: $(cat "$out.load")"
    echo "bimodal.sh: $label: $(cat "$out.load")"
}

serve_and_load libgreen GREEN_WORKERS=1 GREEN_QUANTUM_US=100 LD_PRELOAD="$preload" \
    LD_LIBRARY_PATH="$top/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$prog"
serve_and_load pthreads LD_LIBRARY_PATH="$top/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$prog" --pthreads
echo "bimodal.sh: PASS"
