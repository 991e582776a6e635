/* Condition variables: signal, broadcast, timeouts, ownership, and the
 * classic producer/consumer with predicate loops.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

/* ---- signal and broadcast ----------------------------------------------- */

#define NWAITERS 8

struct waiters {
    green_mutex_t m;
    green_cond_t c;
    int waiting;      /* guarded by m: waiters that reached cond_wait */
    int returns;      /* guarded by m: returns from cond_wait */
    int go;           /* guarded by m: the predicate */
    int after_signal; /* returns seen after one signal */
    int after_broadcast;
    int errors;
};

static void *waiter(void *arg)
{
    struct waiters *w = arg;
    green_mutex_lock(&w->m);
    w->waiting++;
    while (!w->go) {
        if (green_cond_wait(&w->c, &w->m) != 0)
            w->errors++;
        w->returns++;
    }
    green_mutex_unlock(&w->m);
    return NULL;
}

/* Wait until all n waiters are inside cond_wait: they count themselves under
 * m and release m only by waiting. */
static void wait_for_waiters(struct waiters *w, int n)
{
    for (;;) {
        green_mutex_lock(&w->m);
        int k = w->waiting;
        green_mutex_unlock(&w->m);
        if (k == n)
            return;
        green_sleep_ns(1 * MS);
    }
}

static void *signal_main(void *arg)
{
    struct waiters *w = arg;
    green_t t[NWAITERS];
    for (int i = 0; i < NWAITERS; i++)
        if (green_spawn(&t[i], waiter, w) != 0)
            return P(1);
    wait_for_waiters(w, NWAITERS);
    green_mutex_lock(&w->m);
    if (green_cond_signal(&w->c) != 0)
        w->errors++;
    green_mutex_unlock(&w->m);
    green_sleep_ns(30 * MS);
    green_mutex_lock(&w->m);
    w->after_signal = w->returns;
    w->go = 1;
    green_cond_broadcast(&w->c);
    green_mutex_unlock(&w->m);
    for (int i = 0; i < NWAITERS; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(cond, signal_wakes_exactly_one_waiter, .timeout = 5)
{
    static struct waiters w;
    memset(&w, 0, sizeof w);
    void *ret = NULL;
    cr_assert_eq(run(signal_main, &w, 2, -1, &ret), 0);
    cr_assert_null(ret, "spawn failed");
    cr_expect_eq(w.errors, 0);
    cr_expect_eq(w.after_signal, 1, "%d waiters returned after one signal", w.after_signal);
    cr_expect_eq(w.returns, NWAITERS + 1);
}

static void *broadcast_main(void *arg)
{
    struct waiters *w = arg;
    green_t t[NWAITERS];
    for (int i = 0; i < NWAITERS; i++)
        if (green_spawn(&t[i], waiter, w) != 0)
            return P(1);
    wait_for_waiters(w, NWAITERS);
    green_mutex_lock(&w->m);
    if (green_cond_broadcast(&w->c) != 0)  /* predicate still false */
        w->errors++;
    green_mutex_unlock(&w->m);
    green_sleep_ns(30 * MS);
    green_mutex_lock(&w->m);
    w->after_broadcast = w->returns;
    w->go = 1;
    green_cond_broadcast(&w->c);
    green_mutex_unlock(&w->m);
    for (int i = 0; i < NWAITERS; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(cond, broadcast_wakes_every_waiter, .timeout = 5)
{
    static struct waiters w;
    memset(&w, 0, sizeof w);
    void *ret = NULL;
    cr_assert_eq(run(broadcast_main, &w, 2, -1, &ret), 0);
    cr_assert_null(ret, "spawn failed");
    cr_expect_eq(w.errors, 0);
    cr_expect_eq(w.after_broadcast, NWAITERS, "%d of %d waiters returned",
                 w.after_broadcast, NWAITERS);
    cr_expect_eq(w.returns, 2 * NWAITERS);
}

static void *signal_nobody_main(void *arg)
{
    int *rc = arg;
    green_cond_t c = GREEN_COND_INIT;
    rc[0] = green_cond_signal(&c);
    rc[1] = green_cond_broadcast(&c);
    rc[2] = green_cond_destroy(&c);
    return NULL;
}

Test(cond, signal_and_broadcast_without_waiters_do_nothing, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(signal_nobody_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
}

/* ---- timeouts and ownership --------------------------------------------- */

struct timed {
    green_mutex_t m;
    green_cond_t c;
    int wait_rc, other_trylock_rc, unlock_rc;
    uint64_t waited_ns;
};

static void *try_from_other(void *arg)
{
    struct timed *t = arg;
    t->other_trylock_rc = green_mutex_trylock(&t->m);
    if (t->other_trylock_rc == 0)
        green_mutex_unlock(&t->m);
    return NULL;
}

static void *timed_main(void *arg)
{
    struct timed *t = arg;
    green_mutex_lock(&t->m);
    uint64_t t0 = green_now_ns();
    t->wait_rc = green_cond_wait_until(&t->c, &t->m, t0 + 20 * MS);
    t->waited_ns = green_now_ns() - t0;
    green_t o;
    if (green_spawn(&o, try_from_other, t) == 0)
        green_join(o, NULL);
    t->unlock_rc = green_mutex_unlock(&t->m);
    return NULL;
}

Test(cond, wait_until_times_out_and_returns_with_the_mutex_held, .timeout = 5)
{
    static struct timed t;
    memset(&t, 0, sizeof t);
    t.wait_rc = t.other_trylock_rc = t.unlock_rc = -1;
    cr_assert_eq(run(timed_main, &t, 2, -1, NULL), 0);
    cr_expect_eq(t.wait_rc, ETIMEDOUT);
    cr_expect_geq(t.waited_ns, 20u * MS, "returned after %llu ns",
                  (unsigned long long)t.waited_ns);
    cr_expect_eq(t.other_trylock_rc, EBUSY, "the mutex was free after the timeout");
    cr_expect_eq(t.unlock_rc, 0, "the caller did not hold the mutex after the timeout");
}

static void *wait_unheld_main(void *arg)
{
    int *rc = arg;
    green_mutex_t m = GREEN_MUTEX_INIT;
    green_cond_t c = GREEN_COND_INIT;
    rc[0] = green_cond_wait(&c, &m);
    rc[1] = green_cond_wait_until(&c, &m, green_now_ns() + 10 * MS);
    return NULL;
}

Test(cond, wait_without_holding_the_mutex_is_eperm, .timeout = 5)
{
    int rc[2] = {-1, -1};
    cr_assert_eq(run(wait_unheld_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EPERM);
    cr_expect_eq(rc[1], EPERM);
}

struct foreign {
    green_mutex_t m;
    green_cond_t c;
    int rc;
};

static void *wait_on_foreign(void *arg)
{
    struct foreign *f = arg;
    f->rc = green_cond_wait_until(&f->c, &f->m, green_now_ns() + 10 * MS);
    return NULL;
}

static void *foreign_main(void *arg)
{
    struct foreign *f = arg;
    green_mutex_lock(&f->m);
    green_t t;
    if (green_spawn(&t, wait_on_foreign, f) == 0)
        green_join(t, NULL);
    green_mutex_unlock(&f->m);
    return NULL;
}

Test(cond, wait_with_a_mutex_another_thread_holds_is_eperm, .timeout = 5)
{
    static struct foreign f;
    memset(&f, 0, sizeof f);
    f.rc = -1;
    cr_assert_eq(run(foreign_main, &f, 2, -1, NULL), 0);
    cr_expect_eq(f.rc, EPERM);
}

/* ---- producer / consumer ------------------------------------------------ */

#define QCAP 8
#define NPROD 4
#define NCONS 4
#define PER_PROD 20000
#define NITEMS (NPROD * PER_PROD)

struct pc {
    green_mutex_t m;
    green_cond_t not_full, not_empty;
    int q[QCAP];
    int head, len, producers_left;   /* guarded by m */
    atomic_uchar seen[NITEMS];
    atomic_int dup, overflow, errors;
};

static void *produce(void *arg)
{
    struct pc *pc = arg;
    static atomic_int next_id;
    int id = atomic_fetch_add(&next_id, 1);
    for (int i = 0; i < PER_PROD; i++) {
        green_mutex_lock(&pc->m);
        while (pc->len == QCAP)
            green_cond_wait(&pc->not_full, &pc->m);
        if (pc->len >= QCAP || pc->len < 0)
            atomic_fetch_add(&pc->overflow, 1);
        pc->q[(pc->head + pc->len) % QCAP] = id * PER_PROD + i;
        pc->len++;
        green_cond_signal(&pc->not_empty);
        green_mutex_unlock(&pc->m);
    }
    green_mutex_lock(&pc->m);
    if (--pc->producers_left == 0)
        green_cond_broadcast(&pc->not_empty);
    green_mutex_unlock(&pc->m);
    return NULL;
}

static void *consume(void *arg)
{
    struct pc *pc = arg;
    long got = 0;
    for (;;) {
        green_mutex_lock(&pc->m);
        while (pc->len == 0 && pc->producers_left > 0)
            green_cond_wait(&pc->not_empty, &pc->m);
        if (pc->len == 0) {
            green_mutex_unlock(&pc->m);
            return P(got);
        }
        int v = pc->q[pc->head];
        pc->head = (pc->head + 1) % QCAP;
        pc->len--;
        green_cond_signal(&pc->not_full);
        green_mutex_unlock(&pc->m);
        if (v < 0 || v >= NITEMS)
            atomic_fetch_add(&pc->errors, 1);
        else if (atomic_fetch_add(&pc->seen[v], 1) != 0)
            atomic_fetch_add(&pc->dup, 1);
        got++;
    }
}

static void *pc_main(void *arg)
{
    struct pc *pc = arg;
    pc->producers_left = NPROD;
    green_t p[NPROD], c[NCONS];
    for (int i = 0; i < NCONS; i++)
        if (green_spawn(&c[i], consume, pc) != 0)
            return P(-1);
    for (int i = 0; i < NPROD; i++)
        if (green_spawn(&p[i], produce, pc) != 0)
            return P(-1);
    long total = 0;
    for (int i = 0; i < NPROD; i++)
        green_join(p[i], NULL);
    for (int i = 0; i < NCONS; i++) {
        void *got = NULL;
        green_join(c[i], &got);
        total += (long)U(got);
    }
    return P(total);
}

Test(cond, producers_and_consumers_with_predicate_loops_pass_every_item_once,
     .timeout = 20)
{
    static struct pc pc;
    memset(&pc, 0, sizeof pc);
    void *total = NULL;
    cr_assert_eq(run(pc_main, &pc, 2, -1, &total), 0);
    cr_expect_eq((long)U(total), (long)NITEMS, "consumed %ld of %d", (long)U(total), NITEMS);
    cr_expect_eq(atomic_load(&pc.dup), 0);
    cr_expect_eq(atomic_load(&pc.overflow), 0);
    cr_expect_eq(atomic_load(&pc.errors), 0);
    int missing = 0;
    for (int i = 0; i < NITEMS; i++)
        missing += atomic_load(&pc.seen[i]) == 0;
    cr_expect_eq(missing, 0, "%d items never consumed", missing);
}
