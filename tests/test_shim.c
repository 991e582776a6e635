/* The shim is invisible: every interposed call returns what blocking libc
 * would, and changes nothing the program (or libc, or a child) can see.
 * This program links libgreen-preload.so ahead of libc, as LD_PRELOAD does.
 *
 * Most tests run on ONE worker with a peer that acts only after the call
 * under test has begun: a call that blocked the worker instead of parking
 * would stop the peer, and the test would time out instead of passing.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void *run1(void *(*fn)(void *), void *arg, unsigned workers)
{
    void *ret = P(-1);
    cr_assert_eq(run(fn, arg, workers, GREEN_PREEMPT_SIGNAL, &ret), 0);
    return ret;
}

/* The kernel's flags, not what any shim would report. */
static int kernel_flags(int fd) { return (int)syscall(SYS_fcntl, fd, F_GETFL); }

/* ---- MSG_WAITALL ------------------------------------------------------------ */

struct waitall {
    int sp[2];
    ssize_t got, gotmsg, timed;
    uint64_t timed_ns;
    char buf[64];
};

static void *waitall_writer(void *arg)
{
    struct waitall *w = arg;
    for (int i = 0; i < 4; i++) {
        green_sleep_ns(10 * MS);
        if (write(w->sp[1], "0123456789", 10) != 10)
            return P(1);
    }
    green_sleep_ns(10 * MS);
    if (write(w->sp[1], "abcde", 5) != 5)   /* then nothing: the timeout */
        return P(1);
    return NULL;
}

static void *waitall_main(void *arg)
{
    struct waitall *w = arg;
    green_t t;
    green_spawn(&t, waitall_writer, w);
    w->got = recv(w->sp[0], w->buf, 20, MSG_WAITALL);
    char a[7], b[13];
    struct iovec iov[2] = { { a, sizeof a }, { b, sizeof b } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
    w->gotmsg = recvmsg(w->sp[0], &m, MSG_WAITALL);
    struct timeval tv = { 0, 100000 };
    setsockopt(w->sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint64_t t0 = mono_ns();
    w->timed = recv(w->sp[0], w->buf, 20, MSG_WAITALL);
    w->timed_ns = mono_ns() - t0;
    return green_join(t, NULL) == 0 ? NULL : P(1);
}

Test(shim, msg_waitall_returns_every_byte_or_what_came_before_the_timeout, .timeout = 20)
{
    static struct waitall w;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, w.sp), 0);
    cr_expect_null(run1(waitall_main, &w, 1));
    cr_expect_eq(w.got, 20, "recv MSG_WAITALL: %zd of 20", w.got);
    cr_expect_eq(w.gotmsg, 20, "recvmsg MSG_WAITALL: %zd of 20", w.gotmsg);
    /* SO_RCVTIMEO ends it with what came, as in the kernel. */
    cr_expect_eq(w.timed, 5, "recv MSG_WAITALL with a timeout: %zd", w.timed);
    cr_expect_geq(w.timed_ns, 90 * MS);
    close(w.sp[0]);
    close(w.sp[1]);
}

/* ---- The fd's flags are the program's ----------------------------------------- */

#define BIG (4u << 20)

struct bulk {
    int sp[2], file, pipe[2];
    ssize_t sent, spliced;
    size_t fwritten, read_back;
    int ferr, flags_after;
};

static void *bulk_reader(void *arg)
{
    struct bulk *b = arg;
    char *buf = malloc(65536);
    size_t total = 0;
    ssize_t r;
    while (total < 3 * (size_t)BIG + 5 && (r = read(b->sp[0], buf, 65536)) > 0)
        total += (size_t)r;
    b->read_back = total;
    free(buf);
    return NULL;
}

static void *bulk_main(void *arg)
{
    struct bulk *b = arg;
    /* A plain thread reads: fwrite goes through libc's own write, which no
     * shim sees, and blocks this worker until the reader has taken it. */
    pthread_t reader;
    if (pthread_create(&reader, NULL, bulk_reader, b) != 0)
        return P(1);
    green_sleep_ns(10 * MS);
    if (write(b->sp[1], "hello", 5) != 5)
        return P(1);
    off_t off = 0;
    b->sent = 0;
    while (b->sent < (ssize_t)BIG) {
        ssize_t r = sendfile(b->sp[1], b->file, &off, BIG - (size_t)b->sent);
        if (r <= 0)
            break;
        b->sent += r;
    }
    FILE *f = fdopen(dup(b->sp[1]), "w");
    char *buf = calloc(1, BIG);
    b->fwritten = fwrite(buf, 1, BIG, f);
    b->ferr = ferror(f);
    fclose(f);
    /* splice: file -> pipe -> socket, through the pipe in 64 KiB steps. */
    b->spliced = 0;
    loff_t in_off = 0;
    while (b->spliced < (ssize_t)BIG) {
        ssize_t in = splice(b->file, &in_off, b->pipe[1], NULL, 65536, 0);
        if (in <= 0)
            break;
        ssize_t out = 0;
        while (out < in) {
            ssize_t r = splice(b->pipe[0], NULL, b->sp[1], NULL, (size_t)(in - out), 0);
            if (r <= 0)
                break;
            out += r;
        }
        b->spliced += out;
    }
    free(buf);
    b->flags_after = kernel_flags(b->sp[1]);
    pthread_join(reader, NULL);
    return NULL;
}

Test(shim, sendfile_fwrite_and_splice_on_a_socket_green_threads_use_move_everything,
     .timeout = 60)
{
    static struct bulk b;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, b.sp), 0);
    cr_assert_eq(pipe(b.pipe), 0);
    char path[] = "/tmp/green-shim-XXXXXX";
    b.file = mkstemp(path);
    cr_assert_geq(b.file, 0);
    unlink(path);
    char *buf = malloc(BIG);
    memset(buf, 's', BIG);
    cr_assert_eq(write(b.file, buf, BIG), (ssize_t)BIG);
    free(buf);
    /* The green thread reads and writes the socket first: a shim that set
     * O_NONBLOCK on it would make sendfile and stdio fail with EAGAIN. */
    cr_expect_null(run1(bulk_main, &b, 1));
    cr_expect_eq(b.sent, (ssize_t)BIG, "sendfile moved %zd", b.sent);
    cr_expect_eq(b.fwritten, (size_t)BIG, "fwrite wrote %zu", b.fwritten);
    cr_expect_eq(b.ferr, 0);
    cr_expect_eq(b.spliced, (ssize_t)BIG, "splice moved %zd", b.spliced);
    cr_expect_eq(b.read_back, 3 * (size_t)BIG + 5);
    cr_expect_eq(b.flags_after & O_NONBLOCK, 0);
    close(b.sp[0]);
    close(b.sp[1]);
    close(b.file);
}

/* ---- SCM_RIGHTS: a read stops short at a message that carries fds ---------- */

struct rights {
    int sp[2];
    ssize_t r1, r2;
    char b1[16], b2[16];
};

static void *rights_writer(void *arg)
{
    struct rights *rt = arg;
    green_sleep_ns(20 * MS);         /* the reader is parked by now */
    /* "abcd" carrying an fd, then "efgh" alone. */
    int passed = dup(0);
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec v = { "abcd", 4 };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &passed, sizeof(int));
    bool ok = sendmsg(rt->sp[1], &m, 0) == 4 && write(rt->sp[1], "efgh", 4) == 4;
    close(passed);
    return ok ? NULL : P(1);
}

static void *rights_main(void *arg)
{
    struct rights *rt = arg;
    green_t w;
    green_spawn(&w, rights_writer, rt);
    /* Plain reads: the first parks until both messages are there and stops
     * at the boundary; the second must get the 4 bytes queued behind it at
     * once, with nothing more to come. */
    rt->r1 = read(rt->sp[0], rt->b1, sizeof rt->b1);
    rt->r2 = read(rt->sp[0], rt->b2, sizeof rt->b2);
    void *r;
    green_join(w, &r);
    return r;
}

Test(shim, a_read_short_at_an_scm_rights_message_leaves_the_rest_readable, .timeout = 10)
{
    static struct rights rt;
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, rt.sp), 0);
    cr_expect_null(run1(rights_main, &rt, 1));
    cr_expect_eq(rt.r1 + rt.r2, 8, "reads: %zd then %zd", rt.r1, rt.r2);
    cr_expect(memcmp(rt.b1, "abcd", 4) == 0);
    close(rt.sp[0]);
    close(rt.sp[1]);
}

/* ---- Timeouts too large for the clock wait, they do not wrap ---------------- */

static atomic_int woke;

static void *forever_sleeper(void *arg)
{
    struct timespec ts = { .tv_sec = (time_t)1 << 62 };
    switch (U(arg)) {
    case 0: nanosleep(&ts, NULL); break;
    case 1: clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL); break;
    case 2: {
        struct pollfd p = { .fd = -1 };
        ts.tv_sec = LONG_MAX;
        ppoll(&p, 0, &ts, NULL);
        break;
    }
    default: {
        struct timeval tv = { .tv_sec = LONG_MAX };
        select(0, NULL, NULL, NULL, &tv);
        break;
    }
    }
    atomic_fetch_add(&woke, 1);
    return NULL;
}

static void *forever_main(void *arg)
{
    (void)arg;
    for (uintptr_t i = 0; i < 4; i++) {
        green_t t;
        green_spawn(&t, forever_sleeper, P(i));
        green_detach(t);
    }
    green_sleep_ns(300 * MS);
    _exit(atomic_load(&woke));       /* the sleepers never end: leave */
}

Test(shim, huge_timeouts_in_nanosleep_ppoll_and_select_sleep_instead_of_returning,
     .timeout = 20)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        green_config_t cfg;
        green_config_init(&cfg);
        cfg.workers = 1;
        green_run(forever_main, NULL, &cfg, NULL);
        _exit(100);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "status %#x: %d of 4 sleepers returned", st, WEXITSTATUS(st));
}

/* ---- epoll_wait, waitpid, flock park the thread ---------------------------- */

struct parks {
    atomic_int ticks;
    atomic_bool done;
    int ticks_epoll, ticks_wait, ticks_wait_any, ticks_flock, ticks_ofd;
    int epoll_r, status, status_any, flock_r, ofd_r;
    int pipe[2];
    char path[64];
};

static void *ticker(void *arg)
{
    struct parks *k = arg;
    while (!atomic_load(&k->done)) {
        green_sleep_ns(5 * MS);
        atomic_fetch_add(&k->ticks, 1);
    }
    return NULL;
}

static void *late_writer(void *arg)
{
    struct parks *k = arg;
    green_sleep_ns(100 * MS);
    return write(k->pipe[1], "e", 1) == 1 ? NULL : P(1);
}

static void *lock_releaser(void *arg)
{
    int fd = (int)U(arg);
    green_sleep_ns(100 * MS);
    close(fd);                       /* drops its flock and OFD locks */
    return NULL;
}

/* ticks counted while fn's call was parked */
#define TICKS_DURING(k, call) \
    ({ int t0_ = atomic_load(&(k)->ticks); (call); atomic_load(&(k)->ticks) - t0_; })

static void *parks_main(void *arg)
{
    struct parks *k = arg;
    green_t tick, w;
    green_spawn(&tick, ticker, k);

    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN }, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, k->pipe[0], &ev);
    green_spawn(&w, late_writer, k);
    k->ticks_epoll = TICKS_DURING(k, k->epoll_r = epoll_wait(ep, &out, 1, 5000));
    green_join(w, NULL);
    close(ep);

    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        _exit(7);
    }
    k->ticks_wait = TICKS_DURING(k, waitpid(pid, &k->status, 0));
    if (fork() == 0) {
        usleep(100000);
        _exit(9);
    }
    k->ticks_wait_any = TICKS_DURING(k, wait(&k->status_any));

    int holder = open(k->path, O_RDWR), waiter = open(k->path, O_RDWR);
    flock(holder, LOCK_EX);
    green_spawn(&w, lock_releaser, P(holder));
    k->ticks_flock = TICKS_DURING(k, k->flock_r = flock(waiter, LOCK_EX));
    green_join(w, NULL);
    close(waiter);

    holder = open(k->path, O_RDWR);
    waiter = open(k->path, O_RDWR);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    fcntl(holder, F_OFD_SETLKW, &fl);
    green_spawn(&w, lock_releaser, P(holder));
    k->ticks_ofd = TICKS_DURING(k, k->ofd_r = fcntl(waiter, F_OFD_SETLKW, &fl));
    green_join(w, NULL);
    close(waiter);

    atomic_store(&k->done, true);
    green_join(tick, NULL);
    return NULL;
}

Test(shim, epoll_wait_waitpid_wait_flock_and_ofd_locks_park_the_green_thread, .timeout = 30)
{
    static struct parks k;
    cr_assert_eq(pipe(k.pipe), 0);
    snprintf(k.path, sizeof k.path, "/tmp/green-shim-lock-%d", (int)getpid());
    int fd = open(k.path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_expect_null(run1(parks_main, &k, 1));
    unlink(k.path);
    cr_expect_eq(k.epoll_r, 1);
    cr_expect(WIFEXITED(k.status) && WEXITSTATUS(k.status) == 7, "status %#x", k.status);
    cr_expect(WIFEXITED(k.status_any) && WEXITSTATUS(k.status_any) == 9);
    cr_expect_eq(k.flock_r, 0);
    cr_expect_eq(k.ofd_r, 0);
    /* ~100 ms each, a tick every 5 ms: the ticker ran meanwhile. */
    cr_expect_geq(k.ticks_epoll, 5, "epoll_wait: %d ticks", k.ticks_epoll);
    cr_expect_geq(k.ticks_wait, 5, "waitpid: %d ticks", k.ticks_wait);
    cr_expect_geq(k.ticks_wait_any, 5, "wait: %d ticks", k.ticks_wait_any);
    cr_expect_geq(k.ticks_flock, 5, "flock: %d ticks", k.ticks_flock);
    cr_expect_geq(k.ticks_ofd, 5, "F_OFD_SETLKW: %d ticks", k.ticks_ofd);
    close(k.pipe[0]);
    close(k.pipe[1]);
}

/* ---- recvmmsg and sendmmsg --------------------------------------------------- */

struct mmsg {
    int rx, tx;
    struct sockaddr_in to;
    int got, sent;
};

static void *mmsg_sender(void *arg)
{
    struct mmsg *m = arg;
    char payload[4] = "dgr";
    struct iovec v[4];
    struct mmsghdr h[4];
    memset(h, 0, sizeof h);
    for (int i = 0; i < 4; i++) {
        v[i] = (struct iovec){ payload, 3 };
        h[i].msg_hdr = (struct msghdr){ .msg_name = &m->to, .msg_namelen = sizeof m->to,
                                        .msg_iov = &v[i], .msg_iovlen = 1 };
    }
    /* two now, two later: recvmmsg waits for all four */
    green_sleep_ns(20 * MS);
    m->sent = sendmmsg(m->tx, h, 2, 0);
    green_sleep_ns(20 * MS);
    m->sent += sendmmsg(m->tx, h + 2, 2, 0);
    return NULL;
}

static void *mmsg_main(void *arg)
{
    struct mmsg *m = arg;
    green_t s;
    green_spawn(&s, mmsg_sender, m);
    char bufs[4][8];
    struct iovec v[4];
    struct mmsghdr h[4];
    memset(h, 0, sizeof h);
    for (int i = 0; i < 4; i++) {
        v[i] = (struct iovec){ bufs[i], sizeof bufs[i] };
        h[i].msg_hdr = (struct msghdr){ .msg_iov = &v[i], .msg_iovlen = 1 };
    }
    m->got = recvmmsg(m->rx, h, 4, 0, NULL);
    green_join(s, NULL);
    return NULL;
}

Test(shim, recvmmsg_waits_for_every_datagram_asked_for, .timeout = 20)
{
    static struct mmsg m;
    m.rx = socket(AF_INET, SOCK_DGRAM, 0);
    m.tx = socket(AF_INET, SOCK_DGRAM, 0);
    m.to = (struct sockaddr_in){ .sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(m.rx, (struct sockaddr *)&m.to, sizeof m.to), 0);
    socklen_t len = sizeof m.to;
    cr_assert_eq(getsockname(m.rx, (struct sockaddr *)&m.to, &len), 0);
    cr_expect_null(run1(mmsg_main, &m, 1));
    cr_expect_eq(m.sent, 4);
    cr_expect_eq(m.got, 4, "recvmmsg: %d of 4", m.got);
    close(m.rx);
    close(m.tx);
}

/* ---- Signal handlers: the calls inside are libc's ---------------------------- */

static struct {
    int pipe[2];
    atomic_int handled, bad;
} hs;

static void busy_handler(int sig)
{
    (void)sig;
    int e = errno;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* A real sleep of this OS thread (which the preemption signal may cut
     * short with EINTR, as any signal may: sleep the rest). */
    struct timespec req = { 0, 200000 };
    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
    char c = 'h';
    struct pollfd p = { .fd = hs.pipe[0], .events = POLLIN };
    ssize_t w1 = write(hs.pipe[1], &c, 1);
    int pr = poll(&p, 1, -1);
    ssize_t r1 = read(hs.pipe[0], &c, 1);
    if (w1 != 1 || pr != 1 || r1 != 1 || c != 'h') {
        atomic_fetch_add(&hs.bad, 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if ((pid_t)syscall(SYS_gettid) != tid ||
        (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 200000)
        atomic_fetch_add(&hs.bad, 1);
    atomic_fetch_add(&hs.handled, 1);
    errno = e;
}

static atomic_bool stop_hogs;
static atomic_long hog_work;

static void *hog(void *arg)
{
    (void)arg;
    long n = 0;
    while (!atomic_load_explicit(&stop_hogs, memory_order_relaxed)) {
        if (++n % 1024 == 0)
            atomic_fetch_add_explicit(&hog_work, 1, memory_order_relaxed);
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_hogs))
        usleep(300);
    return NULL;
}

static void *kicker(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    for (int i = 0; i < 300; i++) {
        kill(getpid(), SIGUSR1);
        usleep(1000);
    }
    return NULL;
}

static void *handlers_main(void *arg)
{
    (void)arg;
    green_t t[4];
    green_spawn(&t[0], hog, NULL);
    green_spawn(&t[1], hog, NULL);
    green_spawn(&t[2], sleeper, NULL);
    green_spawn(&t[3], sleeper, NULL);
    pthread_t k;
    pthread_create(&k, NULL, kicker, NULL);
    pthread_join(k, NULL);
    /* Preemption still works: a ticker beside the hogs keeps time. */
    long w0 = atomic_load(&hog_work);
    uint64_t t0 = mono_ns();
    for (int i = 0; i < 20; i++)
        green_sleep_ns(2 * MS);
    uint64_t took = mono_ns() - t0;
    atomic_store(&stop_hogs, true);
    for (int i = 0; i < 4; i++)
        green_join(t[i], NULL);
    return (took < 2000 * MS && atomic_load(&hog_work) > w0) ? NULL : P(1);
}

static void handlers_test(int flags, bool full_mask)
{
    cr_assert_eq(pipe(hs.pipe), 0);
    struct sigaction sa = { .sa_handler = busy_handler, .sa_flags = flags };
    if (full_mask)
        sigfillset(&sa.sa_mask);
    else
        sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    struct sigaction back;
    cr_assert_eq(sigaction(SIGUSR1, NULL, &back), 0);
    cr_expect_eq(back.sa_handler, busy_handler, "sigaction reports the program's handler");
    cr_expect_eq(back.sa_flags & SA_SIGINFO, 0);
    green_config_t cfg = config(2);
    cfg.quantum_us = 100;
    void *ret = P(1);
    cr_assert_eq(green_run(handlers_main, NULL, &cfg, &ret), 0);
    cr_expect_null(ret, "preemption stopped after the handlers");
    cr_expect_geq(atomic_load(&hs.handled), 10);
    cr_expect_eq(atomic_load(&hs.bad), 0, "%d handlers saw a parked call or moved",
                 atomic_load(&hs.bad));
    /* The worker that ran the handlers kept its mask: nothing left blocked. */
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    cr_expect_eq(sigismember(&now, SIGALRM), 0);
}

Test(shim, handlers_on_the_altstack_that_sleep_poll_read_and_write_stay_on_their_thread,
     .timeout = 60)
{
    handlers_test(SA_ONSTACK | SA_RESTART, false);
}

Test(shim, handlers_with_every_signal_masked_leave_no_worker_blocked, .timeout = 60)
{
    handlers_test(SA_RESTART, true);
}

/* Without green_run: a handler that closes fds while the program does too. */
static void closing_handler(int sig)
{
    (void)sig;
    int fd = dup(0);
    if (fd >= 0)
        close(fd);
    atomic_fetch_add(&hs.handled, 1);
}

Test(shim, without_green_run_handlers_that_close_fds_are_plain_libc, .timeout = 30)
{
    struct sigaction sa = { .sa_handler = closing_handler, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
    struct itimerval it = { { 0, 100 }, { 0, 100 } };
    cr_assert_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
    for (int i = 0; i < 200000 && atomic_load(&hs.handled) < 2000; i++) {
        int fd = dup(1);
        if (fd >= 0)
            close(fd);
    }
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    cr_expect_geq(atomic_load(&hs.handled), 100);
}
