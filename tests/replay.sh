#!/bin/sh
# make check: a deterministic run replays across processes.  The same seed
# run in two processes -- different addresses, different real times -- gives
# the same outcome and schedule digest; another seed gives another digest;
# and examples/race_hunt finds a seed that loses deposits and replays it.
set -u
prog=${abs_top_builddir:-.}/examples/race_hunt
if test ! -x "$prog"; then
    echo "replay.sh: $prog not built"
    exit 99
fi

a=$("$prog" 5) || { echo "replay.sh: FAIL: race_hunt 5 failed"; exit 1; }
b=$("$prog" 5) || { echo "replay.sh: FAIL: race_hunt 5 failed"; exit 1; }
c=$("$prog" 6) || { echo "replay.sh: FAIL: race_hunt 6 failed"; exit 1; }
echo "first process:  $a"
echo "second process: $b"
echo "seed 6:         $c"
if test "$a" != "$b"; then
    echo "replay.sh: FAIL: one seed, two outcomes"
    exit 1
fi
if test "${a##*digest }" = "${c##*digest }"; then
    echo "replay.sh: FAIL: seeds 5 and 6 gave one schedule"
    exit 1
fi
"$prog" || { echo "replay.sh: FAIL: the hunt did not find and replay the race"; exit 1; }
echo "replay.sh: ok"
