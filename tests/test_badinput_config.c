/* Bad input to the configuration: every GREEN_* variable and every field of
 * green_config_t fed garbage, zeros, negatives and overflows, and green_run
 * fed what it cannot start with.  Each is EINVAL (EBUSY for a nested run)
 * and one line on stderr naming the variable or field -- checked to the
 * line.  The calls themselves are in tests/test_badinput.c; docs/bad-input.md
 * is the table.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "common.h"

/* ---- GREEN_* variables -------------------------------------------------- */

static const char *const numeric_vars[] = {
    "GREEN_WORKERS", "GREEN_STACK_SIZE", "GREEN_QUANTUM_US", "GREEN_BUDGET",
    "GREEN_SEED", "GREEN_OFFLOAD_THREADS",
};
static const char *const all_vars[] = {
    "GREEN_WORKERS", "GREEN_STACK_SIZE", "GREEN_QUANTUM_US", "GREEN_PREEMPT",
    "GREEN_SIGNAL", "GREEN_BUDGET", "GREEN_SEED", "GREEN_DETERMINISTIC",
    "GREEN_OFFLOAD_THREADS", "GREEN_UNSAFE", "GREEN_PREEMPTIBLE",
};

static void clean_env(void)
{
    for (size_t i = 0; i < NELEM(all_vars); i++)
        unsetenv(all_vars[i]);
}

/* name=value alone: green_config_init returns EINVAL, says so in exactly
 * one line naming the variable, and the configuration is the default. */
static void expect_var_refused(const char *name, const char *value)
{
    clean_env();
    green_config_t defaults, cfg;
    cr_assert_eq(green_config_init(&defaults), 0);
    cr_assert_eq(setenv(name, value, 1), 0);
    char err[4096];
    struct capture c = capture_begin();
    int rc = green_config_init(&cfg);
    int lines = capture_end(c, err, sizeof err);
    cr_expect_eq(rc, EINVAL, "%s=\"%s\": green_config_init returned %d", name, value, rc);
    cr_expect_eq(lines, 1, "%s=\"%s\": %d lines on stderr: %s", name, value, lines, err);
    cr_expect_not_null(strstr(err, name), "%s=\"%s\": stderr: %s", name, value, err);
    cr_expect_eq(memcmp(&cfg, &defaults, sizeof cfg), 0,
                 "%s=\"%s\" changed the configuration", name, value);
    unsetenv(name);
}

static const char *const garbage[] = {
    "abc", "12abc", "-1", "99999999999999999999", " 1", "1 ", "0x10", "+1",
};

Test(badinput, garbage_in_a_numeric_GREEN_variable_is_einval_with_one_line)
{
    for (size_t v = 0; v < NELEM(numeric_vars); v++)
        for (size_t g = 0; g < NELEM(garbage); g++)
            expect_var_refused(numeric_vars[v], garbage[g]);
}

Test(badinput, garbage_in_a_named_GREEN_variable_is_einval_with_one_line)
{
    static const char *const named[] = { "GREEN_PREEMPT", "GREEN_SIGNAL", "GREEN_DETERMINISTIC" };
    for (size_t v = 0; v < NELEM(named); v++)
        for (size_t g = 0; g < NELEM(garbage); g++)
            expect_var_refused(named[v], garbage[g]);
}

Test(badinput, out_of_range_GREEN_values_are_einval_with_one_line)
{
    static const char *const bad[][2] = {
        { "GREEN_WORKERS", "4097" },           { "GREEN_WORKERS", "4294967297" },
        { "GREEN_STACK_SIZE", "0" },           { "GREEN_STACK_SIZE", "16383" },
        { "GREEN_STACK_SIZE", "2g" },          { "GREEN_STACK_SIZE", "17179869184g" },
        { "GREEN_STACK_SIZE", "64q" },         { "GREEN_QUANTUM_US", "0" },
        { "GREEN_QUANTUM_US", "49" },          { "GREEN_QUANTUM_US", "10000001" },
        { "GREEN_QUANTUM_US", "4294967346" },  { "GREEN_BUDGET", "0" },
        { "GREEN_BUDGET", "1000000001" },      { "GREEN_BUDGET", "4294967297" },
        { "GREEN_OFFLOAD_THREADS", "0" },      { "GREEN_OFFLOAD_THREADS", "65537" },
        { "GREEN_SEED", "18446744073709551616" }, { "GREEN_PREEMPT", "1" },
        { "GREEN_PREEMPT", "signals" },        { "GREEN_DETERMINISTIC", "2" },
        { "GREEN_DETERMINISTIC", "yes" },      { "GREEN_SIGNAL", "0" },
        { "GREEN_SIGNAL", "9" },               { "GREEN_SIGNAL", "SIGKILL" },
        { "GREEN_SIGNAL", "SIGSEGV" },         { "GREEN_SIGNAL", "65" },
        { "GREEN_SIGNAL", "2147483648" },      { "GREEN_SIGNAL", "RTMIN+" },
        { "GREEN_SIGNAL", "RTMIN+31" },        { "GREEN_SIGNAL", "RTMIN+-1" },
        { "GREEN_SIGNAL", "SIG" },
    };
    for (size_t i = 0; i < NELEM(bad); i++)
        expect_var_refused(bad[i][0], bad[i][1]);
}

/* 32 and 33 lie between the classic signals and SIGRTMIN: glibc keeps them
 * for itself (thread cancellation, setxid), and sigaction refuses them. */
Test(badinput, the_signals_glibc_keeps_for_itself_are_einval_with_one_line)
{
    char buf[16];
    for (int s = 32; s < SIGRTMIN; s++) {
        snprintf(buf, sizeof buf, "%d", s);
        expect_var_refused("GREEN_SIGNAL", buf);
    }
}

Test(badinput, an_empty_GREEN_variable_is_unset)
{
    clean_env();
    green_config_t defaults, cfg;
    cr_assert_eq(green_config_init(&defaults), 0);
    for (size_t i = 0; i < NELEM(all_vars); i++)
        cr_assert_eq(setenv(all_vars[i], "", 1), 0);
    char err[4096];
    struct capture c = capture_begin();
    int rc = green_config_init(&cfg);
    int lines = capture_end(c, err, sizeof err);
    cr_expect_eq(rc, 0);
    cr_expect_eq(lines, 0, "stderr: %s", err);
    cfg.unsafe_objects = defaults.unsafe_objects;           /* "" and NULL: no names */
    cfg.preemptible_objects = defaults.preemptible_objects;
    cr_expect_eq(memcmp(&cfg, &defaults, sizeof cfg), 0);
}

Test(badinput, one_line_per_malformed_variable_and_the_good_ones_apply)
{
    clean_env();
    cr_assert_eq(setenv("GREEN_WORKERS", "-3", 1), 0);
    cr_assert_eq(setenv("GREEN_BUDGET", "lots", 1), 0);
    cr_assert_eq(setenv("GREEN_QUANTUM_US", "200", 1), 0);
    green_config_t cfg;
    char err[4096];
    struct capture c = capture_begin();
    int rc = green_config_init(&cfg);
    int lines = capture_end(c, err, sizeof err);
    cr_expect_eq(rc, EINVAL);
    cr_expect_eq(lines, 2, "stderr: %s", err);
    cr_expect_eq(cfg.quantum_us, 200u);
}

Test(badinput, config_init_with_a_null_config_is_einval)
{
    cr_expect_eq(green_config_init(NULL), EINVAL);
}

static atomic_int main_ran;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&main_ran, 1);
    return NULL;
}

/* green_run(cfg) refuses to start: rc, one line on stderr naming `what`. */
static void expect_run_refused(const green_config_t *cfg, int rc_want, const char *what)
{
    atomic_store(&main_ran, 0);
    char err[4096];
    struct capture c = capture_begin();
    int rc = green_run(mark_ran, NULL, cfg, NULL);
    int lines = capture_end(c, err, sizeof err);
    cr_expect_eq(rc, rc_want, "%s: green_run returned %d", what, rc);
    cr_expect_eq(atomic_load(&main_ran), 0, "%s: main_fn ran", what);
    cr_expect_eq(lines, 1, "%s: %d lines on stderr: %s", what, lines, err);
    cr_expect_not_null(strstr(err, what), "%s: stderr: %s", what, err);
}

Test(badinput, green_run_with_a_malformed_environment_is_einval_with_one_line, .timeout = 10)
{
    clean_env();
    cr_assert_eq(setenv("GREEN_STACK_SIZE", "1e6", 1), 0);
    expect_run_refused(NULL, EINVAL, "GREEN_STACK_SIZE");
}

Test(badinput, absurd_config_fields_are_einval_with_one_line_each, .timeout = 10)
{
    clean_env();
    green_config_t cfg;
    cr_assert_eq(green_config_init(&cfg), 0);
    struct { const char *field; green_config_t cfg; } bad[16];
    size_t n = 0;
#define BAD(name, stmt)                                                        \
    do {                                                                       \
        bad[n].field = name;                                                   \
        bad[n].cfg = cfg;                                                      \
        green_config_t *c = &bad[n++].cfg;                                     \
        stmt;                                                                  \
    } while (0)
    BAD("cfg.workers", c->workers = UINT_MAX);
    BAD("cfg.stack_size", c->stack_size = SIZE_MAX);
    BAD("cfg.quantum_us", c->quantum_us = 0);
    BAD("cfg.quantum_us", c->quantum_us = UINT_MAX);
    BAD("cfg.preempt", c->preempt = -1);
    BAD("cfg.signo", c->signo = -1);
    BAD("cfg.signo", c->signo = 32);
    BAD("cfg.budget", c->budget = 0);
    BAD("cfg.deterministic", c->deterministic = 3);
    BAD("cfg.offload_threads", c->offload_threads = UINT_MAX);
    BAD("cfg.deadlock", c->deadlock = 3);
    BAD("cfg.handoff", c->handoff = 2);
    BAD("cfg.lock_warn_ms", c->lock_warn_ms = UINT_MAX);
    BAD("cfg.reserved", c->reserved[2] = 1);
    BAD("cfg.budget", c->budget = UINT_MAX);
#undef BAD
    for (size_t i = 0; i < n; i++)
        expect_run_refused(&bad[i].cfg, EINVAL, bad[i].field);
}

Test(badinput, a_deterministic_run_on_several_workers_is_einval_with_one_line, .timeout = 10)
{
    green_config_t cfg = config(4);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    expect_run_refused(&cfg, EINVAL, "deterministic");
}

Test(badinput, naming_libc_preemptible_is_einval_with_one_line, .timeout = 10)
{
    clean_env();
    cr_assert_eq(setenv("GREEN_PREEMPTIBLE", "libmine.so:libc.so.6", 1), 0);
    green_config_t cfg = config(1);
    expect_run_refused(&cfg, EINVAL, "libc.so.6");
}

Test(badinput, odd_object_lists_are_accepted, .timeout = 10)
{
    clean_env();
    char longname[600];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    static const char *const lists[] = { ":", "::::", "no-such-object.so", "/", "a::b:" };
    for (size_t i = 0; i < NELEM(lists) + 1; i++) {
        const char *l = i < NELEM(lists) ? lists[i] : longname;
        cr_assert_eq(setenv("GREEN_PREEMPTIBLE", l, 1), 0);
        cr_assert_eq(setenv("GREEN_UNSAFE", l, 1), 0);
        green_config_t cfg = config(1);
        atomic_store(&main_ran, 0);
        cr_expect_eq(green_run(mark_ran, NULL, &cfg, NULL), 0, "with \"%.20s\"", l);
        cr_expect_eq(atomic_load(&main_ran), 1);
    }
}

/* ---- green_run ---------------------------------------------------------- */

Test(badinput, green_run_with_a_null_main_is_einval)
{
    cr_expect_eq(green_run(NULL, NULL, NULL, NULL), EINVAL);
}

static void *nested_run_main(void *arg)
{
    int *rc = arg;
    atomic_store(&main_ran, 0);
    rc[0] = green_run(mark_ran, NULL, NULL, NULL);
    rc[1] = atomic_load(&main_ran);
    return NULL;
}

Test(badinput, green_run_from_a_green_thread_is_ebusy, .timeout = 10)
{
    int rc[2] = { -1, -1 };
    cr_assert_eq(run(nested_run_main, rc, 2, -1, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], 0, "the nested run's main ran");
}
