# Sourced by bench/run.sh and bench/echo_bench.sh (bash).
#   rotate K WORD...   the words, starting from the K-th (0-based, modulo):
#                      the order peers run in, turned by one each repetition
#   median FILE        the median of FILE's lines, or n/a for none

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
