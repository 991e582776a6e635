/*
 * Waiting: on many fds (poll, select, epoll_wait), for time (the sleeps),
 * for children (the wait family), and for name lookups.
 *
 * On a green thread each parks instead of blocking its worker:
 *   - poll, ppoll, select, pselect: green_poll on the same fds until the
 *     timeout.  A zero timeout is libc's.  ppoll's and pselect's signal
 *     masks are not applied: a signal runs its handler on the worker, not
 *     in the parked thread, and the call never says EINTR.
 *   - epoll_wait, epoll_pwait, epoll_pwait2: an epoll instance is itself
 *     pollable (ready while it has events): green_poll on it, then the call
 *     with a zero timeout, again until it returns events or the timeout.
 *   - the sleeps: green_sleep_ns.
 *   - waitpid, wait4 for one child without WUNTRACED/WCONTINUED: a pidfd,
 *     readable once the child has exited, polled; every other wait
 *     (any child, a group, stops) runs on the offload pool.
 *   - getaddrinfo, getnameinfo: on the offload pool.
 * Every timeout is saturated: one that does not fit libgreen's clock waits
 * for good, as the kernel's does, rather than wrap to a time already gone.
 */
#include "shim.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- Many fds ------------------------------------------------------------ */

/* -1 and errno, or the count of ready fds (0 at the deadline). */
static int green_poll_call(struct pollfd *fds, nfds_t n, uint64_t deadline)
{
    int ready = 0;
    int err = green_poll(fds, n, deadline, &ready);
    if (err == ETIMEDOUT)
        return 0;
    if (err) {
        shim__set_errno(err);
        return -1;
    }
    return ready;
}

static bool ts_ok(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

static bool ts_zero(const struct timespec *ts)
{
    return ts->tv_sec == 0 && ts->tv_nsec == 0;
}

static uint64_t deadline_ts(const struct timespec *ts)
{
    return ts ? shim__deadline_in(ts->tv_sec, ts->tv_nsec) : GREEN_FOREVER;
}

static uint64_t deadline_ms(int ms)
{
    return ms < 0 ? GREEN_FOREVER : shim__deadline_in(ms / 1000, (int64_t)(ms % 1000) * 1000000);
}

SHIM int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (timeout == 0 || !shim__parks())
        return NEXT(poll)(fds, n, timeout);
    return green_poll_call(fds, n, deadline_ms(timeout));
}

SHIM int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    if ((ts && (!ts_ok(ts) || ts_zero(ts))) || !shim__parks())
        return NEXT(ppoll)(fds, n, ts, mask);
    return green_poll_call(fds, n, deadline_ts(ts));
}

SHIM int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    extern void __chk_fail(void) __attribute__((noreturn));
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return poll(fds, n, timeout);
}

SHIM int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                     const sigset_t *mask, size_t fdslen)
{
    extern void __chk_fail(void) __attribute__((noreturn));
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return ppoll(fds, n, ts, mask);
}

/* select and pselect: as poll, on the fds of the sets. */
static int green_select_call(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, uint64_t deadline)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        shim__set_errno(EINVAL);
        return -1;
    }
    struct pollfd *p = malloc(((size_t)nfds + 1) * sizeof *p);
    if (!p) {
        shim__set_errno(ENOMEM);
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
    for (nfds_t i = 0; r >= 0 && i < n; i++) {
        if (p[i].revents & POLLNVAL) {
            shim__set_errno(EBADF);
            r = -1;
        }
    }
    if (r >= 0) {
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
    if (!shim__parks() || (tv && ((!tv->tv_sec && !tv->tv_usec) || tv->tv_sec < 0 ||
                                  tv->tv_usec < 0 || tv->tv_usec >= 1000000)))
        return NEXT(select)(nfds, rd, wr, ex, tv);
    uint64_t deadline = tv ? shim__deadline_in(tv->tv_sec, (int64_t)tv->tv_usec * 1000)
                           : GREEN_FOREVER;
    int r = green_select_call(nfds, rd, wr, ex, deadline);
    if (tv && r >= 0) {
        /* Linux leaves the time not slept in *tv. */
        uint64_t now = green_now_ns(), left = now < deadline ? (deadline - now) / 1000u : 0;
        if (deadline != GREEN_FOREVER) {
            tv->tv_sec = (time_t)(left / 1000000u);
            tv->tv_usec = (suseconds_t)(left % 1000000u);
        }
    }
    return r;
}

SHIM int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
                 const sigset_t *mask)
{
    if (!shim__parks() || (ts && (!ts_ok(ts) || ts_zero(ts))))
        return NEXT(pselect)(nfds, rd, wr, ex, ts, mask);
    return green_select_call(nfds, rd, wr, ex, deadline_ts(ts));
}

/* epoll: ready-wait on the instance, then take its events without waiting. */
static int epoll_call(int epfd, struct epoll_event *ev, int max, uint64_t deadline)
{
    for (;;) {
        int r = NEXT(epoll_wait)(epfd, ev, max, 0);
        if (r != 0)
            return r;
        struct pollfd p = { .fd = epfd, .events = POLLIN };
        r = green_poll_call(&p, 1, deadline);
        if (r <= 0)
            return r;
    }
}

SHIM int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    if (timeout == 0 || !shim__parks())
        return NEXT(epoll_wait)(epfd, ev, max, timeout);
    return epoll_call(epfd, ev, max, deadline_ms(timeout));
}

SHIM int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout,
                     const sigset_t *mask)
{
    if (timeout == 0 || !shim__parks())
        return NEXT(epoll_pwait)(epfd, ev, max, timeout, mask);
    return epoll_call(epfd, ev, max, deadline_ms(timeout));
}

SHIM int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts,
                      const sigset_t *mask)
{
    if (!shim__parks() || (ts && (!ts_ok(ts) || ts_zero(ts))))
        return (int)syscall(SYS_epoll_pwait2, epfd, ev, max, ts, mask, _NSIG / 8);
    return epoll_call(epfd, ev, max, deadline_ts(ts));
}

/* ---- Time ------------------------------------------------------------------ */

/* A sleep has a deadline, however far: GREEN_FOREVER is "no deadline". */
static void sleep_until(uint64_t deadline)
{
    green_sleep_until(deadline == GREEN_FOREVER ? GREEN_FOREVER - 1 : deadline);
}

SHIM unsigned sleep(unsigned s)
{
    if (!shim__parks())
        return NEXT(sleep)(s);
    green_sleep_ns((uint64_t)s * 1000000000u);
    return 0;
}

SHIM int usleep(useconds_t us)
{
    if (!shim__parks())
        return NEXT(usleep)(us);
    green_sleep_ns((uint64_t)us * 1000u);
    return 0;
}

SHIM int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!shim__parks() || !req || !ts_ok(req))
        return NEXT(nanosleep)(req, rem);
    sleep_until(deadline_ts(req));
    return 0;
}

SHIM int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req,
                         struct timespec *rem)
{
    bool wall = clk == CLOCK_REALTIME || clk == CLOCK_MONOTONIC || clk == CLOCK_BOOTTIME ||
                clk == CLOCK_TAI;
    if (!shim__parks() || !wall || !req || !ts_ok(req) || (flags & ~TIMER_ABSTIME))
        return NEXT(clock_nanosleep)(clk, flags, req, rem);
    if (!(flags & TIMER_ABSTIME)) {
        sleep_until(deadline_ts(req));
        return 0;
    }
    /* Until that time on clk: sleep the difference, and look again (the
     * wall clock may have been set meanwhile). */
    for (;;) {
        struct timespec now;
        clock_gettime(clk, &now);
        if (now.tv_sec > req->tv_sec ||
            (now.tv_sec == req->tv_sec && now.tv_nsec >= req->tv_nsec))
            return 0;
        int64_t s = req->tv_sec - now.tv_sec, ns = req->tv_nsec - now.tv_nsec;
        if (ns < 0) {
            s--;
            ns += 1000000000;
        }
        sleep_until(shim__deadline_in(s, ns));
    }
}

/* ---- Children ------------------------------------------------------------- */

struct wait_call {
    pid_t pid;
    int *status, options, err;
    struct rusage *ru;
    idtype_t idtype;
    id_t id;
    siginfo_t *info;
    pid_t ret;
};

static void *wait4_run(void *p)
{
    struct wait_call *c = p;
    c->ret = NEXT(wait4)(c->pid, c->status, c->options, c->ru);
    c->err = errno;
    return NULL;
}

static void *waitid_run(void *p)
{
    struct wait_call *c = p;
    c->ret = NEXT(waitid)(c->idtype, c->id, c->info, c->options);
    c->err = errno;
    return NULL;
}

/* Until child pid has exited: its pidfd turns readable.  false: no pidfd
 * (an old kernel, no fds left): wait another way. */
static bool await_exit(pid_t pid)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return false;
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    green_poll(&p, 1, GREEN_FOREVER, NULL);
    green_fd_close(pidfd);           /* the netpoller forgets it too */
    return true;
}

SHIM pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru)
{
    if ((options & WNOHANG) || !shim__parks())
        return NEXT(wait4)(pid, status, options, ru);
    if (pid > 0 && !(options & (WUNTRACED | WCONTINUED))) {
        pid_t r = NEXT(wait4)(pid, status, options | WNOHANG, ru);
        while (r == 0 && await_exit(pid))
            r = NEXT(wait4)(pid, status, options | WNOHANG, ru);
        if (r != 0)
            return r;
    }
    struct wait_call c = { .pid = pid, .status = status, .options = options, .ru = ru };
    shim__offload(wait4_run, &c);
    shim__set_errno(c.err);
    return c.ret;
}

SHIM pid_t waitpid(pid_t pid, int *status, int options)
{
    return wait4(pid, status, options, NULL);
}

SHIM pid_t wait(int *status)
{
    return wait4(-1, status, 0, NULL);
}

SHIM pid_t wait3(int *status, int options, struct rusage *ru)
{
    return wait4(-1, status, options, ru);
}

SHIM int waitid(idtype_t idtype, id_t id, siginfo_t *info, int options)
{
    if ((options & WNOHANG) || !shim__parks())
        return NEXT(waitid)(idtype, id, info, options);
    struct wait_call c = { .idtype = idtype, .id = id, .info = info, .options = options };
    shim__offload(waitid_run, &c);
    shim__set_errno(c.err);
    return (int)c.ret;
}

/* ---- Name lookups ---------------------------------------------------------- */

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
    if (!shim__parks())
        return NEXT(getaddrinfo)(node, service, hints, res);
    shim__offload(getaddrinfo_run, &l);
    shim__set_errno(l.err);             /* for EAI_SYSTEM */
    return l.ret;
}

SHIM int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                     char *serv, socklen_t servlen, int flags)
{
    struct lookup l = { .sa = sa, .salen = salen, .host = host, .hostlen = hostlen,
                        .serv = serv, .servlen = servlen, .flags = flags };
    if (!shim__parks())
        return NEXT(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
    shim__offload(getnameinfo_run, &l);
    shim__set_errno(l.err);
    return l.ret;
}
