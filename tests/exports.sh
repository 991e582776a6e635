#!/bin/sh
# make check: libgreen.so must export green_* (its API, in version GREEN_0),
# the lock calls it interposes (sched/pthread.c, unversioned) and nothing
# else -- no internal green__* name.  The version script's node name
# (GREEN_0, an absolute symbol) is allowed.
# Run from the build directory (automake does); skips (77) without a
# shared library, e.g. after --disable-shared.
set -u
lib=${abs_top_builddir:-.}/.libs/libgreen.so
NM=${NM:-nm}

if test ! -f "$lib"; then
    echo "exports.sh: $lib not built (static only?): skipped"
    exit 77
fi

# The interposed lock calls (and the thread-specific data calls, sched/keys.c): libgreen.so and libgreen-preload.so export
# exactly these besides their own.
locks="__cxa_guard_abort __cxa_guard_acquire __cxa_guard_release flockfile ftrylockfile \
    funlockfile pthread_cond_broadcast pthread_cond_clockwait pthread_cond_signal \
    pthread_cond_timedwait pthread_cond_wait pthread_mutex_clocklock pthread_mutex_lock \
    pthread_mutex_timedlock pthread_mutex_trylock pthread_mutex_unlock pthread_once \
    pthread_rwlock_clockrdlock pthread_rwlock_clockwrlock pthread_rwlock_rdlock \
    pthread_rwlock_timedrdlock pthread_rwlock_timedwrlock pthread_rwlock_tryrdlock \
    pthread_rwlock_trywrlock pthread_rwlock_unlock pthread_rwlock_wrlock pthread_spin_lock \
    pthread_spin_trylock pthread_spin_unlock sem_clockwait sem_post sem_timedwait sem_wait \
    pthread_join pthread_timedjoin_np pthread_clockjoin_np pthread_barrier_wait \
    pthread_key_create pthread_key_delete pthread_getspecific pthread_setspecific"

# The exec calls (signals/exec.c) and vfork (sched/fork.c): libgreen.so
# only -- a green thread's program links libgreen.so, which then comes
# before libc.
execs="execl execle execlp execv execve execveat execvp execvpe fexecve vfork"

# ... but no vfork in an AddressSanitizer build (sched/fork.c).
if $NM -D "$lib" | grep -q __asan_; then
    execs=$(echo "$execs" | sed 's/ vfork//')
fi

syms=$($NM -D --defined-only "$lib") || { echo "exports.sh: nm failed on $lib"; exit 99; }
echo "$syms"
got=$(echo "$syms" | awk '$NF !~ /^green_[^_]/ && !($2 == "A") { sub(/@.*/, "", $NF); print $NF }' |
    sort | tr '\n' ' ')
want=$(printf '%s\n' $locks $execs | sort | tr '\n' ' ')
if test "$got" != "$want"; then
    echo "exports.sh: FAIL: $lib exports, besides green_*, \"$got\", not the lock calls \"$want\""
    exit 1
fi
# Unversioned, or they would not come before libc's (green.map).
if echo "$syms" | awk '$NF ~ /^(pthread_|sem_|flockfile|__cxa_guard|exec|fexecve|vfork)/ && $NF ~ /@/ { f = 1 } END { exit !f }'; then
    echo "exports.sh: FAIL: $lib gives the lock calls a version: they would not interpose"
    exit 1
fi
bad=$(echo "$syms" | awk '$NF !~ /^green_[^_]/ && !($2 == "A" && $NF ~ /^GREEN_[0-9_]+$/) { print }' |
    grep -v -w -e "$(printf '%s\n' $locks $execs)")
if test -n "$bad"; then
    echo "exports.sh: FAIL: $lib exports symbols outside green_* (internal"
    echo "green__* names must be hidden: no GREEN_API in C, .hidden in asm):"
    echo "$bad"
    exit 1
fi
if ! echo "$syms" | awk '$NF ~ /^green_[^_]/ { found = 1 } END { exit !found }'; then
    echo "exports.sh: FAIL: $lib exports no green_* symbol at all"
    exit 1
fi
echo "exports.sh: ok: green_* and the interposed lock calls exported"

# libgreen-budget.so: the instrumentation hooks and nothing else.
blib=${abs_top_builddir:-.}/.libs/libgreen-budget.so
bsyms=$($NM -D --defined-only "$blib") || { echo "exports.sh: nm failed on $blib"; exit 99; }
echo "$bsyms"
got=$(echo "$bsyms" | awk '!($2 == "A") { sub(/@.*/, "", $NF); print $NF }' | sort | tr '\n' ' ')
want="__cyg_profile_func_enter __cyg_profile_func_enter_bare __cyg_profile_func_exit "
if test "$got" != "$want"; then
    echo "exports.sh: FAIL: $blib exports \"$got\", not \"$want\""
    exit 1
fi
echo "exports.sh: ok: libgreen-budget.so exports the hooks only"

# libgreen-preload.so: exactly the names it interposes
# (preload/green-preload.map), each a function of libc's.
plib=${abs_top_builddir:-.}/preload/.libs/libgreen-preload.so
psyms=$($NM -D --defined-only "$plib") || { echo "exports.sh: nm failed on $plib"; exit 99; }
got=$(echo "$psyms" | awk '!($2 == "A") { sub(/@.*/, "", $NF); print $NF }' | sort | tr '\n' ' ')
want=$(printf '%s\n' __poll_chk __ppoll_chk __read_chk __recv_chk __recvfrom_chk accept accept4 \
    bsd_signal clock_nanosleep close close_range closefrom connect dup dup2 dup3 \
    epoll_pwait epoll_pwait2 epoll_wait fclose fcntl fcntl64 flock getaddrinfo getnameinfo \
    ioctl nanosleep pipe pipe2 poll ppoll pselect read readv recv recvfrom recvmmsg recvmsg \
    select send sendfile sendfile64 sendmmsg sendmsg sendto setsockopt sigaction signal sleep \
    socket socketpair splice sysv_signal tee usleep wait wait3 wait4 waitid waitpid write \
    writev $locks | sort | tr '\n' ' ')
if test "$got" != "$want"; then
    echo "exports.sh: FAIL: $plib exports \"$got\", not \"$want\""
    exit 1
fi
echo "exports.sh: ok: libgreen-preload.so exports the interposed calls only"
