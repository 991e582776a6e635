/* Mutex: mutual exclusion, error checking, no starvation.
 *
 * Tests that need "thread X is now blocked" run on one worker with
 * preemption off: a thread then runs until it parks, so once the main thread
 * runs again the other one is known to be waiting.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

/* ---- mutual exclusion --------------------------------------------------- */

#define NCONTEND 64
#define NINCR 20000

struct contention {
    green_mutex_t m;
    long counter;            /* guarded by m, deliberately not atomic */
    atomic_int holders;      /* how many are inside the section right now */
    atomic_int overlaps;     /* times a thread found someone else inside */
    atomic_int errors;
};

static void *increment(void *arg)
{
    struct contention *c = arg;
    for (int i = 0; i < NINCR; i++) {
        if (green_mutex_lock(&c->m) != 0) {
            atomic_fetch_add(&c->errors, 1);
            continue;
        }
        if (atomic_fetch_add(&c->holders, 1) != 0)
            atomic_fetch_add(&c->overlaps, 1);
        long v = c->counter;
        if ((i & 15) == 0)
            green_yield();  /* hold the lock across a switch */
        c->counter = v + 1;
        atomic_fetch_sub(&c->holders, 1);
        if (green_mutex_unlock(&c->m) != 0)
            atomic_fetch_add(&c->errors, 1);
    }
    return NULL;
}

static void *contention_main(void *arg)
{
    struct contention *c = arg;
    green_t t[NCONTEND];
    int ok[NCONTEND];
    for (int i = 0; i < NCONTEND; i++)
        ok[i] = green_spawn(&t[i], increment, c) == 0;
    for (int i = 0; i < NCONTEND; i++)
        if (ok[i])
            green_join(t[i], NULL);
        else
            atomic_fetch_add(&c->errors, 1);
    return NULL;
}

Test(mutex, excludes_64_threads_incrementing_a_plain_counter_on_two_workers,
     .timeout = 30)
{
    static struct contention c;
    memset(&c, 0, sizeof c);
    cr_assert_eq(green_mutex_init(&c.m), 0);
    cr_assert_eq(run(contention_main, &c, 2, -1, NULL), 0);
    cr_expect_eq(atomic_load(&c.errors), 0);
    cr_expect_eq(atomic_load(&c.overlaps), 0, "two threads were inside at once %d times",
                 atomic_load(&c.overlaps));
    cr_expect_eq(c.counter, (long)NCONTEND * NINCR, "lost updates: %ld of %ld", c.counter,
                 (long)NCONTEND * NINCR);
    cr_expect_eq(green_mutex_destroy(&c.m), 0);
}

static void *static_init_main(void *arg)
{
    static green_mutex_t m = GREEN_MUTEX_INIT;
    int *rc = arg;
    rc[0] = green_mutex_lock(&m);
    rc[1] = green_mutex_unlock(&m);
    rc[2] = green_mutex_destroy(&m);
    return NULL;
}

Test(mutex, a_statically_initialized_mutex_is_unlocked, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(static_init_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
}

/* ---- error checking ----------------------------------------------------- */

struct other {
    green_mutex_t m;
    int rc;
    uint64_t waited_ns;
    atomic_int ready;
};

static void *try_it(void *arg)
{
    struct other *o = arg;
    o->rc = green_mutex_trylock(&o->m);
    if (o->rc == 0)
        green_mutex_unlock(&o->m);
    return NULL;
}

static void *trylock_main(void *arg)
{
    struct other *o = arg;
    green_mutex_lock(&o->m);
    green_t t;
    if (green_spawn(&t, try_it, o) == 0)
        green_join(t, NULL);
    green_mutex_unlock(&o->m);
    return NULL;
}

Test(mutex, trylock_of_a_mutex_held_by_another_thread_is_ebusy, .timeout = 5)
{
    struct other o;
    memset(&o, 0, sizeof o);
    o.rc = -1;
    cr_assert_eq(run(trylock_main, &o, 2, -1, NULL), 0);
    cr_expect_eq(o.rc, EBUSY);
}

static void *trylock_free_main(void *arg)
{
    struct other *o = arg;
    green_t t;
    if (green_spawn(&t, try_it, o) == 0)
        green_join(t, NULL);
    return NULL;
}

Test(mutex, trylock_of_a_free_mutex_takes_it, .timeout = 5)
{
    struct other o;
    memset(&o, 0, sizeof o);
    o.rc = -1;
    cr_assert_eq(run(trylock_free_main, &o, 2, -1, NULL), 0);
    cr_expect_eq(o.rc, 0);
}

static void *lock_until_it(void *arg)
{
    struct other *o = arg;
    uint64_t t0 = green_now_ns();
    o->rc = green_mutex_lock_until(&o->m, t0 + 20 * MS);
    o->waited_ns = green_now_ns() - t0;
    if (o->rc == 0)
        green_mutex_unlock(&o->m);
    return NULL;
}

static void *lock_until_main(void *arg)
{
    struct other *o = arg;
    green_mutex_lock(&o->m);
    green_t t;
    if (green_spawn(&t, lock_until_it, o) == 0)
        green_join(t, NULL);
    green_mutex_unlock(&o->m);
    return NULL;
}

Test(mutex, lock_until_times_out_while_another_thread_holds_the_mutex, .timeout = 5)
{
    struct other o;
    memset(&o, 0, sizeof o);
    o.rc = -1;
    cr_assert_eq(run(lock_until_main, &o, 2, -1, NULL), 0);
    cr_expect_eq(o.rc, ETIMEDOUT);
    cr_expect_geq(o.waited_ns, 20u * MS, "returned after %llu ns, before the deadline",
                  (unsigned long long)o.waited_ns);
}

static void *release_later(void *arg)
{
    struct other *o = arg;
    green_mutex_lock(&o->m);
    atomic_store(&o->ready, 1);
    green_sleep_ns(10 * MS);
    green_mutex_unlock(&o->m);
    return NULL;
}

static void *lock_until_gets_it_main(void *arg)
{
    struct other *o = arg;
    green_t t;
    if (green_spawn(&t, release_later, o) != 0)
        return NULL;
    while (!atomic_load(&o->ready))
        green_yield();
    uint64_t t0 = green_now_ns();
    o->rc = green_mutex_lock_until(&o->m, t0 + 2000 * MS);
    o->waited_ns = green_now_ns() - t0;
    if (o->rc == 0)
        green_mutex_unlock(&o->m);
    green_join(t, NULL);
    return NULL;
}

Test(mutex, lock_until_takes_the_mutex_when_it_is_released_before_the_deadline,
     .timeout = 5)
{
    struct other o;
    memset(&o, 0, sizeof o);
    o.rc = -1;
    cr_assert_eq(run(lock_until_gets_it_main, &o, 2, -1, NULL), 0);
    cr_expect_eq(o.rc, 0);
    cr_expect_lt(o.waited_ns, 1000u * MS, "waited %llu ns for a 10 ms hold",
                 (unsigned long long)o.waited_ns);
}

static void *relock_main(void *arg)
{
    int *rc = arg;
    green_mutex_t m = GREEN_MUTEX_INIT;
    rc[0] = green_mutex_lock(&m);
    rc[1] = green_mutex_lock(&m);
    rc[2] = green_mutex_lock_until(&m, green_now_ns() + 10 * MS);
    rc[3] = green_mutex_unlock(&m);
    return NULL;
}

Test(mutex, relocking_by_the_owner_is_edeadlk_and_leaves_it_held_once, .timeout = 5)
{
    int rc[4] = {-1, -1, -1, -1};
    cr_assert_eq(run(relock_main, rc, 1, -1, NULL), 0);
    cr_assert_eq(rc[0], 0);
    cr_expect_eq(rc[1], EDEADLK);
    cr_expect_eq(rc[2], EDEADLK);
    cr_expect_eq(rc[3], 0);
}

static void *unlock_unheld_main(void *arg)
{
    int *rc = arg;
    green_mutex_t m = GREEN_MUTEX_INIT;
    rc[0] = green_mutex_unlock(&m);
    return NULL;
}

Test(mutex, unlocking_a_free_mutex_is_eperm, .timeout = 5)
{
    int rc = -1;
    cr_assert_eq(run(unlock_unheld_main, &rc, 1, -1, NULL), 0);
    cr_expect_eq(rc, EPERM);
}

static void *unlock_it(void *arg)
{
    struct other *o = arg;
    o->rc = green_mutex_unlock(&o->m);
    return NULL;
}

static void *unlock_others_main(void *arg)
{
    struct other *o = arg;
    green_mutex_lock(&o->m);
    green_t t;
    if (green_spawn(&t, unlock_it, o) == 0)
        green_join(t, NULL);
    o->waited_ns = (uint64_t)green_mutex_unlock(&o->m);  /* still ours: 0 */
    return NULL;
}

Test(mutex, unlocking_a_mutex_another_thread_holds_is_eperm_and_keeps_it_held,
     .timeout = 5)
{
    struct other o;
    memset(&o, 0, sizeof o);
    o.rc = -1;
    o.waited_ns = 12345;
    cr_assert_eq(run(unlock_others_main, &o, 2, -1, NULL), 0);
    cr_expect_eq(o.rc, EPERM);
    cr_expect_eq(o.waited_ns, 0u, "the owner's unlock failed after the foreign unlock");
}

static void *destroy_held_main(void *arg)
{
    int *rc = arg;
    static green_mutex_t m = GREEN_MUTEX_INIT;
    green_mutex_lock(&m);
    rc[0] = green_mutex_destroy(&m);
    rc[1] = green_mutex_unlock(&m);
    rc[2] = green_mutex_destroy(&m);
    return NULL;
}

Test(mutex, destroying_a_held_mutex_is_ebusy, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(destroy_held_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], 0, "the mutex was not held any more after a refused destroy");
    cr_expect_eq(rc[2], 0);
}

struct waited {
    green_mutex_t m;
    atomic_int ready;
    int lock_rc;
};

static void *wait_for_lock(void *arg)
{
    struct waited *w = arg;
    atomic_store(&w->ready, 1);
    w->lock_rc = green_mutex_lock(&w->m);
    if (w->lock_rc == 0)
        green_mutex_unlock(&w->m);
    return NULL;
}

static void *destroy_waited_main(void *arg)
{
    int *rc = arg;
    static struct waited w;
    memset(&w, 0, sizeof w);
    w.lock_rc = -1;
    green_mutex_lock(&w.m);
    green_t t;
    if (green_spawn(&t, wait_for_lock, &w) != 0)
        return NULL;
    while (!atomic_load(&w.ready))
        green_yield();
    settle();
    green_mutex_unlock(&w.m);
    /* The waiter may not have run yet: the mutex is free but waited on
     * (or already handed to the waiter): destroy must refuse. */
    rc[0] = green_mutex_destroy(&w.m);
    green_join(t, NULL);
    rc[1] = w.lock_rc;
    rc[2] = green_mutex_destroy(&w.m);
    return NULL;
}

Test(mutex, destroying_a_mutex_a_thread_waits_on_is_ebusy, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(destroy_waited_main, rc, 1, GREEN_PREEMPT_OFF, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
}

/* ---- no starvation ------------------------------------------------------ */

#define NHAMMER 8
#define NWANTS 30
#define MAX_WAIT_NS (100u * MS)

struct starve {
    green_mutex_t m;
    atomic_int stop;
    long hammered;                 /* guarded by m */
    uint64_t waits[NWANTS];
    int errors;
};

static void *hammer(void *arg)
{
    struct starve *s = arg;
    while (!atomic_load(&s->stop)) {
        green_mutex_lock(&s->m);
        s->hammered++;
        green_yield();
        green_mutex_unlock(&s->m);
    }
    return NULL;
}

static void *starve_main(void *arg)
{
    struct starve *s = arg;
    green_t t[NHAMMER];
    int ok[NHAMMER];
    for (int i = 0; i < NHAMMER; i++)
        ok[i] = green_spawn(&t[i], hammer, s) == 0;
    green_sleep_ns(5 * MS);
    for (int i = 0; i < NWANTS; i++) {
        uint64_t t0 = green_now_ns();
        if (green_mutex_lock(&s->m) != 0)
            s->errors++;
        s->waits[i] = green_now_ns() - t0;
        green_mutex_unlock(&s->m);
        green_sleep_ns(1 * MS);
    }
    atomic_store(&s->stop, 1);
    for (int i = 0; i < NHAMMER; i++)
        if (ok[i])
            green_join(t[i], NULL);
        else
            s->errors++;
    return NULL;
}

Test(mutex, a_thread_gets_the_lock_quickly_while_others_hammer_it, .timeout = 20)
{
    static struct starve s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(run(starve_main, &s, 2, -1, NULL), 0);
    cr_expect_eq(s.errors, 0);
    cr_expect_gt(s.hammered, 0, "the hammers never got the lock");
    uint64_t worst = 0;
    for (int i = 0; i < NWANTS; i++)
        if (s.waits[i] > worst)
            worst = s.waits[i];
    cr_expect_lt(worst, MAX_WAIT_NS, "waited %llu us for the lock",
                 (unsigned long long)(worst / 1000));
}

/* ---- Lock-holder handoff ------------------------------------------------- */

/* One worker: waiters, then CPU hogs, are queued; the holder (spawned last,
 * so it runs first) takes the mutex and computes until it has been
 * preempted -- the first waiter has run -- and a little more.  With
 * handoff, the waiter's park hands the worker to the holder: no hog starts
 * before the unlock.  Without, the holder waits its turn behind every hog. */
#define HO_WAITERS 10
#define HO_HOGS 10

struct ho {
    green_mutex_t m;
    _Atomic int asked, hogs_started, hogs_before_unlock, got;
};

static void ho_compute(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static void *ho_holder(void *arg)
{
    struct ho *h = arg;
    green_mutex_lock(&h->m);
    while (!atomic_load(&h->asked))          /* preempted in here */
        ho_compute(1000);
    ho_compute(100000);
    atomic_store(&h->hogs_before_unlock, atomic_load(&h->hogs_started));
    green_mutex_unlock(&h->m);
    return NULL;
}

static void *ho_waiter(void *arg)
{
    struct ho *h = arg;
    atomic_store(&h->asked, 1);
    green_mutex_lock(&h->m);
    atomic_fetch_add(&h->got, 1);
    green_mutex_unlock(&h->m);
    return NULL;
}

static void *ho_hog(void *arg)
{
    struct ho *h = arg;
    atomic_fetch_add(&h->hogs_started, 1);
    uint64_t end = mono_ns() + 2 * MS;
    while (mono_ns() < end)
        ho_compute(1000);
    return NULL;
}

static void *ho_main(void *arg)
{
    green_t t[HO_WAITERS + HO_HOGS + 1];
    int n = 0;
    /* The queue must be built whole before anyone runs: preempted while it
     * spawns, main would let the waiters take the free mutex and the hogs
     * start before the holder exists. */
    green_nopreempt_begin();
    for (int i = 0; i < HO_WAITERS; i++)
        cr_assert_eq(green_spawn(&t[n++], ho_waiter, arg), 0);
    for (int i = 0; i < HO_HOGS; i++)
        cr_assert_eq(green_spawn(&t[n++], ho_hog, arg), 0);
    cr_assert_eq(green_spawn(&t[n++], ho_holder, arg), 0);
    green_nopreempt_end();
    for (int i = 0; i < n; i++)
        green_join(t[i], NULL);
    return NULL;
}

static void ho_run(struct ho *h, unsigned handoff, uint64_t *handoffs)
{
    memset(h, 0, sizeof *h);
    green_config_t cfg = config(1);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.handoff = handoff;
    green_stats_t s0, s1;
    green_stats(&s0);
    cr_assert_eq(green_run(ho_main, h, &cfg, NULL), 0);
    green_stats(&s1);
    *handoffs = s1.lock_handoffs - s0.lock_handoffs;
    cr_assert_eq(atomic_load(&h->got), HO_WAITERS);
}

Test(handoff, a_preempted_holder_runs_next_when_a_waiter_parks, .timeout = 30)
{
    static struct ho h;
    uint64_t n;
    ho_run(&h, GREEN_HANDOFF_ON, &n);
    cr_expect_eq(atomic_load(&h.hogs_before_unlock), 0,
                 "%d hogs ran before the holder let go", atomic_load(&h.hogs_before_unlock));
    cr_expect_geq(n, 1, "no handoff counted");
}

Test(handoff, without_it_the_holder_waits_behind_every_hog, .timeout = 30)
{
    static struct ho h;
    uint64_t n;
    ho_run(&h, GREEN_HANDOFF_OFF, &n);
    cr_expect_eq(atomic_load(&h.hogs_before_unlock), HO_HOGS,
                 "%d hogs ran before the holder let go", atomic_load(&h.hogs_before_unlock));
    cr_expect_eq(n, 0);
}
