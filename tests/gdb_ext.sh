#!/bin/sh
# make check: the gdb extension (gdb/libgreen-gdb.py), in a live process and
# in a core.
#
# tests/gdb_scene holds a green mutex in a thread parked on a channel
# ("holder"), parks a second thread on that mutex ("waiter") and keeps a
# third computing ("spinner").  gdb -batch, with the extension sourced,
# attaches to it: `info green-threads` must list each one with its state,
# the call and object it waits on and the mutex's holder, and
# `green-thread N` must print each one's backtrace -- from its saved
# context, or its worker's own stack for the spinner -- down to the test's
# own functions and green__ctx_entry, where every green stack begins (and,
# with `full`, the holder's local variable in its own function).  Then
# a thread preempted by the signal (tests/gdb_scene preempt: one worker, two
# spinners), whose backtrace must lead through the preemption trampoline to
# the loop it was interrupted in.  Then the first checks again, against a
# core of the program.
#
# The core is the kernel's (ulimit -c, kill -ABRT): gdb's gcore drops every
# green stack on Linux 6.13 and later (gdb/libgreen-gdb.py says why).  The
# program runs with its address space limited (ulimit -v), so that libgreen
# reserves gigabytes for its pools rather than a terabyte, which the kernel
# would take half a minute to walk when it dumps.  Skipped: without gdb (or
# its Python); the core half, when the kernel sends cores to a program
# (core_pattern |...) or elsewhere, or under AddressSanitizer (which turns
# core dumps off).  Run from the build directory (automake does).
set -u
top=${abs_top_builddir:-.}
src=${srcdir:-$(dirname "$0")/..}
me=gdb_ext.sh
ext=$src/gdb/libgreen-gdb.py
command -v gdb >/dev/null 2>&1 || { echo "$me: gdb not found (Debian: install gdb): skipped"; exit 77; }
gdb -nx -batch -ex 'python import gdb.unwinder' >/dev/null 2>&1 ||
    { echo "$me: this gdb has no Python (the extension needs it): skipped"; exit 77; }
test -x "$top/tests/gdb_scene" || { echo "$me: tests/gdb_scene not built"; exit 1; }
test -f "$ext" || { echo "$me: $ext not found"; exit 1; }

work=$(mktemp -d) || exit 1
pid=
cleanup() {
    test -n "$pid" && kill -9 "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fails=0
fail() { echo "$me: FAIL: $*"; fails=$((fails + 1)); }

# Start the scene (in $1, as the current directory, after the shell
# commands $2: limits; $3: its mode, "preempt" or none) and wait for its "ready PID" line: sets pid, and exe
# (the program, not libtool's wrapper).
start_scene() {
    dir=$1 limits=$2 mode=${3:-}
    (cd "$dir" && eval "$limits" && exec timeout 120 "$top/tests/gdb_scene" 100 $mode) \
        >"$dir/scene.out" 2>&1 &
    pid=
    for _ in $(seq 100); do
        pid=$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$dir/scene.out")
        if [ -n "$pid" ]; then
            exe=$(readlink "/proc/$pid/exe")
            return 0
        fi
        sleep 0.1
    done
    echo "$me: FAIL: tests/gdb_scene did not start; it said:"
    cat "$dir/scene.out"
    exit 1
}

# gdb -batch on the target ($1: "-p PID" or "PROGRAM CORE"), the extension
# sourced, then the commands given; output in $out.
run_gdb() {
    target=$1; shift
    set -- -ex "source $ext" "$@"
    # shellcheck disable=SC2086
    "$top/libtool" --mode=execute timeout 60 gdb -nx -batch $target "$@" >"$out" 2>&1
}

# The id `info green-threads` gives the thread named $1.
id_of() {
    sed -n "s/^  green thread \([0-9]*\) \"$1\".*/\1/p" "$out"
}

expect() {
    grep -Eq "$2" "$out" || fail "$1: no line matching /$2/"
}

# The whole check, against one target; $1 names it in messages.
check() {
    what=$1 target=$2
    out=$work/$what-list.txt
    run_gdb "$target" -ex "info green-threads"
    echo "$me: $what: info green-threads:"
    sed -n '/^libgreen: /,$p' "$out"
    main=$(id_of main) holder=$(id_of holder) waiter=$(id_of waiter) spinner=$(id_of spinner)
    if [ -z "$main" ] || [ -z "$holder" ] || [ -z "$waiter" ] || [ -z "$spinner" ]; then
        fail "$what: info green-threads does not list main, holder, waiter and spinner; gdb said:"
        cat "$out"
        return
    fi
    expect "$what" '^libgreen: 1 run$'
    expect "$what" '^run 1: 2 workers \(LWP [0-9]+ [0-9]+\), 5 green threads$'
    expect "$what" "^  green thread $main \"main\" \\(main\\): parked in green_sleep\$"
    expect "$what" "^  green thread $holder \"holder\": parked in green_chan_recv on 0x[0-9a-f]+\$"
    expect "$what" "^  green thread $waiter \"waiter\": parked in green_mutex_lock on 0x[0-9a-f]+ <scene_mutex>, held by green thread $holder \"holder\"\$"
    expect "$what" "^  green thread [0-9]+ \"reader\": parked in green_fd_wait on fd [0-9]+ \\(in\\)\$"
    expect "$what" "^  green thread $spinner \"spinner\": running on worker [01] \\(LWP [0-9]+\\)\$"

    out=$work/$what-bt.txt
    run_gdb "$target" -ex "green-thread $holder" -ex "echo ==waiter\\n" \
        -ex "green-thread $waiter" -ex "echo ==spinner\\n" -ex "green-thread $spinner" \
        -ex "echo ==main\\n" -ex "green-thread $main" -ex "echo ==full\\n" \
        -ex "green-thread $holder full" -ex "echo ==end\\n"
    echo "$me: $what: green-thread $holder, $waiter, $spinner, $main, $holder full:"
    sed -n '/^green thread /,$p' "$out"
    all=$out
    for part in holder waiter spinner main; do
        out=$work/$what-$part.txt
        case $part in
            holder) sed -n '/^green thread /,/^==waiter/p' "$all" ;;
            waiter) sed -n '/^==waiter/,/^==spinner/p' "$all" ;;
            spinner) sed -n '/^==spinner/,/^==main/p' "$all" ;;
            main) sed -n '/^==main/,/^==full/p' "$all" ;;
        esac >"$out"
        case $part in
            holder) fns="green__switch green_chan_recv gdb_scene_hold_and_wait holder_fn" ;;
            waiter) fns="green__switch green__park gdb_scene_lock waiter_fn" ;;
            spinner) fns="gdb_scene_spin spinner_fn" ;;
            main) fns="green__switch green_sleep_ns scene_main" ;;
        esac
        for f in $fns green__call_entry green__ctx_entry; do
            expect "$what: green-thread ($part)" "^#[0-9]+ +(0x[0-9a-f]+ in )?$f \\("
        done
        [ "$part" = spinner ] || expect "$what: green-thread ($part)" "^#0  0x[0-9a-f]+ in green__switch \\("
    done
    # `full`: the holder's frame in gdb_scene_hold_and_wait, then its local v.
    out=$work/$what-full.txt
    sed -n '/^==full/,/^==end/p' "$all" | grep -A1 -E "^#[0-9]+ +0x[0-9a-f]+ in gdb_scene_hold_and_wait \(" >"$out"
    # (Under AddressSanitizer v lives in ASan's own frame: gdb names it,
    # without a value.)
    if [ -n "${ASAN_OPTIONS:-}" ]; then
        expect "$what: green-thread $holder full" "^        v = (-?[0-9]+|<optimized out>)\$"
    else
        expect "$what: green-thread $holder full" "^        v = -?[0-9]+\$"
    fi
    out=$all
    if grep -Eq "Backtrace stopped|corrupt stack|Python Exception|Error occurred|^no green thread" "$out"; then
        fail "$what: gdb complained:"
        grep -E "Backtrace stopped|corrupt stack|Python Exception|Error occurred|^no green thread" "$out"
    fi
}

# ---- A live process --------------------------------------------------------
scope=$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)
if [ "$scope" != 0 ] && [ "$(id -u)" != 0 ]; then
    echo "$me: gdb may not attach (kernel.yama.ptrace_scope is $scope, and not root): skipped"
    exit 77
fi
mkdir "$work/live"
start_scene "$work/live" true
check live "-p $pid"
kill -9 "$pid" 2>/dev/null
wait
pid=

# ---- A preempted thread ------------------------------------------------------
# One worker, two spinners: one runs, the other was preempted by the signal
# and waits pinned to the worker.  Its backtrace goes from the switch through
# the preemption trampoline (a signal frame to gdb) to the loop it was
# interrupted in.  gdb may stop the program in the middle of a switch, when
# neither spinner is both preempted and switched out: then it tries again.
mkdir "$work/preempt"
start_scene "$work/preempt" true preempt
ok=
for try in 1 2 3; do
    out=$work/preempt-$try.txt
    run_gdb "-p $pid" -ex "info green-threads" -ex "echo ==4\\n" -ex "green-thread 4" \
        -ex "echo ==5\\n" -ex "green-thread 5" -ex "echo ==end\\n"
    for id in 4 5; do
        # The paragraph of thread $id: a preempted thread's frames in order.
        if sed -n "/^==$id\$/,/^==/p" "$out" | grep -q ": runnable, preempted and pinned to worker 0\$" &&
            sed -n "/^==$id\$/,/^==/p" "$out" | tr '\n' ' ' |
                grep -Eq "#0  0x[0-9a-f]+ in green__switch \(.*<signal handler called> #2  0x[0-9a-f]+ in gdb_scene_spin \(.* spinner_fn \(.* green__ctx_entry \("; then
            ok=$id
        fi
    done
    [ -n "$ok" ] && break
done
if [ -n "$ok" ]; then
    echo "$me: preempted: green-thread $ok (try $try):"
    sed -n "/^==$ok\$/,/^==/p" "$out" | sed '/^==/d'
else
    fail "preempted: no spinner was shown preempted, down to gdb_scene_spin, in 3 tries; the last:"
    cat "$out"
fi
kill -9 "$pid" 2>/dev/null
wait
pid=

# ---- A core ----------------------------------------------------------------
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo core)
why=
case $pattern in
    "|"*) why="the kernel sends cores to a program (core_pattern is $pattern)" ;;
    /*) why="the kernel writes cores elsewhere (core_pattern is $pattern)" ;;
esac
[ -n "${ASAN_OPTIONS:-}" ] && why="AddressSanitizer turns core dumps off"
if [ -z "$why" ] && ! (ulimit -c unlimited) 2>/dev/null; then
    why="no core dumps allowed here (ulimit -Hc is $(ulimit -Hc))"
fi
if [ -n "$why" ]; then
    echo "$me: the core half skipped: $why (the live half: $fails failures)"
    [ "$fails" = 0 ] && exit 77
    exit 1
fi
mkdir "$work/core"
start_scene "$work/core" "ulimit -c unlimited && ulimit -v 8000000"
kill -ABRT "$pid"
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
wait
pid=
core=
for f in "$work/core"/core*; do
    [ -f "$f" ] && core=$f
done
if [ -z "$core" ]; then
    fail "no core file written in $work/core (core_pattern: $pattern)"
else
    check core "$exe $core"
fi

if [ "$fails" != 0 ]; then
    echo "$me: $fails failures"
    exit 1
fi
echo "$me: ok: info green-threads and green-thread, live and in a core"
