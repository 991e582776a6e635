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
 *
 * Everything runs inside green_run with the configuration from
 * green_config_init, so GREEN_WORKERS, GREEN_STACK_SIZE, GREEN_PREEMPT ...
 * apply.  One exception: `yield` measures a switch on ONE worker, so when
 * GREEN_WORKERS is not set it uses one worker (bench/run.sh sets it anyway).
 *
 * Timing is CLOCK_MONOTONIC around the whole pass, taken inside the green
 * main thread; every timed pass is preceded by an untimed warm-up pass of
 * N/10 iterations (stack caches, run queues, page faults).  `park` has no
 * warm-up: a warm-up would leave cached stacks behind and blur the RSS delta.
 *
 * The same benchmarks, written the same way, are in pthread_bench.c and
 * go/bench.go; bench/run.sh runs the three alternately and prints the ratios.
 * Any error from libgreen or libc: a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    for (uint64_t i = 0; i < n; i++)
        CHECK(green_spawn(NULL, parker, &p));   /* detached: no handle array */
    CHECK(green_wg_wait(&p.parked));
    CHECK(green_sleep_ns(100 * 1000 * 1000));   /* the last ones reach recv */
    r.rss_kb = status_kb("VmRSS");
    r.pte_kb = status_kb("VmPTE");
    CHECK(green_chan_close(p.gate));
    CHECK(green_wg_wait(&p.exited));
    CHECK(green_chan_destroy(p.gate));
    CHECK(green_wg_destroy(&p.parked));
    CHECK(green_wg_destroy(&p.exited));
    return r;
}

/* ---- Driver ------------------------------------------------------------- */

struct bench {
    const char *name;
    uint64_t    default_n;
    uint64_t  (*run)(uint64_t n);   /* NULL for park */
    double      ops_per_n;          /* value = elapsed / (ops_per_n * n) */
    const char *unit;
};

static const struct bench benches[] = {
    { "yield",     10000000, run_yield,     2, "ns/switch" },
    { "spawn",      5000000, run_spawn,     1, "ns/spawn+join" },
    { "spawnmany",  1000000, run_spawnmany, 1, "ns/thread" },
    { "chan",       5000000, run_chan,      2, "ns/hop" },
    { "mutex",     10000000, run_mutex,     1, "ns/lock+unlock" },
    { "park",       1000000, NULL,          1, "B/thread" },
};

struct job {
    const struct bench *b;      /* in */
    uint64_t            n;      /* in */
    uint64_t            ns;     /* out: timed pass */
    struct park_result  park;   /* out: park only */
};

static void *bench_main(void *arg)
{
    struct job *j = arg;
    if (j->b->run == NULL) {
        j->park = run_park(j->n);
        return NULL;
    }
    uint64_t warm = j->n / 10;
    if (strcmp(j->b->name, "mutex") == 0)
        warm -= warm % MUTEX_THREADS;
    if (warm > 0)
        (void)j->b->run(warm);
    j->ns = j->b->run(j->n);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: green_bench yield|spawn|spawnmany|chan|mutex|park [N]\n");
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

    struct job j = { .b = b, .n = b->default_n };
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
    if (j.n > INT64_MAX)
        usage();

    green_config_t cfg;
    CHECK(green_config_init(&cfg));
    if (strcmp(b->name, "yield") == 0 && getenv("GREEN_WORKERS") == NULL)
        cfg.workers = 1;
    CHECK(green_run(bench_main, &j, &cfg, NULL));

    if (b->run != NULL) {
        printf("%s %.2f %s\n", b->name, (double)j.ns / (b->ops_per_n * (double)j.n),
               b->unit);
    } else {
        double grown = ((double)j.park.rss_kb - (double)j.park.rss_before_kb) * 1024.0;
        printf("park_rss %.0f B/thread\n", grown / (double)j.n);
        printf("park_rss_total %.1f MiB\n", (double)j.park.rss_kb / 1024.0);
        printf("park_pte_total %.1f MiB\n", (double)j.park.pte_kb / 1024.0);
        printf("park_stack %zu B\n", cfg.stack_size);
    }
    if (fflush(stdout) != 0)
        die("stdout", errno);
    return 0;
}
