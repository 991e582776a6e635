/*
 * The netpoller: green threads parked on file descriptors, woken by epoll.
 *
 * Each run has one epoll instance, made at the first green_fd_wait.  An fd
 * is registered once, edge-triggered, for input and output together (Go's
 * netpoller does the same): after that a wait costs no system call.  Per fd
 * a descriptor (struct green__pfd) keeps, under its own lock:
 *
 *   rq, wq     the threads parked waiting to read / to write
 *   rready,    an edge arrived while nobody waited: the next wait returns
 *   wready     at once (the caller retries its call; at worst it gets
 *              EAGAIN once more and waits for real)
 *   gen        bumped by green_fd_close; epoll events carry the gen they
 *              were registered with, so events for a closed fd whose number
 *              was reused are dropped
 *
 * An edge wakes every waiter of its direction: each retries its call, and
 * those that still get EAGAIN wait for the next edge.
 *
 * Who calls epoll_wait:
 *   - an idle worker, instead of sleeping on its futex, while threads wait
 *     on fds (one at a time per run: np.blocked), with the timers' deadline
 *     as its timeout; anything that wakes that worker writes the run's
 *     eventfd as well (green__worker_wake);
 *   - a worker about to go idle, without blocking;
 *   - a worker at a preemption, without blocking, when no worker is idle
 *     and nobody has polled for GREEN_NETPOLL_PREEMPT_NS;
 *   - a worker about to resume a preempted thread (its pick, switch.c),
 *     without blocking, once per turn, when nobody has polled for
 *     GREEN_NETPOLL_PINNED_NS: threads whose fds became ready while the
 *     ring ran go before it, rather than a whole quantum later;
 *   - the monitor, without blocking, when no worker has polled for
 *     GREEN_NETPOLL_STALE_NS while threads wait -- so I/O completes even
 *     when CPU-bound threads keep every worker busy.
 * Threads readied by a worker go to its own queue; by the monitor, to the
 * global queue.
 *
 * green_poll waits on many fds at once: one waiter pair per fd, all for one
 * claim of the thread, as select does on channels.  green_fd_forget reaches
 * the fd's waiters in every run through the process's list of netpollers.
 *
 * While threads wait on fds the run is not at rest: the deadlock check
 * (loop.c) leaves it alone, and its last idle worker blocks in epoll.
 *
 * Descriptors live in chunks of GREEN_PFD_CHUNK, found through an array of
 * chunk pointers sized for the largest fd the process may open; a chunk is
 * made on first use (CAS) and kept until the run ends.
 *
 * Limits: an fd closed with plain close() while registered (not with
 * green_fd_close or after green_fd_forget) stays registered here; a new fd
 * given the same number then waits forever.  The LD_PRELOAD shim's close()
 * calls green_fd_forget.
 */
#include "netpoll.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Every run's netpoller that exists, for green_fd_forget, which must reach
 * the waiters of an fd whatever run they belong to. */
static pthread_mutex_t np_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct green__netpoll *_Atomic np_list;

/* Make the run's epoll instance, its eventfd and the chunk array, once. */
static int np_init(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (atomic_load_explicit(&np->ready, memory_order_acquire))
        return 0;
    int err = 0;
    green__os_mutex_lock(&np->init_lock);
    if (!atomic_load(&np->ready)) {
        struct rlimit rl;
        size_t fds = GREEN_PFD_MIN_FDS;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
            rl.rlim_max > fds)
            fds = rl.rlim_max;
        if (fds > GREEN_PFD_MAX_FDS)
            fds = GREEN_PFD_MAX_FDS;
        np->nchunks = (fds + GREEN_PFD_CHUNK - 1) / GREEN_PFD_CHUNK;
        np->chunks = calloc(np->nchunks, sizeof *np->chunks);
        np->epfd = epoll_create1(EPOLL_CLOEXEC);
        np->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = BREAK_TAG };
        if (!np->chunks)
            err = ENOMEM;
        else if (np->epfd < 0 || np->evfd < 0 ||
                 epoll_ctl(np->epfd, EPOLL_CTL_ADD, np->evfd, &ev) != 0)
            err = errno;
        if (err) {
            free(np->chunks);
            np->chunks = NULL;
            if (np->epfd >= 0)
                green__sys_close(np->epfd);
            if (np->evfd >= 0)
                green__sys_close(np->evfd);
            np->epfd = np->evfd = -1;
        } else {
            green__os_mutex_lock(&np_list_lock);
            np->next = np_list;
            np_list = np;
            green__os_mutex_unlock(&np_list_lock);
            atomic_store_explicit(&np->ready, 1, memory_order_release);
        }
    }
    green__os_mutex_unlock(&np->init_lock);
    return err;
}

void green__netpoll_free(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (!atomic_load(&np->ready))
        return;
    green__os_mutex_lock(&np_list_lock);
    struct green__netpoll *prev = NULL, *cur = np_list;
    while (cur != np) {
        prev = cur;
        cur = cur->next;
    }
    if (prev)
        prev->next = np->next;
    else
        np_list = np->next;
    green__os_mutex_unlock(&np_list_lock);
    for (size_t i = 0; i < np->nchunks; i++)
        free(atomic_load(&np->chunks[i]));
    free(np->chunks);
    green__sys_close(np->epfd);
    green__sys_close(np->evfd);
}

/* Requires: pfd->lock held.  Register fd (edge-triggered, both ways). */
static int np_register(struct green__netpoll *np, struct green__pfd *p, int fd)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = (uint64_t)p->gen << 32 | (uint32_t)fd,
    };
    if (epoll_ctl(np->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        /* Left registered by a close() that did not come here, and its
         * number since reused: take it over. */
        if (errno != EEXIST || epoll_ctl(np->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
            return errno;
    }
    p->registered = true;
    return 0;
}

/* What a pollfd asks for, as the two wait queues of its fd. */
static bool wants_in(short events) { return (events & ~(POLLOUT | POLLWRNORM | POLLWRBAND)) || !events; }
static bool wants_out(short events) { return events & (POLLOUT | POLLWRNORM | POLLWRBAND); }

/* The waiters of one wait on several fds: two per fd, on the caller's stack
 * up to STACK_FDS fds. */
#define STACK_FDS 4

/* Park self until one of the n fds (fd < 0: skipped) may be ready for its
 * events, or the deadline.  0: an edge arrived (possibly one recorded
 * earlier, which may be stale: the caller retries and may get EAGAIN again);
 * ETIMEDOUT; EBADF (one of them closed meanwhile, or out of range); ENOMEM. */
static int wait_fds(struct green__worker *w, struct green__thread *self,
                    const struct pollfd *fds, size_t n, uint64_t deadline,
                    const char *what)
{
    struct green__rt *rt = w->rt;
    struct green__netpoll *np = &rt->np;
    int err = np_init(rt);
    if (err)
        return err;
    struct green__waiter stack_wt[2 * STACK_FDS], *wt = stack_wt;
    struct green__pfd *stack_p[STACK_FDS], **ps = stack_p;
    if (n > STACK_FDS) {
        wt = malloc(n * (2 * sizeof *wt + sizeof *ps));
        if (!wt)
            return ENOMEM;
        ps = (struct green__pfd **)(wt + 2 * n);
    }
    /* The fds are on this thread's stack while it waits: dumps read them. */
    green__park_prepare(self, what, fds, false);
    green__cold(self)->wait_n = (uint32_t)(n < UINT32_MAX ? n : UINT32_MAX);
    size_t linked = 0;
    bool ready = false, queued = false;
    for (; linked < n && !ready && !err; linked++) {
        int fd = fds[linked].fd;
        struct green__waiter *rw = &wt[2 * linked], *ww = rw + 1;
        *rw = (struct green__waiter){ .t = self };
        *ww = (struct green__waiter){ .t = self };
        struct green__pfd *p = ps[linked] = fd < 0 ? NULL : green__pfd_lookup(np, fd, true);
        if (fd < 0)
            continue;
        if (!p) {
            err = (size_t)fd / GREEN_PFD_CHUNK >= np->nchunks ? EBADF : ENOMEM;
            break;
        }
        bool in = wants_in(fds[linked].events), out = wants_out(fds[linked].events);
        green__spin_lock(&p->lock);
        if (!p->registered && (err = np_register(np, p, fd)) != 0) {
            /* EPERM: a regular file or a directory, which epoll refuses:
             * always ready, as poll() says. */
            ready = err == EPERM;
            err = ready ? 0 : err;
        } else if ((in && p->rready) || (out && p->wready)) {
            if (in)
                p->rready = false;
            if (out)
                p->wready = false;
            ready = true;
        } else {
            if (in)
                green__wq_push(&p->rq, rw);
            if (out)
                green__wq_push(&p->wq, ww);
            queued = true;
        }
        green__spin_unlock(&p->lock);
    }
    if (!ready && !err && green__expired(rt, deadline))
        err = ETIMEDOUT;
    /* Counted only when an fd can wake us: a wait on no fd at all (every
     * fd negative) without a deadline is then a deadlock, and reported. */
    if (queued)
        atomic_fetch_add(&np->waiters, 1);
    if ((ready || err) && green__claim(self)) {
        /* Nobody claimed us: we need not park. */
        green__cold(self)->wait_what = NULL;
    } else {
        /* Parked -- or claimed by an edge meanwhile, so we must leave the
         * CPU once all the same (green__park). */
        int perr = green__park(&w, ready || err ? GREEN_FOREVER : deadline);
        if (!ready && !err)
            err = perr;
    }
    if (queued)
        atomic_fetch_sub(&np->waiters, 1);
    /* Under each fd's lock even when our waiter looks unlinked: a waker of
     * another fd (or direction) may be inside green__wq_claim on it right
     * now -- unlinked, about to read wt->t -- and the waiters live on this
     * stack, which is reused the moment we return.  (Found by the TSan
     * build.) */
    for (size_t i = 0; i < linked; i++) {
        struct green__waiter *rw = &wt[2 * i], *ww = rw + 1;
        if (!ps[i])
            continue;
        green__spin_lock(&ps[i]->lock);
        if (rw->linked)
            green__wq_remove(&ps[i]->rq, rw);
        if (ww->linked)
            green__wq_remove(&ps[i]->wq, ww);
        green__spin_unlock(&ps[i]->lock);
    }
    if (wt != stack_wt)
        free(wt);
    return err;
}

int green_fd_wait(int fd, int events, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (fd < 0 || !(events & (POLLIN | POLLOUT)) || (events & ~(POLLIN | POLLOUT)))
        return fd < 0 ? EBADF : EINVAL;
    struct pollfd pfd = { .fd = fd, .events = (short)events };
    return wait_fds(w, self, &pfd, 1, deadline, "green_fd_wait");
}

/* poll(fds, n, 0), made directly (the shim interposes poll). */
static int poll_now(struct pollfd *fds, size_t n)
{
    struct timespec zero = { 0, 0 };
    long r;
    while ((r = syscall(SYS_ppoll, fds, n, &zero, NULL, 0)) < 0 && errno == EINTR)
        ;
    return r < 0 ? -errno : (int)r;
}

int green_poll(struct pollfd *fds, size_t n, uint64_t deadline, int *nready)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (nready)
        *nready = 0;
    if (err)
        return err;
    if ((n && !fds) || n > INT_MAX)
        return EINVAL;
    for (;;) {
        int r = poll_now(fds, n);
        if (r < 0)
            return -r;               /* EFAULT, EINVAL (more than RLIMIT_NOFILE), ENOMEM */
        if (r > 0) {
            if (nready)
                *nready = r;
            return 0;
        }
        w = green__worker_self();
        err = wait_fds(w, self, fds, n, deadline, "green_poll");
        /* EBADF: an fd was closed meanwhile; poll now says POLLNVAL. */
        if (err == ETIMEDOUT || err == ENOMEM)
            return err;
    }
}

/* Requires: np is listed.  Forget fd in one run's netpoller. */
static void forget_in(struct green__worker *w, struct green__netpoll *np, int fd)
{
    struct green__pfd *p = green__pfd_lookup(np, fd, false);
    if (!p)
        return;
    struct green__thread *list = NULL;
    green__spin_lock(&p->lock);
    if (p->registered)
        epoll_ctl(np->epfd, EPOLL_CTL_DEL, fd, NULL);
    p->registered = p->rready = p->wready = false;
    p->gen++;
    green__pfd_claim_all(&p->rq, EBADF, &list);
    green__pfd_claim_all(&p->wq, EBADF, &list);
    green__spin_unlock(&p->lock);
    green__ready_list(w, list, false);
}

int green_fd_forget(int fd)
{
    if (fd < 0)
        return EBADF;
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0)
        w = green__poll(w);
    else
        w = NULL;                    /* woken threads go to their global queues */
    /* No run has a netpoller (a program that never calls green_run, a
     * fork child): nothing to forget, and no lock a signal handler's close
     * could find held by the code it interrupted. */
    if (!atomic_load_explicit(&np_list, memory_order_acquire))
        return 0;
    green__os_mutex_lock(&np_list_lock);
    for (struct green__netpoll *np = np_list; np; np = np->next)
        forget_in(w, np, fd);
    green__os_mutex_unlock(&np_list_lock);
    return 0;
}

/* fork (sched/fork.c).  The child's copies of the parent's netpollers are
 * not its own: their epoll instances are the parent's, shared, and an
 * EPOLL_CTL_DEL from the child (its close of an fd through the shim) took
 * the parent's registration away.  The child forgets them and closes its
 * references to the instances. */
void green__netpoll_atfork(enum green__fork_phase phase)
{
    if (phase == GREEN_FORK_PREPARE) {
        green__os_mutex_lock(&np_list_lock);
        return;
    }
    if (phase == GREEN_FORK_CHILD) {
        for (struct green__netpoll *np = np_list; np; np = np->next) {
            green__sys_close(np->epfd);
            green__sys_close(np->evfd);
        }
        atomic_store_explicit(&np_list, NULL, memory_order_relaxed);
    }
    green__os_mutex_unlock(&np_list_lock);
}

int green_fd_close(int fd)
{
    green_fd_forget(fd);
    return green__sys_close(fd) == 0 ? 0 : errno;
}
