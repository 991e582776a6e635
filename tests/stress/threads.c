/* The stress program's tree and timers components: spawn, join, detach, wait groups, deadlines (stress.c says what it checks). */
#include "stress.h"

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

void *tree_driver(void *arg)
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

void *timers_driver(void *arg)
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

