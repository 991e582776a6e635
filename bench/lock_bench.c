/* lock_bench: what the interposed pthread calls cost (sched/pthread.c).
 *
 *   lock_bench [REPS]
 *
 * Each figure is the median of REPS repetitions, its two sides measured
 * alternately in the same process (A B A B ...), so the machine's noise
 * falls on both:
 *
 *   uncontended pthread_mutex_lock + unlock, ns per pair, on a green thread
 *   and on a plain OS thread: libgreen's interposed calls (what a program
 *   linked with -lgreen calls) against libc's own (__pthread_mutex_lock,
 *   bound here by version, which nothing interposes).  Goal: within +5 ns.
 *
 *   contended: 4 green threads each lock, count, unlock N/4 times on one
 *   mutex, on 1 and on 2 workers: a pthread_mutex_t (waiters park on its
 *   address) against a green_mutex_t, ns per lock+unlock.
 *
 *   handoff: on one worker with a 1 ms quantum, a holder computes 2.5 ms
 *   inside a green_mutex_t and is preempted there, behind 10 CPU hogs; 10
 *   threads then wait for the mutex.  The time from the first waiter's
 *   lock call to the last waiter's return, with GREEN_HANDOFF on and off:
 *   the rest of the holder's 2.5 ms, then the waiters' turns (and without
 *   handoff, the hogs' quanta before the holder's turn comes).  A
 *   pthread_mutex_t holder is never preempted (libgreen's rule 2), so it
 *   has no such row.
 *
 * Prints a Markdown table.  Exits 1 if a counter comes out wrong. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "green.h"

extern int libc_mutex_lock(pthread_mutex_t *);
extern int libc_mutex_unlock(pthread_mutex_t *);
__asm__(".symver libc_mutex_lock, __pthread_mutex_lock@GLIBC_2.2.5");
__asm__(".symver libc_mutex_unlock, __pthread_mutex_unlock@GLIBC_2.2.5");

#define UNCONTENDED_N 20000000u
#define CONTENDED_N 2000000u
#define MAX_REPS 64

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Uncontended ---------------------------------------------------------- */

static pthread_mutex_t solo = PTHREAD_MUTEX_INITIALIZER;

/* noinline, and the loop's counter in memory the compiler must keep: one
 * call of each per iteration, as a program makes them. */
static __attribute__((noinline)) double pairs_interposed(uint32_t n)
{
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < n; i++) {
        pthread_mutex_lock(&solo);
        __asm__ volatile("" ::: "memory");
        pthread_mutex_unlock(&solo);
    }
    return (double)(now_ns() - t0) / n;
}

static __attribute__((noinline)) double pairs_libc(uint32_t n)
{
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < n; i++) {
        libc_mutex_lock(&solo);
        __asm__ volatile("" ::: "memory");
        libc_mutex_unlock(&solo);
    }
    return (double)(now_ns() - t0) / n;
}

struct pairs {
    int reps;
    double interposed[MAX_REPS], libc[MAX_REPS];
};

static void *measure_pairs(void *arg)
{
    struct pairs *p = arg;
    pairs_interposed(UNCONTENDED_N / 10);    /* warm */
    pairs_libc(UNCONTENDED_N / 10);
    for (int r = 0; r < p->reps; r++) {
        p->interposed[r] = pairs_interposed(UNCONTENDED_N);
        p->libc[r] = pairs_libc(UNCONTENDED_N);
    }
    return NULL;
}

/* ---- Contended ------------------------------------------------------------ */

struct contended {
    bool green;
    pthread_mutex_t pm;
    green_mutex_t gm;
    uint64_t count, per;
};

static void *incr(void *arg)
{
    struct contended *c = arg;
    for (uint64_t i = 0; i < c->per; i++) {
        if (c->green) {
            green_mutex_lock(&c->gm);
            c->count++;
            green_mutex_unlock(&c->gm);
        } else {
            pthread_mutex_lock(&c->pm);
            c->count++;
            pthread_mutex_unlock(&c->pm);
        }
    }
    return NULL;
}

static void *contended_main(void *arg)
{
    struct contended *c = arg;
    green_t t[4];
    for (int i = 0; i < 4; i++)
        green_spawn(&t[i], incr, c);
    for (int i = 0; i < 4; i++)
        green_join(t[i], NULL);
    return NULL;
}

static double contended(bool green, unsigned workers)
{
    struct contended c = { .green = green, .pm = PTHREAD_MUTEX_INITIALIZER,
                           .gm = GREEN_MUTEX_INIT, .per = CONTENDED_N / 4 };
    green_config_t cfg;
    green_config_init(&cfg);
    cfg.workers = workers;
    uint64_t t0 = now_ns();
    int rc = green_run(contended_main, &c, &cfg, NULL);
    double ns = (double)(now_ns() - t0) / CONTENDED_N;
    if (rc != 0 || c.count != CONTENDED_N) {
        fprintf(stderr, "lock_bench: BROKEN: green_run %d, counter %" PRIu64 " of %u\n", rc,
                c.count, CONTENDED_N);
        exit(1);
    }
    return ns;
}

/* ---- Handoff ---------------------------------------------------------------- */

#define HANDOFF_WAITERS 10
#define HANDOFF_HOGS 10

struct handoff {
    green_mutex_t gm;
    uint64_t steps_per_us;
    _Atomic uint64_t first_ask, last_got;
    _Atomic int got;
};

/* About us microseconds of computing, in this file's own code (the
 * preemption lands here): a count of steps, not a time, so that time spent
 * preempted does not count. */
static void compute_us(const struct handoff *h, uint64_t us)
{
    for (volatile uint64_t i = 0, n = us * h->steps_per_us; i < n; i++)
        ;
}

static void *h_holder(void *arg)
{
    struct handoff *h = arg;
    green_mutex_lock(&h->gm);
    compute_us(h, 2500);                     /* preempted in there */
    green_mutex_unlock(&h->gm);
    return NULL;
}

static void *h_waiter(void *arg)
{
    struct handoff *h = arg;
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&h->first_ask, &zero, now_ns());
    green_mutex_lock(&h->gm);
    atomic_store(&h->last_got, now_ns());
    atomic_fetch_add(&h->got, 1);
    green_mutex_unlock(&h->gm);
    return NULL;
}

static void *h_hog(void *arg)
{
    compute_us(arg, 2500);
    return NULL;
}

static void *handoff_main(void *arg)
{
    struct handoff *h = arg;
    green_t t[1 + HANDOFF_WAITERS + HANDOFF_HOGS];
    int n = 0;
    /* Queued in this order; the last one spawned runs first (the LIFO
     * slot): the holder takes the mutex and is preempted behind them all. */
    for (int i = 0; i < HANDOFF_WAITERS; i++)
        green_spawn(&t[n++], h_waiter, h);
    for (int i = 0; i < HANDOFF_HOGS; i++)
        green_spawn(&t[n++], h_hog, h);
    green_spawn(&t[n++], h_holder, h);
    for (int i = 0; i < n; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* ms from the first waiter's lock call to the last waiter's return. */
static double handoff_ms(bool on, uint64_t steps_per_us, uint64_t *handoffs)
{
    struct handoff h = { .gm = GREEN_MUTEX_INIT, .steps_per_us = steps_per_us };
    green_config_t cfg;
    green_config_init(&cfg);
    cfg.workers = 1;
    cfg.quantum_us = 1000;
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.handoff = on ? GREEN_HANDOFF_ON : GREEN_HANDOFF_OFF;
    green_stats_t s0, s1;
    green_stats(&s0);
    int rc = green_run(handoff_main, &h, &cfg, NULL);
    green_stats(&s1);
    *handoffs += s1.lock_handoffs - s0.lock_handoffs;
    if (rc != 0 || h.got != HANDOFF_WAITERS) {
        fprintf(stderr, "lock_bench: BROKEN: handoff run %d, %d waiters of %d\n", rc, h.got,
                HANDOFF_WAITERS);
        exit(1);
    }
    return (double)(h.last_got - h.first_ask) / 1e6;
}

/* compute_us's steps per microsecond here: the fastest of five tries. */
static uint64_t steps_per_us(void)
{
    struct handoff one = { .steps_per_us = 1 };
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = now_ns();
        compute_us(&one, 1000000);
        uint64_t ns = now_ns() - t0;
        best = ns < best ? ns : best;
    }
    return 1000000000u / best ? 1000000000u / best : 1;
}

/* ---- Report --------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    double s[MAX_REPS];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp_d);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Median of the per-repetition differences a - b. */
static double median_diff(const double *a, const double *b, int n)
{
    double d[MAX_REPS];
    for (int i = 0; i < n; i++)
        d[i] = a[i] - b[i];
    return median(d, n);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "usage: lock_bench [REPS 1-%d]\n", MAX_REPS);
        return 2;
    }
    struct pairs green = { .reps = reps }, os = { .reps = reps };
    if (green_run(measure_pairs, &green, NULL, NULL) != 0) {
        fprintf(stderr, "lock_bench: green_run failed\n");
        return 1;
    }
    measure_pairs(&os);                      /* this thread: no green_run */

    double pm[2][MAX_REPS], gm[2][MAX_REPS];
    for (int r = 0; r < reps; r++)
        for (unsigned w = 1; w <= 2; w++) {
            pm[w - 1][r] = contended(false, w);
            gm[w - 1][r] = contended(true, w);
        }

    double ho[2][MAX_REPS];                  /* [on] */
    uint64_t nho[2] = { 0 }, spu = steps_per_us();
    for (int r = 0; r < reps; r++)
        for (int on = 1; on >= 0; on--)
            ho[on][r] = handoff_ms(on, spu, &nho[on]);

    printf("Interposed pthread locks (bench/lock_bench, medians of %d; each pair measured "
           "side by side)\n\n", reps);
    printf("| what | libgreen's pthread_mutex_* | libc's own | difference |\n");
    printf("|---|---|---|---|\n");
    printf("| uncontended lock+unlock, green thread (ns) | %.1f | %.1f | %+.1f |\n",
           median(green.interposed, reps), median(green.libc, reps),
           median_diff(green.interposed, green.libc, reps));
    printf("| uncontended lock+unlock, plain OS thread (ns) | %.1f | %.1f | %+.1f |\n",
           median(os.interposed, reps), median(os.libc, reps),
           median_diff(os.interposed, os.libc, reps));
    printf("\n| contended, 4 green threads (ns/lock+unlock) | pthread_mutex_t | green_mutex_t | "
           "ratio |\n");
    printf("|---|---|---|---|\n");
    for (unsigned w = 1; w <= 2; w++)
        printf("| %u worker%s | %.1f | %.1f | %.2f |\n", w, w > 1 ? "s" : "",
               median(pm[w - 1], reps), median(gm[w - 1], reps),
               median(pm[w - 1], reps) / median(gm[w - 1], reps));
    printf("\n| a green_mutex_t holder preempted behind %d hogs, %d waiters | handoff on | "
           "handoff off | ratio |\n", HANDOFF_HOGS, HANDOFF_WAITERS);
    printf("|---|---|---|---|\n");
    printf("| first wait to last waiter through (ms) | %.2f | %.2f | %.3f |\n",
           median(ho[1], reps), median(ho[0], reps), median(ho[1], reps) / median(ho[0], reps));
    printf("| handoffs taken, all runs | %" PRIu64 " | %" PRIu64 " | |\n", nho[1], nho[0]);
    printf("\nGoal: uncontended within +5 ns of libc's.\n");
    return 0;
}
