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
# Environment (all optional):
#   BENCH_REPS            repetitions per benchmark (5)
#   BENCH_WORKERS         GREEN_WORKERS / GOMAXPROCS for all but yield (nproc)
#   BENCH_<NAME>_N        N for libgreen and Go; NAME is YIELD SPAWN SPAWNMANY
#                         CHAN MUTEX PARK (BENCH_PARK_N: parked threads, 1M)
#   BENCH_PTHREAD_<NAME>_N  N for pthreads (far slower, and park cannot reach 1M)
#   BENCH_TIMEOUT         seconds before a single run is killed (300)
#   GO                    the go binary; set but empty: no Go column
#   GREEN_*               passed to green_bench (GREEN_STACK_SIZE, GREEN_PREEMPT...)
# Only bash, awk and coreutils.
set -u

die() { echo "run.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: bench/run.sh BUILD_DIR"
[ -d "$1" ] || die "no build directory '$1'"
BUILD=$(cd "$1" && pwd) || die "cannot enter '$1'"
SRC=$(cd "$(dirname "$0")" && pwd) || die "cannot find bench/"
OUT=$BUILD/bench
mkdir -p "$OUT" || die "cannot create $OUT"

REPS=${BENCH_REPS:-5}
WORKERS=${BENCH_WORKERS:-$(nproc)}
TIMEOUT=${BENCH_TIMEOUT:-300}
LOG=$OUT/bench.log
TMP=$(mktemp -d "${TMPDIR:-/tmp}/greenbench.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$TMP"' EXIT

BENCHES="yield spawn spawnmany chan mutex park"
PEERS="green pthread go"

# Iteration counts: each run ~0.2-1 s on a 2-core x86-64 VM at the targets
# (libgreen) or as measured (Go, pthreads).  pthreads are 10-1000x slower at
# yield/spawn/chan, and cannot have 1M threads (vm.max_map_count, threads-max).
n_for() { # peer bench
    local name=${2^^} def
    if [ "$1" = pthread ]; then
        case $2 in
            yield) def=200000 ;; spawn) def=10000 ;; spawnmany) def=10000 ;;
            chan) def=15000 ;; mutex) def=20000000 ;; park) def=10000 ;;
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

if [ -z "${GO+set}" ]; then GO=$(command -v go || true); fi
BIN[go]=
if [ -z "$GO" ]; then
    echo "run.sh: no go: the Go column is n/a" >&2
elif (cd "$SRC/go" &&
      GOCACHE="$OUT/.gocache" GOPATH="$OUT/.gopath" GOENV=off GOFLAGS='' \
      GOPROXY=off GO111MODULE=on GOTOOLCHAIN=local \
      "$GO" build -o "$OUT/go_bench" .) >"$TMP/gobuild" 2>&1; then
    BIN[go]=$OUT/go_bench
else
    echo "run.sh: go build failed, the Go column is n/a:" >&2
    sed 's/^/  /' "$TMP/gobuild" >&2
fi

# ---- Running ---------------------------------------------------------------

run_one() { # peer bench rep: append each "key value" line to $TMP/key.peer
    local peer=$1 bench=$2 rep=$3 n env rc
    [ -n "${BIN[$peer]}" ] || return 0
    n=$(n_for "$peer" "$bench")
    if [ "$bench" = yield ]; then
        env="GREEN_WORKERS=1 GOMAXPROCS=1"
    else
        env="GREEN_WORKERS=$WORKERS GOMAXPROCS=$WORKERS"
    fi
    # shellcheck disable=SC2086  # $env is a list of assignments
    env $env timeout "$TIMEOUT" "${BIN[$peer]}" "$bench" "$n" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ $rc -eq 0 ]; then
        awk -v peer="$peer" -v bench="$bench" -v n="$n" -v rep="$rep" \
            -v dir="$TMP" -v logf="$LOG" '
            NF == 3 && $2 ~ /^[0-9]+(\.[0-9]*)?$/ {
                print $2 >> (dir "/" $1 "." peer)
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

: >"$LOG"
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

median() { # file -> median of its lines, or n/a
    [ -s "$1" ] || { echo n/a; return; }
    sort -g "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: >"$TMP/medians"
for key in yield spawn spawnmany chan mutex park_rss park_rss_total park_pte_total \
           park_stack park_kstack; do
    for peer in $PEERS; do
        echo "$key $peer $(median "$TMP/$key.$peer")" >>"$TMP/medians"
    done
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
echo "N per run (libgreen/Go/pthreads):$(for b in $BENCHES; do
    printf ' %s %s/%s/%s;' "$b" "$(n_for green "$b")" "$(n_for go "$b")" "$(n_for pthread "$b")"
done)"
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
        print "Targets (DESIGN.md):"
        target("yield <= 15 ns/switch", "yield", 15, "ns")
        target("spawn+join <= 80 ns", "spawn", 80, "ns")
        target("unbuffered chan hop <= 40 ns", "chan", 40, "ns")
        if (park_n == 1000000) target("1M parked <= 4.5 GiB RSS", "park_rss_total", 4608, "MiB")
        else printf "  %-30s not measured (BENCH_PARK_N=%d, not 1M)\n", "1M parked <= 4.5 GiB RSS", park_n
    }' "$TMP/medians"
echo
echo "raw figures: $LOG"
