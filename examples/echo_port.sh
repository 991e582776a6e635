# Sourced by examples/demo.sh, tests/preload.sh and bench/echo_bench.sh.
#   echo_port FILE PID   wait up to 10 s for the "listening on
#                        127.0.0.1:PORT" line examples/echo_server (or the Go
#                        peer) writes to FILE, and print PORT; fails, printing
#                        nothing, if PID exits first or the time runs out.
echo_port() {
    for _ in $(seq 100); do
        p=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$1")
        if test -n "$p"; then
            echo "$p"
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
