/*
 * The interposed calls that wait without holding (pthread.h, pthread.c has
 * the design): conditions, semaphores, joins of OS threads and barriers.
 * On a green thread each parks where libc's would sleep; a plain thread
 * gets libc's own, followed by a wake of the green threads parked on the
 * object.
 */
#include "pthread.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>

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
        int r = green__pt_deadline(w->rt, clk, abs, &deadline);
        if (r)
            return r;
    }
    if (green__pt_mutex_checked(m) && !green__held_by(t, m))
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
    int r = green__pt_mutex_release(&w, t, m, false);
    if (r != 0) {
        green__fpark_cancel(&w, &p);
        return r;
    }
    struct green__rt *rt = w->rt;
    atomic_fetch_add(&rt->os_wakeable, 1);
    int err = green__fpark_park(&w, &p, until);
    atomic_fetch_sub(&rt->os_wakeable, 1);
    t = w->cur;
    /* As libc's, the retake ends holding the mutex: a lock cycle it closes
     * is reported, never answered with EDEADLK (cycle.c). */
    green__cold(t)->lockwait_retake = true;
    r = green__pt_mutex_acquire(w, t, m, CLOCK_REALTIME, NULL, "pthread_mutex_lock");
    green__cold(t)->lockwait_retake = false;
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
        if (abs && (r = green__pt_deadline(w->rt, clk, abs, &deadline)) != 0) {
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
    if (abs && (r = green__pt_deadline(w->rt, clk, abs, &deadline)) != 0)
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
