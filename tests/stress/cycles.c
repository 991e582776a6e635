/* The stress program's cycles component: lock cycles, none where none can
 * form and every one planted found (stress.c says what it checks). */
#define _GNU_SOURCE
#include "stress.h"

#include <pthread.h>

#define NLOCKS 8

#define NMEMBERS_MAX 4

/* A set of locks: lock i is a pthread mutex when pmask has bit i, else a
 * green mutex. */
struct lockset {
    unsigned pmask;
    green_mutex_t g[NLOCKS];
    pthread_mutex_t p[NLOCKS];
};

struct cycles {
    struct round *r;
    struct lockset ordered, members;
    int nordered, per_thread;
    /* Planted: members each hold their own lock, then take the next's --
     * locks the ordered threads never take, so those cannot join it. */
    int nmembers;
    atomic_int holding;
    atomic_int deadlocked;           /* EDEADLK answers */
    long held_by[NLOCKS];            /* owner's id + 1, under the lock */
};

static int take(struct cycles *c, struct lockset *l, int i)
{
    OP(c->r);
    if (l->pmask >> i & 1)
        return pthread_mutex_lock(&l->p[i]);
    return green_mutex_lock(&l->g[i]);
}

static void give(struct cycles *c, struct lockset *l, int i)
{
    int rc = l->pmask >> i & 1 ? pthread_mutex_unlock(&l->p[i]) : green_mutex_unlock(&l->g[i]);
    expect_rc(c->r, rc, 0, "unlock (cycles)");
}

static void lockset_init(struct round *r, struct lockset *l, unsigned pmask)
{
    l->pmask = pmask;
    for (int i = 0; i < NLOCKS; i++) {
        expect_rc(r, green_mutex_init(&l->g[i]), 0, "green_mutex_init");
        pthread_mutex_init(&l->p[i], NULL);
    }
}

static void lockset_destroy(struct round *r, struct lockset *l)
{
    for (int i = 0; i < NLOCKS; i++) {
        expect_rc(r, green_mutex_destroy(&l->g[i]), 0, "green_mutex_destroy");
        pthread_mutex_destroy(&l->p[i]);
    }
}

/* Random nested sections, always in ascending lock order: no cycle can
 * form, so no lock call may say EDEADLK. */
static void *ordered(void *arg)
{
    struct targ *a = arg;
    struct cycles *c = a->comp;
    struct rng g = {a->seed};
    for (int k = 0; k < c->per_thread; k++) {
        int taken[NLOCKS], n = 0;
        for (int i = (int)below(&g, NLOCKS); i < NLOCKS; i += 1 + (int)below(&g, 3)) {
            int rc = take(c, &c->ordered, i);
            if (rc != 0)
                failf(c->r, "cycles: lock %d taken in order returned %d: a cycle reported "
                            "where none can form", i, rc);
            if (c->held_by[i])
                failf(c->r, "cycles: lock %d held twice", i);
            c->held_by[i] = a->id + 1;
            taken[n++] = i;
            maybe_yield(&g);
        }
        if (below(&g, 16) == 0)
            green_sleep_ns(between(&g, 1, 200) * US);
        while (n-- > 0) {
            c->held_by[taken[n]] = 0;
            give(c, &c->ordered, taken[n]);
        }
    }
    thread_done(c->r);
    return NULL;
}

static void *member(void *arg)
{
    struct targ *a = arg;
    struct cycles *c = a->comp;
    int own = a->id, next = (a->id + 1) % c->nmembers;
    expect_rc(c->r, take(c, &c->members, own), 0, "cycles: a member's own lock");
    atomic_fetch_add(&c->holding, 1);
    while (atomic_load(&c->holding) < c->nmembers)
        green_yield();
    int rc = take(c, &c->members, next);
    if (rc == EDEADLK) {
        atomic_fetch_add(&c->deadlocked, 1);
    } else {
        expect_rc(c->r, rc, 0, "cycles: a member's next lock");
        give(c, &c->members, next);
    }
    give(c, &c->members, own);
    thread_done(c->r);
    return NULL;
}

void *cycles_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct cycles *c = calloc(1, sizeof *c);
    c->r = r;
    lockset_init(r, &c->ordered, (unsigned)below(&g, 1u << NLOCKS));
    lockset_init(r, &c->members, (unsigned)below(&g, 1u << NMEMBERS_MAX));
    c->nordered = (int)between(&g, 2, 12);
    c->per_thread = (int)between(&g, 20, 300);
    c->nmembers = (int)between(&g, 2, NMEMBERS_MAX);
    struct targ *ta = targs(c, c->nordered, &g);
    struct targ *tm = targs(c, c->nmembers, &g);
    green_t *t = calloc((size_t)c->nordered + (size_t)c->nmembers, sizeof *t);
    for (int i = 0; i < c->nordered; i++)
        spawn(r, &t[i], ordered, &ta[i]);
    for (int i = 0; i < c->nmembers; i++)
        spawn(r, &t[c->nordered + i], member, &tm[i]);
    for (int i = 0; i < c->nordered + c->nmembers; i++)
        join(r, t[i], NULL);
    /* Each member's next lock is held by the next member until that one
     * has its own next lock, so the cycle forms; its closer -- one, even
     * when two close it at once -- gets EDEADLK.  Had it been missed, the
     * members would wait for good and the round would hang. */
    int d = atomic_load(&c->deadlocked);
    if (d != 1)
        failf(r, "cycles: a planted cycle of %d drew %d EDEADLK answers", c->nmembers, d);
    atomic_fetch_add(&stress_cycles_planted, 1);
    lockset_destroy(r, &c->ordered);
    lockset_destroy(r, &c->members);
    free(t);
    free(ta);
    free(tm);
    free(c);
    free(da);
    thread_done(r);
    return NULL;
}
