/* The scheduler: every thread runs exactly once, work spreads over the
 * workers, yield lets others run, and a wake-up reaches an idle worker.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- a million tiny threads --------------------------------------------- */

#define NTINY 1000000
#define BATCH 10000  /* bounds the threads alive at once, not the total */

static atomic_int *runs;
static atomic_long total_runs;
static green_wg_t tiny_wg = GREEN_WG_INIT;

struct tiny_result {
    int spawn_failures, first_spawn_err, wg_err;
};

static void *tiny(void *arg)
{
    atomic_fetch_add_explicit(&runs[U(arg)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&total_runs, 1, memory_order_relaxed);
    green_wg_done(&tiny_wg);
    return NULL;
}

static void *million_main(void *arg)
{
    struct tiny_result *r = arg;
    for (int base = 0; base < NTINY; base += BATCH) {
        if (green_wg_add(&tiny_wg, BATCH) != 0)
            r->wg_err++;
        for (int i = base; i < base + BATCH; i++) {
            int rc = green_spawn(NULL, tiny, P(i));
            if (rc != 0) {
                if (r->spawn_failures++ == 0)
                    r->first_spawn_err = rc;
                green_wg_done(&tiny_wg);
            }
        }
        if (green_wg_wait(&tiny_wg) != 0)
            r->wg_err++;
    }
    return NULL;
}

Test(sched, a_million_tiny_threads_on_two_workers_each_run_exactly_once, .timeout = 60)
{
    runs = calloc(NTINY, sizeof *runs);
    cr_assert_not_null(runs);
    struct tiny_result r = {0, 0, 0};
    cr_assert_eq(run(million_main, &r, 2, -1, NULL), 0);
    cr_expect_eq(r.spawn_failures, 0, "%d spawns failed, first with %d", r.spawn_failures,
                 r.first_spawn_err);
    cr_expect_eq(r.wg_err, 0);
    cr_expect_eq(atomic_load(&total_runs), NTINY);
    int wrong = 0, first_wrong = -1;
    for (int i = 0; i < NTINY; i++)
        if (atomic_load(&runs[i]) != 1 && wrong++ == 0)
            first_wrong = i;
    cr_expect_eq(wrong, 0, "%d threads did not run exactly once (first: #%d ran %d times)",
                 wrong, first_wrong, first_wrong < 0 ? 0 : atomic_load(&runs[first_wrong]));
    free(runs);
}

/* ---- work spreads over the workers -------------------------------------- */

#define NSPREAD 32

static atomic_uint seen_workers;  /* bit k: worker k ran one of ours */
static atomic_int bad_index;

/* A fixed amount of CPU work (~0.5 ms), in slices with a yield between. */
static void *busy_a_little(void *arg)
{
    (void)arg;
    for (int slice = 0; slice < 100; slice++) {
        int k = green_worker_index();
        if (k < 0 || k >= 2)
            atomic_store(&bad_index, 1);
        else
            atomic_fetch_or(&seen_workers, 1u << k);
        for (volatile int spin = 0; spin < 20000; spin++)
            ;
        green_yield();
    }
    return NULL;
}

static void *spread_main(void *arg)
{
    (void)arg;
    green_t t[NSPREAD];
    int ok[NSPREAD];
    for (int i = 0; i < NSPREAD; i++)
        ok[i] = green_spawn(&t[i], busy_a_little, NULL) == 0;
    for (int i = 0; i < NSPREAD; i++)
        if (ok[i])
            green_join(t[i], NULL);
    return NULL;
}

Test(sched, threads_that_do_some_work_run_on_both_workers, .timeout = 10)
{
    cr_assert_eq(run(spread_main, NULL, 2, -1, NULL), 0);
    cr_expect_eq(atomic_load(&bad_index), 0, "worker index out of range");
    cr_expect_eq(atomic_load(&seen_workers), 3u, "workers seen: mask %#x",
                 atomic_load(&seen_workers));
}

/* ---- yield -------------------------------------------------------------- */

#define NTURNS 100

struct turns {
    char log[2 * NTURNS + 1];
    int len;  /* one worker, cooperative: no lock needed */
};

struct turn_arg {
    struct turns *turns;
    char name;
};

static void *take_turns(void *arg)
{
    struct turn_arg *a = arg;
    for (int i = 0; i < NTURNS; i++) {
        a->turns->log[a->turns->len++] = a->name;
        green_yield();
    }
    return NULL;
}

static void *turns_main(void *arg)
{
    static struct turn_arg a, b;
    a = (struct turn_arg){arg, 'A'};
    b = (struct turn_arg){arg, 'B'};
    green_t ta, tb;
    int oka = green_spawn(&ta, take_turns, &a) == 0;
    int okb = green_spawn(&tb, take_turns, &b) == 0;
    if (oka)
        green_join(ta, NULL);
    if (okb)
        green_join(tb, NULL);
    return NULL;
}

Test(sched, yield_lets_the_other_thread_run_so_two_threads_alternate_on_one_worker,
     .timeout = 5)
{
    struct turns t;
    memset(&t, 0, sizeof t);
    cr_assert_eq(run(turns_main, &t, 1, GREEN_PREEMPT_OFF, NULL), 0);
    cr_assert_eq(t.len, 2 * NTURNS);
    int repeats = 0;
    for (int i = 1; i < t.len; i++)
        repeats += t.log[i] == t.log[i - 1];
    cr_expect_eq(repeats, 0, "a thread ran twice in a row after yielding: %s", t.log);
}

/* ---- waking across workers ---------------------------------------------- */

#define NPING 20000

struct pingpong {
    green_chan_t *ping, *pong;
    int errors;
    long final;
};

static void *ponger(void *arg)
{
    struct pingpong *pp = arg;
    for (;;) {
        long v;
        if (green_chan_recv(pp->ping, &v) != 0)
            return NULL;  /* closed: done */
        v++;
        if (green_chan_send(pp->pong, &v) != 0)
            pp->errors++;
    }
}

static void *pingpong_main(void *arg)
{
    struct pingpong *pp = arg;
    if (green_chan_create(&pp->ping, sizeof(long), 0) != 0 ||
        green_chan_create(&pp->pong, sizeof(long), 0) != 0) {
        pp->errors++;
        return NULL;
    }
    green_t t;
    if (green_spawn(&t, ponger, pp) != 0) {
        pp->errors++;
        return NULL;
    }
    long v = 0;
    for (int i = 0; i < NPING; i++) {
        if (green_chan_send(pp->ping, &v) != 0 || green_chan_recv(pp->pong, &v) != 0)
            pp->errors++;
        v++;
    }
    pp->final = v;
    green_chan_close(pp->ping);
    green_join(t, NULL);
    green_chan_destroy(pp->ping);
    green_chan_destroy(pp->pong);
    return NULL;
}

Test(sched, two_threads_wake_each_other_back_and_forth_on_two_workers, .timeout = 20)
{
    struct pingpong pp;
    memset(&pp, 0, sizeof pp);
    cr_assert_eq(run(pingpong_main, &pp, 2, -1, NULL), 0);
    cr_expect_eq(pp.errors, 0);
    cr_expect_eq(pp.final, 2L * NPING);
}

struct wake {
    green_chan_t *c;
    atomic_int woke;
    int woke_on;
    int recv_rc;
    int waker_on;
    uint64_t spun_ns;
};

static void *sleeper(void *arg)
{
    struct wake *w = arg;
    int v = 0;
    w->recv_rc = green_chan_recv(w->c, &v);
    w->woke_on = green_worker_index();
    atomic_store(&w->woke, 1);
    return NULL;
}

static void *waker_main(void *arg)
{
    struct wake *w = arg;
    if (green_chan_create(&w->c, sizeof(int), 1) != 0)
        return NULL;
    green_t t;
    if (green_spawn(&t, sleeper, w) != 0)
        return NULL;
    green_sleep_ns(20 * MS);  /* the sleeper parks, the other worker idles */
    int v = 1;
    green_chan_send(w->c, &v);
    /* Cooperative mode and no yield: the woken thread can only run if the
     * idle worker is woken and takes it. */
    w->waker_on = green_worker_index();
    uint64_t t0 = green_now_ns();
    while (!atomic_load(&w->woke) && green_now_ns() - t0 < 1000 * MS)
        ;
    w->spun_ns = green_now_ns() - t0;
    green_join(t, NULL);
    green_chan_destroy(w->c);
    return NULL;
}

Test(sched, a_thread_woken_while_its_waker_keeps_busy_runs_on_the_idle_worker,
     .timeout = 10)
{
    struct wake w;
    memset(&w, 0, sizeof w);
    cr_assert_eq(run(waker_main, &w, 2, GREEN_PREEMPT_OFF, NULL), 0);
    cr_expect_eq(w.recv_rc, 0);
    cr_expect(w.spun_ns < 1000 * MS, "woken thread did not run while the waker spun");
    cr_expect_neq(w.woke_on, w.waker_on, "woken thread ran on the busy worker");
}

/* ---- spawned by a thread that never yields ------------------------------- */

struct busy_spawn {
    atomic_int ran;
    int ran_on, spawner_on;
    uint64_t waited_ns;
};

static void *note_run(void *arg)
{
    struct busy_spawn *b = arg;
    b->ran_on = green_worker_index();
    atomic_store(&b->ran, 1);
    return NULL;
}

static void *busy_spawner(void *arg)
{
    struct busy_spawn *b = arg;
    green_sleep_ns(5 * MS);       /* let the other worker go to sleep */
    green_t t;
    if (green_spawn(&t, note_run, b) != 0)
        return NULL;
    b->spawner_on = green_worker_index();
    uint64_t t0 = green_now_ns();
    while (!atomic_load(&b->ran) && green_now_ns() - t0 < 1000 * MS)
        ;
    b->waited_ns = green_now_ns() - t0;
    green_join(t, NULL);
    return NULL;
}

/* The new thread sits in its spawner's LIFO slot, which only the monitor may
 * take: it must, within a few of its ticks (0.5 ms each), and another worker
 * must run the thread. */
Test(sched, a_thread_spawned_by_a_thread_that_never_yields_soon_runs_elsewhere,
     .timeout = 10)
{
    struct busy_spawn b;
    memset(&b, 0, sizeof b);
    cr_assert_eq(run(busy_spawner, &b, 2, GREEN_PREEMPT_OFF, NULL), 0);
    cr_expect_eq(atomic_load(&b.ran), 1, "the spawned thread never ran");
    cr_expect_lt(b.waited_ns, 50 * MS, "it waited %llu us", (unsigned long long)(b.waited_ns / 1000));
    cr_expect_neq(b.ran_on, b.spawner_on, "it ran on the busy worker");
}
