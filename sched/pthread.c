/*
 * The pthread, stdio and C++ ABI lock calls, interposed (foreign.c has the
 * design).  This file: mutexes, rwlocks and spinlocks; pthread_wait.c:
 * conditions, semaphores, joins, barriers; pthread_init.c: stdio locks,
 * pthread_once and C++ static guards; pthread_libc.c: libc's own.  libgreen.so exports them under their libc names, outside its
 * GREEN_0 version (green.map), so they come before libc's for every object
 * of a program linked with -lgreen; libgreen-preload.so exports the same
 * names and forwards to these (a preloaded object's own dependencies come
 * after libc in the lookup order).
 *
 * Called by anything that is not a green thread -- a plain OS thread, a
 * worker's scheduler loop, libgreen's signal handler -- each is libc's own,
 * plus a wake of the green threads parked on the object after a release.
 * On a green thread:
 *
 *   mutex, rwlock, spin, flockfile   try; if busy, park on the lock
 *                                    (green__fwait) and try again when
 *                                    woken.  The holder is recorded
 *                                    (green__held_push): unpreemptible and
 *                                    pinned until it lets go.
 *   cond_wait                        park on the condition, unlock, and
 *                                    take the mutex back when signalled;
 *                                    signal/broadcast wake green waiters
 *                                    first, libc's for the rest.
 *   sem_wait                         trywait; park on the semaphore.
 *   pthread_join of an OS thread     tryjoin; park, and try again on a timer
 *                                    (the kernel's wake at its exit is not
 *                                    one libgreen sees).
 *   pthread_barrier_wait             libc's algorithm on libc's barrier,
 *                                    parking where it would sleep; the
 *                                    thread that ends a round wakes both
 *                                    kinds of waiter.
 *   pthread_once, __cxa_guard_*      the same protocol as libc / libstdc++
 *                                    (one compare-and-swap on the control
 *                                    word), parking where they would sleep
 *                                    on a futex; the initializer is a
 *                                    holder while it runs.
 *
 * Return values and errors are libc's: the kind-specific checks it makes
 * against the owner's OS thread id (EDEADLK, EPERM) are made against the
 * green thread instead, since several share one OS thread.  The few fields
 * of glibc's types read here (a mutex's kind, owner and count, a rwlock's
 * writer, a condition's clock, libstdc++'s guard bits, the once control's
 * states) are those of its public headers or of a protocol compiled into
 * every program that uses it; glibc 2.34 or later.
 */
#include "pthread.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* ---- Shared helpers ------------------------------------------------------ */

/* An absolute time on clock clk as a deadline on the run's clock; EINVAL
 * for what libc would refuse. */
int green__pt_deadline(struct green__rt *rt, clockid_t clk, const struct timespec *abs,
                       uint64_t *out)
{
    if (clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC)
        return EINVAL;
    if (!abs || abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000L)
        return EINVAL;
    struct timespec now;
    clock_gettime(clk, &now);
    if (abs->tv_sec < now.tv_sec || (abs->tv_sec == now.tv_sec && abs->tv_nsec <= now.tv_nsec)) {
        *out = 0;                    /* passed: expired on any clock */
        return 0;
    }
    uint64_t secs = (uint64_t)abs->tv_sec - (uint64_t)now.tv_sec;
    if (secs >= (GREEN_FOREVER - green__now(rt)) / 1000000000u / 2) {
        *out = GREEN_FOREVER;        /* centuries away */
        return 0;
    }
    int64_t rem = (int64_t)secs * 1000000000 + (abs->tv_nsec - now.tv_nsec);
    *out = green__now(rt) + (uint64_t)rem;
    return 0;
}

/* ---- Mutexes ------------------------------------------------------------- */

/* The uncontended lock and unlock of the most common mutex -- a private,
 * normal one (__kind 0: PTHREAD_MUTEX_NORMAL or DEFAULT, not shared, no
 * elision) -- done here, as glibc does it: the lock word goes 0 -> 1 by
 * compare-and-swap and the owner's OS thread id and the user count are
 * recorded; the unlock clears them and exchanges the word back to 0, waking
 * one sleeper on the futex when it was 2 (contended).  libc's own calls on
 * other threads follow the same protocol on the same words, so they mix.
 * Anything else goes through libc. */
static inline bool normal_trylock_fast(pthread_mutex_t *m, pid_t tid)
{
    if (__atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) != 0)
        return false;
    int zero = 0;
    if (!__atomic_compare_exchange_n(&m->__data.__lock, &zero, 1, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return false;
    m->__data.__owner = tid;
    ++m->__data.__nusers;
    return true;
}

__attribute__((noinline, cold)) static void normal_wake_one(pthread_mutex_t *m)
{
    syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void normal_unlock_fast(pthread_mutex_t *m)
{
    m->__data.__owner = 0;
    --m->__data.__nusers;
    if (GREEN_UNLIKELY(__atomic_exchange_n(&m->__data.__lock, 0, __ATOMIC_RELEASE) > 1))
        normal_wake_one(m);          /* a sleeper in libc's lock */
}

#define KIND_MASK     3                        /* PTHREAD_MUTEX_KIND_MASK_NP */
#define KIND_ROBUST   16
static int mutex_kind(const pthread_mutex_t *m) { return m->__data.__kind & KIND_MASK; }
/* Kinds whose owner libc checks on unlock. */
bool green__pt_mutex_checked(const pthread_mutex_t *m)
{
    return mutex_kind(m) != PTHREAD_MUTEX_NORMAL || (m->__data.__kind & KIND_ROBUST);
}

static int mutex_try(void *p)
{
    pthread_mutex_t *m = p;
    struct green__worker *w = here();
    /* Held by a green thread that shares this OS thread: a recursive
     * mutex would let us in. */
    if (w->holders && green__held_by_other(w, w->cur, m))
        return EBUSY;
    return libc_mutex_trylock(m);
}

/* A green thread owns it: its release passes through libgreen. */
static bool mutex_seen(void *p)
{
    pthread_mutex_t *m = p;
    return green__is_worker_tid(here()->rt, __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED));
}

int green__pt_mutex_acquire(struct green__worker *w, struct green__thread *t, pthread_mutex_t *m,
                         clockid_t clk, const struct timespec *abs, const char *what)
{
    int r;
    if (t->nheld && green__held_by(t, m)) {
        /* Its own: what libc does for a relock by the owner. */
        switch (mutex_kind(m)) {
        case PTHREAD_MUTEX_RECURSIVE:
            r = libc_mutex_trylock(m);       /* counts one more */
            goto done;
        case PTHREAD_MUTEX_ERRORCHECK:
            return EDEADLK;
        default:
            break;                           /* waits for itself, as libc */
        }
    }
    r = mutex_try(m);
    if (r == EBUSY) {
        uint64_t deadline = GREEN_FOREVER;
        if (abs && (r = green__pt_deadline(w->rt, clk, abs, &deadline)) != 0)
            return r;
        r = green__lockwait_begin(w, t, m, GREEN_LW_PTHREAD | (abs ? GREEN_LW_TIMED : 0), what);
        if (r == 0)
            r = green__fwait(&w, m, mutex_try, m, deadline, mutex_seen, what);
        green__lockwait_end(t);
    }
done:
    if (r == 0 || r == EOWNERDEAD)
        green__held_push(here(), t, m);
    return r;
}

__attribute__((noinline)) static int mutex_lock_slow(pthread_mutex_t *m)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return libc_mutex_lock(m);
    if (GREEN_LIKELY(!w->holders)) {
        int r = libc_mutex_trylock(m);
        if (GREEN_LIKELY(r == 0) || r == EOWNERDEAD) {
            green__held_push(w, t, m);
            return r;
        }
        if (r != EBUSY)
            return r;
    }
    return green__pt_mutex_acquire(w, t, m, CLOCK_REALTIME, NULL, "pthread_mutex_lock");
}

/* The fast path, small enough to need no frame: a green thread, no holder
 * parked on this OS thread, room in its held list, a private normal mutex
 * free.  All else, and every other kind, in mutex_lock_slow. */
EXPORT int pthread_mutex_lock(pthread_mutex_t *m)
{
    struct green__worker *w = green__worker_self();
    if (!w)
        return libc_mutex_lock(m);   /* not a worker: a plain thread */
    if (GREEN_LIKELY(w->cur != &w->g0) && !green__in_handler_now() &&
        GREEN_LIKELY(!w->holders)) {
        struct green__thread *t = w->cur;
        if (GREEN_LIKELY(t->nheld < t->heldcap) &&
            normal_trylock_fast(m, atomic_load_explicit(&w->tid, memory_order_relaxed))) {
            t->held[t->nheld++] = m;
            t->nopreempt++;
            return 0;
        }
    }
    return mutex_lock_slow(m);
}

EXPORT int pthread_mutex_trylock(pthread_mutex_t *m)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return libc_mutex_trylock(m);
    if (GREEN_UNLIKELY(w->holders) && green__held_by_other(w, t, m))
        return EBUSY;
    int r = libc_mutex_trylock(m);
    if (r == 0 || r == EOWNERDEAD)
        green__held_push(w, t, m);
    return r;
}

EXPORT int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *abs)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(mutex_timedlock)(m, abs);
    return green__pt_mutex_acquire(w, t, m, CLOCK_REALTIME, abs, "pthread_mutex_timedlock");
}

EXPORT int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk, const struct timespec *abs)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(mutex_clocklock)(m, clk, abs);
    if (clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC)
        return EINVAL;
    return green__pt_mutex_acquire(w, t, m, clk, abs, "pthread_mutex_clocklock");
}

/* Release one acquisition by t; wake a waiter when it is free. */
int green__pt_mutex_release(struct green__worker **wp, struct green__thread *t, pthread_mutex_t *m,
                         bool poll)
{
    if (green__pt_mutex_checked(m) && GREEN_UNLIKELY((*wp)->holders) && !green__held_by(t, m) &&
        green__held_by_other(*wp, t, m))
        return EPERM;                /* another green thread's, on this OS thread */
    int r = libc_mutex_unlock(m);
    if (r != 0)
        return r;
    if (mutex_kind(m) != PTHREAD_MUTEX_RECURSIVE || m->__data.__count == 0)
        green__fwake(m, false);
    green__held_drop(wp, t, m, poll);
    return 0;
}

__attribute__((noinline)) static int mutex_unlock_slow(pthread_mutex_t *m)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t) {
        int r = libc_mutex_unlock(m);
        if (r == 0)
            green__fwake(m, false);
        return r;
    }
    return green__pt_mutex_release(&w, t, m, true);
}

__attribute__((noinline)) static int mutex_unlock_poll(struct green__worker *w,
                                                       struct green__thread *t)
{
    green__release_poll(w, t);
    return 0;
}

/* The fast path: its own private normal mutex, the one it took last, never
 * having left the CPU holding it (an unlock of a normal mutex is not
 * checked, by libc either).  All else in mutex_unlock_slow. */
EXPORT int pthread_mutex_unlock(pthread_mutex_t *m)
{
    struct green__worker *w = green__worker_self();
    if (!w) {                        /* not a worker: a plain thread */
        int r = libc_mutex_unlock(m);
        if (r == 0)
            green__fwake(m, false);
        return r;
    }
    if (GREEN_LIKELY(w->cur != &w->g0) && !green__in_handler_now()) {
        struct green__thread *t = w->cur;
        uint32_t n = t->nheld;
        if (GREEN_LIKELY(n > 0) && t->held[n - 1] == m && !t->hold_linked &&
            t->nopreempt > 0 && __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) == 0) {
            normal_unlock_fast(m);
            green__fwake(m, false);
            t->nheld = n - 1;
            if (--t->nopreempt == 0 &&
                GREEN_UNLIKELY(__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED) ||
                               green__reductions <= 0))
                return mutex_unlock_poll(w, t);
            return 0;
        }
    }
    return mutex_unlock_slow(m);
}

/* ---- Reader-writer locks ------------------------------------------------- */

static int rw_tryrd(void *p) { return libc_rwlock_tryrdlock(p); }
static int rw_trywr(void *p) { return libc_rwlock_trywrlock(p); }

/* A green thread writes: its release passes through libgreen.  (Readers
 * leave no name: a waiter behind them retries on a timer as well.) */
static bool rw_seen(void *p)
{
    pthread_rwlock_t *rw = p;
    return green__is_worker_tid(here()->rt,
                                __atomic_load_n(&rw->__data.__cur_writer, __ATOMIC_RELAXED));
}

static int rw_acquire(struct green__worker *w, struct green__thread *t, pthread_rwlock_t *rw,
                      bool write, clockid_t clk, const struct timespec *abs, const char *what)
{
    if (t->nheld && green__held_by(t, rw) &&
        __atomic_load_n(&rw->__data.__cur_writer, __ATOMIC_RELAXED) == w->tid)
        return EDEADLK;              /* it writes: libc's answer to its own relock */
    int (*try)(void *) = write ? rw_trywr : rw_tryrd;
    int r = try(rw);
    if (r == EBUSY) {
        uint64_t deadline = GREEN_FOREVER;
        if (abs && (r = green__pt_deadline(w->rt, clk, abs, &deadline)) != 0)
            return r;
        r = green__fwait(&w, rw, try, rw, deadline, rw_seen, what);
    }
    if (r == 0)
        green__held_push(here(), t, rw);
    return r;
}

#define RW_WRAP(name, write, libc_call, ...)                                     \
    {                                                                            \
        struct green__worker *w;                                                 \
        struct green__thread *t = green__foreign_self(&w);                       \
        if (!t)                                                                  \
            return libc_call;                                                    \
        return rw_acquire(w, t, rw, write, __VA_ARGS__, name);                   \
    }

EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t *rw)
    RW_WRAP("pthread_rwlock_rdlock", false, libc_rwlock_rdlock(rw), CLOCK_REALTIME, NULL)
EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t *rw)
    RW_WRAP("pthread_rwlock_wrlock", true, libc_rwlock_wrlock(rw), CLOCK_REALTIME, NULL)
EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t *rw, const struct timespec *abs)
    RW_WRAP("pthread_rwlock_timedrdlock", false, LIBC(rwlock_timedrdlock)(rw, abs),
            CLOCK_REALTIME, abs)
EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t *rw, const struct timespec *abs)
    RW_WRAP("pthread_rwlock_timedwrlock", true, LIBC(rwlock_timedwrlock)(rw, abs),
            CLOCK_REALTIME, abs)
EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t *rw, clockid_t clk,
                                      const struct timespec *abs)
    RW_WRAP("pthread_rwlock_clockrdlock", false, LIBC(rwlock_clockrdlock)(rw, clk, abs), clk, abs)
EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t *rw, clockid_t clk,
                                      const struct timespec *abs)
    RW_WRAP("pthread_rwlock_clockwrlock", true, LIBC(rwlock_clockwrlock)(rw, clk, abs), clk, abs)

static int rw_try_wrap(pthread_rwlock_t *rw, bool write)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int r = write ? libc_rwlock_trywrlock(rw) : libc_rwlock_tryrdlock(rw);
    if (t && r == 0)
        green__held_push(w, t, rw);
    return r;
}
EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t *rw) { return rw_try_wrap(rw, false); }
EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t *rw) { return rw_try_wrap(rw, true); }

EXPORT int pthread_rwlock_unlock(pthread_rwlock_t *rw)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int r = libc_rwlock_unlock(rw);
    if (r != 0)
        return r;
    green__fwake(rw, true);          /* readers may all go in */
    if (t)
        green__held_drop(&w, t, rw, true);
    return 0;
}

/* ---- Spinlocks ----------------------------------------------------------- */

#define SPIN_TRIES 100               /* before parking: a spinlock is held briefly */

static int spin_try(void *p) { return LIBC(spin_trylock)(p); }

EXPORT int pthread_spin_lock(pthread_spinlock_t *l)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(spin_lock)(l);
    int r = EBUSY;
    if (!(t->nheld && green__held_by(t, (void *)l)))
        for (int i = 0; i < SPIN_TRIES && (r = spin_try((void *)l)) == EBUSY; i++)
            green__cpu_relax();
    if (r == EBUSY)
        r = green__fwait(&w, (void *)l, spin_try, (void *)l, GREEN_FOREVER, NULL,
                         "pthread_spin_lock");
    if (r == 0)
        green__held_push(here(), t, (void *)l);
    return r;
}

EXPORT int pthread_spin_trylock(pthread_spinlock_t *l)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int r = LIBC(spin_trylock)(l);
    if (t && r == 0)
        green__held_push(w, t, (void *)l);
    return r;
}

EXPORT int pthread_spin_unlock(pthread_spinlock_t *l)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int r = LIBC(spin_unlock)(l);
    /* libc's unlock is a plain release store: the Dekker pair with a
     * waiter (foreign.c) needs the fence a locked instruction would give. */
    atomic_thread_fence(memory_order_seq_cst);
    green__fwake((void *)l, false);
    if (t)
        green__held_drop(&w, t, (void *)l, true);
    return r;
}

