#!/bin/sh
# bench/instructions.sh BEFORE_BUILD AFTER_BUILD [BENCH...]
#
# Two builds of libgreen side by side in instructions, not seconds:
# valgrind's callgrind counts every instruction green_bench executes
# (the benchmark, libgreen, libc), which on a shared, noisy machine is the
# one figure that repeats to the last digit.  For a change that should cost
# nothing -- a refactor, a move between files -- it says whether it did;
# `make bench` (seconds, beside Go and pthreads) says what a user sees.
#
# Each build directory must have built bench/green_bench (`make bench`, or
# `make bench/green_bench`).  Runs on one worker without preemption, so the
# schedule is the same each time: BENCH (default: yield spawn spawnmany chan
# mutex) with N = $INSTR_N (default 100000) each.  Prints a row per
# benchmark: the instructions of each build, and after/before.
#
# Needs valgrind (Debian: valgrind); exits 77 without it.
set -u
test $# -ge 2 || { echo "usage: bench/instructions.sh BEFORE_BUILD AFTER_BUILD [BENCH...]" >&2; exit 2; }
before=$1 after=$2
shift 2
benches=${*:-yield spawn spawnmany chan mutex}
n=${INSTR_N:-100000}
command -v valgrind >/dev/null 2>&1 || { echo "instructions.sh: valgrind not found (Debian: install valgrind)" >&2; exit 77; }
for d in "$before" "$after"; do
    test -x "$d/bench/green_bench" || { echo "instructions.sh: $d/bench/green_bench not built (make bench/green_bench there)" >&2; exit 2; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/green-instr.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# The instructions one build's green_bench executes for one benchmark.
count() {   # count BUILD BENCH
    prog=$1/bench/.libs/green_bench
    test -x "$prog" || prog=$1/bench/green_bench
    LD_LIBRARY_PATH=$1/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} GREEN_WORKERS=1 GREEN_PREEMPT=off \
        valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$prog" "$2" "$n" \
        > "$tmp/log" 2>&1 || { echo "instructions.sh: $2 failed under valgrind in $1:" >&2; cat "$tmp/log" >&2; exit 1; }
    sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$tmp/log"
}

printf "%-10s %15s %15s %13s   (N = %s, one worker, no preemption)\n" benchmark before after after/before "$n"
for b in $benches; do
    x=$(count "$before" "$b") || exit 1
    y=$(count "$after" "$b") || exit 1
    awk -v b="$b" -v x="$x" -v y="$y" 'BEGIN { printf "%-10s %15d %15d %13.4f\n", b, x, y, y / x }'
done
