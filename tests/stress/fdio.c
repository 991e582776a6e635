/* The stress program's fdio component: pipes through the netpoller (stress.c says what it checks). */
#define _GNU_SOURCE
#include "stress.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

/* ---- fdio: pipes through the netpoller ----------------------------------- */

/* Writers put numbered 4-byte records into non-blocking pipes (atomic
 * writes: a pipe never splits one), waiting with green_fd_wait when full,
 * sometimes with a short deadline that may pass; one reader per pipe reads
 * until EOF, waiting when empty.  Every record arrives exactly once.  The
 * last writer of a pipe closes its end with green_fd_close. */
#define FDIO_PIPES 4

struct fdio {
    struct round *r;
    int npipes, nwriters, per_writer;
    int fd[FDIO_PIPES][2];
    atomic_int writers_left[FDIO_PIPES];
    atomic_uchar *seen;          /* [nwriters * per_writer] */
    atomic_long received;
};

static int fdio_wait(struct round *r, int fd, int events, struct rng *g)
{
    uint64_t deadline = below(g, 4) == 0 ? green_now_ns() + below(g, 200) * US : GREEN_FOREVER;
    OP(r);
    int rc = green_fd_wait(fd, events, deadline);
    if (rc != 0 && rc != ETIMEDOUT)
        failf(r, "fdio: green_fd_wait returned %d (%s)", rc, strerror(rc));
    return rc;
}

static void *fdio_writer(void *arg)
{
    struct targ *a = arg;
    struct fdio *f = a->comp;
    struct round *r = f->r;
    struct rng g = {a->seed};
    int p = a->id % f->npipes;
    for (int i = 0; i < f->per_writer; i++) {
        uint32_t v = (uint32_t)(a->id * f->per_writer + i);
        for (;;) {
            OP(r);
            ssize_t n = write(f->fd[p][1], &v, sizeof v);
            if (n == sizeof v)
                break;
            int e = errno_now();
            if (n >= 0 || e != EAGAIN)
                failf(r, "fdio: write returned %zd (%s)", n, n < 0 ? strerror(e) : "short");
            fdio_wait(r, f->fd[p][1], POLLOUT, &g);
        }
        maybe_yield(&g);
    }
    if (atomic_fetch_sub(&f->writers_left[p], 1) == 1)
        expect_rc(r, green_fd_close(f->fd[p][1]), 0, "green_fd_close");
    thread_done(r);
    return NULL;
}

static void *fdio_reader(void *arg)
{
    struct targ *a = arg;
    struct fdio *f = a->comp;
    struct round *r = f->r;
    struct rng g = {a->seed};
    int fd = f->fd[a->id][0];
    uint32_t buf[64];
    size_t total = (size_t)f->nwriters * (size_t)f->per_writer;
    for (;;) {
        OP(r);
        ssize_t n = read(fd, buf, (size_t)between(&g, 1, 64) * sizeof buf[0]);
        if (n == 0)
            break;
        if (n < 0) {
            int e = errno_now();
            if (e != EAGAIN)
                failf(r, "fdio: read: %s", strerror(e));
            fdio_wait(r, fd, POLLIN, &g);
            continue;
        }
        if (n % sizeof buf[0])
            failf(r, "fdio: read %zd bytes, not whole records", n);
        for (size_t i = 0; i < (size_t)n / sizeof buf[0]; i++) {
            if (buf[i] >= total || atomic_exchange(&f->seen[buf[i]], 1))
                failf(r, "fdio: record %u out of range or received twice", buf[i]);
            atomic_fetch_add(&f->received, 1);
        }
    }
    expect_rc(r, green_fd_close(fd), 0, "green_fd_close");
    thread_done(r);
    return NULL;
}

void *fdio_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct fdio *f = calloc(1, sizeof *f);
    f->r = r;
    f->npipes = (int)between(&g, 1, FDIO_PIPES);
    f->nwriters = f->npipes * (int)between(&g, 1, 4);
    f->per_writer = (int)between(&g, 1, 2000);
    f->seen = calloc((size_t)f->nwriters * (size_t)f->per_writer, 1);
    for (int p = 0; p < f->npipes; p++) {
        OP(r);
        if (pipe2(f->fd[p], O_NONBLOCK | O_CLOEXEC) != 0)
            failf(r, "fdio: pipe2: %s", strerror(errno));
        atomic_store(&f->writers_left[p], f->nwriters / f->npipes);
    }
    struct targ *wa = targs(f, f->nwriters, &g), *ra = targs(f, f->npipes, &g);
    green_t *t = calloc((size_t)(f->nwriters + f->npipes), sizeof *t);
    for (int i = 0; i < f->npipes; i++)
        spawn(r, &t[i], fdio_reader, &ra[i]);
    for (int i = 0; i < f->nwriters; i++)
        spawn(r, &t[f->npipes + i], fdio_writer, &wa[i]);
    for (int i = 0; i < f->nwriters + f->npipes; i++)
        join(r, t[i], NULL);
    if (atomic_load(&f->received) != (long)f->nwriters * f->per_writer)
        failf(r, "fdio: %ld records received, %ld sent", atomic_load(&f->received),
              (long)f->nwriters * f->per_writer);
    free(t);
    free(wa);
    free(ra);
    free(f->seen);
    free(f);
    free(da);
    thread_done(r);
    return NULL;
}

