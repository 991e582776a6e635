#!/bin/sh
# make check: the house rules of the library's sources (docs/design.md,
# "Module map").
#   1. No source file of the library over 600 lines (sched/, signals/,
#      safepoints/, preload/, include/).
#   2. Inside each of sched/, signals/, safepoints/ and preload/, calls
#      between files run one way: no file calls (or reads a variable of) a
#      file that calls it back, directly or around a circle.
#   3. Between the directories, only downwards: preload -> signals ->
#      safepoints -> sched.
# The calls are read from the built objects, not the text: `nm` lists what
# each object defines and what it takes from others (an inline function of a
# header counts for the file that uses it); the circles are the files that
# reach each other.
# Run from the build directory (automake does; abs_top_builddir, srcdir).
set -u
LC_ALL=C
export LC_ALL

top=${abs_top_builddir:-.}
src=${srcdir:-.}
nm=${NM:-nm}
command -v "${nm%% *}" >/dev/null 2>&1 || { echo "layers.sh: $nm not found (binutils): skipped"; exit 77; }

status=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/green-layers.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT

# 1. Lengths.
for f in "$src"/sched/*.[chS] "$src"/signals/*.[chS] "$src"/safepoints/*.[chS] \
         "$src"/preload/*.[ch] "$src"/include/*.h; do
    test -f "$f" || continue
    n=$(wc -l < "$f")
    if test "$n" -gt 600; then
        echo "layers.sh: ${f#"$src"/} has $n lines (at most 600)"
        status=1
    fi
done

# 2 and 3. Every object: "lib dir/file symbol" for what it defines (defs)
# and what it takes (uses).  The shim is a library of its own: the libc
# names it defines (sigaction, pthread_join...) are not what libgreen calls.
: > "$tmp/defs"
: > "$tmp/uses"
nobj=0
for o in "$top"/sched/libgreen_la-*.o "$top"/signals/libgreen_la-*.o \
         "$top"/safepoints/libgreen_la-*.o "$top"/preload/libgreen_preload_la-*.o; do
    test -f "$o" || continue
    dir=$(basename "$(dirname "$o")")
    file=$dir/$(basename "$o" .o | sed 's/^.*_la-//')
    # An object whose source is gone (renamed since this build tree last
    # built) is no part of the library.
    test -f "$src/$file.c" || test -f "$src/$file.S" || continue
    nobj=$((nobj + 1))
    lib=libgreen
    test "$dir" = preload && lib=preload
    $nm -P --defined-only "$o" | awk -v l="$lib" -v f="$file" '$2 ~ /^[A-Z]$/ { print l, f, $1 }' >> "$tmp/defs"
    $nm -P --undefined-only "$o" | awk -v l="$lib" -v f="$file" '{ print l, f, $1 }' >> "$tmp/uses"
done
if test "$nobj" -lt 10; then
    echo "layers.sh: ERROR: the library's objects are not in $top (build it first)"
    exit 99
fi

# file -> file edges, each with one symbol that makes it: a use binds to a
# definition in its own library first, else in libgreen (the shim links it).
awk 'NR == FNR { def[$1 SUBSEP $3] = $2; next }
     { k = $1 SUBSEP $3; if (!(k in def)) k = "libgreen" SUBSEP $3
       if ((k in def) && def[k] != $2) { e = $2 " " def[k]; if (!(e in seen)) { seen[e] = 1; print e, $3 } } }' \
    "$tmp/defs" "$tmp/uses" > "$tmp/edges"

rank() {   # the layer of a directory: lower calls higher only
    case $1 in
    preload) echo 0 ;; signals) echo 1 ;; safepoints) echo 2 ;; sched) echo 3 ;; *) echo 9 ;;
    esac
}
while read -r from to sym; do
    fd=${from%%/*} td=${to%%/*}
    if test "$fd" != "$td" && test "$(rank "$fd")" -gt "$(rank "$td")"; then
        echo "layers.sh: $from calls up into $to ($sym)"
        status=1
    fi
done < "$tmp/edges"

# Circles inside a directory: the files that reach each other (transitive
# closure over at most a few dozen files), each edge inside one with a
# symbol that makes it.
for d in sched signals safepoints preload; do
    awk -v d="$d" '
        { split($1, a, "/"); split($2, b, "/") }
        a[1] != d || b[1] != d { next }
        { if (!($1 in id)) { id[$1] = n; name[n++] = $1 }
          if (!($2 in id)) { id[$2] = n; name[n++] = $2 }
          r[id[$1], id[$2]] = 1; sym[id[$1], id[$2]] = $3 }
        END {
            for (k = 0; k < n; k++) for (i = 0; i < n; i++) if (r[i, k])
                for (j = 0; j < n; j++) if (r[k, j]) r[i, j] = 1
            for (i = 0; i < n; i++) {
                if (done[i] || !r[i, i]) continue
                line = ""; cnt = 0
                for (j = 0; j < n; j++) if (j == i || (r[i, j] && r[j, i])) {
                    done[j] = 1; line = line " " name[j]; cnt++ }
                printf "layers.sh: a circle of %d files in %s/:%s\n", cnt, d, line
                for (j = 0; j < n; j++) for (k = 0; k < n; k++)
                    if ((j, k) in sym && r[i, j] && r[j, i] && r[i, k] && r[k, i] && j != k)
                        printf "      %s -> %s (%s)\n", name[j], name[k], sym[j, k]
                bad = 1
            }
            exit bad
        }' "$tmp/edges" || status=1
done

test $status -eq 0 && echo "layers.sh: $nobj objects; no file over 600 lines, no circle, no call up"
exit $status
