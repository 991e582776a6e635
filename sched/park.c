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
 * A call that waits on one object (a mutex, a condition, a channel, a wait
 * group) makes steps 1 to 4 with green__park_on; select, joins, fds and
 * foreign locks, which wait on several objects or keep their waiters
 * elsewhere, make them themselves.
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
#include <x86intrin.h>

int green__park(struct green__worker **wp, uint64_t deadline)
{
    struct green__worker *w = *wp;
    struct green__thread *self = w->cur;
    struct green__thread_cold *c = green__cold(self);

    if (deadline != GREEN_FOREVER) {
        int err = deadline <= green__now(w->rt) ? ETIMEDOUT
                                                : green__timer_add(w, self, deadline);
        if (err != 0 && green__claim(self)) {
            c->wait_what = NULL;
            return err;
        }
        /* Otherwise a waker claimed us already: it will make us runnable,
         * so we must leave the CPU once, as if we had parked. */
    }
    self->parked_tsc = __rdtsc();    /* for dumps: a cycle, not a clock read */
    if (GREEN_UNLIKELY(w->trace)) {
        green__trace_put(&w->trace->ev, self->parked_tsc, GREEN_TR_PARK, self->id,
                         (uint64_t)(uintptr_t)c->wait_what, (uint64_t)(uintptr_t)c->wait_obj);
        self->trace_parking = true;  /* its switch away reuses the read */
    }
    green__set_state(self, GREEN_T_PARKED);
    w = green__sched_leave(w);
    *wp = w;
    green__trace_resumed(w, self);
    green__timer_cancel(self);
    c->wait_what = NULL;
    return c->wake_err;
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
    green__wq_linked(q, wt);
}
