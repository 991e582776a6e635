#!/bin/sh
# make check: SQLite, unmodified, from 20 green threads at once under
# LD_PRELOAD=libgreen-preload.so (tests/sqlite_clients.c): its pthread mutex
# held across file I/O that parks, its busy handler's sleeps, and CPU-heavy
# queries, in the delete and WAL journal modes, on 1 and 2 workers, with
# preemption by signal (50 us quantum) and without.  $SQLITE_RUNS runs per
# configuration (default 20), each under `timeout 60`; fails on a wrong row
# count, an SQLite error, a hang or a crash, and shows the failing run's
# output.
#
# Run from the build directory (automake does).  Skips (77) when
# tests/sqlite_clients was built without SQLite (install libsqlite3-dev).
set -u
unset GREEN_UNSAFE GREEN_PREEMPTIBLE

top=${abs_top_builddir:-.}
runs=${SQLITE_RUNS:-20}
shim=$top/preload/.libs/libgreen-preload.so
prog=$top/tests/.libs/sqlite_clients
test -x "$prog" || prog=$top/tests/sqlite_clients
test -x "$prog" || { echo "sqlite.sh: skipped: tests/sqlite_clients not built"; exit 77; }
test -f "$shim" || { echo "sqlite.sh: skipped: $shim not built (static only?)"; exit 77; }
libs=$top/.libs:$top/preload/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
LD_LIBRARY_PATH=$libs "$prog" >/dev/null 2>&1
case $? in
2) ;;
77) echo "sqlite.sh: skipped: tests/sqlite_clients was built without SQLite: install" \
        "libsqlite3-dev, then rerun configure"; exit 77 ;;
*) echo "sqlite.sh: ERROR: tests/sqlite_clients does not run"; exit 99 ;;
esac

. "$(dirname "$0")/shim_preload.sh"
preload=$(shim_preload "$prog" "$shim")

dir=$(mktemp -d "${TMPDIR:-/tmp}/green-sqlite.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
status=0
for journal in delete wal; do
    for workers in 1 2; do
        for preempt in signal off; do
            ok=0 hung=0 bad=0 t0=$(date +%s)
            r=0
            while test $r -lt "$runs"; do
                r=$((r + 1))
                rm -f "$dir"/db "$dir"/db-*
                GREEN_WORKERS=$workers GREEN_PREEMPT=$preempt GREEN_QUANTUM_US=50 \
                    LD_LIBRARY_PATH=$libs timeout 60 env LD_PRELOAD="$preload" \
                    "$prog" "$dir/db" $journal 20 10 >"$dir/out" 2>&1
                rc=$?
                if test $rc -eq 0; then
                    ok=$((ok + 1))
                else
                    if test $rc -eq 124; then hung=$((hung + 1)); else bad=$((bad + 1)); fi
                    cp "$dir/out" "$dir/failed"
                    echo "sqlite.sh: run $r ($journal, $workers workers, $preempt) exit $rc"
                    test $rc -eq 124 && break   # one hang is enough to know
                fi
            done
            echo "sqlite.sh: $journal, $workers workers, preempt=$preempt: $ok/$r ok," \
                "$hung hung, $bad failed, $(( $(date +%s) - t0 )) s"
            if test $ok -ne "$runs"; then
                status=1
                sed 's/^/    /' "$dir/failed" | tail -20
            fi
        done
    done
done
exit $status
