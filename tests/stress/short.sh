#!/bin/sh
# make check: a short run of the stress program, $STRESS_SECONDS long
# (default 20).  Runs from the build directory, so it works when building
# out of tree; the stress program's exit status is the test's.
cd "${abs_top_builddir:-.}" || exit 99
exec ./tests/stress/stress --seconds "${STRESS_SECONDS:-20}"
