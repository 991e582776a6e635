/* Private to libgreen. */
/*
 * The netpoller's per-fd descriptors, shared by its two halves: netpoll.c
 * (threads park on fds: green_fd_wait, green_poll, forget, close) and
 * netpoll_poll.c (epoll_wait, and the waiters of ready fds made runnable;
 * below the scheduler's pick, which polls before a preempted thread's turn).
 */
#ifndef GREEN_NETPOLL_H
#define GREEN_NETPOLL_H

#include "sched.h"

#define GREEN_PFD_CHUNK 1024u
#define GREEN_PFD_MIN_FDS (1u << 20)
#define GREEN_PFD_MAX_FDS (1u << 26)
#define GREEN_NETPOLL_EVENTS 128
#define BREAK_TAG UINT64_MAX

struct green__pfd {
    green__spin_t lock;
    uint32_t gen;
    bool registered;
    bool rready, wready;
    struct green__wq rq, wq;
};

/* fd's descriptor; made if `make`.  NULL: fd out of range, or no memory. */
struct green__pfd *green__pfd_lookup(struct green__netpoll *np, int fd, bool make);
/* Claim every waiter of q with err, chaining the threads on *list. */
void green__pfd_claim_all(struct green__wq *q, int err, struct green__thread **list);

#endif /* GREEN_NETPOLL_H */
