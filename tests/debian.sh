#!/bin/bash
# The Debian packages, built and used as a user would (not part of make check).
#
#     tests/debian.sh [--head]
#
# Copies the source tree into a temporary directory -- the files git knows
# of (tracked, and untracked ones that are not ignored, so no build tree and
# no generated file), as they are in the working tree; with --head, the
# committed tree (git archive HEAD) -- plus debian/ as it is in the working
# tree, committed or not.  There it runs dpkg-buildpackage -us -uc -b with
# DEB_BUILD_OPTIONS="nocheck parallel=2", installs libgreen0, libgreen-dev
# and libgreen-preload0 with apt-get, and, against the installed files only:
#   - builds examples/token_ring with `pkg-config --cflags --libs green`
#     and runs it;
#   - builds examples/race_hunt with `pkg-config --cflags --libs green-budget`
#     and runs one seed;
#   - runs a tiny program under LD_PRELOAD=<libdir>/libgreen-preload.so on one
#     worker: a green thread's read() of an empty pipe must park, not block
#     the worker, so that another green thread can write to the pipe;
#   - finds the gdb extension where gdb auto-loads it for libgreen.so.0, and
#     when gdb is installed, with libgreen0-dbgsym, sees gdb load it and
#     list token_ring's green threads;
#   - finds the manual pages with man -w (green_run(3) when it is shipped).
# Then it purges the packages, and whatever apt-get installed with them, so
# the machine is left as it was.
#
# One line per step.  Exit: 0 passed, 1 failed, 77 skipped (a tool or build
# dependency is missing: the line names the packages to install).  Needs
# root, or sudo, for apt-get.  Takes a few minutes on two cores.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
packages="libgreen0 libgreen-dev libgreen-preload0"
mode=worktree
case "${1:-}" in
    --head) mode=head ;;
    "") ;;
    *) echo "usage: tests/debian.sh [--head]"; exit 2 ;;
esac

step() { echo "debian.sh: $*"; }
fail() { echo "debian.sh: FAIL: $*"; exit 1; }
skip() { echo "debian.sh: skipped: $*"; exit 77; }

# ---- What the test needs ------------------------------------------------
command -v dpkg-buildpackage >/dev/null || skip "no dpkg-buildpackage (apt-get install dpkg-dev)"
command -v dh >/dev/null || skip "no debhelper (apt-get install debhelper)"
command -v fakeroot >/dev/null || test "$(id -u)" = 0 || skip "no fakeroot (apt-get install fakeroot)"
command -v git >/dev/null || skip "no git (apt-get install git)"
command -v pkg-config >/dev/null || skip "no pkg-config (apt-get install pkgconf)"
if test "$(id -u)" = 0; then
    as_root=
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=sudo
else
    skip "apt-get needs root: run as root or with password-less sudo"
fi
for p in $packages; do
    if dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
        fail "$p is installed already (dpkg -l $p): purge it first, this test purges what it installs"
    fi
done
test -d "$top/debian" || fail "$top/debian not found"

work=$(mktemp -d /tmp/libgreen-debian.XXXXXX) || fail "mktemp"
installed_before=
cleanup() {
    if test -n "$installed_before"; then
        # Everything apt-get installed: ours and the dependencies it pulled.
        local now new
        now=$(dpkg-query -W -f '${db:Status-Status} ${binary:Package}\n' | awk '$1 == "installed" { print $2 }' | sort)
        new=$(comm -13 <(echo "$installed_before") <(echo "$now"))
        if test -n "$new"; then
            # shellcheck disable=SC2086
            $as_root apt-get purge -y -q $new >"$work/purge.log" 2>&1 &&
                step "purged: $(echo $new | tr '\n' ' ')" ||
                echo "debian.sh: FAIL: apt-get purge $new (see $work/purge.log)"
        fi
    fi
    if test "${keep_work:-0}" = 0; then rm -rf "$work"; else step "kept $work"; fi
}
trap cleanup EXIT

# ---- The source tree ----------------------------------------------------
src=$work/libgreen-0.1.0
mkdir "$src" || fail "mkdir $src"
if test "$mode" = head; then
    git -C "$top" archive --format=tar HEAD | tar -x -C "$src" || fail "git archive HEAD"
else
    (cd "$top" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do test -e "$f" && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -x -C "$src" || fail "copying the working tree"
fi
# debian/ as in the working tree, committed or not, without build outputs
# (.gitignore names them).
rm -rf "$src/debian"
(cd "$top" && git ls-files -z --cached --others --exclude-standard -- debian |
    while IFS= read -r -d '' f; do test -e "$f" && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -x -C "$src" || fail "copying debian/"
test -f "$src/debian/rules" || fail "no debian/rules in the copy"
step "source: $mode copy of $top in $src ($(find "$src" -type f | wc -l) files)"

missing=$(cd "$src" && dpkg-checkbuilddeps 2>&1) ||
    skip "build dependencies missing: ${missing#*Unmet build dependencies: } (apt-get install them)"

# ---- Build ----------------------------------------------------------------
keep_work=1
t0=$(date +%s)
(cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
    fail "dpkg-buildpackage -us -uc -b (last lines of $work/build.log:)$(echo; tail -15 "$work/build.log")"
version=$(cd "$src" && dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
debs=
for p in $packages; do
    deb=$work/${p}_${version}_${arch}.deb
    test -f "$deb" || fail "$deb not built"
    debs="$debs $deb"
done
step "built in $(( $(date +%s) - t0 )) s: $(cd "$work" && for d in $debs; do printf '%s (%s bytes) ' "${d##*/}" "$(stat -c %s "$d")"; done)"

# lintian, when installed: no errors (warnings are listed, not fatal).
if command -v lintian >/dev/null; then
    lintian --tag-display-limit 0 "$work/libgreen_${version}_${arch}.changes" >"$work/lintian.log" 2>&1
    errors=$(grep -c '^E: ' "$work/lintian.log")
    test "$errors" = 0 || fail "lintian: $errors errors: $(grep '^E: ' "$work/lintian.log")"
    step "lintian: 0 errors, $(grep -c '^W: ' "$work/lintian.log") warnings: $(grep '^W: ' "$work/lintian.log" | awk '{ print $3 }' | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1 }')"
else
    step "lintian not installed: not run (apt-get install lintian)"
fi

# ---- Install --------------------------------------------------------------
installed_before=$(dpkg-query -W -f '${db:Status-Status} ${binary:Package}\n' | awk '$1 == "installed" { print $2 }' | sort)
# shellcheck disable=SC2086
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $debs \
    >"$work/install.log" 2>&1 || fail "apt-get install (see $work/install.log)"
for p in $packages; do
    dpkg-query -W -f '${db:Status-Status}' "$p" | grep -qx installed || fail "$p not installed"
done
step "installed: $packages"

# ---- Use the installed files ---------------------------------------------
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$multiarch
# Only the system's pkg-config files: nothing from a build tree or /usr/local.
export PKG_CONFIG_LIBDIR=$libdir/pkgconfig:/usr/share/pkgconfig
unset PKG_CONFIG_PATH
test "$(pkg-config --variable=pcfiledir green)" = "$libdir/pkgconfig" ||
    fail "pkg-config finds green.pc in '$(pkg-config --variable=pcfiledir green)', not $libdir/pkgconfig"
bin=$work/bin
mkdir "$bin"
CC=${CC:-cc}

# The header and the library used must be the installed ones.
uses_installed() {    # program source
    local hdr lib
    hdr=$($CC -M $(pkg-config --cflags green) "$2" 2>/dev/null | tr ' \\' '\n\n' | grep '/green\.h$')
    test "$hdr" = /usr/include/green.h || fail "$2 compiles against '$hdr', not /usr/include/green.h"
    lib=$(ldd "$1" | awk '$1 == "libgreen.so.0" { print $3 }')
    # readlink -f: with merged /usr, ld.so may name /lib/<multiarch>.
    test -n "$lib" && test "$(readlink -f "$lib")" = "$(readlink -f "$libdir/libgreen.so.0")" ||
        fail "$1 loads libgreen.so.0 from '$lib', not $libdir"
}

# shellcheck disable=SC2046
$CC -O2 -o "$bin/token_ring" "$src/examples/token_ring.c" $(pkg-config --cflags --libs green) \
    >"$work/cc.log" 2>&1 || fail "cc token_ring.c \$(pkg-config --cflags --libs green): $(cat "$work/cc.log")"
uses_installed "$bin/token_ring" "$src/examples/token_ring.c"
out=$(timeout 60 "$bin/token_ring" 1000 3 2>&1) || fail "token_ring 1000 3: $out"
echo "$out" | grep -q 'the token made 3000 hops, as it should' || fail "token_ring 1000 3 said: $out"
step "token_ring built with pkg-config green and run: 3000 hops"

# shellcheck disable=SC2046
$CC -O2 -o "$bin/race_hunt" "$src/examples/race_hunt.c" $(pkg-config --cflags --libs green-budget) \
    >"$work/cc.log" 2>&1 || fail "cc race_hunt.c \$(pkg-config --cflags --libs green-budget): $(cat "$work/cc.log")"
lib=$(ldd "$bin/race_hunt" | awk '$1 == "libgreen-budget.so.0" { print $3 }')
test -n "$lib" && test "$(readlink -f "$lib")" = "$(readlink -f "$libdir/libgreen-budget.so.0")" ||
    fail "race_hunt loads libgreen-budget.so.0 from '$lib', not $libdir"
a=$(timeout 60 "$bin/race_hunt" 5 2>&1) && b=$(timeout 60 "$bin/race_hunt" 5 2>&1) || fail "race_hunt 5: $a $b"
test "$a" = "$b" || fail "race_hunt 5 twice gave two outcomes: '$a' / '$b'"
step "race_hunt built with pkg-config green-budget: seed 5 replays ($a)"

cat >"$work/blocking.c" <<'EOF'
/* On one worker, a green thread blocks in read() on an empty pipe; another
 * writes to the pipe 50 ms later.  Without the shim the read holds the only
 * worker and the writer never runs. */
#include <green.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int fds[2];

static void *reader(void *arg)
{
    char c = 0;
    (void)arg;
    return (void *)(long)(read(fds[0], &c, 1) == 1 && c == 'x');
}

static void *writer(void *arg)
{
    (void)arg;
    green_sleep_ns(50 * 1000 * 1000);
    return (void *)(long)(write(fds[1], "x", 1) == 1);
}

static void *run(void *arg)
{
    green_t r, w;
    void *rok = NULL, *wok = NULL;
    (void)arg;
    if (pipe(fds) || green_spawn(&r, reader, NULL) || green_spawn(&w, writer, NULL))
        return NULL;
    if (green_join(w, &wok) || green_join(r, &rok))
        return NULL;
    return (void *)(long)(rok && wok);
}

int main(void)
{
    char line[512];
    int shim = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps))
        shim |= strstr(line, "/libgreen-preload.so") != NULL;
    if (!shim) {
        fprintf(stderr, "libgreen-preload.so is not loaded\n");
        return 1;
    }
    void *ok = NULL;
    int err = green_run(run, NULL, NULL, &ok);
    if (err || !ok) {
        fprintf(stderr, "green_run: %s, ok=%p\n", strerror(err), ok);
        return 1;
    }
    puts("the read parked; the writer ran on the same worker");
    return 0;
}
EOF
# shellcheck disable=SC2046
$CC -o "$bin/blocking" "$work/blocking.c" $(pkg-config --cflags --libs green) >"$work/cc.log" 2>&1 ||
    fail "cc blocking.c: $(cat "$work/cc.log")"
uses_installed "$bin/blocking" "$work/blocking.c"
shim=$(pkg-config --variable=libdir green)/libgreen-preload.so
test -e "$shim" || fail "$shim not installed"
out=$(GREEN_WORKERS=1 LD_PRELOAD=$shim timeout 30 "$bin/blocking" 2>&1) ||
    fail "LD_PRELOAD=$shim blocking (exit $?): $out"
step "LD_PRELOAD=$shim: $out"

# ---- The gdb extension -----------------------------------------------------
# In libgreen0, named after the library's real file under gdb's auto-load
# directory.  Where gdb is installed: with libgreen0-dbgsym (the debug info
# the extension reads), gdb loads it by itself with libgreen.so.0, and in
# token_ring stopped at its 200th green_chan_recv it lists the threads
# parked on the ring's channels and shows the first one's backtrace, down
# to token_ring's own function.
script=/usr/share/gdb/auto-load$(readlink -f "$libdir/libgreen.so.0")-gdb.py
dpkg -S "$script" 2>/dev/null | grep -q '^libgreen0:' || fail "$script is not libgreen0's"
dbgsym=$work/libgreen0-dbgsym_${version}_${arch}.deb
if ! command -v gdb >/dev/null; then
    step "$script installed (no gdb: not tried)"
elif ! test -f "$dbgsym"; then
    step "$script installed (no libgreen0-dbgsym built: not tried)"
else
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "$dbgsym" >"$work/install-dbgsym.log" 2>&1 ||
        fail "apt-get install $dbgsym (see $work/install-dbgsym.log)"
    out=$(timeout 120 gdb -nx -batch -ex 'set breakpoint pending on' \
        -ex 'handle SIGALRM nostop noprint pass' -ex 'break green_chan_recv' -ex 'ignore 1 199' \
        -ex run -ex 'info auto-load python-scripts' -ex 'info green-threads' \
        -ex 'python import re; gdb.execute("green-thread " + re.search(r"green thread (\d+): parked", gdb.execute("info green-threads", to_string=True)).group(1))' \
        -ex kill --args "$bin/token_ring" 1000 3 2>&1)
    echo "$out" | grep -Eq "^Yes +$script *\$" || fail "gdb did not load $script: $out"
    echo "$out" | grep -Eq '^  green thread [0-9]+: parked in green_chan_recv on 0x' ||
        fail "info green-threads lists no thread parked in green_chan_recv: $out"
    echo "$out" | grep -Eq '^#[0-9]+ +0x[0-9a-f]+ in member \(' ||
        fail "green-thread N (the first parked) does not reach token_ring's member(): $out"
    step "gdb loads $script by itself; info green-threads lists $(echo "$out" | grep -c '^  green thread ') threads; green-thread N (the first parked) reaches member()"
fi

# ---- Manual pages ---------------------------------------------------------
pages=$(dpkg -L libgreen-dev | grep -E '^/usr/share/man/man[37]/.+\.[37](\.gz)?$')
test -n "$pages" || fail "libgreen-dev ships no manual page"
command -v man >/dev/null || skip "no man (apt-get install man-db); the rest passed"
for page in $pages; do
    name=${page##*/}; name=${name%.gz}; sect=${name##*.}; name=${name%.*}
    found=$(man -w "$sect" "$name" 2>/dev/null) || fail "man -w $sect $name: not found ($page is installed)"
    # A page that is a link to another (green_join -> green_spawn): man -w
    # names the target.
    test "$(readlink -f "$found")" = "$(readlink -f "$page")" || fail "man -w $sect $name gives $found, not $page"
done
if echo "$pages" | grep -q '/man3/green_run\.3'; then
    found=$(man -w green_run) || fail "man -w green_run: not found"
    step "man -w green_run: $found ($(echo "$pages" | wc -l) pages found by man -w)"
else
    step "man -w: $(echo "$pages" | wc -l) pages found ($(echo $pages | sed 's|/usr/share/man/||g')); no green_run(3) shipped yet"
fi

keep_work=0
step "ok"
