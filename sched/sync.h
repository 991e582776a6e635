/* Private to libgreen. */
/*
 * What the blocking primitives share across files: a mutex's halves for
 * the condition variable (mutex.c, cond.c), a channel's for select (chan.c,
 * select.c).
 */
#ifndef GREEN_SYNC_H
#define GREEN_SYNC_H

#include "park.h"

/* cycle.c: lock cycles found when they form.  A thread about to wait for
 * a lock (a GREEN_LW_* kind, GREEN_LW_TIMED if it may give up) begins with
 * green__lockwait_begin (what: the call, for the report), and ends with
 * green__lockwait_end before its lock call returns, whatever the outcome.
 * begin returns EDEADLK when the wait closes a cycle and the run's
 * cfg.deadlock says so (the wait is then over), else 0. */
#define GREEN_LW_GREEN   1u
#define GREEN_LW_PTHREAD 2u
#define GREEN_LW_KIND    3u
#define GREEN_LW_TIMED   4u
#define GREEN_LW_MASK    7u
/* holder.c: the green thread holding the lock of lw (a lockwait word), or
 * NULL (free, or not a green thread's).  direct: self's own lock, which
 * cannot be freed meanwhile; otherwise it is read without faulting.  self
 * is the caller, or NULL for a thread that is no green thread (the
 * monitor). */
struct green__thread *green__lock_holder(struct green__rt *rt, struct green__thread *self,
                                        uintptr_t lw, bool direct);
int green__lockwait_begin(struct green__worker *w, struct green__thread *self, const void *lock,
                          unsigned kind, const char *what);
static inline void green__lockwait_end(struct green__thread *self)
{
    if (atomic_load_explicit(&self->lockwait, memory_order_relaxed))
        atomic_store_explicit(&self->lockwait, 0, memory_order_release);
}

/* mutex.c */
bool green__mutex_owned(green_mutex_t *m, struct green__thread *self);
/* green_mutex_unlock without the safepoint poll of green__enter. */
int green__mutex_unlock(struct green__worker *w, struct green__thread *self, green_mutex_t *m);

/* chan.c: a channel, and its two halves for select.c.  Under c->lock,
 * try to send / receive without blocking: 0 (done; *wake, if set, must be
 * made runnable once the lock is released), EPIPE (closed), or EAGAIN. */
struct green_chan {
    green__spin_t lock;
    bool closed;
    size_t esz, cap;                 /* element size, capacity: fixed */
    size_t len, head;                /* buffered values, oldest at head */
    struct green__wq recvq, sendq;   /* blocked receivers / senders */
    unsigned char *buf;              /* cap * esz bytes */
};
int green__chan_send_locked(green_chan_t *c, const void *elem, struct green__thread **wake);
int green__chan_recv_locked(green_chan_t *c, void *elem, struct green__thread **wake);

#endif /* GREEN_SYNC_H */
