#!/bin/sh
# tests/not_built.sh -- stands in, in make check, for a test program that
# configure could not build, so that it shows as SKIP with the package to
# install instead of vanishing.  Its copies are named after the test:
#   tests/no_hiredis.skip   for tests/test_hiredis: hiredis (libhiredis-dev) was not found
#   tests/no_cxx.skip       for tests/test_hijack_cxx and test_foreign_cxx: no C++ compiler
# make check runs them through this script (SKIP_LOG_COMPILER).
name=$(basename "$1" .skip)
case $name in
    no_hiredis) why="tests/test_hiredis: hiredis not found: install libhiredis-dev (and redis-server), then re-run configure" ;;
    no_cxx)     why="tests/test_hijack_cxx, tests/test_foreign_cxx: no C++ compiler: install g++, then re-run configure" ;;
    *)            why="not built by configure" ;;
esac
echo "$name: skipped: $why"
exit 77
