/*
 * Reading, writing, connecting: each call made non-blocking by itself.
 *
 * On a green thread, a call on a NOWAIT fd (fds.c) is made with a per-call
 * flag -- RWF_NOWAIT through preadv2/pwritev2 for read/write/readv/writev,
 * MSG_DONTWAIT for the socket calls -- and, when it says EAGAIN, the thread
 * parks in green_fd_wait until the fd is ready (or SO_RCVTIMEO /
 * SO_SNDTIMEO passes: EAGAIN, as the kernel says) and makes it again.  The
 * fd itself is never changed.  Then each call returns what the blocking call
 * would have:
 *
 *   - writes and sends on a stream write everything: a short write is
 *     followed by a wait and the rest (the continuation sends MSG_NOSIGNAL,
 *     since a blocking send that made progress returns its count, not
 *     SIGPIPE; control data goes with the first part only).  A timeout or
 *     an error after progress returns the count.
 *   - MSG_WAITALL on a stream loops until every byte, end of file, an
 *     error or the timeout; recvmsg stops after a part that carried
 *     control data, as the kernel's does.  With MSG_PEEK it waits until
 *     the whole count is queued or the peer has shut down.
 *   - accept has no per-call flag: ready first (conn.c).
 *   - connect, sendfile, splice and tee have none either (conn.c).
 *
 * A short read on a stream that DRAINS (TCP, plain pipes) drained it: every
 * byte that arrives since makes an epoll edge, so the next read waits for
 * the edge first -- no system call when it has come already -- instead of
 * trying, getting EAGAIN, and waiting: one system call less per request of
 * a request/response protocol.  Not for Unix streams (a read stops short
 * at a message that carries fds), datagrams, or O_DIRECT pipes.
 */
#include "shim.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

/* ---- Waiting ------------------------------------------------------------- */

int shim__io_begin(struct io *io, int fd, short events)
{
    *io = (struct io){ .fd = fd, .events = events };
    if (!shim__parks())
        return WAY_LIBC;
    uint32_t word = io->word = shim__classify(fd);
    if (!word || (word & USER_NB))
        return WAY_LIBC;
    switch (word & KIND_MASK) {
    case KIND_NOWAIT:
        return WAY_NOWAIT;
    case KIND_FILE:
        return WAY_FILE;
    default: {
        /* No per-call flag: until a zero-timeout poll says ready (which
         * green_poll does), then the call as it is. */
        struct pollfd p = { .fd = fd, .events = events };
        green_poll(&p, 1, GREEN_FOREVER, NULL);
        return WAY_LIBC;
    }
    }
}

/* A per-call non-blocking attempt failed: wait if it said EAGAIN.  true:
 * try again; false: return the failure (errno set: the call's, EAGAIN when
 * the program's timeout passed, EBADF when the fd was closed meanwhile). */
bool shim__io_again(struct io *io)
{
    int e = shim__get_errno();
    if (e != EAGAIN && e != EWOULDBLOCK)
        return false;
    if (!io->timed) {
        struct shim_fd *fi = shim__fd(io->fd, false);
        int64_t t = !fi ? 0
                        : atomic_load(io->events == POLLOUT ? &fi->sndtimeo : &fi->rcvtimeo);
        io->deadline = t <= 0 ? GREEN_FOREVER : shim__deadline_in(0, t);
        io->timed = true;
    }
    int err = green_fd_wait(io->fd, io->events, io->deadline);
    if (err == 0)
        return true;
    shim__set_errno(err == ETIMEDOUT ? EAGAIN : err);
    return false;
}

/* RWF_NOWAIT said EOPNOTSUPP: the file has no per-call flag (a FIFO, a
 * device).  From now on it is a WAIT fd; this call waits for readiness. */
static void no_nowait(struct io *io)
{
    struct shim_fd *fi = shim__fd(io->fd, false);
    uint32_t word = fi ? atomic_load(&fi->word) : 0;
    while ((word & KIND_MASK) == KIND_NOWAIT &&
           !atomic_compare_exchange_weak(&fi->word, &word,
                                         (word & ~(KIND_MASK | DRAINS)) | KIND_WAIT))
        ;
    struct pollfd p = { .fd = io->fd, .events = io->events };
    green_poll(&p, 1, GREEN_FOREVER, NULL);
}

/* ---- Reads ----------------------------------------------------------------- */

/* The last read drained the stream: wait for the edge that says more came.
 * false: the wait failed (errno set). */
static bool wait_drained(struct io *io)
{
    struct shim_fd *fi = shim__fd(io->fd, false);
    if (!fi || !(atomic_fetch_and(&fi->word, ~DRAINED) & DRAINED))
        return true;
    shim__set_errno(EAGAIN);
    return shim__io_again(io);
}

static void note_short(struct io *io, ssize_t r, size_t want)
{
    struct shim_fd *fi;
    if (r > 0 && (size_t)r < want && (fi = shim__fd(io->fd, false)) != NULL)
        atomic_fetch_or(&fi->word, DRAINED);
}

static size_t iov_len(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

#define PART_IOVS 64

/* What of iov[0..cnt) lies past its first `skip` bytes, at most PART_IOVS
 * entries of it, into part; returns how many. */
static int iov_rest(const struct iovec *iov, int cnt, size_t skip, struct iovec *part)
{
    int i = 0, n = 0;
    while (i < cnt && skip >= iov[i].iov_len)
        skip -= iov[i++].iov_len;
    for (; n < PART_IOVS && i + n < cnt; n++)
        part[n] = iov[i + n];
    if (n) {
        part[0].iov_base = (char *)part[0].iov_base + skip;
        part[0].iov_len -= skip;
    }
    return n;
}

/* read / readv on a NOWAIT fd. */
static ssize_t nowait_readv(struct io *io, const struct iovec *iov, int cnt)
{
    size_t want = (io->word & DRAINS) ? iov_len(iov, cnt) : 0;
    if (want && (io->word & DRAINED) && !wait_drained(io))
        return -1;
    ssize_t r;
    while ((r = preadv2(io->fd, iov, cnt, -1, RWF_NOWAIT)) < 0) {
        if (shim__get_errno() == EOPNOTSUPP && !(io->word & SOCKET)) {
            no_nowait(io);
            return NEXT(readv)(io->fd, iov, cnt);
        }
        if (!shim__io_again(io))
            return -1;
    }
    if (want)
        note_short(io, r, want);
    return r;
}

/* ---- Regular files, on the offload pool ---------------------------------- */

enum { OP_READ, OP_WRITE, OP_READV, OP_WRITEV };

struct file_call {
    int op, fd, iovcnt, err;
    void *buf;
    size_t n;
    const struct iovec *iov;
    ssize_t ret;
};

static void *file_call_run(void *arg)
{
    struct file_call *c = arg;
    switch (c->op) {
    case OP_READ: c->ret = NEXT(read)(c->fd, c->buf, c->n); break;
    case OP_WRITE: c->ret = NEXT(write)(c->fd, c->buf, c->n); break;
    case OP_READV: c->ret = NEXT(readv)(c->fd, c->iov, c->iovcnt); break;
    default: c->ret = NEXT(writev)(c->fd, c->iov, c->iovcnt); break;
    }
    c->err = errno;
    return NULL;
}

static ssize_t file_call(struct file_call c)
{
    shim__offload(file_call_run, &c);
    shim__set_errno(c.err);
    return c.ret;
}

/* ---- Writes: everything, as a blocking write ------------------------------- */

struct out {
    struct io io;
    const struct msghdr *msg;   /* the send's name and control data; NULL: a write */
    int flags;                  /* the send's flags */
};

static ssize_t out_try(struct out *o, const struct iovec *iov, int cnt, bool first)
{
    if (!(o->io.word & SOCKET) || (first && !o->msg))
        return pwritev2(o->io.fd, iov, cnt, -1, RWF_NOWAIT);
    struct msghdr m = o->msg ? *o->msg : (struct msghdr){ 0 };
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    if (!first) {
        m.msg_control = NULL;
        m.msg_controllen = 0;
    }
    return NEXT(sendmsg)(o->io.fd, &m, o->flags | MSG_DONTWAIT | (first ? 0 : MSG_NOSIGNAL));
}

/* Write all of iov[0..cnt) on a NOWAIT fd. */
static ssize_t out_all(struct out *o, const struct iovec *iov, int cnt)
{
    ssize_t r;
    while ((r = out_try(o, iov, cnt, true)) < 0) {
        if (shim__get_errno() == EOPNOTSUPP && !(o->io.word & SOCKET)) {
            no_nowait(&o->io);
            return NEXT(writev)(o->io.fd, iov, cnt);
        }
        if (!shim__io_again(&o->io))
            return -1;
    }
    size_t want = iov_len(iov, cnt), done = (size_t)r;
    if (done >= want || !(o->io.word & STREAM))
        return r;
    /* The rest, from where it stopped, a part at a time. */
    while (done < want) {
        struct iovec part[PART_IOVS];
        int n = iov_rest(iov, cnt, done, part);
        r = out_try(o, part, n, false);
        if (r > 0)
            done += (size_t)r;
        else if (r == 0 || !shim__io_again(&o->io))
            break;
    }
    return (ssize_t)done;
}

/* ---- read, write, readv, writev -------------------------------------------- */

SHIM ssize_t read(int fd, void *buf, size_t n)
{
    struct io io;
    switch (shim__io_begin(&io, fd, POLLIN)) {
    case WAY_NOWAIT:
        return nowait_readv(&io, &(struct iovec){ buf, n }, 1);
    case WAY_FILE:
        return file_call((struct file_call){ .op = OP_READ, .fd = fd, .buf = buf, .n = n });
    default:
        return NEXT(read)(fd, buf, n);
    }
}

SHIM ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    struct io io;
    switch (cnt < 0 || cnt > IOV_MAX ? WAY_LIBC : shim__io_begin(&io, fd, POLLIN)) {
    case WAY_NOWAIT:
        return nowait_readv(&io, iov, cnt);
    case WAY_FILE:
        return file_call((struct file_call){ .op = OP_READV, .fd = fd, .iov = iov,
                                             .iovcnt = cnt });
    default:
        return NEXT(readv)(fd, iov, cnt);
    }
}

SHIM ssize_t write(int fd, const void *buf, size_t n)
{
    struct out o = { 0 };
    switch (shim__io_begin(&o.io, fd, POLLOUT)) {
    case WAY_NOWAIT:
        return out_all(&o, &(struct iovec){ (void *)buf, n }, 1);
    case WAY_FILE:
        return file_call((struct file_call){ .op = OP_WRITE, .fd = fd, .buf = (void *)buf,
                                             .n = n });
    default:
        return NEXT(write)(fd, buf, n);
    }
}

SHIM ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    struct out o = { 0 };
    switch (cnt < 0 || cnt > IOV_MAX ? WAY_LIBC : shim__io_begin(&o.io, fd, POLLOUT)) {
    case WAY_NOWAIT:
        return out_all(&o, iov, cnt);
    case WAY_FILE:
        return file_call((struct file_call){ .op = OP_WRITEV, .fd = fd, .iov = iov,
                                             .iovcnt = cnt });
    default:
        return NEXT(writev)(fd, iov, cnt);
    }
}

/* ---- The socket calls ------------------------------------------------------- */

/* A socket call on a green thread that may wait: not MSG_DONTWAIT, a
 * socket the program left blocking. */
static bool sock_begin(struct io *io, int fd, short events, int flags)
{
    return !(flags & MSG_DONTWAIT) && shim__io_begin(io, fd, events) == WAY_NOWAIT &&
           (io->word & SOCKET);
}

/* The fds a message brought are new: forget what their numbers were. */
static void took_fds(const struct msghdr *msg)
{
    if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
        return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[n ? n : 1];
        memcpy(fds, CMSG_DATA(c), n * sizeof(int));
        for (size_t i = 0; i < n; i++)
            shim__born(fds[i], 0);
    }
}

/* MSG_PEEK|MSG_WAITALL came back short: has the peer shut down (then the
 * short peek is all there will be)? */
static bool peer_done(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
    return NEXT(poll)(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

SHIM ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *sa,
                      socklen_t *len)
{
    struct io io;
    if (!sock_begin(&io, fd, POLLIN, flags))
        return NEXT(recvfrom)(fd, buf, n, flags, sa, len);
    bool peek = flags & MSG_PEEK, all = (flags & MSG_WAITALL) && (io.word & STREAM);
    size_t want = !peek && (io.word & DRAINS) ? n : 0;
    if (want && (io.word & DRAINED) && !wait_drained(&io))
        return -1;
    int f = (flags & ~MSG_WAITALL) | MSG_DONTWAIT;
    size_t done = 0;
    for (;;) {
        ssize_t r = NEXT(recvfrom)(fd, (char *)buf + (peek ? 0 : done), n - (peek ? 0 : done),
                                   f, done ? NULL : sa, done ? NULL : len);
        if (r >= 0) {
            if (peek) {
                if (!all || (size_t)r == n || r == 0 || peer_done(fd))
                    return r;
                done = 0;
                shim__set_errno(EAGAIN);       /* wait for more to peek at */
            } else {
                done += (size_t)r;
                if (!all || r == 0 || done == n)
                    break;
                continue;
            }
        }
        if (!shim__io_again(&io)) {
            if (done)
                break;
            return -1;
        }
    }
    if (want)
        note_short(&io, (ssize_t)done, want);
    return (ssize_t)done;
}

SHIM ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    return recvfrom(fd, buf, n, flags, NULL, NULL);
}

SHIM ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct io io;
    if (!sock_begin(&io, fd, POLLIN, flags)) {
        ssize_t r = NEXT(recvmsg)(fd, msg, flags);
        if (r >= 0)
            took_fds(msg);
        return r;
    }
    size_t control = msg->msg_controllen;
    ssize_t r;
    while ((r = NEXT(recvmsg)(fd, msg, (flags & ~MSG_WAITALL) | MSG_DONTWAIT)) < 0)
        if (!shim__io_again(&io))
            return -1;
    took_fds(msg);
    size_t want = iov_len(msg->msg_iov, (int)msg->msg_iovlen), done = (size_t)r;
    if (!(flags & MSG_WAITALL) || (flags & MSG_PEEK) || !(io.word & STREAM) || r == 0 ||
        done >= want || msg->msg_controllen || (msg->msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return r;
    /* MSG_WAITALL: the rest, into what is left of the iovecs. */
    while (done < want) {
        struct iovec part[PART_IOVS];
        int k = iov_rest(msg->msg_iov, (int)msg->msg_iovlen, done, part);
        struct msghdr m = { .msg_iov = part, .msg_iovlen = (size_t)k,
                            .msg_control = msg->msg_control, .msg_controllen = control };
        r = NEXT(recvmsg)(fd, &m, (flags & ~MSG_WAITALL) | MSG_DONTWAIT);
        if (r > 0) {
            done += (size_t)r;
            msg->msg_flags |= m.msg_flags;
            if (m.msg_controllen) {          /* a part with fds ends it */
                msg->msg_controllen = m.msg_controllen;
                took_fds(msg);
                break;
            }
        } else if (r == 0 || !shim__io_again(&io)) {
            break;
        }
    }
    return (ssize_t)done;
}

SHIM ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct out o = { .msg = msg, .flags = flags };
    if ((flags & MSG_FASTOPEN) || !sock_begin(&o.io, fd, POLLOUT, flags))
        return NEXT(sendmsg)(fd, msg, flags);
    if (msg->msg_iovlen > IOV_MAX)
        return NEXT(sendmsg)(fd, msg, flags | MSG_DONTWAIT);   /* EMSGSIZE */
    return out_all(&o, msg->msg_iov, (int)msg->msg_iovlen);
}

SHIM ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa,
                    socklen_t len)
{
    struct iovec v = { (void *)buf, n };
    struct msghdr m = { .msg_name = (void *)sa, .msg_namelen = len, .msg_iov = &v,
                        .msg_iovlen = 1 };
    struct out o = { .msg = &m, .flags = flags };
    if ((flags & MSG_FASTOPEN) || !sock_begin(&o.io, fd, POLLOUT, flags))
        return NEXT(sendto)(fd, buf, n, flags, sa, len);
    return out_all(&o, &v, 1);
}

SHIM ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    return sendto(fd, buf, n, flags, NULL, 0);
}

/* recvmmsg blocks for vlen messages (MSG_WAITFORONE: for one); its timeout
 * is checked after each message that comes, as the kernel's is. */
SHIM int recvmmsg(int fd, struct mmsghdr *v, unsigned vlen, int flags, struct timespec *ts)
{
    struct io io;
    if (!sock_begin(&io, fd, POLLIN, flags) || vlen == 0 ||
        (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000))) {
        int r = NEXT(recvmmsg)(fd, v, vlen, flags, ts);
        for (int i = 0; i < r; i++)
            took_fds(&v[i].msg_hdr);
        return r;
    }
    uint64_t until = ts ? shim__deadline_in(ts->tv_sec, ts->tv_nsec) : GREEN_FOREVER;
    unsigned got = 0;
    while (got < vlen) {
        int r = NEXT(recvmmsg)(fd, v + got, vlen - got,
                               (flags & ~MSG_WAITFORONE) | MSG_DONTWAIT, NULL);
        if (r > 0) {
            for (int i = 0; i < r; i++)
                took_fds(&v[got + (unsigned)i].msg_hdr);
            got += (unsigned)r;
            if ((flags & MSG_WAITFORONE) || green_now_ns() >= until)
                break;
        } else if (r == 0 || !shim__io_again(&io)) {
            if (!got)
                return r;
            break;
        }
    }
    if (ts) {
        uint64_t now = green_now_ns(), left = now < until ? until - now : 0;
        ts->tv_sec = (time_t)(left / 1000000000u);
        ts->tv_nsec = (long)(left % 1000000000u);
    }
    return (int)got;
}

/* sendmmsg blocks until every message is sent, or an error after some. */
SHIM int sendmmsg(int fd, struct mmsghdr *v, unsigned vlen, int flags)
{
    struct io io;
    if (!sock_begin(&io, fd, POLLOUT, flags) || vlen == 0)
        return NEXT(sendmmsg)(fd, v, vlen, flags);
    unsigned sent = 0;
    while (sent < vlen) {
        int r = NEXT(sendmmsg)(fd, v + sent, vlen - sent, flags | MSG_DONTWAIT);
        if (r > 0) {
            sent += (unsigned)r;
            continue;
        }
        if (r == 0 || !shim__io_again(&io))
            return sent ? (int)sent : r;
    }
    return (int)sent;
}

/* _FORTIFY_SOURCE's checked forms, which libc serves without its plain
 * names: programs and libraries built with it call these. */
extern void __chk_fail(void) __attribute__((noreturn));

SHIM ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return read(fd, buf, n);
}

SHIM ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (n > buflen)
        __chk_fail();
    return recv(fd, buf, n, flags);
}

SHIM ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                            struct sockaddr *sa, socklen_t *len)
{
    if (n > buflen)
        __chk_fail();
    return recvfrom(fd, buf, n, flags, sa, len);
}
