/* Private to libgreen. */
/*
 * A green mutex's layout (mutex.c has the design), and who holds one: for
 * mutex.c, and for the files that name a holder -- dumps (dump.c) and lock
 * cycles (cycle.c).
 */
#ifndef GREEN_MUTEX_H
#define GREEN_MUTEX_H

#include "sched.h"

#define M_LOCKED   1u
#define M_WAITERS  2u
#define M_STARVING 4u
#define GREEN_STARVE_NS 1000000u
#define GREEN_SPIN_ROUNDS 4       /* as Go's active_spin */
#define GREEN_SPIN_PAUSES 30      /* as Go's active_spin_cnt */

struct green__mutex {
    _Atomic uint32_t state;
    green__spin_t lock;
    _Atomic(struct green__thread *) owner;
    struct green__wq q;
    _Atomic uint32_t waiting;        /* threads inside lock_slow's wait */
    _Atomic uint64_t owner_id;       /* owner's id: a control block is reused */
};

_Static_assert(sizeof(struct green__mutex) <= sizeof(green_mutex_t), "green_mutex_t too small");
_Static_assert(_Alignof(struct green__mutex) <= _Alignof(green_mutex_t), "green_mutex_t misaligned");

static inline struct green__mutex *green__mutex_impl(green_mutex_t *m) { return (struct green__mutex *)(void *)m; }

static inline struct green__thread *green__mutex_owner(struct green__mutex *m)
{
    return atomic_load_explicit(&m->owner, memory_order_relaxed);
}

/* Is t the owner?  The control block of an owner that finished holding m
 * may be another thread's by now: the id tells them apart. */
static inline bool green__mutex_held_by(struct green__mutex *m, struct green__thread *t)
{
    return green__mutex_owner(m) == t && atomic_load_explicit(&m->owner_id, memory_order_relaxed) == t->id;
}

/* The id of m's holder; 0 when free.  Only while m cannot be freed. */
static inline uint64_t green__mutex_holder(const green_mutex_t *m)
{
    struct green__mutex *x = green__mutex_impl((green_mutex_t *)m);
    return green__mutex_owner(x) ? atomic_load_explicit(&x->owner_id, memory_order_relaxed) : 0;
}

#endif /* GREEN_MUTEX_H */
