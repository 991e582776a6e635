/*
 * Slices: the reduction budget's counter, and deterministic runs.
 *
 * A slice is what a thread runs between two switches of its worker.  With a
 * reduction budget (GREEN_PREEMPT=budget or both) each slice gets
 * rt->slice_budget reductions in the worker's green__reductions, a
 * thread-local counter that everything charged counts down: every call into
 * libgreen (green__poll), green_reduce, and -- through the address
 * green_budget_counter hands out -- the function-entry hooks of code built
 * with -finstrument-functions (libgreen-budget, safepoints/budget.c).  At
 * zero the thread yields at the next of those points that may switch.
 * Without a budget a slice gets GREEN_BUDGET_NONE, which no run counts down
 * in a lifetime, so the same code paths cost one decrement and a branch that
 * is never taken.  A counter per OS thread, not per green thread: a slice
 * never outlives its switch, and the switch sets it (green__slice_start).
 *
 * Deterministic runs (green_config_t.deterministic) have one worker, and
 * every choice in them is drawn from the run's seed through that worker's
 * random generator:
 *   - which runnable thread runs next: all of them wait in rt->detq, and a
 *     pick takes one at random (switch.c, det_pick);
 *   - how long a slice is: 1 .. budget reductions, at random, so
 *     preemptions land at different points under different seeds -- the
 *     point of a run that hunts for races;
 *   - select's choice among ready cases (select.c, as always).
 * Time is virtual: rt->vnow starts at GREEN_DET_EPOCH and moves on by the
 * reductions each slice consumed (1 ns each), and when every thread waits,
 * straight to the earliest deadline (green__det_idle).  Nothing in a run
 * then depends on the machine, and a run's schedule -- the order in which
 * threads took the CPU and each slice's length -- hashes to rt->digest
 * (FNV-1a over each slice's thread number and length).
 *
 * What a deterministic run cannot make deterministic: other OS threads that
 * touch the run's objects, and anything the program reads from outside
 * (the real clock, files, the network, addresses).  The monitor still runs,
 * for its table refresh, but never moves a thread.
 *
 * Rejected: seeding the existing queues' order instead of a pool.  Work
 * stealing, the LIFO slot and the fairness period all reorder threads in
 * ways the seed would not reach; with one worker the pool is simpler and
 * every pick is one draw.
 */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>

__thread int64_t green__reductions __attribute__((tls_model("initial-exec")));
_Atomic uint64_t green__budget_yields, green__budget_refused;

#define FNV_PRIME 0x100000001b3u

static void mix(struct green__rt *rt, uint64_t v)
{
    rt->digest = (rt->digest ^ v) * FNV_PRIME;
}

/* The virtual clock `by` ns after `now`.  It stops short of GREEN_FOREVER:
 * a sleep of UINT64_MAX ns takes it there (green__det_idle), and it must
 * not wrap round to the past. */
static uint64_t det_later(uint64_t now, uint64_t by)
{
    return by < GREEN_FOREVER - 1 - now ? now + by : GREEN_FOREVER - 1;
}

/* Requires: a deterministic run, on its worker's OS thread. */
void green__det_slice(struct green__worker *w, struct green__thread *to, bool switching)
{
    struct green__rt *rt = w->rt;
    int64_t used = w->slice_len - green__reductions;
    if (used > 0)
        rt->vnow = det_later(rt->vnow, (uint64_t)used);
    int64_t len = rt->slice_budget;
    if (to != &w->g0 && len != GREEN_BUDGET_NONE)
        len = 1 + (int64_t)green__rand_below(&w->rng, (uint32_t)len);
    if (to != &w->g0 && switching) {
        rt->switches++;
        mix(rt, to->seq);
        mix(rt, (uint64_t)len);
    }
    w->slice_len = len;
    green__reductions = len;
}

/* Requires: a deterministic run.  On its worker: the clock as of now in the
 * running slice. */
uint64_t green__det_now(struct green__rt *rt)
{
    struct green__worker *w = green__worker_self();
    uint64_t now = rt->vnow;
    if (w && w->rt == rt && w->slice_len > green__reductions)
        now = det_later(now, (uint64_t)(w->slice_len - green__reductions));
    return now;
}

int green__det_reserve(struct green__rt *rt, size_t live)
{
    if (live <= rt->detcap)
        return 0;
    size_t cap = rt->detcap ? rt->detcap : 64;
    while (cap < live)
        cap *= 2;
    struct green__thread **q = realloc(rt->detq, cap * sizeof *q);
    if (!q)
        return ENOMEM;
    rt->detq = q;
    rt->detcap = cap;
    return 0;
}

void green__det_push(struct green__rt *rt, struct green__thread *t)
{
    green__assert(rt->detn < rt->detcap);
    rt->detq[rt->detn++] = t;
}

struct green__thread *green__det_take(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    if (rt->detn == 0)
        return NULL;
    uint32_t i = green__rand_below(&w->rng, (uint32_t)rt->detn);
    struct green__thread *t = rt->detq[i];
    rt->detq[i] = rt->detq[--rt->detn];
    return t;
}

int green_schedule_digest(uint64_t *digest, uint64_t *seed)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return EPERM;
    if (!w->rt->det)
        return EINVAL;
    if (digest)
        *digest = w->rt->digest;
    if (seed)
        *seed = w->rt->cfg.seed;
    return 0;
}

/* The run's clock, for the program (green__now's). */
uint64_t green_now_ns(void)
{
    struct green__worker *w = green__worker_self();
    if (w && w->rt->det) {
        green__reductions--;         /* a clock read is a reduction: time moves */
        return green__det_now(w->rt);
    }
    return green__clock_ns();
}
