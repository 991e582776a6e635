/*
 * libgreen-preload: ordinary blocking calls park green threads.
 *
 *     LD_PRELOAD=libgreen-preload.so ./server
 *
 * Every name below is defined here and found before libc's (the shim is
 * preloaded, or linked ahead of libc).  On a green thread a call that would
 * block parks the thread instead, through libgreen's public API
 * (green_fd_wait, green_poll, green_sleep_ns, green_offload); on any other
 * thread it passes straight through to the next definition (libc's),
 * found with dlsym(RTLD_NEXT).
 *
 * File descriptors.  The first time a green thread makes a blocking call on
 * an fd, the shim looks at it (fstat, F_GETFL) and files it under a kind:
 *
 *   POLL   sockets, pipes, FIFOs, eventfds and other pollable files the
 *          process owns: the shim sets O_NONBLOCK on the file and, when a
 *          call says EAGAIN, waits with green_fd_wait and retries.
 *   WAIT   terminals and other character devices, whose file may be shared
 *          with other processes (a shell): the flags stay as they are; the
 *          shim waits until poll() says ready, then makes the call.
 *   FILE   regular files, block devices, directories (never "not ready"
 *          but may still block on the disk): read/write run on the
 *          offload pool (green_offload).
 *
 * What the program set itself is kept per fd: whether it asked for
 * O_NONBLOCK (fcntl F_SETFL, ioctl FIONBIO, accept4 SOCK_NONBLOCK) --
 * F_GETFL reports that, and such an fd still gets EAGAIN -- and its
 * SO_RCVTIMEO / SO_SNDTIMEO, which become the deadline of the wait (EAGAIN
 * when it passes, as the kernel says).  A plain thread using an fd the shim
 * made non-blocking gets the blocking behaviour back: on EAGAIN it waits in
 * poll() and retries.  dup, dup2, dup3 and F_DUPFD copy the record; close
 * and dup2/dup3 onto an fd wake the green threads waiting on it with EBADF
 * (green_fd_forget) and drop the record.
 *
 * Limits (README "Blocking calls"):
 *   - libc's internal calls (stdio's writes, fclose's close...) do not go
 *     through these names: a printf on a green thread blocks its worker as
 *     it always did, and an fd closed by fclose keeps its record until its
 *     number is used by a call made here... which may then misjudge it.
 *   - O_NONBLOCK is a property of the open file, shared by every fd and
 *     process that has it: a socket or pipe a green thread used is
 *     non-blocking for a child process that inherits it, too.
 *   - On a green thread a call never fails with EINTR: a signal runs its
 *     handler on the worker, not in the parked thread.  ppoll's and
 *     pselect's signal masks are ignored there.  A plain thread waiting
 *     in the shim's poll() for an fd the shim made non-blocking resumes
 *     its wait after a signal, as with SA_RESTART.
 */
#define _GNU_SOURCE
#include "green.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SHIM __attribute__((visibility("default")))

/* ---- The next definitions ------------------------------------------------ */

static struct {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                   const sigset_t *);
    unsigned (*sleep)(unsigned);
    int (*usleep)(useconds_t);
    int (*nanosleep)(const struct timespec *, struct timespec *);
    int (*clock_nanosleep)(clockid_t, int, const struct timespec *, struct timespec *);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*getaddrinfo)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);
    int (*getnameinfo)(const struct sockaddr *, socklen_t, char *, socklen_t, char *,
                       socklen_t, int);
} next;

static pthread_once_t next_once = PTHREAD_ONCE_INIT;

static void *find(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        /* Nothing sensible can run without it: say which, and stop. */
        fprintf(stderr, "libgreen-preload: dlsym(RTLD_NEXT, \"%s\") failed\n", name);
        abort();
    }
    return p;
}

static void find_all(void)
{
#define FIND(name) (*(void **)&next.name = find(#name))
    FIND(read); FIND(write); FIND(readv); FIND(writev);
    FIND(recv); FIND(recvfrom); FIND(recvmsg);
    FIND(send); FIND(sendto); FIND(sendmsg);
    FIND(accept); FIND(accept4); FIND(connect);
    FIND(poll); FIND(ppoll); FIND(select); FIND(pselect);
    FIND(sleep); FIND(usleep); FIND(nanosleep); FIND(clock_nanosleep);
    FIND(fcntl); FIND(fcntl64); FIND(ioctl); FIND(setsockopt);
    FIND(close); FIND(dup); FIND(dup2); FIND(dup3);
    FIND(getaddrinfo); FIND(getnameinfo);
#undef FIND
}

/* next.name, resolved at the first call of any of them (a constructor may
 * run too late: other libraries' constructors make calls too). */
#define NEXT(name) (*(__builtin_expect(next.name != NULL, 1) ? &next : (pthread_once(&next_once, find_all), &next))).name

static inline bool on_green(void) { return green_worker_index() >= 0; }

/* errno, read and written afresh: after a call that parks, the thread may
 * run on another worker, whose errno is elsewhere -- and a compiler may
 * keep &errno from before the call (README, "Thread-local storage"). */
__attribute__((noinline)) static int get_errno(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

__attribute__((noinline)) static void set_errno(int e)
{
    __asm__ volatile("" : : : "memory");
    errno = e;
}

/* ---- What the shim knows of each fd ------------------------------------- */

enum { KIND_NONE = 0, KIND_POLL = 1, KIND_WAIT = 2, KIND_FILE = 3 };
#define KIND_MASK 3u
#define USER_NB 4u          /* the program asked for O_NONBLOCK */
#define STREAM 8u           /* a byte stream: a pipe, a FIFO, a SOCK_STREAM socket */
#define DRAINED 16u         /* its last read came back short (see io_drained) */

struct fdinfo {
    _Atomic uint32_t word;             /* kind | USER_NB; 0: not looked at */
    _Atomic int64_t rcvtimeo, sndtimeo;/* ns; 0: none */
};

#define CHUNK 4096u
static _Atomic(struct fdinfo *) *chunks;
static size_t nchunks;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
    struct rlimit rl;
    size_t fds = (size_t)1 << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > fds)
        fds = rl.rlim_max;
    if (fds > (size_t)1 << 26)
        fds = (size_t)1 << 26;
    chunks = calloc((fds + CHUNK - 1) / CHUNK, sizeof *chunks);
    if (chunks)
        nchunks = (fds + CHUNK - 1) / CHUNK;
}

/* fd's record; made if `make`.  NULL: out of range, or no memory (the fd is
 * then passed through, as on a plain thread). */
static struct fdinfo *info(int fd, bool make)
{
    pthread_once(&table_once, table_init);
    size_t c = (size_t)fd / CHUNK;
    if (fd < 0 || c >= nchunks)
        return NULL;
    struct fdinfo *chunk = atomic_load_explicit(&chunks[c], memory_order_acquire);
    if (!chunk && make) {
        struct fdinfo *fresh = calloc(CHUNK, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong(&chunks[c], &chunk, fresh))
            chunk = fresh;
        else
            free(fresh);
    }
    return chunk ? &chunk[(size_t)fd % CHUNK] : NULL;
}

/* Done at load too, for calls made where nothing may be allocated or locked
 * (libunwind reads a pipe in libgreen's signal handler); calls made first,
 * by other constructors, do it themselves. */
__attribute__((constructor)) static void shim_init(void)
{
    pthread_once(&next_once, find_all);
    pthread_once(&table_once, table_init);
}

static uint32_t word_of(int fd)
{
    struct fdinfo *fi = info(fd, false);
    return fi ? atomic_load_explicit(&fi->word, memory_order_relaxed) : 0;
}

static void forget(int fd)
{
    struct fdinfo *fi = info(fd, false);
    if (fi) {
        atomic_store(&fi->word, 0);
        atomic_store(&fi->rcvtimeo, 0);
        atomic_store(&fi->sndtimeo, 0);
    }
}

/* to's record becomes from's (a dup). */
static void copy_info(int from, int to)
{
    struct fdinfo *a = info(from, false), *b = info(to, a != NULL);
    if (!b)
        return;
    atomic_store(&b->word, a ? atomic_load(&a->word) : 0);
    atomic_store(&b->rcvtimeo, a ? atomic_load(&a->rcvtimeo) : 0);
    atomic_store(&b->sndtimeo, a ? atomic_load(&a->sndtimeo) : 0);
}

static int sock_type(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : -1;
}

/* On a green thread: fd's kind, looked at now if never before.  0 when fd
 * is not open (the call then gets the kernel's EBADF) or has no record. */
static uint32_t classify(int fd)
{
    struct fdinfo *fi = info(fd, true);
    if (!fi)
        return 0;
    uint32_t word = atomic_load_explicit(&fi->word, memory_order_relaxed);
    if (word)
        return word;
    int fl = NEXT(fcntl)(fd, F_GETFL);
    struct stat st;
    if (fl < 0 || fstat(fd, &st) != 0)
        return 0;
    uint32_t kind;
    switch (st.st_mode & S_IFMT) {
    case S_IFREG: case S_IFBLK: case S_IFDIR:
        kind = KIND_FILE;
        break;
    case S_IFCHR:
        kind = KIND_WAIT;
        break;
    default:                         /* sockets, FIFOs, eventfd, timerfd... */
        kind = KIND_POLL;
        if (S_ISFIFO(st.st_mode) || (S_ISSOCK(st.st_mode) && sock_type(fd) == SOCK_STREAM))
            kind |= STREAM;
        if (!(fl & O_NONBLOCK) && NEXT(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) != 0)
            kind = KIND_WAIT;
        break;
    }
    word = kind | ((fl & O_NONBLOCK) ? USER_NB : 0);
    uint32_t none = 0;
    if (!atomic_compare_exchange_strong(&fi->word, &none, word))
        word = none;                 /* another thread looked first */
    return word;
}

/* ---- Waiting as a blocking call would ---------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One blocking call in progress on fd. */
struct io {
    int fd;
    short events;                    /* POLLIN or POLLOUT */
    bool green;
    bool timed;                      /* deadline computed */
    uint32_t word;                   /* what the shim knows of fd */
    uint64_t deadline;               /* from SO_RCVTIMEO / SO_SNDTIMEO */
};

/* How to make a call on fd that may block waiting for `events`:
 *   KIND_POLL  make it (fd is non-blocking) and, on EAGAIN, io_again;
 *   KIND_FILE  offload it (green threads only);
 *   0          make it as it is: pass-through (not ours, or the program
 *              wants EAGAIN), or a WAIT fd that is now ready. */
static uint32_t io_begin(struct io *io, int fd, short events)
{
    *io = (struct io){ .fd = fd, .events = events, .green = on_green() };
    uint32_t word = io->word = io->green ? classify(fd) : word_of(fd);
    if (!word || (word & USER_NB))
        return 0;
    uint32_t kind = word & KIND_MASK;
    if (kind == KIND_WAIT) {
        /* Wait until a zero-timeout poll says ready, then make the call:
         * green_poll does exactly that. */
        if (io->green) {
            struct pollfd p = { .fd = fd, .events = events };
            green_poll(&p, 1, GREEN_FOREVER, NULL);
        }
        return 0;
    }
    if (kind == KIND_FILE && !io->green)
        return 0;
    return kind;
}

/* A call on a KIND_POLL fd failed: wait if it said EAGAIN.  true: retry it;
 * false: return its failure (errno set: the call's, EAGAIN when the
 * program's timeout passed, EBADF when the fd was closed meanwhile). */
static bool io_again(struct io *io)
{
    int e = get_errno();
    if (e != EAGAIN && e != EWOULDBLOCK)
        return false;
    if (!io->timed) {
        struct fdinfo *fi = info(io->fd, false);
        int64_t t = !fi ? 0
                    : atomic_load(io->events == POLLOUT ? &fi->sndtimeo : &fi->rcvtimeo);
        io->deadline = t <= 0 ? GREEN_FOREVER
                              : (io->green ? green_now_ns() : now_ns()) + (uint64_t)t;
        io->timed = true;
    }
    if (io->green) {
        int err = green_fd_wait(io->fd, io->events, io->deadline);
        if (err == 0)
            return true;
        set_errno(err == ETIMEDOUT ? EAGAIN : err);
        return false;
    }
    for (;;) {
        int ms = -1;
        if (io->deadline != GREEN_FOREVER) {
            uint64_t now = now_ns();
            if (now >= io->deadline) {
                set_errno(EAGAIN);
                return false;
            }
            uint64_t left = (io->deadline - now + 999999) / 1000000;
            ms = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p = { .fd = io->fd, .events = io->events };
        int r = NEXT(poll)(&p, 1, ms);
        if (r > 0)
            return true;
        if (r < 0 && get_errno() != EINTR)
            return false;
    }
}

/* ---- Calls on the offload pool ------------------------------------------ */

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
    int err = green_offload(file_call_run, &c, NULL);
    if (err) {
        file_call_run(&c);           /* no pool thread: block here */
    }
    set_errno(c.err);
    return c.ret;
}

/* ---- Reading and writing ------------------------------------------------ */

/* The body of every call that reads or writes: make `call` as io_begin says,
 * retrying while io_again. */
/* Reads on a stream whose last read came back short.  That read drained
 * it, and every byte that arrives since makes an epoll edge: so on a green
 * thread the next read waits for the edge first -- no system call when it
 * has come already (green_fd_wait finds it recorded) -- rather than try,
 * get EAGAIN and wait.  One system call less per request of a
 * request/response protocol.  Not for datagrams: a short one says nothing
 * of the next.  false: the wait failed (errno set). */
static bool io_drained(struct io *io)
{
    struct fdinfo *fi = info(io->fd, false);
    if (!fi || !(atomic_fetch_and(&fi->word, ~DRAINED) & DRAINED))
        return true;
    set_errno(EAGAIN);
    return io_again(io);
}

static void io_note_short(struct io *io, ssize_t r, size_t want)
{
    struct fdinfo *fi;
    if (r > 0 && (size_t)r < want && (fi = info(io->fd, false)) != NULL)
        atomic_fetch_or(&fi->word, DRAINED);
}

/* The body of every call that reads or writes: make `call` as io_begin says,
 * retrying while io_again.  want: for a read, the bytes asked for (0: not
 * known, or not a plain read). */
#define IO_CALL(fd, events, want, call, file_expr)                             \
    do {                                                                       \
        struct io io_;                                                         \
        switch (io_begin(&io_, (fd), (events))) {                              \
        case KIND_POLL: {                                                      \
            ssize_t r_;                                                        \
            bool drains_ = (want) && io_.green && (io_.word & STREAM);         \
            if (drains_ && (io_.word & DRAINED) && !io_drained(&io_))          \
                return -1;                                                     \
            while ((r_ = (call)) < 0 && io_again(&io_))                        \
                ;                                                              \
            if (drains_)                                                       \
                io_note_short(&io_, r_, (want));                               \
            return r_;                                                         \
        }                                                                      \
        case KIND_FILE:                                                        \
            return (file_expr);                                                \
        default:                                                               \
            return (call);                                                     \
        }                                                                      \
    } while (0)

SHIM ssize_t read(int fd, void *buf, size_t n)
{
    IO_CALL(fd, POLLIN, n, NEXT(read)(fd, buf, n),
            file_call((struct file_call){ .op = OP_READ, .fd = fd, .buf = buf, .n = n }));
}

SHIM ssize_t write(int fd, const void *buf, size_t n)
{
    IO_CALL(fd, POLLOUT, 0, NEXT(write)(fd, buf, n),
            file_call((struct file_call){ .op = OP_WRITE, .fd = fd, .buf = (void *)buf,
                                          .n = n }));
}

SHIM ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    IO_CALL(fd, POLLIN, 0, NEXT(readv)(fd, iov, iovcnt),
            file_call((struct file_call){ .op = OP_READV, .fd = fd, .iov = iov,
                                          .iovcnt = iovcnt }));
}

SHIM ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    IO_CALL(fd, POLLOUT, 0, NEXT(writev)(fd, iov, iovcnt),
            file_call((struct file_call){ .op = OP_WRITEV, .fd = fd, .iov = iov,
                                          .iovcnt = iovcnt }));
}

/* The socket calls: MSG_DONTWAIT asks for EAGAIN, like O_NONBLOCK. */
#define SOCK_CALL(fd, events, flags, want, call)                               \
    do {                                                                       \
        if ((flags) & MSG_DONTWAIT)                                            \
            return (call);                                                     \
        IO_CALL(fd, events, (flags) & MSG_PEEK ? 0 : (want), call, (call));    \
    } while (0)

SHIM ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    SOCK_CALL(fd, POLLIN, flags, n, NEXT(recv)(fd, buf, n, flags));
}

SHIM ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *sa,
                      socklen_t *len)
{
    SOCK_CALL(fd, POLLIN, flags, n, NEXT(recvfrom)(fd, buf, n, flags, sa, len));
}

SHIM ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    SOCK_CALL(fd, POLLIN, flags, 0, NEXT(recvmsg)(fd, msg, flags));
}

SHIM ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    SOCK_CALL(fd, POLLOUT, flags, 0, NEXT(send)(fd, buf, n, flags));
}

SHIM ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                    const struct sockaddr *sa, socklen_t len)
{
    SOCK_CALL(fd, POLLOUT, flags, 0, NEXT(sendto)(fd, buf, n, flags, sa, len));
}

SHIM ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    SOCK_CALL(fd, POLLOUT, flags, 0, NEXT(sendmsg)(fd, msg, flags));
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

/* ---- Connections --------------------------------------------------------- */

SHIM int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    struct io io;
    int r;
    if (io_begin(&io, fd, POLLIN) != KIND_POLL) {
        r = NEXT(accept4)(fd, sa, len, flags);
        if (r >= 0)
            forget(r);
        return r;
    }
    /* The new socket is born non-blocking on a green thread, and filed. */
    int more = io.green ? SOCK_NONBLOCK : 0;
    while ((r = NEXT(accept4)(fd, sa, len, flags | more)) < 0 && io_again(&io))
        ;
    if (r >= 0) {
        struct fdinfo *fi = info(r, io.green);
        if (fi) {
            atomic_store(&fi->word, io.green ? KIND_POLL | (io.word & STREAM) |
                                                   ((flags & SOCK_NONBLOCK) ? USER_NB : 0)
                                             : 0);
            atomic_store(&fi->rcvtimeo, 0);
            atomic_store(&fi->sndtimeo, 0);
        }
    }
    return r;
}

SHIM int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    return accept4(fd, sa, len, 0);
}

SHIM int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    struct io io;
    if (io_begin(&io, fd, POLLOUT) != KIND_POLL)
        return NEXT(connect)(fd, sa, len);
    int r = NEXT(connect)(fd, sa, len);
    if (r == 0 || get_errno() != EINPROGRESS)
        return r;
    /* Wait for the outcome, as a blocking connect does; SO_SNDTIMEO
     * bounds it, and ends it with EINPROGRESS, as in the kernel.  A wake
     * may be early (an edge recorded for an earlier use of the number):
     * connected only once getpeername says so (Go checks the same way). */
    for (;;) {
        set_errno(EAGAIN);
        if (!io_again(&io)) {
            if (get_errno() == EAGAIN)
                set_errno(EINPROGRESS);
            return -1;
        }
        int err = 0;
        socklen_t elen = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            return -1;
        if (err) {
            set_errno(err);
            return -1;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
            return 0;
        if (get_errno() != ENOTCONN)
            return -1;
    }
}

/* ---- Waiting on many fds ------------------------------------------------- */

/* poll on a green thread: green_poll until deadline.  -1 and errno, or the
 * count of ready fds (0 at the deadline). */
static int green_poll_call(struct pollfd *fds, nfds_t n, uint64_t deadline)
{
    int ready = 0;
    int err = green_poll(fds, n, deadline, &ready);
    if (err == ETIMEDOUT)
        return 0;
    if (err) {
        set_errno(err);
        return -1;
    }
    return ready;
}

static uint64_t deadline_after_ts(const struct timespec *ts)
{
    if (!ts)
        return GREEN_FOREVER;
    return green_now_ns() + (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

static bool ts_ok(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

SHIM int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (timeout == 0 || !on_green())
        return NEXT(poll)(fds, n, timeout);
    uint64_t deadline =
        timeout < 0 ? GREEN_FOREVER : green_now_ns() + (uint64_t)timeout * 1000000u;
    return green_poll_call(fds, n, deadline);
}

SHIM int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    if ((ts && !ts_ok(ts)) || !on_green() || (ts && !ts->tv_sec && !ts->tv_nsec))
        return NEXT(ppoll)(fds, n, ts, mask);
    return green_poll_call(fds, n, deadline_after_ts(ts));
}

SHIM int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return poll(fds, n, timeout);
}

SHIM int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                     const sigset_t *mask, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return ppoll(fds, n, ts, mask);
}

/* select and pselect on a green thread: as poll, on the fds of the sets. */
static int green_select_call(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, uint64_t deadline)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        set_errno(EINVAL);
        return -1;
    }
    struct pollfd *p = malloc(((size_t)nfds + 1) * sizeof *p);
    if (!p) {
        set_errno(ENOMEM);
        return -1;
    }
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) |
                           (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                           (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
        if (ev)
            p[n++] = (struct pollfd){ .fd = fd, .events = ev };
    }
    int r = green_poll_call(p, n, deadline);
    if (r >= 0) {
        for (nfds_t i = 0; i < n; i++) {
            if (p[i].revents & POLLNVAL) {
                free(p);
                set_errno(EBADF);
                return -1;
            }
        }
        r = 0;
        for (nfds_t i = 0; i < n; i++) {
            int fd = p[i].fd;
            short re = p[i].revents;
            if (rd && FD_ISSET(fd, rd)) {
                if (re & (POLLIN | POLLHUP | POLLERR))
                    r++;
                else
                    FD_CLR(fd, rd);
            }
            if (wr && FD_ISSET(fd, wr)) {
                if (re & (POLLOUT | POLLERR))
                    r++;
                else
                    FD_CLR(fd, wr);
            }
            if (ex && FD_ISSET(fd, ex)) {
                if (re & POLLPRI)
                    r++;
                else
                    FD_CLR(fd, ex);
            }
        }
    }
    free(p);
    return r;
}

SHIM int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    if (!on_green() || (tv && ((!tv->tv_sec && !tv->tv_usec) || tv->tv_sec < 0 ||
                               tv->tv_usec < 0 || tv->tv_usec >= 1000000)))
        return NEXT(select)(nfds, rd, wr, ex, tv);
    uint64_t deadline = GREEN_FOREVER;
    if (tv)
        deadline = green_now_ns() + (uint64_t)tv->tv_sec * 1000000000u +
                   (uint64_t)tv->tv_usec * 1000u;
    int r = green_select_call(nfds, rd, wr, ex, deadline);
    if (tv && r >= 0) {
        /* Linux leaves the time not slept in *tv. */
        uint64_t now = green_now_ns(), left = now < deadline ? (deadline - now) / 1000u : 0;
        tv->tv_sec = (time_t)(left / 1000000u);
        tv->tv_usec = (suseconds_t)(left % 1000000u);
    }
    return r;
}

SHIM int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
                 const sigset_t *mask)
{
    if (!on_green() || (ts && (!ts_ok(ts) || (!ts->tv_sec && !ts->tv_nsec))))
        return NEXT(pselect)(nfds, rd, wr, ex, ts, mask);
    return green_select_call(nfds, rd, wr, ex, deadline_after_ts(ts));
}

/* ---- Sleeping ------------------------------------------------------------ */

SHIM unsigned sleep(unsigned s)
{
    if (!on_green())
        return NEXT(sleep)(s);
    green_sleep_ns((uint64_t)s * 1000000000u);
    return 0;
}

SHIM int usleep(useconds_t us)
{
    if (!on_green())
        return NEXT(usleep)(us);
    green_sleep_ns((uint64_t)us * 1000u);
    return 0;
}

SHIM int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!on_green() || !req || !ts_ok(req))
        return NEXT(nanosleep)(req, rem);
    green_sleep_ns((uint64_t)req->tv_sec * 1000000000u + (uint64_t)req->tv_nsec);
    return 0;
}

SHIM int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req,
                         struct timespec *rem)
{
    bool wall = clk == CLOCK_REALTIME || clk == CLOCK_MONOTONIC || clk == CLOCK_BOOTTIME ||
                clk == CLOCK_TAI;
    if (!on_green() || !wall || !req || !ts_ok(req) || (flags & ~TIMER_ABSTIME))
        return NEXT(clock_nanosleep)(clk, flags, req, rem);
    uint64_t ns = (uint64_t)req->tv_sec * 1000000000u + (uint64_t)req->tv_nsec;
    if (flags & TIMER_ABSTIME) {
        /* Until that time on clk: sleep the difference, and check again
         * (the wall clock may have been set meanwhile). */
        for (;;) {
            struct timespec now;
            clock_gettime(clk, &now);
            uint64_t n = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
            if (now.tv_sec < 0 || n >= ns)
                return 0;
            green_sleep_ns(ns - n);
        }
    }
    green_sleep_ns(ns);
    return 0;
}

/* ---- The calls that change what blocking means -------------------------- */

static int fcntl_shim(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    switch (cmd) {
    case F_GETFL: {
        int fl = real(fd, cmd);
        uint32_t word = word_of(fd);
        if (fl >= 0 && (word & KIND_MASK) == KIND_POLL)
            fl = (fl & ~O_NONBLOCK) | ((word & USER_NB) ? O_NONBLOCK : 0);
        return fl;
    }
    case F_SETFL: {
        /* A filed fd: remember what the program asked for; a POLL fd stays
         * non-blocking underneath. */
        int fl = (int)(intptr_t)arg;
        struct fdinfo *fi = info(fd, false);
        uint32_t word = fi ? atomic_load(&fi->word) : 0;
        if (!word)
            return real(fd, cmd, fl);
        int r = real(fd, cmd, (word & KIND_MASK) == KIND_POLL ? fl | O_NONBLOCK : fl);
        if (r == 0)
            atomic_store(&fi->word, (word & ~USER_NB) | ((fl & O_NONBLOCK) ? USER_NB : 0));
        return r;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int r = real(fd, cmd, (int)(intptr_t)arg);
        if (r >= 0)
            copy_info(fd, r);
        return r;
    }
    default:
        return real(fd, cmd, arg);
    }
}

SHIM int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_shim(NEXT(fcntl), fd, cmd, arg);
}

SHIM int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_shim(NEXT(fcntl64), fd, cmd, arg);
}

SHIM int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    struct fdinfo *fi = req == FIONBIO ? info(fd, false) : NULL;
    uint32_t word = fi ? atomic_load(&fi->word) : 0;
    if (!word || !arg)
        return NEXT(ioctl)(fd, req, arg);
    int on = 1, r = NEXT(ioctl)(fd, req, (word & KIND_MASK) == KIND_POLL ? &on : arg);
    if (r == 0)
        atomic_store(&fi->word, (word & ~USER_NB) | (*(const int *)arg ? USER_NB : 0));
    return r;
}

SHIM int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int r = NEXT(setsockopt)(fd, level, name, val, len);
    bool rcv = name == SO_RCVTIMEO, snd = name == SO_SNDTIMEO;
    if (r != 0 || level != SOL_SOCKET || !(rcv || snd) || len < sizeof(struct timeval))
        return r;
    const struct timeval *tv = val;
    struct fdinfo *fi = info(fd, true);
    if (fi) {
        int64_t ns = (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000;
        atomic_store(rcv ? &fi->rcvtimeo : &fi->sndtimeo, ns > 0 ? ns : 0);
    }
    return r;
}

SHIM int close(int fd)
{
    forget(fd);
    green_fd_forget(fd);
    return NEXT(close)(fd);
}

SHIM int dup(int fd)
{
    int r = NEXT(dup)(fd);
    if (r >= 0)
        copy_info(fd, r);
    return r;
}

/* dup2 / dup3 onto an open fd close it first: its waiters get EBADF. */
static int dup_onto(int r, int fd, int to)
{
    if (r >= 0 && fd != to) {
        green_fd_forget(to);
        copy_info(fd, to);
    }
    return r;
}

SHIM int dup2(int fd, int to)
{
    return dup_onto(NEXT(dup2)(fd, to), fd, to);
}

SHIM int dup3(int fd, int to, int flags)
{
    return dup_onto(NEXT(dup3)(fd, to, flags), fd, to);
}

/* ---- Name lookups, on the offload pool ---------------------------------- */

struct lookup {
    const char *node, *service;
    const struct addrinfo *hints;
    struct addrinfo **res;
    const struct sockaddr *sa;
    socklen_t salen, hostlen, servlen;
    char *host, *serv;
    int flags, ret, err;
};

static void *getaddrinfo_run(void *arg)
{
    struct lookup *l = arg;
    l->ret = NEXT(getaddrinfo)(l->node, l->service, l->hints, l->res);
    l->err = errno;
    return NULL;
}

static void *getnameinfo_run(void *arg)
{
    struct lookup *l = arg;
    l->ret = NEXT(getnameinfo)(l->sa, l->salen, l->host, l->hostlen, l->serv, l->servlen,
                               l->flags);
    l->err = errno;
    return NULL;
}

SHIM int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                     struct addrinfo **res)
{
    struct lookup l = { .node = node, .service = service, .hints = hints, .res = res };
    if (!on_green() || green_offload(getaddrinfo_run, &l, NULL) != 0)
        return NEXT(getaddrinfo)(node, service, hints, res);
    set_errno(l.err);                   /* for EAI_SYSTEM */
    return l.ret;
}

SHIM int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                     char *serv, socklen_t servlen, int flags)
{
    struct lookup l = { .sa = sa, .salen = salen, .host = host, .hostlen = hostlen,
                        .serv = serv, .servlen = servlen, .flags = flags };
    if (!on_green() || green_offload(getnameinfo_run, &l, NULL) != 0)
        return NEXT(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    set_errno(l.err);
    return l.ret;
}
