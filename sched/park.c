/*
 * Parking: how a green thread waits, and how exactly one waker gets it back.
 *
 * A blocking call (mutex, cond, channel, select, join, wait group, sleep)
 * follows the same steps:
 *
 *   1. Under the object's lock: try the operation; if it cannot proceed,
 *      green__park_prepare (the thread becomes claimable, t->wake = 1) and
 *      link one waiter per object into the objects' wait queues.  Waiters
 *      live on the parking thread's own stack: it cannot return before every
 *      one of them is unlinked.
 *   2. Release the object's lock and green__park: add the deadline timer if
 *      any, and leave the CPU.
 *   3. A waker, under the object's lock, pops a waiter and claims its thread
 *      (green__claim: CAS wake 1 -> 0).  Only the winner may touch the thread:
 *      it records the outcome (wake_err, wake_from, the data it moved) and
 *      makes the thread runnable.  A waker that loses drops the waiter and
 *      looks at the next one.  A timer is a waker like the others.
 *   4. The thread resumes, cancels its timer, and unlinks, under each
 *      object's lock, every waiter of its own that is still linked.
 *
 * The thread may be claimed -- even picked by another worker -- between
 * steps 1 and 2: the on_cpu protocol (sched.h) makes that worker wait until
 * the switch away has saved the thread's registers.
 *
 * Rejected: holding the object's lock across the switch and having the next
 * context release it (Go's gopark unlockf).  It ties every object's lock to
 * the scheduler's switch path, and a timer firing has no such lock to hold.
 */
#include "sched.h"

#include <errno.h>

int green__enter(struct green__worker **wp, struct green__thread **tp)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return EPERM;
    *wp = w;
    *tp = w->cur;
    return 0;
}

bool green__claim(struct green__thread *t)
{
    if (t->wake_solo) {
        /* Nobody else can race for it: no timer, no second queue. */
        atomic_store_explicit(&t->wake, 0, memory_order_relaxed);
        return true;
    }
    uint32_t one = 1;
    return atomic_compare_exchange_strong_explicit(&t->wake, &one, 0,
                                                   memory_order_acq_rel,
                                                   memory_order_relaxed);
}

void green__park_prepare(struct green__thread *self, const char *what, const void *obj,
                         bool solo)
{
    self->wake_solo = solo;
    self->waiters = NULL;
    self->wait_what = what;
    self->wait_obj = obj;
    self->wake_err = 0;
    self->wake_from = NULL;
    /* Published to wakers by the release of the object's lock. */
    atomic_store_explicit(&self->wake, 1, memory_order_relaxed);
}

int green__park(struct green__worker **wp, uint64_t deadline)
{
    struct green__worker *w = *wp;
    struct green__thread *self = w->cur;

    if (deadline != GREEN_FOREVER) {
        int err = deadline <= green__clock_ns() ? ETIMEDOUT
                                                : green__timer_add(w, self, deadline);
        if (err != 0 && green__claim(self)) {
            self->wait_what = NULL;
            return err;
        }
        /* Otherwise a waker claimed us already: it will make us runnable,
         * so we must leave the CPU once, as if we had parked. */
    }
    self->state = GREEN_T_PARKED;
    w = green__sched_leave(w);
    *wp = w;
    green__timer_cancel(self);
    self->wait_what = NULL;
    return self->wake_err;
}

static void linked_to(struct green__wq *q, struct green__waiter *wt)
{
    wt->linked = true;
    wt->q = q;
    wt->tnext = wt->t->waiters;
    wt->t->waiters = wt;
}

void green__wq_push(struct green__wq *q, struct green__waiter *wt)
{
    wt->next = NULL;
    wt->prev = q->tail;
    if (q->tail)
        q->tail->next = wt;
    else
        q->head = wt;
    q->tail = wt;
    linked_to(q, wt);
}

void green__wq_push_front(struct green__wq *q, struct green__waiter *wt)
{
    wt->prev = NULL;
    wt->next = q->head;
    if (q->head)
        q->head->prev = wt;
    else
        q->tail = wt;
    q->head = wt;
    linked_to(q, wt);
}

void green__wq_remove(struct green__wq *q, struct green__waiter *wt)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        q->head = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    else
        q->tail = wt->prev;
    wt->next = wt->prev = NULL;
    wt->linked = false;
}

struct green__waiter *green__wq_claim(struct green__wq *q)
{
    struct green__waiter *wt;
    while ((wt = q->head) != NULL) {
        green__wq_remove(q, wt);
        if (green__claim(wt->t)) {
            wt->t->wake_from = wt;
            return wt;
        }
    }
    return NULL;
}
