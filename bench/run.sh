#!/usr/bin/env bash
# bench/run.sh BUILD_DIR -- libgreen beside Go and pthreads, as ratios.
#
# Runs bench/green_bench, bench/pthread_bench (both built by `make bench`) and
# the Go peer (built here into BUILD_DIR/bench/go_bench) on the same
# benchmarks.  Each benchmark runs BENCH_REPS times (default 5), the three
# peers alternating within every repetition (green, pthread, go, green, ...)
# so the noise of a shared machine falls on all alike; the table shows the
# median of each.  Raw figures go to BUILD_DIR/bench/bench.log.
#
# A third table, "Safepoint", is bench/safepoint_bench's own: the cost of
# the handler's table lookup, and of each stage of a preemption by depth of
# the interrupted stack (libgreen alone: no peer has these stages).
#
# A fourth table, "Reduction budget", is bench/budget_bench's: what
# -finstrument-functions and the budget cost on a call-heavy workload, and
# the preemption latency of budget mode beside signal mode; Go's ticker
# beside a hog that calls (ticker_calls) is its peer.
#
# A sixth table, "Interposed pthread locks", is bench/lock_bench's: an
# uncontended pthread_mutex_lock+unlock through libgreen's interposed calls
# beside libc's own, on a green thread and on a plain OS thread, and a
# contended pthread mutex between green threads beside a green_mutex_t.
#
# A fifth table, "echo", is not run by default (BENCH_TABLES=echo, or add it
# to the list): bench/echo_bench.sh runs examples/echo_server -- plain
# blocking calls, one thread per connection -- on green threads under the
# preload shim, on pthreads, and Go's peer (go_bench echo_server), loaded by
# bench/echo_load at 100, 1000 and 10000 connections (ECHO_* variables,
# described in echo_bench.sh).  Its raw figures go to the same log.
#
# A seventh table, "bimodal", is not run by default either
# (BENCH_TABLES=bimodal; about 20 minutes at BENCH_REPS=5):
# bench/bimodal_bench.sh runs bench/bimodal_server -- a thread per connection
# doing the requested microseconds of busy work -- on green threads under the
# shim (quanta 1 ms, 100 us, 50 us, and budget mode in the instrumented
# build), on pthreads, and Go's peer (go_bench bimodal_server), each on one
# CPU, loaded by bench/bimodal_load's open-loop Poisson mix of short and long
# requests (BIMODAL_* variables, described in bimodal_bench.sh).
#
# A second table, "Preemption", runs the preemption benchmarks (ticker,
# preempt_cost, yield_signals) in several variants -- libgreen with
# preemption off and by signal at several quanta, Go with and without its
# asynchronous preemption -- alternating within every repetition in an order
# that rotates from one repetition to the next, and checks the goals of
# issue 3.  pthreads have no peer there (n/a).
#
# Environment (all optional):
#   BENCH_REPS            repetitions per benchmark (5)
#   BENCH_WORKERS         GREEN_WORKERS / GOMAXPROCS for all but yield (nproc);
#                         not for the preemption table (1 or 2 workers, fixed)
#   BENCH_<NAME>_N        N for libgreen and Go; NAME is YIELD SPAWN SPAWNMANY
#                         CHAN MUTEX PARK (BENCH_PARK_N: parked threads, 1M),
#                         TICKER (ticks), PREEMPT_COST (xorshift steps per
#                         thread), YIELD_SIGNALS (milliseconds)
#   BENCH_PTHREAD_<NAME>_N  N for pthreads (far slower, and park cannot reach 1M)
#   BENCH_TABLES          which tables to run: "main preempt safepoint budget locks"
#                         (the default); "echo" and "bimodal" run only when named
#   BENCH_BUDGET_TICKS    ticks per latency run in the budget table (1000)
#   BENCH_TIMEOUT         seconds before a single run is killed (300)
#   GO                    the go binary; set but empty: no Go column
#   GREEN_*               passed to green_bench (GREEN_STACK_SIZE, GREEN_PREEMPT...);
#                         the preemption table sets GREEN_WORKERS, GREEN_PREEMPT
#                         and GREEN_QUANTUM_US itself
# Only bash, awk and coreutils.
set -u

die() { echo "run.sh: $*" >&2; exit 1; }

. "$(dirname "$0")/stats.sh"
bench_dirs "$@"

REPS=${BENCH_REPS:-5}
WORKERS=${BENCH_WORKERS:-$(nproc)}
TIMEOUT=${BENCH_TIMEOUT:-300}
TABLES=${BENCH_TABLES:-main preempt safepoint budget locks}
LOG=$OUT/bench.log
TMP=$(mktemp -d "${TMPDIR:-/tmp}/greenbench.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$TMP"' EXIT

BENCHES="yield spawn spawnmany chan mutex park"
PEERS="green pthread go"
PBENCHES="ticker ticker_libc preempt_cost yield_signals"

# Iteration counts: each run ~0.2-1 s on a 2-core x86-64 VM at the targets
# (libgreen) or as measured (Go, pthreads).  pthreads are 10-1000x slower at
# yield/spawn/chan, and cannot have 1M threads (vm.max_map_count, threads-max).
# ticker: 2000 ticks take ~3 s for libgreen; Go's ticks are ~20 ms late, so
# Go ticks 200 times (~4 s; its p99 is then the 2nd-latest tick).
n_for() { # peer bench
    local name=${2^^} def
    if [ "$1" = pthread ]; then
        case $2 in
            yield) def=200000 ;; spawn) def=10000 ;; spawnmany) def=10000 ;;
            chan) def=15000 ;; mutex) def=20000000 ;; park) def=10000 ;;
            preempt_cost) def=200000000 ;;   # the floor (pthread_bench.c)
            *) def=n/a ;;   # no pthreads peer
        esac
        eval "echo \${BENCH_PTHREAD_${name}_N:-$def}"
        return
    fi
    case $1:$2 in
        green:yield) def=10000000 ;; go:yield) def=3000000 ;;
        green:spawn) def=5000000 ;;  go:spawn) def=1000000 ;;
        *:spawnmany) def=1000000 ;;
        green:chan) def=5000000 ;;   go:chan) def=2000000 ;;
        green:mutex) def=10000000 ;; go:mutex) def=20000000 ;;
        *:park) def=1000000 ;;
        green:ticker) def=2000 ;;    go:ticker) def=200 ;;
        green:ticker_libc) def=2000 ;; go:ticker_libc) def=200 ;;
        *:preempt_cost) def=200000000 ;;
        *:yield_signals) def=500 ;;
    esac
    eval "echo \${BENCH_${name}_N:-$def}"
}

# ---- The peers' binaries -------------------------------------------------

declare -A BIN
BIN[green]=$OUT/green_bench
BIN[pthread]=$OUT/pthread_bench
for p in green pthread; do
    if [ ! -x "${BIN[$p]}" ]; then
        echo "run.sh: ${BIN[$p]} missing (build it with 'make bench'): $p is n/a" >&2
        BIN[$p]=
    fi
done

BIN[go]=$(go_peer "$TMP")

# ---- Running ---------------------------------------------------------------

# run_bin label bin bench n rep env: run one benchmark once; append each
# "key value" line of its output to $TMP/key.label (and "rep value" to
# $TMP/key.label.byrep), and log it.
run_bin() {
    local peer=$1 bin=$2 bench=$3 n=$4 rep=$5 env=$6 rc
    # shellcheck disable=SC2086  # $env is a list of assignments
    env $env timeout "$TIMEOUT" "$bin" "$bench" "$n" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ $rc -eq 0 ]; then
        awk -v peer="$peer" -v bench="$bench" -v n="$n" -v rep="$rep" \
            -v dir="$TMP" -v logf="$LOG" '
            NF == 3 && $2 ~ /^[0-9]+(\.[0-9]*)?$/ {
                print $2 >> (dir "/" $1 "." peer)
                print rep, $2 >> (dir "/" $1 "." peer ".byrep")
                printf "%s rep=%s %s N=%s: %s %s %s\n", peer, rep, bench, n, $1, $2, $3 >> logf
                printf " %s=%s", $1, $2 > "/dev/stderr"
                next
            }
            { printf "run.sh: %s %s: unparsed output: %s\n", peer, bench, $0 > "/dev/stderr" }
            ' "$TMP/out"
    else
        echo >&2
        echo "run.sh: $peer $bench $n failed (exit $rc; 124 = timeout):" >&2
        tail -n 5 "$TMP/err" | sed 's/^/  /' >&2
        echo "$peer rep=$rep $bench N=$n: FAILED" >>"$LOG"
    fi
}

run_one() { # peer bench rep: the main table
    local peer=$1 bench=$2 rep=$3 env
    [ -n "${BIN[$peer]}" ] || return 0
    if [ "$bench" = yield ]; then
        env="GREEN_WORKERS=1 GOMAXPROCS=1"
    else
        env="GREEN_WORKERS=$WORKERS GOMAXPROCS=$WORKERS"
    fi
    run_bin "$peer" "${BIN[$peer]}" "$bench" "$(n_for "$peer" "$bench")" "$rep" "$env"
}

# The preemption table's variants: label -> peer, environment.
declare -A VPEER VENV
VPEER[green_off]=green;   VENV[green_off]="GREEN_PREEMPT=off GREEN_QUANTUM_US=1000"
VPEER[green_q1000]=green; VENV[green_q1000]="GREEN_PREEMPT=signal GREEN_QUANTUM_US=1000"
VPEER[green_q100]=green;  VENV[green_q100]="GREEN_PREEMPT=signal GREEN_QUANTUM_US=100"
VPEER[green_q50]=green;   VENV[green_q50]="GREEN_PREEMPT=signal GREEN_QUANTUM_US=50"
VPEER[go]=go;             VENV[go]="GODEBUG=asyncpreemptoff=0"
VPEER[go_noasync]=go;     VENV[go_noasync]="GODEBUG=asyncpreemptoff=1"
# The floor: two pthreads doing the same work, interrupted by a per-thread
# timer signal with an empty handler every quantum (pthread_bench.c).
VPEER[floor_off]=pthread;   VENV[floor_off]="BENCH_TIMER_US=0"
VPEER[floor_q1000]=pthread; VENV[floor_q1000]="BENCH_TIMER_US=1000"
VPEER[floor_q100]=pthread;  VENV[floor_q100]="BENCH_TIMER_US=100"
VPEER[floor_q50]=pthread;   VENV[floor_q50]="BENCH_TIMER_US=50"
VARIANTS="green_off green_q1000 green_q100 green_q50 go go_noasync"   # the columns

pvariants() { # bench -> its variants, in the order of the first repetition
    case $1 in
        ticker|ticker_libc) echo green_q1000 green_q100 go ;;
        preempt_cost) echo green_off green_q1000 green_q100 green_q50 go_noasync go \
                           floor_off floor_q1000 floor_q100 floor_q50 ;;
        yield_signals) echo green_q1000 green_q50 go ;;
    esac
}
pworkers() { # bench -> GREEN_WORKERS and GOMAXPROCS
    case $1 in ticker|ticker_libc) echo 1 ;; *) echo 2 ;; esac
}

run_variant() { # label bench rep: the preemption table
    local v=$1 bench=$2 rep=$3 peer=${VPEER[$1]} w
    [ -n "${BIN[$peer]}" ] || return 0
    w=$(pworkers "$bench")
    run_bin "$v" "${BIN[$peer]}" "$bench" "$(n_for "$peer" "$bench")" "$rep" \
        "GREEN_WORKERS=$w GOMAXPROCS=$w ${VENV[$v]}"
}

: >"$LOG"
case " $TABLES " in *" main "*)
    for bench in $BENCHES; do
        for rep in $(seq 1 "$REPS"); do
            printf '%-9s rep %s/%s:' "$bench" "$rep" "$REPS" >&2
            for peer in $PEERS; do
                printf ' [%s' "$peer" >&2
                run_one "$peer" "$bench" "$rep"
                printf ']' >&2
            done
            echo >&2
        done
    done
esac
case " $TABLES " in *" preempt "*)
    for bench in $PBENCHES; do
        for rep in $(seq 1 "$REPS"); do
            printf '%-13s rep %s/%s:' "$bench" "$rep" "$REPS" >&2
            # shellcheck disable=SC2046  # word lists
            for v in $(rotate $((rep - 1)) $(pvariants "$bench")); do
                printf ' [%s' "$v" >&2
                run_variant "$v" "$bench" "$rep"
                printf ']' >&2
            done
            echo >&2
        done
    done
esac

: >"$TMP/medians"
for key in yield spawn spawnmany chan mutex park_spawn park_rss park_rss_total park_pte_total \
           park_stack park_kstack; do
    for peer in $PEERS; do
        echo "$key $peer $(median "$TMP/$key.$peer")" >>"$TMP/medians"
    done
done

slowdown() { # key base variant -> median over the repetitions of
             # 100 * (variant / base - 1), each pair from one repetition
    if [ ! -s "$TMP/$1.$2.byrep" ] || [ ! -s "$TMP/$1.$3.byrep" ]; then
        echo n/a
        return
    fi
    awk 'FNR == NR { b[$1] = $2; next }
         ($1 in b) && b[$1] > 0 { print 100 * ($2 / b[$1] - 1) }' \
        "$TMP/$1.$2.byrep" "$TMP/$1.$3.byrep" >"$TMP/slowdown"
    median "$TMP/slowdown"
}

: >"$TMP/pmedians"
for key in ticker_p50 ticker_p99 ticker_max ticker_signals ticker_preemptions \
           ticker_refusals ticker_libc_p50 ticker_libc_p99 ticker_libc_max ticker_libc_signals \
           ticker_libc_preemptions ticker_libc_refusals preempt_cost preempt_cost_cpu preempt_cost_signals \
           preempt_cost_preemptions preempt_cost_refusals yield_signals \
           yield_signals_yields yield_signals_preemptions; do
    for v in $VARIANTS; do
        echo "$key $v $(median "$TMP/$key.$v")" >>"$TMP/pmedians"
    done
done
for key in preempt_cost preempt_cost_cpu; do
    for v in green_q1000 green_q100 green_q50; do
        echo "${key}_slow $v $(slowdown "$key" green_off "$v")" >>"$TMP/pmedians"
    done
    echo "${key}_slow go $(slowdown "$key" go_noasync go)" >>"$TMP/pmedians"
done
# The floor's slowdown, shown in the column of the same quantum.
for q in 1000 100 50; do
    echo "preempt_cost_floor green_q$q $(slowdown preempt_cost floor_off floor_q$q)" >>"$TMP/pmedians"
    echo "preempt_cost_floor_signals green_q$q $(median "$TMP/preempt_cost_signals.floor_q$q")" \
        >>"$TMP/pmedians"
done

# ---- Report --------------------------------------------------------------

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
echo
echo "libgreen benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cpus, ${cpu:-unknown cpu}, $(uname -srm)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BIN[go]}" ]; then echo "go: $("$GO" version)"; fi
echo "median of $REPS runs, peers alternating; workers/GOMAXPROCS $WORKERS (yield: 1)"
greens=$(env | grep '^GREEN_' | grep -v '^GREEN_WORKERS=' | tr '\n' ' ')
echo "libgreen config from the environment: ${greens:-defaults}"
echo "N per run (libgreen/Go/pthreads):$(for b in $BENCHES $PBENCHES; do
    printf ' %s %s/%s/%s;' "$b" "$(n_for green "$b")" "$(n_for go "$b")" "$(n_for pthread "$b")"
done)"

case " $TABLES " in *" main "*)
echo
awk -v park_n="$(n_for green park)" -v park_n_go="$(n_for go park)" \
    -v park_n_pt="$(n_for pthread park)" '
    { m[$1, $2] = $3 }
    function dashes(k,    s) { s = ""; while (k-- > 0) s = s "-"; return s }
    function fmt(v) {
        if (v == "n/a") return v
        if (v + 0 >= 100) return sprintf("%.0f", v)
        return sprintf("%.1f", v)
    }
    function ratio(peer, green) {
        if (peer == "n/a" || green == "n/a" || green + 0 == 0) return "n/a"
        return sprintf("%.2f", peer / green)
    }
    function row(label, key, comparable_pt) {
        g = m[key, "green"]; o = m[key, "go"]; p = m[key, "pthread"]
        printf "%-38s | %9s | %9s | %9s | %11s | %17s\n", label, fmt(g), fmt(o), fmt(p),
            ratio(o, g), comparable_pt ? ratio(p, g) : "-"
    }
    function target(what, key, limit, unit,    g) {
        g = m[key, "green"]
        if (g == "n/a") printf "  %-30s not measured\n", what
        else printf "  %-30s libgreen %s %s: %s\n", what, fmt(g), unit, g + 0 <= limit ? "met" : "MISSED"
    }
    END {
        printf "%-38s | %9s | %9s | %9s | %11s | %17s\n", "benchmark", "libgreen", "Go",
            "pthreads", "Go/libgreen", "pthreads/libgreen"
        printf "%s-+-%s-+-%s-+-%s-+-%s-+-%s\n", dashes(38), dashes(9), dashes(9), dashes(9),
            dashes(11), dashes(17)
        row("yield, one worker (ns/switch)", "yield", 1)
        row("spawn+join (ns)", "spawn", 1)
        row("spawn N, then join all (ns/thread)", "spawnmany", 1)
        row("unbuffered channel hop (ns)", "chan", 1)
        row("mutex, 4 threads (ns/lock+unlock)", "mutex", 1)
        row("parked: cold spawn (ns/thread) *", "park_spawn", 0)
        row("parked: RSS growth (B/thread) *", "park_rss", 1)
        row("parked: total RSS (MiB) *", "park_rss_total", park_n == park_n_pt)
        row("parked: page tables, VmPTE (MiB) *", "park_pte_total", park_n == park_n_pt)
        print ""
        print "Ratios are peer / libgreen: above 1, libgreen is faster or smaller."
        printf "* parked: libgreen %d threads, Go %d goroutines, pthreads %d threads",
            park_n, park_n_go, park_n_pt
        print (park_n == park_n_pt ? "." : " (1M pthreads are not reachable here),\n  so for pthreads only the per-thread ratio compares.")
        s = m["park_stack", "green"]
        printf "  Stacks: libgreen %s (cfg.stack_size, from GREEN_STACK_SIZE), Go growable, ",
            s == "n/a" ? s : s " B"
        print "pthreads 64 KiB (pthread_attr_setstacksize, not the 8 MiB default)."
        if (m["park_kstack", "pthread"] != "n/a")
            printf "  A pthread also costs kernel memory outside its RSS: KernelStack grew %s B/thread.\n",
                fmt(m["park_kstack", "pthread"])
        print "  spawnmany: pthreads use a smaller batch (see N above)."
        print ""
        print "Targets (docs/design.md):"
        target("yield <= 15 ns/switch", "yield", 15, "ns")
        target("spawn+join <= 80 ns", "spawn", 80, "ns")
        target("unbuffered chan hop <= 40 ns", "chan", 40, "ns")
        if (park_n == 1000000) target("1M parked <= 4.5 GiB RSS", "park_rss_total", 4608, "MiB")
        else printf "  %-30s not measured (BENCH_PARK_N=%d, not 1M)\n", "1M parked <= 4.5 GiB RSS", park_n
    }' "$TMP/medians"
# What one fresh stack page costs this machine, whoever takes it: the floor
# under "parked: cold spawn" (bench/page_cost.c).
if [ -x "$OUT/page_cost" ]; then
    echo
    echo "Under it, what a fresh stack page costs here (bench/page_cost, one run, us/page):"
    timeout "$TIMEOUT" "$OUT/page_cost" 2>&1 | tee -a "$LOG" | sed 's/^/  /'
fi
esac

case " $TABLES " in *" preempt "*)
max_of() { # file -> its largest line, or n/a
    if [ -s "$1" ]; then sort -g "$1" | tail -n 1; else echo n/a; fi
}
echo
echo "Preemption (issue 3): medians of $REPS runs; within a repetition the variants"
echo "alternate, in an order that rotates from one repetition to the next."
echo "  ticker: 1 worker / GOMAXPROCS 1; a call-free CPU hog beside a thread that sleeps"
echo "    1 ms, $(n_for green ticker) times (Go: $(n_for go ticker)); lateness = actual sleep - 1 ms"
echo "  libc hog: the same ticker beside a hog living in libc (malloc/free, snprintf, qsort"
echo "    calling back a comparator, memcpy; Go: allocation, Sprintf, sort.Slice, copy),"
echo "    which libgreen never interrupts but preempts as it returns from it"
echo "  CPU-bound: 4 threads on 2 workers / GOMAXPROCS 2, each $(n_for green preempt_cost) xorshift64 steps"
echo "  yield loop: 4 threads on 2 workers / GOMAXPROCS 2, green_yield / runtime.Gosched"
echo "    in a loop for $(n_for green yield_signals) ms"
echo
awk -v ymax1000="$(max_of "$TMP/yield_signals.green_q1000")" \
    -v ymax50="$(max_of "$TMP/yield_signals.green_q50")" '
    { m[$1, $2] = $3 }
    function dashes(k,    s) { s = ""; while (k-- > 0) s = s "-"; return s }
    function fmt(v, how) {
        if (v == "n/a" || v == "-") return v
        if (how == "int") return sprintf("%.0f", v)
        if (how == "pct") return sprintf("%+.1f", v)
        if (how == "M") return sprintf("%.1f", v / 1e6)
        if (v + 0 >= 100) return sprintf("%.0f", v)
        return sprintf("%.1f", v)
    }
    # cols: the variants this row ran, e.g. "green_q1000 green_q100 go"; "-" elsewhere
    function row(label, key, cols, how,    i, out, v) {
        out = sprintf("%-38s", label)
        for (i = 1; i <= nv; i++) {
            v = index(" " cols " ", " " var[i] " ") ? m[key, var[i]] : "-"
            out = out sprintf(" | %11s", fmt(v, how))
        }
        print out sprintf(" | %8s", "n/a")
    }
    function floor(col,    f) {
        f = m["preempt_cost_floor", col]
        return (f == "" || f == "n/a") ? "" : " (floor " fmt(f, "pct") "%)"
    }
    function goal(what, v, limit, shown, limit_shown) {
        if (v == "n/a") printf "  %-44s not measured\n", what
        else printf "  %-44s libgreen %s: %s\n", what, shown,
            v + 0 <= limit ? "met" : "MISSED (goal " limit_shown ")"
    }
    END {
        nv = split("green_off green_q1000 green_q100 green_q50 go go_noasync", var, " ")
        printf "%-38s | %11s | %11s | %11s | %11s | %11s | %11s | %8s\n", "preemption",
            "green off", "green 1ms", "green 100us", "green 50us", "Go", "Go noasync",
            "pthreads"
        line = dashes(38)
        for (i = 1; i <= nv; i++) line = line "-+-" dashes(11)
        print line "-+-" dashes(8)
        t = "green_q1000 green_q100 go"
        row("ticker beside a hog: late p50 (us)", "ticker_p50", t)
        row("  late p99 (us)", "ticker_p99", t)
        row("  late max (us)", "ticker_max", t)
        t = "green_q1000 green_q100"
        row("  signals sent", "ticker_signals", t " go", "int")
        row("  preemptions", "ticker_preemptions", t " go", "int")
        row("  refusals", "ticker_refusals", t " go", "int")
        t = "green_q1000 green_q100 go"
        row("ticker beside a libc hog: p50 (us)", "ticker_libc_p50", t)
        row("  late p99 (us)", "ticker_libc_p99", t)
        row("  late max (us)", "ticker_libc_max", t)
        t = "green_q1000 green_q100"
        row("  signals sent", "ticker_libc_signals", t " go", "int")
        row("  preemptions", "ticker_libc_preemptions", t " go", "int")
        row("  refusals (hooked returns)", "ticker_libc_refusals", t " go", "int")
        t = "green_off green_q1000 green_q100 green_q50 go go_noasync"
        row("CPU-bound, 4 threads: elapsed (ms)", "preempt_cost", t)
        row("  slowdown vs off (%)", "preempt_cost_slow", "green_q1000 green_q100 green_q50 go", "pct")
        row("  floor: timer signal per quantum (%)", "preempt_cost_floor", "green_q1000 green_q100 green_q50", "pct")
        row("    floor: signals", "preempt_cost_floor_signals", "green_q1000 green_q100 green_q50", "int")
        row("  CPU time, all threads (ms)", "preempt_cost_cpu", t)
        row("  CPU time vs off (%)", "preempt_cost_cpu_slow", "green_q1000 green_q100 green_q50 go", "pct")
        row("  signals sent", "preempt_cost_signals", t, "int")
        row("  preemptions", "preempt_cost_preemptions", t, "int")
        row("  refusals", "preempt_cost_refusals", t, "int")
        t = "green_q1000 green_q50 go"
        row("yield loop, 4 threads: signals sent", "yield_signals", t, "int")
        row("  preemptions", "yield_signals_preemptions", t, "int")
        row("  yields (millions)", "yield_signals_yields", t, "M")
        print ""
        print "green off: GREEN_PREEMPT=off; green 1ms/100us/50us: GREEN_PREEMPT=signal and that"
        print "GREEN_QUANTUM_US.  Go preempts a goroutine that ran 10 ms; Go noasync:"
        print "GODEBUG=asyncpreemptoff=1.  Go has no counters of signals: n/a.  Slowdown: in each"
        print "repetition, elapsed / elapsed with preemption off - 1 (Go: vs Go noasync); the"
        print "median of those.  CPU time: getrusage of the whole process, libgreen'\''s monitor"
        print "thread included.  Refusals: the handler declined (runtime, nopreempt, unsafe PC,"
        print "unsafe caller frame, unwind, headroom).  Floor: two pthreads doing the same"
        print "work, each interrupted by its own POSIX timer (SIGEV_THREAD_ID) every quantum"
        print "into an empty handler -- the cost of the interrupt alone on this machine, with"
        print "no decision, no state saved, no switch (pthread_bench preempt_cost,"
        print "BENCH_TIMER_US=quantum vs unset)."
        print ""
        print "Goals (issue 3):"
        o = m["ticker_p99", "go"]
        v = m["ticker_p99", "green_q1000"]
        goal("ticker p99 <= 1.5 ms, quantum 1 ms", v, 1500,
             fmt(v) " us" (o == "n/a" ? "" : " (Go " fmt(o) " us)"), "1500 us")
        v = m["ticker_p99", "green_q100"]
        goal("ticker p99 <= 150 us, quantum 100 us", v, 150, fmt(v) " us", "150 us")
        v = m["preempt_cost_slow", "green_q1000"]
        goal("CPU-bound slowdown <= 1%, quantum 1 ms", v, 1, fmt(v, "pct") "%" floor("green_q1000"), "+1.0%")
        v = m["preempt_cost_slow", "green_q100"]
        goal("CPU-bound slowdown <= 5%, quantum 100 us", v, 5, fmt(v, "pct") "%" floor("green_q100"), "+5.0%")
        v = m["preempt_cost_slow", "green_q50"]
        goal("CPU-bound slowdown <= 10%, quantum 50 us", v, 10, fmt(v, "pct") "%" floor("green_q50"), "+10.0%")
        v = (ymax1000 == "n/a" || ymax50 == "n/a") ? "n/a" : (ymax1000 + 0 > ymax50 + 0 ? ymax1000 : ymax50)
        goal("signals sent when all threads yield: 0", v, 0,
             sprintf("at most %s (1 ms), %s (50 us) in a run", fmt(ymax1000, "int"),
                     fmt(ymax50, "int")), "0 in every run")
    }' "$TMP/pmedians"
esac
echo
case " $TABLES " in *" safepoint "*)
    echo
    "$BUILD/bench/safepoint_bench" "$REPS" | tee -a "$LOG" || die "safepoint_bench failed"
esac
case " $TABLES " in *" locks "*)
    echo
    "$BUILD/bench/lock_bench" "$REPS" | tee -a "$LOG" || die "lock_bench failed"
esac
case " $TABLES " in *" budget "*)
    echo
    "$BUILD/bench/budget_bench" "$REPS" "${BENCH_BUDGET_TICKS:-1000}" | tee -a "$LOG" ||
        die "budget_bench failed"
    if [ -n "${BIN[go]}" ]; then
        # Go's peer of the budget: the same ticker beside a hog that calls,
        # with its prologue checks only (asyncpreemptoff) and with signals.
        for rep in $(seq "$REPS"); do
            for v in coop async; do
                env=GOMAXPROCS=1
                [ $v = coop ] && env="$env GODEBUG=asyncpreemptoff=1"
                run_bin "go_$v" "${BIN[go]}" ticker_calls "${BENCH_GO_TICKER_CALLS_N:-200}" \
                    "$rep" "$env"
            done
        done
        echo >&2
        echo
        echo "Go 1.19 peer: the same ticker beside a fib hog, GOMAXPROCS=1, ${BENCH_GO_TICKER_CALLS_N:-200} ticks (us late; medians of $REPS)"
        echo
        echo "| variant | p50 | p99 | max |"
        echo "|---|---|---|---|"
        for v in coop async; do
            label="Go, prologue checks only (asyncpreemptoff=1)"
            [ $v = async ] && label="Go, default (async preemption too)"
            echo "| $label | $(median "$TMP/ticker_p50.go_$v") | $(median "$TMP/ticker_p99.go_$v") | $(median "$TMP/ticker_max.go_$v") |"
        done
    fi
esac
case " $TABLES " in *" echo "*)
    # It finds its binaries in $BUILD, and reports failures itself.
    GO_BENCH=${BIN[go]} ECHO_LOG=$LOG "$SRC/echo_bench.sh" "$BUILD" || die "echo_bench.sh failed"
esac
case " $TABLES " in *" bimodal "*)
    GO_BENCH=${BIN[go]} BIMODAL_LOG=$LOG BIMODAL_REPS=${BIMODAL_REPS:-$REPS} \
        "$SRC/bimodal_bench.sh" "$BUILD" || die "bimodal_bench.sh failed"
esac
echo "raw figures: $LOG"
