/* Thread dumps (green_dump, GREEN_DUMP_SIGNAL; sched/dump.c), read back and
 * parsed: every thread is listed with its name, its state, what a parked
 * one waits on and who holds it, and a backtrace from its saved context
 * that names the test's own functions -- taken while the run goes on, from
 * a green thread and from a plain OS thread; a worker that cannot stop is
 * named; 10 000 threads take under a second.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>

#include "green.h"
#include "common.h"

/* A dump into a memory file, read back as one string (free it). */
static char *dump_text(void)
{
    int fd = memfd_create("dump", 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(green_dump(fd), 0);
    off_t len = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)len + 1);
    cr_assert_not_null(s);
    cr_assert_eq(pread(fd, s, (size_t)len, 0), len);
    s[len] = '\0';
    close(fd);
    return s;
}

/* The paragraph of green thread `id` (from its header line to the blank
 * line after its frames), or NULL. */
static char *paragraph(const char *dump, uint64_t id)
{
    char head[64];
    snprintf(head, sizeof head, "\ngreen thread %llu", (unsigned long long)id);
    const char *p = dump;
    while ((p = strstr(p, head)) != NULL) {
        char c = p[strlen(head)];
        if (c == ' ' || c == ':')
            break;
        p++;
    }
    if (!p)
        return NULL;
    p++;
    const char *end = strstr(p, "\n\n");
    size_t n = end ? (size_t)(end - p) : strlen(p);
    return strndup(p, n);
}

/* ---- the scene ------------------------------------------------------------- */

struct scene {
    green_mutex_t m;
    green_chan_t *ch;
    atomic_int spin_stop;
    green_t holder, waiter, sleeper, spinner, reader;
    int pipe[2];                     /* the reader waits on pipe[0] */
    char *dump;
    char *from_os_thread;
};

__attribute__((noinline)) void dump_test_hold_and_wait(struct scene *s)
{
    green_mutex_lock(&s->m);
    int v;
    green_chan_recv(s->ch, &v);      /* until the test is done */
    green_mutex_unlock(&s->m);
}

static void *holder_fn(void *arg)
{
    green_set_name("holder");
    dump_test_hold_and_wait(arg);
    return NULL;
}

__attribute__((noinline)) void dump_test_lock(struct scene *s)
{
    green_mutex_lock(&s->m);
    green_mutex_unlock(&s->m);
}

static void *waiter_fn(void *arg)
{
    green_set_name("waiter");
    dump_test_lock(arg);
    return NULL;
}

static void *sleeper_fn(void *arg)
{
    (void)arg;
    green_set_name("sleeper");
    green_sleep_ns(300 * MS);
    return NULL;
}

__attribute__((noinline)) void dump_test_spin(struct scene *s)
{
    while (!atomic_load_explicit(&s->spin_stop, memory_order_relaxed))
        ;
}

static void *spinner_fn(void *arg)
{
    green_set_name("spinner");
    dump_test_spin(arg);
    return NULL;
}

static void *reader_fn(void *arg)
{
    struct scene *s = arg;
    green_set_name("reader");
    cr_assert_eq(green_fd_wait(s->pipe[0], POLLIN, GREEN_FOREVER), 0);
    return NULL;
}

/* The dump from a plain OS thread, taken once main is seen inside
 * pthread_join: main may still be between pthread_create and the join (a
 * preemption can land there), so dump again until it is in (2 s at most). */
static void *os_dumper(void *arg)
{
    struct scene *s = arg;
    uint64_t until = mono_ns() + 2000ull * MS;
    for (;;) {
        char *text = dump_text();
        char *m = paragraph(text, 1);
        bool joining = m && strstr(m, "pthread_join+");
        free(m);
        if (joining || mono_ns() > until) {
            s->from_os_thread = text;
            return NULL;
        }
        free(text);
        nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
    }
}

static void *scene_main(void *arg)
{
    struct scene *s = arg;
    cr_assert_eq(green_mutex_init(&s->m), 0);
    cr_assert_eq(green_chan_create(&s->ch, sizeof(int), 0), 0);
    cr_assert_eq(green_set_name("main"), 0);
    cr_assert_eq(green_spawn(&s->holder, holder_fn, s), 0);
    green_sleep_ns(20 * MS);         /* the holder has the mutex */
    cr_assert_eq(green_spawn(&s->waiter, waiter_fn, s), 0);
    cr_assert_eq(green_spawn(&s->sleeper, sleeper_fn, s), 0);
    cr_assert_eq(green_spawn(&s->spinner, spinner_fn, s), 0);
    cr_assert_eq(pipe2(s->pipe, O_NONBLOCK | O_CLOEXEC), 0);
    cr_assert_eq(green_spawn(&s->reader, reader_fn, s), 0);
    green_sleep_ns(50 * MS);         /* all in place; the waiter parked 50 ms */
    s->dump = dump_text();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, os_dumper, s), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    atomic_store(&s->spin_stop, 1);
    int v = 1;
    green_chan_send(s->ch, &v);
    green_join(s->holder, NULL);
    green_join(s->waiter, NULL);
    green_join(s->sleeper, NULL);
    green_join(s->spinner, NULL);
    cr_assert_eq(write(s->pipe[1], "x", 1), 1);
    green_join(s->reader, NULL);
    close(s->pipe[0]);
    close(s->pipe[1]);
    green_chan_destroy(s->ch);
    green_mutex_destroy(&s->m);
    return NULL;
}

static void expect_in(const char *para, const char *what, const char *who)
{
    cr_expect(para && strstr(para, what), "%s: expected \"%s\" in:\n%s", who, what,
              para ? para : "(no paragraph)");
}

static void check_scene(const char *dump, struct scene *s, bool by_green_thread)
{
    cr_log_info("%s", dump);
    cr_expect(strstr(dump, "libgreen: dump of 1 run"), "header missing");
    cr_expect_null(strstr(dump, "did not stop"), "a worker did not stop");
    char *h = paragraph(dump, green_id(s->holder));
    char *w = paragraph(dump, green_id(s->waiter));
    char *sl = paragraph(dump, green_id(s->sleeper));
    char *sp = paragraph(dump, green_id(s->spinner));
    char want[160];

    expect_in(h, "\"holder\": parked in green_chan_recv", "holder");
    expect_in(h, "dump_test_hold_and_wait+", "holder");
    expect_in(h, "holder_fn+", "holder");
    expect_in(h, "spawned at 0x", "holder");
    expect_in(h, " scene_main+", "holder");
    expect_in(h, "(test_dump)", "holder");
    /* A holder parked while another waits for its mutex: said so. */
    expect_in(h, "1 green thread waits for a lock it holds while it is parked", "holder");

    snprintf(want, sizeof want, "\"waiter\": parked in green_mutex_lock on %p, held by "
             "green thread %llu \"holder\", for 0.", (void *)&s->m,
             (unsigned long long)green_id(s->holder));
    expect_in(w, want, "waiter");
    expect_in(w, "green__park+", "waiter");
    expect_in(w, "dump_test_lock+", "waiter");
    expect_in(w, "waiter_fn+", "waiter");

    expect_in(sl, "\"sleeper\": parked in green_sleep, for ", "sleeper");
    char *rd = paragraph(dump, green_id(s->reader));
    snprintf(want, sizeof want, "\"reader\": parked in green_fd_wait on fd %d (in), for ",
             s->pipe[0]);
    expect_in(rd, want, "reader");
    expect_in(rd, "reader_fn+", "reader");
    free(rd);
    expect_in(sl, "sleeper_fn+", "sleeper");

    /* Preempted by the signal (and pinned), or queued: never running while
     * the world is stopped -- and its stack was unwound from the saved
     * context, through the preemption's trampoline. */
    expect_in(sp, "\"spinner\": runnable", "spinner");
    expect_in(sp, "dump_test_spin+", "spinner");

    if (by_green_thread) {
        cr_expect(strstr(dump, "\"main\" (main): running on worker"), "main not running");
        cr_expect(strstr(dump, "(making this dump)"), "the dumper is not marked");
        cr_expect(strstr(dump, "scene_main+"), "the dumper's own stack lacks scene_main");
    } else {
        /* Joining the OS thread: parked, or between two looks (a join of an
         * OS thread polls). */
        char *m = paragraph(dump, 1);
        expect_in(m, "\"main\" (main): ", "main");
        expect_in(m, "pthread_join+", "main");
        expect_in(m, "scene_main+", "main");
        free(m);
    }
    free(h), free(w), free(sl), free(sp);
}

Test(dump, every_thread_with_its_state_wait_object_holder_and_stack, .timeout = 60)
{
    static struct scene s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(run(scene_main, &s, 2, GREEN_PREEMPT_SIGNAL, NULL), 0);
    cr_assert_not_null(s.dump);
    check_scene(s.dump, &s, true);
    cr_assert_not_null(s.from_os_thread);
    check_scene(s.from_os_thread, &s, false);
    free(s.dump);
    free(s.from_os_thread);
}

/* ---- a worker that cannot stop ---------------------------------------------- */

static atomic_int hog_stop;

static void *hog(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed))
        ;
    return NULL;
}

static void *unstoppable_main(void *arg)
{
    char **out = arg;
    green_t t;
    atomic_store(&hog_stop, 0);
    cr_assert_eq(green_spawn(&t, hog, NULL), 0);
    /* With preemption off, the hog keeps the other worker (or, if it lands
     * here, waits for this thread to sleep). */
    green_sleep_ns(20 * MS);
    uint64_t t0 = mono_ns();
    *out = dump_text();
    cr_log_info("the dump took %.0f ms", (mono_ns() - t0) / 1e6);
    atomic_store(&hog_stop, 1);
    green_join(t, NULL);
    return NULL;
}

Test(dump, a_worker_that_cannot_stop_is_named_and_no_stack_is_read, .timeout = 60)
{
    char *dump = NULL;
    cr_assert_eq(run(unstoppable_main, &dump, 2, GREEN_PREEMPT_OFF, NULL), 0);
    cr_assert_not_null(dump);
    cr_log_info("%s", dump);
    cr_expect(strstr(dump, "did not stop: green thread"), "the busy worker is not named");
    cr_expect(strstr(dump, "(not unwound: a worker did not stop)"));
    free(dump);
}

/* ---- 10 000 threads ------------------------------------------------------------ */

#define MANY 10000

static void *parked(void *arg)
{
    int v;
    green_chan_recv(arg, &v);
    return NULL;
}

static void *many_main(void *arg)
{
    double *ms = arg;
    green_chan_t *ch;
    cr_assert_eq(green_chan_create(&ch, sizeof(int), 0), 0);
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(green_spawn(NULL, parked, ch), 0);
    green_sleep_ns(50 * MS);
    int fd = memfd_create("dump", 0);
    cr_assert_geq(fd, 0);
    uint64_t t0 = mono_ns();
    cr_assert_eq(green_dump(fd), 0);
    *ms = (mono_ns() - t0) / 1e6;
    off_t len = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)len + 1);
    cr_assert_eq(pread(fd, s, (size_t)len, 0), len);
    s[len] = '\0';
    close(fd);
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, ": parked in green_chan_recv on ")); p++)
        n++;
    cr_expect_eq(n, MANY, "%zu of %d parked threads listed", n, MANY);
    cr_log_info("a dump of %d parked threads: %.0f ms, %lld bytes", MANY, *ms, (long long)len);
    free(s);
    for (int i = 0; i < MANY; i++) {
        int v = i;
        green_chan_send(ch, &v);
    }
    settle();
    green_chan_destroy(ch);
    return NULL;
}

Test(dump, ten_thousand_threads_take_under_a_second, .timeout = 120)
{
    double ms = 0;
    cr_assert_eq(run(many_main, &ms, 2, -1, NULL), 0);
    cr_expect_lt(ms, 1000.0, "a dump of %d threads took %.0f ms", MANY, ms);
}

/* ---- GREEN_DUMP_SIGNAL ------------------------------------------------------------ */

static void *signalled_main(void *arg)
{
    const char *path = arg;
    green_set_name("signalled");
    raise(SIGQUIT);
    /* The dump thread writes to stderr, here a file: wait for the end. */
    uint64_t until = mono_ns() + 5000ull * MS;
    for (;;) {
        FILE *f = fopen(path, "r");
        char buf[8192] = { 0 };
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        if ((n && strstr(buf, "\"signalled\"") && strstr(buf, "\n\n")) || mono_ns() > until)
            break;
        green_sleep_ns(10 * MS);
    }
    return NULL;
}

Test(dump, green_dump_signal_dumps_on_stderr, .timeout = 60)
{
    char path[] = "/tmp/green-dump-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    setenv("GREEN_DUMP_SIGNAL", "QUIT", 1);
    int rc = run(signalled_main, path, 2, -1, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    unsetenv("GREEN_DUMP_SIGNAL");
    cr_assert_eq(rc, 0);
    char buf[8192] = { 0 };
    cr_assert_geq(pread(fd, buf, sizeof buf - 1, 0), 0);
    close(fd);
    unlink(path);
    cr_log_info("%s", buf);
    cr_expect(strstr(buf, "libgreen: dump of 1 run"), "no dump on stderr");
    cr_expect(strstr(buf, "\"signalled\""), "the named thread is not in it");
}

Test(dump, a_bad_green_dump_signal_is_refused, .timeout = 30)
{
    setenv("GREEN_DUMP_SIGNAL", "SEGV", 1);
    int rc = run(signalled_main, "/nonexistent", 1, -1, NULL);
    unsetenv("GREEN_DUMP_SIGNAL");
    cr_expect_eq(rc, EINVAL);
}

/* ---- bad input ---------------------------------------------------------------------- */

static void *names_main(void *arg)
{
    (void)arg;
    char longname[GREEN_NAME_MAX + 1];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    cr_expect_eq(green_set_name(NULL), EINVAL);
    cr_expect_eq(green_set_name(longname), ERANGE);
    longname[GREEN_NAME_MAX - 1] = '\0';
    cr_expect_eq(green_set_name(longname), 0);
    cr_expect_eq(green_set_name(""), 0);
    return NULL;
}

Test(dump, bad_input)
{
    cr_expect_eq(green_dump(-1), EBADF);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    close(p[1]);
    close(p[0]);
    cr_expect_eq(green_dump(p[1]), EBADF, "a closed descriptor");
    cr_expect_eq(green_set_name("outside"), EPERM);
    cr_assert_eq(run(names_main, NULL, 1, -1, NULL), 0);
    /* No run: a dump lists none. */
    int fd = memfd_create("dump", 0);
    cr_assert_eq(green_dump(fd), 0);
    char buf[256] = { 0 };
    cr_assert_gt(pread(fd, buf, sizeof buf - 1, 0), 0);
    close(fd);
    cr_expect(strstr(buf, "libgreen: dump of 0 runs"), "%s", buf);
}
