# Sourced by the scripts that run a program under the LD_PRELOAD shim
# (tests/preload.sh, bimodal.sh, sqlite.sh, tls.sh).
#   shim_preload PROG SHIM   what LD_PRELOAD must hold for PROG: SHIM, after
#                            ASan's runtime when PROG is an ASan build (that
#                            runtime must come first among preloaded objects)
shim_preload() {
    if ldd "$1" 2>/dev/null | grep -q libasan; then
        echo "$(${CC:-gcc} -print-file-name=libasan.so):$2"
    else
        echo "$2"
    fi
}
