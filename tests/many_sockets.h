/* 10 000 green threads, each blocked reading its own UDP socket, while a
 * CPU hog that makes no calls keeps each of two workers busy: shared by
 * tests/test_netpoll.c (the readers wait with green_fd_wait) and
 * tests/test_preload.c (they call plain read() under the shim).
 *
 * many_run(reader, nonblocking) opens the sockets (as many as
 * RLIMIT_NOFILE allows, at least 1000), starts the two hogs and waits until
 * they run on different workers, spawns a reader per socket, waits until
 * every one of them has said it is about to block (many_waiting), sends
 * each its own number, and waits until all have read; then it checks what
 * the readers saw and that both hogs kept running, and logs the time from
 * the first send to the last read.  A reader calls many_waiting once before
 * it blocks and many_got with what it read.
 */
#ifndef GREEN_TESTS_MANY_SOCKETS_H
#define GREEN_TESTS_MANY_SOCKETS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

#define MANY 10000

static struct {
    unsigned n;
    int fds[MANY];
    unsigned short ports[MANY];
    atomic_uint waiting, received, wrong;
    atomic_int stop;
    atomic_ulong spins[2];
    unsigned long spins_at_send[2];
    volatile int hog_workers[2];
    uint64_t send_ns, done_ns;
    void *(*reader)(void *);
} many;

static inline void many_waiting(void) { atomic_fetch_add(&many.waiting, 1); }

static inline void many_got(unsigned i, bool ok, unsigned v)
{
    if (!ok || v != i)
        atomic_fetch_add(&many.wrong, 1);
    if (atomic_fetch_add(&many.received, 1) + 1 == many.n)
        many.done_ns = mono_ns();
}

static void *many_hog(void *arg)
{
    unsigned k = (unsigned)U(arg);
    volatile unsigned long x = 0;
    while (!atomic_load_explicit(&many.stop, memory_order_relaxed)) {
        for (int i = 0; i < 10000; i++)
            x++;
        atomic_fetch_add_explicit(&many.spins[k], 1, memory_order_relaxed);
        many.hog_workers[k] = green_worker_index();
    }
    return NULL;
}

static void *many_main(void *arg)
{
    (void)arg;
    green_t hogs[2];
    for (uintptr_t k = 0; k < 2; k++)
        green_spawn(&hogs[k], many_hog, P(k));
    /* Preemption spreads the hogs over the workers (and then pins them). */
    uint64_t until = green_now_ns() + 5000 * (uint64_t)MS;
    while ((!atomic_load(&many.spins[0]) || !atomic_load(&many.spins[1]) ||
            many.hog_workers[0] == many.hog_workers[1]) && green_now_ns() < until)
        green_sleep_ns(1 * MS);
    for (uintptr_t i = 0; i < many.n; i++)
        if (green_spawn(NULL, many.reader, P(i)) != 0)
            return P(1);
    /* Had a reader blocked its worker, this thread would not get past. */
    while (atomic_load(&many.waiting) < many.n)
        green_sleep_ns(1 * MS);
    green_sleep_ns(20 * MS);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    many.spins_at_send[0] = atomic_load(&many.spins[0]);
    many.spins_at_send[1] = atomic_load(&many.spins[1]);
    many.send_ns = mono_ns();
    for (unsigned i = 0; i < many.n; i++) {
        to.sin_port = many.ports[i];
        if (sendto(s, &i, sizeof i, 0, (struct sockaddr *)&to, sizeof to) != sizeof i)
            atomic_fetch_add(&many.wrong, 1);
    }
    close(s);
    while (atomic_load(&many.received) < many.n)
        green_sleep_ns(1 * MS);
    atomic_store(&many.stop, 1);
    for (int k = 0; k < 2; k++)
        green_join(hogs[k], NULL);
    return NULL;
}

/* how: what the readers do, for the log. */
static void many_run(void *(*reader)(void *), bool nonblocking, const char *how,
                     int (*close_fd)(int))
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    many.n = rl.rlim_cur >= MANY + 64 ? MANY : (unsigned)(rl.rlim_cur - 64);
    cr_assert_geq(many.n, 1000u, "RLIMIT_NOFILE allows only %u sockets", many.n);
    many.reader = reader;
    for (unsigned i = 0; i < many.n; i++) {
        many.fds[i] = socket(AF_INET, SOCK_DGRAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
        cr_assert_geq(many.fds[i], 0);
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        cr_assert_eq(bind(many.fds[i], (struct sockaddr *)&a, sizeof a), 0);
        cr_assert_eq(getsockname(many.fds[i], (struct sockaddr *)&a, &len), 0);
        many.ports[i] = a.sin_port;
    }
    green_config_t cfg = config(2);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    void *ret = P(1);
    cr_assert_eq(green_run(many_main, NULL, &cfg, &ret), 0);
    cr_assert_null(ret);
    cr_log_info("%u threads %s on their own UDP sockets beside 2 CPU hogs on 2 workers: "
                "all read %.1f ms after the first send; hogs on workers %d and %d",
                many.n, how, (double)(many.done_ns - many.send_ns) / 1e6,
                many.hog_workers[0], many.hog_workers[1]);
    cr_expect_eq(atomic_load(&many.received), many.n);
    cr_expect_eq(atomic_load(&many.wrong), 0);
    for (int k = 0; k < 2; k++)
        cr_expect_gt(atomic_load(&many.spins[k]), many.spins_at_send[k],
                     "hog %d stopped while the readers ran", k);
    cr_expect_neq(many.hog_workers[0], many.hog_workers[1], "both hogs on one worker");
    for (unsigned i = 0; i < many.n; i++)
        close_fd(many.fds[i]);
}

#endif
