/* The netpoller: green_fd_wait parks a green thread on an fd until it may be
 * ready, the worker runs others meanwhile, and green_fd_close wakes the
 * waiters with EBADF.  Pipes, socketpairs and UDP on 127.0.0.1; readiness in
 * both directions, timeouts, close while parked, files epoll refuses, bad
 * input; and 10 000 threads each blocked on its own socket while CPU-bound
 * threads keep every worker busy.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static void nonblocking(int fd)
{
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Read one byte from a non-blocking fd, waiting on the netpoller. */
static int read_byte(int fd, char *c, uint64_t deadline)
{
    for (;;) {
        ssize_t n = read(fd, c, 1);
        if (n == 1)
            return 0;
        if (n == 0)
            return EPIPE;
        if (errno != EAGAIN)
            return errno;
        int err = green_fd_wait(fd, POLLIN, deadline);
        if (err)
            return err;
    }
}

/* ---- a reader parks, a writer wakes it ------------------------------------- */

struct pipe_pair {
    int fd[2];
    int err;
    char got;
    uint64_t woke_ns, wrote_ns;
    atomic_int other_ran;            /* a third thread ran while the reader waited */
};

static void *pipe_reader(void *arg)
{
    struct pipe_pair *p = arg;
    p->err = read_byte(p->fd[0], &p->got, GREEN_FOREVER);
    p->woke_ns = mono_ns();
    return NULL;
}

static void *bystander(void *arg)
{
    atomic_store(&((struct pipe_pair *)arg)->other_ran, 1);
    return NULL;
}

static void *pipe_main(void *arg)
{
    struct pipe_pair *p = arg;
    green_t r, b;
    green_spawn(&r, pipe_reader, p);
    green_sleep_ns(5 * MS);          /* the reader is parked by now */
    green_spawn(&b, bystander, p);
    green_join(b, NULL);
    green_sleep_ns(5 * MS);
    p->wrote_ns = mono_ns();
    cr_assert_eq(write(p->fd[1], "x", 1), 1);
    green_join(r, NULL);
    return NULL;
}

Test(netpoll, a_reader_parks_on_an_empty_pipe_and_a_write_wakes_it, .timeout = 10)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        struct pipe_pair p = { .err = -1 };
        cr_assert_eq(pipe(p.fd), 0);
        nonblocking(p.fd[0]);
        cr_assert_eq(run(pipe_main, &p, workers, -1, NULL), 0);
        cr_expect_eq(p.err, 0, "%u workers: read_byte: %d", workers, p.err);
        cr_expect_eq(p.got, 'x');
        cr_expect(atomic_load(&p.other_ran), "%u workers: nothing else ran while it waited",
                  workers);
        cr_expect_geq(p.woke_ns, p.wrote_ns);
        cr_log_info("%u workers: woke %.1f us after the write", workers,
                    (double)(p.woke_ns - p.wrote_ns) / 1e3);
        green_fd_close(p.fd[0]);
        close(p.fd[1]);
    }
}

/* ---- writers wait for room --------------------------------------------------- */

struct full {
    int sv[2];
    size_t filled, drained;
    int err;
};

static void *fill_then_wait(void *arg)
{
    struct full *f = arg;
    char buf[4096];
    memset(buf, 'y', sizeof buf);
    for (;;) {                       /* fill the socket buffer */
        ssize_t n = write(f->sv[0], buf, sizeof buf);
        if (n < 0)
            break;
        f->filled += (size_t)n;
    }
    if (errno != EAGAIN) {
        f->err = errno;
        return NULL;
    }
    f->err = green_fd_wait(f->sv[0], POLLOUT, green_now_ns() + 5 * 1000 * MS);
    if (!f->err && write(f->sv[0], buf, 1) != 1)
        f->err = errno;
    return NULL;
}

static void *full_main(void *arg)
{
    struct full *f = arg;
    green_t t;
    green_spawn(&t, fill_then_wait, f);
    green_sleep_ns(10 * MS);
    static char buf[65536];
    ssize_t n;
    while ((n = read(f->sv[1], buf, sizeof buf)) > 0)   /* drain: room again */
        f->drained += (size_t)n;
    green_join(t, NULL);
    return NULL;
}

Test(netpoll, a_writer_waits_for_room_in_a_full_socket, .timeout = 10)
{
    struct full f = { .err = -1 };
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, f.sv), 0);
    nonblocking(f.sv[0]);
    nonblocking(f.sv[1]);
    cr_assert_eq(run(full_main, &f, 1, -1, NULL), 0);
    cr_expect_gt(f.filled, 0);
    cr_expect_eq(f.drained, f.filled);
    cr_expect_eq(f.err, 0, "wait for room / write: %s", strerror(f.err));
    green_fd_close(f.sv[0]);
    close(f.sv[1]);
}

/* ---- deadlines, close, files, errors ------------------------------------------ */

struct waits {
    int fd[2];
    int timeout_err, close_err, file_err;
    uint64_t waited_ns;
    int file_fd;
};

static void *wait_until_closed(void *arg)
{
    struct waits *w = arg;
    w->close_err = green_fd_wait(w->fd[0], POLLIN, GREEN_FOREVER);
    return NULL;
}

static void *waits_main(void *arg)
{
    struct waits *w = arg;
    uint64_t t0 = green_now_ns();
    w->timeout_err = green_fd_wait(w->fd[0], POLLIN, t0 + 20 * MS);
    w->waited_ns = green_now_ns() - t0;

    green_t t;
    green_spawn(&t, wait_until_closed, w);
    green_sleep_ns(5 * MS);
    cr_expect_eq(green_fd_close(w->fd[0]), 0);
    green_join(t, NULL);

    w->file_err = green_fd_wait(w->file_fd, POLLIN | POLLOUT, GREEN_FOREVER);
    return NULL;
}

Test(netpoll, deadlines_close_and_files_epoll_refuses, .timeout = 10)
{
    struct waits w = { .timeout_err = -1, .close_err = -1, .file_err = -1 };
    cr_assert_eq(pipe(w.fd), 0);
    w.file_fd = open("/proc/self/exe", O_RDONLY);
    cr_assert_geq(w.file_fd, 0);
    cr_assert_eq(run(waits_main, &w, 1, -1, NULL), 0);
    cr_expect_eq(w.timeout_err, ETIMEDOUT);
    cr_expect_geq(w.waited_ns, 20 * MS);
    cr_expect_eq(w.close_err, EBADF, "a thread parked on a closed fd got %d", w.close_err);
    cr_expect_eq(w.file_err, 0, "a regular file is always ready");
    close(w.fd[1]);
    close(w.file_fd);
}

static void *bad_input(void *arg)
{
    int *errs = arg;
    int fd[2];
    if (pipe(fd) != 0)
        return P(1);
    errs[0] = green_fd_wait(-1, POLLIN, GREEN_FOREVER);
    errs[1] = green_fd_wait(fd[0], 0, GREEN_FOREVER);
    errs[2] = green_fd_wait(fd[0], POLLPRI, GREEN_FOREVER);
    /* Registers fd[0] (and makes the run's epoll) and times out at once. */
    errs[4] = green_fd_wait(fd[0], POLLIN, green_now_ns());
    green_fd_close(fd[0]);
    close(fd[1]);
    errs[3] = green_fd_wait(fd[0], POLLIN, GREEN_FOREVER);   /* not open */
    return NULL;
}

Test(netpoll, bad_input_gets_an_errno, .timeout = 10)
{
    int errs[5] = { -1, -1, -1, -1, -1 };
    cr_expect_eq(green_fd_wait(0, POLLIN, GREEN_FOREVER), EPERM, "outside a green thread");
    cr_assert_eq(run(bad_input, errs, 1, -1, NULL), 0);
    cr_expect_eq(errs[0], EBADF);
    cr_expect_eq(errs[1], EINVAL);
    cr_expect_eq(errs[2], EINVAL);
    cr_expect_eq(errs[3], EBADF);
    cr_expect_eq(errs[4], ETIMEDOUT);
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    close(fd[1]);
    cr_expect_eq(green_fd_close(fd[0]), 0, "closes from any thread");
    cr_expect_eq(green_fd_close(fd[0]), EBADF);
}

/* ---- 10 000 threads on their own sockets beside CPU hogs ---------------------- */

#define MANY 10000

struct many {
    unsigned n;
    int fds[MANY];
    unsigned short ports[MANY];
    atomic_uint parked, received, wrong;
    atomic_int stop;
    atomic_ulong spins[2];
    unsigned long spins_at_send[2];
    volatile int hog_workers[2];
    uint64_t send_ns, done_ns;
};

static struct many many;

static void *udp_reader(void *arg)
{
    unsigned i = (unsigned)U(arg);
    unsigned v;
    for (;;) {
        ssize_t n = recv(many.fds[i], &v, sizeof v, 0);
        if (n == sizeof v)
            break;
        if (n < 0 && errno != EAGAIN) {
            atomic_fetch_add(&many.wrong, 1);
            return NULL;
        }
        atomic_fetch_add(&many.parked, 1);
        if (green_fd_wait(many.fds[i], POLLIN, GREEN_FOREVER) != 0) {
            atomic_fetch_add(&many.wrong, 1);
            return NULL;
        }
    }
    if (v != i)
        atomic_fetch_add(&many.wrong, 1);
    if (atomic_fetch_add(&many.received, 1) + 1 == many.n)
        many.done_ns = mono_ns();
    return NULL;
}

static void *cpu_hog(void *arg)
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
        green_spawn(&hogs[k], cpu_hog, P(k));
    /* Preemption spreads the hogs over the workers (and then pins them). */
    uint64_t until = green_now_ns() + 5000 * (uint64_t)MS;
    while ((!atomic_load(&many.spins[0]) || !atomic_load(&many.spins[1]) ||
            many.hog_workers[0] == many.hog_workers[1]) && green_now_ns() < until)
        green_sleep_ns(1 * MS);
    for (uintptr_t i = 0; i < many.n; i++)
        if (green_spawn(NULL, udp_reader, P(i)) != 0)
            return P(1);
    while (atomic_load(&many.parked) < many.n)
        green_sleep_ns(1 * MS);
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
    while (atomic_load(&many.received) + atomic_load(&many.wrong) < many.n)
        green_sleep_ns(1 * MS);
    atomic_store(&many.stop, 1);
    for (int k = 0; k < 2; k++)
        green_join(hogs[k], NULL);
    return NULL;
}

Test(netpoll, ten_thousand_threads_wait_on_their_own_sockets_beside_cpu_hogs, .timeout = 120)
{
    memset(&many, 0, sizeof many);
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t want = MANY + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    many.n = rl.rlim_cur >= want ? MANY : (unsigned)(rl.rlim_cur - 64);
    cr_assert_geq(many.n, 1000u, "RLIMIT_NOFILE allows only %u sockets", many.n);
    for (unsigned i = 0; i < many.n; i++) {
        many.fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
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
    void *ret = NULL;
    cr_assert_eq(green_run(many_main, NULL, &cfg, &ret), 0);
    cr_assert_null(ret);
    cr_log_info("%u threads parked on their own UDP sockets beside 2 CPU hogs on 2 workers: "
                "all received %.1f ms after the first send; hogs on workers %d and %d",
                many.n, (double)(many.done_ns - many.send_ns) / 1e6, many.hog_workers[0],
                many.hog_workers[1]);
    cr_expect_eq(atomic_load(&many.received), many.n);
    cr_expect_eq(atomic_load(&many.wrong), 0);
    for (int k = 0; k < 2; k++)
        cr_expect_gt(atomic_load(&many.spins[k]), many.spins_at_send[k],
                     "hog %d stopped while the readers ran", k);
    cr_expect_neq(many.hog_workers[0], many.hog_workers[1], "both hogs on one worker");
    for (unsigned i = 0; i < many.n; i++)
        green_fd_close(many.fds[i]);
}
