/* The scheduling timeline (GREEN_TRACE=path; sched/trace.c,
 * sched/trace_json.c), read back: a run on two workers whose threads
 * yield, park on a channel and a mutex, sleep, offload, are preempted in a
 * loop that makes no call and are stolen, traced, and its file checked by
 * tests/timeline_check.py -- well-formed JSON, no two slices of a worker
 * overlapping, every park followed by a wake of the same thread (or the
 * end), every kind of event that the run made present.  A ring too small
 * keeps the newest events and says so; a path that cannot be written, or a
 * bad GREEN_TRACE_EVENTS, fails green_run at once with one line naming it.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "green.h"
#include "capture.h"
#include "common.h"

#ifndef TIMELINE_CHECK
#define TIMELINE_CHECK "tests/timeline_check.py"
#endif

/* A file name of this test's own, in TMPDIR. */
static void trace_path(char *buf, size_t n, const char *what)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, n, "%s/green-trace-%d-%s.json", tmp && *tmp ? tmp : "/tmp", (int)getpid(),
             what);
}

/* tests/timeline_check.py on path: its exit status, its lines in out. */
static int check(const char *path, const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' %s 2>&1", TIMELINE_CHECK, path, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t k = fread(out, 1, n - 1, p);
    out[k] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void need_python(void)
{
    if (system("python3 -c 'import json' >/dev/null 2>&1") != 0)
        cr_skip_test("python3 is needed to read the timeline back");
}

/* ---- the scene ------------------------------------------------------------- */

#define MESSAGES 300
#define LOCKS 20
#define YIELDERS 24

static green_chan_t *chan;
static green_mutex_t mutex;
static _Atomic int stop;
static _Atomic unsigned long spins;
static long counter;

static void *producer(void *arg)
{
    (void)arg;
    green_set_name("producer");
    for (int i = 0; i < MESSAGES; i++)
        cr_assert_eq(green_chan_send(chan, &i), 0);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    green_set_name("consumer");
    for (int i = 0, v; i < MESSAGES; i++)
        cr_assert_eq(green_chan_recv(chan, &v), 0);
    return NULL;
}

static void *locker(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "locker %d", (int)U(arg));
    green_set_name(name);
    for (int i = 0; i < LOCKS; i++) {
        green_mutex_lock(&mutex);
        counter++;
        green_sleep_ns(100 * US);    /* the other locker parks meanwhile */
        green_mutex_unlock(&mutex);
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    green_set_name("sleeper");
    for (int i = 0; i < 5; i++)
        green_sleep_ns(1 * MS);
    return NULL;
}

/* Makes no call while it spins: only a preemption gets it off its worker. */
static __attribute__((noinline)) void spin(void)
{
    unsigned long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        n++;
    atomic_store(&spins, n);
}

static void *spinner(void *arg)
{
    (void)arg;
    green_set_name("spinner");
    spin();
    return NULL;
}

static void *stopper(void *arg)
{
    (void)arg;
    green_set_name("stopper");
    green_sleep_ns(30 * MS);
    atomic_store(&stop, 1);
    return NULL;
}

static void *job(void *arg)
{
    usleep(2000);
    return arg;
}

static void *offloader(void *arg)
{
    (void)arg;
    green_set_name("offloader");
    void *r = NULL;
    cr_assert_eq(green_offload(job, P(7), &r), 0);
    cr_assert_eq(U(r), 7);
    return NULL;
}

static void *yielder(void *arg)
{
    int n = (int)U(arg);
    for (int i = 0; i < n; i++)
        green_yield();
    return NULL;
}

static void *scene(void *arg)
{
    (void)arg;
    green_set_name("main");
    cr_assert_eq(green_chan_create(&chan, sizeof(int), 0), 0);
    cr_assert_eq(green_mutex_init(&mutex), 0);
    atomic_store(&stop, 0);
    green_t t[16 + YIELDERS];
    int n = 0;
    cr_assert_eq(green_spawn(&t[n++], spinner, NULL), 0);
    cr_assert_eq(green_spawn(&t[n++], stopper, NULL), 0);
    cr_assert_eq(green_spawn(&t[n++], producer, NULL), 0);
    cr_assert_eq(green_spawn(&t[n++], consumer, NULL), 0);
    cr_assert_eq(green_spawn(&t[n++], locker, P(1)), 0);
    cr_assert_eq(green_spawn(&t[n++], locker, P(2)), 0);
    cr_assert_eq(green_spawn(&t[n++], sleeper, NULL), 0);
    cr_assert_eq(green_spawn(&t[n++], offloader, NULL), 0);
    /* A batch queued on this worker at once: the other one steals. */
    for (int i = 0; i < YIELDERS; i++)
        cr_assert_eq(green_spawn(&t[n++], yielder, P(50)), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(green_join(t[i], NULL), 0);
    green_chan_destroy(chan);
    green_mutex_destroy(&mutex);
    return NULL;
}

/* ---- the tests ------------------------------------------------------------- */

Test(trace, a_traced_run_writes_a_timeline_that_checks_out, .timeout = 60)
{
    need_python();
    char path[256], out[8192];
    trace_path(path, sizeof path, "scene");
    cr_assert_eq(setenv("GREEN_TRACE", path, 1), 0);
    green_config_t cfg = config(2);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    int err = green_run(scene, NULL, &cfg, NULL);
    unsetenv("GREEN_TRACE");
    cr_assert_eq(err, 0, "green_run: %s", strerror(err));
    cr_assert_eq(counter, 2 * LOCKS);
    int st = check(path, "--expect spawn,exit,park,wake,preempt,steal,offload "
                         "--calls green_chan_recv,green_mutex_lock,green_sleep,green_offload",
                   out, sizeof out);
    cr_expect_eq(st, 0, "%s: %s", path, out);
    /* TEST_TRACE_KEEP=1 keeps it (docs/timeline.svg is drawn from it). */
    if (st == 0 && !getenv("TEST_TRACE_KEEP"))
        unlink(path);
    else
        cr_log_info("the timeline: %s", path);
}

Test(trace, a_ring_too_small_keeps_the_newest_and_says_so, .timeout = 60)
{
    need_python();
    char path[256], out[8192], said[4096];
    trace_path(path, sizeof path, "small");
    cr_assert_eq(setenv("GREEN_TRACE", path, 1), 0);
    cr_assert_eq(setenv("GREEN_TRACE_EVENTS", "1k", 1), 0);
    green_config_t cfg = config(2);
    struct capture c = capture_begin();
    int err = green_run(scene, NULL, &cfg, NULL);
    capture_end(c, said, sizeof said);
    unsetenv("GREEN_TRACE");
    unsetenv("GREEN_TRACE_EVENTS");
    cr_assert_eq(err, 0, "green_run: %s", strerror(err));
    cr_expect(strstr(said, "events dropped") && strstr(said, path), "stderr: %s", said);
    int st = check(path, "--dropped", out, sizeof out);
    cr_expect_eq(st, 0, "%s: %s", path, out);
    if (st == 0)
        unlink(path);
}

static void *nothing(void *arg) { return arg; }

/* green_run fails at once with err, one line on stderr naming `name=value`. */
static void refused(const char *name, const char *value, int err)
{
    char said[4096], want[512];
    cr_assert_eq(setenv(name, value, 1), 0);
    if (strcmp(name, "GREEN_TRACE") != 0)
        cr_assert_eq(setenv("GREEN_TRACE", "/dev/null", 1), 0);
    struct capture c = capture_begin();
    int got = run(nothing, NULL, 2, -1, NULL);
    int lines = capture_end(c, said, sizeof said);
    unsetenv(name);
    unsetenv("GREEN_TRACE");
    cr_expect_eq(got, err, "green_run with %s=%s: %d (%s), expected %s", name, value, got,
                 strerror(got), strerror(err));
    snprintf(want, sizeof want, "libgreen: %s=\"%s\": ", name, value);
    cr_expect(lines == 1 && strstr(said, want), "stderr: %s", said);
}

Test(trace, a_path_that_cannot_be_written_fails_the_run_naming_it, .timeout = 30)
{
    refused("GREEN_TRACE", "/nonexistent-dir/trace.json", ENOENT);
    refused("GREEN_TRACE", "/", EISDIR);
}

Test(trace, a_bad_ring_size_fails_the_run_naming_it, .timeout = 30)
{
    refused("GREEN_TRACE_EVENTS", "lots", EINVAL);
    refused("GREEN_TRACE_EVENTS", "12", EINVAL);       /* under 1k */
}
