/* stress: a randomized workload over the whole libgreen API that checks its
 * own invariants as it goes.
 *
 *     stress [--seconds S] [--seed N] [--workers W] [--hang S]
 *
 * It prints its seed first, then runs rounds until S seconds (default 10)
 * have passed.  A round is one green_run whose main thread starts a random
 * subset of seven components, each with random sizes and random choices of
 * call variants:
 *
 *   msgs   producers -> channels (buffered/unbuffered) -> receivers, with
 *          send/send_until/select sends, select/select_until/select_try/
 *          recv_until receives, and close; every message arrives exactly
 *          once (a seen-table, a count and a sum).
 *   bank   transfers between accounts under one mutex taken by lock,
 *          trylock or lock_until, with yields inside; an auditor checks the
 *          total while they run; an in-section flag checks exclusion.
 *   condq  a bounded queue under a mutex and two conds (wait/wait_until,
 *          signal/broadcast); count and sum are conserved.
 *   tree   threads spawning threads, joined (join/join_until) or detached
 *          (spawn NULL / detach) and tracked by a wait group; every node
 *          is counted once.
 *   timers sleeps and deadline calls that must time out, never early.
 *   nopre  nopreempt sections and GREEN_NOPREEMPT functions spinning for a
 *          while: none is ever switched out inside (a per-worker owner
 *          slot would be taken by another thread).
 *   fdio   writers -> non-blocking pipes -> readers, through green_fd_wait
 *          (sometimes with a deadline that passes) and green_fd_close;
 *          every record arrives exactly once (not in deterministic rounds).
 *
 * Every thread the test starts is counted when started and when finished;
 * after green_run returns the two counts must match (no thread lost).  On
 * the first broken invariant the round fails: the program prints what broke,
 * the round and the seed, and exits 1; a round that takes over a minute
 * (--hang S: S seconds, for runs under Valgrind) is reported as hung.
 * Otherwise it prints a summary and exits 0.
 *
 * Each round also draws its preemption mode (off, signal, budget, both;
 * unless GREEN_PREEMPT is set), its quantum (50 us in a quarter of the
 * rounds, unless GREEN_QUANTUM_US is set), its reduction budget (a tiny one
 * in a quarter of the rounds, so that budget yields land everywhere), and in one
 * round of eight -- unless GREEN_DETERMINISTIC or --workers is set -- a
 * deterministic run on one worker.
 *
 * The seed drives every random choice the test makes (each thread gets its
 * own generator seeded by its parent), and is passed on as cfg.seed.  Only
 * a deterministic round replays its schedule from it.
 *
 * At the end it prints what it did: operations per second, the runtime's
 * counters (signals, preemptions, budget yields, refusals by reason) and the
 * peak RSS.  `make stress DURATION=S [WORKERS=W]` runs it for S seconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "green.h"

#define US 1000u
#define MS (1000u * 1000u)

/* ---- randomness --------------------------------------------------------- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *g)  /* splitmix64 */
{
    uint64_t z = (g->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t below(struct rng *g, uint64_t n)
{
    return n ? rng_next(g) % n : 0;
}

static uint64_t between(struct rng *g, uint64_t lo, uint64_t hi)  /* inclusive */
{
    return lo + below(g, hi - lo + 1);
}

/* errno read afresh: after a call that parked, the thread may run on
 * another worker, and a compiler may keep &errno from before (README). */
__attribute__((noinline)) static int errno_now(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

static void maybe_yield(struct rng *g)
{
    if (below(g, 8) == 0)
        green_yield();
}

/* ---- a round and its bookkeeping ---------------------------------------- */

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

static uint64_t the_seed;  /* the program's --seed */

/* A broken invariant: say which, where, and the seed, and stop at once (the
 * other threads may be stuck because of it). */
static void failf(struct round *r, const char *fmt, ...)
{
    static atomic_flag once = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&once))
        for (;;)
            pause();  /* another thread is already reporting */
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printf("stress: FAIL: %s (round %ld, %u workers, %s, seed %" PRIu64 ")\n", why, r->index,
           r->workers, r->mode, the_seed);
    fflush(stdout);
    _exit(1);
}

#define OP(r) atomic_fetch_add_explicit(&(r)->ops, 1, memory_order_relaxed)

static void expect_rc(struct round *r, int rc, int want, const char *what)
{
    OP(r);
    if (rc != want)
        failf(r, "%s returned %d (%s), expected %d", what, rc, strerror(rc), want);
}

/* t == NULL: detached.  Failure ends the program. */
static int spawn(struct round *r, green_t *t, void *(*fn)(void *), void *arg)
{
    OP(r);
    atomic_fetch_add(&r->started, 1);  /* before: the thread may finish first */
    int rc = green_spawn(t, fn, arg);
    if (rc != 0)
        failf(r, "green_spawn returned %d (%s)", rc, strerror(rc));
    return rc;
}

static void thread_done(struct round *r)
{
    atomic_fetch_add(&r->finished, 1);
}

static void join(struct round *r, green_t t, void **ret)
{
    expect_rc(r, green_join(t, ret), 0, "green_join");
}

/* Each thread of a component gets one of these. */
struct targ {
    void *comp;
    int id;
    uint64_t seed;
};

static struct targ *targs(void *comp, int n, struct rng *g)
{
    struct targ *a = calloc((size_t)n, sizeof *a);
    if (!a) {
        perror("calloc");
        exit(2);
    }
    for (int i = 0; i < n; i++)
        a[i] = (struct targ){comp, i, rng_next(g)};
    return a;
}

/* ---- msgs: channels, select, close --------------------------------------- */

#define MAXCH 4

struct msgs {
    struct round *r;
    int nch, nprod, nrecv, per_prod;
    green_chan_t *ch[MAXCH];
    green_wg_t producing;
    atomic_uchar *seen;           /* [nprod * per_prod] */
    atomic_long received, sum;
};

static void msgs_record(struct msgs *m, long v)
{
    long n = (long)m->nprod * m->per_prod;
    if (v < 0 || v >= n) {
        failf(m->r, "msgs: received %ld, never sent", v);
        return;
    }
    if (atomic_fetch_add(&m->seen[v], 1) != 0)
        failf(m->r, "msgs: message %ld delivered twice", v);
    atomic_fetch_add(&m->received, 1);
    atomic_fetch_add(&m->sum, v);
}

static void *msgs_producer(void *arg)
{
    struct targ *a = arg;
    struct msgs *m = a->comp;
    struct round *r = m->r;
    struct rng g = {a->seed};
    for (int seq = 0; seq < m->per_prod; seq++) {
        long v = (long)a->id * m->per_prod + seq;
        int rc;
        switch (below(&g, 3)) {
        case 0:
            expect_rc(r, green_chan_send(m->ch[below(&g, (uint64_t)m->nch)], &v), 0,
                      "green_chan_send");
            break;
        case 1: {
            green_chan_t *c = m->ch[below(&g, (uint64_t)m->nch)];
            do {
                OP(r);
                rc = green_chan_send_until(c, &v, green_now_ns() + between(&g, 50, 500) * US);
            } while (rc == ETIMEDOUT);
            expect_rc(r, rc, 0, "green_chan_send_until");
            break;
        }
        default: {
            green_chan_case_t cases[MAXCH];
            for (int i = 0; i < m->nch; i++)
                cases[i] = (green_chan_case_t){m->ch[i], GREEN_CHAN_SEND, &v, -1};
            size_t k = SIZE_MAX;
            expect_rc(r, green_select(cases, (size_t)m->nch, &k), 0, "green_select (send)");
            if (k >= (size_t)m->nch)
                failf(r, "msgs: select chose case %zu of %d", k, m->nch);
            else if (cases[k].err != 0)
                failf(r, "msgs: select send case err %d", cases[k].err);
        }
        }
        maybe_yield(&g);
    }
    free(a);
    thread_done(r);
    green_wg_done(&m->producing);  /* last touch of m */
    return NULL;
}

static void *msgs_receiver(void *arg)
{
    struct targ *a = arg;
    struct msgs *m = a->comp;
    struct round *r = m->r;
    struct rng g = {a->seed};
    long elems[MAXCH];
    green_chan_case_t cases[MAXCH];
    for (int i = 0; i < m->nch; i++)
        cases[i] = (green_chan_case_t){m->ch[i], GREEN_CHAN_RECV, &elems[i], -1};
    int open = m->nch;
    int mode = (int)below(&g, 4);
    while (open > 0) {
        size_t k = SIZE_MAX;
        int rc;
        OP(r);
        if (mode == 3) {  /* recv_until on one open channel */
            int i;
            do
                i = (int)below(&g, (uint64_t)m->nch);
            while (!cases[i].chan);
            long v = -1;
            rc = green_chan_recv_until(cases[i].chan, &v, green_now_ns() + below(&g, 1000) * US);
            if (rc == ETIMEDOUT)
                continue;
            if (rc == EPIPE) {
                if (v != 0)
                    failf(r, "msgs: recv at EPIPE left elem %ld, not zero", v);
                cases[i].chan = NULL;
                open--;
            } else if (rc == 0) {
                msgs_record(m, v);
            } else {
                failf(r, "msgs: green_chan_recv_until returned %d", rc);
                break;
            }
            continue;
        }
        if (mode == 0)
            rc = green_select(cases, (size_t)m->nch, &k);
        else if (mode == 1)
            rc = green_select_until(cases, (size_t)m->nch, &k,
                                    green_now_ns() + below(&g, 1000) * US);
        else
            rc = green_select_try(cases, (size_t)m->nch, &k);
        if ((mode == 1 && rc == ETIMEDOUT) || (mode == 2 && rc == EAGAIN)) {
            green_yield();
            continue;
        }
        if (rc != 0 || k >= (size_t)m->nch || !cases[k].chan) {
            failf(r, "msgs: select mode %d returned %d, chose %zu", mode, rc, k);
            break;
        }
        if (cases[k].err == EPIPE) {
            cases[k].chan = NULL;  /* closed and drained: a nil case from now on */
            open--;
        } else if (cases[k].err == 0) {
            msgs_record(m, elems[k]);
        } else {
            failf(r, "msgs: select recv case err %d", cases[k].err);
            break;
        }
        maybe_yield(&g);
    }
    free(a);
    thread_done(r);
    return NULL;
}

static void *msgs_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct msgs *m = calloc(1, sizeof *m);
    m->r = r;
    m->nch = (int)between(&g, 1, MAXCH);
    m->nprod = (int)between(&g, 1, 8);
    m->nrecv = (int)between(&g, 1, 8);
    m->per_prod = (int)between(&g, 50, 1500);
    long n = (long)m->nprod * m->per_prod;
    m->seen = calloc((size_t)n, sizeof *m->seen);
    static const size_t caps[] = {0, 1, 2, 16, 64};
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_create(&m->ch[i], sizeof(long), caps[below(&g, 5)]), 0,
                  "green_chan_create");
    green_wg_init(&m->producing);
    expect_rc(r, green_wg_add(&m->producing, m->nprod), 0, "green_wg_add");

    struct targ *ra = targs(m, m->nrecv, &g), *pa = targs(m, m->nprod, &g);
    green_t *rt = calloc((size_t)m->nrecv, sizeof *rt);
    green_t *pt = calloc((size_t)m->nprod, sizeof *pt);
    int *joinable = calloc((size_t)m->nprod, sizeof *joinable);
    for (int i = 0; i < m->nrecv; i++) {
        struct targ *a = malloc(sizeof *a);
        *a = ra[i];
        spawn(r, &rt[i], msgs_receiver, a);
    }
    for (int i = 0; i < m->nprod; i++) {
        struct targ *a = malloc(sizeof *a);
        *a = pa[i];
        int how = (int)below(&g, 3);  /* 0: spawn(NULL), 1: spawn+detach, 2: join later */
        spawn(r, how == 0 ? NULL : &pt[i], msgs_producer, a);
        if (how == 1)
            expect_rc(r, green_detach(pt[i]), 0, "green_detach");
        joinable[i] = how == 2;
    }
    expect_rc(r, green_wg_wait(&m->producing), 0, "green_wg_wait");
    for (int i = 0; i < m->nprod; i++)
        if (joinable[i])
            join(r, pt[i], NULL);
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_close(m->ch[i]), 0, "green_chan_close");
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_close(m->ch[i]), EPIPE, "green_chan_close (twice)");
    for (int i = 0; i < m->nrecv; i++)
        join(r, rt[i], NULL);
    if (atomic_load(&m->received) != n)
        failf(r, "msgs: %ld of %ld messages received", atomic_load(&m->received), n);
    if (atomic_load(&m->sum) != n * (n - 1) / 2)
        failf(r, "msgs: sum %ld, expected %ld", atomic_load(&m->sum), n * (n - 1) / 2);
    for (long v = 0; v < n; v++)
        if (atomic_load(&m->seen[v]) != 1) {
            failf(r, "msgs: message %ld received %d times", v, atomic_load(&m->seen[v]));
            break;
        }
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_destroy(m->ch[i]), 0, "green_chan_destroy");
    expect_rc(r, green_wg_destroy(&m->producing), 0, "green_wg_destroy");
    free(m->seen);
    free(m);
    free(ra);
    free(pa);
    free(rt);
    free(pt);
    free(joinable);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- bank: mutex ---------------------------------------------------------- */

struct bank {
    struct round *r;
    int nacc, nthreads, per_thread;
    long acct[16];            /* guarded by m */
    long total;
    green_mutex_t m;
    atomic_int inside;        /* 1 while someone is in the section */
    atomic_int stop;
};

static int bank_lock(struct bank *b, struct rng *g)
{
    struct round *r = b->r;
    int rc;
    switch (below(g, 3)) {
    case 0:
        OP(r);
        rc = green_mutex_lock(&b->m);
        break;
    case 1:
        do {
            OP(r);
            rc = green_mutex_trylock(&b->m);
            if (rc == EBUSY)
                green_yield();
        } while (rc == EBUSY);
        break;
    default:
        do {
            OP(r);
            rc = green_mutex_lock_until(&b->m, green_now_ns() + below(g, 300) * US);
        } while (rc == ETIMEDOUT);
    }
    if (rc != 0) {
        failf(r, "bank: locking returned %d", rc);
        return rc;
    }
    if (atomic_exchange(&b->inside, 1) != 0)
        failf(r, "bank: two threads inside the mutex");
    return 0;
}

static void bank_unlock(struct bank *b)
{
    atomic_store(&b->inside, 0);
    expect_rc(b->r, green_mutex_unlock(&b->m), 0, "green_mutex_unlock");
}

static void *bank_teller(void *arg)
{
    struct targ *a = arg;
    struct bank *b = a->comp;
    struct rng g = {a->seed};
    for (int i = 0; i < b->per_thread; i++) {
        if (bank_lock(b, &g) != 0)
            break;
        int from = (int)below(&g, (uint64_t)b->nacc), to = (int)below(&g, (uint64_t)b->nacc);
        long amount = (long)below(&g, 100);
        if (b->acct[from] >= amount) {
            b->acct[from] -= amount;
            maybe_yield(&g);  /* money in flight, lock held */
            b->acct[to] += amount;
        }
        bank_unlock(b);
        maybe_yield(&g);
    }
    thread_done(b->r);
    return NULL;
}

static void *bank_auditor(void *arg)
{
    struct targ *a = arg;
    struct bank *b = a->comp;
    struct rng g = {a->seed};
    while (!atomic_load(&b->stop)) {
        if (bank_lock(b, &g) != 0)
            break;
        long sum = 0;
        for (int i = 0; i < b->nacc; i++)
            sum += b->acct[i];
        if (sum != b->total)
            failf(b->r, "bank: audit found %ld, total is %ld", sum, b->total);
        bank_unlock(b);
        OP(b->r);
        green_sleep_ns(below(&g, 200) * US);
    }
    thread_done(b->r);
    return NULL;
}

static void *bank_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct bank *b = calloc(1, sizeof *b);
    b->r = r;
    b->nacc = (int)between(&g, 2, 16);
    b->nthreads = (int)between(&g, 2, 16);
    b->per_thread = (int)between(&g, 100, 2000);
    for (int i = 0; i < b->nacc; i++)
        b->total += b->acct[i] = 1000;
    expect_rc(r, green_mutex_init(&b->m), 0, "green_mutex_init");
    struct targ *ta = targs(b, b->nthreads + 1, &g);
    green_t *t = calloc((unsigned)b->nthreads + 1u, sizeof *t);
    for (int i = 0; i < b->nthreads; i++)
        spawn(r, &t[i], bank_teller, &ta[i]);
    green_t auditor;
    spawn(r, &auditor, bank_auditor, &ta[b->nthreads]);
    for (int i = 0; i < b->nthreads; i++)
        join(r, t[i], NULL);
    atomic_store(&b->stop, 1);
    join(r, auditor, NULL);
    long sum = 0;
    for (int i = 0; i < b->nacc; i++)
        sum += b->acct[i];
    if (sum != b->total)
        failf(r, "bank: %ld at the end, total is %ld", sum, b->total);
    expect_rc(r, green_mutex_destroy(&b->m), 0, "green_mutex_destroy");
    free(t);
    free(ta);
    free(b);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- condq: mutex + conds ------------------------------------------------- */

struct condq {
    struct round *r;
    green_mutex_t m;
    green_cond_t not_full, not_empty;
    long q[8];
    int cap, head, len, producers_left;   /* guarded by m */
    int nprod, ncons, per_prod;
    atomic_long consumed, sum;
};

static void condq_wait(struct condq *c, green_cond_t *cv, struct rng *g)
{
    OP(c->r);
    int rc = below(g, 2) ? green_cond_wait(cv, &c->m)
                         : green_cond_wait_until(cv, &c->m, green_now_ns() + below(g, 500) * US);
    if (rc != 0 && rc != ETIMEDOUT)
        failf(c->r, "condq: cond wait returned %d", rc);
}

static void condq_wake(struct condq *c, green_cond_t *cv, struct rng *g)
{
    expect_rc(c->r, below(g, 4) ? green_cond_signal(cv) : green_cond_broadcast(cv), 0,
              "green_cond_signal/broadcast");
}

static void *condq_producer(void *arg)
{
    struct targ *a = arg;
    struct condq *c = a->comp;
    struct rng g = {a->seed};
    for (int i = 0; i < c->per_prod; i++) {
        expect_rc(c->r, green_mutex_lock(&c->m), 0, "green_mutex_lock");
        while (c->len == c->cap)
            condq_wait(c, &c->not_full, &g);
        c->q[(c->head + c->len) % c->cap] = (long)a->id * c->per_prod + i;
        c->len++;
        condq_wake(c, &c->not_empty, &g);
        expect_rc(c->r, green_mutex_unlock(&c->m), 0, "green_mutex_unlock");
        maybe_yield(&g);
    }
    expect_rc(c->r, green_mutex_lock(&c->m), 0, "green_mutex_lock");
    if (--c->producers_left == 0)
        expect_rc(c->r, green_cond_broadcast(&c->not_empty), 0, "green_cond_broadcast");
    expect_rc(c->r, green_mutex_unlock(&c->m), 0, "green_mutex_unlock");
    thread_done(c->r);
    return NULL;
}

static void *condq_consumer(void *arg)
{
    struct targ *a = arg;
    struct condq *c = a->comp;
    struct rng g = {a->seed};
    for (;;) {
        expect_rc(c->r, green_mutex_lock(&c->m), 0, "green_mutex_lock");
        while (c->len == 0 && c->producers_left > 0)
            condq_wait(c, &c->not_empty, &g);
        if (c->len == 0) {
            expect_rc(c->r, green_mutex_unlock(&c->m), 0, "green_mutex_unlock");
            break;
        }
        long v = c->q[c->head];
        c->head = (c->head + 1) % c->cap;
        c->len--;
        condq_wake(c, &c->not_full, &g);
        expect_rc(c->r, green_mutex_unlock(&c->m), 0, "green_mutex_unlock");
        atomic_fetch_add(&c->consumed, 1);
        atomic_fetch_add(&c->sum, v);
        maybe_yield(&g);
    }
    thread_done(c->r);
    return NULL;
}

static void *condq_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct condq *c = calloc(1, sizeof *c);
    c->r = r;
    c->cap = (int)between(&g, 1, 8);
    c->nprod = (int)between(&g, 1, 6);
    c->ncons = (int)between(&g, 1, 6);
    c->per_prod = (int)between(&g, 100, 3000);
    c->producers_left = c->nprod;
    struct targ *ta = targs(c, c->nprod + c->ncons, &g);
    green_t *t = calloc((size_t)(c->nprod + c->ncons), sizeof *t);
    int n = c->nprod + c->ncons;
    for (int i = 0; i < n; i++) {
        ta[i].id = i < c->nprod ? i : i - c->nprod;
        spawn(r, &t[i], i < c->nprod ? condq_producer : condq_consumer, &ta[i]);
    }
    for (int i = 0; i < n; i++)
        join(r, t[i], NULL);
    long total = (long)c->nprod * c->per_prod;
    if (atomic_load(&c->consumed) != total)
        failf(r, "condq: %ld of %ld items consumed", atomic_load(&c->consumed), total);
    if (atomic_load(&c->sum) != total * (total - 1) / 2)
        failf(r, "condq: sum %ld, expected %ld", atomic_load(&c->sum), total * (total - 1) / 2);
    expect_rc(r, green_cond_destroy(&c->not_full), 0, "green_cond_destroy");
    expect_rc(r, green_cond_destroy(&c->not_empty), 0, "green_cond_destroy");
    expect_rc(r, green_mutex_destroy(&c->m), 0, "green_mutex_destroy");
    free(t);
    free(ta);
    free(c);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- tree: spawn, join, detach, wait group -------------------------------- */

struct tree {
    struct round *r;
    green_wg_t detached;       /* one per detached node still running */
    atomic_long budget;        /* nodes that may still be created */
    atomic_long created;       /* nodes spawned */
    atomic_long detached_sum;  /* nodes counted by detached subtrees */
};

struct node {
    struct tree *tr;
    int depth, detached;
    uint64_t seed;
};

static void *tree_node(void *arg)
{
    struct node *me = arg;
    struct tree *tr = me->tr;
    struct round *r = tr->r;
    struct rng g = {me->seed};
    long count = 1;
    int kids = me->depth < 6 ? (int)below(&g, 5) : 0;
    green_t t[4];
    int joinable[4] = {0};
    for (int i = 0; i < kids && i < 4; i++) {
        if (atomic_fetch_sub(&tr->budget, 1) <= 0)
            break;
        struct node *kid = malloc(sizeof *kid);
        int detached = below(&g, 3) == 0;
        int how = (int)below(&g, 2);  /* detached: spawn(NULL) or spawn+detach */
        *kid = (struct node){tr, me->depth + 1, detached, rng_next(&g)};
        if (detached)
            expect_rc(r, green_wg_add(&tr->detached, 1), 0, "green_wg_add");
        atomic_fetch_add(&tr->created, 1);
        spawn(r, detached && how == 0 ? NULL : &t[i], tree_node, kid);  /* kid is the child's now */
        if (detached && how == 1)  /* it may have finished: the handle stays valid */
            expect_rc(r, green_detach(t[i]), 0, "green_detach");
        joinable[i] = !detached;
        maybe_yield(&g);
    }
    for (int i = 0; i < 4; i++) {
        if (!joinable[i])
            continue;
        void *ret = NULL;
        int rc;
        if (below(&g, 2)) {
            do {
                OP(r);
                rc = green_join_until(t[i], &ret, green_now_ns() + below(&g, 200) * US);
            } while (rc == ETIMEDOUT);
            expect_rc(r, rc, 0, "green_join_until");
        } else {
            join(r, t[i], &ret);
        }
        count += (long)(intptr_t)ret;
    }
    int detached = me->detached;
    free(me);
    thread_done(r);
    if (detached) {
        atomic_fetch_add(&tr->detached_sum, count);
        green_wg_done(&tr->detached);  /* last touch of tr */
        return NULL;
    }
    return (void *)(intptr_t)count;
}

static void *tree_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct tree *tr = calloc(1, sizeof *tr);
    tr->r = r;
    atomic_store(&tr->budget, (long)between(&g, 20, 600));
    struct node *root = malloc(sizeof *root);
    *root = (struct node){tr, 0, 0, rng_next(&g)};
    atomic_store(&tr->created, 1);
    green_t t;
    void *ret = NULL;
    spawn(r, &t, tree_node, root);
    join(r, t, &ret);
    expect_rc(r, green_wg_wait(&tr->detached), 0, "green_wg_wait");
    long counted = (long)(intptr_t)ret + atomic_load(&tr->detached_sum);
    if (counted != atomic_load(&tr->created))
        failf(r, "tree: %ld nodes created, %ld counted", atomic_load(&tr->created), counted);
    free(tr);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- timers: sleeps and deadlines ----------------------------------------- */

struct timers {
    struct round *r;
    green_chan_t *never;    /* nobody sends */
    green_wg_t never_done;  /* counter 1 until the end */
    green_mutex_t held;     /* held by the driver throughout */
    int iterations;
};

static void check_not_early(struct round *r, uint64_t deadline, const char *what)
{
    uint64_t now = green_now_ns();
    if (now < deadline)
        failf(r, "timers: %s returned %" PRIu64 " ns before its deadline", what, deadline - now);
}

static void *timers_thread(void *arg)
{
    struct targ *a = arg;
    struct timers *tm = a->comp;
    struct round *r = tm->r;
    struct rng g = {a->seed};
    for (int i = 0; i < tm->iterations; i++) {
        uint64_t ns = below(&g, 1500) * US;
        uint64_t d = green_now_ns() + ns;
        long v;
        switch (below(&g, 5)) {
        case 0:
            expect_rc(r, green_sleep_ns(ns), 0, "green_sleep_ns");
            check_not_early(r, d, "green_sleep_ns");
            break;
        case 1:
            expect_rc(r, green_sleep_until(d), 0, "green_sleep_until");
            check_not_early(r, d, "green_sleep_until");
            break;
        case 2:
            expect_rc(r, green_chan_recv_until(tm->never, &v, d), ETIMEDOUT,
                      "green_chan_recv_until");
            check_not_early(r, d, "green_chan_recv_until");
            break;
        case 3:
            expect_rc(r, green_wg_wait_until(&tm->never_done, d), ETIMEDOUT,
                      "green_wg_wait_until");
            check_not_early(r, d, "green_wg_wait_until");
            break;
        default:
            expect_rc(r, green_mutex_lock_until(&tm->held, d), ETIMEDOUT,
                      "green_mutex_lock_until");
            check_not_early(r, d, "green_mutex_lock_until");
        }
    }
    thread_done(r);
    return NULL;
}

static void *timers_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct timers *tm = calloc(1, sizeof *tm);
    tm->r = r;
    tm->iterations = (int)between(&g, 5, 40);
    int n = (int)between(&g, 1, 16);
    expect_rc(r, green_chan_create(&tm->never, sizeof(long), below(&g, 2)), 0,
              "green_chan_create");
    expect_rc(r, green_wg_add(&tm->never_done, 1), 0, "green_wg_add");
    expect_rc(r, green_mutex_lock(&tm->held), 0, "green_mutex_lock");
    struct targ *ta = targs(tm, n, &g);
    green_t *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        spawn(r, &t[i], timers_thread, &ta[i]);
    for (int i = 0; i < n; i++)
        join(r, t[i], NULL);
    expect_rc(r, green_mutex_unlock(&tm->held), 0, "green_mutex_unlock");
    expect_rc(r, green_wg_done(&tm->never_done), 0, "green_wg_done");
    expect_rc(r, green_chan_destroy(tm->never), 0, "green_chan_destroy");
    free(t);
    free(ta);
    free(tm);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- nopre: nopreempt sections and GREEN_NOPREEMPT functions ------------- */

/* Each worker has an owner slot.  A thread inside a nopreempt section (or a
 * GREEN_NOPREEMPT function) claims its worker's slot, spins without calls
 * for a random while -- long enough for preemption signals and budgets to
 * come due -- and releases it.  Had it been switched out inside, another
 * thread of the same worker could claim the slot meanwhile: the claim or
 * the release would fail. */
#define NOPRE_WORKERS 64

struct nopre {
    struct round *r;
    int iterations;
    _Atomic uint64_t owner[NOPRE_WORKERS];
    atomic_long sections;
};

/* No libgreen call in here: in a GREEN_NOPREEMPT function such a call is a
 * switch point like any other (README). */
static bool nopre_hold(_Atomic uint64_t *slot, uint64_t me, unsigned spins)
{
    uint64_t none = 0;
    if (!atomic_compare_exchange_strong(slot, &none, me))
        return false;
    for (volatile unsigned i = 0; i < spins; i++)
        ;
    return atomic_exchange(slot, 0) == me;
}

GREEN_NOPREEMPT static bool nopre_function(_Atomic uint64_t *slot, uint64_t me, unsigned spins)
{
    return nopre_hold(slot, me, spins);
}

static void *nopre_thread(void *arg)
{
    struct targ *a = arg;
    struct nopre *np = a->comp;
    struct round *r = np->r;
    struct rng g = {a->seed};
    uint64_t me = green_id(green_self());
    for (int i = 0; i < np->iterations; i++) {
        unsigned spins = (unsigned)below(&g, 50000);
        bool ok;
        int w;
        OP(r);
        if (below(&g, 2)) {
            green_nopreempt_begin();
            w = green_worker_index();
            ok = nopre_hold(&np->owner[w], me, spins) && green_worker_index() == w;
            green_nopreempt_end();
        } else {
            /* A preemption between here and the call leaves the thread on
             * this worker (a preempted thread resumes where it was). */
            w = green_worker_index();
            ok = nopre_function(&np->owner[w], me, spins);
        }
        if (!ok)
            failf(r, "nopre: thread %" PRIu64 " was switched out inside a nopreempt %s",
                  me, "section or function");
        atomic_fetch_add(&np->sections, 1);
        maybe_yield(&g);
    }
    thread_done(r);
    return NULL;
}

static void *nopre_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct nopre *np = calloc(1, sizeof *np);
    np->r = r;
    np->iterations = (int)between(&g, 10, 200);
    int n = (int)between(&g, 2, 12);
    struct targ *ta = targs(np, n, &g);
    green_t *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        spawn(r, &t[i], nopre_thread, &ta[i]);
    for (int i = 0; i < n; i++)
        join(r, t[i], NULL);
    if (atomic_load(&np->sections) != (long)n * np->iterations)
        failf(r, "nopre: %ld sections, expected %ld", atomic_load(&np->sections),
              (long)n * np->iterations);
    free(t);
    free(ta);
    free(np);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- fdio: pipes through the netpoller ----------------------------------- */

/* Writers put numbered 4-byte records into non-blocking pipes (atomic
 * writes: a pipe never splits one), waiting with green_fd_wait when full,
 * sometimes with a short deadline that may pass; one reader per pipe reads
 * until EOF, waiting when empty.  Every record arrives exactly once.  The
 * last writer of a pipe closes its end with green_fd_close. */
#define FDIO_PIPES 4

struct fdio {
    struct round *r;
    int npipes, nwriters, per_writer;
    int fd[FDIO_PIPES][2];
    atomic_int writers_left[FDIO_PIPES];
    atomic_uchar *seen;          /* [nwriters * per_writer] */
    atomic_long received;
};

static int fdio_wait(struct round *r, int fd, int events, struct rng *g)
{
    uint64_t deadline = below(g, 4) == 0 ? green_now_ns() + below(g, 200) * US : GREEN_FOREVER;
    OP(r);
    int rc = green_fd_wait(fd, events, deadline);
    if (rc != 0 && rc != ETIMEDOUT)
        failf(r, "fdio: green_fd_wait returned %d (%s)", rc, strerror(rc));
    return rc;
}

static void *fdio_writer(void *arg)
{
    struct targ *a = arg;
    struct fdio *f = a->comp;
    struct round *r = f->r;
    struct rng g = {a->seed};
    int p = a->id % f->npipes;
    for (int i = 0; i < f->per_writer; i++) {
        uint32_t v = (uint32_t)(a->id * f->per_writer + i);
        for (;;) {
            OP(r);
            ssize_t n = write(f->fd[p][1], &v, sizeof v);
            if (n == sizeof v)
                break;
            int e = errno_now();
            if (n >= 0 || e != EAGAIN)
                failf(r, "fdio: write returned %zd (%s)", n, n < 0 ? strerror(e) : "short");
            fdio_wait(r, f->fd[p][1], POLLOUT, &g);
        }
        maybe_yield(&g);
    }
    if (atomic_fetch_sub(&f->writers_left[p], 1) == 1)
        expect_rc(r, green_fd_close(f->fd[p][1]), 0, "green_fd_close");
    thread_done(r);
    return NULL;
}

static void *fdio_reader(void *arg)
{
    struct targ *a = arg;
    struct fdio *f = a->comp;
    struct round *r = f->r;
    struct rng g = {a->seed};
    int fd = f->fd[a->id][0];
    uint32_t buf[64];
    size_t total = (size_t)f->nwriters * (size_t)f->per_writer;
    for (;;) {
        OP(r);
        ssize_t n = read(fd, buf, (size_t)between(&g, 1, 64) * sizeof buf[0]);
        if (n == 0)
            break;
        if (n < 0) {
            int e = errno_now();
            if (e != EAGAIN)
                failf(r, "fdio: read: %s", strerror(e));
            fdio_wait(r, fd, POLLIN, &g);
            continue;
        }
        if (n % sizeof buf[0])
            failf(r, "fdio: read %zd bytes, not whole records", n);
        for (size_t i = 0; i < (size_t)n / sizeof buf[0]; i++) {
            if (buf[i] >= total || atomic_exchange(&f->seen[buf[i]], 1))
                failf(r, "fdio: record %u out of range or received twice", buf[i]);
            atomic_fetch_add(&f->received, 1);
        }
    }
    expect_rc(r, green_fd_close(fd), 0, "green_fd_close");
    thread_done(r);
    return NULL;
}

static void *fdio_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct fdio *f = calloc(1, sizeof *f);
    f->r = r;
    f->npipes = (int)between(&g, 1, FDIO_PIPES);
    f->nwriters = f->npipes * (int)between(&g, 1, 4);
    f->per_writer = (int)between(&g, 1, 2000);
    f->seen = calloc((size_t)f->nwriters * (size_t)f->per_writer, 1);
    for (int p = 0; p < f->npipes; p++) {
        OP(r);
        if (pipe2(f->fd[p], O_NONBLOCK | O_CLOEXEC) != 0)
            failf(r, "fdio: pipe2: %s", strerror(errno));
        atomic_store(&f->writers_left[p], f->nwriters / f->npipes);
    }
    struct targ *wa = targs(f, f->nwriters, &g), *ra = targs(f, f->npipes, &g);
    green_t *t = calloc((size_t)(f->nwriters + f->npipes), sizeof *t);
    for (int i = 0; i < f->npipes; i++)
        spawn(r, &t[i], fdio_reader, &ra[i]);
    for (int i = 0; i < f->nwriters; i++)
        spawn(r, &t[f->npipes + i], fdio_writer, &wa[i]);
    for (int i = 0; i < f->nwriters + f->npipes; i++)
        join(r, t[i], NULL);
    if (atomic_load(&f->received) != (long)f->nwriters * f->per_writer)
        failf(r, "fdio: %ld records received, %ld sent", atomic_load(&f->received),
              (long)f->nwriters * f->per_writer);
    free(t);
    free(wa);
    free(ra);
    free(f->seen);
    free(f);
    free(da);
    thread_done(r);
    return NULL;
}

/* ---- rounds --------------------------------------------------------------- */

static void *(*const drivers[])(void *) = {msgs_driver, bank_driver, condq_driver,
                                           tree_driver, timers_driver, nopre_driver,
                                           fdio_driver};
#define FDIO_DRIVER 6  /* not in deterministic rounds: the kernel decides when
                        * a pipe has room, not the seed */
#define NDRIVERS (sizeof drivers / sizeof drivers[0])

static void *round_main(void *arg)
{
    struct round *r = arg;
    struct rng g = {r->seed};
    unsigned mask = 0;
    while (!mask) {
        mask = (unsigned)below(&g, 1u << NDRIVERS);
        if (r->det)
            mask &= ~(1u << FDIO_DRIVER);
    }
    green_t t[NDRIVERS];
    for (size_t i = 0; i < NDRIVERS; i++) {
        if (!(mask & (1u << i)))
            continue;
        struct targ *a = malloc(sizeof *a);
        *a = (struct targ){r, (int)i, rng_next(&g)};
        spawn(r, &t[i], drivers[i], a);
    }
    for (size_t i = 0; i < NDRIVERS; i++)
        if (mask & (1u << i))
            join(r, t[i], NULL);
    return NULL;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The watchdog: a round that runs over hang_seconds (a minute; more under
 * Valgrind) is reported as hung. */
static long hang_seconds = 60;
static atomic_uint_fast64_t round_started_ns;
static char watched_mode[64];  /* the round's r->mode, for the report */
static atomic_long watched_round;

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        sleep(1);
        uint64_t t0 = atomic_load(&round_started_ns);
        if (t0 && mono_ns() - t0 > (uint64_t)hang_seconds * 1000 * MS) {
            printf("stress: FAIL: round %ld (%s) hung for over %ld s (seed %" PRIu64 ")\n",
                   atomic_load(&watched_round), watched_mode, hang_seconds, the_seed);
            fflush(stdout);
            _exit(1);
        }
    }
    return NULL;
}

/* What the run did, beyond the invariants: the runtime's counters and the
 * peak memory. */
static void report(long ops, double secs)
{
    green_stats_t st;
    green_stats(&st);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("stress: %.0f operations/s; %" PRIu64 " preemption signals sent, %" PRIu64
           " preemptions, %" PRIu64 " budget yields, %" PRIu64 " refused preemptions taken later\n",
           ops / (secs > 0 ? secs : 1), st.signals_sent, st.preemptions, st.budget_yields,
           st.deferred_taken);
    printf("stress: refusals: %" PRIu64 " in the runtime, %" PRIu64 " nopreempt, %" PRIu64
           " unsafe pc, %" PRIu64 " unsafe caller frame, %" PRIu64 " unwind, %" PRIu64
           " stack headroom, %" PRIu64 " budget; %" PRIu64 " foreign signals\n",
           st.refused_runtime, st.refused_nopreempt, st.refused_unsafe_pc,
           st.refused_unsafe_frame, st.refused_unwind, st.refused_headroom, st.budget_refused,
           st.foreign_signals);
    printf("stress: peak RSS %ld MiB\n", ru.ru_maxrss / 1024);
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--seconds S] [--seed N] [--workers W] [--hang S]\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    double seconds = 10;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ mono_ns();
    long workers = -1;  /* -1: chosen per round, 1..4 */
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(argv[0]);
        char *end;
        if (!strcmp(argv[i], "--seconds")) {
            seconds = strtod(argv[++i], &end);
            if (*end || seconds < 0)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--seed")) {
            seed = strtoull(argv[++i], &end, 0);
            if (*end)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--hang")) {
            hang_seconds = strtol(argv[++i], &end, 0);
            if (*end || hang_seconds < 1)
                usage(argv[0]);
        } else if (!strcmp(argv[i], "--workers")) {
            workers = strtol(argv[++i], &end, 0);
            if (*end || workers < 0)
                usage(argv[0]);
        } else {
            usage(argv[0]);
        }
    }
    the_seed = seed;
    printf("stress: seed %" PRIu64 "\n", seed);
    fflush(stdout);

    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog, NULL) != 0) {
        perror("pthread_create");
        return 2;
    }
    pthread_detach(wd);

    struct rng g = {seed};
    uint64_t start = mono_ns(), end = start + (uint64_t)(seconds * 1e9);
    long rounds = 0, ops = 0, threads = 0;
    do {
        struct round *r = calloc(1, sizeof *r);
        r->index = rounds;
        r->seed = rng_next(&g);
        green_config_t cfg;
        int rc = green_config_init(&cfg);
        if (rc != 0) {
            printf("stress: FAIL: green_config_init returned %d (seed %" PRIu64 ")\n", rc, seed);
            return 1;
        }
        unsigned w = workers >= 0 ? (unsigned)workers : (unsigned)between(&g, 1, 4);
        if (!getenv("GREEN_PREEMPT"))
            cfg.preempt = (int)below(&g, 4);
        if (!getenv("GREEN_BUDGET"))
            cfg.budget = (unsigned)(below(&g, 4) == 0 ? between(&g, 1, 50) : between(&g, 100, 4000));
        if (!getenv("GREEN_QUANTUM_US"))  /* the aggressive 50 us in a quarter */
            cfg.quantum_us = (unsigned)(below(&g, 4) == 0 ? 50 : between(&g, 100, 2000));
        if (!getenv("GREEN_DETERMINISTIC") && workers < 0 && below(&g, 8) == 0) {
            cfg.deterministic = GREEN_DETERMINISTIC_ON;
            w = 1;
        }
        r->det = cfg.deterministic != GREEN_DETERMINISTIC_OFF;
        static const char *const modes[] = { "off", "signal", "budget", "both" };
        snprintf(r->mode, sizeof r->mode, "%s, quantum %u us, budget %u%s",
                 cfg.preempt >= 0 && cfg.preempt < 4 ? modes[cfg.preempt] : "?",
                 cfg.quantum_us, cfg.budget, cfg.deterministic ? ", deterministic" : "");
        cfg.workers = w;
        r->workers = w;
        cfg.seed = r->seed;
        memcpy(watched_mode, r->mode, sizeof watched_mode);
        atomic_store(&watched_round, rounds);
        atomic_store(&round_started_ns, mono_ns());
        rc = green_run(round_main, r, &cfg, NULL);
        atomic_store(&round_started_ns, 0);
        if (rc != 0)
            failf(r, "green_run returned %d (%s)", rc, strerror(rc));
        else if (atomic_load(&r->started) != atomic_load(&r->finished))
            failf(r, "%ld threads started, %ld finished: threads lost",
                  atomic_load(&r->started), atomic_load(&r->finished));
        rounds++;
        ops += atomic_load(&r->ops);
        threads += atomic_load(&r->started);
        free(r);
    } while (mono_ns() < end);
    double secs = (double)(mono_ns() - start) / 1e9;
    printf("stress: ok: %ld rounds, %ld operations, %ld threads in %.1f s (seed %" PRIu64 ")\n",
           rounds, ops, threads, secs, seed);
    report(ops, secs);
    return 0;
}
