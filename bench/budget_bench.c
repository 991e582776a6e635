/*
 * budget_bench: what the reduction budget costs, and how soon it preempts,
 * beside preemption by signal.  One worker throughout.
 *
 *   cost     naive fib(FIB_N) on a green thread, ns per call of fib (the
 *            calls of the source: 2 fib(FIB_N + 1) - 1 per fib(FIB_N)),
 *            first with every call kept a real call in both builds, then
 *            the textbook function as gcc -O2 compiles it (bench/fib.c):
 *              plain      built without instrumentation, GREEN_PREEMPT=off
 *              hooks      built with -finstrument-functions, preemption off:
 *                         the hooks count and never yield
 *              budget     instrumented, budget mode, alone: every 4000
 *                         reductions the walk runs and nobody else is there
 *              budget x2  instrumented, budget mode, two such threads:
 *                         they switch every 4000 reductions
 *              signal x2  plain, signal mode (1 ms), two threads
 *            and each as a ratio to plain.
 *   latency  a ticker sleeping 1 ms TICKS times beside a fib hog; how late
 *            each tick is (p50, p90, p99, max, us):
 *              budget     instrumented hog, budget 4000
 *              signal     plain hog, signal mode, 1 ms quantum
 *              signal100  plain hog, signal mode, 100 us quantum
 *              both       instrumented hog, both, 1 ms quantum
 *
 * Every variant runs once per repetition, the variants alternating in an
 * order that rotates each repetition, so that a noisy machine weighs on all
 * alike; the tables show the medians over the repetitions.
 *
 * usage: budget_bench [REPS [TICKS]]     (BENCH_REPS in bench/run.sh)
 */
#define _GNU_SOURCE
#include <green.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t fib_plain(unsigned n);
uint64_t fib_instr(unsigned n);
uint64_t fib_plain_calls(unsigned n);
uint64_t fib_instr_calls(unsigned n);

#define FIB_N 27
#define FIB_REPS 40                  /* fib(FIB_N) per thread per run */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t fib_calls(unsigned n)  /* calls made by fib(n): 2 fib(n+1) - 1 */
{
    uint64_t a = 0, b = 1;
    for (unsigned i = 0; i < n + 1; i++) {
        uint64_t c = a + b;
        a = b;
        b = c;
    }
    return 2 * a - 1;
}

static int run(void *(*fn)(void *), void *arg, int preempt, unsigned quantum_us)
{
    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        return -1;
    cfg.workers = 1;
    cfg.preempt = preempt;
    cfg.quantum_us = quantum_us;
    cfg.budget = 4000;
    cfg.deterministic = GREEN_DETERMINISTIC_OFF;
    return green_run(fn, arg, &cfg, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- cost ------------------------------------------------------------------ */

struct cost_variant {
    const char *name;
    uint64_t (*fib)(unsigned);
    int preempt;
    int threads;
};

/* Two groups, each measured against its first row (plain). */
static const struct cost_variant costs[] = {
    { "plain", fib_plain_calls, GREEN_PREEMPT_OFF, 1 },
    { "hooks", fib_instr_calls, GREEN_PREEMPT_OFF, 1 },
    { "budget", fib_instr_calls, GREEN_PREEMPT_BUDGET, 1 },
    { "budget x2", fib_instr_calls, GREEN_PREEMPT_BUDGET, 2 },
    { "signal x2", fib_plain_calls, GREEN_PREEMPT_SIGNAL, 2 },
    { "plain", fib_plain, GREEN_PREEMPT_OFF, 1 },
    { "hooks", fib_instr, GREEN_PREEMPT_OFF, 1 },
    { "budget x2", fib_instr, GREEN_PREEMPT_BUDGET, 2 },
};
#define COSTS_KEPT 5                 /* the first group: every call kept */
#define NCOSTS (sizeof costs / sizeof costs[0])

static volatile uint64_t sink;

static void *fib_thread(void *arg)
{
    const struct cost_variant *v = arg;
    uint64_t s = 0;
    for (int i = 0; i < FIB_REPS; i++)
        s += v->fib(FIB_N);
    sink += s;
    return NULL;
}

static void *cost_main(void *arg)
{
    const struct cost_variant *v = arg;
    green_t t[2];
    for (int i = 0; i < v->threads; i++)
        if (green_spawn(&t[i], fib_thread, arg) != 0)
            return arg;
    for (int i = 0; i < v->threads; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* ns per call of fib in one run of variant v */
static double cost_once(const struct cost_variant *v)
{
    uint64_t t0 = mono_ns();
    if (run(cost_main, (void *)v, v->preempt, 1000) != 0) {
        fprintf(stderr, "budget_bench: %s: green_run failed\n", v->name);
        exit(1);
    }
    double calls = (double)fib_calls(FIB_N) * FIB_REPS * v->threads;
    return (double)(mono_ns() - t0) / calls;
}

/* ---- latency --------------------------------------------------------------- */

struct lat_variant {
    const char *name;
    uint64_t (*fib)(unsigned);
    int preempt;
    unsigned quantum_us;
};

static const struct lat_variant lats[] = {
    { "budget 4000", fib_instr, GREEN_PREEMPT_BUDGET, 1000 },
    { "signal 1 ms", fib_plain, GREEN_PREEMPT_SIGNAL, 1000 },
    { "signal 100 us", fib_plain, GREEN_PREEMPT_SIGNAL, 100 },
    { "both (1 ms)", fib_instr, GREEN_PREEMPT_BOTH, 1000 },
};
#define NLATS (sizeof lats / sizeof lats[0])

struct ticker {
    const struct lat_variant *v;
    atomic_int stop;
    int ticks;
    double *late_us;
};

static void *hog(void *arg)
{
    struct ticker *k = arg;
    uint64_t s = 0;
    while (!atomic_load_explicit(&k->stop, memory_order_relaxed))
        s += k->v->fib(20);
    sink += s;
    return NULL;
}

static void *ticks(void *arg)
{
    struct ticker *k = arg;
    for (int i = 0; i < k->ticks; i++) {
        uint64_t t0 = green_now_ns();
        green_sleep_ns(1000000);
        k->late_us[i] = (double)(green_now_ns() - t0 - 1000000) / 1e3;
    }
    atomic_store(&k->stop, 1);
    return NULL;
}

static void *ticker_main(void *arg)
{
    green_t h, t;
    if (green_spawn(&h, hog, arg) != 0 || green_spawn(&t, ticks, arg) != 0)
        return arg;
    green_join(t, NULL);
    green_join(h, NULL);
    return NULL;
}

/* p50, p90, p99, max of one run's lateness, us */
static void lat_once(const struct lat_variant *v, int nticks, double out[4])
{
    struct ticker k = { .v = v, .ticks = nticks };
    k.late_us = calloc((size_t)nticks, sizeof *k.late_us);
    if (!k.late_us || run(ticker_main, &k, v->preempt, v->quantum_us) != 0) {
        fprintf(stderr, "budget_bench: %s: green_run failed\n", v->name);
        exit(1);
    }
    qsort(k.late_us, (size_t)nticks, sizeof k.late_us[0], cmp_double);
    out[0] = k.late_us[nticks / 2];
    out[1] = k.late_us[nticks * 90 / 100];
    out[2] = k.late_us[nticks * 99 / 100];
    out[3] = k.late_us[nticks - 1];
    free(k.late_us);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    int nticks = argc > 2 ? atoi(argv[2]) : 1000;
    if (reps < 1 || nticks < 100) {
        fprintf(stderr, "usage: budget_bench [REPS [TICKS >= 100]]\n");
        return 2;
    }
    double *cost = calloc(NCOSTS * (size_t)reps, sizeof *cost);
    double *lat = calloc(NLATS * 4 * (size_t)reps, sizeof *lat);
    if (!cost || !lat)
        return 1;
    for (int r = 0; r < reps; r++) {
        for (size_t j = 0; j < NCOSTS; j++) {
            size_t i = (j + (size_t)r) % NCOSTS;
            cost[i * (size_t)reps + (size_t)r] = cost_once(&costs[i]);
        }
        for (size_t j = 0; j < NLATS; j++) {
            size_t i = (j + (size_t)r) % NLATS;
            double out[4];
            lat_once(&lats[i], nticks, out);
            for (int q = 0; q < 4; q++)
                lat[(i * 4 + (size_t)q) * (size_t)reps + (size_t)r] = out[q];
        }
    }

    printf("Reduction budget: cost on a call-heavy workload (fib(%d) x %d per thread, "
           "1 worker; medians of %d)\n\n", FIB_N, FIB_REPS, reps);
    printf("| fib | variant | ns per fib call | vs plain |\n|---|---|---|---|\n");
    double plain = 0;
    for (size_t i = 0; i < NCOSTS; i++) {
        double m = median(cost + i * (size_t)reps, reps);
        if (i == 0 || i == COSTS_KEPT)
            plain = m;
        printf("| %s | %s | %.2f | %.2fx |\n",
               i < COSTS_KEPT ? "every call kept" : "as gcc -O2 makes it", costs[i].name, m,
               m / plain);
    }
    printf("\nReduction budget: preemption latency, a 1 ms ticker beside a fib hog on 1 "
           "worker, %d ticks (us late; medians of %d)\n\n", nticks, reps);
    printf("| variant | p50 | p90 | p99 | max |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < NLATS; i++) {
        printf("| %s |", lats[i].name);
        for (int q = 0; q < 4; q++)
            printf(" %.1f |", median(lat + (i * 4 + (size_t)q) * (size_t)reps, reps));
        printf("\n");
    }
    green_stats_t s;
    green_stats(&s);
    printf("\n(process totals: %llu budget yields, %llu refused, %llu signals, "
           "%llu preemptions by signal)\n",
           (unsigned long long)s.budget_yields, (unsigned long long)s.budget_refused,
           (unsigned long long)s.signals_sent, (unsigned long long)s.preemptions);
    free(cost);
    free(lat);
    return 0;
}
