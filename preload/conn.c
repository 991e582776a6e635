/*
 * The calls with no per-call non-blocking flag: accept, connect, and the
 * ones that move data between two fds inside the kernel.
 *
 * accept waits until the listener is ready (green_fd_wait), then takes the
 * connection -- after a zero-timeout poll, one green thread of the process
 * at a time per listener (ACCEPTING), so two green acceptors never race
 * each other into a blocking accept.  A thread outside libgreen or another
 * process that shares the listener can still take the connection between
 * the poll and the accept; the worker then blocks in accept until the next
 * one comes (README, "Blocking calls").
 *
 * connect (on anything but a datagram socket: a TCP handshake, a Unix
 * listener's full backlog), sendfile, splice and tee can block for
 * long and cannot be asked not to: on a green thread they run on the
 * offload pool, whose threads make the blocking call for the parked thread
 * -- unless every fd involved is O_NONBLOCK, when the program asked for
 * EAGAIN and gets it here.
 */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/sendfile.h>

/* ---- accept ------------------------------------------------------------------ */

/* Be the green thread that accepts on fd now.  false: another is. */
static bool accepting(struct shim_fd *fi, bool on)
{
    uint32_t word = atomic_load(&fi->word);
    if (!on) {
        atomic_fetch_and(&fi->word, ~ACCEPTING);
        return true;
    }
    return !(word & ACCEPTING) &&
           atomic_compare_exchange_strong(&fi->word, &word, word | ACCEPTING);
}

SHIM int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    struct io io;
    struct shim_fd *fi;
    if (shim__io_begin(&io, fd, POLLIN) != WAY_NOWAIT || !(io.word & SOCKET) ||
        !(fi = shim__fd(fd, false))) {
        int r = NEXT(accept4)(fd, sa, len, flags);
        if (r >= 0)
            shim__born(r, 0);
        return r;
    }
    for (;;) {
        if (accepting(fi, true)) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            int r = NEXT(poll)(&p, 1, 0) > 0 ? NEXT(accept4)(fd, sa, len, flags) : -2;
            int e = shim__get_errno();
            if (r >= 0)
                shim__born(r, 0);
            accepting(fi, false);
            if (r != -2) {
                shim__set_errno(e);
                return r;
            }
        }
        shim__set_errno(EAGAIN);
        if (!shim__io_again(&io))
            return -1;
    }
}

SHIM int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    return accept4(fd, sa, len, 0);
}

/* ---- On the offload pool ------------------------------------------------------ */

enum { OP_CONNECT, OP_SENDFILE, OP_SPLICE, OP_TEE };

struct pool_call {
    int op, fd, fd2, err;
    unsigned flags;
    const struct sockaddr *sa;
    socklen_t salen;
    off_t *off;
    loff_t *off_in, *off_out;
    size_t n;
    ssize_t ret;
};

static void *pool_run(void *arg)
{
    struct pool_call *c = arg;
    switch (c->op) {
    case OP_CONNECT: c->ret = NEXT(connect)(c->fd, c->sa, c->salen); break;
    case OP_SENDFILE: c->ret = NEXT(sendfile)(c->fd, c->fd2, c->off, c->n); break;
    case OP_SPLICE:
        c->ret = NEXT(splice)(c->fd, c->off_in, c->fd2, c->off_out, c->n, c->flags);
        break;
    default: c->ret = NEXT(tee)(c->fd, c->fd2, c->n, c->flags); break;
    }
    c->err = errno;
    return NULL;
}

static ssize_t pool_call(struct pool_call c)
{
    shim__offload(pool_run, &c);
    shim__set_errno(c.err);
    return c.ret;
}

/* fd may block a call: a green thread's, on an fd the program left
 * blocking. */
static bool may_block(int fd)
{
    return !(shim__classify(fd) & USER_NB);
}

SHIM int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    int type = -1;
    socklen_t tlen = sizeof type;
    if (!shim__parks() || !may_block(fd) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type == SOCK_DGRAM)
        return NEXT(connect)(fd, sa, len);
    return (int)pool_call((struct pool_call){ .op = OP_CONNECT, .fd = fd, .sa = sa,
                                              .salen = len });
}

SHIM ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    if (!shim__parks() || !(may_block(out) || may_block(in)))
        return NEXT(sendfile)(out, in, off, n);
    return pool_call((struct pool_call){ .op = OP_SENDFILE, .fd = out, .fd2 = in, .off = off,
                                         .n = n });
}

SHIM ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
    return sendfile(out, in, off, n);
}

SHIM ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t n,
                    unsigned flags)
{
    if (!shim__parks() || !(may_block(out) || may_block(in)))
        return NEXT(splice)(in, off_in, out, off_out, n, flags);
    return pool_call((struct pool_call){ .op = OP_SPLICE, .fd = in, .off_in = off_in,
                                         .fd2 = out, .off_out = off_out, .n = n,
                                         .flags = flags });
}

SHIM ssize_t tee(int in, int out, size_t n, unsigned flags)
{
    if (!shim__parks() || !(may_block(out) || may_block(in)))
        return NEXT(tee)(in, out, n, flags);
    return pool_call((struct pool_call){ .op = OP_TEE, .fd = in, .fd2 = out, .n = n,
                                         .flags = flags });
}
