/*
 * The pthread, stdio and C++ ABI lock calls, interposed (foreign.c has the
 * design).  libgreen.so exports them under their libc names, outside its
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
#include "sched.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- libc's own ---------------------------------------------------------- */

/* Bound at link time to glibc's internal aliases, which libgreen does not
 * interpose: no lookup, so usable before any constructor has run and from
 * inside one (malloc may lock a mutex while dlsym resolves the rest). */
extern int libc_mutex_trylock(pthread_mutex_t *);
#ifndef GREEN_ASAN
extern int libc_mutex_lock(pthread_mutex_t *);
extern int libc_mutex_unlock(pthread_mutex_t *);
__asm__(".symver libc_mutex_lock, __pthread_mutex_lock@GLIBC_2.2.5");
__asm__(".symver libc_mutex_unlock, __pthread_mutex_unlock@GLIBC_2.2.5");
#else
/* AddressSanitizer's runtime, first in the lookup order, defines
 * __pthread_mutex_lock and __pthread_mutex_unlock itself, as interceptors
 * whose way to libc's is found with dlsym -- which sees only default
 * versions, not these: they call NULL.  So go to libc's by version. */
static int (*asan_libc_lock)(pthread_mutex_t *), (*asan_libc_unlock)(pthread_mutex_t *);
__attribute__((constructor(101))) static void asan_libc_resolve(void)
{
    void *lib = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    *(void **)&asan_libc_lock = lib ? dlvsym(lib, "__pthread_mutex_lock", "GLIBC_2.2.5") : NULL;
    *(void **)&asan_libc_unlock = lib ? dlvsym(lib, "__pthread_mutex_unlock", "GLIBC_2.2.5") : NULL;
    if (!asan_libc_lock || !asan_libc_unlock) {
        green__write_str(2, "libgreen: fatal: libc has no __pthread_mutex_lock@GLIBC_2.2.5\n");
        abort();
    }
    if (lib)
        dlclose(lib);
}
static int libc_mutex_lock(pthread_mutex_t *m)
{
    if (GREEN_UNLIKELY(!asan_libc_lock))
        asan_libc_resolve();
    return asan_libc_lock(m);
}
static int libc_mutex_unlock(pthread_mutex_t *m)
{
    if (GREEN_UNLIKELY(!asan_libc_unlock))
        asan_libc_resolve();
    return asan_libc_unlock(m);
}
#endif
extern int libc_rwlock_rdlock(pthread_rwlock_t *);
extern int libc_rwlock_wrlock(pthread_rwlock_t *);
extern int libc_rwlock_tryrdlock(pthread_rwlock_t *);
extern int libc_rwlock_trywrlock(pthread_rwlock_t *);
extern int libc_rwlock_unlock(pthread_rwlock_t *);
extern int libc_once(pthread_once_t *, void (*)(void));
__asm__(".symver libc_mutex_trylock, __pthread_mutex_trylock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_rdlock, __pthread_rwlock_rdlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_wrlock, __pthread_rwlock_wrlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_tryrdlock, __pthread_rwlock_tryrdlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_trywrlock, __pthread_rwlock_trywrlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_unlock, __pthread_rwlock_unlock@GLIBC_2.2.5");
__asm__(".symver libc_once, __pthread_once@GLIBC_2.2.5");
/* stdio's locks have public internal names of their own. */
extern void _IO_flockfile(FILE *);
extern void _IO_funlockfile(FILE *);
extern int _IO_ftrylockfile(FILE *);

/* The rest by name from libc itself (and libstdc++), once. */
static struct {
    int (*mutex_timedlock)(pthread_mutex_t *, const struct timespec *);
    int (*mutex_clocklock)(pthread_mutex_t *, clockid_t, const struct timespec *);
    int (*rwlock_timedrdlock)(pthread_rwlock_t *, const struct timespec *);
    int (*rwlock_timedwrlock)(pthread_rwlock_t *, const struct timespec *);
    int (*rwlock_clockrdlock)(pthread_rwlock_t *, clockid_t, const struct timespec *);
    int (*rwlock_clockwrlock)(pthread_rwlock_t *, clockid_t, const struct timespec *);
    int (*spin_lock)(pthread_spinlock_t *);
    int (*spin_trylock)(pthread_spinlock_t *);
    int (*spin_unlock)(pthread_spinlock_t *);
    int (*cond_wait)(pthread_cond_t *, pthread_mutex_t *);
    int (*cond_timedwait)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    int (*cond_clockwait)(pthread_cond_t *, pthread_mutex_t *, clockid_t,
                          const struct timespec *);
    int (*cond_signal)(pthread_cond_t *);
    int (*cond_broadcast)(pthread_cond_t *);
    int (*sem_wait)(sem_t *);
    int (*sem_trywait)(sem_t *);
    int (*sem_timedwait)(sem_t *, const struct timespec *);
    int (*sem_clockwait)(sem_t *, clockid_t, const struct timespec *);
    int (*sem_post)(sem_t *);
    int (*join)(pthread_t, void **);
    int (*timedjoin)(pthread_t, void **, const struct timespec *);
    int (*clockjoin)(pthread_t, void **, clockid_t, const struct timespec *);
    int (*tryjoin)(pthread_t, void **);
    int (*barrier_wait)(pthread_barrier_t *);
    _Atomic int ready;
} libc;

static void *need(void *lib, const char *name)
{
    void *p = lib ? dlsym(lib, name) : NULL;
    if (!p) {
        green__write_str(2, "libgreen: fatal: libc has no ");
        green__write_str(2, name);
        green__write_str(2, "\n");
        abort();
    }
    return p;
}

__attribute__((constructor)) static void libc_resolve(void)
{
    if (atomic_load_explicit(&libc.ready, memory_order_acquire))
        return;
    void *lib = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
#define R(field, name) libc.field = need(lib, name)
    R(mutex_timedlock, "pthread_mutex_timedlock");
    R(mutex_clocklock, "pthread_mutex_clocklock");
    R(rwlock_timedrdlock, "pthread_rwlock_timedrdlock");
    R(rwlock_timedwrlock, "pthread_rwlock_timedwrlock");
    R(rwlock_clockrdlock, "pthread_rwlock_clockrdlock");
    R(rwlock_clockwrlock, "pthread_rwlock_clockwrlock");
    R(spin_lock, "pthread_spin_lock");
    R(spin_trylock, "pthread_spin_trylock");
    R(spin_unlock, "pthread_spin_unlock");
    R(cond_wait, "pthread_cond_wait");
    R(cond_timedwait, "pthread_cond_timedwait");
    R(cond_clockwait, "pthread_cond_clockwait");
    R(cond_signal, "pthread_cond_signal");
    R(cond_broadcast, "pthread_cond_broadcast");
    R(sem_wait, "sem_wait");
    R(sem_trywait, "sem_trywait");
    R(sem_timedwait, "sem_timedwait");
    R(sem_clockwait, "sem_clockwait");
    R(sem_post, "sem_post");
    R(join, "pthread_join");
    R(timedjoin, "pthread_timedjoin_np");
    R(clockjoin, "pthread_clockjoin_np");
    R(tryjoin, "pthread_tryjoin_np");
    R(barrier_wait, "pthread_barrier_wait");
#undef R
    if (lib)
        dlclose(lib);
    atomic_store_explicit(&libc.ready, 1, memory_order_release);
}

/* libc's function `f`, resolving them all on first use if a constructor
 * that ran before libgreen's needed one. */
#define LIBC(f) (GREEN_LIKELY(atomic_load_explicit(&libc.ready, memory_order_acquire)) \
                     ? libc.f : (libc_resolve(), libc.f))

int green__os_mutex_lock(pthread_mutex_t *m) { return libc_mutex_lock(m); }
int green__os_mutex_trylock(pthread_mutex_t *m) { return libc_mutex_trylock(m); }
int green__os_mutex_unlock(pthread_mutex_t *m) { return libc_mutex_unlock(m); }
int green__os_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) { return LIBC(cond_wait)(c, m); }
int green__os_cond_signal(pthread_cond_t *c) { return LIBC(cond_signal)(c); }
int green__os_cond_broadcast(pthread_cond_t *c) { return LIBC(cond_broadcast)(c); }
int green__os_once(pthread_once_t *o, void (*fn)(void)) { return libc_once(o, fn); }
int green__os_join(pthread_t t, void **ret) { return LIBC(join)(t, ret); }

/* ---- Shared helpers ------------------------------------------------------ */

/* An absolute time on clock clk as a deadline on the run's clock; EINVAL
 * for what libc would refuse. */
static int deadline_of(struct green__rt *rt, clockid_t clk, const struct timespec *abs,
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

/* The green thread's own worker after a park (it may have moved). */
static struct green__worker *here(void) { return green__worker_self(); }

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
static bool mutex_checked(const pthread_mutex_t *m)
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

static int mutex_acquire(struct green__worker *w, struct green__thread *t, pthread_mutex_t *m,
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
        if (abs && (r = deadline_of(w->rt, clk, abs, &deadline)) != 0)
            return r;
        r = green__fwait(&w, m, mutex_try, m, deadline, mutex_seen, what);
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
    return mutex_acquire(w, t, m, CLOCK_REALTIME, NULL, "pthread_mutex_lock");
}

/* The fast path, small enough to need no frame: a green thread, no holder
 * parked on this OS thread, room in its held list, a private normal mutex
 * free.  All else, and every other kind, in mutex_lock_slow. */
EXPORT int pthread_mutex_lock(pthread_mutex_t *m)
{
    struct green__worker *w = green__worker_self();
    if (!w)
        return libc_mutex_lock(m);   /* not a worker: a plain thread */
    if (GREEN_LIKELY(w->cur != &w->g0) && !green__in_handler &&
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
    return mutex_acquire(w, t, m, CLOCK_REALTIME, abs, "pthread_mutex_timedlock");
}

EXPORT int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk, const struct timespec *abs)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(mutex_clocklock)(m, clk, abs);
    if (clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC)
        return EINVAL;
    return mutex_acquire(w, t, m, clk, abs, "pthread_mutex_clocklock");
}

/* Release one acquisition by t; wake a waiter when it is free. */
static int mutex_release(struct green__worker **wp, struct green__thread *t, pthread_mutex_t *m,
                         bool poll)
{
    if (mutex_checked(m) && GREEN_UNLIKELY((*wp)->holders) && !green__held_by(t, m) &&
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
    return mutex_release(&w, t, m, true);
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
    if (GREEN_LIKELY(w->cur != &w->g0) && !green__in_handler) {
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
        if (abs && (r = deadline_of(w->rt, clk, abs, &deadline)) != 0)
            return r;
        /* Always with a retry timer: a free rwlock in its write phase has
         * been seen with green writers parked on it and no wake-up (the
         * stress program's plocks, preemption off, 4 workers), so glibc's
         * rwlock can be released in a way libgreen does not see (cause not
         * found yet).  The timer bounds the wait at 5 ms. */
        r = green__fwait(&w, rw, try, rw, deadline, NULL, what);
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

/* ---- stdio's FILE locks -------------------------------------------------- */

static int file_try(void *p)
{
    struct green__worker *w = here();
    if (w->holders && green__held_by_other(w, w->cur, p))
        return EBUSY;
    return _IO_ftrylockfile(p) == 0 ? 0 : EBUSY;
}

EXPORT void flockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t) {
        _IO_flockfile(f);
        return;
    }
    /* The owner's relock is a count, as libc's: try succeeds for it.
     * Who holds it otherwise -- stdio locks itself inside libc, unseen --
     * is not known: wait on a timer as well. */
    if (file_try(f) != 0)
        green__fwait(&w, f, file_try, f, GREEN_FOREVER, NULL, "flockfile");
    green__held_push(here(), t, f);
}

EXPORT int ftrylockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return _IO_ftrylockfile(f);
    if (file_try(f) != 0)
        return -1;
    green__held_push(w, t, f);
    return 0;
}

EXPORT void funlockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    _IO_funlockfile(f);
    green__fwake(f, false);
    if (t)
        green__held_drop(&w, t, f, true);
}

/* ---- Condition variables ------------------------------------------------- */

/* Bit 1 of __wrefs: the condition's clock is CLOCK_MONOTONIC; bit 0: it is
 * process-shared (glibc's condvar, 2.25 and later). */
static clockid_t cond_clock(const pthread_cond_t *c)
{
    return (__atomic_load_n(&c->__data.__wrefs, __ATOMIC_RELAXED) & 2) ? CLOCK_MONOTONIC
                                                                       : CLOCK_REALTIME;
}
static bool cond_pshared(const pthread_cond_t *c)
{
    return __atomic_load_n(&c->__data.__wrefs, __ATOMIC_RELAXED) & 1;
}

static int cond_wait_green(struct green__worker *w, struct green__thread *t, pthread_cond_t *c,
                           pthread_mutex_t *m, clockid_t clk, const struct timespec *abs,
                           const char *what)
{
    uint64_t deadline = GREEN_FOREVER;
    if (abs) {
        int r = deadline_of(w->rt, clk, abs, &deadline);
        if (r)
            return r;
    }
    if (mutex_checked(m) && !green__held_by(t, m))
        return EPERM;                /* libc's answer for a mutex not the caller's */
    /* A signal from another process is unseen: wake now and then (a
     * spurious wake-up, which the caller's loop allows). */
    uint64_t until = deadline;
    if (cond_pshared(c)) {
        uint64_t at = green__now(w->rt) + GREEN_FWAIT_POLL_MAX;
        if (at < until)
            until = at;
    }
    struct green__fparked p;
    green__fpark_link(t, &p, c, what);   /* before the unlock: no lost signal */
    int r = mutex_release(&w, t, m, false);
    if (r != 0) {
        green__fpark_cancel(&w, &p);
        return r;
    }
    struct green__rt *rt = w->rt;
    atomic_fetch_add(&rt->os_wakeable, 1);
    int err = green__fpark_park(&w, &p, until);
    atomic_fetch_sub(&rt->os_wakeable, 1);
    t = w->cur;
    r = mutex_acquire(w, t, m, CLOCK_REALTIME, NULL, "pthread_mutex_lock");
    if (r != 0)
        return r;                    /* EOWNERDEAD: it holds the mutex, as libc */
    return err == ETIMEDOUT && green__expired(here()->rt, deadline) ? ETIMEDOUT : 0;
}

EXPORT int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(cond_wait)(c, m);
    return cond_wait_green(w, t, c, m, CLOCK_REALTIME, NULL, "pthread_cond_wait");
}

EXPORT int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                  const struct timespec *abs)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(cond_timedwait)(c, m, abs);
    return cond_wait_green(w, t, c, m, cond_clock(c), abs, "pthread_cond_timedwait");
}

EXPORT int pthread_cond_clockwait(pthread_cond_t *c, pthread_mutex_t *m, clockid_t clk,
                                  const struct timespec *abs)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return LIBC(cond_clockwait)(c, m, clk, abs);
    return cond_wait_green(w, t, c, m, clk, abs, "pthread_cond_clockwait");
}

EXPORT int pthread_cond_signal(pthread_cond_t *c)
{
    /* A green waiter is a waiter: waking one is all a signal promises. */
    if (atomic_load_explicit(&green__fwaiters, memory_order_relaxed) &&
        green__fwake_slow(c, false) > 0)
        return 0;
    return LIBC(cond_signal)(c);
}

EXPORT int pthread_cond_broadcast(pthread_cond_t *c)
{
    green__fwake(c, true);
    return LIBC(cond_broadcast)(c);
}

/* ---- Semaphores ---------------------------------------------------------- */

/* glibc's sem_t: a 64-bit value, then `private`: 0 (LLL_PRIVATE) for a
 * semaphore of this process alone, FUTEX_PRIVATE_FLAG for a shared one. */
static bool sem_private(const sem_t *s) { return ((const int *)(const void *)s)[2] == 0; }
static bool sem_seen(void *p) { return sem_private(p); }

static int sem_try(void *p)
{
    int saved = errno;
    int r = LIBC(sem_trywait)(p) == 0 ? 0 : errno == EAGAIN ? EBUSY : errno;
    errno = saved;
    return r;
}

static int sem_wait_green(struct green__worker *w, sem_t *s, clockid_t clk,
                          const struct timespec *abs, const char *what)
{
    uint64_t deadline = GREEN_FOREVER;
    int r = sem_try(s);
    if (r == EBUSY) {
        if (abs && (r = deadline_of(w->rt, clk, abs, &deadline)) != 0) {
            errno = r;
            return -1;
        }
        struct green__rt *rt = w->rt;
        atomic_fetch_add(&rt->os_wakeable, 1);
        r = green__fwait(&w, s, sem_try, s, deadline, sem_seen, what);
        atomic_fetch_sub(&rt->os_wakeable, 1);
    }
    if (r) {
        errno = r;
        return -1;
    }
    return 0;
}

EXPORT int sem_wait(sem_t *s)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(sem_wait)(s);
    return sem_wait_green(w, s, CLOCK_REALTIME, NULL, "sem_wait");
}

EXPORT int sem_timedwait(sem_t *s, const struct timespec *abs)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(sem_timedwait)(s, abs);
    if (abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000L) {
        errno = EINVAL;              /* checked first, as libc does */
        return -1;
    }
    return sem_wait_green(w, s, CLOCK_REALTIME, abs, "sem_timedwait");
}

EXPORT int sem_clockwait(sem_t *s, clockid_t clk, const struct timespec *abs)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(sem_clockwait)(s, clk, abs);
    if ((clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC) || abs->tv_nsec < 0 ||
        abs->tv_nsec >= 1000000000L) {
        errno = EINVAL;
        return -1;
    }
    return sem_wait_green(w, s, clk, abs, "sem_clockwait");
}

EXPORT int sem_post(sem_t *s)
{
    int r = LIBC(sem_post)(s);
    if (r == 0)
        green__fwake(s, false);
    return r;
}

/* ---- pthread_once -------------------------------------------------------- */

/* glibc's once control: DONE, or INPROGRESS with the fork generation of
 * the process that began it (a child's generation differs, so it starts
 * over an initialization its parent had under way). */
#define ONCE_INPROGRESS 1
#define ONCE_DONE       2

/* The generation, read from inside libc's own pthread_once on a control
 * of our own: during the routine the control holds generation|INPROGRESS.
 * Again after a fork (the child's generation is new). */
static _Atomic int once_gen = -1;
static int *once_probe_ctl;
static void once_probe(void) { once_gen = *once_probe_ctl & ~ONCE_INPROGRESS; }
static void once_forget_gen(void) { atomic_store(&once_gen, -1); }

static int once_generation(void)
{
    int g = atomic_load(&once_gen);
    if (g >= 0)
        return g;
    static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
    static _Atomic int atfork_done;
    libc_mutex_lock(&probe_lock);
    if (!atomic_exchange(&atfork_done, 1))
        pthread_atfork(NULL, NULL, once_forget_gen);
    pthread_once_t ctl = PTHREAD_ONCE_INIT;
    once_probe_ctl = (int *)&ctl;
    libc_once(&ctl, once_probe);
    g = atomic_load(&once_gen);
    libc_mutex_unlock(&probe_lock);
    return g;
}

static int once_try(void *p)
{
    int v = __atomic_load_n((int *)p, __ATOMIC_ACQUIRE);
    return (v & ONCE_INPROGRESS) && !(v & ONCE_DONE) ? EBUSY : 0;
}

EXPORT int pthread_once(pthread_once_t *o, void (*fn)(void))
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int *ctl = (int *)o;
    if (!t || (__atomic_load_n(ctl, __ATOMIC_ACQUIRE) & ONCE_DONE)) {
        int r = libc_once(o, fn);
        if (t == NULL)
            green__fwake(o, true);   /* green threads parked on it */
        return r;
    }
    int gen = once_generation();
    for (;;) {
        int v = __atomic_load_n(ctl, __ATOMIC_ACQUIRE);
        if (v & ONCE_DONE)
            return 0;
        int mine = gen | ONCE_INPROGRESS;
        if (v == mine) {
            /* Under way in this process: by another thread, or -- libc
             * would sleep for good -- by this one from inside fn. */
            green__fwait(&w, o, once_try, o, GREEN_FOREVER, NULL, "pthread_once");
            continue;
        }
        if (__atomic_compare_exchange_n(ctl, &v, mine, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            break;
    }
    w = here();
    green__held_push(w, t, o);
    fn();
    __atomic_store_n(ctl, ONCE_DONE, __ATOMIC_RELEASE);
    syscall(SYS_futex, ctl, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);  /* libc's sleepers */
    green__fwake(o, true);
    green__held_drop(&w, t, o, true);
    return 0;
}

/* ---- C++ static guards (libstdc++'s protocol) --------------------------- */

/* The guard's first int: byte 0 is set once initialized (the ABI's rule);
 * libstdc++ marks an initialization under way with PENDING and sleepers
 * on the futex with WAITING. */
#define GUARD_DONE    0x1
#define GUARD_PENDING 0x100
#define GUARD_WAITING 0x10000

static struct {
    int (*acquire)(uint64_t *);
    void (*release)(uint64_t *);
    void (*abort)(uint64_t *);
    bool libstdcxx;                  /* the protocol above; else pass through */
    _Atomic int ready;
} cxa;

static void cxa_resolve(void)
{
    if (atomic_load_explicit(&cxa.ready, memory_order_acquire))
        return;
    void *lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
    cxa.libstdcxx = lib != NULL;
    if (!lib)
        lib = RTLD_NEXT;             /* another C++ runtime: its own calls */
    cxa.acquire = need(lib, "__cxa_guard_acquire");
    cxa.release = need(lib, "__cxa_guard_release");
    cxa.abort = need(lib, "__cxa_guard_abort");
    if (lib != RTLD_NEXT)
        dlclose(lib);
    atomic_store_explicit(&cxa.ready, 1, memory_order_release);
}

static int guard_try(void *p)
{
    return __atomic_load_n((int *)p, __ATOMIC_ACQUIRE) & GUARD_PENDING ? EBUSY : 0;
}

EXPORT int __cxa_guard_acquire(uint64_t *g)
{
    if (__atomic_load_n((const char *)g, __ATOMIC_ACQUIRE))
        return 0;                    /* initialized: the inline fast path's answer */
    cxa_resolve();
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t || !cxa.libstdcxx)
        return cxa.acquire(g);
    int *gi = (int *)g;
    for (;;) {
        int v = 0;
        if (__atomic_compare_exchange_n(gi, &v, GUARD_PENDING, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            green__held_push(here(), t, g);
            return 1;                /* ours to initialize */
        }
        if (v & GUARD_DONE)
            return 0;
        /* Under way elsewhere (or, recursively, here: libstdc++ would sleep
         * for good, and so do we -- a deadlock the report names). */
        w = here();
        green__fwait(&w, g, guard_try, g, GREEN_FOREVER, NULL, "__cxa_guard_acquire");
    }
}

EXPORT void __cxa_guard_release(uint64_t *g)
{
    cxa_resolve();
    cxa.release(g);                  /* sets DONE, wakes libstdc++'s sleepers */
    green__fwake(g, true);
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (t)
        green__held_drop(&w, t, g, true);
}

EXPORT void __cxa_guard_abort(uint64_t *g)
{
    cxa_resolve();
    cxa.abort(g);
    green__fwake(g, true);
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (t)
        green__held_drop(&w, t, g, true);
}

/* ---- pthread_join of an OS thread ---------------------------------------- */

struct join_try {
    pthread_t t;
    void **ret;
};

static int join_try(void *p)
{
    struct join_try *j = p;
    return LIBC(tryjoin)(j->t, j->ret);   /* EBUSY while it runs */
}

static int join_green(struct green__worker *w, pthread_t t, void **ret, clockid_t clk,
                      const struct timespec *abs, const char *what)
{
    /* Its own OS thread (pthread_self() on a green thread is its
     * worker's): libc's answer for joining oneself, which tryjoin does not
     * give. */
    if (pthread_equal(t, pthread_self()))
        return EDEADLK;
    struct join_try j = { t, ret };
    int r = join_try(&j);
    if (r != EBUSY)
        return r;                    /* joined, or EDEADLK, EINVAL, ESRCH */
    uint64_t deadline = GREEN_FOREVER;
    if (abs && (r = deadline_of(w->rt, clk, abs, &deadline)) != 0)
        return r;
    return green__fwait(&w, (void *)t, join_try, &j, deadline, NULL, what);
}

EXPORT int pthread_join(pthread_t t, void **ret)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(join)(t, ret);
    return join_green(w, t, ret, CLOCK_REALTIME, NULL, "pthread_join");
}

EXPORT int pthread_timedjoin_np(pthread_t t, void **ret, const struct timespec *abs)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(timedjoin)(t, ret, abs);
    if (!abs)
        return join_green(w, t, ret, CLOCK_REALTIME, NULL, "pthread_timedjoin_np");
    return join_green(w, t, ret, CLOCK_REALTIME, abs, "pthread_timedjoin_np");
}

EXPORT int pthread_clockjoin_np(pthread_t t, void **ret, clockid_t clk,
                                const struct timespec *abs)
{
    struct green__worker *w;
    if (!green__foreign_self(&w))
        return LIBC(clockjoin)(t, ret, clk, abs);
    if (!abs)
        return join_green(w, t, ret, clk, NULL, "pthread_clockjoin_np");
    if (clk != CLOCK_REALTIME && clk != CLOCK_MONOTONIC)
        return EINVAL;
    return join_green(w, t, ret, clk, abs, "pthread_clockjoin_np");
}

/* ---- Barriers ------------------------------------------------------------ */

/* glibc's barrier (2.23 and later): `in` counts arrivals, a round ends
 * when current_round reaches a multiple of count at or past a waiter's
 * arrival number; `out` counts departures, and the last one before `in`
 * would pass BARRIER_IN_THRESHOLD resets the three.  A green thread runs
 * the same steps, parking where libc sleeps on a futex; whoever ends a
 * round wakes libc's sleepers (the futex) and green ones (green__fwake) --
 * the wrapper does the latter for an OS thread that ends it in libc. */
struct barrier {
    unsigned int in, current_round, count;
    int shared;                      /* 0: private; FUTEX_PRIVATE_FLAG: shared */
    unsigned int out;
};
_Static_assert(sizeof(struct barrier) <= sizeof(pthread_barrier_t), "pthread_barrier_t");
#define BARRIER_IN_THRESHOLD (UINT_MAX / 2)

/* `shared` is glibc's flag: 0 (LLL_PRIVATE) for a barrier of this process,
 * which sleeps on a private futex; FUTEX_PRIVATE_FLAG for a shared one. */
static void barrier_futex_wake(unsigned int *word, int shared)
{
    syscall(SYS_futex, word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

struct barrier_try {
    unsigned int *word;
    unsigned int seen;
};

/* Busy while the word still holds what the waiter saw (libc's futex wait
 * condition). */
static int barrier_try(void *p)
{
    struct barrier_try *b = p;
    return __atomic_load_n(b->word, __ATOMIC_RELAXED) == b->seen ? EBUSY : 0;
}

static void barrier_park(struct green__worker *w, unsigned int *word, unsigned int seen)
{
    struct barrier_try b = { word, seen };
    green__fwait(&w, word, barrier_try, &b, GREEN_FOREVER, NULL, "pthread_barrier_wait");
}

EXPORT int pthread_barrier_wait(pthread_barrier_t *pb)
{
    struct green__worker *w;
    struct barrier *bar = (struct barrier *)(void *)pb;
    if (!green__foreign_self(&w)) {
        int r = LIBC(barrier_wait)(pb);
        /* It may have ended a round (or reset): green waiters too.  Harmless
         * for the others -- they look again and park again. */
        green__fwake(&bar->current_round, true);
        green__fwake(&bar->in, true);
        return r;
    }
    unsigned int i, count, max_in;
    for (;;) {
        i = __atomic_add_fetch(&bar->in, 1, __ATOMIC_ACQUIRE);
        count = bar->count;
        max_in = BARRIER_IN_THRESHOLD - BARRIER_IN_THRESHOLD % count;
        if (i <= max_in)
            break;
        /* A reset is under way: wait for it, then enter again. */
        while (i > max_in) {
            barrier_park(w, &bar->in, i);
            w = here();
            i = __atomic_load_n(&bar->in, __ATOMIC_RELAXED);
        }
    }
    unsigned int cr = __atomic_load_n(&bar->current_round, __ATOMIC_RELAXED);
    bool left = false;
    while (cr + count <= i) {
        unsigned int newcr = i - i % count;
        if (__atomic_compare_exchange_n(&bar->current_round, &cr, newcr, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
            cr = newcr;
            barrier_futex_wake(&bar->current_round, bar->shared);
            green__fwake(&bar->current_round, true);
            left = i <= cr;
            break;
        }
    }
    if (!left) {
        while (i > cr) {
            barrier_park(w, &bar->current_round, cr);
            w = here();
            cr = __atomic_load_n(&bar->current_round, __ATOMIC_RELAXED);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
    }
    unsigned int o = __atomic_add_fetch(&bar->out, 1, __ATOMIC_RELEASE);
    if (o == max_in) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        __atomic_store_n(&bar->current_round, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&bar->out, 0, __ATOMIC_RELAXED);
        int shared = bar->shared;
        __atomic_store_n(&bar->in, 0, __ATOMIC_RELEASE);
        barrier_futex_wake(&bar->in, shared);
        green__fwake(&bar->in, true);
    }
    return i % count == 0 ? PTHREAD_BARRIER_SERIAL_THREAD : 0;
}
