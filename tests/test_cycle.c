/*
 * Lock cycles found when they form (sched/cycle.c): planted lock-order
 * inversions among a crowd of threads that keep running, on green mutexes
 * and on pthread mutexes, reported on stderr -- each member, the lock it
 * holds and the one it waits for, its backtrace -- and, with
 * GREEN_DEADLOCK=error, EDEADLK from the call that closed the cycle.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "common.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HAVE_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HAVE_SANITIZER 1
#endif
#endif

#define CROWD 98
#define REPORT_BUDGET_NS (1 * MS)

/* ---- The scene ---------------------------------------------------------- */

/* Members 0..n-1: member i takes lock i, waits until every member holds its
 * own, then takes lock (i + 1) % n.  The last member's second lock call
 * closes the cycle: it goes last, once the others are parked. */
struct scene {
    unsigned n;
    bool pthread_first;              /* lock 0 is a pthread mutex */
    green_mutex_t g[4];
    pthread_mutex_t p;
    _Atomic unsigned holding, parked_calls;
    int closer_rc;
    uint64_t closer_ns;              /* the closing call, start to return */
    _Atomic bool stop;
    _Atomic uint64_t crowd_steps;
    uint64_t steps_before, steps_during;
};

static bool is_pthread(struct scene *s, unsigned i) { return s->pthread_first && i == 0; }

static __attribute__((noinline)) int take(struct scene *s, unsigned i)
{
    if (is_pthread(s, i))
        return pthread_mutex_lock(&s->p);
    return green_mutex_lock(&s->g[i]);
}

static void give(struct scene *s, unsigned i)
{
    if (is_pthread(s, i))
        pthread_mutex_unlock(&s->p);
    else
        green_mutex_unlock(&s->g[i]);
}

/* Named frames the report's backtraces must show. */
static __attribute__((noinline)) int cycle_member_waits(struct scene *s, unsigned i)
{
    int rc = take(s, (i + 1) % s->n);
    __asm__ volatile("" ::: "memory");   /* not a tail call: keep this frame */
    return rc;
}

static __attribute__((noinline)) int cycle_closer_waits(struct scene *s, unsigned i)
{
    uint64_t t0 = mono_ns();
    int rc = take(s, (i + 1) % s->n);
    s->closer_ns = mono_ns() - t0;
    return rc;
}

static void *member(void *arg)
{
    struct scene *s = *(struct scene **)arg;
    unsigned i = (unsigned)(uintptr_t)((void **)arg)[1];
    char name[16];
    snprintf(name, sizeof name, "member-%u", i);
    green_set_name(name);
    cr_assert_eq(take(s, i), 0);
    atomic_fetch_add(&s->holding, 1);
    while (atomic_load(&s->holding) < s->n)
        green_sleep_ns(100 * US);
    int rc;
    if (i + 1 < s->n) {
        /* Member i waits after members 0..i-1: so the last one closes. */
        while (atomic_load(&s->parked_calls) < i)
            green_sleep_ns(100 * US);
        atomic_fetch_add(&s->parked_calls, 1);
        rc = cycle_member_waits(s, i);
        cr_assert_eq(rc, 0, "member %u: %d", i, rc);
        give(s, (i + 1) % s->n);
    } else {
        while (atomic_load(&s->parked_calls) < i)
            green_sleep_ns(100 * US);
        green_sleep_ns(20 * MS);             /* the others are parked by now */
        s->steps_before = atomic_load(&s->crowd_steps);
        rc = cycle_closer_waits(s, i);
        s->closer_rc = rc;
        if (rc == 0)
            give(s, (i + 1) % s->n);
        green_sleep_ns(20 * MS);             /* the crowd runs on meanwhile */
        s->steps_during = atomic_load(&s->crowd_steps) - s->steps_before;
    }
    give(s, i);
    return NULL;
}

static void *crowd(void *arg)
{
    struct scene *s = arg;
    green_set_name("crowd");
    while (!atomic_load(&s->stop)) {
        atomic_fetch_add(&s->crowd_steps, 1);
        if (atomic_load(&s->crowd_steps) % 64 == 0)
            green_sleep_ns(50 * US);
        else
            green_yield();
    }
    return NULL;
}

static void *scene_main(void *arg)
{
    struct scene *s = arg;
    green_t c[CROWD], m[4];
    void *margs[4][2];
    for (unsigned i = 0; i < CROWD; i++)
        cr_assert_eq(green_spawn(&c[i], crowd, s), 0);
    for (unsigned i = 0; i < s->n; i++) {
        margs[i][0] = s;
        margs[i][1] = (void *)(uintptr_t)i;
        cr_assert_eq(green_spawn(&m[i], member, margs[i]), 0);
    }
    for (unsigned i = 0; i < s->n; i++)
        green_join(m[i], NULL);
    atomic_store(&s->stop, true);
    for (unsigned i = 0; i < CROWD; i++)
        green_join(c[i], NULL);
    return NULL;
}

static char report[1 << 16];

/* Run the scene with GREEN_DEADLOCK=error: the closer gets EDEADLK, lets
 * go, and the others finish. */
static void run_scene(struct scene *s, unsigned n, bool pthread_first)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->pthread_first = pthread_first;
    pthread_mutex_init(&s->p, NULL);
    green_config_t cfg = config(2);
    cfg.deadlock = GREEN_DEADLOCK_ERROR;
    struct capture cap = capture_begin();
    int rc = green_run(scene_main, s, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_assert_eq(rc, 0, "green_run: %d; stderr:\n%s", rc, report);
}

/* The report names every member, its two locks and its frames. */
static void check_report(struct scene *s)
{
    char line[128];
    snprintf(line, sizeof line, "lock cycle: %u green threads", s->n);
    cr_expect_not_null(strstr(report, line), "%s", report);
    for (unsigned i = 0; i < s->n; i++) {
        void *held = is_pthread(s, i) ? (void *)&s->p : (void *)&s->g[i];
        unsigned j = (i + 1) % s->n;
        void *wanted = is_pthread(s, j) ? (void *)&s->p : (void *)&s->g[j];
        snprintf(line, sizeof line, "\"member-%u\" holds %s %p and waits in", i,
                 is_pthread(s, i) ? "pthread_mutex_t" : "green_mutex_t", held);
        const char *at = strstr(report, line);
        cr_expect_not_null(at, "no line for member %u (%s) in:\n%s", i, line, report);
        if (!at)
            continue;
        snprintf(line, sizeof line, "for %s %p, held by green thread",
                 is_pthread(s, j) ? "pthread_mutex_t" : "green_mutex_t", wanted);
        const char *eol = strchr(at, '\n');
        const char *w = strstr(at, line);
        cr_expect(w && w < eol, "member %u's line lacks \"%s\":\n%s", i, line, report);
        /* Its backtrace follows, through its own frame. */
        const char *frames_end = strstr(eol, "\n  green thread");
        const char *own = strstr(eol, i + 1 == s->n ? "cycle_closer_waits" : "cycle_member_waits");
        cr_expect(own && (!frames_end || own < frames_end),
                  "member %u's backtrace lacks its frame:\n%s", i, report);
    }
    cr_expect_not_null(strstr(report, "returns EDEADLK to green thread"), "%s", report);
    /* Once: a cycle is reported by its closer alone. */
    const char *first = strstr(report, "lock cycle:");
    cr_expect(first && !strstr(first + 1, "lock cycle:"), "reported twice:\n%s", report);
}

static int by_value(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Five times, each in a fresh run: the median closing call, detection and
 * report included, is under 1 ms (timed in builds without a sanitizer). */
Test(cycle, an_abba_pair_among_100_threads_is_reported_within_1ms_while_98_run_on, .timeout = 60)
{
    static struct scene s;
    uint64_t ns[5];
    for (int r = 0; r < 5; r++) {
        run_scene(&s, 2, false);
        cr_assert_eq(s.closer_rc, EDEADLK, "the closing call returned %d", s.closer_rc);
        check_report(&s);
        cr_expect_gt(s.steps_during, 1000, "the crowd made %llu steps in 20 ms",
                     (unsigned long long)s.steps_during);
        ns[r] = s.closer_ns;
    }
    qsort(ns, 5, sizeof ns[0], by_value);
    cr_log_info("abba: closing call (detect + report) min %.3f median %.3f max %.3f ms; "
                "crowd %llu steps in 20 ms after the last",
                ns[0] / 1e6, ns[2] / 1e6, ns[4] / 1e6, (unsigned long long)s.steps_during);
#ifndef HAVE_SANITIZER
    cr_expect_lt(ns[2], REPORT_BUDGET_NS, "detecting and reporting took %.3f ms (median of 5)",
                 ns[2] / 1e6);
#endif
}

Test(cycle, a_three_way_cycle_is_reported_with_every_member, .timeout = 60)
{
    static struct scene s;
    run_scene(&s, 3, false);
    cr_expect_eq(s.closer_rc, EDEADLK);
    check_report(&s);
}

Test(cycle, a_cycle_through_a_pthread_mutex_is_reported, .timeout = 60)
{
    static struct scene s;
    run_scene(&s, 2, true);
    cr_expect_eq(s.closer_rc, EDEADLK);
    check_report(&s);
}

Test(cycle, a_three_way_cycle_through_a_pthread_mutex_is_reported, .timeout = 60)
{
    static struct scene s;
    run_scene(&s, 3, true);
    cr_expect_eq(s.closer_rc, EDEADLK);
    check_report(&s);
}

/* ---- Report only ---------------------------------------------------------- */

/* The default: the report, and the closer waits for good, as it would
 * without libgreen.  The crowd finishes; then every thread left waits and
 * green_run ends in EDEADLK. */
struct forever {
    green_mutex_t a, b;
    _Atomic int stage;
    _Atomic uint64_t steps;
    _Atomic bool stop;
};

static void *fa(void *arg)
{
    struct forever *f = arg;
    green_set_name("forever-a");
    green_mutex_lock(&f->a);
    atomic_store(&f->stage, 1);
    while (atomic_load(&f->stage) < 2)
        green_sleep_ns(100 * US);
    green_mutex_lock(&f->b);
    return NULL;
}

static void *fb(void *arg)
{
    struct forever *f = arg;
    green_set_name("forever-b");
    green_mutex_lock(&f->b);
    while (atomic_load(&f->stage) < 1)
        green_sleep_ns(100 * US);
    atomic_store(&f->stage, 2);
    green_sleep_ns(20 * MS);
    green_mutex_lock(&f->a);
    return NULL;
}

static void *fcrowd(void *arg)
{
    struct forever *f = arg;
    for (int i = 0; i < 200; i++) {
        atomic_fetch_add(&f->steps, 1);
        green_sleep_ns(1 * MS);
    }
    return NULL;
}

static void *forever_main(void *arg)
{
    green_t a, b, c[8];
    cr_assert_eq(green_spawn(&a, fa, arg), 0);
    cr_assert_eq(green_spawn(&b, fb, arg), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(green_spawn(&c[i], fcrowd, arg), 0);
    for (int i = 0; i < 8; i++)
        green_join(c[i], NULL);
    green_join(a, NULL);
    return NULL;
}

Test(cycle, by_default_the_cycle_is_reported_once_and_its_threads_wait, .timeout = 60)
{
    static struct forever f;
    memset(&f, 0, sizeof f);
    green_config_t cfg = config(2);
    struct capture cap = capture_begin();
    int rc = green_run(forever_main, &f, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_expect_eq(rc, EDEADLK, "green_run: %d", rc);
    cr_expect_eq(atomic_load(&f.steps), 8 * 200, "the others were held up");
    const char *first = strstr(report, "lock cycle: 2 green threads");
    cr_expect_not_null(first, "%s", report);
    cr_expect(first && !strstr(first + 1, "lock cycle:"), "reported twice:\n%s", report);
    cr_expect_not_null(strstr(report, "\"forever-a\" holds green_mutex_t"), "%s", report);
    cr_expect_not_null(strstr(report, "\"forever-b\" holds green_mutex_t"), "%s", report);
    cr_expect_null(strstr(report, "returns EDEADLK"), "%s", report);
}

/* ---- No cycle -------------------------------------------------------------- */

/* A wait with a deadline ends: a chain through one is no cycle, and a call
 * with one that would close a cycle reports nothing and times out as it
 * would.  a holds a and takes b with a deadline; b holds b and takes a;
 * timed_closes says which of the two waits second. */
struct timed {
    bool timed_closes;
    green_mutex_t a, b;
    _Atomic int stage;
    int a_rc, b_rc;
};

static void *ta(void *arg)
{
    struct timed *t = arg;
    green_mutex_lock(&t->a);
    atomic_store(&t->stage, 1);
    while (atomic_load(&t->stage) < 2)
        green_sleep_ns(100 * US);
    if (t->timed_closes)
        green_sleep_ns(20 * MS);             /* b waits for a by now */
    t->a_rc = green_mutex_lock_until(&t->b, green_now_ns() + 50 * MS);
    green_mutex_unlock(&t->a);
    return NULL;
}

static void *tb(void *arg)
{
    struct timed *t = arg;
    green_mutex_lock(&t->b);
    while (atomic_load(&t->stage) < 1)
        green_sleep_ns(100 * US);
    atomic_store(&t->stage, 2);
    if (!t->timed_closes)
        green_sleep_ns(20 * MS);             /* a waits for b by now */
    t->b_rc = green_mutex_lock(&t->a);       /* a's wait times out, then it is b's */
    green_mutex_unlock(&t->a);
    green_mutex_unlock(&t->b);
    return NULL;
}

static void *timed_main(void *arg)
{
    green_t a, b;
    cr_assert_eq(green_spawn(&a, ta, arg), 0);
    cr_assert_eq(green_spawn(&b, tb, arg), 0);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

static void timed_run(bool timed_closes, unsigned deadlock)
{
    static struct timed t;
    memset(&t, 0, sizeof t);
    t.timed_closes = timed_closes;
    green_config_t cfg = config(2);
    cfg.deadlock = deadlock;
    struct capture cap = capture_begin();
    int rc = green_run(timed_main, &t, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_expect_eq(rc, 0);
    cr_expect_eq(t.a_rc, ETIMEDOUT);
    cr_expect_eq(t.b_rc, 0);
    cr_expect_null(strstr(report, "lock cycle"), "%s", report);
}

Test(cycle, a_chain_through_a_wait_with_a_deadline_is_not_reported, .timeout = 30)
{
    timed_run(false, GREEN_DEADLOCK_ERROR);
}

Test(cycle, a_closing_call_with_a_deadline_is_not_reported_and_times_out, .timeout = 30)
{
    timed_run(true, GREEN_DEADLOCK_ERROR);
}

Test(cycle, off_means_no_report_and_no_edeadlk, .timeout = 30)
{
    timed_run(false, GREEN_DEADLOCK_OFF);
}

Test(cycle, bad_configuration_is_refused)
{
    green_config_t cfg = config(1);
    cfg.deadlock = 3;
    struct capture cap = capture_begin();
    int rc = green_run(timed_main, NULL, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_expect_eq(rc, EINVAL);
    cr_expect_not_null(strstr(report, "cfg.deadlock = 3"), "%s", report);
    setenv("GREEN_DEADLOCK", "sometimes", 1);
    cap = capture_begin();
    rc = green_config_init(&cfg);
    capture_end(cap, report, sizeof report);
    unsetenv("GREEN_DEADLOCK");
    cr_expect_eq(rc, EINVAL);
    cr_expect_eq(cfg.deadlock, GREEN_DEADLOCK_REPORT);
    cr_expect_not_null(strstr(report, "GREEN_DEADLOCK"), "%s", report);
}

/* ---- The long-wait warning (GREEN_LOCK_WARN_MS) ------------------------------ */

/* A holder parks on a channel while a thread waits for its mutex: the
 * futurelock shape, named once in one line after lock_warn_ms. */
struct futurelock {
    bool pthread;
    green_mutex_t g;
    pthread_mutex_t p;
    green_chan_t *c;
    _Atomic int held;
};

static void *fl_holder(void *arg)
{
    struct futurelock *f = arg;
    green_set_name("fl-holder");
    if (f->pthread)
        pthread_mutex_lock(&f->p);
    else
        green_mutex_lock(&f->g);
    atomic_store(&f->held, 1);
    int v;
    green_chan_recv(f->c, &v);                /* parked, holding */
    if (f->pthread)
        pthread_mutex_unlock(&f->p);
    else
        green_mutex_unlock(&f->g);
    return NULL;
}

static void *fl_waiter(void *arg)
{
    struct futurelock *f = arg;
    green_set_name("fl-waiter");
    while (!atomic_load(&f->held))
        green_sleep_ns(100 * US);
    if (f->pthread) {
        pthread_mutex_lock(&f->p);
        pthread_mutex_unlock(&f->p);
    } else {
        green_mutex_lock(&f->g);
        green_mutex_unlock(&f->g);
    }
    return NULL;
}

static void *fl_main(void *arg)
{
    struct futurelock *f = arg;
    green_t h, w;
    cr_assert_eq(green_chan_create(&f->c, sizeof(int), 0), 0);
    cr_assert_eq(green_spawn(&h, fl_holder, f), 0);
    cr_assert_eq(green_spawn(&w, fl_waiter, f), 0);
    green_sleep_ns(350 * MS);
    int v = 1;
    green_chan_send(f->c, &v);
    green_join(h, NULL);
    green_join(w, NULL);
    green_chan_destroy(f->c);
    return NULL;
}

static void futurelock_run(bool pthread, unsigned warn_ms)
{
    static struct futurelock f;
    memset(&f, 0, sizeof f);
    f.pthread = pthread;
    pthread_mutex_init(&f.p, NULL);
    green_config_t cfg = config(2);
    cfg.lock_warn_ms = warn_ms;
    struct capture cap = capture_begin();
    int rc = green_run(fl_main, &f, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_assert_eq(rc, 0, "%s", report);
}

static void expect_one_warning(const char *kind)
{
    const char *w = strstr(report, "libgreen: warning: green thread");
    cr_expect_not_null(w, "no warning:\n%s", report);
    if (!w)
        return;
    char want[96];
    snprintf(want, sizeof want, "\"fl-holder\" holds %s", kind);
    const char *eol = strchr(w, '\n');
    const char *a = strstr(w, want), *b = strstr(w, "parked in green_chan_recv"),
               *c = strstr(w, "while green thread"), *d = strstr(w, "\"fl-waiter\" has waited");
    cr_expect(a && a < eol && b && b < eol && c && c < eol && d && d < eol,
              "the warning lacks a part:\n%s", report);
    cr_expect_null(strstr(w + 1, "libgreen: warning:"), "warned twice:\n%s", report);
    cr_log_info("%.*s", (int)(eol - w), w);
}

Test(lockwarn, a_holder_parked_on_a_channel_is_named_once, .timeout = 30)
{
    futurelock_run(false, 100);
    expect_one_warning("green_mutex_t");
}

Test(lockwarn, a_pthread_mutex_holder_parked_on_a_channel_is_named_once, .timeout = 30)
{
    futurelock_run(true, 100);
    expect_one_warning("pthread_mutex_t");
}

Test(lockwarn, off_by_default, .timeout = 30)
{
    futurelock_run(false, 0);
    cr_expect_null(strstr(report, "warning"), "%s", report);
}

Test(lockwarn, a_wait_shorter_than_the_threshold_is_not_named, .timeout = 30)
{
    futurelock_run(false, 1000);
    cr_expect_null(strstr(report, "warning"), "%s", report);
}

/* ---- Calls that may not fail, and waits that end ------------------------- */

/* A condition wait's retake of its mutex closes the cycle: it is reported,
 * and the retake waits (a condition wait returns holding its mutex, always)
 * -- even with GREEN_DEADLOCK=error.  The two then wait for good, and
 * green_run says so. */
struct retake {
    bool pthread;
    green_mutex_t g1, g2;
    green_cond_t c;
    pthread_mutex_t p1;
    pthread_cond_t pc;
    _Atomic int stage;
    _Atomic int t1_returned;
};

static void *rt_t1(void *arg)
{
    struct retake *r = arg;
    green_set_name("retaker");
    green_mutex_lock(&r->g2);
    if (r->pthread) {
        pthread_mutex_lock(&r->p1);
        atomic_store(&r->stage, 1);
        while (atomic_load(&r->stage) < 2)
            pthread_cond_wait(&r->pc, &r->p1);
        atomic_store(&r->t1_returned, 1);     /* never: the retake waits */
    } else {
        green_mutex_lock(&r->g1);
        atomic_store(&r->stage, 1);
        while (atomic_load(&r->stage) < 2)
            green_cond_wait(&r->c, &r->g1);
        atomic_store(&r->t1_returned, 1);
    }
    return NULL;
}

static void *rt_t2(void *arg)
{
    struct retake *r = arg;
    green_set_name("holder");
    while (atomic_load(&r->stage) < 1)
        green_sleep_ns(100 * US);
    green_sleep_ns(5 * MS);                   /* t1 is parked on the condition */
    if (r->pthread)
        pthread_mutex_lock(&r->p1);
    else
        green_mutex_lock(&r->g1);
    atomic_store(&r->stage, 2);
    green_mutex_lock(&r->g2);                 /* held by t1, not waiting: no cycle */
    return NULL;
}

/* Wakes t1 once t2 waits for g2: t1's retake of g1 closes the cycle. */
static void *rt_t3(void *arg)
{
    struct retake *r = arg;
    while (atomic_load(&r->stage) < 2)
        green_sleep_ns(100 * US);
    green_sleep_ns(5 * MS);
    if (r->pthread)
        pthread_cond_signal(&r->pc);
    else
        green_cond_signal(&r->c);
    return NULL;
}

static void *retake_main(void *arg)
{
    green_t a, b, c;
    cr_assert_eq(green_spawn(&a, rt_t1, arg), 0);
    cr_assert_eq(green_spawn(&b, rt_t2, arg), 0);
    cr_assert_eq(green_spawn(&c, rt_t3, arg), 0);
    green_join(c, NULL);
    green_join(a, NULL);
    return NULL;
}

static void retake_run(bool pthread)
{
    static struct retake r;
    memset(&r, 0, sizeof r);
    r.pthread = pthread;
    pthread_mutex_init(&r.p1, NULL);
    pthread_cond_init(&r.pc, NULL);
    green_config_t cfg = config(2);
    cfg.deadlock = GREEN_DEADLOCK_ERROR;
    struct capture cap = capture_begin();
    int rc = green_run(retake_main, &r, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_expect_eq(rc, EDEADLK, "green_run: %d\n%s", rc, report);
    cr_expect_eq(atomic_load(&r.t1_returned), 0, "the condition wait returned");
    const char *first = strstr(report, "lock cycle: 2 green threads");
    cr_expect_not_null(first, "%s", report);
    cr_expect(first && !strstr(first + 1, "lock cycle:"), "reported twice:\n%s", report);
    /* The retaker closed it, and its call went on waiting. */
    const char *closer = first ? strstr(first, "\n  green thread") : NULL;
    const char *eol = closer ? strchr(closer + 1, '\n') : NULL;
    const char *name = closer ? strstr(closer, "\"retaker\" holds") : NULL;
    cr_expect(name && eol && name < eol, "the retaker did not close it:\n%s", report);
    cr_expect_null(strstr(report, "returns EDEADLK"), "%s", report);
}

Test(cycle, a_condition_wait_retaking_its_mutex_is_reported_and_never_fails, .timeout = 30)
{
    retake_run(false);
}

Test(cycle, a_pthread_condition_wait_retaking_its_mutex_is_reported_and_never_fails,
     .timeout = 30)
{
    retake_run(true);
}


/* Many short timed waits begin while the monitor looks: a wait begun after
 * its look began is not "waited 18446744073709 ms" (it was, once). */
struct shortwaits {
    green_mutex_t m;
    _Atomic int held, stop;
};

static void *sw_holder(void *arg)
{
    struct shortwaits *w = arg;
    green_mutex_lock(&w->m);
    atomic_store(&w->held, 1);
    green_sleep_ns(300 * MS);
    atomic_store(&w->stop, 1);
    green_mutex_unlock(&w->m);
    return NULL;
}

static void *sw_waiter(void *arg)
{
    struct shortwaits *w = arg;
    while (!atomic_load(&w->held))
        green_sleep_ns(100 * US);
    while (!atomic_load(&w->stop))
        if (green_mutex_lock_until(&w->m, green_now_ns() + 300 * US) == 0)
            green_mutex_unlock(&w->m);
    return NULL;
}

static void *sw_main(void *arg)
{
    green_t t[9];
    cr_assert_eq(green_spawn(&t[0], sw_holder, arg), 0);
    for (int i = 1; i < 9; i++)
        cr_assert_eq(green_spawn(&t[i], sw_waiter, arg), 0);
    for (int i = 0; i < 9; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(lockwarn, short_waits_begun_during_a_look_are_never_named_with_a_wrapped_time, .timeout = 30)
{
    static struct shortwaits w;
    memset(&w, 0, sizeof w);
    green_config_t cfg = config(2);
    cfg.lock_warn_ms = 1;
    struct capture cap = capture_begin();
    int rc = green_run(sw_main, &w, &cfg, NULL);
    capture_end(cap, report, sizeof report);
    cr_assert_eq(rc, 0);
    for (const char *p = strstr(report, "has waited "); p; p = strstr(p + 1, "has waited ")) {
        unsigned long long ms = strtoull(p + 11, NULL, 10);
        cr_expect_lt(ms, 1000, "a wait of %llu ms in 0.3 s:\n%.200s", ms, p - 150);
    }
}
