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
 *   - the monitor, without blocking, when no worker has polled for
 *     GREEN_NETPOLL_STALE_NS while threads wait -- so I/O completes even
 *     when CPU-bound threads keep every worker busy.
 * Threads readied by a worker go to its own queue; by the monitor, to the
 * global queue.
 *
 * While threads wait on fds the run is not at rest: the deadlock check
 * (worker.c) leaves it alone, and its last idle worker blocks in epoll.
 *
 * Descriptors live in chunks of GREEN_PFD_CHUNK, found through an array of
 * chunk pointers sized for the largest fd the process may open; a chunk is
 * made on first use (CAS) and kept until the run ends.
 *
 * Limits: an fd closed with plain close() while registered (not with
 * green_fd_close) stays registered here; a new fd given the same number
 * then waits forever.  The LD_PRELOAD shim routes close() here.
 */
#include "sched.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define GREEN_PFD_CHUNK 1024u
#define GREEN_PFD_MIN_FDS (1u << 20)
#define GREEN_PFD_MAX_FDS (1u << 26)
#define GREEN_NETPOLL_EVENTS 128
#define GREEN_NETPOLL_STALE_NS 10000000u  /* 10 ms, as Go's sysmon */
#define BREAK_TAG UINT64_MAX

struct green__pfd {
    green__spin_t lock;
    uint32_t gen;
    bool registered;
    bool rready, wready;
    struct green__wq rq, wq;
};

/* Make the run's epoll instance, its eventfd and the chunk array, once. */
static int np_init(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (atomic_load_explicit(&np->ready, memory_order_acquire))
        return 0;
    int err = 0;
    pthread_mutex_lock(&np->init_lock);
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
                close(np->epfd);
            if (np->evfd >= 0)
                close(np->evfd);
            np->epfd = np->evfd = -1;
        } else {
            atomic_store_explicit(&np->ready, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&np->init_lock);
    return err;
}

void green__netpoll_free(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (!atomic_load(&np->ready))
        return;
    for (size_t i = 0; i < np->nchunks; i++)
        free(atomic_load(&np->chunks[i]));
    free(np->chunks);
    close(np->epfd);
    close(np->evfd);
}

/* fd's descriptor; made if `make`.  NULL: fd out of range, or no memory. */
static struct green__pfd *lookup(struct green__netpoll *np, int fd, bool make)
{
    size_t c = (size_t)fd / GREEN_PFD_CHUNK;
    if (fd < 0 || c >= np->nchunks)
        return NULL;
    struct green__pfd *chunk = atomic_load_explicit(&np->chunks[c], memory_order_acquire);
    if (!chunk && make) {
        struct green__pfd *fresh = calloc(GREEN_PFD_CHUNK, sizeof *fresh);
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong(&np->chunks[c], &chunk, fresh))
            chunk = fresh;
        else
            free(fresh);             /* another thread made it first */
    }
    return chunk ? &chunk[(size_t)fd % GREEN_PFD_CHUNK] : NULL;
}

/* Claim every waiter of q with err, chaining the threads on *list. */
static void claim_all(struct green__wq *q, int err, struct green__thread **list)
{
    struct green__waiter *wt;
    while ((wt = green__wq_claim(q)) != NULL) {
        wt->err = err;
        wt->t->wake_err = err;
        wt->t->next = *list;
        *list = wt->t;
    }
}

/* Requires: pfd->lock held.  Register fd (edge-triggered, both ways). */
static int np_register(struct green__netpoll *np, struct green__pfd *p, int fd)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
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

int green_fd_wait(int fd, int events, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (fd < 0 || !(events & (POLLIN | POLLOUT)) || (events & ~(POLLIN | POLLOUT)))
        return fd < 0 ? EBADF : EINVAL;
    struct green__rt *rt = w->rt;
    struct green__netpoll *np = &rt->np;
    if ((err = np_init(rt)) != 0)
        return err;
    struct green__pfd *p = lookup(np, fd, true);
    if (!p)
        return (size_t)fd / GREEN_PFD_CHUNK >= np->nchunks ? EBADF : ENOMEM;

    green__spin_lock(&p->lock);
    if (!p->registered && (err = np_register(np, p, fd)) != 0) {
        green__spin_unlock(&p->lock);
        /* EPERM: a regular file or a directory, which epoll refuses:
         * always ready, as poll() says. */
        return err == EPERM ? 0 : err;
    }
    bool ready = false;
    if ((events & POLLIN) && p->rready) {
        p->rready = false;
        ready = true;
    }
    if ((events & POLLOUT) && p->wready) {
        p->wready = false;
        ready = true;
    }
    if (ready || green__expired(rt, deadline)) {
        green__spin_unlock(&p->lock);
        return ready ? 0 : ETIMEDOUT;
    }
    struct green__waiter rw = { .t = self }, ww = { .t = self };
    green__park_prepare(self, "green_fd_wait", p, false);
    if (events & POLLIN)
        green__wq_push(&p->rq, &rw);
    if (events & POLLOUT)
        green__wq_push(&p->wq, &ww);
    atomic_fetch_add(&np->waiters, 1);
    green__spin_unlock(&p->lock);

    err = green__park(&w, deadline);

    atomic_fetch_sub(&np->waiters, 1);
    if (rw.linked || ww.linked) {
        green__spin_lock(&p->lock);
        if (rw.linked)
            green__wq_remove(&p->rq, &rw);
        if (ww.linked)
            green__wq_remove(&p->wq, &ww);
        green__spin_unlock(&p->lock);
    }
    return err;
}

int green_fd_close(int fd)
{
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0) {
        w = green__poll(w);
        struct green__netpoll *np = &w->rt->np;
        struct green__pfd *p = atomic_load(&np->ready) ? lookup(np, fd, false) : NULL;
        if (p) {
            struct green__thread *list = NULL;
            green__spin_lock(&p->lock);
            if (p->registered)
                epoll_ctl(np->epfd, EPOLL_CTL_DEL, fd, NULL);
            p->registered = p->rready = p->wready = false;
            p->gen++;
            claim_all(&p->rq, EBADF, &list);
            claim_all(&p->wq, EBADF, &list);
            green__spin_unlock(&p->lock);
            green__ready_list(w, list, false);
        }
    }
    return close(fd) == 0 ? 0 : errno;
}

/* An epoll event for (gen, fd): wake its waiters, or remember the edge. */
static void np_event(struct green__netpoll *np, uint64_t tag, uint32_t ev,
                     struct green__thread **list)
{
    struct green__pfd *p = lookup(np, (int)(uint32_t)tag, false);
    if (!p)
        return;
    bool in = ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    bool out = ev & (EPOLLOUT | EPOLLHUP | EPOLLERR);
    green__spin_lock(&p->lock);
    if (p->gen == (uint32_t)(tag >> 32)) {
        /* Nobody claimed (none waits, or all just timed out): keep the
         * edge for the next wait. */
        struct green__thread *before = *list;
        if (in) {
            claim_all(&p->rq, 0, list);
            p->rready |= *list == before;
        }
        before = *list;
        if (out) {
            claim_all(&p->wq, 0, list);
            p->wready |= *list == before;
        }
    }
    green__spin_unlock(&p->lock);
}

unsigned green__netpoll(struct green__rt *rt, struct green__worker *w, uint64_t deadline)
{
    struct green__netpoll *np = &rt->np;
    if (!atomic_load_explicit(&np->ready, memory_order_acquire))
        return 0;
    struct epoll_event evs[GREEN_NETPOLL_EVENTS];
    struct timespec ts = { 0, 0 }, *tsp = &ts;
    if (deadline == GREEN_FOREVER) {
        tsp = NULL;
    } else if (deadline) {
        uint64_t now = green__clock_ns(), d = deadline > now ? deadline - now : 0;
        ts.tv_sec = (time_t)(d / 1000000000u);
        ts.tv_nsec = (long)(d % 1000000000u);
    }
    int n = epoll_pwait2(np->epfd, evs, GREEN_NETPOLL_EVENTS, tsp, NULL);
    atomic_store_explicit(&np->last_poll, green__clock_ns(), memory_order_relaxed);
    struct green__thread *list = NULL;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == BREAK_TAG) {
            uint64_t v;
            while (read(np->evfd, &v, sizeof v) > 0)
                ;
            atomic_store(&np->broken, 0);
            continue;
        }
        np_event(np, evs[i].data.u64, evs[i].events, &list);
    }
    return green__ready_list(w, list, false);
}

void green__netpoll_break(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (atomic_load(&np->ready) && atomic_exchange(&np->broken, 1) == 0) {
        uint64_t one = 1;
        while (write(np->evfd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

bool green__netpoll_waiting(struct green__rt *rt)
{
    return atomic_load_explicit(&rt->np.waiters, memory_order_relaxed) != 0;
}

/* The monitor: nobody has polled for a while, and threads wait on fds. */
void green__netpoll_sysmon(struct green__rt *rt, uint64_t now)
{
    struct green__netpoll *np = &rt->np;
    if (!green__netpoll_waiting(rt) || atomic_load(&np->blocked) ||
        now - atomic_load_explicit(&np->last_poll, memory_order_relaxed) < GREEN_NETPOLL_STALE_NS)
        return;
    green__netpoll(rt, NULL, 0);
}
