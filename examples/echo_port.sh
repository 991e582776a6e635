# Sourced by examples/demo.sh, tests/preload.sh and bench/echo_bench.sh.
#   echo_port FILE PID [STEP]
#                        wait up to 10 s for the "listening on
#                        127.0.0.1:PORT" line examples/echo_server (or the Go
#                        peer) writes to FILE, and print PORT; fails, printing
#                        nothing, if PID exits first or the time runs out.
#                        STEP: seconds between looks (0.1; 10 s in all).
echo_port() {
    step=${3:-0.1}
    for _ in $(seq "$(awk -v s="$step" 'BEGIN { printf "%d", 10 / s }')"); do
        p=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$1")
        if test -n "$p"; then
            echo "$p"
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep "$step"
    done
    return 1
}
