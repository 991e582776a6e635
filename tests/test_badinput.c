/* Bad input, call by call: every public call fed zeros, negatives,
 * overflows, forged and stale handles and the wrong thread gets an errno
 * value, never a crash or a hang.  docs/bad-input.md is the table; each of
 * its rows names the test that holds it to its word.  (tests/test_errors.c
 * has the first rules of the contract: join and detach, EPERM off green
 * threads; tests/test_badinput_config.c the GREEN_* variables and green_run.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "capture.h"
#include "common.h"

#if defined(__SANITIZE_ADDRESS__)
/* A channel too large for memory is ENOMEM here too, not an ASan report. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

static void *nothing(void *arg)
{
    return arg;
}
/* ---- threads ------------------------------------------------------------ */

static void *forged_handles_main(void *arg)
{
    int *rc = arg;
    static char not_a_thread[256];
    green_t self = green_self();
    green_t forged[] = {
        { (void *)1, 1 },
        { not_a_thread, 7 },
        { (char *)self.p + 8, self.id },       /* inside a control block */
        { self.p, self.id + 1 },               /* a slot, a wrong id */
        { self.p, UINT64_MAX },
        { NULL, self.id },
    };
    for (size_t i = 0; i < NELEM(forged); i++) {
        rc[3 * i] = green_join(forged[i], NULL);
        rc[3 * i + 1] = green_join_until(forged[i], NULL, 0);
        rc[3 * i + 2] = green_detach(forged[i]);
    }
    return NULL;
}

Test(badinput, forged_handles_are_einval, .timeout = 10)
{
    int rc[18];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(forged_handles_main, rc, 2, -1, NULL), 0);
    for (size_t i = 0; i < NELEM(rc); i++)
        cr_expect_eq(rc[i], EINVAL, "forged handle %zu, call %zu: %d", i / 3, i % 3, rc[i]);
}

/* A handle of a thread of another run going on at the same time. */
static green_t other_run_thread;
static atomic_int other_run_state;   /* 1: thread published; 2: may finish */

static void *other_run_waits(void *arg)
{
    (void)arg;
    while (atomic_load(&other_run_state) != 2)
        green_sleep_ns(1 * MS);
    return NULL;
}

static void *other_run_main(void *arg)
{
    (void)arg;
    if (green_spawn(&other_run_thread, other_run_waits, NULL) != 0)
        return P(1);
    atomic_store(&other_run_state, 1);
    return green_join(other_run_thread, NULL) == 0 ? NULL : P(1);
}

static void *other_run_pthread(void *arg)
{
    return P(run(other_run_main, NULL, 1, -1, (void **)arg));
}

static void *foreign_handle_main(void *arg)
{
    int *rc = arg;
    while (atomic_load(&other_run_state) != 1)
        green_sleep_ns(1 * MS);
    rc[0] = green_join_until(other_run_thread, NULL, green_now_ns() + 5 * MS);
    rc[1] = green_detach(other_run_thread);
    atomic_store(&other_run_state, 2);
    return NULL;
}

Test(badinput, a_handle_from_another_run_is_einval, .timeout = 10)
{
    int rc[2] = { -1, -1 };
    void *other_ret = P(1), *prc = P(1);
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, other_run_pthread, &other_ret), 0);
    cr_assert_eq(run(foreign_handle_main, rc, 1, -1, NULL), 0);
    pthread_join(pt, &prc);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], EINVAL);
    cr_expect_null(prc, "the other run failed");
    cr_expect_null(other_ret, "the other run's join failed: its thread was taken");
}

static void *slow(void *arg)
{
    green_sleep_ns(20 * MS);
    return arg;
}

static void *join_deadlines_main(void *arg)
{
    int *rc = arg;
    green_t t;
    if (green_spawn(&t, slow, P(42)) != 0)
        return P(1);
    void *r = NULL;
    rc[0] = green_join_until(t, &r, 0);
    rc[1] = green_join_until(t, &r, green_now_ns() - 1);
    rc[2] = green_join_until(t, &r, GREEN_FOREVER - 1);
    rc[3] = (int)U(r);
    return NULL;
}

Test(badinput, join_with_a_deadline_in_the_past_is_etimedout_and_the_join_stands, .timeout = 10)
{
    int rc[4] = { -1, -1, -1, -1 };
    cr_assert_eq(run(join_deadlines_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], ETIMEDOUT);
    cr_expect_eq(rc[1], ETIMEDOUT);
    cr_expect_eq(rc[2], 0, "a deadline near UINT64_MAX: %d", rc[2]);
    cr_expect_eq(rc[3], 42);
}

static void *handle_ids_main(void *arg)
{
    uint64_t *ids = arg;
    green_t zero = { NULL, 0 };
    ids[0] = green_id(zero);
    ids[1] = green_id(green_self());
    return NULL;
}

Test(badinput, identity_outside_a_green_thread_is_the_zero_handle_and_minus_one, .timeout = 10)
{
    green_t s = green_self();
    cr_expect_null(s.p);
    cr_expect_eq(green_id(s), 0u);
    cr_expect_eq(green_worker_index(), -1);
    uint64_t ids[2] = { 1, 0 };
    cr_assert_eq(run(handle_ids_main, ids, 1, -1, NULL), 0);
    cr_expect_eq(ids[0], 0u);
    cr_expect_neq(ids[1], 0u);
}

static void *sleeps_main(void *arg)
{
    int *rc = arg;
    uint64_t t0 = mono_ns();
    rc[0] = green_sleep_ns(0);
    rc[1] = green_sleep_until(0);
    rc[2] = green_sleep_until(1);
    rc[3] = mono_ns() - t0 < 1000 * MS;
    return NULL;
}

Test(badinput, sleeping_zero_or_until_the_past_returns_at_once, .timeout = 10)
{
    int rc[4] = { -1, -1, -1, 0 };
    cr_assert_eq(run(sleeps_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
    cr_expect(rc[3], "took a second or more");
}

static void *sleep_forever_main(void *arg)
{
    (void)arg;
    green_sleep_until(GREEN_FOREVER);
    return NULL;
}

Test(badinput, sleeping_until_forever_alone_is_a_reported_deadlock, .timeout = 10)
{
    char err[4096];
    struct capture c = capture_begin();
    int rc = run(sleep_forever_main, NULL, 2, -1, NULL);
    capture_end(c, err, sizeof err);
    cr_expect_eq(rc, EDEADLK);
    cr_expect_not_null(strstr(err, "green_sleep"), "stderr: %s", err);
}

static void *huge_sleeper(void *arg)
{
    return P(green_sleep_ns(UINT64_MAX - (uint64_t)U(arg)));
}

static void *huge_sleep_main(void *arg)
{
    int *rc = arg;
    green_t t[2];
    if (green_spawn(&t[0], huge_sleeper, P(0)) || green_spawn(&t[1], huge_sleeper, P(5)))
        return P(1);
    green_sleep_ns(1 * MS);
    void *r[2] = { P(-1), P(-1) };
    green_join(t[0], &r[0]);
    green_join(t[1], &r[1]);
    rc[0] = (int)U(r[0]);
    rc[1] = (int)U(r[1]);
    rc[2] = green_sleep_ns(UINT64_MAX);   /* the clock is at its end: at once */
    return NULL;
}

/* In a deterministic run the virtual clock jumps to the next deadline when
 * every thread waits: a sleep of UINT64_MAX ns ends, and time does not wrap. */
Test(badinput, a_sleep_of_uint64_max_ns_ends_in_a_deterministic_run, .timeout = 10)
{
    int rc[3] = { -1, -1, -1 };
    green_config_t cfg = config(1);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.seed = 1;
    cr_assert_eq(green_run(huge_sleep_main, rc, &cfg, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
}

/* ---- mutex, cond -------------------------------------------------------- */

static void *null_sync_main(void *arg)
{
    int *rc = arg;
    int i = 0;
    green_mutex_t m = GREEN_MUTEX_INIT;
    green_cond_t c = GREEN_COND_INIT;
    rc[i++] = green_mutex_lock(NULL);
    rc[i++] = green_mutex_lock_until(NULL, 0);
    rc[i++] = green_mutex_trylock(NULL);
    rc[i++] = green_mutex_unlock(NULL);
    rc[i++] = green_cond_wait(NULL, &m);
    rc[i++] = green_cond_wait(&c, NULL);
    rc[i++] = green_cond_wait_until(NULL, NULL, 0);
    rc[i++] = green_cond_signal(NULL);
    rc[i++] = green_cond_broadcast(NULL);
    rc[i++] = green_wg_add(NULL, 1);
    rc[i++] = green_wg_done(NULL);
    rc[i++] = green_wg_wait(NULL);
    rc[i++] = green_wg_wait_until(NULL, 0);
    rc[i++] = green_chan_send(NULL, &i);
    rc[i++] = green_chan_recv(NULL, &i);
    rc[i++] = green_chan_send_until(NULL, &i, 0);
    rc[i++] = green_chan_recv_until(NULL, &i, 0);
    rc[i++] = green_chan_close(NULL);
    return NULL;
}

#define NNULL_CALLS 18

Test(badinput, null_objects_are_einval_on_a_green_thread, .timeout = 10)
{
    int rc[NNULL_CALLS];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(null_sync_main, rc, 1, -1, NULL), 0);
    for (int i = 0; i < NNULL_CALLS; i++)
        cr_expect_eq(rc[i], EINVAL, "call %d with NULL: %d", i, rc[i]);
}

Test(badinput, null_objects_are_einval_anywhere_for_init_and_destroy)
{
    cr_expect_eq(green_mutex_init(NULL), EINVAL);
    cr_expect_eq(green_mutex_destroy(NULL), EINVAL);
    cr_expect_eq(green_cond_init(NULL), EINVAL);
    cr_expect_eq(green_cond_destroy(NULL), EINVAL);
    cr_expect_eq(green_wg_init(NULL), EINVAL);
    cr_expect_eq(green_wg_destroy(NULL), EINVAL);
    cr_expect_eq(green_chan_create(NULL, 1, 1), EINVAL);
    cr_expect_eq(green_chan_destroy(NULL), EINVAL);
    cr_expect_eq(green_chan_len(NULL), 0u);
    cr_expect_eq(green_chan_cap(NULL), 0u);
}

struct held {
    green_mutex_t m;
    green_cond_t c;
    atomic_int stage;     /* 1: the holder holds m */
    int rc[8];
};

static void *hold_until_stage_2(void *arg)
{
    struct held *h = arg;
    if (green_mutex_lock(&h->m) != 0)
        return P(1);
    atomic_store(&h->stage, 1);
    while (atomic_load(&h->stage) != 2)
        green_sleep_ns(1 * MS);
    return P(green_mutex_unlock(&h->m));
}

static void *mutex_misuse_main(void *arg)
{
    struct held *h = arg;
    green_t t;
    if (green_spawn(&t, hold_until_stage_2, h) != 0)
        return P(1);
    while (atomic_load(&h->stage) != 1)
        green_sleep_ns(1 * MS);
    h->rc[0] = green_mutex_unlock(&h->m);              /* another thread holds it */
    h->rc[1] = green_mutex_trylock(&h->m);
    h->rc[2] = green_mutex_lock_until(&h->m, 0);
    h->rc[3] = green_mutex_destroy(&h->m);
    h->rc[4] = green_cond_wait_until(&h->c, &h->m, 0); /* m held, not by us */
    atomic_store(&h->stage, 2);
    void *r = P(1);
    green_join(t, &r);
    h->rc[5] = (int)U(r);
    h->rc[6] = green_mutex_lock(&h->m);
    h->rc[7] = green_mutex_lock(&h->m);                /* again */
    green_mutex_unlock(&h->m);
    return NULL;
}

Test(badinput, a_mutex_held_by_another_thread_is_eperm_ebusy_etimedout, .timeout = 10)
{
    static struct held h;
    memset(h.rc, 0xff, sizeof h.rc);
    cr_assert_eq(run(mutex_misuse_main, &h, 2, -1, NULL), 0);
    cr_expect_eq(h.rc[0], EPERM, "unlock: %d", h.rc[0]);
    cr_expect_eq(h.rc[1], EBUSY, "trylock: %d", h.rc[1]);
    cr_expect_eq(h.rc[2], ETIMEDOUT, "lock_until(0): %d", h.rc[2]);
    cr_expect_eq(h.rc[3], EBUSY, "destroy: %d", h.rc[3]);
    cr_expect_eq(h.rc[4], EPERM, "cond_wait: %d", h.rc[4]);
    cr_expect_eq(h.rc[5], 0, "the holder's unlock: %d", h.rc[5]);
    cr_expect_eq(h.rc[6], 0);
    cr_expect_eq(h.rc[7], EDEADLK);
}

/* A thread that finishes holding a mutex leaves it locked; the threads
 * spawned after it (on one worker, into its freed control block) are not
 * its owner. */
static void *lock_and_finish(void *arg)
{
    return P(green_mutex_lock(arg));
}

static void *try_unlock_and_relock(void *arg)
{
    green_mutex_t *m = arg;
    int unlock = green_mutex_unlock(m), lock = green_mutex_lock_until(m, green_now_ns() + MS);
    return P(unlock == EPERM && lock == ETIMEDOUT ? 0 : 1);
}

static void *dead_owner_main(void *arg)
{
    green_mutex_t *m = arg;
    green_t t;
    void *r = P(1);
    if (green_spawn(&t, lock_and_finish, m) != 0 || green_join(t, &r) != 0 || r)
        return P(1);
    uintptr_t bad = 0;
    for (int i = 0; i < 8; i++) {
        if (green_spawn(&t, try_unlock_and_relock, m) != 0 || green_join(t, &r) != 0)
            return P(2);
        bad += U(r) != 0;
    }
    return P(bad);
}

Test(badinput, threads_reusing_a_finished_owners_control_block_do_not_own_its_mutex,
     .timeout = 10)
{
    static green_mutex_t m;
    void *r = P(1);
    cr_assert_eq(run(dead_owner_main, &m, 1, -1, &r), 0);
    cr_expect_null(r, "%lu of 8 later threads unlocked it or got EDEADLK", (unsigned long)U(r));
}

static void *cond_misuse_main(void *arg)
{
    int *rc = arg;
    green_mutex_t m = GREEN_MUTEX_INIT;
    green_cond_t c = GREEN_COND_INIT;
    rc[0] = green_cond_wait(&c, &m);                   /* m not held */
    rc[1] = green_cond_signal(&c);                     /* nobody waits */
    rc[2] = green_cond_broadcast(&c);
    green_mutex_lock(&m);
    rc[3] = green_cond_wait_until(&c, &m, 0);
    rc[4] = green_mutex_unlock(&m);                    /* held again after ETIMEDOUT */
    rc[5] = green_cond_destroy(&c);
    rc[6] = green_mutex_destroy(&m);
    return NULL;
}

Test(badinput, cond_wait_without_the_mutex_is_eperm_and_a_past_deadline_etimedout,
     .timeout = 10)
{
    int rc[7];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(cond_misuse_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EPERM);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
    cr_expect_eq(rc[3], ETIMEDOUT);
    cr_expect_eq(rc[4], 0);
    cr_expect_eq(rc[5], 0);
    cr_expect_eq(rc[6], 0);
}

struct waited {
    green_mutex_t m;
    green_cond_t c;
    green_wg_t wg;
    atomic_int parked;
};

static void *cond_waiter(void *arg)
{
    struct waited *s = arg;
    green_mutex_lock(&s->m);
    atomic_fetch_add(&s->parked, 1);
    int rc = green_cond_wait(&s->c, &s->m);
    green_mutex_unlock(&s->m);
    return P(rc);
}

static void *wg_waiter(void *arg)
{
    struct waited *s = arg;
    atomic_fetch_add(&s->parked, 1);
    return P(green_wg_wait(&s->wg));
}

static void *destroy_waited_main(void *arg)
{
    int *rc = arg;
    static struct waited s;
    memset(&s, 0, sizeof s);
    green_wg_add(&s.wg, 1);
    green_t t[2];
    if (green_spawn(&t[0], cond_waiter, &s) || green_spawn(&t[1], wg_waiter, &s))
        return P(1);
    while (atomic_load(&s.parked) != 2)
        green_sleep_ns(1 * MS);
    green_sleep_ns(5 * MS);
    rc[0] = green_cond_destroy(&s.c);
    rc[1] = green_wg_destroy(&s.wg);
    green_mutex_lock(&s.m);
    green_cond_signal(&s.c);
    green_mutex_unlock(&s.m);
    green_wg_done(&s.wg);
    void *r[2] = { P(-1), P(-1) };
    green_join(t[0], &r[0]);
    green_join(t[1], &r[1]);
    rc[2] = (int)U(r[0]);
    rc[3] = (int)U(r[1]);
    rc[4] = green_cond_destroy(&s.c);
    rc[5] = green_wg_destroy(&s.wg);
    return NULL;
}

Test(badinput, destroying_a_waited_on_cond_or_wait_group_is_ebusy, .timeout = 10)
{
    int rc[6];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(destroy_waited_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], EBUSY);
    cr_expect_eq(rc[2], 0);
    cr_expect_eq(rc[3], 0);
    cr_expect_eq(rc[4], 0);
    cr_expect_eq(rc[5], 0);
}

static void *wg_misuse_main(void *arg)
{
    int *rc = arg;
    green_wg_t wg = GREEN_WG_INIT;
    rc[0] = green_wg_done(&wg);                        /* below zero */
    rc[1] = green_wg_add(&wg, INT64_MAX);
    rc[2] = green_wg_add(&wg, 1);                      /* past INT64_MAX */
    rc[3] = green_wg_wait_until(&wg, 0);
    rc[4] = green_wg_add(&wg, -INT64_MAX);
    rc[5] = green_wg_wait(&wg);                        /* zero: at once */
    rc[6] = green_wg_add(&wg, 0);
    return NULL;
}

Test(badinput, a_wait_group_refuses_to_leave_zero_to_int64_max, .timeout = 10)
{
    int rc[7];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(wg_misuse_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], EINVAL);
    cr_expect_eq(rc[3], ETIMEDOUT);
    cr_expect_eq(rc[4], 0);
    cr_expect_eq(rc[5], 0);
    cr_expect_eq(rc[6], 0);
}

/* ---- channels, select --------------------------------------------------- */

Test(badinput, a_channel_too_large_to_exist_is_einval_or_enomem)
{
    green_chan_t *c = NULL;
    cr_expect_eq(green_chan_create(&c, SIZE_MAX, 2), EINVAL);
    cr_expect_eq(green_chan_create(&c, 2, SIZE_MAX), EINVAL);
    cr_expect_eq(green_chan_create(&c, (size_t)1 << 33, (size_t)1 << 33), EINVAL);
    cr_expect_eq(green_chan_create(&c, SIZE_MAX, 0), EINVAL, "no element is SIZE_MAX bytes");
    cr_expect_eq(green_chan_create(&c, (size_t)PTRDIFF_MAX + 1, 0), EINVAL);
    int rc = green_chan_create(&c, 1, (size_t)1 << 50);
    cr_expect(rc == EINVAL || rc == ENOMEM, "1 PiB of buffer: %d", rc);
    cr_expect_null(c);
}

Test(badinput, a_channel_of_events_may_have_any_capacity)
{
    green_chan_t *c = NULL;
    cr_assert_eq(green_chan_create(&c, 0, SIZE_MAX), 0);
    cr_expect_eq(green_chan_cap(c), SIZE_MAX);
    cr_expect_eq(green_chan_len(c), 0u);
    cr_expect_eq(green_chan_destroy(c), 0);
}

static void *chan_misuse_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(int), 1) != 0)
        return P(1);
    int v = 7, got = -1;
    rc[0] = green_chan_send(c, NULL);                  /* no value */
    rc[1] = green_chan_send(c, &v);
    rc[2] = green_chan_send_until(c, &v, 0);           /* full */
    rc[3] = green_chan_close(c);
    rc[4] = green_chan_close(c);                       /* twice */
    rc[5] = green_chan_send(c, &v);
    rc[6] = green_chan_recv(c, &got);                  /* the buffered value */
    rc[7] = got;
    got = -1;
    rc[8] = green_chan_recv(c, &got);                  /* drained */
    rc[9] = got;
    rc[10] = green_chan_recv_until(c, NULL, 0);
    rc[11] = green_chan_destroy(c);
    if (green_chan_create(&c, 0, 0) != 0)
        return P(1);
    rc[12] = green_chan_send_until(c, NULL, green_now_ns() + 1 * MS); /* events: no value */
    rc[13] = green_chan_recv_until(c, NULL, 0);
    green_chan_destroy(c);
    return NULL;
}

Test(badinput, channel_misuse_is_einval_epipe_etimedout, .timeout = 10)
{
    int rc[14];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(chan_misuse_main, rc, 1, -1, NULL), 0);
    int want[14] = { EINVAL, 0, ETIMEDOUT, 0, EPIPE, EPIPE, 0, 7, EPIPE, 0, EPIPE, 0,
                     ETIMEDOUT, ETIMEDOUT };
    for (int i = 0; i < 14; i++)
        cr_expect_eq(rc[i], want[i], "step %d: %d, not %d", i, rc[i], want[i]);
}

static void *blocked_sender(void *arg)
{
    int v = 1;
    return P(green_chan_send((green_chan_t *)arg, &v));
}

static void *destroy_busy_chan_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(int), 0) != 0)
        return P(1);
    green_t t;
    if (green_spawn(&t, blocked_sender, c) != 0)
        return P(1);
    settle();
    rc[0] = green_chan_destroy(c);
    rc[1] = green_chan_close(c);
    void *r = P(-1);
    green_join(t, &r);
    rc[2] = (int)U(r);
    rc[3] = green_chan_destroy(c);
    return NULL;
}

Test(badinput, destroying_a_channel_a_thread_waits_on_is_ebusy, .timeout = 10)
{
    int rc[4];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(destroy_busy_chan_main, rc, 1, GREEN_PREEMPT_OFF, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], EPIPE);
    cr_expect_eq(rc[3], 0);
}

static void *select_misuse_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(int), 1) != 0)
        return P(1);
    int v = 1;
    size_t k = 99;
    green_chan_case_t ok[1] = { { c, GREEN_CHAN_RECV, &v, 0 } };
    green_chan_case_t badop[2] = { { c, GREEN_CHAN_RECV, &v, 0 }, { c, 0, &v, 0 } };
    green_chan_case_t badop2[1] = { { NULL, 3, &v, 0 } };
    green_chan_case_t noval[1] = { { c, GREEN_CHAN_SEND, NULL, 0 } };
    green_chan_case_t nils[2] = { { NULL, GREEN_CHAN_RECV, &v, 0 }, { NULL, GREEN_CHAN_SEND, NULL, 0 } };
    rc[0] = green_select(NULL, 1, &k);
    rc[1] = green_select(ok, 1, NULL);
    rc[2] = green_select_try(badop, 2, &k);
    rc[3] = green_select_try(badop2, 1, &k);
    rc[4] = green_select_try(noval, 1, &k);
    rc[5] = green_select_try(ok, SIZE_MAX, &k);        /* a count no array has */
    rc[6] = green_select_try(ok, (size_t)UINT32_MAX + 1, &k);
    rc[7] = green_select_try(NULL, 0, &k);
    rc[8] = green_select_until(NULL, 0, &k, green_now_ns() + 1 * MS);
    rc[9] = green_select_try(nils, 2, &k);
    rc[10] = green_select_until(nils, 2, &k, 0);
    rc[11] = (int)k;                                   /* untouched by all of these */
    green_chan_destroy(c);
    return NULL;
}

Test(badinput, select_misuse_is_einval_and_no_case_is_eagain_or_etimedout, .timeout = 10)
{
    int rc[12];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(select_misuse_main, rc, 1, -1, NULL), 0);
    int want[12] = { EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, EAGAIN,
                     ETIMEDOUT, EAGAIN, ETIMEDOUT, 99 };
    for (int i = 0; i < 12; i++)
        cr_expect_eq(rc[i], want[i], "step %d: %d, not %d", i, rc[i], want[i]);
}

static void *select_nothing_main(void *arg)
{
    (void)arg;
    size_t k;
    green_select(NULL, 0, &k);
    return NULL;
}

/* Go's `select {}`: blocks forever, which alone is a deadlock. */
Test(badinput, select_on_no_case_forever_alone_is_a_reported_deadlock, .timeout = 10)
{
    char err[4096];
    struct capture c = capture_begin();
    int rc = run(select_nothing_main, NULL, 2, -1, NULL);
    capture_end(c, err, sizeof err);
    cr_expect_eq(rc, EDEADLK);
    cr_expect_not_null(strstr(err, "green_select"), "stderr: %s", err);
}

/* The sender of a select's value destroys the channel as soon as its send
 * returns: the select, though still on its way out, must not touch it. */
struct select_then_destroy {
    green_chan_t *a, *b;
    atomic_int parked;
};

static void *selecter(void *arg)
{
    struct select_then_destroy *s = arg;
    int v = 0;
    size_t k = 9;
    green_chan_case_t cases[2] = { { s->a, GREEN_CHAN_RECV, &v, 0 },
                                   { s->b, GREEN_CHAN_RECV, &v, 0 } };
    atomic_store(&s->parked, 1);
    int rc = green_select(cases, 2, &k);
    return P(rc == 0 && k == 0 && v == 5 && cases[0].err == 0);
}

static void *select_then_destroy_main(void *arg)
{
    int *rc = arg;
    static struct select_then_destroy s;
    if (green_chan_create(&s.a, sizeof(int), 0) || green_chan_create(&s.b, sizeof(int), 0))
        return P(1);
    for (int round = 0; round < 200; round++) {
        atomic_store(&s.parked, 0);
        green_t t;
        if (green_spawn(&t, selecter, &s) != 0)
            return P(1);
        while (!atomic_load(&s.parked))
            green_yield();
        int v = 5;
        green_chan_t *a = s.a;
        if (green_chan_send(a, &v) != 0)
            return P(1);
        rc[0] += green_chan_destroy(a) != 0;       /* the value is received: a is done */
        if (green_chan_create(&s.a, sizeof(int), 0) != 0)
            return P(1);
        void *ok = NULL;
        green_join(t, &ok);
        rc[1] += ok == NULL;
    }
    green_chan_destroy(s.a);
    green_chan_destroy(s.b);
    return NULL;
}

Test(badinput, a_channel_may_be_destroyed_once_a_select_took_its_value, .timeout = 30)
{
    int rc[2] = { 0, 0 };
    cr_assert_eq(run(select_then_destroy_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], 0, "destroy failed %d times", rc[0]);
    cr_expect_eq(rc[1], 0, "the select went wrong %d times", rc[1]);
}

/* ---- file descriptors --------------------------------------------------- */

static void *fd_misuse_main(void *arg)
{
    int *rc = arg;
    int p[2];
    if (pipe(p) != 0)
        return P(1);
    /* The run's epoll instance first: it would take the number freed. */
    green_fd_wait(p[0], POLLIN, 0);
    int closed = dup(p[0]);
    close(closed);
    rc[0] = green_fd_wait(-1, POLLIN, GREEN_FOREVER);
    rc[1] = green_fd_wait(INT_MAX, POLLIN, GREEN_FOREVER);
    rc[2] = green_fd_wait(closed, POLLIN, GREEN_FOREVER);
    rc[3] = green_fd_wait(p[0], 0, GREEN_FOREVER);
    rc[4] = green_fd_wait(p[0], POLLPRI, GREEN_FOREVER);
    rc[5] = green_fd_wait(p[0], POLLIN | 0x4000, GREEN_FOREVER);
    rc[6] = green_fd_wait(p[0], POLLIN, 0);
    rc[7] = green_fd_wait(p[0], POLLIN | POLLOUT, green_now_ns() + 1 * MS);
    rc[8] = green_fd_forget(-1);
    rc[9] = green_fd_forget(INT_MAX);
    rc[10] = green_fd_close(-1);
    rc[11] = green_fd_close(closed);
    rc[12] = green_fd_close(p[0]);
    rc[13] = green_fd_close(p[0]);                     /* twice */
    green_fd_close(p[1]);
    return NULL;
}

Test(badinput, fd_wait_on_bad_fds_and_events_is_ebadf_einval_etimedout, .timeout = 10)
{
    int rc[14];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(fd_misuse_main, rc, 1, -1, NULL), 0);
    int want[14] = { EBADF, EBADF, EBADF, EINVAL, EINVAL, EINVAL, ETIMEDOUT, ETIMEDOUT, EBADF, 0,
                     EBADF, EBADF, 0, EBADF };
    for (int i = 0; i < 14; i++)
        cr_expect_eq(rc[i], want[i], "step %d: %d, not %d", i, rc[i], want[i]);
}

static void *poll_misuse_main(void *arg)
{
    int *rc = arg;
    int n = -1;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct pollfd negative[2] = { { -1, POLLIN, 0 }, { -5, POLLOUT, 0 } };
    struct pollfd closed[1] = { { 1000, POLLIN, 0 } };
    rc[0] = green_poll(NULL, 1, 0, &n);
    rc[1] = green_poll(negative, (size_t)INT_MAX + 1, 0, &n);
    rc[2] = green_poll(negative, SIZE_MAX, 0, NULL);
    rc[3] = green_poll(negative, (size_t)rl.rlim_cur + 1, 0, NULL);
    rc[4] = green_poll(NULL, 0, green_now_ns() + 1 * MS, &n);
    rc[5] = n;
    rc[6] = green_poll(negative, 2, green_now_ns() + 1 * MS, &n);
    rc[7] = negative[0].revents | negative[1].revents;
    rc[8] = green_poll(closed, 1, GREEN_FOREVER, &n);
    rc[9] = n;
    rc[10] = closed[0].revents;
    return NULL;
}

Test(badinput, green_poll_misuse_is_einval_and_a_closed_fd_pollnval, .timeout = 10)
{
    int rc[11];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(poll_misuse_main, rc, 1, -1, NULL), 0);
    int want[11] = { EINVAL, EINVAL, EINVAL, EINVAL, ETIMEDOUT, 0, ETIMEDOUT, 0, 0, 1, POLLNVAL };
    for (int i = 0; i < 11; i++)
        cr_expect_eq(rc[i], want[i], "step %d: %d, not %d", i, rc[i], want[i]);
}

static void *poll_nothing_main(void *arg)
{
    (void)arg;
    struct pollfd none[1] = { { -1, POLLIN, 0 } };
    green_poll(none, 1, GREEN_FOREVER, NULL);
    return NULL;
}

/* poll(2) on no fd and no timeout never returns; a green thread that does
 * it alone is a deadlock like any other. */
Test(badinput, polling_no_fd_forever_alone_is_a_reported_deadlock, .timeout = 10)
{
    char err[4096];
    struct capture c = capture_begin();
    int rc = run(poll_nothing_main, NULL, 2, -1, NULL);
    capture_end(c, err, sizeof err);
    cr_expect_eq(rc, EDEADLK);
    cr_expect_not_null(strstr(err, "green_poll"), "stderr: %s", err);
}

Test(badinput, fd_calls_outside_a_green_thread)
{
    struct pollfd pfd = { 0, POLLIN, 0 };
    int n = 5;
    cr_expect_eq(green_fd_wait(0, POLLIN, 0), EPERM);
    cr_expect_eq(green_poll(&pfd, 1, 0, &n), EPERM);
    cr_expect_eq(n, 0);
    cr_expect_eq(green_fd_forget(-1), EBADF);
    cr_expect_eq(green_fd_forget(12345), 0);
    cr_expect_eq(green_fd_close(-1), EBADF);
    cr_expect_eq(green_fd_close(12345), EBADF);
}

/* ---- offload ------------------------------------------------------------ */

static void *offload_misuse_main(void *arg)
{
    int *rc = arg;
    void *r = P(1);
    rc[0] = green_offload(NULL, NULL, &r);
    rc[1] = green_offload(nothing, P(3), NULL);
    rc[2] = green_offload(nothing, P(4), &r);
    rc[3] = (int)U(r);
    return NULL;
}

Test(badinput, offload_of_a_null_function_is_einval, .timeout = 10)
{
    int rc[4];
    memset(rc, 0xff, sizeof rc);
    cr_assert_eq(run(offload_misuse_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], 0);
    cr_expect_eq(rc[2], 0);
    cr_expect_eq(rc[3], 4);
    void *r = NULL;
    cr_expect_eq(green_offload(NULL, NULL, NULL), EINVAL);
    cr_expect_eq(green_offload(nothing, P(5), &r), 0, "outside a run fn runs right here");
    cr_expect_eq(U(r), 5u);
}

/* ---- preemption, budget ------------------------------------------------- */

static atomic_int other_ran;

static void *set_other_ran(void *arg)
{
    (void)arg;
    atomic_store(&other_ran, 1);
    return NULL;
}

static void *nopreempt_underflow_main(void *arg)
{
    int *rc = arg;
    for (int i = 0; i < 3; i++)
        green_nopreempt_end();                         /* no begin */
    green_nopreempt_begin();
    green_nopreempt_end();
    green_t t;
    if (green_spawn(&t, set_other_ran, NULL) != 0)
        return P(1);
    /* Preemptible again: a spent budget yields to the new thread. */
    green_reduce(UINT_MAX);
    green_reduce(UINT_MAX);
    rc[0] = atomic_load(&other_ran);
    green_join(t, NULL);
    return NULL;
}

Test(badinput, nopreempt_end_without_begin_does_nothing, .timeout = 10)
{
    int rc[1] = { -1 };
    cr_assert_eq(run(nopreempt_underflow_main, rc, 1, GREEN_PREEMPT_BUDGET, NULL), 0);
    cr_expect_eq(rc[0], 1, "the extra ends left the thread unpreemptible");
}

Test(badinput, preemption_calls_outside_a_green_thread_do_nothing)
{
    green_nopreempt_end();
    green_nopreempt_begin();
    green_nopreempt_begin();
    green_nopreempt_end();
    green_safepoint();
    green_reduce(0);
    green_reduce(UINT_MAX);
    green_reduce(UINT_MAX);
    green_budget_spent();
    cr_expect_not_null(green_budget_counter());
    uint64_t d = 1, s = 1;
    cr_expect_eq(green_schedule_digest(&d, &s), EPERM);
    cr_expect_eq(d, 1u);
    cr_expect_eq(s, 1u);
    green_stats(NULL);
    green_yield();
}

static void *digest_main(void *arg)
{
    int *rc = arg;
    rc[0] = green_schedule_digest(NULL, NULL);
    return NULL;
}

Test(badinput, schedule_digest_of_a_run_that_is_not_deterministic_is_einval, .timeout = 10)
{
    int rc[1] = { -1 };
    cr_assert_eq(run(digest_main, rc, 1, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    green_config_t cfg = config(1);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.seed = 3;
    rc[0] = -1;
    cr_assert_eq(green_run(digest_main, rc, &cfg, NULL), 0);
    cr_expect_eq(rc[0], 0, "both pointers NULL: %d", rc[0]);
}

/* ---- code ranges -------------------------------------------------------- */

Test(badinput, code_ranges_refuse_null_empty_wrapping_and_bad_kinds)
{
    static char code[64];
    cr_expect_eq(green_code_range_add(NULL, 16, GREEN_CODE_UNSAFE), EINVAL);
    cr_expect_eq(green_code_range_add(code, 0, GREEN_CODE_UNSAFE), EINVAL);
    cr_expect_eq(green_code_range_add(code, SIZE_MAX, GREEN_CODE_UNSAFE), EINVAL);
    cr_expect_eq(green_code_range_add((void *)(UINTPTR_MAX - 15), 16, GREEN_CODE_UNSAFE), EINVAL);
    int kinds[] = { -1, GREEN_CODE_NOPREEMPT, GREEN_CODE_UNKNOWN, GREEN_CODE_RUNTIME, 99 };
    for (size_t i = 0; i < NELEM(kinds); i++)
        cr_expect_eq(green_code_range_add(code, 16, kinds[i]), EINVAL, "kind %d", kinds[i]);
    cr_expect_eq(green_code_range_add(code, 16, GREEN_CODE_PREEMPTIBLE), 0);
    cr_expect_eq(green_code_range_add(code + 8, 16, GREEN_CODE_UNSAFE), EEXIST);
    cr_expect_eq(green_code_range_remove(code, 8), ENOENT);
    cr_expect_eq(green_code_range_remove(NULL, 0), ENOENT);
    cr_expect_eq(green_code_range_remove(code, 16), 0);
    cr_expect_eq(green_code_range_remove(code, 16), ENOENT, "removed twice");
    cr_expect_eq(green_code_kind(NULL), GREEN_CODE_UNKNOWN);
    cr_expect_eq(green_code_kind((void *)UINTPTR_MAX), GREEN_CODE_UNKNOWN);
}

/* ---- wrong threads ------------------------------------------------------ */

struct from_pthread {
    green_t live;
    green_mutex_t m;
    green_cond_t c;
    green_chan_t *ch;
    green_wg_t wg;
    int rc[16];
    uint64_t digest_rc;
};

static void *wrong_thread_calls(void *arg)
{
    struct from_pthread *f = arg;
    int i = 0;
    f->rc[i++] = green_detach(f->live);
    f->rc[i++] = green_mutex_unlock(&f->m);
    f->rc[i++] = green_mutex_trylock(&f->m);
    f->rc[i++] = green_cond_signal(&f->c);
    f->rc[i++] = green_cond_broadcast(&f->c);
    f->rc[i++] = green_chan_close(f->ch);
    f->rc[i++] = green_wg_add(&f->wg, 1);
    f->rc[i++] = green_wg_done(&f->wg);
    f->rc[i++] = green_select_try(NULL, 0, &(size_t){ 0 });
    f->rc[i++] = green_fd_wait(0, POLLIN, 0);
    f->rc[i++] = green_schedule_digest(NULL, NULL);
    f->rc[i++] = green_worker_index() == -1 ? EPERM : 0;
    f->rc[i++] = green_self().p == NULL ? EPERM : 0;
    return NULL;
}

#define NWRONG 13

static void *wrong_thread_main(void *arg)
{
    struct from_pthread *f = arg;
    f->live = green_self();
    if (green_chan_create(&f->ch, 0, 0) != 0 || green_mutex_lock(&f->m) != 0 ||
        green_wg_add(&f->wg, 1) != 0)
        return P(1);
    pthread_t pt;
    if (pthread_create(&pt, NULL, wrong_thread_calls, f) != 0)
        return P(1);
    pthread_join(pt, NULL);
    /* Nothing changed: m is still ours, ch open, wg at 1. */
    f->rc[NWRONG] = green_mutex_unlock(&f->m);
    f->rc[NWRONG + 1] = green_chan_close(f->ch);
    f->rc[NWRONG + 2] = green_wg_done(&f->wg);
    green_chan_destroy(f->ch);
    return NULL;
}

Test(badinput, green_only_calls_from_a_plain_pthread_are_eperm_and_change_nothing,
     .timeout = 10)
{
    static struct from_pthread f;
    memset(f.rc, 0xff, sizeof f.rc);
    void *ret = P(1);
    cr_assert_eq(run(wrong_thread_main, &f, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int i = 0; i < NWRONG; i++)
        cr_expect_eq(f.rc[i], EPERM, "call %d from a pthread: %d", i, f.rc[i]);
    for (int i = NWRONG; i < NWRONG + 3; i++)
        cr_expect_eq(f.rc[i], 0, "afterwards, call %d: %d", i, f.rc[i]);
}
