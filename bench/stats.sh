# Sourced by bench/run.sh, bench/echo_bench.sh and bench/bimodal_bench.sh
# (bash), right after each defines die().
#   bench_dirs "$@"    the one argument, a build directory: sets BUILD, OUT
#                      (BUILD/bench, made) and SRC (bench/), or dies
#   real_bin PATH      the ELF behind a libtool wrapper script, or PATH: run
#                      that, so that LD_PRELOAD lands in the program alone
#   go_peer TMP        builds bench/go with $GO (default: go on PATH) into
#                      OUT/go_bench (offline, local toolchain) and prints
#                      its path; prints nothing, and says why on stderr,
#                      without go or if the build fails
#   rotate K WORD...   the words, starting from the K-th (0-based, modulo):
#                      the order peers run in, turned by one each repetition
#   median FILE        the median of FILE's lines, or n/a for none

ME=$(basename "$0")
GO=${GO-$(command -v go || true)}     # the Go toolchain (GO= : none)

bench_dirs() {
    [ $# -eq 1 ] || die "usage: bench/$ME BUILD_DIR"
    [ -d "$1" ] || die "no build directory '$1'"
    BUILD=$(cd "$1" && pwd) || die "cannot enter '$1'"
    SRC=$(cd "$(dirname "$0")" && pwd) || die "cannot find bench/"
    OUT=$BUILD/bench
    mkdir -p "$OUT" || die "cannot create $OUT"
}

real_bin() { # path -> the ELF to run
    local dir base f
    dir=$(dirname "$1") base=$(basename "$1")
    if [ "$(head -c 2 "$1" 2>/dev/null)" = "#!" ]; then
        for f in "$dir/.libs/lt-$base" "$dir/.libs/$base"; do
            [ -x "$f" ] && { echo "$f"; return; }
        done
    fi
    echo "$1"
}

go_peer() { # tmpdir -> path of go_bench, or nothing
    if [ -z "$GO" ]; then
        echo "$ME: no go: the Go column is n/a" >&2
    elif (cd "$SRC/go" &&
          GOCACHE="$OUT/.gocache" GOPATH="$OUT/.gopath" GOENV=off GOFLAGS='' \
          GOPROXY=off GO111MODULE=on GOTOOLCHAIN=local \
          "$GO" build -o "$OUT/go_bench" .) >"$1/gobuild" 2>&1; then
        echo "$OUT/go_bench"
    else
        echo "$ME: go build failed, the Go column is n/a:" >&2
        sed 's/^/  /' "$1/gobuild" >&2
    fi
}

rotate() { # k word... -> the words, starting from the k-th (0-based, modulo)
    local k=$1 i
    shift
    local a=("$@")
    for ((i = 0; i < ${#a[@]}; i++)); do
        printf '%s ' "${a[(i + k) % ${#a[@]}]}"
    done
}

median() { # file -> median of its lines, or n/a
    [ -s "$1" ] || { echo n/a; return; }
    sort -g "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
