/*
 * What the shim knows of each fd, and the calls that change it.
 *
 * The shim never changes an fd: its file status flags (O_NONBLOCK) belong
 * to the program, and to every process and libc routine that shares the
 * open file -- stdio, sendfile, a child that inherits it.  Instead, each
 * call a green thread makes is made non-blocking by itself (io.c), and the
 * shim keeps per fd number only what picks the way:
 *
 *   kind       NOWAIT  sockets, pipes, eventfd, timerfd: the call is made
 *                      with RWF_NOWAIT (preadv2/pwritev2) or MSG_DONTWAIT
 *                      and, on EAGAIN, waits for readiness and again;
 *              WAIT    no per-call flag exists (FIFOs, terminals,
 *                      inotify; found when RWF_NOWAIT says EOPNOTSUPP):
 *                      waits until poll says ready, then makes the call;
 *              FILE    regular files, block devices, directories: on the
 *                      offload pool.
 *   USER_NB    the file is O_NONBLOCK: calls are libc's, EAGAIN and all.
 *              Read at first use, then kept by fcntl(F_SETFL) and
 *              ioctl(FIONBIO) made through here.
 *   SOCKET, STREAM, DRAINS, DRAINED: what io.c needs to loop and to skip
 *              a read that would say EAGAIN.
 *   SO_RCVTIMEO, SO_SNDTIMEO: the deadline of a wait, as in the kernel.
 *
 * A record is made at the first call a green thread makes on the fd and
 * dropped when the number is closed or reused through here: close,
 * close_range, closefrom, fclose, dup2/dup3 onto it, or a new fd returned
 * by accept, socket, socketpair, pipe, pipe2 or a received SCM_RIGHTS.
 *
 * A close made inside one of the program's signal handlers is libc's
 * alone: it takes no lock and leaves libgreen's netpoller alone.  It marks
 * the record FORGET; the next green call on that number tells the
 * netpoller first.  (A thread already waiting on the closed fd goes on
 * waiting, as one blocked in read(2) does when another thread closes it.)
 *
 * Waiting for a lock: fcntl(F_SETLKW), fcntl(F_OFD_SETLKW) and flock
 * without LOCK_NB try once without waiting, then wait on the offload pool.
 * A POSIX lock belongs to the process and an OFD or flock lock to the open
 * file, never to a thread, so a pool thread may take it for the program.
 */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FORGET (1u << 31)   /* closed in a signal handler; tell the netpoller */

#define CHUNK 4096u
static _Atomic(struct shim_fd *) *chunks;
static size_t nchunks;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static atomic_bool table_ready;

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
    atomic_store_explicit(&table_ready, true, memory_order_release);
}

/* Done at load too, so that a call in a signal handler finds it done. */
__attribute__((constructor)) static void fds_init(void)
{
    pthread_once(&table_once, table_init);
}

/* fd's record; made if `make`.  NULL: out of range, or no memory (the fd is
 * then passed through, as on a plain thread).  AS-safe when !make. */
struct shim_fd *shim__fd(int fd, bool make)
{
    if (__builtin_expect(!atomic_load_explicit(&table_ready, memory_order_acquire), 0))
        pthread_once(&table_once, table_init);
    size_t c = (size_t)fd / CHUNK;
    if (fd < 0 || c >= nchunks)
        return NULL;
    struct shim_fd *chunk = atomic_load_explicit(&chunks[c], memory_order_acquire);
    if (!chunk && make) {
        struct shim_fd *fresh = calloc(CHUNK, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong(&chunks[c], &chunk, fresh))
            chunk = fresh;
        else
            free(fresh);
    }
    return chunk ? &chunk[(size_t)fd % CHUNK] : NULL;
}

uint32_t shim__word(int fd)
{
    struct shim_fd *fi = shim__fd(fd, false);
    return fi ? atomic_load_explicit(&fi->word, memory_order_relaxed) : 0;
}

/* AS-safe */
void shim__forget(int fd)
{
    struct shim_fd *fi = shim__fd(fd, false);
    if (fi) {
        atomic_store(&fi->word, 0);
        atomic_store(&fi->rcvtimeo, 0);
        atomic_store(&fi->sndtimeo, 0);
    }
}

/* fd is new (accept, socket, pipe...): forget what its number was, and
 * file it under word when word is not 0. */
void shim__born(int fd, uint32_t word)
{
    struct shim_fd *fi = shim__fd(fd, word != 0);
    if (fi) {
        atomic_store(&fi->rcvtimeo, 0);
        atomic_store(&fi->sndtimeo, 0);
        atomic_store(&fi->word, word);
    }
}

/* to's record becomes from's (a dup). */
static void copy_info(int from, int to)
{
    struct shim_fd *a = shim__fd(from, false), *b = shim__fd(to, a != NULL);
    if (!b)
        return;
    atomic_store(&b->word, a ? atomic_load(&a->word) & ~FORGET : 0);
    atomic_store(&b->rcvtimeo, a ? atomic_load(&a->rcvtimeo) : 0);
    atomic_store(&b->sndtimeo, a ? atomic_load(&a->sndtimeo) : 0);
}

static int sockopt(int fd, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0 ? v : -1;
}

static uint32_t kind_of(int fd, const struct stat *st, int fl)
{
    switch (st->st_mode & S_IFMT) {
    case S_IFREG: case S_IFBLK: case S_IFDIR:
        return KIND_FILE;
    case S_IFCHR:
        return KIND_WAIT;
    case S_IFIFO:
        /* A pipe's reads take what is there; an O_DIRECT one's stop at
         * each write. */
        return KIND_NOWAIT | STREAM | ((fl & O_DIRECT) ? 0 : DRAINS);
    case S_IFSOCK: {
        uint32_t word = KIND_NOWAIT | SOCKET;
        if (sockopt(fd, SO_TYPE) == SOCK_STREAM) {
            word |= STREAM;
            /* TCP reads take what is queued; a Unix stream's stop at a
             * message that carries fds or credentials. */
            int domain = sockopt(fd, SO_DOMAIN);
            if (domain == AF_INET || domain == AF_INET6)
                word |= DRAINS;
        }
        return word;
    }
    default:                         /* eventfd, timerfd, signalfd, epoll... */
        return KIND_NOWAIT;
    }
}

/* On a green thread: fd's word, looked at now if never before.  0 when fd
 * is not open (the call then gets the kernel's EBADF) or has no record. */
uint32_t shim__classify(int fd)
{
    struct shim_fd *fi = shim__fd(fd, true);
    if (!fi)
        return 0;
    uint32_t word = atomic_load_explicit(&fi->word, memory_order_relaxed);
    if (__builtin_expect(word && !(word & FORGET), 1))
        return word;
    if (word & FORGET) {
        /* Closed inside a signal handler, maybe reused since. */
        green_fd_forget(fd);
        shim__forget(fd);
    }
    int fl = NEXT(fcntl)(fd, F_GETFL);
    struct stat st;
    if (fl < 0 || fstat(fd, &st) != 0)
        return 0;
    word = kind_of(fd, &st, fl) | ((fl & O_NONBLOCK) ? USER_NB : 0);
    uint32_t none = 0;
    if (!atomic_compare_exchange_strong(&fi->word, &none, word))
        word = none;                 /* another thread looked first */
    return word;
}

static void set_user_nb(int fd, bool on)
{
    struct shim_fd *fi = shim__fd(fd, false);
    if (!fi)
        return;
    uint32_t word = atomic_load(&fi->word);
    while (word && !atomic_compare_exchange_weak(&fi->word, &word,
                                                 (word & ~USER_NB) | (on ? USER_NB : 0)))
        ;
}

/* ---- Lock waits ----------------------------------------------------------- */

struct lock_call {
    int fd, cmd, op, ret, err;
    void *arg;
    bool is_flock;
};

static void *lock_run(void *p)
{
    struct lock_call *c = p;
    c->ret = c->is_flock ? NEXT(flock)(c->fd, c->op) : NEXT(fcntl)(c->fd, c->cmd, c->arg);
    c->err = errno;
    return NULL;
}

static int lock_wait(struct lock_call c)
{
    shim__offload(lock_run, &c);
    shim__set_errno(c.err);
    return c.ret;
}

SHIM int flock(int fd, int op)
{
    if ((op & LOCK_NB) || (op & ~LOCK_NB) == LOCK_UN || !shim__parks())
        return NEXT(flock)(fd, op);
    int r = NEXT(flock)(fd, op | LOCK_NB);
    if (r == 0 || shim__get_errno() != EWOULDBLOCK)
        return r;
    return lock_wait((struct lock_call){ .fd = fd, .op = op, .is_flock = true });
}

/* ---- fcntl, ioctl, setsockopt ---------------------------------------------- */

static int fcntl_shim(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    switch (cmd) {
    case F_SETFL: {
        int r = real(fd, cmd, (int)(intptr_t)arg);
        if (r == 0)
            set_user_nb(fd, (int)(intptr_t)arg & O_NONBLOCK);
        return r;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int r = real(fd, cmd, (int)(intptr_t)arg);
        if (r >= 0)
            copy_info(fd, r);
        return r;
    }
    case F_SETLKW:
    case F_OFD_SETLKW: {
        if (!shim__parks())
            return real(fd, cmd, arg);
        int r = real(fd, cmd == F_SETLKW ? F_SETLK : F_OFD_SETLK, arg);
        int e = r == 0 ? 0 : shim__get_errno();
        if (r == 0 || (e != EAGAIN && e != EACCES))
            return r;
        return lock_wait((struct lock_call){ .fd = fd, .cmd = cmd, .arg = arg });
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
    int r = NEXT(ioctl)(fd, req, arg);
    if (r == 0 && req == FIONBIO && arg)
        set_user_nb(fd, *(const int *)arg != 0);
    return r;
}

SHIM int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int r = NEXT(setsockopt)(fd, level, name, val, len);
    bool rcv = name == SO_RCVTIMEO, snd = name == SO_SNDTIMEO;
    if (r != 0 || level != SOL_SOCKET || !(rcv || snd) || len < sizeof(struct timeval))
        return r;
    const struct timeval *tv = val;
    struct shim_fd *fi = shim__fd(fd, true);
    if (fi) {
        /* The kernel took it, so it is valid; one that does not fit is as
         * good as none (the kernel's MAX_SCHEDULE_TIMEOUT). */
        int64_t ns = 0;
        if (tv->tv_sec < INT64_MAX / 1000000000 - 1)
            ns = (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000;
        atomic_store(rcv ? &fi->rcvtimeo : &fi->sndtimeo, ns > 0 ? ns : 0);
    }
    return r;
}

/* ---- Closing and reusing numbers ----------------------------------------- */

/* fd's number is going away: its waiters get EBADF, its record goes. */
static void closing(int fd)
{
    if (shim__in_handler && shim__handler_running()) {
        /* AS-safe: no lock; the next green call on the number tells the
         * netpoller. */
        struct shim_fd *fi = shim__fd(fd, false);
        if (fi && atomic_load(&fi->word))
            atomic_store(&fi->word, FORGET);
        return;
    }
    shim__forget(fd);
    green_fd_forget(fd);
}

SHIM int close(int fd)
{
    closing(fd);
    return NEXT(close)(fd);
}

SHIM int fclose(FILE *f)
{
    int fd = f ? fileno(f) : -1;
    if (fd >= 0)
        closing(fd);
    return NEXT(fclose)(f);
}

SHIM int close_range(unsigned first, unsigned last, int flags)
{
    int r = (int)syscall(SYS_close_range, first, last, flags);
    if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC)) {
        /* Only numbers with a record can have anything to forget. */
        size_t end = (size_t)last + 1 < nchunks * CHUNK ? (size_t)last + 1 : nchunks * CHUNK;
        for (size_t fd = first; fd < end; fd++) {
            if (fd % CHUNK == 0 && !atomic_load(&chunks[fd / CHUNK])) {
                fd += CHUNK - 1;
                continue;
            }
            if (shim__word((int)fd))
                closing((int)fd);
        }
    }
    return r;
}

SHIM void closefrom(int lowfd)
{
    /* glibc's closefrom falls back to /proc when close_range fails. */
    if (lowfd >= 0 && close_range((unsigned)lowfd, ~0u, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = lowfd < 0 ? 0 : lowfd; fd < max && fd <= INT_MAX; fd++)
        if (NEXT(fcntl)((int)fd, F_GETFD) >= 0)
            close((int)fd);
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
        closing(to);
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

/* ---- New fds ---------------------------------------------------------------- */

SHIM int socket(int domain, int type, int proto)
{
    int r = (int)syscall(SYS_socket, domain, type, proto);
    if (r >= 0)
        shim__born(r, 0);
    return r;
}

SHIM int socketpair(int domain, int type, int proto, int sv[2])
{
    int r = (int)syscall(SYS_socketpair, domain, type, proto, sv);
    if (r == 0) {
        shim__born(sv[0], 0);
        shim__born(sv[1], 0);
    }
    return r;
}

SHIM int pipe2(int p[2], int flags)
{
    int r = (int)syscall(SYS_pipe2, p, flags);
    if (r == 0) {
        shim__born(p[0], 0);
        shim__born(p[1], 0);
    }
    return r;
}

SHIM int pipe(int p[2])
{
    return pipe2(p, 0);
}
