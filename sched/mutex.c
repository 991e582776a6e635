/*
 * Mutex: error-checking, fair enough to starve nobody, fast when uncontended.
 *
 * The design is Go's sync.Mutex.  state holds three bits:
 *
 *   LOCKED    someone owns it
 *   WAITERS   the queue may be non-empty: unlock must take the slow path
 *   STARVING  hand the lock straight to the first waiter at the next unlock
 *
 * Normal mode: unlock releases the lock and wakes the first waiter, which
 * then competes with newcomers ("barging").  Newcomers are already running,
 * so letting them in keeps throughput high; a woken waiter that loses goes
 * back to the head of the queue.  Starvation mode: a waiter that has waited
 * more than GREEN_STARVE_NS sets STARVING, and from then on unlock hands
 * ownership to the first waiter without releasing (LOCKED stays set, so
 * nobody can barge).  Back to normal when the queue empties or a waiter got
 * the lock quickly.  So no thread waits much more than a millisecond plus
 * the critical sections ahead of it.
 *
 * Locking: the queue and every change of state made by a waiter are under
 * m->lock (a spinlock, never held across a switch).  The fast paths are a CAS
 * 0 -> LOCKED and LOCKED -> 0; a waiter sets WAITERS with a CAS while LOCKED
 * is set, so an owner's fast unlock either happened before (and the waiter
 * sees the lock free) or fails (and takes the slow path, under m->lock).
 *
 * Before it queues, a locker spins briefly while the holder runs on another
 * worker, as Go's does: a park and a wake cost more than a short critical
 * section.
 *
 * owner is for the EPERM/EDEADLK checks and the spin decision;
 * waiting counts the threads between their first wait and their return, so
 * that destroy sees a waiter even while it is woken and off the queue.
 */
#include "mutex.h"

#include <errno.h>
#include <string.h>

static void set_owner(struct green__mutex *m, struct green__thread *t)
{
    atomic_store_explicit(&m->owner, t, memory_order_relaxed);
    atomic_store_explicit(&m->owner_id, t ? t->id : 0, memory_order_relaxed);
}

int green_mutex_init(green_mutex_t *m)
{
    return green__init_zero(m, sizeof *m);
}

int green_mutex_destroy(green_mutex_t *mp)
{
    if (!mp)
        return EINVAL;
    struct green__mutex *m = green__mutex_impl(mp);
    green__spin_lock(&m->lock);
    bool busy = atomic_load(&m->state) != 0 || m->q.head || atomic_load(&m->waiting);
    green__spin_unlock(&m->lock);
    return busy ? EBUSY : 0;
}

/* Worth spinning for m?  As Go's sync_runtime_canSpin: only a few rounds,
 * only while the holder is running on another worker (it may let go within
 * nanoseconds) and nobody else here is waiting to run. */
static bool can_spin(struct green__mutex *m, struct green__worker *w, int round)
{
    if (round >= GREEN_SPIN_ROUNDS || w->rt->nworkers < 2)
        return false;
    struct green__thread *o = green__mutex_owner(m);
    return o && atomic_load_explicit(&o->on_cpu, memory_order_relaxed) == 1 &&
           __atomic_load_n(&o->home, __ATOMIC_RELAXED) != w && green__runq_empty(w) &&
           !atomic_load_explicit(&w->runnext, memory_order_relaxed);
}

/* Queue and park until m is ours (or the deadline passes). */
static int lock_wait(struct green__mutex *m, struct green__worker *w, struct green__thread *self,
                     uint64_t deadline)
{
    struct green__waiter wt = { .t = self };
    bool requeue = false;
    uint64_t since = 0;

    for (;;) {
        green__spin_lock(&m->lock);
        uint32_t s = atomic_load(&m->state);
        while (!(s & M_LOCKED)) {
            if (atomic_compare_exchange_weak(&m->state, &s, s | M_LOCKED)) {
                green__spin_unlock(&m->lock);
                set_owner(m, self);
                if (since)
                    atomic_fetch_sub(&m->waiting, 1);
                return 0;
            }
        }
        uint64_t now = green__now(w->rt);
        if (deadline <= now) {
            green__spin_unlock(&m->lock);
            if (since)
                atomic_fetch_sub(&m->waiting, 1);
            return ETIMEDOUT;
        }
        if (!since) {
            since = now;
            atomic_fetch_add(&m->waiting, 1);
        }
        uint32_t flags = M_WAITERS | (now - since >= GREEN_STARVE_NS ? M_STARVING : 0);
        while (!atomic_compare_exchange_weak(&m->state, &s, s | flags)) {
            if (!(s & M_LOCKED))
                break;
        }
        if (!(s & M_LOCKED)) {           /* released meanwhile: try again */
            green__spin_unlock(&m->lock);
            continue;
        }
        wt.since = since;
        wt.handoff = false;
        int err = green__park_on(&w, &m->lock, &m->q, &wt, "green_mutex_lock", m, deadline,
                                 requeue);
        if (err) {
            /* Gone from the queue: if it was the last, the flags go too
             * (a release meanwhile finds an empty queue all the same). */
            green__spin_lock(&m->lock);
            if (!m->q.head)
                atomic_fetch_and(&m->state, ~(M_WAITERS | M_STARVING));
            green__spin_unlock(&m->lock);
            atomic_fetch_sub(&m->waiting, 1);
            return err;
        }
        if (wt.handoff) {
            set_owner(m, self);
            atomic_fetch_sub(&m->waiting, 1);
            return 0;
        }
        requeue = true;              /* lost to a barger: back to the head */
    }
}

/* Out of line: inlined, it made every uncontended lock pay for its frame.
 * Spin a little, then wait -- first looking for a lock cycle the wait
 * would close (cycle.c). */
static __attribute__((noinline)) int lock_slow(struct green__mutex *m, struct green__worker *w,
                                               struct green__thread *self, uint64_t deadline)
{
    for (int round = 0; can_spin(m, w, round); round++) {
        for (int i = 0; i < GREEN_SPIN_PAUSES; i++)
            green__cpu_relax();
        uint32_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
        if (!(s & M_LOCKED) &&
            atomic_compare_exchange_strong_explicit(&m->state, &s, s | M_LOCKED,
                                                    memory_order_acquire,
                                                    memory_order_relaxed)) {
            set_owner(m, self);
            return 0;
        }
    }
    int err = green__lockwait_begin(w, self, m,
                                    GREEN_LW_GREEN | (deadline != GREEN_FOREVER ? GREEN_LW_TIMED : 0),
                                    "green_mutex_lock");
    if (err)
        return err;
    err = lock_wait(m, w, self, deadline);
    green__lockwait_end(self);
    return err;
}

int green_mutex_lock_until(green_mutex_t *mp, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, mp);
    if (err)
        return err;
    struct green__mutex *m = green__mutex_impl(mp);
    uint32_t zero = 0;
    if (GREEN_LIKELY(atomic_compare_exchange_strong_explicit(
            &m->state, &zero, M_LOCKED, memory_order_acquire, memory_order_relaxed))) {
        set_owner(m, self);
        return 0;
    }
    if (green__mutex_held_by(m, self))
        return EDEADLK;
    return lock_slow(m, w, self, deadline);
}

int green_mutex_lock(green_mutex_t *m)
{
    return green_mutex_lock_until(m, GREEN_FOREVER);
}

int green_mutex_trylock(green_mutex_t *mp)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, mp);
    if (err)
        return err;
    struct green__mutex *m = green__mutex_impl(mp);
    uint32_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
    do {
        if (s & M_LOCKED)
            return EBUSY;
    } while (!atomic_compare_exchange_weak_explicit(&m->state, &s, s | M_LOCKED,
                                                    memory_order_acquire,
                                                    memory_order_relaxed));
    set_owner(m, self);
    return 0;
}

static void unlock_slow(struct green__mutex *m, struct green__worker *w)
{
    green__spin_lock(&m->lock);
    struct green__waiter *wt = green__wq_claim(&m->q);
    struct green__thread *t = wt ? wt->t : NULL;
    bool more = m->q.head != NULL;
    uint32_t s = atomic_load(&m->state);
    if (!wt) {
        atomic_store(&m->state, 0);
    } else if (s & M_STARVING) {
        /* Hand over: LOCKED stays set, so nobody barges in between. */
        wt->handoff = true;
        set_owner(m, t);
        bool still = more && green__now(w->rt) - wt->since >= GREEN_STARVE_NS;
        atomic_store(&m->state, M_LOCKED | (more ? M_WAITERS : 0) | (still ? M_STARVING : 0));
    } else {
        atomic_store(&m->state, more ? M_WAITERS : 0);
    }
    green__spin_unlock(&m->lock);
    if (t)
        green__ready(w, t, true);
}

int green_mutex_unlock(green_mutex_t *mp)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, mp);
    return err ? err : green__mutex_unlock(w, self, mp);
}

/* No safepoint poll here: green_cond_wait unlocks while it is already
 * claimable (green__park_prepare), where a yield would let a waker queue
 * the thread a second time. */
int green__mutex_unlock(struct green__worker *w, struct green__thread *self,
                        green_mutex_t *mp)
{
    struct green__mutex *m = green__mutex_impl(mp);
    if (!green__mutex_held_by(m, self) || !(atomic_load(&m->state) & M_LOCKED))
        return EPERM;
    set_owner(m, NULL);
    uint32_t locked = M_LOCKED;
    if (GREEN_LIKELY(atomic_compare_exchange_strong_explicit(
            &m->state, &locked, 0, memory_order_release, memory_order_relaxed)))
        return 0;
    unlock_slow(m, w);
    return 0;
}

/* For green_cond_wait: does the calling thread own m? */
bool green__mutex_owned(green_mutex_t *mp, struct green__thread *self)
{
    return green__mutex_held_by(green__mutex_impl(mp), self);
}
