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
 * Prints a Markdown table.  Exits 1 if a counter comes out wrong. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
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
    printf("\nGoal: uncontended within +5 ns of libc's.\n");
    return 0;
}
