#!/bin/bash
# make check: an unmodified blocking program under LD_PRELOAD.
#
# examples/echo_server (accept() in a loop, a green thread per connection
# doing read() and write()) runs on ONE worker with libgreen-preload.so
# preloaded.  This script opens 50 connections at once and keeps them all
# open, then sends a line on each, last first, and reads every echo.
# Without the shim the worker would sit in the first connection's read()
# and no other connection would ever be served (read -t times out).
# Run from the build directory (automake does).
set -u
top=${abs_top_builddir:-.}
shim=$top/preload/.libs/libgreen-preload.so
prog=$top/examples/.libs/echo_server
test -x "$prog" || prog=$top/examples/echo_server
conns=50

fail() { echo "preload.sh: FAIL: $*"; exit 1; }
. "$(dirname "$0")/../examples/echo_port.sh"
test -f "$shim" || { echo "preload.sh: $shim not built (static only?): skipped"; exit 77; }

. "$(dirname "$0")/shim_preload.sh"
preload=$(shim_preload "$prog" "$shim")

out=$(mktemp) || fail "mktemp"
GREEN_WORKERS=1 LD_PRELOAD=$preload LD_LIBRARY_PATH=$top/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    "$prog" --max-conns $conns >"$out" 2>"$out.err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out" "$out.err"' EXIT

port=$(echo_port "$out" "$pid") || fail "echo_server did not start: $(cat "$out.err")"

declare -a fds
for i in $(seq $conns); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connection $i refused"
    fds[i]=$fd
done
for i in $(seq $conns -1 1); do
    echo "line $i" >&"${fds[i]}" || fail "write on connection $i"
done
for i in $(seq $conns -1 1); do
    read -r -t 5 line <&"${fds[i]}" || fail "no echo on connection $i within 5 s (a worker blocked?)"
    test "$line" = "line $i" || fail "connection $i echoed '$line'"
done
for i in $(seq $conns); do
    exec {fds[i]}>&-
done
wait $pid || fail "echo_server exited with $?: $(cat "$out.err")"
trap - EXIT
rm -f "$out" "$out.err"
echo "preload.sh: ok: $conns connections held open at once, all echoed, on one worker under LD_PRELOAD"
