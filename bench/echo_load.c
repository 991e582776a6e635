/* echo_load: the load client of the echo benchmark (bench/echo_bench.sh) --
 * C connections to an echo server on 127.0.0.1, each in a closed loop.
 *
 *     echo_load --port N [--conns C] [--secs D] [--warmup W] [--threads T]
 *               [--size B] [--ramp-secs R]
 *
 * Defaults: 100 connections, 5 s measured after 1 s of warm-up, 1 thread,
 * 64-byte messages, 30 s to bring the connections up.  Output, one line:
 *
 *     conns=C reqs=R secs=S rps=X p50_us=.. p99_us=.. max_us=.. errors=E
 *
 * Each connection sends a message, waits for all of its echo, records the
 * round trip, and sends the next: closed loop, one request in flight per
 * connection, so rps is the server's throughput at C concurrent clients and
 * the latency is what each client sees (at C connections, p50 ~ C / rps).
 *
 * Phases (a shared atomic, set by the main thread):
 *   RAMP     the client threads connect, at most RAMP_INFLIGHT connections
 *            being set up at a time (so the server's accept backlog never
 *            overflows); a connection counts as up when its first echo
 *            comes back (the server accepted it and serves it), then waits:
 *            connections in their loops would starve the acceptor.  A connect refused (ECONNREFUSED, EAGAIN,
 *            EADDRNOTAVAIL, ETIMEDOUT) or a connection closed before its
 *            first echo is retried, with a growing pause, up to MAX_TRIES.
 *            When all C are up the main thread moves to
 *   WARMUP   every connection starts its loop; W seconds, not counted; then
 *   MEASURE  D seconds: round trips that complete now are counted and their
 *            latencies go to the histogram; then
 *   STOP     no new requests; the threads wait up to DRAIN_MS for the echoes
 *            in flight, then close every connection (a clean EOF for the
 *            server) and exit.
 * secs is the measured window by the monotonic clock, rps = reqs / secs.
 *
 * Every echoed byte is checked: byte i of request k on connection j is a
 * function of (i, j, k), so a byte lost, duplicated, or sent to the wrong
 * connection shows.  errors = requests whose echo differed + connections
 * that failed after the ramp (EOF, reset) + echoes still missing after the
 * drain.  The exit status is 0 when the line was printed (whatever errors
 * says), 1 on a fatal error (the ramp did not complete, out of fds, ...).
 *
 * Each client thread runs its share of the connections on its own epoll
 * (level-triggered, non-blocking sockets, TCP_NODELAY as Go's server sets).
 * Latencies: a histogram with 64 sub-buckets per power of two of
 * nanoseconds (under 1.6% error), per thread, merged at the end; percentiles
 * by nearest rank, reported at the bucket's midpoint; the max is exact.
 *
 * Plain C and POSIX/Linux, no libgreen.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RAMP_INFLIGHT 256   /* connections being set up at once, all threads */
#define MAX_TRIES 50        /* connection attempts before giving up */
#define DRAIN_MS 2000
#define MAX_EVENTS 512
#define MAX_SIZE 65536
#define SUB_BITS 6          /* histogram: 2^SUB_BITS sub-buckets per octave */
#define SUB (1u << SUB_BITS)
#define NBUCKETS (2 * SUB + (64 - SUB_BITS - 1) * SUB)

enum phase { RAMP, WARMUP, MEASURE, STOP };
/* A connection: NEW -> CONNECTING -> CONFIRM (first request in flight) ->
 * IDLE (up, waiting for WARMUP) -> RUN (in its loop) -> IDLE (STOP); RETRY
 * between a failed attempt and the next; DEAD when it failed while up. */
enum cstate { NEW, RETRY, CONNECTING, CONFIRM, RUN, IDLE, DEAD };

/* Options: set by main before any thread starts, read-only afterwards. */
static struct {
    int port;
    uint32_t conns, threads, size;
    double secs, warmup, ramp_secs;
} opt = {0, 100, 1, 64, 5, 1, 30};

static _Atomic int phase;                /* enum phase: written by main only */
static _Atomic uint32_t conns_up;        /* connections past their first echo */
static _Atomic uint32_t retries;         /* connection attempts retried */
static _Atomic int errors_logged;        /* lines of detail printed on stderr */

/* One connection.  Owned by its client thread. */
struct conn {
    int fd;                              /* -1 unless CONNECTING..IDLE */
    uint32_t id;                         /* global index: the pattern's seed */
    uint32_t seq;                        /* requests started */
    uint32_t sent, got;                  /* bytes of the current request */
    uint8_t state;                       /* enum cstate */
    bool want_out;                       /* EPOLLOUT is registered */
    uint16_t tries;                      /* connection attempts */
    uint64_t t0;                         /* when the current request was sent */
    uint64_t retry_at;                   /* RETRY: not before */
};

/* One client thread and its connections. */
struct client {
    pthread_t tid;
    int ep;                              /* its epoll */
    struct conn *c;                      /* its connections */
    uint32_t n;                          /* how many */
    uint32_t next;                       /* first one never started */
    uint32_t setting_up;                 /* in CONNECTING, CONFIRM or RETRY */
    uint32_t cap;                        /* its share of RAMP_INFLIGHT */
    uint32_t inflight;                   /* requests awaiting their echo */
    struct conn **retry;                 /* connections in RETRY (n slots) */
    uint32_t nretry;
    uint64_t reqs, errors, max_ns;       /* counted in MEASURE (errors: always) */
    uint64_t *hist;                      /* NBUCKETS */
};

/* ---- Small things ----------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("echo_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Byte i of request seq on connection id. */
static inline uint8_t pattern(uint32_t id, uint32_t seq, uint32_t i)
{
    uint32_t h = id * 0x9E3779B1u ^ seq * 0x85EBCA77u;
    return (uint8_t)((h >> ((i & 3) * 8)) + i);
}

static unsigned bucket(uint64_t v)
{
    if (v < 2 * SUB)
        return (unsigned)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v);         /* >= SUB_BITS + 1 */
    unsigned sub = (unsigned)(v >> (e - SUB_BITS)) & (SUB - 1);
    return 2 * SUB + (e - SUB_BITS - 1) * SUB + sub;
}

/* The midpoint of bucket b, in ns. */
static double bucket_mid(unsigned b)
{
    if (b < 2 * SUB)
        return b;
    unsigned e = (b - 2 * SUB) / SUB + SUB_BITS + 1, sub = (b - 2 * SUB) % SUB;
    double lo = (double)((uint64_t)(SUB + sub) << (e - SUB_BITS));
    return lo + (double)((uint64_t)1 << (e - SUB_BITS)) / 2;
}

static void log_error(const struct conn *c, const char *what, int err)
{
    if (atomic_fetch_add(&errors_logged, 1) < 5)
        fprintf(stderr, "echo_load: connection %" PRIu32 ": %s%s%s\n", c->id, what,
                err ? ": " : "", err ? strerror(err) : "");
}

/* ---- Connecting ------------------------------------------------------- */

static void set_events(struct client *cl, struct conn *c, uint32_t ev, int op)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(cl->ep, op, c->fd, &e) != 0)
        fatal("epoll_ctl: %s", strerror(errno));
}

static void drop_fd(struct conn *c)
{
    close(c->fd);                        /* also leaves the epoll set */
    c->fd = -1;
    c->want_out = false;
}

/* A connection not yet up failed: try again later. */
static void retry(struct client *cl, struct conn *c, int err)
{
    if (c->state == CONFIRM)
        cl->inflight--;
    drop_fd(c);
    if (++c->tries >= MAX_TRIES)
        fatal("connection %" PRIu32 ": %d attempts failed, the last: %s", c->id, c->tries,
              err ? strerror(err) : "closed before its first echo");
    atomic_fetch_add(&retries, 1);
    c->state = RETRY;
    c->retry_at = now_ns() + (uint64_t)(c->tries < 10 ? c->tries : 10) * 10000000u;
    cl->retry[cl->nretry++] = c;
}

static void start_request(struct client *cl, struct conn *c, uint64_t now);

static void connected(struct client *cl, struct conn *c)
{
    c->state = CONFIRM;
    set_events(cl, c, EPOLLIN, EPOLL_CTL_MOD);
    start_request(cl, c, now_ns());
}

static void start_connect(struct client *cl, struct conn *c)
{
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        fatal("socket: %s", strerror(errno));
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    c->state = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0) {
        set_events(cl, c, EPOLLOUT, EPOLL_CTL_ADD);
        connected(cl, c);
        return;
    }
    int err = errno;
    if (err == EINPROGRESS) {
        set_events(cl, c, EPOLLOUT, EPOLL_CTL_ADD);
        return;
    }
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
        fatal("connect: %s", strerror(err));
    retry(cl, c, err);
}

/* Retry the connections whose pause is over (they keep their set-up
 * slot meanwhile), then start new ones while this thread's share allows. */
static void ramp(struct client *cl)
{
    uint64_t now = 0;
    for (uint32_t i = 0; i < cl->nretry;) {
        struct conn *c = cl->retry[i];
        if (!now)
            now = now_ns();
        if (c->retry_at > now) {
            i++;
            continue;
        }
        cl->retry[i] = cl->retry[--cl->nretry];
        start_connect(cl, c);
    }
    while (cl->next < cl->n && cl->setting_up < cl->cap) {
        cl->setting_up++;
        start_connect(cl, &cl->c[cl->next++]);
    }
}

/* ---- Ping-pong -------------------------------------------------------- */

/* A connection that was up failed: count it and give it up. */
static void fail(struct client *cl, struct conn *c, const char *what, int err)
{
    if (c->state == CONFIRM) {
        retry(cl, c, err);
        return;
    }
    log_error(c, what, err);
    cl->errors++;
    cl->inflight--;
    drop_fd(c);
    c->state = DEAD;
}

/* Send what is left of the current request.  false: the connection failed. */
static bool flush(struct client *cl, struct conn *c)
{
    uint8_t buf[MAX_SIZE];
    while (c->sent < opt.size) {
        uint32_t len = opt.size - c->sent;
        for (uint32_t i = 0; i < len; i++)
            buf[i] = pattern(c->id, c->seq, c->sent + i);
        ssize_t k = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                fail(cl, c, "send", errno);
                return false;
            }
            if (!c->want_out) {
                set_events(cl, c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                c->want_out = true;
            }
            return true;
        }
        c->sent += (uint32_t)k;
    }
    if (c->want_out) {
        set_events(cl, c, EPOLLIN, EPOLL_CTL_MOD);
        c->want_out = false;
    }
    return true;
}

static void start_request(struct client *cl, struct conn *c, uint64_t now)
{
    c->seq++;
    c->sent = c->got = 0;
    c->t0 = now;
    cl->inflight++;
    flush(cl, c);
}

static void complete(struct client *cl, struct conn *c)
{
    uint64_t now = now_ns(), lat = now - c->t0;
    int ph = atomic_load_explicit(&phase, memory_order_relaxed);
    cl->inflight--;
    if (ph == MEASURE) {
        cl->hist[bucket(lat)]++;
        cl->reqs++;
        if (lat > cl->max_ns)
            cl->max_ns = lat;
    }
    if (c->state == CONFIRM) {
        cl->setting_up--;
        atomic_fetch_add(&conns_up, 1);
    }
    if (ph == RAMP || ph == STOP) {
        c->state = IDLE;
        return;
    }
    c->state = RUN;
    start_request(cl, c, now);
}

static void receive(struct client *cl, struct conn *c)
{
    uint8_t buf[MAX_SIZE];
    ssize_t k = read(c->fd, buf, opt.size - c->got);
    if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fail(cl, c, k ? "read" : "closed by the server", k ? errno : 0);
        return;
    }
    if (c->sent < c->got + (uint32_t)k) {
        log_error(c, "echo of bytes not yet sent", 0);
        cl->errors++;
    } else {
        for (uint32_t i = 0; i < (uint32_t)k; i++)
            if (buf[i] != pattern(c->id, c->seq, c->got + i)) {
                log_error(c, "echoed bytes differ from those sent", 0);
                cl->errors++;
                break;
            }
    }
    c->got += (uint32_t)k;
    if (c->got == opt.size)
        complete(cl, c);
}

/* Bytes or an EOF on a connection with no request in flight: an error,
 * except an EOF after STOP.  (Level-triggered: it must be read or closed.) */
static void idle_event(struct client *cl, struct conn *c)
{
    uint8_t buf[256];
    ssize_t k = read(c->fd, buf, sizeof buf);
    if (k < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (k > 0) {
        log_error(c, "bytes echoed that were never sent", 0);
        cl->errors++;
        return;
    }
    if (atomic_load(&phase) != STOP) {
        log_error(c, k ? "read" : "closed by the server", k ? errno : 0);
        cl->errors++;
    }
    drop_fd(c);
    c->state = DEAD;
}

static void on_event(struct client *cl, struct conn *c, uint32_t ev)
{
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err || (ev & (EPOLLERR | EPOLLHUP)))
            retry(cl, c, err);
        else
            connected(cl, c);
        return;
    }
    if (c->state == IDLE) {
        idle_event(cl, c);
        return;
    }
    if (c->state != CONFIRM && c->state != RUN)
        return;                          /* an event from before a close */
    if ((ev & EPOLLOUT) && !flush(cl, c))
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        receive(cl, c);
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct epoll_event ev[MAX_EVENTS];
    uint64_t drain_until = 0;
    bool started = false;                /* the loops began (phase WARMUP) */
    for (;;) {
        int ph = atomic_load(&phase);
        if (ph == STOP) {
            if (!drain_until)
                drain_until = now_ns() + (uint64_t)DRAIN_MS * 1000000u;
            if (cl->inflight == 0 || now_ns() > drain_until)
                break;
        }
        if (ph == RAMP)
            ramp(cl);
        if (ph != RAMP && !started) {
            started = true;
            uint64_t now = now_ns();
            for (uint32_t i = 0; i < cl->n; i++)
                if (cl->c[i].state == IDLE) {
                    cl->c[i].state = RUN;
                    start_request(cl, &cl->c[i], now);
                }
        }
        int timeout = ph == RAMP ? 5 : 50;
        int k = epoll_wait(cl->ep, ev, MAX_EVENTS, timeout);
        if (k < 0 && errno != EINTR)
            fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < k; i++)
            on_event(cl, ev[i].data.ptr, ev[i].events);
    }
    cl->errors += cl->inflight;          /* echoes that never came back */
    for (uint32_t i = 0; i < cl->n; i++)
        if (cl->c[i].fd >= 0)
            close(cl->c[i].fd);
    return NULL;
}

/* ---- Setup and report ------------------------------------------------- */

static double parse_num(const char *s, const char *what, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "echo_load: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_load --port N [--conns C] [--secs D] [--warmup W] "
                    "[--threads T] [--size B] [--ramp-secs R]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},
        {"secs", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"threads", required_argument, NULL, 't'},
        {"size", required_argument, NULL, 's'},
        {"ramp-secs", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': opt.port = (int)parse_num(optarg, "port", 1, 65535); break;
        case 'c': opt.conns = (uint32_t)parse_num(optarg, "connection count", 1, 1e6); break;
        case 'd': opt.secs = parse_num(optarg, "seconds", 0.01, 1e6); break;
        case 'w': opt.warmup = parse_num(optarg, "warm-up", 0, 1e6); break;
        case 't': opt.threads = (uint32_t)parse_num(optarg, "thread count", 1, 256); break;
        case 's': opt.size = (uint32_t)parse_num(optarg, "size", 1, MAX_SIZE); break;
        case 'r': opt.ramp_secs = parse_num(optarg, "ramp seconds", 0.1, 1e6); break;
        default: usage();
        }
    }
    if (optind != argc || opt.port == 0)
        usage();
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        fatal("getrlimit: %s", strerror(errno));
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        fatal("setrlimit: %s", strerror(errno));
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)opt.conns + 64)
        fatal("%" PRIu32 " connections need %" PRIu32 " fds; the hard limit is %llu",
              opt.conns, opt.conns + 64, (unsigned long long)rl.rlim_max);
}

static void start_clients(struct client *cl, struct conn *conns)
{
    for (uint32_t t = 0; t < opt.threads; t++) {
        uint32_t first = (uint32_t)((uint64_t)opt.conns * t / opt.threads);
        uint32_t end = (uint32_t)((uint64_t)opt.conns * (t + 1) / opt.threads);
        cl[t].c = conns + first;
        cl[t].n = end - first;
        cl[t].cap = RAMP_INFLIGHT / opt.threads > 16 ? RAMP_INFLIGHT / opt.threads : 16;
        cl[t].retry = calloc(cl[t].n, sizeof *cl[t].retry);
        cl[t].hist = calloc(NBUCKETS, sizeof *cl[t].hist);
        if ((cl[t].ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
            fatal("epoll_create1: %s", strerror(errno));
        if (!cl[t].retry || !cl[t].hist)
            fatal("out of memory");
        for (uint32_t i = first; i < end; i++)
            conns[i] = (struct conn){.fd = -1, .id = i, .state = NEW};
        int err = pthread_create(&cl[t].tid, NULL, client_main, &cl[t]);
        if (err)
            fatal("pthread_create: %s", strerror(err));
    }
}

/* Wait until every connection is up (or give up), then time the phases.
 * *secs: the measured window. */
static void run_phases(double *secs)
{
    uint64_t t0 = now_ns(), limit = t0 + (uint64_t)(opt.ramp_secs * 1e9);
    while (atomic_load(&conns_up) < opt.conns) {
        if (now_ns() > limit)
            fatal("ramp: %" PRIu32 " of %" PRIu32 " connections up after %.0f s "
                  "(%" PRIu32 " retries); is the server serving them all?",
                  atomic_load(&conns_up), opt.conns, opt.ramp_secs, atomic_load(&retries));
        sleep_s(0.005);
    }
    fprintf(stderr, "echo_load: %" PRIu32 " connections up in %.2f s (%" PRIu32 " retries)\n",
            opt.conns, (double)(now_ns() - t0) / 1e9, atomic_load(&retries));
    atomic_store(&phase, WARMUP);
    sleep_s(opt.warmup);
    uint64_t start = now_ns();
    atomic_store(&phase, MEASURE);
    sleep_s(opt.secs);
    atomic_store(&phase, STOP);
    *secs = (double)(now_ns() - start) / 1e9;
}

/* Nearest rank: the smallest latency >= p percent of them, in us. */
static double percentile_us(const uint64_t *hist, uint64_t total, double p)
{
    uint64_t rank = (uint64_t)((double)total * p / 100.0 + 0.999999), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned b = 0; b < NBUCKETS; b++)
        if ((seen += hist[b]) >= rank)
            return bucket_mid(b) / 1e3;
    return 0;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    struct client *cl = calloc(opt.threads, sizeof *cl);
    struct conn *conns = calloc(opt.conns, sizeof *conns);
    if (!cl || !conns)
        fatal("out of memory");
    start_clients(cl, conns);
    double secs;
    run_phases(&secs);

    uint64_t *hist = calloc(NBUCKETS, sizeof *hist), reqs = 0, errors = 0, max_ns = 0;
    if (!hist)
        fatal("out of memory");
    for (uint32_t t = 0; t < opt.threads; t++) {
        pthread_join(cl[t].tid, NULL);
        for (unsigned b = 0; b < NBUCKETS; b++)
            hist[b] += cl[t].hist[b];
        reqs += cl[t].reqs;
        errors += cl[t].errors;
        if (cl[t].max_ns > max_ns)
            max_ns = cl[t].max_ns;
        close(cl[t].ep);
        free(cl[t].retry);
        free(cl[t].hist);
    }
    printf("conns=%" PRIu32 " reqs=%" PRIu64 " secs=%.3f rps=%.0f p50_us=%.1f p99_us=%.1f "
           "max_us=%.1f errors=%" PRIu64 "\n",
           opt.conns, reqs, secs, (double)reqs / secs,
           reqs ? percentile_us(hist, reqs, 50) : 0, reqs ? percentile_us(hist, reqs, 99) : 0,
           (double)max_ns / 1e3, errors);
    free(hist);
    free(conns);
    free(cl);
    return 0;
}
