/* The stress program's plocks component: the program's own pthread locks
 * shared by green threads and plain OS threads (sched/pthread.c).
 *
 * A bank of accounts under a pthread mutex (normal, recursive or
 * error-checking, drawn per round), moved between by green tellers and
 * plain-thread tellers, some of them holding the mutex across a sleep or a
 * yield; an auditor that reads under a rwlock's read side while tellers
 * take its write side; and a queue under a pthread condition that a plain
 * thread fills and green threads drain.  Checks: the money is conserved,
 * nobody is inside the mutex with another (also on one OS thread), a holder
 * does not change workers, every item is taken exactly once, and libc's
 * error codes hold for the checked kinds.  Not in deterministic rounds:
 * the plain threads run when the kernel says. */
#define _GNU_SOURCE
#include "stress.h"

#include <pthread.h>
#include <unistd.h>

#define ITEMS 400

struct plocks {
    struct round *r;
    pthread_mutex_t m;
    int kind;
    pthread_rwlock_t rw;
    long acct[8];
    long total;
    atomic_int inside;
    int per_thread;
    /* the queue */
    pthread_mutex_t qm;
    pthread_cond_t qc;
    int q[16], qhead, qlen;
    long taken_sum;
    atomic_int taken;
};

static void lock_bank(struct plocks *p, struct rng *g)
{
    OP(p->r);
    int rc = pthread_mutex_lock(&p->m);
    if (rc != 0)
        failf(p->r, "plocks: pthread_mutex_lock returned %d", rc);
    if (p->kind == PTHREAD_MUTEX_RECURSIVE && below(g, 4) == 0) {
        expect_rc(p->r, pthread_mutex_lock(&p->m), 0, "recursive relock");
        expect_rc(p->r, pthread_mutex_unlock(&p->m), 0, "recursive unlock");
    }
    if (p->kind == PTHREAD_MUTEX_ERRORCHECK && below(g, 8) == 0)
        expect_rc(p->r, pthread_mutex_lock(&p->m), EDEADLK, "errorcheck relock");
    if (atomic_exchange(&p->inside, 1) != 0)
        failf(p->r, "plocks: two threads inside the pthread mutex");
}

static void unlock_bank(struct plocks *p)
{
    atomic_store(&p->inside, 0);
    expect_rc(p->r, pthread_mutex_unlock(&p->m), 0, "pthread_mutex_unlock");
}

static void transfer(struct plocks *p, struct rng *g, bool green)
{
    expect_rc(p->r, pthread_rwlock_wrlock(&p->rw), 0, "pthread_rwlock_wrlock");
    lock_bank(p, g);
    int where = green ? green_worker_index() : -1;
    int from = (int)below(g, 8), to = (int)below(g, 8);
    long amount = (long)below(g, 50);
    if (p->acct[from] >= amount) {
        p->acct[from] -= amount;
        if (green && below(g, 16) == 0)
            green_sleep_ns(below(g, 100) * US);     /* parks, holding both */
        else if (green)
            maybe_yield(g);
        p->acct[to] += amount;
    }
    if (green && green_worker_index() != where)
        failf(p->r, "plocks: a holder moved from worker %d to %d", where, green_worker_index());
    unlock_bank(p);
    expect_rc(p->r, pthread_rwlock_unlock(&p->rw), 0, "pthread_rwlock_unlock");
}

static void audit(struct plocks *p)
{
    OP(p->r);
    expect_rc(p->r, pthread_rwlock_rdlock(&p->rw), 0, "pthread_rwlock_rdlock");
    long sum = 0;
    for (int i = 0; i < 8; i++)
        sum += __atomic_load_n(&p->acct[i], __ATOMIC_RELAXED);
    if (sum != p->total)
        failf(p->r, "plocks: audit under the read lock found %ld, total is %ld", sum, p->total);
    expect_rc(p->r, pthread_rwlock_unlock(&p->rw), 0, "pthread_rwlock_unlock");
}

/* A teller's rounds: audits and transfers; a plain thread's pause is a
 * short usleep, a green thread's a yield. */
static void teller_rounds(struct targ *a, bool green)
{
    struct plocks *p = a->comp;
    struct rng g = {a->seed};
    for (int i = 0; i < p->per_thread; i++) {
        if (below(&g, 4) == 0)
            audit(p);
        else
            transfer(p, &g, green);
        if (green)
            maybe_yield(&g);
        else if (below(&g, 16) == 0)
            usleep(50);
    }
}

static void *green_teller(void *arg)
{
    struct targ *a = arg;
    teller_rounds(a, true);
    thread_done(((struct plocks *)a->comp)->r);
    return NULL;
}

static void *os_teller(void *arg)
{
    teller_rounds(arg, false);
    return NULL;
}

static void *os_producer(void *arg)
{
    struct plocks *p = arg;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&p->qm);
        while (p->qlen == 16)
            pthread_cond_wait(&p->qc, &p->qm);
        p->q[(p->qhead + p->qlen++) % 16] = i;
        pthread_cond_broadcast(&p->qc);
        pthread_mutex_unlock(&p->qm);
    }
    return NULL;
}

static void *green_consumer(void *arg)
{
    struct targ *a = arg;
    struct plocks *p = a->comp;
    for (;;) {
        OP(p->r);
        pthread_mutex_lock(&p->qm);
        while (p->qlen == 0 && atomic_load(&p->taken) < ITEMS)
            pthread_cond_wait(&p->qc, &p->qm);
        if (p->qlen == 0) {
            pthread_mutex_unlock(&p->qm);
            break;
        }
        int v = p->q[p->qhead];
        p->qhead = (p->qhead + 1) % 16;
        p->qlen--;
        p->taken_sum += v;
        atomic_fetch_add(&p->taken, 1);
        pthread_cond_broadcast(&p->qc);  /* the producer: room; the last: nothing left */
        pthread_mutex_unlock(&p->qm);
    }
    thread_done(p->r);
    return NULL;
}

void *plocks_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct plocks *p = calloc(1, sizeof *p);
    p->r = r;
    static const int kinds[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE,
                                PTHREAD_MUTEX_ERRORCHECK};
    p->kind = kinds[below(&g, 3)];
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, p->kind);
    pthread_mutex_init(&p->m, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_rwlock_init(&p->rw, NULL);
    pthread_mutex_init(&p->qm, NULL);
    pthread_cond_init(&p->qc, NULL);
    for (int i = 0; i < 8; i++)
        p->total += p->acct[i] = 500;
    p->per_thread = (int)between(&g, 50, 400);
    int ngreen = (int)between(&g, 2, 8), nos = (int)between(&g, 1, 2), ncons = (int)between(&g, 1, 4);

    struct targ *ta = targs(p, ngreen + nos + ncons, &g);
    pthread_t os[2], prod;
    for (int i = 0; i < nos; i++)
        if (pthread_create(&os[i], NULL, os_teller, &ta[ngreen + i]) != 0)
            failf(r, "plocks: pthread_create failed");
    if (pthread_create(&prod, NULL, os_producer, p) != 0)
        failf(r, "plocks: pthread_create failed");
    green_t *t = calloc((size_t)(ngreen + ncons), sizeof *t);
    for (int i = 0; i < ngreen; i++)
        spawn(r, &t[i], green_teller, &ta[i]);
    for (int i = 0; i < ncons; i++)
        spawn(r, &t[ngreen + i], green_consumer, &ta[ngreen + nos + i]);
    for (int i = 0; i < ngreen + ncons; i++)
        join(r, t[i], NULL);
    /* pthread_join on a green thread parks. */
    for (int i = 0; i < nos; i++)
        expect_rc(r, pthread_join(os[i], NULL), 0, "pthread_join");
    expect_rc(r, pthread_join(prod, NULL), 0, "pthread_join");

    long sum = 0;
    for (int i = 0; i < 8; i++)
        sum += p->acct[i];
    if (sum != p->total)
        failf(r, "plocks: %ld at the end, total is %ld", sum, p->total);
    if (p->taken != ITEMS || p->taken_sum != (long)ITEMS * (ITEMS + 1) / 2)
        failf(r, "plocks: %d items taken (sum %ld), %d sent", atomic_load(&p->taken),
              p->taken_sum, ITEMS);
    pthread_mutex_destroy(&p->m);
    pthread_rwlock_destroy(&p->rw);
    pthread_mutex_destroy(&p->qm);
    pthread_cond_destroy(&p->qc);
    free(t);
    free(ta);
    free(p);
    free(da);
    thread_done(r);
    return NULL;
}
