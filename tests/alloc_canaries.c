/* Green threads hammering the allocator, every block checked.
 *
 * tests/jemalloc.sh runs this under LD_PRELOAD=libjemalloc.so.2 on one
 * worker at a 50 us quantum: jemalloc keeps a cache and mutexes per OS
 * thread, and a green thread preempted inside it, holding its mutex or
 * halfway through a cache update, hangs or corrupts the next green thread
 * on that worker (3 runs of 3 hung before libgreen stopped preempting code
 * the program does not own).  Each thread keeps blocks of random sizes
 * filled with a pattern derived from (thread, slot, generation), checks the
 * whole block before it frees or reallocates it, and counts every byte that
 * changed.  Usage: alloc_canaries THREADS SECONDS.  Exit 0 when no byte
 * changed; 1 otherwise.  Also prints whether jemalloc is the allocator and
 * what preemption did (green_stats).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "green.h"

enum { SLOTS = 64 };

struct worker_state {
    uint64_t rng;
    unsigned id;
    uint64_t ops, bad_bytes;
    unsigned char *block[SLOTS];
    size_t len[SLOTS];
    uint32_t gen[SLOTS];
};

static uint64_t deadline_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static unsigned char pattern(const struct worker_state *s, int slot, size_t i)
{
    return (unsigned char)(s->id * 131u + (unsigned)slot * 31u + s->gen[slot] * 7u + i);
}

static void fill(struct worker_state *s, int slot)
{
    for (size_t i = 0; i < s->len[slot]; i++)
        s->block[slot][i] = pattern(s, slot, i);
}

static void check(struct worker_state *s, int slot)
{
    for (size_t i = 0; i < s->len[slot]; i++)
        s->bad_bytes += s->block[slot][i] != pattern(s, slot, i);
}

/* Sizes across jemalloc's small, large and huge classes. */
static size_t some_size(uint64_t *rng)
{
    uint64_t r = next(rng);
    switch (r % 8) {
    case 7: return 16384 + (r >> 8) % 200000;
    case 6: case 5: return 1024 + (r >> 8) % 15000;
    default: return 1 + (r >> 8) % 1000;
    }
}

static void *churn(void *arg)
{
    struct worker_state *s = arg;
    while (now_ns() < deadline_ns) {
        int slot = (int)(next(&s->rng) % SLOTS);
        if (s->block[slot]) {
            check(s, slot);
            if (next(&s->rng) % 4 == 0) {
                /* realloc keeps the common prefix: check it after. */
                size_t keep = s->len[slot];
                size_t len = some_size(&s->rng);
                unsigned char *p = realloc(s->block[slot], len);
                if (!p)
                    continue;
                s->block[slot] = p;
                s->len[slot] = len < keep ? len : keep;
                check(s, slot);
                s->len[slot] = len;
            } else {
                free(s->block[slot]);
                s->block[slot] = NULL;
                continue;
            }
        } else {
            s->len[slot] = some_size(&s->rng);
            s->block[slot] = malloc(s->len[slot]);
            if (!s->block[slot])
                continue;
        }
        s->gen[slot]++;
        fill(s, slot);
        s->ops++;
    }
    for (int slot = 0; slot < SLOTS; slot++) {
        if (s->block[slot]) {
            check(s, slot);
            free(s->block[slot]);
        }
    }
    return NULL;
}

struct run {
    unsigned threads;
    struct worker_state *state;
};

static void *run_main(void *arg)
{
    struct run *r = arg;
    green_t *t = calloc(r->threads, sizeof *t);
    if (!t)
        return (void *)1;
    for (unsigned i = 0; i < r->threads; i++)
        if (green_spawn(&t[i], churn, &r->state[i]) != 0)
            return (void *)1;
    for (unsigned i = 0; i < r->threads; i++)
        green_join(t[i], NULL);
    free(t);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS SECONDS\n", argv[0]);
        return 2;
    }
    struct run r = { .threads = (unsigned)atoi(argv[1]) };
    double secs = atof(argv[2]);
    r.state = calloc(r.threads ? r.threads : 1, sizeof *r.state);
    if (!r.threads || !r.state || secs <= 0) {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        return 2;
    }
    for (unsigned i = 0; i < r.threads; i++)
        r.state[i] = (struct worker_state){ .rng = 0x9e3779b97f4a7c15u * (i + 1), .id = i };
    deadline_ns = now_ns() + (uint64_t)(secs * 1e9);
    void *ret = NULL;
    int err = green_run(run_main, &r, NULL, &ret);
    if (err || ret) {
        fprintf(stderr, "%s: green_run: %s\n", argv[0], err ? strerror(err) : "spawn failed");
        return 1;
    }
    uint64_t ops = 0, bad = 0;
    for (unsigned i = 0; i < r.threads; i++) {
        ops += r.state[i].ops;
        bad += r.state[i].bad_bytes;
    }
    green_stats_t st;
    green_stats(&st);
    printf("allocator: %s; %u threads, %" PRIu64 " allocations, %" PRIu64 " bytes changed; "
           "%" PRIu64 " signals, %" PRIu64 " preemptions, %" PRIu64 " hooked returns, %" PRIu64
           " taken at a return\n",
           dlsym(RTLD_DEFAULT, "mallctl") ? "jemalloc" : "not jemalloc", r.threads, ops, bad,
           st.signals_sent, st.preemptions, st.hijacks, st.deferred_taken);
    free(r.state);
    return bad ? 1 : 0;
}
