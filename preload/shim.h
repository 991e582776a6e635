/* Private to libgreen-preload. */
#ifndef GREEN_PRELOAD_SHIM_H
#define GREEN_PRELOAD_SHIM_H

/* The shim defines read, recv, poll... itself: _FORTIFY_SOURCE's inline
 * wrappers of those names (bits/unistd.h, bits/socket2.h) would clash with
 * the definitions, and its checked forms are interposed by name instead
 * (__read_chk...). */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include "green.h"

#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#define SHIM __attribute__((visibility("default")))

/* ---- The next definitions (libc's), bound at the first call (next.c) ---- */

struct shim_next {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned, int, struct timespec *);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned);
    ssize_t (*tee)(int, int, size_t, unsigned);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                   const sigset_t *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    unsigned (*sleep)(unsigned);
    int (*usleep)(useconds_t);
    int (*nanosleep)(const struct timespec *, struct timespec *);
    int (*clock_nanosleep)(clockid_t, int, const struct timespec *, struct timespec *);
    pid_t (*wait4)(pid_t, int *, int, struct rusage *);
    int (*waitid)(idtype_t, id_t, siginfo_t *, int);
    int (*flock)(int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fclose)(FILE *);
    int (*getaddrinfo)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);
    int (*getnameinfo)(const struct sockaddr *, socklen_t, char *, socklen_t, char *,
                       socklen_t, int);
};

extern struct shim_next shim__next;
extern pthread_once_t shim__next_once;
void shim__find_all(void);

/* libc's definition of name, bound on first use (a constructor may run too
 * late: other libraries' constructors make calls too). */
#define NEXT(name)                                                             \
    (*(__builtin_expect(shim__next.name != NULL, 1)                            \
           ? &shim__next                                                       \
           : (pthread_once(&shim__next_once, shim__find_all), &shim__next)))  \
         .name

/* ---- Who is calling (signal.c) ------------------------------------------ */

/* Depth of the program's signal handlers running on this OS thread. */
extern __thread unsigned shim__in_handler __attribute__((tls_model("initial-exec")));

bool shim__handler_running(void);

/* The call may park: a green thread, not inside a signal handler.
 * Anywhere else every interposed call is libc's. */
static inline bool shim__parks(void)
{
    return green_worker_index() >= 0 &&
           (__builtin_expect(shim__in_handler == 0, 1) || !shim__handler_running());
}

/* errno, read and written afresh: after a call that parks, the thread may
 * run on another worker, whose errno is elsewhere -- and a compiler may
 * keep &errno from before the call (README, "Thread-local storage"). */
int shim__get_errno(void);
void shim__set_errno(int e);

/* ---- What the shim knows of each fd (fds.c) ----------------------------- */

/* How a call on the fd is made non-blocking, per call. */
enum {
    KIND_NONE = 0,  /* not looked at, or not open */
    KIND_NOWAIT,    /* sockets, pipes, eventfd, timerfd: RWF_NOWAIT / MSG_DONTWAIT */
    KIND_WAIT,      /* no per-call flag (FIFOs, terminals, inotify): ready first */
    KIND_FILE,      /* regular files, block devices: on the offload pool */
};
#define KIND_MASK 3u
#define USER_NB   4u    /* the file is O_NONBLOCK: the program wants EAGAIN */
#define SOCKET    8u    /* a socket: the send/recv flags apply */
#define STREAM    16u   /* a SOCK_STREAM socket, a pipe or a FIFO */
#define DRAINS    32u   /* a short read means it was drained (TCP, plain pipes) */
#define DRAINED   64u   /* its last read came back short */
#define ACCEPTING 128u  /* a green thread is between poll and accept on it */

struct shim_fd {
    _Atomic uint32_t word;              /* kind | flags above; 0: not looked at */
    _Atomic int64_t rcvtimeo, sndtimeo; /* ns; 0: none */
};

struct shim_fd *shim__fd(int fd, bool make);
uint32_t shim__word(int fd);
uint32_t shim__classify(int fd);
void shim__forget(int fd);
void shim__born(int fd, uint32_t word);

/* ---- One blocking call in progress (io.c) ------------------------------- */

struct io {
    int fd;
    short events;    /* POLLIN or POLLOUT */
    bool timed;      /* deadline computed */
    uint32_t word;   /* what the shim knows of fd */
    uint64_t deadline;
};

enum { WAY_LIBC, WAY_NOWAIT, WAY_FILE };
int shim__io_begin(struct io *io, int fd, short events);
bool shim__io_again(struct io *io);

/* ---- Time ---------------------------------------------------------------- */

/* now + sec s + nsec ns on libgreen's clock, GREEN_FOREVER when it would
 * not fit (a blocking call with a huge timeout waits for good). */
uint64_t shim__deadline_in(int64_t sec, int64_t nsec);

/* Run fn(arg) on the offload pool while the green thread parks; on the
 * thread itself when no pool thread can be had. */
void shim__offload(void *(*fn)(void *), void *arg);

#endif
