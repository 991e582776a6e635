/* green_run: repeated runs stay correct and do not leak, argument errors,
 * nesting, and independent runtimes on several OS threads at once.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* ---- a workload touching threads, channels, mutexes, wait groups ------- */

#define WL_THREADS 16
#define WL_VALUES 100

struct workload {
    green_chan_t *c;
    green_mutex_t m;
    green_wg_t wg;
    long counter;      /* guarded by m */
    long sum;          /* the receiver's */
    int errors;        /* guarded by m */
};

static void *wl_sender(void *arg)
{
    struct workload *w = arg;
    for (long v = 1; v <= WL_VALUES; v++) {
        int rc = green_chan_send(w->c, &v);
        green_mutex_lock(&w->m);
        w->counter++;
        w->errors += rc != 0;
        green_mutex_unlock(&w->m);
        if (v % 10 == 0)
            green_yield();
    }
    green_wg_done(&w->wg);
    return NULL;
}

static void *wl_receiver(void *arg)
{
    struct workload *w = arg;
    long v;
    while (green_chan_recv(w->c, &v) == 0)
        w->sum += v;
    return NULL;
}

static void *workload_main(void *arg)
{
    struct workload *w = arg;
    memset(w, 0, sizeof *w);
    if (green_chan_create(&w->c, sizeof(long), 4) != 0)
        return P(1);
    green_t r;
    if (green_spawn(&r, wl_receiver, w) != 0)
        return P(1);
    green_wg_add(&w->wg, WL_THREADS);
    for (int i = 0; i < WL_THREADS; i++)
        if (green_spawn(NULL, wl_sender, w) != 0)
            return P(1);
    green_wg_wait(&w->wg);
    green_chan_close(w->c);
    green_join(r, NULL);
    green_chan_destroy(w->c);
    green_mutex_destroy(&w->m);
    green_wg_destroy(&w->wg);
    return P(2);  /* reached the end */
}

/* 0 when the run went right, else a short reason. */
static const char *run_workload(unsigned workers)
{
    struct workload w;
    green_config_t cfg = config(workers);
    void *ret = NULL;
    if (green_run(workload_main, &w, &cfg, &ret) != 0)
        return "green_run failed";
    if (U(ret) != 2)
        return "setup inside the run failed";
    if (w.errors)
        return "a send failed";
    if (w.counter != (long)WL_THREADS * WL_VALUES)
        return "mutex-guarded counter wrong";
    if (w.sum != (long)WL_THREADS * WL_VALUES * (WL_VALUES + 1) / 2)
        return "channel sum wrong";
    return NULL;
}

/* ---- resource use ------------------------------------------------------- */

static long status_field_kb(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    long kb = -1;
    size_t len = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':')
            sscanf(line + len + 1, "%ld", &kb);
    fclose(f);
    return kb;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    int n = 0;
    for (int ch; (ch = fgetc(f)) != EOF;)
        n += ch == '\n';
    fclose(f);
    return n;
}

struct usage {
    long rss_kb;
    int fds, tasks, maps;
};

static struct usage usage_now(void)
{
    return (struct usage){status_field_kb("VmRSS"), count_dir("/proc/self/fd"),
                          count_dir("/proc/self/task"), count_maps()};
}

Test(run, a_hundred_consecutive_runs_are_all_correct_and_leak_nothing, .timeout = 60)
{
    struct usage at10 = {0};
    int failed = 0;
    for (int i = 1; i <= 100; i++) {
        const char *why = run_workload(2);
        if (why && failed++ < 5)
            cr_expect_fail("run %d: %s", i, why);
        if (i == 10)
            at10 = usage_now();
    }
    struct usage at100 = usage_now();
    cr_expect_eq(failed, 0, "%d of 100 runs went wrong", failed);
    cr_expect_lt(at100.rss_kb - at10.rss_kb, 16 * 1024L, "VmRSS grew from %ld kB to %ld kB",
                 at10.rss_kb, at100.rss_kb);
    cr_expect_leq(at100.fds, at10.fds + 2, "open fds grew from %d to %d", at10.fds, at100.fds);
    cr_expect_leq(at100.tasks, at10.tasks, "OS threads grew from %d to %d", at10.tasks,
                  at100.tasks);
    cr_expect_leq(at100.maps, at10.maps + 64, "mappings grew from %d to %d", at10.maps,
                  at100.maps);
#ifdef HAVE_LSAN
    /* Under ASan: every byte the 100 runs allocated must be gone now. */
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0,
                 "LeakSanitizer found leaks after 100 runs (see the report above)");
#endif
}

Test(run, no_worker_threads_outlive_green_run, .timeout = 10)
{
    int before = count_dir("/proc/self/task");
    cr_assert_null(run_workload(4));
    cr_expect_eq(count_dir("/proc/self/task"), before);
}

/* ---- arguments ---------------------------------------------------------- */

Test(run, a_null_main_fn_is_einval, .timeout = 5)
{
    green_config_t cfg = config(2);
    void *ret = P(7);
    cr_expect_eq(green_run(NULL, NULL, &cfg, &ret), EINVAL);
    cr_expect_eq(green_run(NULL, NULL, NULL, NULL), EINVAL);
}

static void *set_flag(void *arg)
{
    atomic_store((atomic_int *)arg, 1);
    return P(3);
}

Test(run, a_null_ret_is_accepted, .timeout = 5)
{
    atomic_int ran = 0;
    green_config_t cfg = config(2);
    cr_expect_eq(green_run(set_flag, &ran, &cfg, NULL), 0);
    cr_expect_eq(atomic_load(&ran), 1);
}

Test(run, a_null_config_means_the_defaults, .timeout = 5)
{
    atomic_int ran = 0;
    void *ret = NULL;
    cr_expect_eq(green_run(set_flag, &ran, NULL, &ret), 0);
    cr_expect_eq(atomic_load(&ran), 1);
    cr_expect_eq(U(ret), 3u);
}

static void *nested_main(void *arg)
{
    int *rc = arg;
    atomic_int ran = 0;
    green_config_t cfg;
    green_config_init(&cfg);
    rc[0] = green_run(set_flag, &ran, &cfg, NULL);
    rc[1] = green_run(set_flag, &ran, NULL, NULL);
    rc[2] = atomic_load(&ran);
    return NULL;
}

Test(run, green_run_from_a_green_thread_is_ebusy, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    green_config_t cfg = config(2);
    cr_assert_eq(green_run(nested_main, rc, &cfg, NULL), 0);
    cr_expect_eq(rc[0], EBUSY);
    cr_expect_eq(rc[1], EBUSY);
    cr_expect_eq(rc[2], 0, "the nested main_fn ran");
}

/* ---- concurrent runtimes ------------------------------------------------ */

#define NCONCURRENT 2
#define CONCURRENT_ROUNDS 10

struct concurrent {
    pthread_barrier_t *start;
    const char *why;
    int failed;
};

static void *runs_in_a_pthread(void *arg)
{
    struct concurrent *c = arg;
    pthread_barrier_wait(c->start);
    for (int i = 0; i < CONCURRENT_ROUNDS; i++) {
        const char *why = run_workload(2);
        if (why) {
            c->failed++;
            c->why = why;
        }
    }
    return NULL;
}

Test(run, green_run_on_two_pthreads_at_once_gives_two_working_runtimes, .timeout = 30)
{
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, NCONCURRENT), 0);
    /* config() uses cr_assert: make sure it can pass before leaving this thread */
    green_config_t probe = config(2);
    (void)probe;
    struct concurrent c[NCONCURRENT];
    pthread_t t[NCONCURRENT];
    for (int i = 0; i < NCONCURRENT; i++) {
        c[i] = (struct concurrent){&start, NULL, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, runs_in_a_pthread, &c[i]), 0);
    }
    for (int i = 0; i < NCONCURRENT; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < NCONCURRENT; i++)
        cr_expect_eq(c[i].failed, 0, "pthread %d: %d of %d runs failed, last: %s", i,
                     c[i].failed, CONCURRENT_ROUNDS, c[i].why ? c[i].why : "");
}
