/* Private to libgreen: foreign locks (foreign.c) -- the program's and its
 * libraries' pthread, stdio and C++ locks as green threads hold them and
 * wait for them -- for the scheduler files that make holders runnable and
 * the interposed calls (pthread*.c). */
#ifndef GREEN_FOREIGN_H
#define GREEN_FOREIGN_H

#include "sched.h"

/* foreign.c: the locks of the program and its libraries (pthread, stdio,
 * C++ static guards) as green threads meet them -- see foreign.c and
 * pthread.c. */
/* The calling green thread (and its worker), or NULL for anything else: a
 * plain OS thread, a worker's scheduler loop, libgreen's signal handler. */
static inline struct green__thread *green__foreign_self(struct green__worker **wp)
{
    struct green__worker *w = green__worker_self();
    *wp = w;
    if (!w || w->cur == &w->g0 || green__in_handler_now())
        return NULL;
    return w->cur;
}
#define GREEN_HELD_INLINE \
    ((uint32_t)(sizeof ((struct green__thread_cold *)0)->held_inline / sizeof(void *)))
void green__held_push_slow(struct green__worker *w, struct green__thread *self, const void *lock);
bool green__held_drop_slow(struct green__worker **wp, struct green__thread *self,
                           const void *lock, bool poll);
struct green__worker *green__release_poll(struct green__worker *w, struct green__thread *t);
/* A worker's holders list holds the holders that left its CPU (parked,
 * yielded) while they held: the only ones another green thread running
 * there can meet.  Linked at the switch away (green__switch), unlinked when
 * the last lock goes: an uncontended lock and unlock touch no list. */
static inline void green__holders_link(struct green__worker *w, struct green__thread *t)
{
    t->hold_linked = true;
    t->hold_prev = NULL;
    t->hold_next = w->holders;
    if (w->holders)
        w->holders->hold_prev = t;
    w->holders = t;
}

static inline void green__holders_unlink(struct green__worker *w, struct green__thread *t)
{
    if (t->hold_prev)
        t->hold_prev->hold_next = t->hold_next;
    else
        w->holders = t->hold_next;
    if (t->hold_next)
        t->hold_next->hold_prev = t->hold_prev;
    t->hold_prev = t->hold_next = NULL;
    t->hold_linked = false;
}
/* self took lock (once more): it is a holder until the matching drop. */
static inline void green__held_push(struct green__worker *w, struct green__thread *self,
                                    const void *lock)
{
    if (GREEN_LIKELY(self->nheld < self->heldcap)) {
        self->held[self->nheld++] = lock;
        self->nopreempt++;
        return;
    }
    green__held_push_slow(w, self, lock);
}
/* self let go of one acquisition of lock; false if it held none.  The last
 * one takes a preemption refused meanwhile (poll) unless parking follows.
 * The fast path: the lock taken last, released first, by a thread that
 * never left the CPU holding it. */
static inline bool green__held_drop(struct green__worker **wp, struct green__thread *self,
                                    const void *lock, bool poll)
{
    uint32_t n = self->nheld;
    if (GREEN_LIKELY(n > 0 && self->held[n - 1] == lock && !self->hold_linked &&
                     self->nopreempt > 0)) {
        self->nheld = n - 1;
        if (--self->nopreempt == 0 && poll &&
            GREEN_UNLIKELY(__atomic_load_n(&self->preempt_pending, __ATOMIC_RELAXED) ||
                           green__reductions <= 0))
            *wp = green__release_poll(*wp, self);
        return true;
    }
    return green__held_drop_slow(wp, self, lock, poll);
}
bool green__held_by(const struct green__thread *t, const void *lock);
/* Readers of held lists not their own (cycle.c): none unmapped meanwhile. */
extern _Atomic uint32_t green__held_readers;
/* Is lock held by a green thread of w other than self?  (The OS thread is
 * the same: a recursive lock would let self in.) */
bool green__held_by_other(struct green__worker *w, struct green__thread *self, const void *lock);
/* A holder made runnable: to its own worker's pinned queue. */
void green__ready_holder(struct green__worker *w, struct green__thread *t);
/* The owner moves its inbox to its pinned queue (at its next pick, switch.c). */
void green__pinned_push(struct green__worker *w, struct green__thread *t, bool now);
void green__inbox_drain(struct green__worker *w);
/* A thread ends: whatever it still holds stays locked, as with an OS
 * thread that exits; its records go. */
void green__held_forget(struct green__worker *w, struct green__thread *t);
/* Park until try(arg) returns something else than EBUSY, or deadline
 * (ETIMEDOUT).  Woken by green__fwake(addr) -- every release that passes
 * through libgreen -- and, unless seen(arg) says the lock's release will
 * (seen NULL: never), by a timer as well: every GREEN_FWAIT_POLL_MIN,
 * doubling up to GREEN_FWAIT_POLL_MAX. */
int green__fwait(struct green__worker **wp, const void *addr, int (*try)(void *), void *arg,
                 uint64_t deadline, bool (*seen)(void *), const char *what);
#define GREEN_FWAIT_POLL_MIN 50000u     /* 50 us */
#define GREEN_FWAIT_POLL_MAX 5000000u   /* 5 ms */
/* The same wait in three steps, for a caller with something to do between
 * linking in and parking (pthread_cond_wait unlocks its mutex there). */
struct green__fparked {
    struct green__waiter wt;
    void *bucket;
};
void green__fpark_link(struct green__thread *self, struct green__fparked *p, const void *addr,
                       const char *what);
void green__fpark_cancel(struct green__worker **wp, struct green__fparked *p);
int green__fpark_park(struct green__worker **wp, struct green__fparked *p, uint64_t deadline);
/* Wake green threads parked on addr: one, or all.  Returns how many.
 * Cheap when none. */
unsigned green__fwake_slow(const void *addr, bool all);
extern _Atomic uint32_t green__fwaiters;   /* threads parked on any address */
static inline void green__fwake(const void *addr, bool all)
{
    if (GREEN_UNLIKELY(atomic_load_explicit(&green__fwaiters, memory_order_relaxed)))
        green__fwake_slow(addr, all);
}
/* Is tid one of this run's workers?  (A lock it owns is a green thread's.) */
bool green__is_worker_tid(struct green__rt *rt, pid_t tid);

#endif
