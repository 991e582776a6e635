/* echo_server: a TCP echo server on 127.0.0.1 written with plain blocking
 * calls, one thread per connection.
 *
 *     echo_server [--port N] [--pthreads] [--max-conns N]
 *
 * What matters here is what the program does not contain: no event loop, no
 * non-blocking fd, no libgreen I/O call.  The acceptor loops on accept(); each
 * connection gets a thread running the obvious loop -- read(), write() it all
 * back, until EOF -- and close().
 *
 * Default mode: green_run(); the acceptor is the main green thread and each
 * connection a detached green thread (green_spawn).  It is meant to run under
 * the preload shim, which turns each blocking call into parking the green
 * thread, so a few workers serve any number of connections:
 *
 *     LD_PRELOAD=build/preload/.libs/libgreen-preload.so echo_server
 *
 * Without the shim a blocked read() holds its worker OS thread: accept()
 * holds one worker and each busy connection another, so with W workers at
 * most W - 1 connections are served and the rest wait.  That is the problem
 * the shim solves, not a bug here.
 *
 * --pthreads: the same code on one detached pthread per connection (64 KiB
 * stacks, so 10 000 of them fit) and libgreen nowhere on the I/O path: the
 * peer of bench/echo_bench.sh.
 *
 * --port N: 0 (the default) picks a free port.  Once listening the program
 * prints `listening on 127.0.0.1:PORT` on stdout, for scripts to read.
 * --max-conns N: accept N connections, stop accepting, wait until all N have
 * closed, print a summary on stderr and exit 0 (for tests).  Otherwise it
 * serves until killed.
 *
 * Errors, as a server that must stay up handles them: EINTR is retried; a
 * connection that fails (ECONNRESET, EPIPE, ...) is closed; accept() out of
 * fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses 10 ms and goes on,
 * leaving the connection in the backlog; a thread that cannot be created
 * costs its connection.  Each kind of error is logged at most once a second,
 * with a count, so a storm of resets does not flood stderr.  SIGPIPE is
 * ignored.  RLIMIT_NOFILE is raised to its hard limit at start.
 *
 * Environment (default mode): GREEN_WORKERS, GREEN_STACK_SIZE, ... (README.md).
 */
#define _GNU_SOURCE
#include <green.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ECHO_BUF      4096               /* read buffer, on the thread's stack */
#define PTHREAD_STACK ((size_t)64 << 10)
#define LISTEN_BACKLOG 65535             /* the kernel caps it at somaxconn */

/* Set by main before the first thread starts; read-only afterwards. */
static struct {
    int port;
    bool pthreads;
    long max_conns;                      /* 0: serve forever */
    pthread_attr_t attr;                 /* --pthreads: detached, small stack */
} opt;

/* Counters, updated by every connection thread. */
static _Atomic long conns_closed;
static _Atomic uint64_t bytes_echoed;

/* --pthreads --max-conns: the acceptor waits on `drained` for the last close. */
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained = PTHREAD_COND_INITIALIZER;

/* ---- Rate-limited error log ------------------------------------------- */

enum { EV_RESET, EV_IO, EV_ACCEPT, EV_SPAWN, EV_KINDS };

static struct {
    const char *what;
    _Atomic uint64_t count;              /* since start */
    _Atomic int64_t last_s;              /* second of the last line printed */
} events[EV_KINDS] = {
    [EV_RESET] = {"connection reset by the peer", 0, -1},
    [EV_IO] = {"connection failed", 0, -1},
    [EV_ACCEPT] = {"accept (pausing 10 ms)", 0, -1},
    [EV_SPAWN] = {"cannot start a thread; connection closed", 0, -1},
};

static int64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Count an error of this kind; print a line unless one was printed this second. */
static void note(int kind, int err)
{
    uint64_t n = atomic_fetch_add(&events[kind].count, 1) + 1;
    int64_t now = now_s(), last = atomic_load(&events[kind].last_s);
    char msg[128];
    if (now != last && atomic_compare_exchange_strong(&events[kind].last_s, &last, now))
        fprintf(stderr, "echo_server: %s: %s (%" PRIu64 " so far)\n", events[kind].what,
                strerror_r(err, msg, sizeof msg), n);
}

static void die(const char *what, int err)
{
    fprintf(stderr, "echo_server: %s: %s\n", what, strerror(err));
    exit(1);
}

/* ---- A connection ----------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void conn_closed(uint64_t bytes)
{
    atomic_fetch_add(&bytes_echoed, bytes);
    long closed = atomic_fetch_add(&conns_closed, 1) + 1;
    if (opt.pthreads && opt.max_conns > 0 && closed == opt.max_conns) {
        pthread_mutex_lock(&drain_lock);
        pthread_cond_signal(&drained);
        pthread_mutex_unlock(&drain_lock);
    }
}

/* A connection's thread: echo until EOF or an error, then close. */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg, err = 0;
    char buf[ECHO_BUF];
    uint64_t bytes = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if ((err = write_all(fd, buf, (size_t)n)) != 0)
            break;
        bytes += (uint64_t)n;
    }
    if (err)
        note(err == ECONNRESET || err == EPIPE ? EV_RESET : EV_IO, err);
    close(fd);                           /* Linux frees the fd even on EINTR */
    conn_closed(bytes);
    return NULL;
}

static int start_thread(int fd)
{
    void *arg = (void *)(intptr_t)fd;
    if (opt.pthreads) {
        pthread_t t;
        return pthread_create(&t, &opt.attr, serve, arg);
    }
    return green_spawn(NULL, serve, arg);
}

/* ---- The acceptor ----------------------------------------------------- */

static void pause_10ms(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        die("socket", errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        die("setsockopt SO_REUSEADDR", errno);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind", errno);
    if (listen(fd, LISTEN_BACKLOG) != 0)
        die("listen", errno);
    if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        die("getsockname", errno);
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

/* Accept errors that concern one pending connection only (accept(2)):
 * the next one may be fine. */
static bool transient(int err)
{
    switch (err) {
    case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
        return true;
    }
    return false;
}

/* The main green thread, or main() itself with --pthreads. */
static void *acceptor(void *unused)
{
    (void)unused;
    int lfd = listen_on(opt.port), one = 1;
    long accepted = 0;
    while (opt.max_conns == 0 || accepted < opt.max_conns) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (transient(err))
                continue;
            if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
                die("accept", err);
            note(EV_ACCEPT, err);
            pause_10ms();
            continue;
        }
        accepted++;
        /* As Go does for every TCP connection: replies are never held back
         * for Nagle's algorithm. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int err = start_thread(fd);
        if (err) {
            note(EV_SPAWN, err);
            close(fd);
            conn_closed(0);
        }
    }
    close(lfd);
    if (opt.pthreads) {                  /* green_run waits for detached threads */
        pthread_mutex_lock(&drain_lock);
        while (atomic_load(&conns_closed) < opt.max_conns)
            pthread_cond_wait(&drained, &drain_lock);
        pthread_mutex_unlock(&drain_lock);
    }
    return NULL;
}

/* ---- Setup ------------------------------------------------------------ */

static long parse_num(const char *s, const char *what, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max) {
        fprintf(stderr, "echo_server: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_server [--port N] [--pthreads] [--max-conns N]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"pthreads", no_argument, NULL, 't'},
        {"max-conns", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': opt.port = (int)parse_num(optarg, "port", 65535); break;
        case 't': opt.pthreads = true; break;
        case 'm': opt.max_conns = parse_num(optarg, "connection count", LONG_MAX); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "echo_server: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    int err;
    if (opt.pthreads) {
        if ((err = pthread_attr_init(&opt.attr)) != 0 ||
            (err = pthread_attr_setdetachstate(&opt.attr, PTHREAD_CREATE_DETACHED)) != 0 ||
            (err = pthread_attr_setstacksize(&opt.attr, PTHREAD_STACK)) != 0)
            die("pthread_attr", err);
        acceptor(NULL);
    } else if ((err = green_run(acceptor, NULL, NULL, NULL)) != 0) {
        die("green_run", err);
    }
    fprintf(stderr, "echo_server: served %ld connections, %" PRIu64 " bytes echoed; "
            "%" PRIu64 " resets, %" PRIu64 " other failures\n",
            atomic_load(&conns_closed), atomic_load(&bytes_echoed),
            atomic_load(&events[EV_RESET].count), atomic_load(&events[EV_IO].count));
    return 0;
}
