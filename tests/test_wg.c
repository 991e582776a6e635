/* Wait groups: wait returns after every done, the counter never goes
 * negative, deadlines, and waiting on zero.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

#define NWORKERS 32
#define NWAITERS 4

struct group {
    green_wg_t wg;
    atomic_int finished;          /* workers past their work */
    int seen_by_waiter[NWAITERS]; /* `finished` when each waiter's wait returned */
    int wait_rc[NWAITERS];
    atomic_int done_errors;
};

static void *work_then_done(void *arg)
{
    struct group *g = arg;
    static atomic_uint seed = 1;
    unsigned r = atomic_fetch_add(&seed, 7919) % 10;
    green_sleep_ns((uint64_t)(r + 1) * MS);
    atomic_fetch_add(&g->finished, 1);
    if (green_wg_done(&g->wg) != 0)
        atomic_fetch_add(&g->done_errors, 1);
    return NULL;
}

struct waiter_arg {
    struct group *g;
    int i;
};

static void *wait_for_group(void *arg)
{
    struct waiter_arg *a = arg;
    a->g->wait_rc[a->i] = green_wg_wait(&a->g->wg);
    a->g->seen_by_waiter[a->i] = atomic_load(&a->g->finished);
    return NULL;
}

static void *group_main(void *arg)
{
    struct group *g = arg;
    static struct waiter_arg wa[NWAITERS];
    if (green_wg_add(&g->wg, NWORKERS) != 0)
        return P(1);
    green_t w[NWAITERS];
    for (int i = 0; i < NWAITERS; i++) {
        wa[i] = (struct waiter_arg){g, i};
        if (green_spawn(&w[i], wait_for_group, &wa[i]) != 0)
            return P(1);
    }
    for (int i = 0; i < NWORKERS; i++)
        if (green_spawn(NULL, work_then_done, g) != 0)
            return P(1);
    for (int i = 0; i < NWAITERS; i++)
        green_join(w[i], NULL);
    return NULL;
}

Test(wg, wait_returns_in_every_waiter_only_after_all_are_done, .timeout = 5)
{
    static struct group g;
    memset(&g, 0, sizeof g);
    cr_assert_eq(green_wg_init(&g.wg), 0);
    void *ret = NULL;
    cr_assert_eq(run(group_main, &g, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(atomic_load(&g.done_errors), 0);
    for (int i = 0; i < NWAITERS; i++) {
        cr_expect_eq(g.wait_rc[i], 0);
        cr_expect_eq(g.seen_by_waiter[i], NWORKERS, "waiter %d returned with %d of %d done",
                     i, g.seen_by_waiter[i], NWORKERS);
    }
    cr_expect_eq(green_wg_destroy(&g.wg), 0);
}

static void *negative_main(void *arg)
{
    int *rc = arg;
    green_wg_t wg = GREEN_WG_INIT;
    rc[0] = green_wg_add(&wg, -1);
    rc[1] = green_wg_done(&wg);
    rc[2] = green_wg_add(&wg, 2);
    rc[3] = green_wg_add(&wg, -3);
    /* the counter is still 2: two dones bring it to zero, a wait returns */
    rc[4] = green_wg_done(&wg);
    rc[5] = green_wg_done(&wg);
    rc[6] = green_wg_wait_until(&wg, green_now_ns() + 100 * MS);
    rc[7] = green_wg_done(&wg);
    return NULL;
}

Test(wg, adding_below_zero_is_einval_and_leaves_the_counter_alone, .timeout = 5)
{
    int rc[8];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(negative_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], EINVAL);
    cr_expect_eq(rc[2], 0);
    cr_expect_eq(rc[3], EINVAL);
    cr_expect_eq(rc[4], 0);
    cr_expect_eq(rc[5], 0);
    cr_expect_eq(rc[6], 0);
    cr_expect_eq(rc[7], EINVAL);
}

/* -INT64_MIN overflows: the check must not compute it (it used to, and
 * the counter took INT64_MIN). */
static void *extremes_main(void *arg)
{
    int *rc = arg;
    green_wg_t wg = GREEN_WG_INIT;
    rc[0] = green_wg_add(&wg, 3);
    rc[1] = green_wg_add(&wg, INT64_MIN);
    rc[2] = green_wg_add(&wg, INT64_MAX);          /* 3 + INT64_MAX overflows */
    rc[3] = green_wg_add(&wg, -3);                 /* back to zero: it was 3 */
    rc[4] = green_wg_wait_until(&wg, green_now_ns() + 100 * MS);
    rc[5] = green_wg_add(&wg, INT64_MAX);          /* the largest count */
    rc[6] = green_wg_add(&wg, -INT64_MAX);
    rc[7] = green_wg_wait_until(&wg, green_now_ns() + 100 * MS);
    return NULL;
}

Test(wg, int64_min_and_max_are_einval_and_leave_the_counter_alone, .timeout = 5)
{
    int rc[8];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(extremes_main, rc, 1, -1, NULL), 0);
    int want[8] = { 0, EINVAL, EINVAL, 0, 0, 0, 0, 0 };
    for (int i = 0; i < 8; i++)
        cr_expect_eq(rc[i], want[i], "call %d returned %d, not %d", i, rc[i], want[i]);
}

struct timed {
    int rc, rc_after;
    uint64_t waited_ns;
};

static void *timed_main(void *arg)
{
    struct timed *t = arg;
    green_wg_t wg = GREEN_WG_INIT;
    green_wg_add(&wg, 1);
    uint64_t t0 = green_now_ns();
    t->rc = green_wg_wait_until(&wg, t0 + 20 * MS);
    t->waited_ns = green_now_ns() - t0;
    green_wg_done(&wg);
    t->rc_after = green_wg_wait_until(&wg, green_now_ns() + 20 * MS);
    return NULL;
}

Test(wg, wait_until_times_out_while_the_counter_is_above_zero, .timeout = 5)
{
    struct timed t = {-1, -1, 0};
    cr_assert_eq(run(timed_main, &t, 1, -1, NULL), 0);
    cr_expect_eq(t.rc, ETIMEDOUT);
    cr_expect_geq(t.waited_ns, 20u * MS, "returned after %llu ns",
                  (unsigned long long)t.waited_ns);
    cr_expect_lt(t.waited_ns, 500u * MS);
    cr_expect_eq(t.rc_after, 0);
}

static void *zero_main(void *arg)
{
    struct timed *t = arg;
    green_wg_t wg = GREEN_WG_INIT;
    uint64_t t0 = green_now_ns();
    t->rc = green_wg_wait(&wg);
    t->rc_after = green_wg_wait_until(&wg, t0 + 1000 * MS);
    t->waited_ns = green_now_ns() - t0;
    return NULL;
}

Test(wg, wait_on_a_zero_counter_returns_at_once, .timeout = 5)
{
    struct timed t = {-1, -1, 0};
    cr_assert_eq(run(zero_main, &t, 1, -1, NULL), 0);
    cr_expect_eq(t.rc, 0);
    cr_expect_eq(t.rc_after, 0);
    cr_expect_lt(t.waited_ns, 50u * MS, "took %llu ns", (unsigned long long)t.waited_ns);
}

struct destroy_waited {
    green_wg_t wg;
    atomic_int ready;
    int wait_rc, busy_rc, final_rc;
};

static void *wait_once(void *arg)
{
    struct destroy_waited *d = arg;
    atomic_store(&d->ready, 1);
    d->wait_rc = green_wg_wait(&d->wg);
    return NULL;
}

static void *destroy_waited_main(void *arg)
{
    struct destroy_waited *d = arg;
    green_wg_add(&d->wg, 1);
    green_t t;
    if (green_spawn(&t, wait_once, d) != 0)
        return P(1);
    while (!atomic_load(&d->ready))
        green_yield();
    for (int i = 0; i < 10; i++)
        green_yield();
    green_sleep_ns(2 * MS);
    d->busy_rc = green_wg_destroy(&d->wg);
    green_wg_done(&d->wg);
    green_join(t, NULL);
    d->final_rc = green_wg_destroy(&d->wg);
    return NULL;
}

Test(wg, destroying_a_wait_group_a_thread_waits_on_is_ebusy, .timeout = 5)
{
    static struct destroy_waited d;
    memset(&d, 0, sizeof d);
    d.wait_rc = d.busy_rc = d.final_rc = -1;
    void *ret = NULL;
    cr_assert_eq(run(destroy_waited_main, &d, 1, GREEN_PREEMPT_OFF, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(d.busy_rc, EBUSY);
    cr_expect_eq(d.wait_rc, 0);
    cr_expect_eq(d.final_rc, 0);
}

/* A wait group is reusable once its counter is back at zero. */
struct reuse {
    green_wg_t wg;
    atomic_int count;
    int short_rounds, errors;
};

static void *count_then_done(void *arg)
{
    struct reuse *r = arg;
    green_yield();
    atomic_fetch_add(&r->count, 1);
    green_wg_done(&r->wg);
    return NULL;
}

static void *reuse_main(void *arg)
{
    struct reuse *r = arg;
    for (int round = 0; round < 50; round++) {
        atomic_store(&r->count, 0);
        if (green_wg_add(&r->wg, 8) != 0)
            r->errors++;
        for (int i = 0; i < 8; i++)
            if (green_spawn(NULL, count_then_done, r) != 0) {
                r->errors++;
                green_wg_done(&r->wg);
            }
        if (green_wg_wait(&r->wg) != 0)
            r->errors++;
        if (atomic_load(&r->count) != 8)
            r->short_rounds++;
    }
    return NULL;
}

Test(wg, a_wait_group_back_at_zero_can_be_used_again, .timeout = 5)
{
    static struct reuse r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(run(reuse_main, &r, 2, -1, NULL), 0);
    cr_expect_eq(r.errors, 0);
    cr_expect_eq(r.short_rounds, 0, "%d rounds' waits returned before every done",
                 r.short_rounds);
}
