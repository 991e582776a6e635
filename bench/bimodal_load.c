/* bimodal_load: the open-loop client of the bimodal table
 * (bench/bimodal_bench.sh).
 *
 *     bimodal_load --port N --load PCT [--conns C] [--secs D] [--warmup W]
 *                  [--short-us S] [--long-us L] [--long-frac F] [--seed K]
 *
 * Defaults: 64 connections, 2 s measured after 0.2 s of warm-up, a mix of
 * 99.5% 5 us and 0.5% 5000 us requests (--long-frac 0.005), seed 1.
 *
 * The schedule is drawn before the first send: Poisson arrivals (exponential
 * gaps) at rate = load / mean service time, where load is a fraction of one
 * CPU (PCT / 100) and the mean service time is (1 - F) S + F L; each
 * request is long with probability F.  The same seed gives the same
 * schedule, so every server of one repetition sees the same requests.
 *
 * Open loop: one thread both sends and receives, on its own epoll.  It
 * sends every request whose scheduled time has come, whatever is still
 * outstanding, then waits for answers until the next scheduled time
 * (epoll_pwait2, with the timer slack at 1 ns; within 50 us of the next
 * send it polls without sleeping).  A request goes to a connection with
 * nothing outstanding, the first found round-robin from the last one used;
 * when every connection has a request outstanding it is pipelined on the
 * one with the fewest (the server answers each connection's requests in
 * order, so it queues behind them, as it would on a real client).
 * Latency = time the answer was read - the request's scheduled send time:
 * a send that goes out late (the client was busy) counts against the
 * server, as in the literature's open-loop clients.
 *
 * Requests scheduled in the first W seconds are sent but not counted.  After
 * the last send the client waits up to DRAIN_S for the outstanding answers;
 * one still missing then counts as an error and as an infinite latency in
 * the percentiles.  Output, one line of key=value:
 *
 *   load=PCT offered_rps=R reqs=N long=NL short_p50_us= short_p99_us=
 *   short_p999_us= all_p50_us= all_p99_us= all_p999_us= long_p50_us=
 *   tput_rps=T errors=E
 *
 * tput_rps: counted answers / (last counted answer - first counted
 * scheduled send): the offered rate when the server keeps up, less when a
 * backlog is left at the end.  Percentiles by nearest rank over the exact
 * latencies.  Exit 0 when the line was printed, 1 on a fatal error.
 *
 * Plain C and POSIX/Linux, no libgreen.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bimodal.h"

#define DRAIN_S 5.0
#define SPIN_NS 50000u            /* closer than this to a send: poll, not sleep */
#define MAX_CONNS 4096
#define RX_BUF 4096

static struct {
    int port;
    unsigned conns;
    double load, secs, warmup, long_frac;
    uint32_t short_us, long_us;
    uint64_t seed;
} opt = {0, 64, -1, 2.0, 0.2, 0.005, 5, 5000, 1};

/* One request.  Filled in by make_schedule, done_ns by the receive path. */
struct req {
    uint64_t at_ns;                      /* scheduled send, from the start */
    uint64_t done_ns;                    /* answer read, from the start; 0: none */
    uint32_t service_us;
};

/* One connection.  Owned by the only thread. */
struct conn {
    int fd;
    uint32_t outstanding;                /* requests sent, not yet answered */
    uint32_t rx_len;                     /* bytes of a partial answer in rx */
    char rx[RX_BUF];
};

static struct req *reqs;
static uint64_t nreqs;
static struct conn *conns;
static uint64_t t_start;

static void die(const char *fmt, const char *what, int err)
{
    fprintf(stderr, "bimodal_load: ");
    fprintf(stderr, fmt, what);
    if (err)
        fprintf(stderr, ": %s", strerror(err));
    fputc('\n', stderr);
    exit(1);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- The schedule ------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)           /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double rng_unit(void)             /* uniform in (0, 1] */
{
    return ((double)(rng_next() >> 11) + 1.0) / 9007199254740992.0;
}

static double mean_service_us(void)
{
    return (1 - opt.long_frac) * opt.short_us + opt.long_frac * opt.long_us;
}

static void make_schedule(void)
{
    double rate_per_ns = opt.load / (mean_service_us() * 1000.0);
    double end_ns = (opt.warmup + opt.secs) * 1e9, t = 0;
    uint64_t cap = (uint64_t)(end_ns * rate_per_ns * 1.2) + 1000;
    reqs = calloc(cap, sizeof *reqs);
    if (!reqs)
        die("%s", "out of memory", 0);
    rng_state = opt.seed;
    for (;;) {
        t += -log(rng_unit()) / rate_per_ns;
        if (t >= end_ns)
            break;
        if (nreqs == cap) {
            cap *= 2;
            if (!(reqs = realloc(reqs, cap * sizeof *reqs)))
                die("%s", "out of memory", 0);
        }
        bool is_long = rng_unit() <= opt.long_frac;
        reqs[nreqs++] = (struct req){(uint64_t)t, 0, is_long ? opt.long_us : opt.short_us};
    }
}

/* ---- Connections -------------------------------------------------------- */

static void connect_all(int ep)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    for (unsigned i = 0; i < opt.conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("%s", "socket", errno);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
            die("%s", "connect", errno);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("%s", "epoll_ctl", errno);
        conns[i].fd = fd;
    }
}

/* A connection with nothing outstanding, round-robin from the last one
 * used; else the one with the fewest outstanding. */
static unsigned pick_conn(void)
{
    static unsigned last;
    unsigned best = last, i;
    for (unsigned k = 1; k <= opt.conns; k++) {
        i = (last + k) % opt.conns;
        if (conns[i].outstanding == 0) {
            best = i;
            break;
        }
        if (conns[i].outstanding < conns[best].outstanding)
            best = i;
    }
    last = best;
    return best;
}

static void send_req(uint64_t id)
{
    struct conn *c = &conns[pick_conn()];
    struct bimodal_msg m = {id, reqs[id].service_us, BIMODAL_MAGIC};
    ssize_t n;
    do
        n = send(c->fd, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof m)   /* 16 bytes into a socket buffer of >= 16 KiB */
        die("%s", n < 0 ? "send" : "send: short write (the server stopped reading)",
            n < 0 ? errno : 0);
    c->outstanding++;
}

/* Read what c has; returns the answers completed. */
static uint64_t receive(struct conn *c)
{
    uint64_t done = 0;
    for (;;) {
        ssize_t n = recv(c->fd, c->rx + c->rx_len, sizeof c->rx - c->rx_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return done;
        if (n <= 0)
            die("%s", n == 0 ? "the server closed a connection" : "recv", n == 0 ? 0 : errno);
        uint64_t now = mono_ns() - t_start;
        c->rx_len += (uint32_t)n;
        uint32_t off = 0;
        for (; c->rx_len - off >= sizeof(struct bimodal_msg); off += sizeof(struct bimodal_msg)) {
            struct bimodal_msg m;
            memcpy(&m, c->rx + off, sizeof m);
            if (m.magic != BIMODAL_MAGIC || m.id >= nreqs || reqs[m.id].done_ns ||
                m.service_us != reqs[m.id].service_us || c->outstanding == 0)
                die("%s", "a malformed or unexpected answer", 0);
            reqs[m.id].done_ns = now ? now : 1;
            c->outstanding--;
            done++;
        }
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
}

static void run(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("%s", "epoll_create1", errno);
    connect_all(ep);
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    struct epoll_event evs[64];
    uint64_t next = 0, answered = 0, drain_end = 0;
    t_start = mono_ns();
    for (;;) {
        uint64_t now = mono_ns() - t_start;
        while (next < nreqs && reqs[next].at_ns <= now)
            send_req(next++);
        if (next == nreqs) {
            if (answered == nreqs)
                break;
            if (!drain_end)
                drain_end = now + (uint64_t)(DRAIN_S * 1e9);
            if (now >= drain_end)
                break;
        }
        uint64_t until = next < nreqs ? reqs[next].at_ns : drain_end;
        uint64_t wait = until > now + SPIN_NS ? until - now - SPIN_NS / 2 : 0;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        int n = epoll_pwait2(ep, evs, 64, &ts, NULL);
        if (n < 0 && errno != EINTR)
            die("%s", "epoll_pwait2", errno);
        for (int i = 0; i < n; i++)
            answered += receive(&conns[evs[i].data.u32]);
    }
    for (unsigned i = 0; i < opt.conns; i++)
        close(conns[i].fd);
    close(ep);
}

/* ---- Report ------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank, in us; UINT64_MAX (unanswered) prints as inf. */
static void pct(const char *name, uint64_t *v, uint64_t n, double p)
{
    if (n == 0) {
        printf(" %s=n/a", name);
        return;
    }
    uint64_t k = (uint64_t)ceil(p * (double)n);
    uint64_t x = v[k ? k - 1 : 0];
    if (x == UINT64_MAX)
        printf(" %s=inf", name);
    else
        printf(" %s=%.1f", name, (double)x / 1000.0);
}

static void report(void)
{
    uint64_t *all = malloc(nreqs * sizeof *all), *shorts = malloc(nreqs * sizeof *shorts),
             *longs = malloc(nreqs * sizeof *longs);
    if (!all || !shorts || !longs)
        die("%s", "out of memory", 0);
    uint64_t na = 0, ns = 0, nl = 0, errors = 0, first = UINT64_MAX, last = 0, counted = 0;
    uint64_t warm_ns = (uint64_t)(opt.warmup * 1e9);
    for (uint64_t i = 0; i < nreqs; i++) {
        struct req *r = &reqs[i];
        if (r->at_ns < warm_ns)
            continue;
        uint64_t lat = UINT64_MAX;
        if (r->done_ns) {
            lat = r->done_ns - r->at_ns;
            counted++;
            if (r->done_ns > last)
                last = r->done_ns;
        } else {
            errors++;
        }
        if (r->at_ns < first)
            first = r->at_ns;
        all[na++] = lat;
        if (r->service_us == opt.short_us && opt.short_us != opt.long_us)
            shorts[ns++] = lat;
        else
            longs[nl++] = lat;
    }
    qsort(all, na, sizeof *all, cmp_u64);
    qsort(shorts, ns, sizeof *shorts, cmp_u64);
    qsort(longs, nl, sizeof *longs, cmp_u64);
    double rate = opt.load / mean_service_us() * 1e6;
    printf("load=%g offered_rps=%.0f reqs=%llu long=%llu", opt.load * 100, rate,
           (unsigned long long)na, (unsigned long long)nl);
    pct("short_p50_us", shorts, ns, 0.5);
    pct("short_p99_us", shorts, ns, 0.99);
    pct("short_p999_us", shorts, ns, 0.999);
    pct("all_p50_us", all, na, 0.5);
    pct("all_p99_us", all, na, 0.99);
    pct("all_p999_us", all, na, 0.999);
    pct("long_p50_us", longs, nl, 0.5);
    double span = last > first ? (double)(last - first) / 1e9 : 0;
    printf(" tput_rps=%.0f errors=%llu\n", span > 0 ? (double)counted / span : 0.0,
           (unsigned long long)errors);
    free(all);
    free(shorts);
    free(longs);
}

/* ---- Setup -------------------------------------------------------------- */

static double num(const char *s, const char *what, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die("bad %s", what, 0);
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"load", required_argument, NULL, 'l'},
        {"conns", required_argument, NULL, 'c'},
        {"secs", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"short-us", required_argument, NULL, 's'},
        {"long-us", required_argument, NULL, 'L'},
        {"long-frac", required_argument, NULL, 'f'},
        {"seed", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': opt.port = (int)num(optarg, "port", 1, 65535); break;
        case 'l': opt.load = num(optarg, "load", 0.01, 1000) / 100; break;
        case 'c': opt.conns = (unsigned)num(optarg, "conns", 1, MAX_CONNS); break;
        case 'd': opt.secs = num(optarg, "secs", 0.01, 3600); break;
        case 'w': opt.warmup = num(optarg, "warmup", 0, 3600); break;
        case 's': opt.short_us = (uint32_t)num(optarg, "short-us", 1, 1e7); break;
        case 'L': opt.long_us = (uint32_t)num(optarg, "long-us", 1, 1e7); break;
        case 'f': opt.long_frac = num(optarg, "long-frac", 0, 1); break;
        case 'k': opt.seed = (uint64_t)num(optarg, "seed", 0, 1e15); break;
        default: opt.port = 0; optind = argc; break;
        }
    }
    if (opt.port == 0 || opt.load < 0 || optind != argc) {
        fprintf(stderr, "usage: bimodal_load --port N --load PCT [--conns C] [--secs D] "
                        "[--warmup W] [--short-us S] [--long-us L] [--long-frac F] [--seed K]\n");
        return 1;
    }
    if (!(conns = calloc(opt.conns, sizeof *conns)))
        die("%s", "out of memory", 0);
    make_schedule();
    run();
    report();
    return 0;
}
