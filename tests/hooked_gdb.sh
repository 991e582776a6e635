#!/bin/sh
# make check: gdb reads a backtrace through a hooked return.
#
# tests/hooked_stop raises SIGTRAP while qsort's return address is
# libgreen's trampoline (a preemption refused in libc, to be taken on the
# way out).  The trampoline's unwind information must lead gdb on to the
# real callers: the backtrace shows green__hooked_return, then sort_caller
# and hooked_thread, down to green__call_entry, and gdb finds nothing
# corrupt on the way.  Run from the build directory (automake does).
set -u
top=${abs_top_builddir:-.}
command -v gdb >/dev/null 2>&1 || { echo "hooked_gdb.sh: gdb not found (Debian: install gdb): skipped"; exit 77; }
test -x "$top/tests/hooked_stop" || { echo "hooked_gdb.sh: tests/hooked_stop not built"; exit 1; }

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
"$top/libtool" --mode=execute timeout 60 gdb -nx -batch \
    -ex "handle SIGALRM nostop noprint pass" \
    -ex run -ex bt -ex kill "$top/tests/hooked_stop" >"$out" 2>&1
fail=
grep -q "SIGTRAP" "$out" || fail="the program did not stop on its SIGTRAP"
for f in green__hooked_return sort_caller hooked_thread green__call_entry; do
    grep -q "in $f \|^#0  $f " "$out" || fail="${fail:+$fail; }no frame $f in the backtrace"
done
if grep -qi "corrupt\|Backtrace stopped" "$out"; then
    fail="${fail:+$fail; }gdb stopped early"
fi
if [ -n "$fail" ]; then
    echo "hooked_gdb.sh: FAIL: $fail; gdb said:"
    cat "$out"
    exit 1
fi
echo "hooked_gdb.sh: ok: gdb's backtrace reads through a hooked return:"
sed -n '/^#/p' "$out"
