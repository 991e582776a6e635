/*
 * Condition variable: a FIFO of waiters under a spinlock.
 *
 * wait links the caller in before it releases the mutex, so a signal sent by
 * anyone who takes the mutex afterwards finds it: no lost wake-up.  A signal
 * claims the first waiter it can (a waiter whose deadline fired is skipped,
 * see park.c), so a timed-out waiter never swallows a signal meant for
 * another.  Both wait calls take the mutex back before returning, also on
 * ETIMEDOUT, as pthread_cond_timedwait does.
 */
#include "sched.h"

#include <errno.h>
#include <string.h>

struct cond {
    green__spin_t lock;
    uint32_t unused;
    struct green__wq q;
};

_Static_assert(sizeof(struct cond) <= sizeof(green_cond_t), "green_cond_t too small");

static struct cond *impl(green_cond_t *c) { return (struct cond *)(void *)c; }

int green_cond_init(green_cond_t *c)
{
    return green__init_zero(c, sizeof *c);
}

int green_cond_destroy(green_cond_t *cp)
{
    if (!cp)
        return EINVAL;
    struct cond *c = impl(cp);
    return green__wq_busy(&c->lock, &c->q) ? EBUSY : 0;
}

int green_cond_wait_until(green_cond_t *cp, green_mutex_t *m, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (!cp || !m)
        return EINVAL;
    if (!green__mutex_owned(m, self))
        return EPERM;
    struct cond *c = impl(cp);
    struct green__waiter wt = { .t = self };

    /* The mutex goes under the condition's lock: no signal can come
     * between its release and the waiter's link (the lock order is the
     * condition's, then the mutex's; no poll in between). */
    green__spin_lock(&c->lock);
    green__assert(green__mutex_unlock(w, self, m) == 0);
    err = green__park_on(&w, &c->lock, &c->q, &wt, "green_cond_wait", c, deadline, false);
    /* Taking the mutex back cannot fail: a lock cycle it closes is
     * reported, never answered with EDEADLK (cycle.c). */
    self = w->cur;
    green__cold(self)->lockwait_retake = true;
    green__assert(green_mutex_lock(m) == 0);
    green__cold(self)->lockwait_retake = false;
    return err;
}

int green_cond_wait(green_cond_t *c, green_mutex_t *m)
{
    return green_cond_wait_until(c, m, GREEN_FOREVER);
}

static int wake(green_cond_t *cp, bool all)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, cp);
    if (err)
        return err;
    struct cond *c = impl(cp);
    struct green__thread *list = NULL, **tail = &list;

    green__spin_lock(&c->lock);
    struct green__waiter *wt;
    while ((wt = green__wq_claim(&c->q)) != NULL) {
        *tail = wt->t;
        tail = &wt->t->next;
        *tail = NULL;
        if (!all)
            break;
    }
    green__spin_unlock(&c->lock);

    green__ready_list(w, list, !all);
    return 0;
}

int green_cond_signal(green_cond_t *c) { return wake(c, false); }
int green_cond_broadcast(green_cond_t *c) { return wake(c, true); }
