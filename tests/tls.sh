#!/bin/sh
# make check: libcurl over HTTPS and libpq over TLS -- unmodified client
# libraries on OpenSSL -- from many green threads at once, preempted by
# signal, under LD_PRELOAD=libgreen-preload.so (tests/tls_clients.c).
#
# Starts its own servers on 127.0.0.1, on ports it picks: nginx serving a
# 64 KiB file over HTTPS, and a fresh PostgreSQL cluster that accepts only
# TLS, both with a certificate from a throwaway CA.  Then runs tls_clients
# $TLS_RUNS times (default 20) per client and configuration -- 1 and 2
# workers, 1000 us and 50 us quanta -- each run under `timeout 60`, and
# prints a line per configuration.  Fails on any failed request or query,
# hang or crash, and shows the last failing run's output.  A configuration
# stops at its first hang.
#
# Run from the build directory (automake does).  Skips (77) when
# tests/tls_clients was not built with both libcurl and libpq, or nginx,
# openssl or PostgreSQL is not installed.  As root, PostgreSQL runs as the
# postgres user (initdb refuses root).  Setup failures exit 99.
set -u
unset GREEN_UNSAFE GREEN_PREEMPTIBLE  # preempt as libgreen decides by itself

top=${abs_top_builddir:-.}
runs=${TLS_RUNS:-20}
shim=$top/preload/.libs/libgreen-preload.so
# The real program, not libtool's wrapper script: LD_PRELOAD must reach it
# alone (preload.sh does the same).
prog=$top/tests/.libs/tls_clients
test -x "$prog" || prog=$top/tests/tls_clients

skip() { echo "tls.sh: skipped: $*"; exit 77; }
setup_failed() { echo "tls.sh: ERROR: $*"; exit 99; }

test -x "$prog" || skip "tests/tls_clients not built: install libcurl4-openssl-dev and libpq-dev, then rerun configure"
test -f "$shim" || skip "$shim not built (static only?)"
libs=$top/.libs:$top/preload/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# What is missing, gathered before skipping, so the line names every
# package to install at once.
missing=
need() { missing="$missing $1"; }
# probe MODE PACKAGE: a mode alone is bad usage (exit 2), or 77 when the
# build left its library out.
probe() {
    out=$(LD_LIBRARY_PATH=$libs "$prog" "$1" 2>&1)
    case $? in
    2) ;;
    77) need "$2"; rebuild=1 ;;
    *) setup_failed "tests/tls_clients does not run: $out" ;;
    esac
}
rebuild=
probe curl libcurl4-openssl-dev
probe pq libpq-dev
nginx=$(command -v nginx || echo /usr/sbin/nginx)
test -x "$nginx" || need nginx
command -v openssl >/dev/null || need openssl
pgbin=
for d in /usr/lib/postgresql/*/bin; do
    test -x "$d/initdb" && test -x "$d/pg_ctl" && test -x "$d/postgres" && pgbin=$d
done
test -n "$pgbin" || need postgresql
if test -n "$missing"; then
    skip "install$missing${rebuild:+, then rerun configure}"
fi
if test "$(id -u)" -eq 0; then
    id postgres >/dev/null 2>&1 || skip "no postgres user: install postgresql"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

. "$(dirname "$0")/shim_preload.sh"
preload=$(shim_preload "$prog" "$shim")

# ---- The temporary directory, and the servers' end -------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tls.XXXXXX") || setup_failed "mktemp -d failed"
pgdir=$tmp/pg                        # the PostgreSQL server's own, as its user
nginx_pid=
pg_started=
cleanup() {
    if test -n "$nginx_pid"; then
        kill "$nginx_pid" 2>/dev/null
        wait "$nginx_pid" 2>/dev/null
    fi
    if test -n "$pg_started"; then
        (cd "$pgdir" && as_pg "$pgbin/pg_ctl" stop -D "$pgdir/data" -m immediate -s >/dev/null 2>&1)
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# A port for a server: outside Linux's usual ephemeral range (32768-60999),
# where the clients' own connections take theirs.
random_port() {
    echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 12000))
}

# ---- Certificates ----------------------------------------------------------

printf 'basicConstraints = CA:FALSE\nsubjectAltName = IP:127.0.0.1\n' >"$tmp/server.ext"
(
    cd "$tmp" &&
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout ca.key -out ca.crt -days 2 -subj "/CN=libgreen tls.sh CA" &&
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout server.key -out server.csr -subj "/CN=127.0.0.1" &&
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 2 \
        -extfile server.ext -out server.crt
) >"$tmp/openssl.log" 2>&1 || setup_failed "openssl could not make the certificates: $(cat "$tmp/openssl.log")"

# ---- nginx -----------------------------------------------------------------

# The file the curl clients fetch; tls_clients.c makes the same in memory.
mkdir "$tmp/www" "$tmp/nginx"
awk 'BEGIN { for (k = 0; k < 8192; k++) printf "%07x\n", (k * 2654435761) % 268435456 }' \
    >"$tmp/www/pattern"
chmod 644 "$tmp/www/pattern"
test "$(wc -c <"$tmp/www/pattern")" -eq 65536 || setup_failed "awk wrote a pattern of the wrong size"

# As root, nginx's workers would run as nobody, who may not read $tmp.
user_line=
test "$(id -u)" -ne 0 || user_line="user root;"

# Up once a handshake verified against our CA succeeds; gone when the port
# was taken (nginx tries to bind for 2.5 s, then exits).
nginx_up() {
    i=0
    while test $i -lt 100; do
        kill -0 "$nginx_pid" 2>/dev/null || return 1
        openssl s_client -connect "127.0.0.1:$https_port" -CAfile "$tmp/ca.crt" \
            -verify_ip 127.0.0.1 -verify_return_error </dev/null >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    setup_failed "nginx did not answer on 127.0.0.1:$https_port within 10 s; its log:
$(cat "$tmp/nginx/error.log")"
}

for attempt in 1 2 3 4 5; do
    https_port=$(random_port)
    cat >"$tmp/nginx/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 2;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$https_port ssl;
        ssl_certificate $tmp/server.crt;
        ssl_certificate_key $tmp/server.key;
        root $tmp/www;
    }
}
EOF
    "$nginx" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" \
        >>"$tmp/nginx/error.log" 2>&1 &
    nginx_pid=$!
    nginx_up && break
    wait "$nginx_pid"
    nginx_pid=
done
test -n "$nginx_pid" || setup_failed "nginx would not start on any of 5 ports; its log:
$(cat "$tmp/nginx/error.log")"

# ---- PostgreSQL ------------------------------------------------------------

mkdir "$pgdir"
cp "$tmp/server.crt" "$tmp/server.key" "$pgdir/"
chmod 600 "$pgdir/server.key"
if test "$(id -u)" -eq 0; then
    chown -R postgres: "$pgdir"
    chmod 711 "$tmp"                 # postgres may pass through to $pgdir
fi
# The tools run from $pgdir: the postgres user may not enter the cwd.
(cd "$pgdir" && as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync \
    --no-locale -E UTF8 >"$tmp/initdb.log" 2>&1) ||
    setup_failed "initdb failed: $(cat "$tmp/initdb.log")"
cat >>"$pgdir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pgdir'
ssl = on
ssl_cert_file = '$pgdir/server.crt'
ssl_key_file = '$pgdir/server.key'
max_connections = 120
fsync = off
EOF
echo "hostssl all all 127.0.0.1/32 trust" >"$pgdir/data/pg_hba.conf"

pg_started=yes
pg_ok=
for attempt in 1 2 3 4 5; do
    pg_port=$(random_port)
    # -w: back once the server accepts connections, or has failed (30 s at most).
    if (cd "$pgdir" && as_pg "$pgbin/pg_ctl" start -D "$pgdir/data" -l "$pgdir/server.log" \
            -o "-p $pg_port" -w -t 30 -s >/dev/null 2>&1); then
        pg_ok=yes
        break
    fi
    grep -q "could not bind" "$pgdir/server.log" || break
done
test -n "$pg_ok" || setup_failed "PostgreSQL did not start; its log:
$(cat "$pgdir/server.log")"

# ---- The runs --------------------------------------------------------------

url=https://127.0.0.1:$https_port/pattern
conninfo="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres connect_timeout=20"
limit=60                             # seconds a run may take
bad=0

# run_all NAME ARGS...: $runs runs of tls_clients ARGS per configuration.
run_all() {
    name=$1
    shift
    for w in 1 2; do
        for q in 1000 50; do
            ok=0 failed=0 hung=0 crashed=0 i=0
            : >"$tmp/walls"
            rm -f "$tmp/last"
            while test $i -lt "$runs"; do
                i=$((i + 1))
                GREEN_PREEMPT=signal GREEN_WORKERS=$w GREEN_QUANTUM_US=$q LD_PRELOAD=$preload \
                    LD_LIBRARY_PATH=$libs timeout $limit "$prog" "$@" >"$tmp/out" 2>&1
                rc=$?
                case $rc in
                0)
                    ok=$((ok + 1))
                    sed -n 's/.* wall_ms=\([0-9.]*\).*/\1/p' "$tmp/out" >>"$tmp/walls"
                    continue
                    ;;
                124) hung=$((hung + 1)) how="hung (killed after $limit s)" ;;
                *)
                    how="exited with $rc"
                    if test $rc -ge 128; then crashed=$((crashed + 1)); else failed=$((failed + 1)); fi
                    ;;
                esac
                { echo "last failure: run $i $how; its output:"; cat "$tmp/out"; } >"$tmp/last"
                test $rc -ne 124 || break    # each costs $limit s: one is enough
            done
            median=$(sort -n "$tmp/walls" | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] " ms" : "-" }')
            stopped=
            test $i -eq "$runs" || stopped=" (stopped after run $i: it hung)"
            echo "$name workers=$w quantum=${q}us: $ok/$runs ok, $failed failed, $hung hung, $crashed crashed, median wall $median$stopped"
            if test -f "$tmp/last"; then
                sed -e '1s/^/  /' -e '2,$s/^/    /' "$tmp/last"
                bad=1
            fi
        done
    done
}

echo "tls.sh: nginx on 127.0.0.1:$https_port, PostgreSQL $(basename "$(dirname "$pgbin")") on 127.0.0.1:$pg_port; $runs runs each"
run_all curl curl "$url" "$tmp/ca.crt" 100 5
run_all pq pq "$conninfo" 50 20
exit $bad
