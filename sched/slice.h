/* Private to libgreen. */
/*
 * Slices (slice.c): the reduction budget's counter, the run's clock -- real
 * or a deterministic run's virtual one -- and the safepoint poll.
 */
#ifndef GREEN_SLICE_H
#define GREEN_SLICE_H

#include "rt.h"

/* slice.c: the reduction budget's counter, the virtual clock and the
 * schedule of deterministic runs. */
#define GREEN_BUDGET_NONE (INT64_MAX / 2)   /* a slice without a budget */
#define GREEN_DET_EPOCH 1000000000u         /* a deterministic run's clock starts at 1 s */
/* Reductions left in the running slice of this OS thread's worker: set at
 * every switch, counted down by polls, green_reduce and the instrumentation
 * hooks (through green_budget_counter). */
extern __thread int64_t green__reductions __attribute__((tls_model("initial-exec")));
extern _Atomic uint64_t green__budget_yields, green__budget_refused;
void green__det_slice(struct green__worker *w, struct green__thread *to, bool switching);
uint64_t green__det_now(struct green__rt *rt);
/* Make room in rt->detq for one more live thread.  0 or ENOMEM. */
int green__det_reserve(struct green__rt *rt, size_t live);
void green__det_push(struct green__rt *rt, struct green__thread *t);
/* A random one of the runnable threads, or NULL. */
struct green__thread *green__det_take(struct green__worker *w);
/* Is a timer pending?  Then the virtual clock jumps to it. */
bool green__det_idle(struct green__rt *rt);
/* The running slice of w ends and the one of `to` begins (a switch). */
static inline void green__slice_start(struct green__worker *w, struct green__thread *to)
{
    if (GREEN_UNLIKELY(w->rt->det))
        green__det_slice(w, to, true);
    else
        green__reductions = w->rt->slice_budget;
}
/* The running thread goes on with a new slice (it yielded, nobody else
 * could run). */
static inline void green__slice_refill(struct green__worker *w)
{
    if (GREEN_UNLIKELY(w->rt->det))
        green__det_slice(w, w->cur, false);
    else
        green__reductions = w->rt->slice_budget;
}
/* The run's clock: CLOCK_MONOTONIC, or a deterministic run's virtual one. */
static inline uint64_t green__now(struct green__rt *rt)
{
    return GREEN_UNLIKELY(rt->det) ? green__det_now(rt) : green__clock_ns();
}
/* Has deadline passed on the run's clock?  Reads it only for a real one. */
static inline bool green__expired(struct green__rt *rt, uint64_t deadline)
{
    return deadline != GREEN_FOREVER && deadline <= green__now(rt);
}
/* A safepoint poll on w's running green thread: charge one reduction, and
 * take a pending preemption or a spent budget unless inside
 * green_nopreempt_begin/end (the end polls).  Returns the worker the thread
 * runs on afterwards. */
static inline struct green__worker *green__poll(struct green__worker *w)
{
    bool spent = --green__reductions <= 0;
    if (GREEN_UNLIKELY(spent || __atomic_load_n(&w->cur->preempt_pending, __ATOMIC_RELAXED)))
        return green__take_deferred(w);  /* it checks for a nopreempt section */
    return w;
}

#endif /* GREEN_SLICE_H */
