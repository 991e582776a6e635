#!/usr/bin/env bash
# bench/bimodal_bench.sh BUILD_DIR -- the bimodal table (issue 20): tail
# latency of short requests stuck behind long ones, on one serving CPU.
#
# Servers (a fresh process per run, on 127.0.0.1, any free port, all pinned
# to CPU BIMODAL_SERVER_CPU with taskset; one thread per connection):
#   green_q1000  BUILD_DIR/bench/bimodal_server under the preload shim,
#   green_q100   GREEN_WORKERS=1, GREEN_PREEMPT=signal and GREEN_QUANTUM_US
#   green_q50    1000 / 100 / 50
#   green_budget BUILD_DIR/bench/bimodal_server_budget (the same source built
#                with -finstrument-functions, linked with libgreen-budget)
#                under the shim, GREEN_WORKERS=1 GREEN_PREEMPT=budget
#                GREEN_BUDGET=BIMODAL_BUDGET (one reduction ~ 1 us of work)
#   go           BUILD_DIR/bench/go_bench bimodal_server, GOMAXPROCS=1
#   pthread      bimodal_server --pthreads (no shim)
# Load: BUILD_DIR/bench/bimodal_load on CPU BIMODAL_CLIENT_CPU, open loop,
# Poisson arrivals over BIMODAL_CONNS connections, for each mix and load:
# BIMODAL_WARMUP s not counted, then BIMODAL_SECS s counted.  For every
# (mix, load) BIMODAL_REPS repetitions; within each the servers alternate,
# starting one further along in each repetition, and all of them get the
# same schedule (the client's seed is the repetition's number).  The tables
# show medians; raw figures go to the log.
#
# Environment (all optional):
#   BIMODAL_LOADS      offered loads, % of one CPU ("10 20 30 40 50 60 70 80")
#   BIMODAL_MIXES      SHORT_US:LONG_US pairs, each 0.5% long
#                      ("5:5000 4:10000")
#   BIMODAL_LONG_FRAC  the long requests' share (0.005)
#   BIMODAL_REPS       repetitions (BENCH_REPS, else 5)
#   BIMODAL_SECS       counted seconds per run (1.5)
#   BIMODAL_WARMUP     seconds sent before counting (0.2)
#   BIMODAL_CONNS      connections (64)
#   BIMODAL_SERVERS    which servers, in the first repetition's order
#                      ("green_q1000 green_q100 green_q50 green_budget go pthread")
#   BIMODAL_BUDGET     GREEN_BUDGET of green_budget (100: ~100 us of work)
#   BIMODAL_SERVER_CPU, BIMODAL_CLIENT_CPU  (1, 0)
#   BIMODAL_SHIM       the preload shim (BUILD_DIR/preload/.libs/libgreen-preload.so)
#   BIMODAL_LOG        append raw figures here (run.sh passes its log); unset:
#                      BUILD_DIR/bench/bimodal.log, emptied first
#   GO_BENCH           the Go peer's binary; set but empty: no Go column;
#                      unset: built here as run.sh does it (GO: the go binary)
# Only bash, awk and coreutils (taskset: util-linux).
set -u

die() { echo "bimodal_bench.sh: $*" >&2; exit 1; }
. "$(dirname "$0")/../examples/echo_port.sh"

. "$(dirname "$0")/stats.sh"
bench_dirs "$@"

LOADS=${BIMODAL_LOADS:-10 20 30 40 50 60 70 80}
MIXES=${BIMODAL_MIXES:-5:5000 4:10000}
LONG_FRAC=${BIMODAL_LONG_FRAC:-0.005}
REPS=${BIMODAL_REPS:-${BENCH_REPS:-5}}
SECS=${BIMODAL_SECS:-1.5}
WARMUP=${BIMODAL_WARMUP:-0.2}
CONNS=${BIMODAL_CONNS:-64}
SERVERS=${BIMODAL_SERVERS:-green_q1000 green_q100 green_q50 green_budget go pthread}
BUDGET=${BIMODAL_BUDGET:-100}
SCPU=${BIMODAL_SERVER_CPU:-1}
CCPU=${BIMODAL_CLIENT_CPU:-0}
SHIM=${BIMODAL_SHIM:-$BUILD/preload/.libs/libgreen-preload.so}
for v in $LOADS "$REPS" "$SECS" "$WARMUP" "$CONNS" "$BUDGET" "$SCPU" "$CCPU" "$LONG_FRAC"; do
    [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "not a number: '$v'"
done
for m in $MIXES; do
    [[ $m =~ ^[0-9]+:[0-9]+$ ]] || die "not a mix SHORT_US:LONG_US: '$m'"
done
command -v taskset >/dev/null || die "no taskset (util-linux)"
RUN_TIMEOUT=$(awk -v w="$WARMUP" -v s="$SECS" 'BEGIN { printf "%.0f", w + s + 30 }')
if [ -n "${BIMODAL_LOG:-}" ]; then
    LOG=$BIMODAL_LOG
else
    LOG=$OUT/bimodal.log
    : >"$LOG"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bimodalbench.XXXXXX") || die "mktemp failed"
SPID=
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.02
    done
    kill -KILL "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=
}
trap 'stop_server; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# ---- The binaries ------------------------------------------------------

LOAD=$OUT/bimodal_load
[ -x "$LOAD" ] || die "$LOAD missing (build it with 'make bench')"

[ -n "${GO_BENCH+set}" ] || GO_BENCH=$(go_peer "$TMP")

declare -A CMD LABEL
PIN="taskset -c $SCPU"
LIBS="LD_LIBRARY_PATH=$BUILD/.libs"
SERVER=$BUILD/bench/bimodal_server
SERVER_BUDGET=$BUILD/bench/bimodal_server_budget
for s in $SERVERS; do CMD[$s]=; done
if [ -x "$SERVER" ]; then
    SERVER=$(real_bin "$SERVER")
    CMD[pthread]="env $LIBS $PIN $SERVER --pthreads"
    if [ -f "$SHIM" ]; then
        for q in 1000 100 50; do
            CMD[green_q$q]="env $LIBS GREEN_WORKERS=1 GREEN_PREEMPT=signal GREEN_QUANTUM_US=$q LD_PRELOAD=$SHIM $PIN $SERVER"
        done
    else
        echo "bimodal_bench.sh: no preload shim at $SHIM: libgreen is n/a" >&2
    fi
else
    echo "bimodal_bench.sh: $SERVER missing (make bench): libgreen and pthreads are n/a" >&2
fi
if [ -x "$SERVER_BUDGET" ] && [ -f "$SHIM" ]; then
    CMD[green_budget]="env $LIBS GREEN_WORKERS=1 GREEN_PREEMPT=budget GREEN_BUDGET=$BUDGET LD_PRELOAD=$SHIM $PIN $(real_bin "$SERVER_BUDGET")"
fi
[ -n "$GO_BENCH" ] && CMD[go]="env GOMAXPROCS=1 $PIN $GO_BENCH bimodal_server"
LABEL[green_q1000]="libgreen 1ms"
LABEL[green_q100]="libgreen 100us"
LABEL[green_q50]="libgreen 50us"
LABEL[green_budget]="libgreen budget $BUDGET"
LABEL[go]="Go"
LABEL[pthread]="pthreads"
for s in $SERVERS; do
    [ -n "${LABEL[$s]+set}" ] || die "unknown server '$s'"
done

# ---- Running -----------------------------------------------------------

start_server() { # server: start it, wait for its "listening on" line; sets SPID, PORT
    # shellcheck disable=SC2086  # a command line
    ${CMD[$1]} >"$TMP/srv.out" 2>"$TMP/srv.err" &
    SPID=$!
    PORT=$(echo_port "$TMP/srv.out" "$SPID" 0.02) && return 0
    echo "bimodal_bench.sh: $1 server did not start:" >&2
    tail -n 5 "$TMP/srv.err" | sed 's/^/  /' >&2
    stop_server
    return 1
}

cpu_ticks() { # -> user + system clock ticks of $SPID so far
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SPID/stat" 2>/dev/null || echo 0
}

run_one() { # server mix load rep
    local s=$1 mix=$2 load=$3 rep=$4 rc c0 c1 t0 t1 cpu cal
    local short=${mix%%:*} long=${mix##*:} key="$s.$mix.$load"
    [ -n "${CMD[$s]}" ] || return 0
    printf ' [%s' "$s" >&2
    if ! start_server "$s"; then
        echo "bimodal $s rep=$rep mix=$mix load=$load: FAILED (server did not start)" >>"$LOG"
        printf ' FAILED]' >&2
        return 0
    fi
    c0=$(cpu_ticks) t0=$(date +%s.%N)
    timeout "$RUN_TIMEOUT" taskset -c "$CCPU" "$LOAD" --port "$PORT" --load "$load" \
        --conns "$CONNS" --secs "$SECS" --warmup "$WARMUP" --short-us "$short" \
        --long-us "$long" --long-frac "$LONG_FRAC" --seed "$rep" \
        >"$TMP/load.out" 2>"$TMP/load.err"
    rc=$?
    c1=$(cpu_ticks) t1=$(date +%s.%N)
    cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
          'BEGIN { printf "%.0f", (t1 > t0 ? 100 * (b - a) / hz / (t1 - t0) : 0) }')
    if ! kill -0 "$SPID" 2>/dev/null; then
        [ "$rc" -ne 0 ] || rc=99
        echo "bimodal_bench.sh: the $s server died:" >&2
        tail -n 5 "$TMP/srv.err" | sed 's/^/  /' >&2
    fi
    cal=$(sed -n 's/.*calibrated: \([0-9]*\) steps\/us.*/\1/p' "$TMP/srv.err")
    stop_server
    if [ "$rc" -eq 0 ] && grep -q '^load=.* tput_rps=' "$TMP/load.out"; then
        echo "bimodal $s rep=$rep mix=$mix: $(cat "$TMP/load.out") server_cpu_pct=$cpu steps_per_us=${cal:-?}" >>"$LOG"
        awk -v dir="$TMP" -v key="$key" -v cpu="$cpu" '{
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            v["cpu"] = cpu
            n = split("short_p50_us short_p99_us short_p999_us all_p99_us all_p999_us tput_rps errors cpu", k, " ")
            for (i = 1; i <= n; i++) print (v[k[i]] == "inf" ? 1e18 : v[k[i]]) >> (dir "/" k[i] "." key)
            printf " p99=%s", v["short_p99_us"] > "/dev/stderr"
            if (v["errors"] != 0) printf " ERRORS=%s", v["errors"] > "/dev/stderr"
        }' "$TMP/load.out"
        printf ']' >&2
    else
        echo "bimodal $s rep=$rep mix=$mix load=$load: FAILED (bimodal_load exit $rc; 124 = timeout)" >>"$LOG"
        printf ' FAILED]' >&2
        echo >&2
        echo "bimodal_bench.sh: $s at mix $mix load $load% failed (exit $rc):" >&2
        tail -n 3 "$TMP/load.err" | sed 's/^/  /' >&2
    fi
}

T_BEGIN=$(date +%s)
for mix in $MIXES; do
    for load in $LOADS; do
        for rep in $(seq 1 "$REPS"); do
            printf 'bimodal %s load %s%% rep %s/%s:' "$mix" "$load" "$rep" "$REPS" >&2
            # shellcheck disable=SC2046,SC2086  # word lists
            for s in $(rotate $((rep - 1)) $SERVERS); do
                run_one "$s" "$mix" "$load" "$rep"
            done
            echo >&2
        done
    done
done
T_END=$(date +%s)

# ---- Report ------------------------------------------------------------

: >"$TMP/medians"
for mix in $MIXES; do
    for load in $LOADS; do
        for s in $SERVERS; do
            line="$mix $load $s"
            for k in short_p50_us short_p99_us short_p999_us all_p99_us all_p999_us tput_rps cpu; do
                line="$line $(median "$TMP/$k.$s.$mix.$load")"
            done
            errs=0
            [ -s "$TMP/errors.$s.$mix.$load" ] && errs=$(awk '{ s += $1 } END { print s }' "$TMP/errors.$s.$mix.$load")
            echo "$line $errs" >>"$TMP/medians"
        done
    done
done

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
gov=
[ -n "$GO_BENCH" ] && gov=$("${GO:-go}" version "$GO_BENCH" 2>/dev/null | awk '{ print ", " $2 }')
echo
echo "Bimodal (issue 20): short requests behind long ones, one serving CPU."
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cpus, ${cpu:-unknown cpu}, $(uname -srm);"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(( (T_END - T_BEGIN) / 60 )) min."
echo "Medians of $REPS runs of ${SECS} s (after ${WARMUP} s not counted), servers alternating"
echo "within each repetition.  Open-loop Poisson arrivals over $CONNS connections, $(awk -v f="$LONG_FRAC" 'BEGIN { print 100 * f }')% long;"
echo "latency = answer read - scheduled send (us).  Servers on CPU $SCPU, the client on CPU $CCPU."
echo "  libgreen: bench/bimodal_server, a green thread per connection, plain blocking read/write"
echo "    under $(basename "$SHIM"), GREEN_WORKERS=1; signal mode at quanta 1 ms / 100 us / 50 us;"
echo "    budget: the same source built with -finstrument-functions, GREEN_PREEMPT=budget"
echo "    GREEN_BUDGET=$BUDGET (a reduction per ~1 us chunk of work)"
echo "  Go:       go_bench bimodal_server, a goroutine per connection, GOMAXPROCS=1$gov"
echo "  pthreads: bimodal_server --pthreads, a pthread per connection (64 KiB stacks)"
echo "load: the offered service time as a share of one CPU; cpu: the server's CPU use over"
echo "the run (user + system, /proc), which also pays for the sockets."
for mix in $MIXES; do
    echo
    awk -v mix="$mix" -v servers="$SERVERS" -v frac="$LONG_FRAC" '
        $1 == mix { k = $2 SUBSEP $3
            sp50[k] = $4; sp99[k] = $5; sp999[k] = $6; ap99[k] = $7; ap999[k] = $8
            tput[k] = $9; cpu[k] = $10; err[k] = $11
            if (!($2 in seen)) { seen[$2] = 1; loads[++nl] = $2 } }
        function f(v) {
            if (v == "n/a" || v == "") return "n/a"
            if (v + 0 >= 1e17) return "inf"
            if (v + 0 >= 100) return sprintf("%.0f", v)
            return sprintf("%.1f", v)
        }
        function ratio(a, b) {
            return (a == "n/a" || b == "n/a" || a == "" || b == "" || b + 0 == 0) ? "n/a" : sprintf("%.3f", a / b)
        }
        END {
            ns = split(servers, sv, " ")
            split(mix, m, ":")
            mean = (1 - frac) * m[1] + frac * m[2]
            printf "Mix %s us short / %s us long (%.4g%% long; mean service %.3f us)\n\n", m[1], m[2], 100 * frac, mean
            printf "Short requests, p99 (us):\n\n| load |"
            for (j = 1; j <= ns; j++) printf " %s |", label(sv[j])
            printf "\n|---|"
            for (j = 1; j <= ns; j++) printf "---|"
            print ""
            for (i = 1; i <= nl; i++) {
                printf "| %s%% |", loads[i]
                for (j = 1; j <= ns; j++) printf " %s |", f(sp99[loads[i], sv[j]])
                print ""
            }
            print ""
            print "| load | server | short p50 | short p99 | short p99.9 | all p99 | all p99.9 | req/s | offered | cpu % |"
            print "|---|---|---|---|---|---|---|---|---|---|"
            for (i = 1; i <= nl; i++) for (j = 1; j <= ns; j++) {
                k = loads[i] SUBSEP sv[j]
                printf "| %s%% | %s | %s | %s | %s | %s | %s | %s | %.0f | %s |\n", loads[i], label(sv[j]),
                    f(sp50[k]), f(sp99[k]), f(sp999[k]), f(ap99[k]), f(ap999[k]), f(tput[k]),
                    loads[i] / 100 / mean * 1e6, f(cpu[k])
            }
            for (k in err) if (err[k] + 0 > 0) {
                split(k, kk, SUBSEP)
                printf "ERRORS: %s at %s%%: %s requests unanswered (see the log)\n", label(kk[2]), kk[1], err[k]
            }
            print ""
            if (!(50 in seen)) { print "Goals (issue 20) at 50% load: not measured (no 50% point)"; exit }
            go = sp99[50, "go"]
            print "Goals (issue 20), short-request p99 at 50% load, libgreen / Go:"
            goal("quantum 100 us: <= 0.1x", ratio(sp99[50, "green_q100"], go), 0.1)
            goal("quantum 1 ms (default): <= 0.3x", ratio(sp99[50, "green_q1000"], go), 0.3)
            r = ratio(sp99[50, "green_q50"], go)
            if (r != "n/a") printf "  %-34s %sx)\n", "(quantum 50 us:", r
            r = ratio(sp99[50, "green_budget"], go)
            if (r != "n/a") printf "  %-34s %sx)\n", "(budget:", r
            r = ratio(sp99[50, "pthread"], go)
            if (r != "n/a") printf "  %-34s %sx)\n", "(pthreads / Go:", r
        }
        function goal(what, v, limit) {
            if (v == "n/a") printf "  %-34s not measured\n", what
            else printf "  %-34s %sx: %s\n", what, v, (v + 0 <= limit ? "met" : "MISSED")
        }
        function label(s) {
            if (s == "green_q1000") return "libgreen 1ms"
            if (s == "green_q100") return "libgreen 100us"
            if (s == "green_q50") return "libgreen 50us"
            if (s == "green_budget") return "libgreen budget"
            if (s == "go") return "Go"
            if (s == "pthread") return "pthreads"
            return s
        }' "$TMP/medians"
done
[ -n "${BIMODAL_LOG:-}" ] || echo "raw figures: $LOG"
