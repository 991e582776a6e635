/*
 * Lock-holder handoff: a green thread about to wait for a lock whose holder
 * is runnable but not running gives its turn to that holder.
 *
 * Where such a holder waits.  A thread preempted while it holds a green
 * mutex goes to its worker's pinned queue, behind every thread that
 * worker's ring held at that moment (ready.c): with ten CPU hogs queued
 * there, the lock stays held for ten quanta while its waiters wait.  A
 * holder of a pthread mutex that was made runnable waits in the same queue
 * (it runs only on the worker whose OS thread owns the mutex).  A waiter
 * that finds the holder there (t->pinned, read as a hint) asks that worker
 * to run it next (w->handoff); the worker takes it out of its pinned queue
 * at its next pick -- at once when the waiter parks on that same worker,
 * else when the thread running there next switches or is preempted.  A
 * holder queued in a ring (woken, not preempted) keeps its place: a ring
 * slot is claimed by whoever pops or steals it, so it cannot be taken out
 * of the middle.
 *
 * One request per worker at a time (a compare-and-swap from NULL); a
 * request whose holder has gone on meanwhile finds nothing and is dropped.
 * Deterministic runs draw every pick from the seed and take no handoff.
 *
 * A holder parked on something else cannot be handed off to: lockwarn.c
 * names it.
 */
#include "sched.h"
#include "trace.h"

_Atomic uint64_t green__lock_handoffs;

void green__handoff_ask(struct green__thread *self, struct green__thread *h)
{
    if (!h || h == self || !__atomic_load_n(&h->pinned, __ATOMIC_RELAXED) ||
        atomic_load_explicit(&h->on_cpu, memory_order_relaxed) ||
        green__state(h) != GREEN_T_RUNNABLE)
        return;
    struct green__worker *v = __atomic_load_n(&h->home, __ATOMIC_RELAXED);
    if (!v || v->rt != self->rt || v->rt->det)
        return;
    struct green__thread *none = NULL;
    atomic_compare_exchange_strong_explicit(&v->handoff, &none, h, memory_order_release,
                                            memory_order_relaxed);
}

struct green__thread *green__handoff_take(struct green__worker *w)
{
    struct green__thread *h = atomic_exchange_explicit(&w->handoff, NULL, memory_order_acquire);
    struct green__thread *prev = NULL;
    for (struct green__thread *t = w->pinned_head; t; prev = t, t = t->next) {
        if (t != h)
            continue;
        if (prev)
            prev->next = t->next;
        else
            w->pinned_head = t->next;
        if (w->pinned_tail == t)
            w->pinned_tail = prev;
        green__pinned_left(w, t, !prev);
        atomic_fetch_add_explicit(&green__lock_handoffs, 1, memory_order_relaxed);
        green__trace(w, GREEN_TR_HANDOFF, t->id, 0, 0);
        return t;
    }
    return NULL;
}
