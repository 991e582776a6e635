/* Stacks: overflow is caught and reported, legal deep recursion works, and
 * the configured size (cfg.stack_size, GREEN_STACK_SIZE) is the usable size.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define KiB ((size_t)1024)

static void no_core_dumps(void)
{
    struct rlimit r = {0, 0};
    setrlimit(RLIMIT_CORE, &r);
}

/* ---- recursion helpers -------------------------------------------------- */

static volatile long never = -1;  /* keeps the compiler from seeing an endless loop */
static volatile uintptr_t sink;  /* makes each frame's array real */

__attribute__((noinline)) static long recurse_forever(long depth)
{
    volatile char pad[512];
    pad[0] = (char)depth;
    pad[sizeof pad - 1] = (char)depth;
    sink = (uintptr_t)pad;
    if (depth == never)
        return 0;
    return recurse_forever(depth + 1) + pad[0] + pad[sizeof pad - 1];
}

/* Recurse until `target` bytes of stack lie between `top` and the deepest
 * frame's locals; returns the bytes reached. */
__attribute__((noinline)) static size_t dig(const char *top, size_t target)
{
    volatile char pad[1024];
    pad[0] = 1;
    size_t used = (size_t)(top - (const char *)pad);
    if (used >= target) {
        green_yield();  /* others may be deep at the same time */
        return used;
    }
    size_t reached = dig(top, target);
    pad[sizeof pad - 1] = (char)reached;
    return reached + (size_t)pad[0] - 1;
}

struct digging {
    size_t target, reached;
    uint64_t id;
};

static void *dig_thread(void *arg)
{
    struct digging *d = arg;
    volatile char top = 0;
    d->id = green_id(green_self());
    d->reached = dig((const char *)&top, d->target);
    return P(top + 1);
}

static void *overflow_thread(void *arg)
{
    uint64_t *id_out = arg;
    if (id_out)
        *id_out = green_id(green_self());
    return P(recurse_forever(0));
}

/* Run fn(arg) on a green thread of its own, joined by main. */
struct on_thread {
    void *(*fn)(void *);
    void *arg;
    void *ret;
    int rc;
};

static void *spawn_and_join(void *arg)
{
    struct on_thread *o = arg;
    green_t t;
    o->rc = green_spawn(&t, o->fn, o->arg);
    if (o->rc == 0)
        o->rc = green_join(t, &o->ret);
    return NULL;
}

static int run_with_stack(size_t stack_size, void *(*fn)(void *), void *arg, void **ret)
{
    green_config_t cfg = config(2);
    if (stack_size)
        cfg.stack_size = stack_size;
    struct on_thread o = {fn, arg, NULL, -1};
    int rc = green_run(spawn_and_join, &o, &cfg, NULL);
    if (rc == 0)
        rc = o.rc;
    if (ret)
        *ret = o.ret;
    return rc;
}

/* ---- overflow ----------------------------------------------------------- */

Test(stack, a_thread_that_overflows_its_stack_aborts_the_process, .signal = SIGABRT,
     .timeout = 10)
{
    no_core_dumps();
    run_with_stack(64 * KiB, overflow_thread, NULL, NULL);
}

Test(stack, the_overflow_report_names_the_thread_and_its_stack_size, .timeout = 10)
{
    uint64_t *shared_id = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                               -1, 0);
    cr_assert_neq(shared_id, MAP_FAILED);
    *shared_id = 0;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        no_core_dumps();
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        green_config_t cfg;
        green_config_init(&cfg);
        cfg.workers = 2;
        cfg.stack_size = 64 * KiB;
        struct on_thread o = {overflow_thread, shared_id, NULL, -1};
        green_run(spawn_and_join, &o, &cfg, NULL);
        _exit(0);  /* not reached when the overflow is caught */
    }
    close(fds[1]);
    static char err[16384];
    size_t len = 0;
    for (ssize_t n; len < sizeof err - 1 && (n = read(fds[0], err + len, sizeof err - 1 - len)) > 0;)
        len += (size_t)n;
    err[len] = '\0';
    close(fds[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "child status %#x, not killed by SIGABRT; stderr: %s", status, err);
    cr_expect_not_null(strstr(err, "overflowed"), "stderr: %s", err);
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)*shared_id);
    cr_expect_neq(*shared_id, 0u, "the overflowing thread never ran");
    cr_expect_not_null(strstr(err, id), "thread id %s not in: %s", id, err);
    cr_expect_not_null(strstr(err, "65536"), "stack size 65536 not in: %s", err);
    munmap(shared_id, 4096);
}

/* ---- legal deep recursion ----------------------------------------------- */

static void check_digs(size_t stack_size, size_t target)
{
    struct digging d = {target, 0, 0};
    void *ret = NULL;
    cr_assert_eq(run_with_stack(stack_size, dig_thread, &d, &ret), 0);
    cr_expect_eq(U(ret), 1u);
    cr_expect_geq(d.reached, target, "reached %zu of %zu bytes", d.reached, target);
}

Test(stack, recursion_using_90_percent_of_a_1_mib_stack_works, .timeout = 10)
{
    check_digs(1024 * KiB, 1024 * KiB * 9 / 10);
}

Test(stack, recursion_using_90_percent_of_the_default_stack_works, .timeout = 10)
{
    unsetenv("GREEN_STACK_SIZE");
    green_config_t cfg;
    cr_assert_eq(green_config_init(&cfg), 0);
    cr_assert_gt(cfg.stack_size, 16 * KiB, "default stack_size %zu", cfg.stack_size);
    check_digs(0, cfg.stack_size * 9 / 10);
}

Test(stack, GREEN_STACK_SIZE_of_256_kib_gives_a_thread_90_percent_of_it, .timeout = 10)
{
    cr_assert_eq(setenv("GREEN_STACK_SIZE", "262144", 1), 0);
    green_config_t cfg;
    cr_assert_eq(green_config_init(&cfg), 0);
    cr_expect_eq(cfg.stack_size, 256 * KiB);
    check_digs(0, 256 * KiB * 9 / 10);
}

Test(stack, GREEN_STACK_SIZE_of_64_kib_stops_a_thread_that_digs_128_kib, .signal = SIGABRT,
     .timeout = 10)
{
    no_core_dumps();
    cr_assert_eq(setenv("GREEN_STACK_SIZE", "65536", 1), 0);
    struct digging d = {128 * KiB, 0, 0};
    run_with_stack(0, dig_thread, &d, NULL);
}

static void *many_deep(void *arg)
{
    size_t target = U(arg);
    green_t t[32];
    struct digging d[32];
    int ok[32];
    for (int i = 0; i < 32; i++) {
        d[i] = (struct digging){target, 0, 0};
        ok[i] = green_spawn(&t[i], dig_thread, &d[i]) == 0;
    }
    uintptr_t fine = 0;
    for (int i = 0; i < 32; i++)
        if (ok[i] && green_join(t[i], NULL) == 0 && d[i].reached >= target)
            fine++;
    return P(fine);
}

Test(stack, many_threads_can_each_use_most_of_their_stack_at_once, .timeout = 10)
{
    green_config_t cfg = config(2);
    cfg.stack_size = 256 * KiB;
    void *fine = NULL;
    cr_assert_eq(green_run(many_deep, P(256 * KiB * 9 / 10), &cfg, &fine), 0);
    cr_expect_eq(U(fine), 32u);
}

/* ---- memory of finished threads goes back ------------------------------- */

#define BURST 20000

struct burst {
    green_chan_t *gate;
    long rss_parked_kb, rss_after_kb;
};

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void *dig_and_wait(void *arg)
{
    struct burst *b = arg;
    volatile char deep[24 << 10];
    deep[0] = deep[sizeof deep - 1] = 1;
    green_chan_recv(b->gate, NULL);
    return NULL;
}

static void *burst_main(void *arg)
{
    struct burst *b = arg;
    if (green_chan_create(&b->gate, 0, 0) != 0)
        return P(1);
    for (int i = 0; i < BURST; i++)
        if (green_spawn(NULL, dig_and_wait, b) != 0)
            return P(1);
    green_sleep_ns(100 * MS);
    b->rss_parked_kb = rss_kb();
    green_chan_close(b->gate);
    /* Everyone finishes; the workers idle long enough for the stacks to be
     * released (they stay warm for a second first). */
    green_sleep_ns(2500 * MS);
    b->rss_after_kb = rss_kb();
    green_chan_destroy(b->gate);
    return NULL;
}

Test(stack, the_memory_of_a_finished_burst_of_threads_goes_back_to_the_kernel,
     .timeout = 20)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("under AddressSanitizer, RSS also counts the shadow of every stack");
#endif
    struct burst b;
    memset(&b, 0, sizeof b);
    void *ret = NULL;
    cr_assert_eq(run(burst_main, &b, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    /* Each parked thread touched two pages of its stack (both ends of its
     * array) and more: well over 100 MiB.  Most of that must be gone. */
    cr_assert_gt(b.rss_parked_kb, 100 * 1024L, "only %ld kB with the burst parked",
                 b.rss_parked_kb);
    cr_expect_lt(b.rss_after_kb, b.rss_parked_kb / 4, "RSS went from %ld kB to %ld kB",
                 b.rss_parked_kb, b.rss_after_kb);
}
