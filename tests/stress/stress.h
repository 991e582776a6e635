/* The stress program's shared parts: randomness, a round's bookkeeping,
 * the checked calls every component makes, and the components' drivers
 * (stress.c says what each checks). */
#ifndef GREEN_STRESS_H
#define GREEN_STRESS_H

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "green.h"

#define US 1000u
#define MS (1000u * 1000u)

/* ---- randomness --------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static inline uint64_t rng_next(struct rng *g)  /* splitmix64 */
{
    uint64_t z = (g->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline uint64_t below(struct rng *g, uint64_t n)
{
    return n ? rng_next(g) % n : 0;
}

static inline uint64_t between(struct rng *g, uint64_t lo, uint64_t hi)  /* inclusive */
{
    return lo + below(g, hi - lo + 1);
}

/* errno read afresh: after a call that parked, the thread may run on
 * another worker, and a compiler may keep &errno from before (README). */
__attribute__((noinline, unused)) static int errno_now(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

static inline void maybe_yield(struct rng *g)
{
    if (below(g, 8) == 0)
        green_yield();
}

/* ---- a round and its bookkeeping (common.c) ------------------------------ */

struct round {
    uint64_t seed;         /* this round's, drawn from the program's seed */
    long index;
    unsigned workers;
    char mode[64];         /* preemption mode, quantum, budget, deterministic */
    bool det;              /* a deterministic run */
    atomic_long ops;       /* API calls made */
    atomic_long started;   /* threads successfully spawned */
    atomic_long finished;  /* threads that reached their end */
};

extern uint64_t the_seed;  /* the program's --seed */

/* A broken invariant: say which, where, and the seed, and stop at once (the
 * other threads may be stuck because of it). */
__attribute__((noreturn, format(printf, 2, 3)))
void failf(struct round *r, const char *fmt, ...);

#define OP(r) atomic_fetch_add_explicit(&(r)->ops, 1, memory_order_relaxed)

void expect_rc(struct round *r, int rc, int want, const char *what);
/* t == NULL: detached.  Failure ends the program. */
int spawn(struct round *r, green_t *t, void *(*fn)(void *), void *arg);
void thread_done(struct round *r);
void join(struct round *r, green_t t, void **ret);

/* Each thread of a component gets one of these. */
struct targ {
    void *comp;
    int id;
    uint64_t seed;
};

struct targ *targs(void *comp, int n, struct rng *g);

/* ---- the components: each driver gets a malloc'ed targ (comp: the round) */

void *msgs_driver(void *arg);    /* chan.c */
void *bank_driver(void *arg);    /* locks.c */
void *condq_driver(void *arg);
void *tree_driver(void *arg);    /* threads.c */
void *timers_driver(void *arg);
void *nopre_driver(void *arg);   /* nopre.c */
void *fdio_driver(void *arg);    /* fdio.c */
void *plocks_driver(void *arg);  /* plocks.c */
void *cycles_driver(void *arg);  /* cycles.c */
/* Cycles planted (cycles.c), each to be reported once on stderr (stress.c
 * counts the reports). */
extern atomic_long stress_cycles_planted;

#endif
