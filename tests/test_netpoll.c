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
#include "many_sockets.h"

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

static void *udp_reader(void *arg)
{
    unsigned i = (unsigned)U(arg);
    unsigned v;
    bool said = false;
    for (;;) {
        ssize_t n = recv(many.fds[i], &v, sizeof v, 0);
        if (n == sizeof v)
            break;
        if (n < 0 && errno != EAGAIN) {
            many_got(i, false, 0);
            return NULL;
        }
        if (!said) {
            many_waiting();
            said = true;
        }
        if (green_fd_wait(many.fds[i], POLLIN, GREEN_FOREVER) != 0) {
            many_got(i, false, 0);
            return NULL;
        }
    }
    many_got(i, true, v);
    return NULL;
}

Test(netpoll, ten_thousand_threads_wait_on_their_own_sockets_beside_cpu_hogs, .timeout = 120)
{
    many_run(udp_reader, true, "parked in green_fd_wait", green_fd_close);
}
