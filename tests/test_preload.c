/* The LD_PRELOAD shim (preload/).  This program links
 * libgreen-preload.so ahead of libc, which is what LD_PRELOAD does too
 * (tests/preload.sh runs an unmodified program under LD_PRELOAD).
 *
 * Most tests run on ONE worker: a call that blocked the worker instead of
 * parking its green thread would stop every other thread, and the test
 * would hang (and time out) instead of passing.  Every blocking call is
 * made before its peer acts (the peer sleeps first), so it really waits.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "many_sockets.h"

/* errno read afresh: after a call that parked, the thread may be on another
 * worker, and a compiler may keep &errno from before (README). */
__attribute__((noinline)) static int errno_now(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

/* The kernel's flags, not what the shim reports. */
static int kernel_flags(int fd) { return (int)syscall(SYS_fcntl, fd, F_GETFL); }

static void *run_main(void *(*fn)(void *), void *arg, unsigned workers)
{
    void *ret = P(-1);
    cr_assert_eq(run(fn, arg, workers, GREEN_PREEMPT_SIGNAL, &ret), 0);
    return ret;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* ---- every read and write call, between pairs of green threads ----------- */

#define PAIRS 100
enum { VIA_READ, VIA_READV, VIA_RECV, VIA_RECVFROM, VIA_RECVMSG, VIAS };

struct pair {
    int fd[2];
    int via;
    char got[32];
    ssize_t n;
    int err;
};

static ssize_t pair_read(struct pair *p, void *buf, size_t n)
{
    struct iovec iov = { buf, n };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (p->via) {
    case VIA_READ: return read(p->fd[0], buf, n);
    case VIA_READV: return readv(p->fd[0], &iov, 1);
    case VIA_RECV: return recv(p->fd[0], buf, n, 0);
    case VIA_RECVFROM: return recvfrom(p->fd[0], buf, n, 0, NULL, NULL);
    default: return recvmsg(p->fd[0], &msg, 0);
    }
}

static ssize_t pair_write(struct pair *p, const void *buf, size_t n)
{
    struct iovec iov = { (void *)buf, n };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    switch (p->via) {
    case VIA_READ: return write(p->fd[1], buf, n);
    case VIA_READV: return writev(p->fd[1], &iov, 1);
    case VIA_RECV: return send(p->fd[1], buf, n, 0);
    case VIA_RECVFROM: return sendto(p->fd[1], buf, n, 0, NULL, 0);
    default: return sendmsg(p->fd[1], &msg, 0);
    }
}

static void *pair_reader(void *arg)
{
    struct pair *p = arg;
    p->n = pair_read(p, p->got, sizeof p->got);
    p->err = p->n < 0 ? errno_now() : 0;
    return NULL;
}

static void *pair_writer(void *arg)
{
    struct pair *p = arg;
    usleep(2000);                    /* the reader is parked by now */
    char msg[32];
    int len = snprintf(msg, sizeof msg, "hello %d", p->fd[0]);
    return pair_write(p, msg, (size_t)len) == len ? NULL : P(1);
}

static void *pairs_main(void *arg)
{
    struct pair *pairs = arg;
    green_t t[2 * PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        green_spawn(&t[2 * i], pair_reader, &pairs[i]);
        green_spawn(&t[2 * i + 1], pair_writer, &pairs[i]);
    }
    uintptr_t bad = 0;
    for (int i = 0; i < 2 * PAIRS; i++) {
        void *r;
        green_join(t[i], &r);
        bad += U(r);
    }
    return P(bad);
}

Test(preload, each_read_and_write_call_parks_until_its_peer_writes, .timeout = 60)
{
    static struct pair pairs[PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        pairs[i].via = i % VIAS;
        /* read/write on pipes, the rest on stream socketpairs */
        if (pairs[i].via == VIA_READ && i % 2 == 0)
            cr_assert_eq(pipe(pairs[i].fd), 0);
        else
            cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i].fd), 0);
    }
    uint64_t t0 = mono_ns();
    cr_assert_null(run_main(pairs_main, pairs, 1), "a writer failed");
    cr_log_info("%d reader/writer pairs on one worker: %.1f ms", PAIRS,
                (double)(mono_ns() - t0) / 1e6);
    for (int i = 0; i < PAIRS; i++) {
        char want[32];
        int len = snprintf(want, sizeof want, "hello %d", pairs[i].fd[0]);
        cr_expect_eq(pairs[i].n, len, "pair %d (via %d): read %zd, errno %d", i, pairs[i].via,
                     pairs[i].n, pairs[i].err);
        cr_expect(memcmp(pairs[i].got, want, (size_t)len) == 0);
        /* The program never asked for O_NONBLOCK, and the file never had it:
         * the shim made each call non-blocking, not the fd. */
        cr_expect_eq(fcntl(pairs[i].fd[0], F_GETFL) & O_NONBLOCK, 0);
        cr_expect_eq(kernel_flags(pairs[i].fd[0]) & O_NONBLOCK, 0);
        cr_expect_eq(kernel_flags(pairs[i].fd[1]) & O_NONBLOCK, 0);
        close(pairs[i].fd[0]);
        close(pairs[i].fd[1]);
    }
}

/* ---- TCP on 127.0.0.1: accept, accept4, connect -------------------------- */

#define CLIENTS 100
#define ECHO_BYTES 65536

struct tcp {
    int listener;
    struct sockaddr_in addr;
    atomic_int served, echoed, bad, connect_err, accept_err;
    atomic_int connect_errno;
};

static void *echo_handler(void *arg)
{
    int fd = (int)U(arg);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0) {
                close(fd);
                return P(1);
            }
            off += w;
        }
    }
    close(fd);
    return n == 0 ? NULL : P(1);
}

static void *acceptor(void *arg)
{
    struct tcp *tcp = arg;
    for (int i = 0; i < CLIENTS; i++) {
        int fd = i % 2 ? accept(tcp->listener, NULL, NULL)
                       : accept4(tcp->listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno_now() == EBADF)
                break;               /* closed by tcp_main: a client failed */
            atomic_fetch_add(&tcp->accept_err, 1);
            continue;
        }
        atomic_fetch_add(&tcp->served, 1);
        green_spawn(NULL, echo_handler, P(fd));
    }
    return NULL;
}

static void *client(void *arg)
{
    struct tcp *tcp = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&tcp->addr, sizeof tcp->addr) != 0) {
        atomic_store(&tcp->connect_errno, errno_now());
        atomic_fetch_add(&tcp->connect_err, 1);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    static char out[ECHO_BYTES];
    char *in = malloc(ECHO_BYTES);   /* not on a 64 KiB stack */
    if (!in) {
        atomic_fetch_add(&tcp->bad, 1);
        close(fd);
        return NULL;
    }
    for (size_t i = 0; i < sizeof out; i++)
        out[i] = (char)(i * 7);
    /* Write it all, then read it all back: the server's socket buffers
     * fill, so both sides park on writes as well as reads. */
    size_t sent = 0, got = 0;
    while (sent < sizeof out) {
        ssize_t w = write(fd, out + sent, sizeof out - sent);
        if (w <= 0)
            break;
        sent += (size_t)w;
        /* Read what came back so far without blocking, so neither side
         * waits on the other forever. */
        ssize_t r;
        while ((r = recv(fd, in + got, ECHO_BYTES - got, MSG_DONTWAIT)) > 0)
            got += (size_t)r;
    }
    shutdown(fd, SHUT_WR);
    ssize_t r;
    while (got < ECHO_BYTES && (r = read(fd, in + got, ECHO_BYTES - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (sent == sizeof out && got == ECHO_BYTES && memcmp(in, out, ECHO_BYTES) == 0)
        atomic_fetch_add(&tcp->echoed, 1);
    else
        atomic_fetch_add(&tcp->bad, 1);
    free(in);
    return NULL;
}

static void *tcp_main(void *arg)
{
    struct tcp *tcp = arg;
    green_t a, c[CLIENTS];
    green_spawn(&a, acceptor, tcp);
    for (int i = 0; i < CLIENTS; i++)
        green_spawn(&c[i], client, tcp);
    for (int i = 0; i < CLIENTS; i++)
        green_join(c[i], NULL);
    if (atomic_load(&tcp->served) < CLIENTS)
        close(tcp->listener);        /* wakes the acceptor with EBADF */
    green_join(a, NULL);
    return NULL;
}

Test(preload, tcp_clients_connect_and_an_acceptor_accepts_on_one_worker, .timeout = 60)
{
    static struct tcp tcp;
    raise_nofile();
    tcp.listener = socket(AF_INET, SOCK_STREAM, 0);
    tcp.addr = (struct sockaddr_in){ .sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof tcp.addr;
    cr_assert_eq(bind(tcp.listener, (struct sockaddr *)&tcp.addr, sizeof tcp.addr), 0);
    /* Room for every client: with a shorter queue, the kernel completes
     * connects it cannot queue and resets some of them later (syncookies),
     * blocking calls or not. */
    cr_assert_eq(listen(tcp.listener, CLIENTS), 0);
    cr_assert_eq(getsockname(tcp.listener, (struct sockaddr *)&tcp.addr, &len), 0);
    uint64_t t0 = mono_ns();
    run_main(tcp_main, &tcp, 1);
    cr_log_info("%d TCP clients echoing %d bytes each through one worker: %.1f ms", CLIENTS,
                ECHO_BYTES, (double)(mono_ns() - t0) / 1e6);
    cr_expect_eq(atomic_load(&tcp.served), CLIENTS);
    cr_expect_eq(atomic_load(&tcp.echoed), CLIENTS);
    cr_expect_eq(atomic_load(&tcp.bad), 0);
    cr_expect_eq(atomic_load(&tcp.connect_err), 0, "%d connects failed, last errno %d",
                 atomic_load(&tcp.connect_err), atomic_load(&tcp.connect_errno));
    cr_expect_eq(atomic_load(&tcp.accept_err), 0);
    if (atomic_load(&tcp.served) == CLIENTS)
        close(tcp.listener);
}

/* ---- poll, ppoll, select, pselect ---------------------------------------- */

struct waits {
    int a[2], b[2];
    int poll_r, ppoll_r, select_r, pselect_r;
    short poll_b;
    bool select_b, select_a;
    int timeout_r, drain_failed;
    uint64_t timeout_ns;
    struct timeval left;
};

static void *late_writer(void *arg)
{
    int fd = (int)U(arg);
    usleep(5000);
    return write(fd, "x", 1) == 1 ? NULL : P(1);
}

/* No cr_assert on a green thread (it longjmps to the test's own thread):
 * a failure is counted and checked afterwards. */
static void drain(struct waits *w, int fd)
{
    char c;
    if (read(fd, &c, 1) != 1)
        w->drain_failed++;
}

static void *waits_main(void *arg)
{
    struct waits *w = arg;
    struct pollfd p[2] = { { .fd = w->a[0], .events = POLLIN }, { .fd = w->b[0], .events = POLLIN } };

    green_spawn(NULL, late_writer, P(w->b[1]));
    w->poll_r = poll(p, 2, -1);
    w->poll_b = p[1].revents;
    drain(w, w->b[0]);

    green_spawn(NULL, late_writer, P(w->b[1]));
    struct timespec ts = { 10, 0 };
    w->ppoll_r = ppoll(p, 2, &ts, NULL);
    drain(w, w->b[0]);

    green_spawn(NULL, late_writer, P(w->b[1]));
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(w->a[0], &rd);
    FD_SET(w->b[0], &rd);
    int nfds = (w->a[0] > w->b[0] ? w->a[0] : w->b[0]) + 1;
    w->select_r = select(nfds, &rd, NULL, NULL, NULL);
    w->select_a = FD_ISSET(w->a[0], &rd);
    w->select_b = FD_ISSET(w->b[0], &rd);
    drain(w, w->b[0]);

    green_spawn(NULL, late_writer, P(w->b[1]));
    FD_ZERO(&rd);
    FD_SET(w->b[0], &rd);
    w->pselect_r = pselect(nfds, &rd, NULL, NULL, &ts, NULL);
    drain(w, w->b[0]);

    /* Nothing comes: the timeouts. */
    uint64_t t0 = mono_ns();
    w->timeout_r = poll(p, 2, 30);
    struct timeval tv = { 0, 30000 };
    FD_ZERO(&rd);
    FD_SET(w->a[0], &rd);
    w->timeout_r += select(nfds, &rd, NULL, NULL, &tv);
    w->timeout_ns = mono_ns() - t0;
    w->left = tv;
    return NULL;
}

Test(preload, poll_ppoll_select_and_pselect_park_until_an_fd_is_ready, .timeout = 30)
{
    static struct waits w;
    cr_assert_eq(pipe(w.a), 0);
    cr_assert_eq(pipe(w.b), 0);
    run_main(waits_main, &w, 1);
    cr_expect_eq(w.drain_failed, 0);
    cr_expect_eq(w.poll_r, 1);
    cr_expect_eq(w.poll_b, POLLIN);
    cr_expect_eq(w.ppoll_r, 1);
    cr_expect_eq(w.select_r, 1);
    cr_expect(w.select_b && !w.select_a);
    cr_expect_eq(w.pselect_r, 1);
    cr_expect_eq(w.timeout_r, 0);
    cr_expect_geq(w.timeout_ns, 60 * MS, "two 30 ms timeouts took %.1f ms",
                  (double)w.timeout_ns / 1e6);
    cr_expect(w.left.tv_sec == 0 && w.left.tv_usec == 0, "select left %ld.%06ld s",
              (long)w.left.tv_sec, (long)w.left.tv_usec);
    for (int i = 0; i < 2; i++) {
        close(w.a[i]);
        close(w.b[i]);
    }
}

/* ---- sleeping ------------------------------------------------------------ */

#define SLEEPERS 1000
static atomic_int slept;

static void *sleeper(void *arg)
{
    (void)arg;
    if (sleep(1) == 0)
        atomic_fetch_add(&slept, 1);
    return NULL;
}

static void *sleepers_main(void *arg)
{
    (void)arg;
    green_t t[SLEEPERS];
    for (int i = 0; i < SLEEPERS; i++)
        green_spawn(&t[i], sleeper, NULL);
    for (int i = 0; i < SLEEPERS; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(preload, a_thousand_threads_sleep_one_second_in_about_one_second, .timeout = 30)
{
    uint64_t t0 = mono_ns();
    run_main(sleepers_main, NULL, 2);
    uint64_t took = mono_ns() - t0;
    cr_log_info("%d green threads called sleep(1): all done in %.1f ms", SLEEPERS,
                (double)took / 1e6);
    cr_expect_eq(atomic_load(&slept), SLEEPERS);
    cr_expect_geq(took, 1000 * MS);
    cr_expect_lt(took, 1500 * MS, "sleep(1) x %d took %.1f ms", SLEEPERS, (double)took / 1e6);
}

static atomic_int naps;

static void *napper(void *arg)
{
    int how = (int)U(arg) % 4;
    struct timespec rel = { 0, 50 * MS }, abs;
    int r;
    switch (how) {
    case 0: r = usleep(50000); break;
    case 1: r = nanosleep(&rel, NULL); break;
    case 2: r = clock_nanosleep(CLOCK_MONOTONIC, 0, &rel, NULL); break;
    default:
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_nsec += 50 * MS;
        if (abs.tv_nsec >= 1000000000) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000;
        }
        r = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &abs, NULL);
        break;
    }
    if (r == 0)
        atomic_fetch_add(&naps, 1);
    return NULL;
}

static void *nappers_main(void *arg)
{
    (void)arg;
    green_t t[100];
    for (uintptr_t i = 0; i < 100; i++)
        green_spawn(&t[i], napper, P(i));
    for (int i = 0; i < 100; i++)
        green_join(t[i], NULL);
    struct timespec bad = { 0, 1000000000 };
    return nanosleep(&bad, NULL) == -1 && errno_now() == EINVAL ? NULL : P(1);
}

Test(preload, usleep_nanosleep_and_clock_nanosleep_park_on_one_worker, .timeout = 30)
{
    uint64_t t0 = mono_ns();
    cr_expect_null(run_main(nappers_main, NULL, 1), "nanosleep took tv_nsec = 1e9");
    uint64_t took = mono_ns() - t0;
    cr_log_info("100 green threads sleeping 50 ms (usleep, nanosleep, clock_nanosleep "
                "relative and absolute) on one worker: %.1f ms",
                (double)took / 1e6);
    cr_expect_eq(atomic_load(&naps), 100);
    cr_expect_geq(took, 50 * MS);
    cr_expect_lt(took, 1000 * MS);
}

/* ---- timeouts, the program's own O_NONBLOCK ------------------------------- */

struct modes {
    int sp[2], sq[2], lst;
    ssize_t rcv_r, snd_r, nb_r, fionbio_r, dontwait_r;
    int rcv_err, snd_err, nb_err, fionbio_err, dontwait_err, accept_err, refused_err;
    int accept_r, refused_r;
    uint64_t rcv_ns, snd_ns;
    int getfl_nb, getfl_cleared, getfl_fionbio;
    size_t filled;
};

static void *modes_main(void *arg)
{
    struct modes *m = arg;
    char buf[8192];

    /* SO_RCVTIMEO: EAGAIN after the timeout, as the kernel says. */
    struct timeval tv = { 0, 50000 };
    setsockopt(m->sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint64_t t0 = mono_ns();
    m->rcv_r = read(m->sp[0], buf, sizeof buf);
    m->rcv_err = errno_now();
    m->rcv_ns = mono_ns() - t0;

    /* SO_SNDTIMEO on a full socket. */
    setsockopt(m->sp[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(buf, 'x', sizeof buf);
    ssize_t w;
    while ((w = send(m->sp[1], buf, sizeof buf, MSG_DONTWAIT)) > 0)
        m->filled += (size_t)w;
    t0 = mono_ns();
    m->snd_r = write(m->sp[1], buf, sizeof buf);
    m->snd_err = errno_now();
    m->snd_ns = mono_ns() - t0;

    /* The program's own O_NONBLOCK: EAGAIN at once; F_GETFL shows it. */
    int fl = fcntl(m->sq[0], F_GETFL);
    fcntl(m->sq[0], F_SETFL, fl | O_NONBLOCK);
    m->getfl_nb = fcntl(m->sq[0], F_GETFL) & O_NONBLOCK;
    m->nb_r = recv(m->sq[0], buf, 1, 0);
    m->nb_err = errno_now();
    fcntl(m->sq[0], F_SETFL, fl & ~O_NONBLOCK);
    m->getfl_cleared = fcntl(m->sq[0], F_GETFL) & O_NONBLOCK;

    int on = 1;
    ioctl(m->sq[0], FIONBIO, &on);
    m->getfl_fionbio = fcntl(m->sq[0], F_GETFL) & O_NONBLOCK;
    m->fionbio_r = read(m->sq[0], buf, 1);
    m->fionbio_err = errno_now();
    on = 0;
    ioctl(m->sq[0], FIONBIO, &on);

    m->dontwait_r = recv(m->sq[0], buf, 1, MSG_DONTWAIT);
    m->dontwait_err = errno_now();

    /* accept4 on a non-blocking listener with nobody connecting. */
    fcntl(m->lst, F_SETFL, fcntl(m->lst, F_GETFL) | O_NONBLOCK);
    m->accept_r = accept4(m->lst, NULL, NULL, 0);
    m->accept_err = errno_now();

    /* A connect nobody listens for. */
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(m->lst, (struct sockaddr *)&a, &len);
    close(m->lst);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    m->refused_r = connect(s, (struct sockaddr *)&a, sizeof a);
    m->refused_err = errno_now();
    close(s);
    return NULL;
}

Test(preload, timeouts_and_the_programs_own_nonblocking_fds_get_eagain, .timeout = 30)
{
    static struct modes m;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, m.sp), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, m.sq), 0);
    m.lst = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(m.lst, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(m.lst, 1), 0);
    run_main(modes_main, &m, 1);
    cr_log_info("SO_RCVTIMEO 50 ms: %.1f ms; SO_SNDTIMEO 50 ms after %zu bytes: %.1f ms",
                (double)m.rcv_ns / 1e6, m.filled, (double)m.snd_ns / 1e6);
    cr_expect(m.rcv_r == -1 && m.rcv_err == EAGAIN, "read: %zd, errno %d", m.rcv_r, m.rcv_err);
    cr_expect_geq(m.rcv_ns, 50 * MS);
    cr_expect(m.snd_r == -1 && m.snd_err == EAGAIN, "write: %zd, errno %d", m.snd_r, m.snd_err);
    cr_expect_geq(m.snd_ns, 50 * MS);
    cr_expect_neq(m.getfl_nb, 0);
    cr_expect(m.nb_r == -1 && m.nb_err == EAGAIN);
    cr_expect_eq(m.getfl_cleared, 0);
    cr_expect_neq(m.getfl_fionbio, 0);
    cr_expect(m.fionbio_r == -1 && m.fionbio_err == EAGAIN);
    cr_expect(m.dontwait_r == -1 && m.dontwait_err == EAGAIN);
    cr_expect(m.accept_r == -1 && m.accept_err == EAGAIN);
    cr_expect(m.refused_r == -1 && m.refused_err == ECONNREFUSED, "connect: %d, errno %d",
              m.refused_r, m.refused_err);
    for (int i = 0; i < 2; i++) {
        close(m.sp[i]);
        close(m.sq[i]);
    }
}

/* ---- close and dup2 while parked, dup's bookkeeping ---------------------- */

struct closing {
    int p[2], q[2], r[2];
    ssize_t closed_r, dup2_r, dup_r;
    int closed_err, dup2_err;
    int dup_fl;
    char dup_got;
};

static void *read_closed(void *arg)
{
    struct closing *c = arg;
    char b;
    c->closed_r = read(c->p[0], &b, 1);
    c->closed_err = errno_now();
    return NULL;
}

static void *read_replaced(void *arg)
{
    struct closing *c = arg;
    char b;
    c->dup2_r = read(c->q[0], &b, 1);
    c->dup2_err = errno_now();
    return NULL;
}

static void *read_dup(void *arg)
{
    struct closing *c = arg;
    c->dup_r = read(c->r[1], &c->dup_got, 1);   /* r[1] holds a dup of r[0] */
    return NULL;
}

static void *closing_main(void *arg)
{
    struct closing *c = arg;
    green_t a, b, d;
    green_spawn(&a, read_closed, c);
    green_spawn(&b, read_replaced, c);
    usleep(5000);                    /* both parked */
    close(c->p[0]);
    int spare[2];
    if (pipe(spare) != 0)
        return P(1);
    dup2(spare[0], c->q[0]);         /* q[0] becomes another pipe's end */
    green_join(a, NULL);
    green_join(b, NULL);
    close(spare[0]);
    close(spare[1]);

    /* dup keeps the bookkeeping: O_NONBLOCK as the program set it. */
    fcntl(c->r[0], F_SETFL, O_NONBLOCK);
    int w = c->r[1];
    c->r[1] = dup(c->r[0]);
    c->dup_fl = fcntl(c->r[1], F_GETFL) & O_NONBLOCK;
    fcntl(c->r[0], F_SETFL, 0);      /* one file: both are blocking again */
    green_spawn(&d, read_dup, c);
    usleep(5000);
    if (write(w, "d", 1) != 1)
        return P(1);
    green_join(d, NULL);
    close(w);
    return NULL;
}

Test(preload, close_or_dup2_of_an_fd_wakes_its_parked_readers_with_ebadf, .timeout = 30)
{
    static struct closing c;
    cr_assert_eq(pipe(c.p), 0);
    cr_assert_eq(pipe(c.q), 0);
    cr_assert_eq(pipe(c.r), 0);
    cr_expect_null(run_main(closing_main, &c, 1));
    cr_expect(c.closed_r == -1 && c.closed_err == EBADF, "close: read %zd, errno %d",
              c.closed_r, c.closed_err);
    cr_expect(c.dup2_r == -1 && c.dup2_err == EBADF, "dup2: read %zd, errno %d", c.dup2_r,
              c.dup2_err);
    cr_expect_neq(c.dup_fl, 0, "F_GETFL on the dup lost the program's O_NONBLOCK");
    cr_expect(c.dup_r == 1 && c.dup_got == 'd');
    close(c.p[1]);
    close(c.q[0]);
    close(c.q[1]);
    close(c.r[0]);
    close(c.r[1]);
}

/* ---- partial reads and writes -------------------------------------------- */

struct partial {
    int sp[2];
    ssize_t wrote, read1, read_all;
};

#define PARTIAL_BIG (8u << 20)

static void *partial_reader(void *arg)
{
    struct partial *p = arg;
    char *buf = malloc(65536);
    if (!buf)
        return P(1);
    green_sleep_ns(20 * MS);              /* the writer fills the socket first */
    p->read1 = read(p->sp[0], buf, 1000);
    p->read_all = p->read1;
    while (p->read_all < (ssize_t)PARTIAL_BIG) {
        ssize_t r = read(p->sp[0], buf, 65536);
        if (r <= 0)
            break;
        p->read_all += r;
    }
    free(buf);
    return NULL;
}

static void *partial_main(void *arg)
{
    struct partial *p = arg;
    char *buf = malloc(PARTIAL_BIG);
    if (!buf)
        return P(1);
    memset(buf, 'p', PARTIAL_BIG);
    green_t r;
    green_spawn(&r, partial_reader, p);
    /* Far more than the socket holds: a blocking write writes it all. */
    p->wrote = write(p->sp[1], buf, PARTIAL_BIG);
    green_join(r, NULL);
    free(buf);
    return NULL;
}

Test(preload, writes_write_everything_and_reads_return_what_is_there, .timeout = 30)
{
    static struct partial p;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p.sp), 0);
    run_main(partial_main, &p, 1);
    cr_expect_eq(p.wrote, (ssize_t)PARTIAL_BIG, "write returned %zd", p.wrote);
    /* Everything there, but at most the buffer asked for. */
    cr_expect_eq(p.read1, 1000);
    cr_expect_eq(p.read_all, (ssize_t)PARTIAL_BIG);
    close(p.sp[0]);
    close(p.sp[1]);
}

/* ---- plain threads pass through ------------------------------------------ */

struct plain {
    int p[2];
    ssize_t r;
    int err;
    char got;
    uint64_t slept_ns;
};

static void *plain_reader(void *arg)
{
    struct plain *pl = arg;
    uint64_t t0 = mono_ns();
    sleep(0);
    usleep(20000);
    pl->slept_ns = mono_ns() - t0;
    pl->r = read(pl->p[0], &pl->got, 1);
    pl->err = errno_now();
    return NULL;
}

static void *plain_main(void *arg)
{
    struct plain *pl = arg;
    /* A green thread uses the pipe... */
    if (write(pl->p[1], "a", 1) != 1 || read(pl->p[0], &pl->got, 1) != 1)
        return P(1);
    /* ...and a plain thread still blocks in read until the data comes. */
    pthread_t t;
    if (pthread_create(&t, NULL, plain_reader, pl) != 0)
        return P(1);
    green_sleep_ns(100 * MS);
    if (write(pl->p[1], "b", 1) != 1)
        return P(1);
    pthread_join(t, NULL);
    return NULL;
}

Test(preload, a_plain_thread_blocks_as_usual_on_fds_green_threads_used, .timeout = 30)
{
    static struct plain pl;
    cr_assert_eq(pipe(pl.p), 0);
    cr_expect_null(run_main(plain_main, &pl, 1));
    cr_expect(pl.r == 1 && pl.got == 'b', "plain read: %zd, errno %d", pl.r, pl.err);
    cr_expect_geq(pl.slept_ns, 20 * MS);
    cr_expect_eq(kernel_flags(pl.p[0]) & O_NONBLOCK, 0);
    close(pl.p[0]);
    close(pl.p[1]);
}

/* ---- regular files and getaddrinfo: the offload pool --------------------- */

static atomic_int file_ok, lookups_ok;

/* getaddrinfo("localhost", "80") and the first address, numeric: "" when
 * the lookup failed (rc says how). */
struct lookup {
    int rc;
    char host[64];
};

static struct lookup lookup_localhost(void)
{
    struct lookup l = { .rc = 0, .host = "" };
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
    l.rc = getaddrinfo("localhost", "80", &hints, &res);
    if (l.rc == 0) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
        if (ntohs(sin->sin_port) != 80 ||
            getnameinfo(res->ai_addr, res->ai_addrlen, l.host, sizeof l.host, NULL, 0,
                        NI_NUMERICHOST) != 0)
            snprintf(l.host, sizeof l.host, "(bad answer)");
        freeaddrinfo(res);
    }
    return l;
}

/* What the same lookup gives the process outside any green thread: the
 * shim must show green threads exactly that (a machine without /etc/hosts,
 * such as a fresh chroot, fails it everywhere alike). */
static struct lookup plain_lookup;

static void *file_user(void *arg)
{
    char path[64], line[64], back[64];
    snprintf(path, sizeof path, "/tmp/green-preload-%d-%u", (int)getpid(), (unsigned)U(arg));
    int len = snprintf(line, sizeof line, "line %u\n", (unsigned)U(arg));
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return NULL;
    unlink(path);
    if (write(fd, line, (size_t)len) == len && lseek(fd, 0, SEEK_SET) == 0 &&
        read(fd, back, sizeof back) == len && memcmp(line, back, (size_t)len) == 0)
        atomic_fetch_add(&file_ok, 1);
    close(fd);

    struct lookup l = lookup_localhost();
    if (l.rc == plain_lookup.rc && strcmp(l.host, plain_lookup.host) == 0)
        atomic_fetch_add(&lookups_ok, 1);
    return NULL;
}

static void *files_main(void *arg)
{
    (void)arg;
    green_t t[50];
    for (uintptr_t i = 0; i < 50; i++)
        green_spawn(&t[i], file_user, P(i));
    for (int i = 0; i < 50; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(preload, regular_files_and_name_lookups_work_from_many_green_threads, .timeout = 30)
{
    plain_lookup = lookup_localhost();
    if (plain_lookup.rc != 0)
        cr_log_info("localhost does not resolve here (%s): green threads must say the same",
                    gai_strerror(plain_lookup.rc));
    else
        cr_log_info("localhost is %s here", plain_lookup.host);
    cr_expect_neq(strcmp(plain_lookup.host, "(bad answer)"), 0);
    run_main(files_main, NULL, 1);
    cr_expect_eq(atomic_load(&file_ok), 50);
    cr_expect_eq(atomic_load(&lookups_ok), 50, "%d of 50 green lookups gave what libc gives",
                 atomic_load(&lookups_ok));
}

/* ---- green_offload -------------------------------------------------------- */

static atomic_int in_pool, pool_peak;

static void *pool_job(void *arg)
{
    int now = atomic_fetch_add(&in_pool, 1) + 1, peak = atomic_load(&pool_peak);
    while (now > peak && !atomic_compare_exchange_weak(&pool_peak, &peak, now))
        ;
    struct timespec ts = { 0, 50 * MS };
    nanosleep(&ts, NULL);            /* not a green thread: a real sleep */
    atomic_fetch_sub(&in_pool, 1);
    return (void *)((uintptr_t)arg * 2);
}

static void *offloader(void *arg)
{
    void *r = NULL;
    if (green_offload(pool_job, arg, &r) != 0 || U(r) != U(arg) * 2)
        return P(1);
    return NULL;
}

static void *offload_main(void *arg)
{
    (void)arg;
    green_t t[16];
    uintptr_t bad = 0;
    for (uintptr_t i = 0; i < 16; i++)
        green_spawn(&t[i], offloader, P(i + 1));
    for (int i = 0; i < 16; i++) {
        void *r;
        green_join(t[i], &r);
        bad += U(r);
    }
    return P(bad);
}

Test(preload, green_offload_runs_jobs_on_a_pool_of_the_configured_size, .timeout = 30)
{
    green_config_t cfg = config(1);
    cfg.offload_threads = 4;
    void *ret = P(1);
    uint64_t t0 = mono_ns();
    cr_assert_eq(green_run(offload_main, NULL, &cfg, &ret), 0);
    uint64_t took = mono_ns() - t0;
    cr_log_info("16 jobs of 50 ms on 4 offload threads: %.1f ms, at most %d at once",
                (double)took / 1e6, atomic_load(&pool_peak));
    cr_expect_null(ret);
    cr_expect_eq(atomic_load(&pool_peak), 4);
    cr_expect_geq(took, 200 * MS);
    cr_expect_lt(took, 800 * MS);

    /* Outside a green thread it runs right here; bad input. */
    void *r = NULL;
    cr_expect_eq(green_offload(pool_job, P(21), &r), 0);
    cr_expect_eq(U(r), 42u);
    cr_expect_eq(green_offload(NULL, NULL, NULL), EINVAL);
    cfg.offload_threads = 70000;
    cr_expect_eq(green_run(offload_main, NULL, &cfg, NULL), EINVAL);
}

/* ---- 10 000 threads in read() beside CPU hogs ----------------------------- */

static void *blocking_reader(void *arg)
{
    unsigned i = (unsigned)U(arg), v = ~0u;
    many_waiting();
    bool ok = read(many.fds[i], &v, sizeof v) == sizeof v;
    many_got(i, ok, v);
    return NULL;
}

Test(preload, ten_thousand_threads_block_in_read_while_cpu_hogs_keep_both_workers,
     .timeout = 120)
{
    /* Blocking sockets, as a program has them. */
    many_run(blocking_reader, false, "in read()", close);
}
