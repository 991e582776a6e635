/* bimodal_server: the server of the bimodal table (bench/bimodal_bench.sh):
 * requests that name their own service time, one thread per connection.
 *
 *     bimodal_server [--port N] [--pthreads]
 *
 * The protocol is fixed-size binary, host byte order (client and server run
 * on one machine): a request is 16 bytes, { uint64 id; uint32 service_us;
 * uint32 magic }, and the answer is the same 16 bytes, written back once the
 * service is done.  A connection may carry several requests in a row; they
 * are served in order.
 *
 * The service is a busy computation in this program's own code: service_us
 * calls of work_chunk(), each a calibrated number of xorshift64 steps that
 * takes about one microsecond on this CPU.  A fixed amount of work, not a
 * clock deadline: time spent preempted does not count as service, so a
 * request that waits behind others does not shrink.  The loop calls no
 * library: a preemption by signal may land anywhere in it, and built with
 * -finstrument-functions (bimodal_server_budget) every work_chunk() entry is
 * one reduction, so GREEN_BUDGET=100 ends a slice after ~100 us of work.
 *
 * Calibration, at start, before listening: the steps one work_chunk() takes
 * are measured over a few 2 ms trials and the fastest trial wins (the others
 * were interrupted); printed on stderr as "calibrated: N steps/us".  The Go
 * peer (go_bench bimodal_server) calibrates its own loop the same way.
 *
 * Written with plain blocking calls, as examples/echo_server.c: default
 * mode runs on green threads (green_run; the acceptor is the main green
 * thread, each connection a detached green thread) and is meant to run
 * under the preload shim, which parks a green thread whose read() would
 * block; --pthreads runs the same code on one pthread per connection (64 KiB
 * stacks).  Chosen over green_fd_wait on non-blocking sockets so that both
 * peers run the very same source, and because this is how the README tells
 * a program to use libgreen; the shim's cost per request is the same two
 * system calls a pthread pays (a read and a write).
 *
 * Once listening it prints "listening on 127.0.0.1:PORT" on stdout, and it
 * serves until killed.  Environment: GREEN_* (workers, quantum, preemption
 * mode, budget).  The script pins it to one CPU with taskset.
 */
#define _GNU_SOURCE
#include <green.h>

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bimodal.h"

#define PTHREAD_STACK ((size_t)64 << 10)
#define CAL_TRIALS 8
#define CAL_TRIAL_NS 2000000u

static struct {
    int port;
    bool pthreads;
    pthread_attr_t attr;
    uint64_t steps_per_us;               /* set by calibrate(), then read-only */
} opt;

static volatile uint64_t sink;           /* keeps the work from being elided */

static void die(const char *what, int err)
{
    fprintf(stderr, "bimodal_server: %s: %s\n", what, strerror(err));
    exit(1);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- The work ----------------------------------------------------------- */

/* n xorshift64 steps: a serial chain in registers, no call, no closed form. */
static __attribute__((noinline)) uint64_t work_chunk(uint64_t x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static __attribute__((noinline)) void serve_for(uint32_t us, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (uint32_t i = 0; i < us; i++)
        x = work_chunk(x, opt.steps_per_us);
    sink = x;
}

/* The fastest of a few trials: the others were interrupted by something. */
static void calibrate(void)
{
    uint64_t best = 0, n = 1000, x = 88172645463325252u;
    for (int t = 0; t < CAL_TRIALS; t++) {
        uint64_t steps = 0, t0 = mono_ns(), dt;
        do {
            x = work_chunk(x, n);
            steps += n;
            dt = mono_ns() - t0;
        } while (dt < CAL_TRIAL_NS);
        uint64_t per_us = steps * 1000 / dt;
        if (per_us > best)
            best = per_us;
    }
    sink = x;
    opt.steps_per_us = best ? best : 1;
    fprintf(stderr, "bimodal_server: calibrated: %llu steps/us\n",
            (unsigned long long)opt.steps_per_us);
}

/* ---- A connection ------------------------------------------------------- */

static int read_full(int fd, void *buf, size_t len)  /* 0, or -1 at EOF/error */
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct bimodal_msg m;
    while (read_full(fd, &m, sizeof m) == 0 && m.magic == BIMODAL_MAGIC) {
        serve_for(m.service_us, m.id);
        if (write_all(fd, &m, sizeof m) != 0)
            break;
    }
    close(fd);
    return NULL;
}

/* ---- The acceptor ------------------------------------------------------- */

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
    if (listen(fd, 1024) != 0)
        die("listen", errno);
    if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        die("getsockname", errno);
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

static void *acceptor(void *unused)
{
    (void)unused;
    int lfd = listen_on(opt.port), one = 1;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept", errno);
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        void *arg = (void *)(intptr_t)fd;
        int err;
        if (opt.pthreads) {
            pthread_t t;
            err = pthread_create(&t, &opt.attr, serve, arg);
        } else {
            err = green_spawn(NULL, serve, arg);
        }
        if (err)
            die("cannot start a thread", err);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"pthreads", no_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    int c, err;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.pthreads = true; break;
        default:
            fprintf(stderr, "usage: bimodal_server [--port N] [--pthreads]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    calibrate();
    if (opt.pthreads) {
        if ((err = pthread_attr_init(&opt.attr)) != 0 ||
            (err = pthread_attr_setdetachstate(&opt.attr, PTHREAD_CREATE_DETACHED)) != 0 ||
            (err = pthread_attr_setstacksize(&opt.attr, PTHREAD_STACK)) != 0)
            die("pthread_attr", err);
        acceptor(NULL);
    } else if ((err = green_run(acceptor, NULL, NULL, NULL)) != 0) {
        die("green_run", err);
    }
    return 0;
}
