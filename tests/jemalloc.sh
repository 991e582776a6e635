#!/bin/sh
# make check: green threads on jemalloc, one worker, a 50 us quantum.
#
# jemalloc (preloaded, as users do) keeps a cache and mutexes per OS thread;
# preempting a green thread inside it leaves the next green thread on that
# worker to deadlock on the mutex or to corrupt the cache.  tests/alloc_canaries
# runs 8 threads of malloc/realloc/free with every byte checked, RUNS times
# (default 20), each under a timeout: no hang, no crash, no changed byte.
# Run from the build directory (automake does).
set -u
top=${abs_top_builddir:-.}
prog=$top/tests/.libs/alloc_canaries
test -x "$prog" || prog=$top/tests/alloc_canaries
runs=${JEMALLOC_RUNS:-20}

jemalloc=
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
    test -f "$d/libjemalloc.so.2" && { jemalloc=$d/libjemalloc.so.2; break; }
done
test -n "$jemalloc" || { echo "jemalloc.sh: libjemalloc.so.2 not found (Debian: install libjemalloc2): skipped"; exit 77; }
if ldd "$prog" 2>/dev/null | grep -q libasan; then
    echo "jemalloc.sh: an ASan build brings its own allocator: skipped"
    exit 77
fi

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
ok=0 failed=0 hung=0 crashed=0 last=
for i in $(seq "$runs"); do
    GREEN_WORKERS=1 GREEN_QUANTUM_US=50 GREEN_PREEMPT=signal LD_PRELOAD=$jemalloc \
        LD_LIBRARY_PATH=$top/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        timeout 30 "$prog" 8 1 >"$out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q "allocator: jemalloc" "$out"; then
        ok=$((ok + 1))
    elif [ $rc -eq 0 ]; then
        echo "jemalloc.sh: FAIL: jemalloc was not the allocator:"; cat "$out"; exit 1
    elif [ $rc -eq 124 ]; then
        hung=$((hung + 1)); last="run $i hung: $(cat "$out")"
    elif [ $rc -ge 128 ]; then
        crashed=$((crashed + 1)); last="run $i died of signal $((rc - 128)): $(cat "$out")"
    else
        failed=$((failed + 1)); last="run $i failed: $(cat "$out")"
    fi
done
echo "jemalloc.sh: $runs runs of 8 threads x 1 s, 1 worker, 50 us quantum: $ok ok, $failed corrupted, $hung hung, $crashed crashed"
echo "jemalloc.sh: the last run: $(cat "$out")"
if [ $ok -ne "$runs" ]; then
    echo "jemalloc.sh: FAIL: $last"
    exit 1
fi
