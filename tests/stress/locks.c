/* The stress program's bank and condq components: mutexes and conditions (stress.c says what it checks). */
#include "stress.h"

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

void *bank_driver(void *arg)
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

void *condq_driver(void *arg)
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

