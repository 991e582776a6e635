#!/usr/bin/env bash
# bench/echo_bench.sh BUILD_DIR -- the echo table (issue 6): one echo server
# written with plain blocking calls, on green threads under the preload shim,
# beside the same program on one pthread per connection and beside Go.
#
# Servers (each a fresh process per run, on 127.0.0.1, any free port):
#   green    BUILD_DIR/examples/echo_server under
#            LD_PRELOAD=BUILD_DIR/preload/.libs/libgreen-preload.so,
#            GREEN_WORKERS=ECHO_WORKERS
#   pthread  the same program with --pthreads (64 KiB stacks; no shim)
#   go       BUILD_DIR/bench/go_bench echo_server, GOMAXPROCS=ECHO_WORKERS
# Load: BUILD_DIR/bench/echo_load, C connections each in a closed loop of
# 64-byte ping-pongs, ECHO_WARMUP s of warm-up then ECHO_SECS s measured; it
# prints rps and latency percentiles.  For every C, ECHO_REPS repetitions;
# within each the three servers alternate, starting one further along in
# each repetition.  The table shows medians; raw figures go to the log.
#
# Environment (all optional):
#   ECHO_CONNS     connection counts ("100 1000 10000")
#   ECHO_REPS      repetitions (3)
#   ECHO_SECS      measured seconds per run (5)
#   ECHO_WARMUP    warm-up seconds per run (1)
#   ECHO_THREADS   echo_load's threads (1)
#   ECHO_WORKERS   GREEN_WORKERS and GOMAXPROCS (2)
#   ECHO_SHIM      the shim (BUILD_DIR/preload/.libs/libgreen-preload.so);
#                  missing: the libgreen column is n/a
#   ECHO_LOG       append raw figures here (run.sh passes its log); unset:
#                  BUILD_DIR/bench/echo.log, emptied first
#   GO_BENCH       the Go peer's binary; set but empty: no Go column; unset:
#                  built here as run.sh does it (GO: the go binary)
#   ECHO_BASE      another build directory (an earlier commit's): its green
#                  server and shim run as a fourth column, "base", and a
#                  second table gives libgreen / base
#   GREEN_*        passed to the green servers (GREEN_WORKERS is ECHO_WORKERS)
# Only bash, awk and coreutils.
set -u

die() { echo "echo_bench.sh: $*" >&2; exit 1; }
. "$(dirname "$0")/../examples/echo_port.sh"

. "$(dirname "$0")/stats.sh"
bench_dirs "$@"

CONNS=${ECHO_CONNS:-100 1000 10000}
REPS=${ECHO_REPS:-3}
SECS=${ECHO_SECS:-5}
WARMUP=${ECHO_WARMUP:-1}
THREADS=${ECHO_THREADS:-1}
WORKERS=${ECHO_WORKERS:-2}
SHIM=${ECHO_SHIM:-$BUILD/preload/.libs/libgreen-preload.so}
RAMP=30                                   # echo_load --ramp-secs
for v in "$REPS" "$SECS" "$WARMUP" "$THREADS" "$WORKERS" $CONNS; do
    [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "not a number: '$v'"
done
RUN_TIMEOUT=$(awk -v r="$RAMP" -v w="$WARMUP" -v s="$SECS" 'BEGIN { printf "%.0f", r + w + s + 30 }')
if [ -n "${ECHO_LOG:-}" ]; then
    LOG=$ECHO_LOG
else
    LOG=$OUT/echo.log
    : >"$LOG"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/echobench.XXXXXX") || die "mktemp failed"
SPID=
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=
}
trap 'stop_server; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# 10 000 connections need 10 000 fds on each side; the programs raise their
# own soft limits too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PEERS="green pthread go"
BASE=${ECHO_BASE:-}
if [ -n "$BASE" ]; then
    [ -d "$BASE" ] || die "no base build directory '$BASE'"
    BASE=$(cd "$BASE" && pwd)
    PEERS="green base pthread go"
fi

# ---- The binaries ------------------------------------------------------

LOAD=$OUT/echo_load
[ -x "$LOAD" ] || die "$LOAD missing (build it with 'make bench')"

declare -A CMD
SERVER=$BUILD/examples/echo_server
if [ -x "$SERVER" ]; then
    SERVER=$(real_bin "$SERVER")
    CMD[pthread]="env LD_LIBRARY_PATH=$BUILD/.libs $SERVER --pthreads"
    if [ -f "$SHIM" ]; then
        CMD[green]="env LD_LIBRARY_PATH=$BUILD/.libs GREEN_WORKERS=$WORKERS LD_PRELOAD=$SHIM $SERVER"
    else
        echo "echo_bench.sh: no LD_PRELOAD shim at $SHIM (build it with 'make'):" \
             "the libgreen column is n/a -- without the shim each blocked read holds a worker" >&2
        CMD[green]=''
    fi
else
    echo "echo_bench.sh: $SERVER missing (build it with 'make'): libgreen and pthreads are n/a" >&2
    CMD[green]=''
    CMD[pthread]=
fi

[ -n "${GO_BENCH+set}" ] || GO_BENCH=$(go_peer "$TMP")
if [ -n "$BASE" ]; then
    bserver=$BASE/examples/echo_server bshim=$BASE/preload/.libs/libgreen-preload.so
    [ -x "$bserver" ] && [ -f "$bshim" ] || die "ECHO_BASE: no $bserver or $bshim"
    CMD[base]="env LD_LIBRARY_PATH=$BASE/.libs GREEN_WORKERS=$WORKERS LD_PRELOAD=$bshim $(real_bin "$bserver")"
fi
CMD[go]=''
[ -n "$GO_BENCH" ] && CMD[go]="env GOMAXPROCS=$WORKERS $GO_BENCH echo_server"

# ---- Running -----------------------------------------------------------

# start_server peer: start it, wait for its "listening on" line; sets SPID, PORT.
start_server() {
    # shellcheck disable=SC2086  # a command line
    ${CMD[$1]} >"$TMP/srv.out" 2>"$TMP/srv.err" &
    SPID=$!
    PORT=$(echo_port "$TMP/srv.out" "$SPID") && return 0
    echo "echo_bench.sh: $1 server did not start:" >&2
    tail -n 5 "$TMP/srv.err" | sed 's/^/  /' >&2
    stop_server
    return 1
}

server_stats() { # -> "server_rss_kib=N server_cpu_s=S" of $SPID, now
    local rss cpu
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SPID/status" 2>/dev/null)
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' \
          "/proc/$SPID/stat" 2>/dev/null)
    echo "server_rss_kib=${rss:-?} server_cpu_s=${cpu:-?}"
}

run_one() { # peer conns rep
    local peer=$1 c=$2 rep=$3 rc stats
    [ -n "${CMD[$peer]}" ] || return 0
    printf ' [%s' "$peer" >&2
    if ! start_server "$peer"; then
        echo "echo $peer rep=$rep conns=$c: FAILED (server did not start)" >>"$LOG"
        printf ' FAILED]' >&2
        return 0
    fi
    timeout "$RUN_TIMEOUT" "$LOAD" --port "$PORT" --conns "$c" --secs "$SECS" \
        --warmup "$WARMUP" --threads "$THREADS" --ramp-secs "$RAMP" \
        >"$TMP/load.out" 2>"$TMP/load.err"
    rc=$?
    stats=$(server_stats)
    if ! kill -0 "$SPID" 2>/dev/null; then
        [ "$rc" -ne 0 ] || rc=99
        echo "echo_bench.sh: the $peer server died:" >&2
        tail -n 5 "$TMP/srv.err" | sed 's/^/  /' >&2
    fi
    stop_server
    if [ "$rc" -eq 0 ] && grep -q '^conns=.* rps=' "$TMP/load.out"; then
        echo "echo $peer rep=$rep: $(cat "$TMP/load.out") $stats" >>"$LOG"
        awk -v dir="$TMP" -v key="$peer.$c" '{
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            print v["rps"] >> (dir "/rps." key)
            print v["p99_us"] >> (dir "/p99." key)
            print v["errors"] >> (dir "/errors." key)
            printf " rps=%s p99_us=%s", v["rps"], v["p99_us"] > "/dev/stderr"
            if (v["errors"] != 0) printf " ERRORS=%s", v["errors"] > "/dev/stderr"
        }' "$TMP/load.out"
        printf ']' >&2
    else
        echo "echo $peer rep=$rep conns=$c: FAILED (echo_load exit $rc; 124 = timeout)" >>"$LOG"
        printf ' FAILED]' >&2
        echo >&2
        echo "echo_bench.sh: $peer at $c connections failed (exit $rc; 124 = timeout):" >&2
        tail -n 3 "$TMP/load.err" | sed 's/^/  /' >&2
    fi
    sleep 0.5     # let the closed sockets go before the next server
}

for c in $CONNS; do
    for rep in $(seq 1 "$REPS"); do
        printf 'echo %5s conns rep %s/%s:' "$c" "$rep" "$REPS" >&2
        # shellcheck disable=SC2046,SC2086  # word lists
        for peer in $(rotate $((rep - 1)) $PEERS); do
            run_one "$peer" "$c" "$rep"
        done
        echo >&2
    done
done

total() { # file -> sum of its lines, or 0
    [ -s "$1" ] || { echo 0; return; }
    awk '{ s += $1 } END { print s }' "$1"
}

: >"$TMP/medians"
for c in $CONNS; do
    for peer in $PEERS; do
        echo "$c $peer $(median "$TMP/rps.$peer.$c") $(median "$TMP/p99.$peer.$c")" \
             "$(total "$TMP/errors.$peer.$c")" >>"$TMP/medians"
    done
done

# ---- Report ------------------------------------------------------------

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
greens=$(env | grep '^GREEN_' | grep -v '^GREEN_WORKERS=' | tr '\n' ' ')
echo
echo "Echo server (issue 6): 64-byte messages, each connection in a closed loop"
echo "(send, wait for the whole echo, send again) on loopback; medians of $REPS runs of"
echo "${SECS} s after ${WARMUP} s of warm-up, the servers alternating within each repetition."
echo "machine: $(nproc) cpus, ${cpu:-unknown cpu}, $(uname -srm);" \
     "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  libgreen: examples/echo_server, one green thread per connection, plain blocking"
if [ -n "${CMD[green]}" ]; then
    echo "    read/write under $(basename "$SHIM"), GREEN_WORKERS=$WORKERS" \
         "(other GREEN_*: ${greens:-defaults})"
else
    echo "    read/write under the preload shim: n/a (no $SHIM)"
fi
echo "  pthreads: the same program with --pthreads: one pthread per connection (64 KiB stacks)"
gov=
[ -n "$GO_BENCH" ] && gov=$("${GO:-go}" version "$GO_BENCH" 2>/dev/null | awk '{ print ", " $2 }')
echo "  Go:       go_bench echo_server, one goroutine per connection, GOMAXPROCS=$WORKERS$gov"
echo "  load:     bench/echo_load, $THREADS thread(s), epoll, on the same cpus as the server"
echo
awk '
    { rps[$1, $2] = $3; p99[$1, $2] = $4; err[$1, $2] = $5
      if (!($1 in seen)) { seen[$1] = 1; conns[++n] = $1 } }
    function dashes(k,    s) { s = ""; while (k-- > 0) s = s "-"; return s }
    function r(v) { return v == "n/a" ? v : sprintf("%.0f", v) }
    function ms(v) { return v == "n/a" ? v : sprintf("%.2f", v / 1000) }
    function ratio(a, b) { return (a == "n/a" || b == "n/a" || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b) }
    function goal(what, v, limit) {
        if (v == "n/a") printf "  %-34s not measured\n", what
        else printf "  %-34s %sx: %s\n", what, v, (v + 0 >= limit ? "met" : "MISSED")
    }
    END {
        printf "%6s | %9s | %9s | %9s | %12s | %12s | %12s | %11s | %17s\n", "conns",
            "libgreen", "Go", "pthreads", "libgreen p99", "Go p99", "pthreads p99",
            "libgreen/Go", "libgreen/pthreads"
        printf "%6s | %9s | %9s | %9s | %12s | %12s | %12s | %11s | %17s\n", "",
            "req/s", "req/s", "req/s", "ms", "ms", "ms", "req/s", "req/s"
        printf "%s-+-%s-+-%s-+-%s-+-%s-+-%s-+-%s-+-%s-+-%s\n", dashes(6), dashes(9), dashes(9),
            dashes(9), dashes(12), dashes(12), dashes(12), dashes(11), dashes(17)
        for (i = 1; i <= n; i++) {
            c = conns[i]
            printf "%6s | %9s | %9s | %9s | %12s | %12s | %12s | %11s | %17s\n", c,
                r(rps[c, "green"]), r(rps[c, "go"]), r(rps[c, "pthread"]),
                ms(p99[c, "green"]), ms(p99[c, "go"]), ms(p99[c, "pthread"]),
                ratio(rps[c, "green"], rps[c, "go"]), ratio(rps[c, "green"], rps[c, "pthread"])
        }
        print ""
        print "p99: the 99th percentile of every round trip of a run (closed loop: p50 ~ conns / rate)."
        for (k in err) if (err[k] + 0 > 0) {
            split(k, kk, SUBSEP)
            printf "ERRORS: %s at %s connections: %s (mismatched echoes, failed connections; see the log)\n",
                kk[2], kk[1], err[k]
        }
        print ""
        print "Goals (issue 6), at 10000 connections:"
        g = rps[10000, "green"]
        goal("libgreen >= 1x Go (req/s)", (10000 in seen) ? ratio(g, rps[10000, "go"]) : "n/a", 1)
        goal("libgreen >= 2x pthreads (req/s)", (10000 in seen) ? ratio(g, rps[10000, "pthread"]) : "n/a", 2)
    }' "$TMP/medians"
if [ -n "$BASE" ]; then
    echo
    echo "Against the base build $BASE (its echo_server and shim, same load, same runs):"
    awk '
        { rps[$1, $2] = $3; p99[$1, $2] = $4
          if (!($1 in seen)) { seen[$1] = 1; conns[++n] = $1 } }
        function r(v) { return v == "n/a" ? v : sprintf("%.0f", v) }
        function ms(v) { return v == "n/a" ? v : sprintf("%.2f", v / 1000) }
        function ratio(a, b) { return (a == "n/a" || b == "n/a" || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b) }
        END {
            printf "%6s | %9s | %9s | %13s | %12s | %12s\n", "conns", "libgreen", "base",
                "libgreen/base", "libgreen p99", "base p99"
            printf "%6s | %9s | %9s | %13s | %12s | %12s\n", "", "req/s", "req/s", "req/s", "ms", "ms"
            for (i = 1; i <= n; i++) {
                c = conns[i]
                printf "%6s | %9s | %9s | %13s | %12s | %12s\n", c, r(rps[c, "green"]),
                    r(rps[c, "base"]), ratio(rps[c, "green"], rps[c, "base"]),
                    ms(p99[c, "green"]), ms(p99[c, "base"])
            }
        }' "$TMP/medians"
fi
[ -n "${ECHO_LOG:-}" ] || echo "raw figures: $LOG"
