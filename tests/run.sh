#!/bin/sh
# The test command (see README.md): on a fresh Debian 12 machine, as root,
# from a fresh clone.  Installs what is missing, builds out of tree in
# build/ and runs `make check` and `make distcheck`, then `make check` again
# with ASan/UBSan in build-asan/, then builds the Debian packages, installs,
# uses and purges them (tests/debian.sh).
# Exits non-zero on any failure.
#   JOBS=n                   parallel make jobs (default 2)
#   CHECK_JOBS=n             test programs run at once (default 1)
#   STRESS_SECONDS=n         stress run in build/ (default 20)
#   ASAN_STRESS_SECONDS=n    stress run in build-asan/ (default 10)
#   SAFEPOINT_SIGNALS=n      signals the safepoint mix runs for in build/
#                            (default 1000000, about 75 s here)
#   ASAN_SAFEPOINT_SIGNALS=n the same in build-asan/ (default 200000)
#   ASAN_TLS_RUNS=n          runs per configuration of tests/tls.sh in
#                            build-asan/ (default 5; build/ runs TLS_RUNS, 20)
#   ASAN_SQLITE_RUNS=n       the same for tests/sqlite.sh (default 5)
#   EXECS=n                  execs in test_exec's storm in build/ (default 5000)
#   ASAN_EXECS=n             the same in build-asan/ (default 1000)
#   RUN_DISTCHECK=0          skip make distcheck
#   RUN_DEBIAN=0             skip building, installing and purging the .debs
#                            (tests/debian.sh)
#   DISTCHECK_TESTS="..."    the tests `make distcheck` runs in build/ after
#                            the full suite passed there (default: the
#                            scripts that check what the tarball ships and
#                            installs, and the first suite; "" = every test,
#                            ~12 min more)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}
check_jobs=${CHECK_JOBS:-1}
. tests/prepare.sh

# Beyond what a build needs: the libraries and servers the tests run real
# code against (hiredis and redis; libcurl over HTTPS against nginx, libpq
# over TLS against PostgreSQL; SQLite; jemalloc), gdb for a backtrace check, clang
# for a second compiler's view of GREEN_NOPREEMPT.
packages="build-essential autoconf automake libtool pkg-config libunwind-dev libcriterion-dev
    libhiredis-dev redis-server libcurl4-openssl-dev libpq-dev nginx postgresql openssl
    libsqlite3-dev libssl-dev libjemalloc2 gdb clang dpkg-dev debhelper lintian fakeroot git man-db"

# A stage's header, with the time since run.sh began: where CI's minutes go.
started=$(date +%s)
stage() {
    echo "==> $* ($(( $(date +%s) - started )) s in)"
}

# Print the logs of the failing tests (test-suite.log gathers them).
show_logs() {
    if test -f "$1/test-suite.log"; then
        echo "==> $1/test-suite.log"
        cat "$1/test-suite.log"
    fi
}

build() {   # build DIR STRESS_SECONDS SAFEPOINT_SIGNALS EXECS CONFIGURE-ARGS...
    dir=$1; secs=$2; signals=$3; execs=$4; shift 4
    stage "$dir: configure $*"
    mkdir -p "$dir"
    (cd "$dir" && ../configure "$@") || { echo "run.sh: configure failed in $dir (see $dir/config.log)" >&2; exit 1; }
    stage "$dir: make"
    (cd "$dir" && make -j"$jobs") || { echo "run.sh: build failed in $dir" >&2; exit 1; }
    stage "$dir: make check"
    # Build the test programs in parallel, then run the tests one at a time
    # (CHECK_JOBS): timing tests and the stress run must not share the CPUs.
    (cd "$dir" && make -j"$jobs" check TESTS=) || { echo "run.sh: building the tests failed in $dir" >&2; exit 1; }
    if ! (cd "$dir" && STRESS_SECONDS=$secs GREEN_TEST_SIGNALS=$signals GREEN_TEST_EXECS=$execs \
            make -j"$check_jobs" check); then
        show_logs "$dir"
        echo "run.sh: make check failed in $dir" >&2
        exit 1
    fi
    # Criterion does not fail a test whose process LeakSanitizer reports at
    # exit: look for the reports ourselves.
    leaks=$(grep -l "LeakSanitizer: detected memory leaks" "$dir"/tests/*.log \
            "$dir"/tests/stress/*.log 2>/dev/null || true)
    if test -n "$leaks"; then
        for f in $leaks; do echo "==> $f"; cat "$f"; done
        echo "run.sh: LeakSanitizer reported leaks in $dir" >&2
        exit 1
    fi
}

# shellcheck disable=SC2086
install_missing run.sh $packages
bootstrap

build build "${STRESS_SECONDS:-20}" "${SAFEPOINT_SIGNALS:-1000000}" "${EXECS:-5000}"

# The tarball: it builds from a read-only copy of itself, passes its tests,
# installs and uninstalls cleanly (make distcheck).  The full suite has just
# run in build/; here the scripts (layers, exports, man pages, replay, the shim
# under LD_PRELOAD, jemalloc, gdb, the gdb extension) and test_thread, the
# head of the test order (a subset runs every test before the ones it names).
dc_tests=${DISTCHECK_TESTS-tests/layers.sh tests/exports.sh tests/manpages.sh tests/replay.sh tests/preload.sh tests/jemalloc.sh tests/hooked_gdb.sh tests/gdb_ext.sh tests/test_thread}
if test "${RUN_DISTCHECK:-1}" = 1; then
    stage "build: make distcheck${dc_tests:+ (TESTS=$dc_tests)}"
    if test -n "$dc_tests"; then
        (cd build && make -j"$jobs" distcheck TESTS="$dc_tests") || dc_failed=1
    else
        (cd build && make -j"$jobs" distcheck) || dc_failed=1
    fi
    if test -n "${dc_failed:-}"; then
        find build/libgreen-* -name test-suite.log -exec cat {} + 2>/dev/null || true
        echo "run.sh: make distcheck failed in build/" >&2
        exit 1
    fi
fi
# The shim's end-to-end scripts are the longest tests, and slower still
# under ASan; build/ ran them 20 times per configuration for the rare
# races, build-asan/ looks for memory errors in fewer runs.  So for the
# exec storm: an ASan image takes ~35 ms to start, 5000 of them ~3 min.
TLS_RUNS=${ASAN_TLS_RUNS:-5} SQLITE_RUNS=${ASAN_SQLITE_RUNS:-5}
export TLS_RUNS SQLITE_RUNS
build build-asan "${ASAN_STRESS_SECONDS:-10}" "${ASAN_SAFEPOINT_SIGNALS:-200000}" \
    "${ASAN_EXECS:-1000}" --enable-asan

# The Debian packages, built from this tree, installed, used through
# pkg-config and LD_PRELOAD, and purged again (tests/debian.sh).
if test "${RUN_DEBIAN:-1}" = 1; then
    stage "tests/debian.sh"
    sh_rc=0
    bash tests/debian.sh || sh_rc=$?
    if test "$sh_rc" -ne 0; then
        echo "run.sh: tests/debian.sh failed (exit $sh_rc)" >&2
        exit 1
    fi
fi

stage "run.sh: all tests passed (build/ and build-asan/)"
# One closing line for whoever reads only the end: every Criterion test case
# of both builds (the stress runs and the exports check passed above).
cat build/tests/*.log build-asan/tests/*.log 2>/dev/null | awk '
    /Synthesis: Tested:/ { for (i = 1; i <= NF; i++) {
        if ($i == "Passing:") pass += $(i + 1)
        if ($i == "Failing:" || $i == "Crashing:") fail += $(i + 1) } }
    END { printf "tests: %d passed, %d failed\n", pass, fail }'
