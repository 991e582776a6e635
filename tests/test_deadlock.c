/* Deadlock detection: when every green thread is blocked and nothing left
 * could wake any of them, green_run returns EDEADLK and prints the threads
 * and what each waits on.  A thread with a pending timer is not deadlocked.
 *
 * A test that fails here by timing out means the runtime hung instead of
 * detecting the deadlock.
 */
#define _GNU_SOURCE  /* strcasestr */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

/* Run main_fn with fd 2 sent to a temporary file; the text lands in buf. */
static int run_capturing_stderr(void *(*fn)(void *), void *arg, char *buf, size_t cap)
{
    green_config_t cfg = config(2);
    fflush(stderr);
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    int saved = dup(2);
    cr_assert_geq(saved, 0);
    cr_assert_geq(dup2(fileno(tmp), 2), 0);
    int rc = green_run(fn, arg, &cfg, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, cap - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return rc;
}

/* Does `text` contain the decimal number `id` as a whole number? */
static int mentions_id(const char *text, uint64_t id)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)id);
    size_t len = strlen(num);
    for (const char *p = strstr(text, num); p; p = strstr(p + 1, num)) {
        int digit_before = p > text && isdigit((unsigned char)p[-1]);
        int digit_after = isdigit((unsigned char)p[len]);
        if (!digit_before && !digit_after)
            return 1;
    }
    return 0;
}

#define ERRBUF 16384

/* ---- two threads, each waiting on the other's channel ------------------- */

struct crossed {
    green_chan_t *a, *b;
    uint64_t id_a, id_b;
};

static void *wait_on_b_then_send_a(void *arg)
{
    struct crossed *x = arg;
    x->id_a = green_id(green_self());
    int v;
    green_chan_recv(x->b, &v);
    green_chan_send(x->a, &v);
    return NULL;
}

static void *wait_on_a_then_send_b(void *arg)
{
    struct crossed *x = arg;
    x->id_b = green_id(green_self());
    int v;
    green_chan_recv(x->a, &v);
    green_chan_send(x->b, &v);
    return NULL;
}

static void *crossed_main(void *arg)
{
    struct crossed *x = arg;
    if (green_chan_create(&x->a, sizeof(int), 0) || green_chan_create(&x->b, sizeof(int), 0))
        return P(1);
    green_t ta, tb;
    if (green_spawn(&ta, wait_on_b_then_send_a, x) || green_spawn(&tb, wait_on_a_then_send_b, x))
        return P(1);
    green_join(ta, NULL);
    green_join(tb, NULL);
    return NULL;
}

Test(deadlock, two_threads_waiting_on_each_others_channels_make_green_run_fail_with_edeadlk,
     .timeout = 5)
{
    static char err[ERRBUF];
    struct crossed x;
    memset(&x, 0, sizeof x);
    int rc = run_capturing_stderr(crossed_main, &x, err, sizeof err);
    cr_expect_eq(rc, EDEADLK, "green_run returned %d", rc);
    cr_expect_not_null(strcasestr(err, "deadlock"), "stderr: %s", err);
    cr_expect_not_null(strstr(err, "green_chan_recv"), "stderr: %s", err);
    cr_assert_neq(x.id_a, 0u, "thread a never ran");
    cr_assert_neq(x.id_b, 0u, "thread b never ran");
    cr_expect(mentions_id(err, x.id_a), "thread %llu not named: %s",
              (unsigned long long)x.id_a, err);
    cr_expect(mentions_id(err, x.id_b), "thread %llu not named: %s",
              (unsigned long long)x.id_b, err);
    /* The abandoned threads' waits are undone: the channels can go. */
    cr_expect_eq(green_chan_destroy(x.a), 0);
    cr_expect_eq(green_chan_destroy(x.b), 0);
}

/* ---- main joins a thread that waits forever ----------------------------- */

struct stuck {
    green_chan_t *c;
    uint64_t id_main, id_stuck;
};

static void *recv_forever(void *arg)
{
    struct stuck *s = arg;
    s->id_stuck = green_id(green_self());
    green_chan_recv(s->c, NULL);
    return NULL;
}

static void *join_stuck_main(void *arg)
{
    struct stuck *s = arg;
    s->id_main = green_id(green_self());
    if (green_chan_create(&s->c, sizeof(int), 4))
        return P(1);
    green_t t;
    if (green_spawn(&t, recv_forever, s))
        return P(1);
    green_join(t, NULL);
    return NULL;
}

Test(deadlock, main_joining_a_thread_blocked_forever_is_edeadlk, .timeout = 5)
{
    static char err[ERRBUF];
    struct stuck s;
    memset(&s, 0, sizeof s);
    int rc = run_capturing_stderr(join_stuck_main, &s, err, sizeof err);
    cr_expect_eq(rc, EDEADLK, "green_run returned %d", rc);
    cr_expect_not_null(strcasestr(err, "deadlock"), "stderr: %s", err);
    cr_expect_not_null(strstr(err, "join"), "the joining thread's wait not named: %s", err);
    cr_expect_not_null(strstr(err, "green_chan_recv"), "stderr: %s", err);
    cr_expect(mentions_id(err, s.id_main), "main %llu not named: %s",
              (unsigned long long)s.id_main, err);
    cr_expect(mentions_id(err, s.id_stuck), "thread %llu not named: %s",
              (unsigned long long)s.id_stuck, err);
    cr_expect_eq(green_chan_destroy(s.c), 0);
}

/* ---- lock-order inversion ----------------------------------------------- */

struct inversion {
    green_mutex_t m1, m2;
    green_wg_t both_hold;
};

static void *lock_1_then_2(void *arg)
{
    struct inversion *v = arg;
    green_mutex_lock(&v->m1);
    green_wg_done(&v->both_hold);
    green_wg_wait(&v->both_hold);
    green_mutex_lock(&v->m2);
    return NULL;
}

static void *lock_2_then_1(void *arg)
{
    struct inversion *v = arg;
    green_mutex_lock(&v->m2);
    green_wg_done(&v->both_hold);
    green_wg_wait(&v->both_hold);
    green_mutex_lock(&v->m1);
    return NULL;
}

static void *inversion_main(void *arg)
{
    struct inversion *v = arg;
    green_wg_add(&v->both_hold, 2);
    green_t a, b;
    if (green_spawn(&a, lock_1_then_2, v) || green_spawn(&b, lock_2_then_1, v))
        return P(1);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

Test(deadlock, a_lock_order_inversion_is_edeadlk_and_names_the_mutex_wait, .timeout = 5)
{
    static char err[ERRBUF];
    static struct inversion v;
    memset(&v, 0, sizeof v);
    int rc = run_capturing_stderr(inversion_main, &v, err, sizeof err);
    cr_expect_eq(rc, EDEADLK, "green_run returned %d", rc);
    cr_expect_not_null(strcasestr(err, "deadlock"), "stderr: %s", err);
    cr_expect_not_null(strstr(err, "green_mutex_lock"), "stderr: %s", err);
}

static void *wait_alone(void *arg)
{
    (void)arg;
    green_wg_t wg = GREEN_WG_INIT;
    green_wg_add(&wg, 1);
    green_wg_wait(&wg);
    return NULL;
}

Test(deadlock, main_waiting_on_a_wait_group_nobody_will_finish_is_edeadlk, .timeout = 5)
{
    static char err[ERRBUF];
    int rc = run_capturing_stderr(wait_alone, NULL, err, sizeof err);
    cr_expect_eq(rc, EDEADLK, "green_run returned %d", rc);
    cr_expect_not_null(strstr(err, "green_wg_wait"), "stderr: %s", err);
}

/* ---- not deadlocks ------------------------------------------------------ */

static void *sleep_50ms(void *arg)
{
    (void)arg;
    green_sleep_ns(50 * MS);
    return P(1);
}

static void *join_sleeper_main(void *arg)
{
    (void)arg;
    green_t t;
    void *r = NULL;
    if (green_spawn(&t, sleep_50ms, NULL) || green_join(t, &r))
        return P(2);
    return r;
}

Test(deadlock, a_sleeping_thread_is_not_a_deadlock, .timeout = 5)
{
    static char err[ERRBUF];
    int rc = run_capturing_stderr(join_sleeper_main, NULL, err, sizeof err);
    cr_expect_eq(rc, 0, "green_run returned %d; stderr: %s", rc, err);
    cr_expect_null(strcasestr(err, "deadlock"), "stderr: %s", err);
}

static void *recv_with_deadline(void *arg)
{
    green_chan_t *c = arg;
    int rc = green_chan_recv_until(c, NULL, green_now_ns() + 50 * MS);
    return P(rc);
}

static void *join_timed_main(void *arg)
{
    (void)arg;
    green_chan_t *c;
    if (green_chan_create(&c, 0, 0))
        return P(-1);
    green_t t;
    void *r = P(-1);
    if (green_spawn(&t, recv_with_deadline, c) == 0)
        green_join(t, &r);
    green_chan_destroy(c);
    return r;
}

Test(deadlock, a_thread_blocked_with_a_deadline_is_not_a_deadlock, .timeout = 5)
{
    static char err[ERRBUF];
    int rc = run_capturing_stderr(join_timed_main, NULL, err, sizeof err);
    cr_expect_eq(rc, 0, "green_run returned %d; stderr: %s", rc, err);
    cr_expect_null(strcasestr(err, "deadlock"), "stderr: %s", err);
}

/* ---- the runtime recovers ----------------------------------------------- */

static void *pass_values(void *arg)
{
    green_chan_t *c = arg;
    long sum = 0;
    for (long v; green_chan_recv(c, &v) == 0;)
        sum += v;
    return P(sum);
}

static void *healthy_main(void *arg)
{
    (void)arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(long), 0))
        return P(-1);
    green_t t;
    if (green_spawn(&t, pass_values, c))
        return P(-1);
    for (long v = 1; v <= 1000; v++)
        green_chan_send(c, &v);
    green_chan_close(c);
    void *sum = NULL;
    green_join(t, &sum);
    green_chan_destroy(c);
    return sum;
}

Test(deadlock, green_run_works_again_after_a_deadlock, .timeout = 10)
{
    static char err[ERRBUF];
    struct crossed x;
    memset(&x, 0, sizeof x);
    cr_assert_eq(run_capturing_stderr(crossed_main, &x, err, sizeof err), EDEADLK);
    cr_expect_eq(green_chan_destroy(x.a), 0);
    cr_expect_eq(green_chan_destroy(x.b), 0);
    for (int i = 0; i < 3; i++) {
        void *sum = NULL;
        cr_expect_eq(run(healthy_main, NULL, 2, -1, &sum), 0, "run %d after EDEADLK", i);
        cr_expect_eq((long)(uintptr_t)sum, 500500L, "run %d after EDEADLK", i);
    }
}
