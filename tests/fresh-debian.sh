#!/bin/bash
# tests/fresh-debian.sh -- prove the README's plain build on a fresh, minimal Debian 12
# (bookworm) with only the required packages, in a debootstrap chroot.
#
# usage: fresh-debian.sh REPO [COMMIT]
#   REPO    path (or URL) git can clone, e.g. . for this checkout
#   COMMIT  optional commit/branch/tag to check out (default: the clone's HEAD)
#
# environment (all optional):
#   ROOT=/var/tmp/libgreen-fresh-root  chroot directory; reused if already bootstrapped
#   OUT=./fresh-debian-out    where logs and summaries go (host side)
#   MIRROR=http://deb.debian.org/debian
#   PHASES="setup build check report"  which phases to run (any subset, in this order;
#                             report summarizes the last make check's logs)
#   WAIT_FILE=, WAIT_LINES=   before `make check`, wait (poll 60 s) until
#                             WAIT_FILE has >= WAIT_LINES lines; always also
#                             waits while `pgrep -f distcheck` finds something
#                             or any make runs outside the chroot (timing tests
#                             must have the CPUs); makes seen on the host during
#                             make check are logged to $OUT/contention.txt
#   ETC_HOSTS=0               leave the chroot without /etc/hosts, as debootstrap makes
#                             it (default: write the installer's default if missing)
#   KEEP_MOUNTS=1             do not unmount at exit (default: unmount)
#
# Idempotent: an existing bootstrapped $ROOT is reused (apt-get install of the
# same packages is a no-op); the clone in $ROOT/root/libgreen is always made
# afresh; mounts are made only if missing and are removed on exit.
set -eu

REPO=${1:?usage: $0 REPO [COMMIT]}
COMMIT=${2:-}
ROOT=${ROOT:-/var/tmp/libgreen-fresh-root}
OUT=${OUT:-$PWD/fresh-debian-out}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PHASES=${PHASES:-setup build check report}
WAIT_FILE=${WAIT_FILE:-}
WAIT_LINES=${WAIT_LINES:-0}
REQUIRED="build-essential autoconf automake libtool pkg-config libunwind-dev libcriterion-dev git"
# ca-certificates is not needed (the clone is local, apt uses http) and would pull openssl
# packages that must NOT be in the minimal root (optional test dependencies)
# (git pulls the runtime libcurl3-gnutls; build-essential pulls g++: both expected)
FORBIDDEN='^(libhiredis.*|redis-server|redis-tools|libcurl.*-dev|curl|libpq.*|postgresql.*|nginx.*|libsqlite3-dev|sqlite3|libjemalloc.*|gdb|clang.*|golang.*|valgrind)$'
# allowed only if some required package depends on it; reported
NOTABLE='^(openssl|ca-certificates|libssl-dev|libcurl.*|libsqlite3-0|g[+][+].*|libcriterion.*|libunwind.*|python3.*|perl)$'

mkdir -p "$OUT"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive CRITERION_JOBS=1 /bin/bash -c "$1"; }

MOUNTS="proc sys dev dev/pts dev/shm"
mount_all() {
    mountpoint -q "$ROOT/proc"    || mount -t proc proc "$ROOT/proc"
    mountpoint -q "$ROOT/sys"     || mount -t sysfs sysfs "$ROOT/sys"
    # private, so that mounts below the bind never propagate to the host's /dev
    # (systemd hosts make / shared)
    mountpoint -q "$ROOT/dev"     || { mount --bind /dev "$ROOT/dev" && mount --make-private "$ROOT/dev"; }
    mountpoint -q "$ROOT/dev/pts" || mount -t devpts devpts "$ROOT/dev/pts"
    mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
}
umount_all() {
    for m in dev/shm dev/pts dev sys proc; do
        if mountpoint -q "$ROOT/$m"; then umount -l "$ROOT/$m"; fi
    done
}
[ -n "${KEEP_MOUNTS:-}" ] || trap umount_all EXIT

has() { case " $PHASES " in *" $1 "*) return 0;; esac; return 1; }

# ---------------------------------------------------------------- setup
if has setup; then
    command -v debootstrap >/dev/null || { apt-get update && apt-get install -y debootstrap; }
    if [ -x "$ROOT/usr/bin/apt-get" ] && [ -f "$ROOT/.bootstrapped" ]; then
        log "reusing $ROOT"; reused=1
    else
        if [ -e "$ROOT" ]; then    # an interrupted debootstrap: start over
            umount_all
            log "removing the incomplete $ROOT"; rm -rf --one-file-system "$ROOT"
        fi
        log "debootstrap --variant=minbase bookworm $ROOT $MIRROR"
        t0=$(date +%s)
        debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$OUT/debootstrap.log" 2>&1
        touch "$ROOT/.bootstrapped"
        log "debootstrap took $(( $(date +%s) - t0 )) s"
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # debootstrap never writes /etc/hosts (the installer's netcfg, docker, systemd-nspawn
    # provide one on real systems); without it "localhost" does not resolve and
    # test_preload's getaddrinfo("localhost") case fails. Write the installer's default.
    if [ "${ETC_HOSTS:-1}" = 0 ]; then
        [ ! -e "$ROOT/etc/hosts" ] || log "ETC_HOSTS=0 but $ROOT/etc/hosts exists: left as is"
    elif [ ! -e "$ROOT/etc/hosts" ]; then
        printf '127.0.0.1\tlocalhost\n127.0.1.1\tminroot\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' > "$ROOT/etc/hosts"
        log "wrote a default $ROOT/etc/hosts (debootstrap does not create one)"
    fi
    mount_all
    if [ -z "${reused:-}" ]; then
        in_root 'dpkg -l | grep -c ^ii' > "$OUT/dpkg-count-minbase.txt"
        cp "$OUT/dpkg-count-minbase.txt" "$ROOT/.minbase-count"
    else
        cat "$ROOT/.minbase-count" 2>/dev/null > "$OUT/dpkg-count-minbase.txt" || echo unknown > "$OUT/dpkg-count-minbase.txt"
    fi
    t0=$(date +%s)
    in_root "apt-get update && apt-get install -y --no-install-recommends $REQUIRED" \
        > "$OUT/apt-install.log" 2>&1
    log "apt-get install took $(( $(date +%s) - t0 )) s"
    in_root 'dpkg -l' > "$OUT/dpkg-l.txt"
    in_root 'dpkg -l | grep -c ^ii' > "$OUT/dpkg-count.txt"
    log "packages: $(cat "$OUT/dpkg-count-minbase.txt") after minbase${reused:+ (recorded at bootstrap)}, $(cat "$OUT/dpkg-count.txt") installed (ii), dpkg -l | wc -l = $(wc -l < "$OUT/dpkg-l.txt")"
    if awk '/^ii/{print $2}' "$OUT/dpkg-l.txt" | sed 's/:.*//' | grep -E "$FORBIDDEN" > "$OUT/forbidden.txt"; then
        log "ERROR: optional packages present in the minimal root:"; cat "$OUT/forbidden.txt" >&2
        exit 1
    fi
    log "no optional package (hiredis, curl, libpq, sqlite3-dev, ...) installed"
    awk -v re="$NOTABLE" '/^ii/{n=$2; sub(/:.*/,"",n); if (n ~ re) print n, $3}' "$OUT/dpkg-l.txt" > "$OUT/notable.txt"
    log "notable: $(awk '{print $1}' "$OUT/notable.txt" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- build
if has build; then
    mount_all
    rm -rf "$ROOT/root/libgreen"
    git clone -q "$REPO" "$ROOT/root/libgreen"
    if [ -n "$COMMIT" ]; then git -C "$ROOT/root/libgreen" checkout -q "$COMMIT"; fi
    git -C "$ROOT/root/libgreen" log -1 --format='%H %s' > "$OUT/commit.txt"
    log "cloned $REPO at $(cut -c1-12 "$OUT/commit.txt")"
    t0=$(date +%s)
    in_root 'cd /root/libgreen && autoreconf -fi' > "$OUT/autoreconf.log" 2>&1
    t1=$(date +%s); log "autoreconf -fi: $((t1 - t0)) s"
    in_root 'cd /root/libgreen && ./configure' > "$OUT/configure.log" 2>&1
    t2=$(date +%s); log "./configure: $((t2 - t1)) s"
    in_root 'cd /root/libgreen && make -j2' > "$OUT/make.log" 2>&1
    t3=$(date +%s); log "make -j2: $((t3 - t2)) s"
fi

# ---------------------------------------------------------------- check
# make processes outside the chroot (another test suite would share the CPUs)
host_makes() {
    for p in $(pgrep -x make); do
        if [ "$(readlink /proc/$p/root 2>/dev/null)" = / ]; then
            tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null; echo
        fi
    done
    return 0
}
if has check; then
    mount_all
    while :; do
        busy=
        if [ -n "$WAIT_FILE" ] && [ "$(wc -l < "$WAIT_FILE" 2>/dev/null || echo 0)" -lt "$WAIT_LINES" ]; then
            busy="$WAIT_FILE has < $WAIT_LINES lines"
        fi
        if pgrep -f distcheck > /dev/null; then busy="${busy:+$busy; }a distcheck is running"; fi
        if [ -n "$(host_makes)" ]; then busy="${busy:+$busy; }make running on the host: $(host_makes | head -c 200)"; fi
        [ -z "$busy" ] && break
        log "waiting: $busy"; sleep 60
    done
    t0=$(date +%s)
    # every 5 s, note any make running on the host beside the check (timing
    # tests are only meaningful if there is none)
    : > "$OUT/contention.txt"
    ( while sleep 5; do m=$(host_makes); [ -n "$m" ] && echo "$(date -u +%T) $m" >> "$OUT/contention.txt"; done ) &
    mon=$!
    set +e
    in_root 'cd /root/libgreen && CRITERION_JOBS=1 make check' > "$OUT/make-check.log" 2>&1
    rc=$?
    set -e
    log "make check (-j1, CRITERION_JOBS=1): rc=$rc, $(( $(date +%s) - t0 )) s"
    kill $mon 2>/dev/null || true; wait $mon 2>/dev/null || true
    if [ -s "$OUT/contention.txt" ]; then
        log "WARNING: make ran on the host during make check (timing results not trustworthy):"
        sort -u -k2 "$OUT/contention.txt" | head -5 >&2
    else
        log "no other make ran on the host during make check"
    fi
    echo $rc > "$OUT/make-check.rc"
fi

# ---------------------------------------------------------------- report
if has report; then
    # summary and SKIP reasons
    grep -E '^# [A-Z]+: ' "$OUT/make-check.log" > "$OUT/check-totals.txt" || true
    grep -E '^(PASS|SKIP|FAIL|XFAIL|XPASS|ERROR): ' "$OUT/make-check.log" > "$OUT/check-results.txt" || true
    : > "$OUT/skips.txt"
    for t in $(awk '/^SKIP: /{print $2}' "$OUT/make-check.log"); do
        d=$(dirname "$t"); b=$(basename "$t"); b=${b%.sh}; b=${b%.skip}
        for lf in "$ROOT/root/libgreen/$d/$b.log"; do
            { echo "== $t ($d/$b.log)"; grep -v '^$' "$lf" 2>/dev/null | tail -n 8; } >> "$OUT/skips.txt"
        done
    done
    # Criterion subtests that skipped inside a passing suite
    grep -rhE '\[SKIP\]|skipped' "$ROOT/root/libgreen/tests/"*.log 2>/dev/null | sort -u > "$OUT/criterion-skips.txt" || true
    log "totals: $(grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' "$OUT/make-check.log" | tr -s ' ' | tr '\n' ' ')"
    exit "$(cat "$OUT/make-check.rc" 2>/dev/null || echo 1)"
fi
