/* Helpers shared by the preemption suites, tests/test_preempt.c and
 * tests/test_preempt_state.c: a green_run with the preemption fields set,
 * deadlines on the TSC, green_stats snapshots, a p99, and a call-free CPU
 * hog.  Static inline, so a suite pays only for what it uses.
 */
#ifndef GREEN_TESTS_PREEMPT_COMMON_H
#define GREEN_TESTS_PREEMPT_COMMON_H

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "common.h"

#define SEC (1000ull * MS)

/* ---- helpers ------------------------------------------------------------ */

/* green_run with the fields these tests care about set explicitly, so that a
 * GREEN_* variable in the environment does not change what is tested;
 * run_mode_ok also asserts that fn returned NULL (its way to say that its
 * setup failed is any other value). */
static inline green_config_t mode_config(unsigned workers, int preempt, unsigned quantum_us)
{
    green_config_t cfg = config(workers);
    cfg.preempt = preempt;
    cfg.quantum_us = quantum_us;
    cfg.signo = SIGALRM;
    return cfg;
}

static inline int run_mode(void *(*fn)(void *), void *arg, unsigned workers, int preempt,
                    unsigned quantum_us)
{
    green_config_t cfg = mode_config(workers, preempt, quantum_us);
    return green_run(fn, arg, &cfg, NULL);
}

static inline void run_mode_ok(void *(*fn)(void *), void *arg, unsigned workers, int preempt,
                               unsigned quantum_us)
{
    green_config_t cfg = mode_config(workers, preempt, quantum_us);
    void *ret = NULL;
    cr_assert_eq(green_run(fn, arg, &cfg, &ret), 0);
    cr_assert_null(ret, "setup failed");
}

/* Deadlines for the busy loops, on the TSC: __rdtsc() is one instruction,
 * where clock_gettime is a call into the vDSO -- code in which the signal
 * handler refuses to preempt (it may not be reentrant), so a loop that read
 * the clock often would be preempted late now and then, and the tests
 * would measure that instead of what they mean to.  Calibrated once against
 * CLOCK_MONOTONIC; good to a fraction of a millisecond over seconds, which
 * is all a deadline needs. */
static double tsc_per_ns;

__attribute__((constructor)) static void tsc_calibrate(void)
{
    uint64_t c0 = __rdtsc(), t0 = mono_ns();
    struct timespec ts = { 0, 20 * (long)MS };
    nanosleep(&ts, NULL);
    uint64_t c1 = __rdtsc(), t1 = mono_ns();
    tsc_per_ns = (double)(c1 - c0) / (double)(t1 - t0);
}

/* The TSC value ns nanoseconds from now. */
static inline uint64_t tsc_after(uint64_t ns)
{
    return __rdtsc() + (uint64_t)((double)ns * tsc_per_ns);
}

static inline int tsc_passed(uint64_t deadline)
{
    return __rdtsc() >= deadline;
}

static inline green_stats_t stats_now(void)
{
    green_stats_t s;
    memset(&s, 0, sizeof s);
    green_stats(&s);
    return s;
}

static inline uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* p99 of n samples (sorting them), but never the single worst one (as in
 * test_timer.c: one host hiccup must not decide the test). */
static inline int64_t p99_of(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_i64);
    int i = (n * 99 + 99) / 100 - 1;
    if (i > n - 2)
        i = n - 2;
    return v[i < 0 ? 0 : i];
}

/* The median of n samples, sorting them. */
static inline int64_t median_of(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_i64);
    return v[n / 2];
}

/* A call-free CPU hog: bumps a volatile counter, and every 4096 bumps reads
 * its stop flag and the TSC.  It never yields and never calls anything:
 * only a signal takes the CPU from it.  One per cache line.
 *
 * ran_ticks is the time it ran: the sum of the TSC steps between two of
 * its reads that are shorter than HOG_GAP_NS.  A longer step is time it did
 * not run -- another thread had the worker, or the host had taken the vCPU
 * from the worker (on the shared VM, for tens of milliseconds at a time) --
 * and is left out.  A batch of 4096 bumps takes about 2 us (10 under
 * ASan). */
#define HOG_GAP_NS (50 * 1000)

struct hog {
    volatile uint64_t count;
    atomic_int *stop;              /* may be NULL */
    uint64_t until;                /* TSC deadline (tsc_after) at which it returns */
    uint64_t ended_ns;             /* mono_ns() when it did */
    uint64_t cpu_start, cpu_end;   /* its worker's CPU time when it began, ended */
    uint64_t ran_ticks;            /* TSC ticks it ran (above) */
    uint64_t gaps;                 /* steps left out of ran_ticks */
    int worker;                    /* green_worker_index() then */
} __attribute__((aligned(64)));

static inline double hog_ran_ns(const struct hog *h)
{
    return (double)h->ran_ticks / tsc_per_ns;
}

/* CPU time of the calling OS thread -- a worker, on a green thread. */
static inline uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One tick of a ticker whose worker is kept busy by hogs while it sleeps:
 * sleep ns; *late is how late it woke, *off how long of that the host kept
 * the worker off its CPU -- the wall time minus the worker's CPU time over
 * the sleep.  late - off is the runtime's part, which a noisy host does not
 * move (a runtime that never ran the ticker would keep the worker on its
 * CPU, and be late by all of it). */
static inline void tick_beside_hogs(uint64_t ns, int64_t *late, int64_t *off)
{
    uint64_t c0 = thread_cpu_ns(), t0 = mono_ns();
    green_sleep_ns(ns);
    uint64_t t1 = mono_ns(), c1 = thread_cpu_ns();
    *late = (int64_t)(t1 - t0) - (int64_t)ns;
    int64_t o = (int64_t)(t1 - t0) - (int64_t)(c1 - c0);
    *off = o > 0 ? o : 0;
}

/* The runtime's part of n ticks' lateness, into own; returns the longest
 * time off the CPU among them. */
static inline int64_t ticks_own(const int64_t *late, const int64_t *off, int n, int64_t *own)
{
    int64_t off_max = 0;
    for (int i = 0; i < n; i++) {
        own[i] = late[i] - off[i];
        off_max = off[i] > off_max ? off[i] : off_max;
    }
    return off_max;
}

static inline void *hog_run(void *arg)
{
    struct hog *h = arg;
    h->cpu_start = thread_cpu_ns();
    uint64_t gap = (uint64_t)((double)HOG_GAP_NS * tsc_per_ns), last = __rdtsc();
    for (;;) {
        for (int i = 0; i < 4096; i++)
            h->count++;
        uint64_t now = __rdtsc();
        if (now - last < gap)
            h->ran_ticks += now - last;
        else
            h->gaps++;
        last = now;
        if (h->stop && atomic_load_explicit(h->stop, memory_order_relaxed))
            break;
        if (now >= h->until)
            break;
    }
    h->ended_ns = mono_ns();
    h->cpu_end = thread_cpu_ns();
    h->worker = green_worker_index();
    return NULL;
}

/* A hog and the thread that watches it: spawn both, wait for the watcher,
 * then for the hog (which the watcher stops).  NULL, or P(1) when a spawn
 * failed: the value for a green_run main to return. */
static inline void *hog_beside(void *(*hog)(void *), void *hog_arg, void *(*watcher)(void *),
                               void *watcher_arg)
{
    green_t h, t;
    if (green_spawn(&h, hog, hog_arg) != 0 || green_spawn(&t, watcher, watcher_arg) != 0)
        return P(1);
    green_join(t, NULL);
    green_join(h, NULL);
    return NULL;
}

/* tests/libspin.so, dlopen'ed: a library the program does not own. */
static inline void *libspin_open(void)
{
    char path[4096];
    const char *dir = getenv("abs_top_builddir");
    snprintf(path, sizeof path, "%s/tests/.libs/libspin.so", dir ? dir : ".");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen %s: %s", path, dlerror());
    return h;
}

/* errno read and written afresh (see test_context.c: a compiler may keep
 * &errno across a call). */
__attribute__((noinline, unused)) static int errno_get(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

__attribute__((noinline, unused)) static void errno_set(int v)
{
    __asm__ volatile("" : : : "memory");
    errno = v;
}

#endif /* GREEN_TESTS_PREEMPT_COMMON_H */
