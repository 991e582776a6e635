/* Private to libgreen. */
/*
 * The run queues' calls (runq.c): a worker's LIFO slot and ring, stealing,
 * and the run's global queue.
 */
#ifndef GREEN_RUNQ_H
#define GREEN_RUNQ_H

#include "rt.h"

/* runq.c */
/* Put t (may be NULL) in w's LIFO slot; returns what was there.
 * Requires: w is the caller's worker.  No atomic read-modify-write: only a
 * rescue (green__runnext_rescue) ever races with the owner, and it pays for
 * both sides with a membarrier.  See runq.c. */
static inline struct green__thread *green__runnext_swap(struct green__worker *w,
                                                        struct green__thread *t)
{
    if (GREEN_UNLIKELY(w->rt->runnext_atomic))
        return atomic_exchange_explicit(&w->runnext, t, memory_order_acq_rel);
    for (;;) {
        atomic_store_explicit(&w->rn_busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        if (GREEN_LIKELY(!atomic_load_explicit(&w->rn_rescue, memory_order_acquire)))
            break;
        atomic_store_explicit(&w->rn_busy, 0, memory_order_release);
        while (atomic_load_explicit(&w->rn_rescue, memory_order_acquire))
            green__cpu_relax();
    }
    struct green__thread *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    atomic_store_explicit(&w->runnext, t, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->rn_busy, 0, memory_order_release);
    return old;
}
/* Take w's LIFO thread from outside (the monitor, when w is stuck).  */
struct green__thread *green__runnext_rescue(struct green__worker *w);
/* Once per process: can rescues use membarrier?  Sets rt->runnext_atomic. */
void green__runnext_mode(struct green__rt *rt);
void green__runq_push(struct green__worker *w, struct green__thread *t);
struct green__thread *green__runq_pop(struct green__worker *w);
bool green__runq_empty(struct green__worker *w);
/* Steal about half of victim's queue into w's; returns one to run, or NULL. */
struct green__thread *green__runq_steal(struct green__worker *w,
                                        struct green__worker *victim);
void green__globq_push(struct green__rt *rt, struct green__thread *first,
                       struct green__thread *last, size_t n);
/* Take a fair share of the global queue: one to run, the rest into w's. */
struct green__thread *green__globq_take(struct green__worker *w, size_t max);

#endif /* GREEN_RUNQ_H */
