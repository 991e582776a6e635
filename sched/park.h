/* Private to libgreen. */
/*
 * Parking (park.c): wait queues, the claim protocol, and how a call on a
 * green thread enters libgreen.
 */
#ifndef GREEN_PARK_H
#define GREEN_PARK_H

#include "slice.h"

/* park.c: wait queues and the claim protocol. */
struct green__waiter {
    struct green__waiter *prev, *next;  /* in the object's queue, under its lock */
    struct green__wq *q;                 /* that queue, while linked */
    struct green__waiter *tnext;         /* the thread's other waiters (select) */
    struct green__thread *t;
    void *elem;                          /* chan: value source or destination */
    int err;                             /* set by the waker */
    uint32_t index;                      /* select: the case */
    bool linked;                         /* in a queue; under the object's lock */
    bool handoff;                        /* mutex: ownership handed over */
    uint64_t since;                      /* mutex: when it began waiting */
};
struct green__wq { struct green__waiter *head, *tail; };

static inline void green__wq_linked(struct green__wq *q, struct green__waiter *wt)
{
    wt->linked = true;
    wt->q = q;
    struct green__thread_cold *c = green__cold(wt->t);
    wt->tnext = c->waiters;
    c->waiters = wt;
}

static inline void green__wq_push(struct green__wq *q, struct green__waiter *wt)
{
    wt->next = NULL;
    wt->prev = q->tail;
    if (q->tail)
        q->tail->next = wt;
    else
        q->head = wt;
    q->tail = wt;
    green__wq_linked(q, wt);
}

static inline void green__wq_remove(struct green__wq *q, struct green__waiter *wt)
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

void green__wq_push_front(struct green__wq *q, struct green__waiter *wt);
/* Does anyone wait in q (read under lock)?  For the destroy calls: EBUSY. */
static inline bool green__wq_busy(green__spin_t *lock, const struct green__wq *q)
{
    green__spin_lock(lock);
    bool busy = q->head != NULL;
    green__spin_unlock(lock);
    return busy;
}

/* ready.c.  Pop the first waiter whose thread can be claimed; NULL if none.
 * Unclaimable waiters met on the way are unlinked (their threads were woken
 * by someone else and will not look at them again). */
struct green__waiter *green__wq_claim(struct green__wq *q);

/* t->state is for reports and assertions: written by the thread's owner
 * and by its waker without a common lock, so relaxed atomics. */
static inline void green__set_state(struct green__thread *t, uint8_t s)
{
    __atomic_store_n(&t->state, s, __ATOMIC_RELAXED);
}
static inline uint8_t green__state(const struct green__thread *t)
{
    return __atomic_load_n(&t->state, __ATOMIC_RELAXED);
}

/* Take t out of its park: true for exactly one caller per park. */
static inline bool green__claim(struct green__thread *t)
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

/* The running thread: get ready to park (claimable from now on).  solo:
 * exactly one waiter will be linked and the park has no deadline. */
static inline void green__park_prepare(struct green__thread *self, const char *what,
                                       const void *obj, bool solo)
{
    struct green__thread_cold *c = green__cold(self);
    self->wake_solo = solo;
    c->waiters = NULL;
    c->wait_what = what;
    c->wait_obj = obj;
    c->wake_err = 0;
    c->wake_from = NULL;
    /* Published to wakers by the release of the object's lock. */
    atomic_store_explicit(&self->wake, 1, memory_order_relaxed);
}
/* Park until claimed or deadline; returns the claimer's wake_err (ETIMEDOUT
 * when the deadline fired).  The deadline timer is gone on return. */
int green__park(struct green__worker **wp, uint64_t deadline);
/* The park of a call that waits on one object, steps 1 to 4 of park.c:
 * with the object's lock held, get ready to park, link wt into q (at its
 * head if front: a waiter that lost its turn to a barger), release the
 * lock, and park until a waker claims the thread or the deadline passes;
 * then, unless claimed, unlink wt under the lock again.  Returns
 * green__park's answer: 0 when claimed (the waker's outcome is in wt and
 * the thread), ETIMEDOUT, ...  Inline: it is the blocking calls' own path,
 * and it takes eight arguments. */
static inline int green__park_on(struct green__worker **wp, green__spin_t *lock,
                                  struct green__wq *q, struct green__waiter *wt,
                                  const char *what, const void *obj, uint64_t deadline,
                                  bool front)
{
    green__park_prepare((*wp)->cur, what, obj, deadline == GREEN_FOREVER);
    if (front)
        green__wq_push_front(q, wt);
    else
        green__wq_push(q, wt);
    green__spin_unlock(lock);

    int err = green__park(wp, deadline);
    if (err) {
        green__spin_lock(lock);
        if (wt->linked)
            green__wq_remove(q, wt);
        green__spin_unlock(lock);
    }
    return err;
}
/* As green__enter, for a call on an object: EINVAL if obj is NULL. */
#define green__enter_obj(wp, tp, obj) \
    (green__enter((wp), (tp)) ? EPERM : (obj) ? 0 : EINVAL)

/* The calling green thread, and its worker, or EPERM. */
static inline int green__enter(struct green__worker **wp, struct green__thread **tp)
{
    struct green__worker *w = green__worker_self();
    if (GREEN_UNLIKELY(!w || w->cur == &w->g0))
        return EPERM;
    w = green__poll(w);              /* every call into libgreen is a safepoint */
    *wp = w;
    *tp = w->cur;
    return 0;
}

#endif /* GREEN_PARK_H */
