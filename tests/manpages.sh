#!/bin/sh
# make check: the manual pages in docs/man against the library they describe.
# One line per problem; "ok: N pages, M names" when there is none.
#
#  (a) Every green_* name libgreen.so exports (nm -D --defined-only; the
#      GREEN_* version nodes are not names), and every GREEN_API function of
#      include/green.h, has a page: docs/man/NAME.3 -- the family page itself
#      or a one-line alias `.so man3/FAMILY.3`, whose target must exist and
#      declare NAME in its SYNOPSIS.
#  (b) A page's ERRORS section names only errno values (E[A-Z0-9]+) that the
#      code can return.  The rule: the name must appear in the text of a
#      function reachable from the functions of the page's SYNOPSIS -- their
#      definitions in sched/, signals/ and safepoints/ (.c and the private
#      headers), then every function, function-like macro or initialised
#      object whose name those bodies mention, transitively -- or in the
#      paragraph of include/green.h that declares one of them (the
#      documented contract).  The walk does not enter the scheduler through
#      the calls that switch to other threads (STOP below): what other
#      threads run meanwhile is not what the call returns.  Comments inside
#      the bodies count, as they are how the code names what a system call
#      may return (green_poll's EFAULT).
#  (c) A section 3 page has NAME, SYNOPSIS, DESCRIPTION, RETURN VALUE and
#      ERRORS; a section 7 page NAME and DESCRIPTION.
#  (d) groff -man -ww (every warning) says nothing about a page; nor does
#      `man --warnings -l` where man-db is installed.
# Run from the build directory (automake does, with srcdir set).  Without
# a shared library (--disable-shared) (a) checks green.h's names only.
set -u
top=${srcdir:-$(dirname "$0")/..}
man=$top/docs/man
lib=${abs_top_builddir:-.}/.libs/libgreen.so
NM=${NM:-nm}
STOP="green__sched_leave green__switch green__ctx_switch green__poll green__switch_finish"
fails=0
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT

problem() {
    echo "manpages.sh: $*"
    fails=$((fails + 1))
}

# The text of one section of a page, from its .SH line to the next.
section() { # page name
    awk -v want="$2" '
        /^\.SH/ { name = $0; sub(/^\.SH[ \t]+/, "", name); gsub(/"/, "", name)
                  on = (name == want); next }
        on' "$1"
}

if test ! -d "$man"; then
    echo "manpages.sh: $man: no such directory"
    exit 99
fi

# ---- (a) every name has a page -------------------------------------------
{
    sed -n 's/^GREEN_API[^(]*[ *]\(green_[a-z0-9_]*\)(.*/\1/p' "$top/include/green.h"
    if test -f "$lib"; then
        $NM -D --defined-only "$lib" |
            awk '$2 != "A" && $NF ~ /^green_[^_]/ { sub(/@.*/, "", $NF); print $NF }'
    else
        echo "manpages.sh: $lib not built: checking green.h's names only" >&2
    fi
} | sort -u > "$tmp/names"
while read -r name; do
    test -f "$man/$name.3" || problem "$name is exported but has no page (docs/man/$name.3)"
done < "$tmp/names"

# Aliases: `.so man3/X.3`, X a page that declares the alias's name.
for page in "$man"/*.3; do
    target=$(sed -n '1s/^\.so man3\///p' "$page")
    test -n "$target" || continue
    name=$(basename "$page" .3)
    if test ! -f "$man/$target"; then
        problem "docs/man/$name.3: alias of $target, which does not exist"
    elif ! section "$man/$target" SYNOPSIS | grep -q "$name("; then
        problem "docs/man/$name.3: alias of $target, whose SYNOPSIS does not declare $name"
    fi
done

# ---- (c) the sections -----------------------------------------------------
npages=0
for page in "$man"/*.[37]; do
    head -n 1 "$page" | grep -q '^\.so ' && continue
    npages=$((npages + 1))
    case $page in
    *.3) want="NAME SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS" ;;
    *) want="NAME DESCRIPTION" ;;
    esac
    for s in $want; do
        s=$(echo "$s" | tr _ ' ')
        grep -Eq "^\.SH[[:space:]]+\"?$s\"?[[:space:]]*\$" "$page" ||
            problem "docs/man/$(basename "$page"): no $s section"
    done
done

# ---- (b) ERRORS against the code ------------------------------------------
# Every definition in the library's sources: functions, function-like
# macros, initialised objects (hook tables name functions), keyed by name;
# static names that repeat in several files are merged (the walk only
# widens).  Then, per page, the walk from its functions.
for page in "$man"/*.3; do
    head -n 1 "$page" | grep -q '^\.so ' && continue
    fns=$(section "$page" SYNOPSIS | grep -o 'green_[a-z0-9_]*(' | tr -d '(' | sort -u | tr '\n' ' ')
    errs=$(section "$page" ERRORS | sed 's/\\f[BIRP]/ /g' | grep -oE '\bE[A-Z][A-Z0-9]+\b' |
        sort -u | tr '\n' ' ')
    printf '%s\t%s\t%s\n' "$(basename "$page")" "$fns" "$errs"
done > "$tmp/pages"

awk -v stop="$STOP" -v pagesfile="$tmp/pages" -v header="$top/include/green.h" '
function store(name, text) { body[name] = body[name] "\n" text }
function fname(h,    id) {
    while (match(h, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
        id = substr(h, RSTART, RLENGTH); sub(/[ \t]*\($/, "", id)
        if (id !~ /^(__attribute__|__typeof__|typeof|sizeof|_Alignas|alignas)$/)
            return id
        h = substr(h, RSTART + RLENGTH)
    }
    return ""
}
function oname(h,    l) {
    l = substr(h, 1, index(h, "=") - 1)
    if (index(l, "[")) l = substr(l, 1, index(l, "[") - 1)
    sub(/[ \t]+$/, "", l)
    return match(l, /[A-Za-z_][A-Za-z0-9_]*$/) ? substr(l, RSTART, RLENGTH) : ""
}
FNR == 1 { state = 0 }
# state 0: between definitions; 1: in a header; 2: in a body (until a
# line starting with "}"); 4: in a macro; 5: in a struct/enum to skip.
state == 4 { store(cur, $0); if ($0 !~ /\\$/) state = 0; next }
state == 2 || state == 5 {
    if (state == 2) store(cur, $0)
    if ($0 ~ /^}/) state = 0
    next
}
state == 0 && /^#[ \t]*define[ \t]+[A-Za-z_][A-Za-z0-9_]*\(/ {
    cur = $0; sub(/^#[ \t]*define[ \t]+/, "", cur); sub(/\(.*/, "", cur)
    store(cur, $0); if ($0 ~ /\\$/) state = 4
    next
}
state == 0 && /^[A-Za-z_]/ { state = 1; hdr = "" }
state == 1 {
    hdr = hdr " " $0
    if (hdr ~ /=/ && (index(hdr, "(") == 0 || index(hdr, "=") < index(hdr, "("))) {
        cur = oname(hdr)                       # an initialised object
        if (cur != "") store(cur, hdr)
        state = ($0 ~ /[{][ \t]*$/) ? 2 : 0
        if ($0 ~ /;[ \t]*$/) state = 0
        next
    }
    if (index(hdr, "{")) {
        if (index(hdr, "(") == 0 || index(hdr, "(") > index(hdr, "{")) { state = 5; next }
        cur = fname(hdr); store(cur, hdr)
        state = ($0 ~ /^}|[}][ \t]*$/) ? 0 : 2   # a one-line function ends here
        next
    }
    if ($0 ~ /;[ \t]*$/) state = 0             # a declaration
    next
}
END {
    n = split(stop, s, " "); for (i = 1; i <= n; i++) stopped[s[i]] = 1
    # green.h: the E-names of each paragraph, by the functions it declares.
    para = ""
    while ((getline line < header) > 0) {
        if (line ~ /^[ \t]*$/) { doc_para(para); para = ""; continue }
        para = para "\n" line
    }
    doc_para(para)
    while ((getline line < pagesfile) > 0) {
        split(line, f, "\t")
        page = f[1]; nf = split(f[2], fn, " "); ne = split(f[3], er, " ")
        delete seen; delete ok; qn = 0
        for (i = 1; i <= nf; i++) {
            if (!(fn[i] in body))
                print "manpages.sh: docs/man/" page ": " fn[i] " has no definition in sched/, signals/, safepoints/"
            q[++qn] = fn[i]; seen[fn[i]] = 1
            for (e in doc) if (index(doc[e], " " fn[i] " ")) ok[e] = 1
        }
        for (k = 1; k <= qn; k++) {
            m = split(body[q[k]], tok, /[^A-Za-z0-9_]+/)
            for (j = 1; j <= m; j++) {
                t = tok[j]
                if (t ~ /^E[A-Z][A-Z0-9]+$/) ok[t] = 1
                else if ((t in body) && !(t in seen) && !(t in stopped)) { seen[t] = 1; q[++qn] = t }
            }
        }
        for (i = 1; i <= ne; i++)
            if (!(er[i] in ok))
                print "manpages.sh: docs/man/" page ": ERRORS names " er[i] \
                      ", found neither in the code reachable from " f[2] "nor in green.h on them"
    }
}
function doc_para(p,    m, tok, j, fns, e) {
    fns = " "
    m = split(p, tok, /[^A-Za-z0-9_]+/)
    for (j = 1; j <= m; j++) if (tok[j] ~ /^green_[a-z0-9_]+$/) fns = fns tok[j] " "
    for (j = 1; j <= m; j++) if (tok[j] ~ /^E[A-Z][A-Z0-9]+$/) doc[tok[j]] = doc[tok[j]] fns
}
' "$top"/sched/*.[ch] "$top"/signals/*.[ch] "$top"/safepoints/*.[ch] > "$tmp/errs"
while read -r line; do problem "${line#manpages.sh: }"; done < "$tmp/errs"

# ---- (d) no formatter warning ---------------------------------------------
if command -v groff >/dev/null 2>&1; then
    for page in "$man"/*.[37]; do
        head -n 1 "$page" | grep -q '^\.so ' && continue
        out=$(LC_ALL=C groff -t -man -ww -z "$page" 2>&1)
        test -z "$out" || problem "docs/man/$(basename "$page"): groff: $(echo "$out" | head -n 3 | tr '\n' ' ')"
        if command -v man >/dev/null 2>&1; then
            out=$(LC_ALL=C MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
            test -z "$out" || problem "docs/man/$(basename "$page"): man: $(echo "$out" | head -n 3 | tr '\n' ' ')"
        fi
    done
else
    echo "manpages.sh: no groff: formatter warnings not checked"
fi

if test "$fails" -ne 0; then
    echo "manpages.sh: FAIL: $fails problems"
    exit 1
fi
echo "manpages.sh: ok: $npages pages, $(wc -l < "$tmp/names") names"
