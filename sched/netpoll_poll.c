/*
 * The netpoller's poll (netpoll.c has the whole design): one epoll_wait
 * on the run's epoll instance, and the waiters of every fd that became
 * ready made runnable -- on the polling worker's queue, or the global
 * queue from the monitor.  Apart from the parking half so that the
 * scheduler's pick (switch.c) may poll: it lets in the threads whose fds
 * became ready before a preempted thread takes its turn.
 */
#include "netpoll.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

struct green__pfd *green__pfd_lookup(struct green__netpoll *np, int fd, bool make)
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

void green__pfd_claim_all(struct green__wq *q, int err, struct green__thread **list)
{
    struct green__waiter *wt;
    while ((wt = green__wq_claim(q)) != NULL) {
        wt->err = err;
        green__cold(wt->t)->wake_err = err;
        wt->t->next = *list;
        *list = wt->t;
    }
}

/* An epoll event for (gen, fd): wake its waiters, or remember the edge. */
static void np_event(struct green__netpoll *np, uint64_t tag, uint32_t ev,
                     struct green__thread **list)
{
    struct green__pfd *p = green__pfd_lookup(np, (int)(uint32_t)tag, false);
    if (!p)
        return;
    bool in = ev & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    bool out = ev & (EPOLLOUT | EPOLLHUP | EPOLLERR);
    green__spin_lock(&p->lock);
    if (p->gen == (uint32_t)(tag >> 32)) {
        /* Nobody claimed (none waits, or all just timed out): keep the
         * edge for the next wait. */
        struct green__thread *before = *list;
        if (in) {
            green__pfd_claim_all(&p->rq, 0, list);
            p->rready |= *list == before;
        }
        before = *list;
        if (out) {
            green__pfd_claim_all(&p->wq, 0, list);
            p->wready |= *list == before;
        }
    }
    green__spin_unlock(&p->lock);
}

/* epoll_pwait2 (Linux 5.11: a timeout in ns); on an older kernel -- or
 * under Valgrind 3.19, which does not know it -- epoll_wait, with the
 * timeout rounded up to whole milliseconds. */
static _Atomic bool no_pwait2;

static int epoll_wait_ts(int epfd, struct epoll_event *evs, const struct timespec *ts)
{
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        int n = epoll_pwait2(epfd, evs, GREEN_NETPOLL_EVENTS, ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        atomic_store(&no_pwait2, true);
    }
    int ms = -1;
    if (ts) {
        uint64_t t = ((uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec + 999999) /
                     1000000;
        ms = t > INT_MAX ? INT_MAX : (int)t;
    }
    return epoll_wait(epfd, evs, GREEN_NETPOLL_EVENTS, ms);
}

struct green__thread *green__netpoll_collect(struct green__rt *rt, uint64_t deadline)
{
    struct green__netpoll *np = &rt->np;
    if (!atomic_load_explicit(&np->ready, memory_order_acquire))
        return NULL;
    struct epoll_event evs[GREEN_NETPOLL_EVENTS];
    struct timespec ts = { 0, 0 }, *tsp = &ts;
    if (deadline == GREEN_FOREVER) {
        tsp = NULL;
    } else if (deadline) {
        uint64_t now = green__clock_ns(), d = deadline > now ? deadline - now : 0;
        ts.tv_sec = (time_t)(d / 1000000000u);
        ts.tv_nsec = (long)(d % 1000000000u);
    }
    int n = epoll_wait_ts(np->epfd, evs, tsp);
    atomic_store_explicit(&np->last_poll, green__clock_ns(), memory_order_relaxed);
    struct green__thread *list = NULL;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == BREAK_TAG) {
            uint64_t v;
            while (green__sys_read(np->evfd, &v, sizeof v) > 0)
                ;
            atomic_store(&np->broken, 0);
            continue;
        }
        np_event(np, evs[i].data.u64, evs[i].events, &list);
    }
    return list;
}

unsigned green__netpoll_ready(struct green__worker *w, struct green__thread *list, bool keep_one)
{
    if (!list)
        return 0;
    uint64_t by = green__trace_wakes_by(w, GREEN_TR_BY_NETPOLL);
    unsigned woken = 0;
    if (keep_one) {
        /* The first for w itself: its LIFO slot, which wakes nobody. */
        struct green__thread *t = list;
        list = t->next;
        green__ready(w, t, true);
        woken++;
    }
    woken += green__ready_list(w, list, false);
    green__trace_wakes_by(w, by);
    if (w)
        green__trace(w, GREEN_TR_NETPOLL, 0, woken, 0);
    return woken;
}

unsigned green__netpoll(struct green__rt *rt, struct green__worker *w, uint64_t deadline,
                        bool keep_one)
{
    return green__netpoll_ready(w, green__netpoll_collect(rt, deadline), keep_one);
}

bool green__netpoll_waiting(struct green__rt *rt)
{
    return atomic_load_explicit(&rt->np.waiters, memory_order_relaxed) != 0;
}

void green__netpoll_stale(struct green__rt *rt, struct green__worker *w, uint64_t now,
                          uint64_t stale_ns)
{
    struct green__netpoll *np = &rt->np;
    if (!green__netpoll_waiting(rt) || atomic_load(&np->blocked) ||
        now - atomic_load_explicit(&np->last_poll, memory_order_relaxed) < stale_ns)
        return;
    green__netpoll(rt, w, 0, false);
}
