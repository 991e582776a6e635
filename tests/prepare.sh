# Sourced by tests/run.sh, tests/sanitizers.sh and examples/demo.sh, from
# the top of the source tree: what every one of them does before building.
#   install_missing WHO PACKAGE...  apt-get install the Debian packages not
#                                   yet installed (root only; WHO names the
#                                   script in the error)
#   bootstrap                       undo an in-tree configure, autoreconf -fi

install_missing() {
    who=$1; shift
    missing=
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing="$missing $p"
        fi
    done
    test -z "$missing" && return 0
    echo "==> installing missing Debian packages:$missing"
    if test "$(id -u)" -ne 0; then
        echo "$who: missing packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
}

bootstrap() {
    # An in-tree configure blocks out-of-tree builds.
    if test -f config.status; then
        echo "==> the source tree was configured in place: make distclean"
        make distclean >/dev/null 2>&1 || rm -f config.status
    fi
    echo "==> autoreconf -fi"
    autoreconf -fi
}
