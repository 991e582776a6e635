/* Timers: sleep accuracy, many sleepers in parallel, deadlines in the past,
 * and the order in which the deadlines of different blocking calls fire.
 *
 * Bounds: on the 2-core VM these were written on, nanosleep(1 ms) is late by
 * ~0.1 ms at the median and ~0.3 ms at worst over 200 calls when the machine
 * is quiet.  The sleep bounds (median 0.5 ms, p99 2 ms) catch a runtime that
 * rounds timers to its quantum or polls them; each is widened by the same
 * statistic of nanosleep measured alongside, so a busy host does not fail
 * the test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

Test(timer, green_now_ns_reads_clock_monotonic)
{
    uint64_t a = mono_ns();
    uint64_t g = green_now_ns();
    uint64_t b = mono_ns();
    cr_expect_geq(g + 1 * MS, a, "green_now_ns %llu is behind CLOCK_MONOTONIC %llu",
                  (unsigned long long)g, (unsigned long long)a);
    cr_expect_leq(g, b + 1 * MS, "green_now_ns %llu is ahead of CLOCK_MONOTONIC %llu",
                  (unsigned long long)g, (unsigned long long)b);
    uint64_t prev = green_now_ns();
    int backwards = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t now = green_now_ns();
        backwards += now < prev;
        prev = now;
    }
    cr_expect_eq(backwards, 0);
}

/* ---- accuracy ----------------------------------------------------------- */

#define MAX_SAMPLES 200

/* Samples of green_sleep_ns and, interleaved with them so both see the same
 * machine, of plain nanosleep (which blocks the worker: fine, nothing else
 * runs).  The bounds are the brief's plus what nanosleep itself showed: on a
 * quiet machine that adds ~0.1 ms; with the cores oversubscribed (two CPU
 * hogs on the 2-core VM) nanosleep's own p99 reaches 2-4 ms, and no green
 * runtime can do better than the kernel that wakes its workers. */
struct accuracy {
    uint64_t period_ns;
    int n;
    int64_t late_ns[MAX_SAMPLES];
    int64_t base_ns[MAX_SAMPLES];
    int errors;
};

static void *measure_sleeps(void *arg)
{
    struct accuracy *a = arg;
    for (int i = 0; i < a->n; i++) {
        uint64_t t0 = green_now_ns();
        if (green_sleep_ns(a->period_ns) != 0)
            a->errors++;
        a->late_ns[i] = (int64_t)(green_now_ns() - t0) - (int64_t)a->period_ns;
        struct timespec ts = {0, (long)a->period_ns};
        t0 = green_now_ns();
        nanosleep(&ts, NULL);
        a->base_ns[i] = (int64_t)(green_now_ns() - t0) - (int64_t)a->period_ns;
    }
    return NULL;
}

static void check_accuracy(uint64_t period_ns, int n)
{
    struct accuracy a;
    memset(&a, 0, sizeof a);
    a.period_ns = period_ns;
    a.n = n;
    cr_assert_eq(run(measure_sleeps, &a, 2, -1, NULL), 0);
    cr_expect_eq(a.errors, 0);
    qsort(a.late_ns, (size_t)n, sizeof a.late_ns[0], cmp_i64);
    qsort(a.base_ns, (size_t)n, sizeof a.base_ns[0], cmp_i64);
    /* p99, but never the single worst sample: with 20 samples p99 would be
     * the maximum, decided by one preemption of the worker by the host (a
     * 3-4 ms outlier in 400 sleeps happens on a quiet VM, for nanosleep too). */
    int i99 = (n * 99 + 99) / 100 - 1 < n - 1 ? (n * 99 + 99) / 100 - 1 : n - 2;
    int64_t median = a.late_ns[n / 2], base_median = a.base_ns[n / 2];
    int64_t p99 = a.late_ns[i99], base_p99 = a.base_ns[i99];
    cr_expect_geq(a.late_ns[0], 0, "a %llu ns sleep returned %lld ns early",
                  (unsigned long long)period_ns, (long long)-a.late_ns[0]);
    cr_expect_lt(median, 500 * (int64_t)US + base_median,
                 "median lateness %lld us (nanosleep's: %lld us)", (long long)(median / 1000),
                 (long long)(base_median / 1000));
    cr_expect_lt(p99, 2 * (int64_t)MS + base_p99, "p99 lateness %lld us (nanosleep's: %lld us)",
                 (long long)(p99 / 1000), (long long)(base_p99 / 1000));
}

Test(timer, one_millisecond_sleeps_are_never_early_and_rarely_late, .timeout = 10)
{
    check_accuracy(1 * MS, 200);
}

Test(timer, ten_millisecond_sleeps_are_never_early_and_rarely_late, .timeout = 10)
{
    check_accuracy(10 * MS, 20);
}

/* ---- many sleepers ------------------------------------------------------ */

#define NSLEEPERS 1000

struct sleepers {
    atomic_int early, errors, done;
};

static void *sleep_100ms(void *arg)
{
    struct sleepers *s = arg;
    uint64_t t0 = green_now_ns();
    if (green_sleep_ns(100 * MS) != 0)
        atomic_fetch_add(&s->errors, 1);
    if (green_now_ns() - t0 < 100 * MS)
        atomic_fetch_add(&s->early, 1);
    atomic_fetch_add(&s->done, 1);
    return NULL;
}

static void *sleepers_main(void *arg)
{
    static green_t t[NSLEEPERS];
    struct sleepers *s = arg;
    int ok = 0;
    for (int i = 0; i < NSLEEPERS; i++)
        if (green_spawn(&t[i], sleep_100ms, s) == 0)
            ok++;
        else
            atomic_fetch_add(&s->errors, 1);
    for (int i = 0; i < ok; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(timer, a_thousand_threads_sleeping_100ms_all_finish_in_about_100ms, .timeout = 10)
{
    static struct sleepers s;
    memset(&s, 0, sizeof s);
    uint64_t t0 = mono_ns();
    cr_assert_eq(run(sleepers_main, &s, 2, -1, NULL), 0);
    uint64_t took = mono_ns() - t0;
    cr_expect_eq(atomic_load(&s.errors), 0);
    cr_expect_eq(atomic_load(&s.done), NSLEEPERS);
    cr_expect_eq(atomic_load(&s.early), 0, "%d sleeps returned early", atomic_load(&s.early));
    cr_expect_geq(took, 100u * MS);
    cr_expect_lt(took, 300u * MS, "took %llu ms: the sleeps did not overlap",
                 (unsigned long long)(took / MS));
}

/* ---- deadlines in the past ---------------------------------------------- */

struct past {
    int rc[4];
    uint64_t took_ns;
};

static void *past_main(void *arg)
{
    struct past *p = arg;
    uint64_t t0 = green_now_ns();
    p->rc[0] = green_sleep_until(t0 - 1000 * MS);
    p->rc[1] = green_sleep_until(0);
    p->rc[2] = green_sleep_until(t0);
    p->rc[3] = green_sleep_ns(0);
    p->took_ns = green_now_ns() - t0;
    return NULL;
}

Test(timer, sleep_until_a_past_deadline_returns_at_once, .timeout = 5)
{
    struct past p;
    memset(&p, 0xff, sizeof p);
    cr_assert_eq(run(past_main, &p, 2, -1, NULL), 0);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(p.rc[i], 0, "call %d returned %d", i, p.rc[i]);
    cr_expect_lt(p.took_ns, 5u * MS, "took %llu us", (unsigned long long)(p.took_ns / 1000));
}

/* ---- deadlines of different blocking calls fire in order ----------------- */

enum kind { SLEEP, RECV, SEND, LOCK, COND, WG, SELECT, JOIN, NKINDS };

static const char *const kind_name[NKINDS] = {
    "green_sleep_until", "green_chan_recv_until", "green_chan_send_until",
    "green_mutex_lock_until", "green_cond_wait_until", "green_wg_wait_until",
    "green_select_until", "green_join_until",
};

struct order {
    uint64_t base;
    green_chan_t *empty, *full, *never;
    green_mutex_t held;         /* main holds it throughout */
    green_cond_t cond;
    green_wg_t wg;              /* counter 1 throughout */
    green_t forever;            /* blocked on `never` until the end */
    atomic_int finished;
    int position[NKINDS];       /* order in which each call returned */
    int rc[NKINDS];
    int64_t late_ns[NKINDS];
};

struct order_arg {
    struct order *o;
    enum kind kind;
};

static uint64_t deadline_of(const struct order *o, enum kind k)
{
    return o->base + (uint64_t)k * 10 * MS;
}

static void *block_forever(void *arg)
{
    struct order *o = arg;
    green_chan_recv(o->never, NULL);
    return NULL;
}

static void *block_until(void *arg)
{
    struct order_arg *a = arg;
    struct order *o = a->o;
    uint64_t d = deadline_of(o, a->kind);
    long v = 0;
    int rc = -1;
    switch (a->kind) {
    case SLEEP:
        rc = green_sleep_until(d);
        rc = rc == 0 ? ETIMEDOUT : rc;  /* the time passed: same outcome */
        break;
    case RECV:
        rc = green_chan_recv_until(o->empty, &v, d);
        break;
    case SEND:
        rc = green_chan_send_until(o->full, &v, d);
        break;
    case LOCK:
        rc = green_mutex_lock_until(&o->held, d);
        break;
    case COND: {
        green_mutex_t m = GREEN_MUTEX_INIT;
        green_mutex_lock(&m);
        rc = green_cond_wait_until(&o->cond, &m, d);
        green_mutex_unlock(&m);
        break;
    }
    case WG:
        rc = green_wg_wait_until(&o->wg, d);
        break;
    case SELECT: {
        green_chan_case_t c[2] = {{o->empty, GREEN_CHAN_RECV, &v, 0},
                                  {o->full, GREEN_CHAN_SEND, &v, 0}};
        size_t k;
        rc = green_select_until(c, 2, &k, d);
        break;
    }
    case JOIN:
        rc = green_join_until(o->forever, NULL, d);
        break;
    default:
        break;
    }
    uint64_t now = green_now_ns();
    o->position[a->kind] = atomic_fetch_add(&o->finished, 1);
    o->rc[a->kind] = rc;
    o->late_ns[a->kind] = (int64_t)(now - d);
    return NULL;
}

static void *order_main(void *arg)
{
    struct order *o = arg;
    static struct order_arg args[NKINDS];
    static const enum kind spawn_order[NKINDS] = {WG, SEND, JOIN, SLEEP, SELECT, LOCK, RECV,
                                                  COND};
    if (green_chan_create(&o->empty, sizeof(long), 1) ||
        green_chan_create(&o->full, sizeof(long), 1) ||
        green_chan_create(&o->never, 0, 0))
        return P(1);
    long v = 1;
    green_chan_send(o->full, &v);
    green_mutex_lock(&o->held);
    green_wg_add(&o->wg, 1);
    if (green_spawn(&o->forever, block_forever, o) != 0)
        return P(1);
    o->base = green_now_ns() + 20 * MS;
    green_t t[NKINDS];
    for (int i = 0; i < NKINDS; i++) {
        args[i] = (struct order_arg){o, spawn_order[i]};
        if (green_spawn(&t[i], block_until, &args[i]) != 0)
            return P(1);
    }
    for (int i = 0; i < NKINDS; i++)
        green_join(t[i], NULL);
    green_mutex_unlock(&o->held);
    green_wg_done(&o->wg);
    green_chan_close(o->never);
    green_join(o->forever, NULL);
    green_chan_destroy(o->empty);
    green_chan_destroy(o->full);
    green_chan_destroy(o->never);
    return NULL;
}

Test(timer, deadlines_of_different_blocking_calls_fire_in_deadline_order, .timeout = 5)
{
    static struct order o;
    memset(&o, 0, sizeof o);
    void *ret = NULL;
    cr_assert_eq(run(order_main, &o, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int k = 0; k < NKINDS; k++) {
        cr_expect_eq(o.rc[k], ETIMEDOUT, "%s returned %d", kind_name[k], o.rc[k]);
        cr_expect_eq(o.position[k], k, "%s (deadline +%d ms) returned %d-th", kind_name[k],
                     10 * k, o.position[k] + 1);
        cr_expect_geq(o.late_ns[k], 0, "%s returned %lld us before its deadline",
                      kind_name[k], (long long)(-o.late_ns[k] / 1000));
        cr_expect_lt(o.late_ns[k], 5 * (int64_t)MS, "%s returned %lld us late", kind_name[k],
                     (long long)(o.late_ns[k] / 1000));
    }
}
