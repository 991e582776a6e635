#!/bin/sh
# The ThreadSanitizer and Valgrind runs, which CI does not make (CI runs
# ASan+UBSan): on Debian 12, as root, from the top of a fresh clone.
#   sh tests/sanitizers.sh [tsan] [valgrind]    (default: both)
#   SAN_SECONDS=n   length of each stress run (default 120)
#   JOBS=n          parallel make jobs (default 2)
# Builds in build-tsan/ and build-vg/, writes each run's output to
# <build>/san-*.log, prints one line per run, and exits non-zero if any run
# fails or reports anything.
#
# tsan (configure --enable-tsan): the stress program -- the whole API,
#   randomized, checking its invariants -- in budget and cooperative mode on
#   1 and 2 workers, and token_ring with 4000 threads.  Not signal mode: TSan
#   delays signals to its own safe points.  Not the Criterion suites:
#   Criterion cannot start under TSan (BoxFort maps its arena at fixed
#   addresses in the range TSan keeps for shadow memory: "Could not
#   initialize inheritable arena").
# valgrind (configure --enable-valgrind): memcheck over the stress program
#   and token_ring, and over the Criterion suites that need neither time nor
#   signals, each test process followed (--trace-children), definite leaks
#   counted as errors, with tests/valgrind.supp (libunwind's readability
#   probe).  Budget mode:
#   memcheck does not follow the frame of the deferred trampoline (a refused
#   preemption taken when a GREEN_NOPREEMPT function returns) and reports
#   its pushes as invalid writes.  Left out:
#   test_timer and test_sched (they time what they check, and under memcheck
#   everything runs tens of times slower),
#   test_context (memcheck does not model MXCSR and x87 control words),
#   test_stack (overflow aborts and RSS), and the suites that preempt by
#   signal whatever GREEN_PREEMPT says (test_preempt*, test_safepoint,
#   test_budget, test_netpoll, test_preload, test_faults, test_hostile).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}
secs=${SAN_SECONDS:-120}
what=${*:-tsan valgrind}
. tests/prepare.sh

install_missing sanitizers.sh build-essential autoconf automake libtool pkg-config \
    libunwind-dev libcriterion-dev valgrind
bootstrap

failed=0

configure_in() {   # configure_in DIR CONFIGURE-ARGS...
    dir=$1; shift
    echo "==> $dir: configure $* && make"
    mkdir -p "$dir"
    (cd "$dir" && ../configure "$@" >/dev/null && make -j"$jobs" >/dev/null &&
        make -j"$jobs" check TESTS= >/dev/null) ||
        { echo "sanitizers.sh: the build failed in $dir" >&2; exit 1; }
}

# judge NAME LOG RC PATTERN: the run passed if it exited 0 and its output
# has no line matching PATTERN (a sanitizer's or memcheck's report).
judge() {
    reports=$(grep -cE "$4" "$2" || true)
    summary=$(grep -hE '^stress: ok|Synthesis|as it should' "$2" | tail -1)
    if test "$3" -eq 0 && test "$reports" -eq 0; then
        echo "ok   $1: $summary"
    else
        echo "FAIL $1: exit $3, $reports reports (see $2) $summary"
        failed=1
    fi
}

run_tsan() {
    configure_in build-tsan --enable-tsan
    for mode in budget off; do
        for w in 1 2; do
            log=build-tsan/san-stress-$mode-$w.log
            rc=0
            GREEN_PREEMPT=$mode build-tsan/tests/stress/stress --seconds "$secs" \
                --workers "$w" >"$log" 2>&1 || rc=$?
            judge "tsan stress $mode, $w workers" "$log" "$rc" 'ThreadSanitizer'
        done
    done
    log=build-tsan/san-token_ring.log
    rc=0
    GREEN_PREEMPT=budget build-tsan/examples/token_ring 4000 3 >"$log" 2>&1 || rc=$?
    judge "tsan token_ring 4000 3" "$log" "$rc" 'ThreadSanitizer'
}

run_valgrind() {
    configure_in build-vg --enable-valgrind
    vg="./libtool --mode=execute valgrind -q --error-exitcode=99 --leak-check=full
        --show-leak-kinds=definite --errors-for-leak-kinds=definite
        --suppressions=$root/tests/valgrind.supp"
    log=build-vg/san-stress.log
    rc=0
    (cd build-vg && GREEN_PREEMPT=budget $vg tests/stress/stress --seconds "$secs" \
        --workers 2 --hang 900) >"$log" 2>&1 || rc=$?
    judge "memcheck stress budget, 2 workers" "$log" "$rc" '^==[0-9]+== '
    log=build-vg/san-token_ring.log
    rc=0
    (cd build-vg && GREEN_PREEMPT=budget $vg examples/token_ring 1000 3) >"$log" 2>&1 || rc=$?
    judge "memcheck token_ring 1000 3" "$log" "$rc" '^==[0-9]+== '
    for t in test_thread test_mutex test_cond test_chan test_select test_wg \
             test_deadlock test_run test_errors test_deterministic; do
        log=build-vg/san-$t.log
        rc=0
        (cd build-vg && abs_top_builddir=$PWD CRITERION_JOBS=1 GREEN_PREEMPT=budget \
            $vg --trace-children=yes "tests/$t") >"$log" 2>&1 || rc=$?
        judge "memcheck $t" "$log" "$rc" '^==[0-9]+== '
    done
}

for w in $what; do
    case $w in
    tsan) run_tsan ;;
    valgrind) run_valgrind ;;
    *) echo "sanitizers.sh: unknown run '$w' (tsan, valgrind)" >&2; exit 2 ;;
    esac
done
test "$failed" -eq 0 && echo "==> sanitizers.sh: every run clean"
exit "$failed"
