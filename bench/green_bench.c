/* green_bench: libgreen's side of the benchmark suite.
 *
 * One binary, one benchmark per run:   green_bench NAME [N]
 *
 *   yield N      two green threads on one worker, each green_yield()s N times
 *                -> yield <ns> ns/switch            (elapsed / 2N)
 *   spawn N      one thread does N times { green_spawn; green_join }
 *                -> spawn <ns> ns/spawn+join        (elapsed / N)
 *   spawnmany N  spawn N threads, then join them all
 *                -> spawnmany <ns> ns/thread        (elapsed / N)
 *   chan N       two threads ping-pong an int over two unbuffered channels,
 *                N round trips -> chan <ns> ns/hop  (elapsed / 2N)
 *   mutex N      4 threads each do N/4 lock; counter++; unlock on one mutex
 *                -> mutex <ns> ns/lock+unlock       (elapsed / N)
 *   park N       N threads block in green_chan_recv on one unbuffered channel
 *                -> park_rss <bytes> B/thread       (VmRSS growth / N)
 *                   park_rss_total <MiB> MiB        (VmRSS with all parked)
 *                   park_pte_total <MiB> MiB        (VmPTE with all parked)
 *                   park_stack <bytes> B            (cfg.stack_size used)
 *                   park_spawn <ns> ns/thread       (first spawn to the last
 *                                                    one parked: wg_wait)
 *                   park_release <ns> ns/thread     (close to the last one out)
 *
 * Preemption (issue 3), each also printing the green_stats() deltas of its
 * timed pass as <name>_signals, <name>_preemptions, <name>_refusals:
 *
 *   ticker N     one worker: a call-free CPU hog beside a ticker that sleeps
 *                1 ms N times -> ticker_p50, ticker_p99, ticker_max <us> us
 *                (lateness: actual sleep - 1 ms).  If the ticker does not
 *                tick for 5 s (no preemption), a watchdog OS thread stops the
 *                hog and the run fails, instead of hanging.
 *   ticker_libc N  the same beside a hog that lives in libc: malloc/free,
 *                snprintf, qsort calling back the program's comparator, memcpy
 *                -> ticker_libc_p50, ticker_libc_p99, ticker_libc_max.  libc is
 *                never interrupted; the hog is preempted as it returns from it.
 *   preempt_cost N  4 threads on 2 workers each run N xorshift64 steps, no
 *                calls -> preempt_cost <ms> ms    (elapsed)
 *                (threads 0 and 2, 1 and 3, must end with equal values)
 *                         preempt_cost_cpu <ms> ms (user+system CPU time,
 *                         getrusage: every thread, the monitor's too)
 *   yield_signals N  4 threads on 2 workers green_yield() in a loop for N ms
 *                -> yield_signals <count> signals (signals sent: must be 0),
 *                   yield_signals_yields <count> yields
 *
 * Everything runs inside green_run with the configuration from
 * green_config_init, so GREEN_WORKERS, GREEN_STACK_SIZE, GREEN_PREEMPT ...
 * apply.  Where a benchmark means one setting and the variable is unset, it
 * picks it (bench/run.sh sets them all anyway): `yield` and `ticker` measure
 * ONE worker, so GREEN_WORKERS defaults to 1 for them, and 2 for
 * preempt_cost and yield_signals; `ticker` and `yield_signals` measure
 * preemption by signal, so GREEN_PREEMPT defaults to signal for them
 * (preempt_cost keeps the library default, signal).
 *
 * Timing is CLOCK_MONOTONIC around the whole pass, taken inside the green
 * main thread; every timed pass is preceded by an untimed warm-up pass of
 * N/10 iterations (stack caches, run queues, page faults).  `park` has no
 * warm-up: a warm-up would leave cached stacks behind and blur the RSS delta.
 * For ticker, N/10 ticks; for yield_signals, N/10 ms.
 *
 * The same benchmarks, written the same way, are in pthread_bench.c and
 * go/bench.go (pthread_bench.c has none of the preemption ones); bench/run.sh
 * runs them alternately and prints the ratios.
 * Any error from libgreen or libc: a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "green.h"

#define MUTEX_THREADS 4

/* ---- Helpers ------------------------------------------------------------ */

static void die(const char *what, int err)
{
    fprintf(stderr, "green_bench: %s: %s\n", what, strerror(err));
    exit(1);
}

/* Call a function that returns 0 or an errno value; exit on anything else. */
#define CHECK(call)                      \
    do {                                 \
        int check_err_ = (call);         \
        if (check_err_ != 0)             \
            die(#call, check_err_);      \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime", errno);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The value of a "Key:  123 kB" line of /proc/self/status, in kB. */
static uint64_t status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        die("fopen /proc/self/status", errno);
    size_t klen = strlen(key);
    char line[256];
    uint64_t kb = 0;
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            found = sscanf(line + klen + 1, "%" SCNu64, &kb) == 1;
    }
    fclose(f);
    if (!found) {
        fprintf(stderr, "green_bench: no %s in /proc/self/status\n", key);
        exit(1);
    }
    return kb;
}

/* User + system CPU time of the whole process (all its threads). */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage", errno);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static void *trivial(void *arg)
{
    return arg;
}

/* ---- yield -------------------------------------------------------------- */

static void *yielder(void *arg)
{
    uint64_t n = *(const uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++)
        green_yield();
    return NULL;
}

static uint64_t run_yield(uint64_t n)
{
    green_t a, b;
    uint64_t t0 = now_ns();
    CHECK(green_spawn(&a, yielder, &n));
    CHECK(green_spawn(&b, yielder, &n));
    CHECK(green_join(a, NULL));
    CHECK(green_join(b, NULL));
    return now_ns() - t0;
}

/* ---- spawn, spawnmany --------------------------------------------------- */

static uint64_t run_spawn(uint64_t n)
{
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        green_t t;
        CHECK(green_spawn(&t, trivial, NULL));
        CHECK(green_join(t, NULL));
    }
    return now_ns() - t0;
}

static uint64_t run_spawnmany(uint64_t n)
{
    green_t *t = calloc(n, sizeof *t);
    if (t == NULL)
        die("calloc", ENOMEM);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++)
        CHECK(green_spawn(&t[i], trivial, NULL));
    for (uint64_t i = 0; i < n; i++)
        CHECK(green_join(t[i], NULL));
    uint64_t dt = now_ns() - t0;
    free(t);
    return dt;
}

/* ---- chan --------------------------------------------------------------- */

struct pingpong {
    green_chan_t *ping;   /* pinger -> ponger */
    green_chan_t *pong;   /* ponger -> pinger */
    uint64_t      n;      /* round trips */
};

static void *pinger(void *arg)
{
    struct pingpong *pp = arg;
    for (uint64_t i = 0; i < pp->n; i++) {
        int v = (int)i, back;
        CHECK(green_chan_send(pp->ping, &v));
        CHECK(green_chan_recv(pp->pong, &back));
        if (back != v) {
            fprintf(stderr, "green_bench: chan: sent %d, got %d back\n", v, back);
            exit(1);
        }
    }
    return NULL;
}

static void *ponger(void *arg)
{
    struct pingpong *pp = arg;
    for (uint64_t i = 0; i < pp->n; i++) {
        int v;
        CHECK(green_chan_recv(pp->ping, &v));
        CHECK(green_chan_send(pp->pong, &v));
    }
    return NULL;
}

static uint64_t run_chan(uint64_t n)
{
    struct pingpong pp = { .n = n };
    CHECK(green_chan_create(&pp.ping, sizeof(int), 0));
    CHECK(green_chan_create(&pp.pong, sizeof(int), 0));
    green_t a, b;
    uint64_t t0 = now_ns();
    CHECK(green_spawn(&b, ponger, &pp));
    CHECK(green_spawn(&a, pinger, &pp));
    CHECK(green_join(a, NULL));
    CHECK(green_join(b, NULL));
    uint64_t dt = now_ns() - t0;
    CHECK(green_chan_destroy(pp.ping));
    CHECK(green_chan_destroy(pp.pong));
    return dt;
}

/* ---- mutex -------------------------------------------------------------- */

struct counter {
    green_mutex_t mu;
    uint64_t      value;  /* guarded by mu */
    uint64_t      per;    /* increments per thread; read-only */
};

static void *incrementer(void *arg)
{
    struct counter *c = arg;
    for (uint64_t i = 0; i < c->per; i++) {
        CHECK(green_mutex_lock(&c->mu));
        c->value++;
        CHECK(green_mutex_unlock(&c->mu));
    }
    return NULL;
}

/* n is a multiple of MUTEX_THREADS (main rounds it down). */
static uint64_t run_mutex(uint64_t n)
{
    struct counter c = { .mu = GREEN_MUTEX_INIT, .value = 0,
                         .per = n / MUTEX_THREADS };
    CHECK(green_mutex_init(&c.mu));
    green_t t[MUTEX_THREADS];
    uint64_t t0 = now_ns();
    for (int i = 0; i < MUTEX_THREADS; i++)
        CHECK(green_spawn(&t[i], incrementer, &c));
    for (int i = 0; i < MUTEX_THREADS; i++)
        CHECK(green_join(t[i], NULL));
    uint64_t dt = now_ns() - t0;
    if (c.value != n) {
        fprintf(stderr, "green_bench: mutex: BROKEN: counter is %" PRIu64
                " after %" PRIu64 " locked increments\n", c.value, n);
        exit(1);
    }
    CHECK(green_mutex_destroy(&c.mu));
    return dt;
}

/* ---- park --------------------------------------------------------------- */

struct park {
    green_chan_t *gate;     /* unbuffered, never sent on; closed to release */
    green_wg_t    parked;   /* Done by each thread just before it blocks */
    green_wg_t    exited;   /* Done by each thread once released */
};

static void *parker(void *arg)
{
    struct park *p = arg;
    CHECK(green_wg_done(&p->parked));
    int err = green_chan_recv(p->gate, NULL);
    if (err == 0) {   /* only the close may wake us */
        fprintf(stderr, "green_bench: park: received a value nobody sent\n");
        exit(1);
    }
    if (err != EPIPE)
        die("park: green_chan_recv", err);
    CHECK(green_wg_done(&p->exited));
    return NULL;
}

struct park_result {
    uint64_t rss_before_kb, rss_kb, pte_kb;
    uint64_t spawn_ns, release_ns;   /* first spawn to all parked; close to all out */
};

static struct park_result run_park(uint64_t n)
{
    struct park p;
    struct park_result r;
    CHECK(green_chan_create(&p.gate, 0, 0));
    CHECK(green_wg_init(&p.parked));
    CHECK(green_wg_init(&p.exited));
    CHECK(green_wg_add(&p.parked, (int64_t)n));
    CHECK(green_wg_add(&p.exited, (int64_t)n));
    r.rss_before_kb = status_kb("VmRSS");
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++)
        CHECK(green_spawn(NULL, parker, &p));   /* detached: no handle array */
    CHECK(green_wg_wait(&p.parked));
    r.spawn_ns = now_ns() - t0;
    CHECK(green_sleep_ns(100 * 1000 * 1000));   /* the last ones reach recv */
    r.rss_kb = status_kb("VmRSS");
    r.pte_kb = status_kb("VmPTE");
    t0 = now_ns();
    CHECK(green_chan_close(p.gate));
    CHECK(green_wg_wait(&p.exited));
    r.release_ns = now_ns() - t0;
    CHECK(green_chan_destroy(p.gate));
    CHECK(green_wg_destroy(&p.parked));
    CHECK(green_wg_destroy(&p.exited));
    return r;
}

/* ---- Preemption: what green_stats counted ------------------------------- */

struct preempt_counts {
    uint64_t signals, preemptions, refusals;   /* refusals: all four reasons */
};

static struct preempt_counts counts_now(void)
{
    green_stats_t s;
    green_stats(&s);
    return (struct preempt_counts){
        .signals = s.signals_sent,
        .preemptions = s.preemptions,
        .refusals = s.refused_runtime + s.refused_nopreempt + s.refused_unsafe_pc +
                    s.refused_headroom + s.refused_unsafe_frame + s.refused_unwind,
    };
}

static struct preempt_counts counts_since(struct preempt_counts before)
{
    struct preempt_counts now = counts_now();
    return (struct preempt_counts){
        .signals = now.signals - before.signals,
        .preemptions = now.preemptions - before.preemptions,
        .refusals = now.refusals - before.refusals,
    };
}

static void print_counts(const char *name, struct preempt_counts c)
{
    printf("%s_signals %" PRIu64 " signals\n", name, c.signals);
    printf("%s_preemptions %" PRIu64 " preemptions\n", name, c.preemptions);
    printf("%s_refusals %" PRIu64 " refusals\n", name, c.refusals);
}

/* ---- ticker ------------------------------------------------------------- */

#define TICK_NS          1000000u     /* the ticker sleeps 1 ms */
#define HOG_CHECK_EVERY  4096         /* hog increments between looks at hog_stop */
#define STARVED_NS       5000000000u  /* no tick for this long: the watchdog ends it */

static volatile uint64_t hog_counter;
static atomic_int        hog_stop;      /* set by the ticker when done, or the watchdog */
static atomic_uint_least64_t ticks;     /* ticks so far, both passes; the watchdog reads it */
static atomic_int        ticker_done;   /* set by main after green_run */
static atomic_int        starved;       /* set by the watchdog */

/* The hog: no call anywhere in the loop, so nothing but a preemption signal
 * can take the worker from it.  The stop flag is a relaxed load, one
 * instruction, every HOG_CHECK_EVERY increments. */
static void *hog(void *arg)
{
    for (;;) {
        for (int i = 0; i < HOG_CHECK_EVERY; i++)
            hog_counter++;
        if (atomic_load_explicit(&hog_stop, memory_order_relaxed))
            return arg;
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The hog of ticker_libc: what C programs spend their time in -- the heap,
 * stdio formatting, a sort calling back the program, a copy -- in rounds of
 * a few microseconds, looking at the stop flag between them. */
static void *libc_hog(void *arg)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    char buf[512];
    int v[256];
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = 64 + x % 2000;
        char *p = malloc(len);
        if (!p)
            die("malloc", ENOMEM);
        memset(p, (int)x, len);
        hog_counter += (uint64_t)p[len - 1];
        free(p);
        hog_counter += (uint64_t)snprintf(buf, sizeof buf, "%llu %s %.3f",
                                          (unsigned long long)x, "green", (double)(x % 1000) / 7);
        for (int i = 0; i < 256; i++)
            v[i] = (int)((x >> (i % 48)) & 0xffff);
        qsort(v, 256, sizeof v[0], cmp_int);
        memcpy(buf, v, sizeof buf);
        hog_counter += (uint64_t)buf[17];
    }
    return arg;
}

struct tick_pass {
    int64_t *late_ns;   /* n samples: actual sleep - TICK_NS */
    uint64_t n;
};

static void *ticker(void *arg)
{
    struct tick_pass *tp = arg;
    for (uint64_t i = 0; i < tp->n; i++) {
        uint64_t t0 = now_ns();
        CHECK(green_sleep_ns(TICK_NS));
        tp->late_ns[i] = (int64_t)(now_ns() - t0) - (int64_t)TICK_NS;
        atomic_fetch_add_explicit(&ticks, 1, memory_order_relaxed);
    }
    atomic_store_explicit(&hog_stop, 1, memory_order_relaxed);
    return NULL;
}

/* One pass: the hog and the ticker side by side until the ticker has
 * ticked n times. */
static void run_ticker(int64_t *late_ns, uint64_t n, void *(*the_hog)(void *))
{
    struct tick_pass tp = { .late_ns = late_ns, .n = n };
    green_t h, t;
    atomic_store(&hog_stop, 0);
    CHECK(green_spawn(&h, the_hog, NULL));
    CHECK(green_spawn(&t, ticker, &tp));
    CHECK(green_join(t, NULL));
    CHECK(green_join(h, NULL));
}

/* An OS thread, outside libgreen: if the ticker has not ticked for
 * STARVED_NS (no preemption: the hog keeps the only worker), stop the hog
 * so the run ends; main then reports the starvation as an error. */
static void *watchdog(void *arg)
{
    uint64_t seen = 0, since = now_ns();
    const struct timespec poll = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
    while (!atomic_load(&ticker_done)) {
        nanosleep(&poll, NULL);
        uint64_t now = now_ns(), k = atomic_load(&ticks);
        if (k != seen) {
            seen = k;
            since = now;
        } else if (now - since >= STARVED_NS) {
            atomic_store(&starved, 1);
            atomic_store(&hog_stop, 1);
            since = now;
        }
    }
    return arg;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample >= p percent of them (sorted: v[0..n)). */
static int64_t percentile(const int64_t *v, uint64_t n, unsigned p)
{
    uint64_t rank = (n * p + 99) / 100;
    return v[rank > 0 ? rank - 1 : 0];
}

/* ---- preempt_cost -------------------------------------------------------- */

#define COST_THREADS 4

static volatile uint64_t crunch_sink;

struct crunch {
    uint64_t seed;     /* in */
    uint64_t n;        /* in: xorshift64 steps */
    uint64_t result;   /* out */
};

/* Call-free arithmetic: a serial chain of shifts and xors in registers. */
static void *cruncher(void *arg)
{
    struct crunch *c = arg;
    uint64_t x = c->seed;
    for (uint64_t i = 0; i < c->n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    crunch_sink = x;
    c->result = x;
    return NULL;
}

/* Threads i and i+2 start from the same seed, so they must end with the
 * same value: a preemption that lost a register would (almost surely) show. */
static uint64_t run_preempt_cost(uint64_t n)
{
    struct crunch c[COST_THREADS];
    green_t t[COST_THREADS];
    for (int i = 0; i < COST_THREADS; i++)
        c[i] = (struct crunch){ .seed = 0x9e3779b97f4a7c15u + (uint64_t)(i % 2), .n = n };
    uint64_t t0 = now_ns();
    for (int i = 0; i < COST_THREADS; i++)
        CHECK(green_spawn(&t[i], cruncher, &c[i]));
    for (int i = 0; i < COST_THREADS; i++)
        CHECK(green_join(t[i], NULL));
    uint64_t dt = now_ns() - t0;
    for (int i = 0; i + 2 < COST_THREADS; i++) {
        if (c[i].result != c[i + 2].result) {
            fprintf(stderr, "green_bench: preempt_cost: BROKEN: threads %d and %d ran the "
                    "same steps and got %#" PRIx64 " and %#" PRIx64 "\n", i, i + 2,
                    c[i].result, c[i + 2].result);
            exit(1);
        }
    }
    return dt;
}

/* ---- yield_signals ------------------------------------------------------- */

#define YLOOP_THREADS 4

struct yloop {
    atomic_int            stop;     /* set by main after the time is up */
    atomic_uint_least64_t yields;   /* summed by the threads as they finish */
};

static void *yloop_thread(void *arg)
{
    struct yloop *y = arg;
    uint64_t k = 0;
    while (!atomic_load_explicit(&y->stop, memory_order_relaxed)) {
        green_yield();
        k++;
    }
    atomic_fetch_add(&y->yields, k);
    return NULL;
}

/* YLOOP_THREADS threads yield for ms milliseconds; returns the yields. */
static uint64_t run_yloop(uint64_t ms)
{
    struct yloop y = { .stop = 0, .yields = 0 };
    green_t t[YLOOP_THREADS];
    for (int i = 0; i < YLOOP_THREADS; i++)
        CHECK(green_spawn(&t[i], yloop_thread, &y));
    CHECK(green_sleep_ns(ms * 1000000u));
    atomic_store(&y.stop, 1);
    for (int i = 0; i < YLOOP_THREADS; i++)
        CHECK(green_join(t[i], NULL));
    return atomic_load(&y.yields);
}

/* ---- Driver ------------------------------------------------------------- */

struct job {
    uint64_t              n;            /* in */
    uint64_t              ns;           /* out: timed pass (run, preempt_cost) */
    uint64_t              cpu_ns;       /* out: preempt_cost: CPU time of that pass */
    struct park_result    park;         /* out: park */
    int64_t              *late_ns;      /* out: ticker, n samples */
    uint64_t              yields;       /* out: yield_signals */
    struct preempt_counts counts;       /* out: preemption benchmarks, timed pass */
};

/* Benchmarks with more than one figure run (warm-up included) and print by
 * their own pair of functions. */
static void park_main(struct job *j)
{
    j->park = run_park(j->n);
}

static void park_print(const struct job *j, const green_config_t *cfg)
{
    double grown = ((double)j->park.rss_kb - (double)j->park.rss_before_kb) * 1024.0;
    printf("park_rss %.0f B/thread\n", grown / (double)j->n);
    printf("park_rss_total %.1f MiB\n", (double)j->park.rss_kb / 1024.0);
    printf("park_pte_total %.1f MiB\n", (double)j->park.pte_kb / 1024.0);
    printf("park_stack %zu B\n", cfg->stack_size);
    printf("park_spawn %.0f ns/thread\n", (double)j->park.spawn_ns / (double)j->n);
    printf("park_release %.0f ns/thread\n", (double)j->park.release_ns / (double)j->n);
}

static const char *bench_name;          /* set once in main */

static void ticker_main(struct job *j)
{
    void *(*the_hog)(void *) = strcmp(bench_name, "ticker_libc") == 0 ? libc_hog : hog;
    if (j->n / 10 > 0)
        run_ticker(j->late_ns, j->n / 10, the_hog);
    struct preempt_counts before = counts_now();
    run_ticker(j->late_ns, j->n, the_hog);
    j->counts = counts_since(before);
}

static void ticker_print(const struct job *j, const green_config_t *cfg)
{
    (void)cfg;
    const char *name = bench_name;
    qsort(j->late_ns, j->n, sizeof *j->late_ns, cmp_i64);
    printf("%s_p50 %.1f us\n", name, (double)percentile(j->late_ns, j->n, 50) / 1e3);
    printf("%s_p99 %.1f us\n", name, (double)percentile(j->late_ns, j->n, 99) / 1e3);
    printf("%s_max %.1f us\n", name, (double)j->late_ns[j->n - 1] / 1e3);
    print_counts(name, j->counts);
}

static void cost_main(struct job *j)
{
    if (j->n / 10 > 0)
        (void)run_preempt_cost(j->n / 10);
    struct preempt_counts before = counts_now();
    uint64_t cpu0 = cpu_ns();
    j->ns = run_preempt_cost(j->n);
    j->cpu_ns = cpu_ns() - cpu0;
    j->counts = counts_since(before);
}

static void cost_print(const struct job *j, const green_config_t *cfg)
{
    (void)cfg;
    printf("preempt_cost %.1f ms\n", (double)j->ns / 1e6);
    printf("preempt_cost_cpu %.1f ms\n", (double)j->cpu_ns / 1e6);
    print_counts("preempt_cost", j->counts);
}

static void yloop_main(struct job *j)
{
    if (j->n / 10 > 0)
        (void)run_yloop(j->n / 10);
    struct preempt_counts before = counts_now();
    j->yields = run_yloop(j->n);
    j->counts = counts_since(before);
}

static void yloop_print(const struct job *j, const green_config_t *cfg)
{
    (void)cfg;
    printf("yield_signals %" PRIu64 " signals\n", j->counts.signals);
    printf("yield_signals_yields %" PRIu64 " yields\n", j->yields);
    printf("yield_signals_preemptions %" PRIu64 " preemptions\n", j->counts.preemptions);
}

struct bench {
    const char *name;
    uint64_t    default_n;
    uint64_t  (*run)(uint64_t n);   /* NULL: main and print below */
    double      ops_per_n;          /* value = elapsed / (ops_per_n * n) */
    const char *unit;
    void      (*main)(struct job *j);                                /* in green_run */
    void      (*print)(const struct job *j, const green_config_t *cfg);
    unsigned    workers;            /* when GREEN_WORKERS is unset; 0: the default */
    int         preempt;            /* when GREEN_PREEMPT is unset; -1: the default */
};

static const struct bench benches[] = {
    { "yield",     10000000, run_yield,     2, "ns/switch",      NULL, NULL, 1, -1 },
    { "spawn",      5000000, run_spawn,     1, "ns/spawn+join",  NULL, NULL, 0, -1 },
    { "spawnmany",  1000000, run_spawnmany, 1, "ns/thread",      NULL, NULL, 0, -1 },
    { "chan",       5000000, run_chan,      2, "ns/hop",         NULL, NULL, 0, -1 },
    { "mutex",     10000000, run_mutex,     1, "ns/lock+unlock", NULL, NULL, 0, -1 },
    { "park",       1000000, NULL, 0, NULL, park_main,   park_print,   0, -1 },
    { "ticker",        2000, NULL, 0, NULL, ticker_main, ticker_print, 1, GREEN_PREEMPT_SIGNAL },
    { "ticker_libc",   2000, NULL, 0, NULL, ticker_main, ticker_print, 1, GREEN_PREEMPT_SIGNAL },
    { "preempt_cost", 200000000, NULL, 0, NULL, cost_main, cost_print, 2, -1 },
    { "yield_signals",  500, NULL, 0, NULL, yloop_main,  yloop_print,  2, GREEN_PREEMPT_SIGNAL },
};

static const struct bench *the_bench;   /* set once in main */

static void *bench_main(void *arg)
{
    struct job *j = arg;
    const struct bench *b = the_bench;
    if (b->run == NULL) {
        b->main(j);
        return NULL;
    }
    uint64_t warm = j->n / 10;
    if (strcmp(b->name, "mutex") == 0)
        warm -= warm % MUTEX_THREADS;
    if (warm > 0)
        (void)b->run(warm);
    j->ns = b->run(j->n);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: green_bench yield|spawn|spawnmany|chan|mutex|park|"
                    "ticker|ticker_libc|preempt_cost|yield_signals [N]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        usage();
    const struct bench *b = NULL;
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            b = &benches[i];
    if (b == NULL)
        usage();
    the_bench = b;
    bench_name = b->name;

    struct job j = { .n = b->default_n };
    if (argc == 3) {
        char *end;
        errno = 0;
        j.n = strtoull(argv[2], &end, 10);
        if (errno != 0 || *end != '\0' || argv[2][0] == '-' || j.n == 0) {
            fprintf(stderr, "green_bench: bad N '%s'\n", argv[2]);
            exit(1);
        }
    }
    if (strcmp(b->name, "mutex") == 0) {
        j.n -= j.n % MUTEX_THREADS;
        if (j.n == 0)
            usage();
    }
    if (j.n > INT64_MAX || (strcmp(b->name, "yield_signals") == 0 && j.n > 3600000))
        usage();

    green_config_t cfg;
    CHECK(green_config_init(&cfg));
    if (b->workers != 0 && getenv("GREEN_WORKERS") == NULL)
        cfg.workers = b->workers;
    if (b->preempt >= 0 && getenv("GREEN_PREEMPT") == NULL)
        cfg.preempt = b->preempt;

    pthread_t dog;
    if (b->main == ticker_main) {
        j.late_ns = calloc(j.n, sizeof *j.late_ns);
        if (j.late_ns == NULL)
            die("calloc", ENOMEM);
        CHECK(pthread_create(&dog, NULL, watchdog, NULL));
    }
    CHECK(green_run(bench_main, &j, &cfg, NULL));
    if (j.late_ns != NULL) {
        atomic_store(&ticker_done, 1);
        CHECK(pthread_join(dog, NULL));
        if (atomic_load(&starved)) {
            fprintf(stderr, "green_bench: %s: STARVED: the ticker did not tick for "
                    "%.0f s beside the hog (preemption %s, %u worker%s); the hog was "
                    "stopped to end the run\n", b->name, STARVED_NS / 1e9,
                    cfg.preempt == GREEN_PREEMPT_OFF ? "off" : "on", cfg.workers,
                    cfg.workers == 1 ? "" : "s");
            exit(1);
        }
    }

    if (b->run != NULL)
        printf("%s %.2f %s\n", b->name, (double)j.ns / (b->ops_per_n * (double)j.n),
               b->unit);
    else
        b->print(&j, &cfg);
    if (fflush(stdout) != 0)
        die("stdout", errno);
    free(j.late_ns);
    return 0;
}
