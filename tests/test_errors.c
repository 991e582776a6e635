/* Bad input: one test per rule of the contract in green.h.
 *
 * Threads: NULL fn, joining yourself, detached, twice, concurrently, stale.
 * Sync: unlock by a non-owner, send on a closed channel.
 * Context: every call that needs a green thread returns EPERM elsewhere.
 * Config: absurd values refused by green_run, malformed GREEN_* variables
 * refused by green_config_init.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static void *nothing(void *arg)
{
    return arg;
}

/* A thread that stays alive until its channel is closed. */
static void *wait_for_close(void *arg)
{
    green_chan_recv((green_chan_t *)arg, NULL);
    return NULL;
}

/* ---- threads ------------------------------------------------------------ */

static void *spawn_null_fn_main(void *arg)
{
    int *rc = arg;
    green_t t;
    rc[0] = green_spawn(&t, NULL, NULL);
    rc[1] = green_spawn(NULL, NULL, NULL);
    return NULL;
}

Test(errors, spawn_with_a_null_function_is_einval, .timeout = 5)
{
    int rc[2] = {-1, -1};
    cr_assert_eq(run(spawn_null_fn_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], EINVAL);
}

static void *join_self(void *arg)
{
    (void)arg;
    return P(green_join(green_self(), NULL));
}

static void *join_self_main(void *arg)
{
    int *rc = arg;
    rc[0] = green_join(green_self(), NULL);
    rc[1] = green_join_until(green_self(), NULL, green_now_ns() + 10 * MS);
    green_t t;
    void *r = P(-1);
    if (green_spawn(&t, join_self, NULL) == 0)
        green_join(t, &r);
    rc[2] = (int)(intptr_t)r;
    return NULL;
}

Test(errors, joining_yourself_is_edeadlk, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(join_self_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EDEADLK);
    cr_expect_eq(rc[1], EDEADLK);
    cr_expect_eq(rc[2], EDEADLK);
}

static void *join_detached_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, 0, 0) != 0)
        return NULL;
    green_t alive, done;
    if (green_spawn(&alive, wait_for_close, c) || green_spawn(&done, nothing, NULL))
        return NULL;
    green_detach(alive);
    green_detach(done);
    green_sleep_ns(5 * MS);   /* `done` has finished by now */
    rc[0] = green_join(alive, NULL);
    rc[1] = green_join_until(alive, NULL, green_now_ns() + 10 * MS);
    rc[2] = green_join(done, NULL);
    green_chan_close(c);
    green_sleep_ns(5 * MS);
    green_chan_destroy(c);
    return NULL;
}

Test(errors, joining_a_detached_thread_is_einval, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(join_detached_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL, "joining a live detached thread: %d", rc[0]);
    cr_expect_eq(rc[1], EINVAL);
    cr_expect_eq(rc[2], EINVAL, "joining a finished detached thread: %d", rc[2]);
}

static void *join_twice_main(void *arg)
{
    int *rc = arg;
    green_t t;
    if (green_spawn(&t, nothing, NULL))
        return NULL;
    rc[0] = green_join(t, NULL);
    rc[1] = green_join(t, NULL);
    rc[2] = green_detach(t);
    return NULL;
}

Test(errors, joining_twice_is_einval_and_so_is_detaching_a_joined_thread, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    cr_assert_eq(run(join_twice_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], EINVAL);
    cr_expect_eq(rc[2], EINVAL);
}

static void *detach_twice_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, 0, 0) != 0)
        return NULL;
    green_t t;
    if (green_spawn(&t, wait_for_close, c))
        return NULL;
    rc[0] = green_detach(t);
    rc[1] = green_detach(t);
    green_chan_close(c);
    green_sleep_ns(5 * MS);
    green_chan_destroy(c);
    return NULL;
}

Test(errors, detaching_twice_is_einval, .timeout = 5)
{
    int rc[2] = {-1, -1};
    cr_assert_eq(run(detach_twice_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], EINVAL);
}

struct joined_twice {
    green_t target;
    int first_rc;
};

static void *join_target(void *arg)
{
    struct joined_twice *j = arg;
    j->first_rc = green_join(j->target, NULL);
    return NULL;
}

static void *concurrent_join_main(void *arg)
{
    int *rc = arg;
    static struct joined_twice j;
    green_chan_t *c;
    if (green_chan_create(&c, 0, 0) != 0)
        return NULL;
    if (green_spawn(&j.target, wait_for_close, c))
        return NULL;
    green_t joiner;
    if (green_spawn(&joiner, join_target, &j))
        return NULL;
    green_sleep_ns(10 * MS);  /* the joiner is blocked in green_join */
    rc[0] = green_join(j.target, NULL);
    green_chan_close(c);
    green_join(joiner, NULL);
    rc[1] = j.first_rc;
    green_chan_destroy(c);
    return NULL;
}

Test(errors, joining_a_thread_another_thread_is_joining_is_einval, .timeout = 5)
{
    int rc[2] = {-1, -1};
    cr_assert_eq(run(concurrent_join_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], 0, "the first joiner's join failed: %d", rc[1]);
}

static void *zero_handle_main(void *arg)
{
    int *rc = arg;
    green_t zero;
    memset(&zero, 0, sizeof zero);
    rc[0] = green_join(zero, NULL);
    rc[1] = green_detach(zero);
    return NULL;
}

Test(errors, joining_or_detaching_the_zero_handle_is_einval, .timeout = 5)
{
    int rc[2] = {-1, -1};
    cr_assert_eq(run(zero_handle_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], EINVAL);
}

static green_t from_last_run[2];  /* [0] joined, [1] detached */

static void *leave_handles_main(void *arg)
{
    (void)arg;
    if (green_spawn(&from_last_run[0], nothing, NULL) == 0)
        green_join(from_last_run[0], NULL);
    if (green_spawn(&from_last_run[1], nothing, NULL) == 0)
        green_detach(from_last_run[1]);
    return NULL;
}

static void *use_stale_handles_main(void *arg)
{
    int *rc = arg;
    /* Spawn a few threads first so a runtime that reuses control blocks
     * has a chance to put a new thread where the stale handle points. */
    green_t t[8];
    for (int i = 0; i < 8; i++)
        green_spawn(&t[i], nothing, NULL);
    rc[0] = green_join(from_last_run[0], NULL);
    rc[1] = green_detach(from_last_run[0]);
    rc[2] = green_join(from_last_run[1], NULL);
    rc[3] = green_join_until(from_last_run[1], NULL, green_now_ns() + 10 * MS);
    for (int i = 0; i < 8; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(errors, a_stale_handle_from_a_previous_run_is_einval, .timeout = 5)
{
    int rc[4] = {-1, -1, -1, -1};
    cr_assert_eq(run(leave_handles_main, NULL, 2, -1, NULL), 0);
    cr_assert_neq(green_id(from_last_run[0]), 0u);
    cr_assert_eq(run(use_stale_handles_main, rc, 2, -1, NULL), 0);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(rc[i], EINVAL, "call %d on a stale handle returned %d", i, rc[i]);
}

/* ---- sync --------------------------------------------------------------- */

static void *unlock_unheld_main(void *arg)
{
    int *rc = arg;
    static green_mutex_t m = GREEN_MUTEX_INIT;
    rc[0] = green_mutex_unlock(&m);
    return NULL;
}

Test(errors, unlocking_a_mutex_you_do_not_hold_is_eperm, .timeout = 5)
{
    int rc = -1;
    cr_assert_eq(run(unlock_unheld_main, &rc, 2, -1, NULL), 0);
    cr_expect_eq(rc, EPERM);
}

static void *send_closed_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(int), 1) != 0)
        return NULL;
    green_chan_close(c);
    int v = 1;
    rc[0] = green_chan_send(c, &v);
    green_chan_destroy(c);
    return NULL;
}

Test(errors, sending_on_a_closed_channel_is_epipe, .timeout = 5)
{
    int rc = -1;
    cr_assert_eq(run(send_closed_main, &rc, 2, -1, NULL), 0);
    cr_expect_eq(rc, EPIPE);
}

/* ---- calls that need a green thread, made elsewhere --------------------- */

enum call {
    SPAWN, SPAWN_DETACHED, JOIN, JOIN_UNTIL, SLEEP_NS, SLEEP_UNTIL, MUTEX_LOCK,
    MUTEX_LOCK_UNTIL, COND_WAIT, COND_WAIT_UNTIL, CHAN_SEND, CHAN_RECV, CHAN_SEND_UNTIL,
    CHAN_RECV_UNTIL, SELECT, SELECT_UNTIL, WG_WAIT, WG_WAIT_UNTIL, NCALLS
};

static const char *const call_name[NCALLS] = {
    "green_spawn", "green_spawn(NULL)", "green_join", "green_join_until", "green_sleep_ns",
    "green_sleep_until", "green_mutex_lock", "green_mutex_lock_until", "green_cond_wait",
    "green_cond_wait_until", "green_chan_send", "green_chan_recv", "green_chan_send_until",
    "green_chan_recv_until", "green_select", "green_select_until", "green_wg_wait",
    "green_wg_wait_until",
};

struct objects {
    green_t thread;      /* a real thread: live, or from a finished run */
    green_chan_t *chan;  /* unbuffered, nobody on the other side */
    green_mutex_t mutex;
    green_cond_t cond;
    green_wg_t wg;       /* counter 1 */
    int rc[NCALLS];
};

static void make_every_call(struct objects *o)
{
    green_t t;
    long v = 1;
    size_t k;
    uint64_t soon = green_now_ns() + 10 * MS;
    green_chan_case_t c[1] = {{o->chan, GREEN_CHAN_RECV, &v, 0}};
    o->rc[SPAWN] = green_spawn(&t, nothing, NULL);
    o->rc[SPAWN_DETACHED] = green_spawn(NULL, nothing, NULL);
    o->rc[JOIN] = green_join(o->thread, NULL);
    o->rc[JOIN_UNTIL] = green_join_until(o->thread, NULL, soon);
    o->rc[SLEEP_NS] = green_sleep_ns(1 * MS);
    o->rc[SLEEP_UNTIL] = green_sleep_until(soon);
    o->rc[MUTEX_LOCK] = green_mutex_lock(&o->mutex);
    o->rc[MUTEX_LOCK_UNTIL] = green_mutex_lock_until(&o->mutex, soon);
    o->rc[COND_WAIT] = green_cond_wait(&o->cond, &o->mutex);
    o->rc[COND_WAIT_UNTIL] = green_cond_wait_until(&o->cond, &o->mutex, soon);
    o->rc[CHAN_SEND] = green_chan_send(o->chan, &v);
    o->rc[CHAN_RECV] = green_chan_recv(o->chan, &v);
    o->rc[CHAN_SEND_UNTIL] = green_chan_send_until(o->chan, &v, soon);
    o->rc[CHAN_RECV_UNTIL] = green_chan_recv_until(o->chan, &v, soon);
    o->rc[SELECT] = green_select(c, 1, &k);
    o->rc[SELECT_UNTIL] = green_select_until(c, 1, &k, soon);
    o->rc[WG_WAIT] = green_wg_wait(&o->wg);
    o->rc[WG_WAIT_UNTIL] = green_wg_wait_until(&o->wg, soon);
}

static void expect_all_eperm(const struct objects *o, const char *where)
{
    for (int i = 0; i < NCALLS; i++)
        cr_expect_eq(o->rc[i], EPERM, "%s from %s returned %d", call_name[i], where, o->rc[i]);
}

/* Leaves o->thread a real, finished thread's handle and o->wg at 1. */
static void *prepare_outside_main(void *arg)
{
    struct objects *o = arg;
    if (green_spawn(&o->thread, nothing, NULL) == 0)
        green_join(o->thread, NULL);
    if (green_wg_add(&o->wg, 1) != 0)
        return P(1);
    return NULL;
}

Test(errors, calls_that_need_a_green_thread_are_eperm_outside_green_run, .timeout = 10)
{
    static struct objects o;
    memset(&o, 0, sizeof o);
    memset(o.rc, 0xff, sizeof o.rc);
    void *ret = NULL;
    green_config_t cfg = config(2);
    cr_assert_eq(green_run(prepare_outside_main, &o, &cfg, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_assert_eq(green_chan_create(&o.chan, sizeof(long), 0), 0);
    make_every_call(&o);
    expect_all_eperm(&o, "the process's main thread");
    green_chan_destroy(o.chan);
}

static void *plain_pthread(void *arg)
{
    make_every_call(arg);
    return NULL;
}

static void *from_pthread_main(void *arg)
{
    struct objects *o = arg;
    o->thread = green_self();  /* live: main is parked in pthread_join */
    if (green_chan_create(&o->chan, sizeof(long), 0) || green_wg_add(&o->wg, 1))
        return P(1);
    pthread_t pt;
    if (pthread_create(&pt, NULL, plain_pthread, o) != 0)
        return P(1);
    pthread_join(pt, NULL);
    green_wg_done(&o->wg);
    green_chan_destroy(o->chan);
    return NULL;
}

Test(errors, calls_that_need_a_green_thread_are_eperm_from_a_pthread_started_by_one,
     .timeout = 10)
{
    static struct objects o;
    memset(&o, 0, sizeof o);
    memset(o.rc, 0xff, sizeof o.rc);
    void *ret = NULL;
    green_config_t cfg = config(2);
    cr_assert_eq(green_run(from_pthread_main, &o, &cfg, &ret), 0);
    cr_assert_null(ret, "setup failed");
    expect_all_eperm(&o, "a pthread created by a green thread");
}

Test(errors, yield_outside_a_green_thread_does_nothing, .timeout = 5)
{
    green_yield();
    cr_expect_eq(green_worker_index(), -1);
}

/* ---- configuration ------------------------------------------------------ */

static atomic_int main_ran;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&main_ran, 1);
    return NULL;
}

static void expect_refused(green_config_t cfg, const char *what)
{
    atomic_store(&main_ran, 0);
    int rc = green_run(mark_ran, NULL, &cfg, NULL);
    cr_expect_eq(rc, EINVAL, "green_run with %s returned %d", what, rc);
    cr_expect_eq(atomic_load(&main_ran), 0, "main_fn ran with %s", what);
}

Test(errors, a_billion_workers_is_einval, .timeout = 10)
{
    green_config_t cfg = config(2);
    cfg.workers = 1u << 30;
    expect_refused(cfg, "workers = 1<<30");
}

Test(errors, a_one_byte_stack_is_einval, .timeout = 5)
{
    green_config_t cfg = config(2);
    cfg.stack_size = 1;
    expect_refused(cfg, "stack_size = 1");
}

/* Zero is not "the default" (green_config_init gives that): green_run used
 * to accept it and die of SIGSEGV on the first thread's stack. */
Test(errors, a_zero_stack_is_einval_and_says_so, .init = cr_redirect_stderr, .timeout = 5)
{
    green_config_t cfg = config(2);
    cfg.stack_size = 0;
    expect_refused(cfg, "stack_size = 0");
    fflush(stderr);
    cr_expect_stderr_eq_str("libgreen: green_run: cfg.stack_size = 0: not in [16 KiB, 1 GiB] "
                            "(green_config_init gives 64 KiB)\n");
}

Test(errors, a_petabyte_stack_is_einval, .timeout = 5)
{
    green_config_t cfg = config(2);
    cfg.stack_size = (size_t)1 << 50;
    expect_refused(cfg, "stack_size = 1<<50");
}

Test(errors, an_unknown_preempt_mode_is_einval, .timeout = 5)
{
    green_config_t cfg = config(2);
    cfg.preempt = 99;
    expect_refused(cfg, "preempt = 99");
}

static void expect_signo_refused(int signo, const char *what)
{
    green_config_t cfg = config(2);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.signo = signo;
    expect_refused(cfg, what);
}

Test(errors, signal_number_zero_is_einval, .timeout = 5)
{
    expect_signo_refused(0, "signo = 0");
}

Test(errors, signal_number_999_is_einval, .timeout = 5)
{
    expect_signo_refused(999, "signo = 999");
}

Test(errors, sigkill_as_the_preemption_signal_is_einval, .timeout = 5)
{
    expect_signo_refused(SIGKILL, "signo = SIGKILL");
}

/* Clear every GREEN_* variable so the defaults are known. */
static void clean_env(void)
{
    static const char *const vars[] = {"GREEN_WORKERS", "GREEN_QUANTUM_US", "GREEN_PREEMPT",
                                       "GREEN_SIGNAL", "GREEN_STACK_SIZE", "GREEN_BUDGET",
                                       "GREEN_SEED"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* green_config_init with fd 2 captured into buf. */
static int init_capturing_stderr(green_config_t *cfg, char *buf, size_t cap)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = green_config_init(cfg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, cap - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return rc;
}

Test(errors, a_malformed_GREEN_WORKERS_is_einval_and_keeps_the_default)
{
    clean_env();
    green_config_t defaults;
    cr_assert_eq(green_config_init(&defaults), 0);
    cr_assert_eq(setenv("GREEN_WORKERS", "abc", 1), 0);
    cr_assert_eq(setenv("GREEN_SEED", "12345", 1), 0);
    green_config_t cfg;
    char err[4096];
    cr_expect_eq(init_capturing_stderr(&cfg, err, sizeof err), EINVAL);
    cr_expect_eq(cfg.workers, defaults.workers);
    cr_expect_eq(cfg.seed, 12345u, "a good variable beside the bad one was not applied");
    cr_expect_not_null(strstr(err, "GREEN_WORKERS"), "stderr: %s", err);
}

Test(errors, a_negative_GREEN_STACK_SIZE_is_einval_and_keeps_the_default)
{
    clean_env();
    green_config_t defaults;
    cr_assert_eq(green_config_init(&defaults), 0);
    cr_assert_eq(setenv("GREEN_STACK_SIZE", "-5", 1), 0);
    green_config_t cfg;
    char err[4096];
    cr_expect_eq(init_capturing_stderr(&cfg, err, sizeof err), EINVAL);
    cr_expect_eq(cfg.stack_size, defaults.stack_size);
    cr_expect_not_null(strstr(err, "GREEN_STACK_SIZE"), "stderr: %s", err);
}

Test(errors, an_out_of_range_GREEN_PREEMPT_is_einval_and_keeps_the_default)
{
    clean_env();
    green_config_t defaults;
    cr_assert_eq(green_config_init(&defaults), 0);
    cr_assert_eq(setenv("GREEN_PREEMPT", "99", 1), 0);
    green_config_t cfg;
    char err[4096];
    cr_expect_eq(init_capturing_stderr(&cfg, err, sizeof err), EINVAL);
    cr_expect_eq(cfg.preempt, defaults.preempt);
    cr_expect_not_null(strstr(err, "GREEN_PREEMPT"), "stderr: %s", err);
}

Test(errors, well_formed_GREEN_variables_are_applied)
{
    clean_env();
    cr_assert_eq(setenv("GREEN_WORKERS", "3", 1), 0);
    cr_assert_eq(setenv("GREEN_STACK_SIZE", "131072", 1), 0);
    cr_assert_eq(setenv("GREEN_SEED", "7", 1), 0);
    green_config_t cfg;
    cr_expect_eq(green_config_init(&cfg), 0);
    cr_expect_eq(cfg.workers, 3u);
    cr_expect_eq(cfg.stack_size, (size_t)131072);
    cr_expect_eq(cfg.seed, 7u);
}
