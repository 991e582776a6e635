#!/bin/sh
# The first command of README.md: build libgreen (no tests) and run the
# token ring example.  Arguments are passed on to examples/token_ring.
#   JOBS=n   parallel make jobs (default 2)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${JOBS:-2}

packages="build-essential autoconf automake libtool pkg-config libunwind-dev"

missing=
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
if test -n "$missing"; then
    echo "==> installing missing Debian packages:$missing"
    if test "$(id -u)" -ne 0; then
        echo "demo.sh: missing packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

if test -f config.status; then
    echo "==> the source tree was configured in place: make distclean"
    make distclean >/dev/null 2>&1 || rm -f config.status
fi

echo "==> autoreconf -fi"
autoreconf -fi
mkdir -p build
(cd build && ../configure --disable-tests && make -j"$jobs")

echo "==> build/examples/token_ring $*"
build/examples/token_ring "$@"
echo
echo "==> build/examples/preempt_demo"
build/examples/preempt_demo
echo
echo "==> build/examples/race_hunt   (deterministic runs: find a race by seed, replay it)"
exec build/examples/race_hunt
