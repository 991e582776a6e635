/*
 * Preemption tracing, for test builds only (libgreen-trace, built with -DGREEN_TEST_TRACE).
 *
 * The tests must check where preemptions were taken with something other
 * than the code that decided: here each taken preemption's frames are read
 * with glibc's backtrace() -- libgcc's unwinder, not libunwind -- from
 * green__preempt_switch, before the switch, and handed to a callback the
 * test installs.  The callback runs on the preempted thread, inside
 * libgreen's switch path, so a signal landing in it is refused (its caller
 * is libgreen).  Never part of the installed library.
 */
#include "signals.h"

#include <execinfo.h>
#include <stdatomic.h>
#include <time.h>
#include <x86intrin.h>

typedef void green_trace_fn(void *const *ip, int n, bool deferred);

GREEN_API void green_trace_set(green_trace_fn *fn);

static _Atomic(green_trace_fn *) trace_fn;

void green_trace_set(green_trace_fn *fn)
{
    void *warm[4];
    /* The first backtrace() loads libgcc_s (dlopen, malloc): do it here,
     * not in a preempted thread. */
    backtrace(warm, 4);
    atomic_store(&trace_fn, fn);
}

void green__test_trace_preempt(bool deferred)
{
    green_trace_fn *fn = atomic_load(&trace_fn);
    if (!fn)
        return;
    void *ip[48];
    int n = backtrace(ip, 48);
    fn(ip, n, deferred);
}

/* ---- The stages' costs ----------------------------------------------------
 *
 * Per worker, the stamps of the preemption in progress: ENTRY .. SAVED on
 * the preempted thread, RESUMED when the next thread comes back from its own
 * preemption on the same worker (preempted threads stay on their worker).
 * A complete set becomes one sample.  Cycles from the TSC; the delivery
 * delay is CLOCK_MONOTONIC at ENTRY minus the slice timer's deadline.
 */
struct green_trace_cost {
    uint64_t deliver_ns;             /* timer deadline -> handler; 0: unknown */
    uint32_t decide, walk, save, arm, switch_; /* TSC cycles of each stage */
};

/* Record into buf (cap samples) from now on; NULL stops.  Returns how many
 * the previous recording kept. */
GREEN_API size_t green_trace_costs(struct green_trace_cost *buf, size_t cap);

#define TRACE_WORKERS 64

static struct {
    uint64_t st[GREEN_STAMP_RESUMED + 1];
    unsigned have;                   /* bit per stamp */
    uint64_t deadline, deliver_ns;
} wt[TRACE_WORKERS];

static struct green_trace_cost *cost_buf;
static size_t cost_cap;
static _Atomic size_t cost_n;

size_t green_trace_costs(struct green_trace_cost *buf, size_t cap)
{
    size_t n = atomic_load(&cost_n), old_cap = cost_cap;
    cost_buf = NULL;
    atomic_store(&cost_n, 0);
    for (unsigned i = 0; i < TRACE_WORKERS; i++)
        wt[i].have = 0;
    cost_cap = cap;
    cost_buf = buf;
    return n < old_cap ? n : old_cap;
}

void green__test_trace_deadline(struct green__worker *w, uint64_t ns)
{
    if (w->index < TRACE_WORKERS)
        wt[w->index].deadline = ns;
}

/* AS-safe */
void green__test_trace_stamp(struct green__worker *w, enum green__stamp s)
{
    if (!cost_buf || w->index >= TRACE_WORKERS)
        return;
    __typeof__(wt[0]) *x = &wt[w->index];
    uint64_t now = __rdtsc();
    if (s == GREEN_STAMP_ENTRY) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        x->deliver_ns = x->deadline && at > x->deadline ? at - x->deadline : 0;
        x->deadline = 0;             /* one signal per armed deadline */
        x->have = 0;
        now = __rdtsc();             /* the clock read is not the decision */
    }
    x->st[s] = now;
    x->have |= 1u << s;
    if (s != GREEN_STAMP_RESUMED)
        return;
    if (x->have == (1u << (GREEN_STAMP_RESUMED + 1)) - 1) {
        size_t i = atomic_fetch_add(&cost_n, 1);
        if (i < cost_cap)
            cost_buf[i] = (struct green_trace_cost){
                .deliver_ns = x->deliver_ns,
                .decide = (uint32_t)(x->st[GREEN_STAMP_DECIDED] - x->st[GREEN_STAMP_ENTRY]),
                .walk = (uint32_t)(x->st[GREEN_STAMP_WALKED] - x->st[GREEN_STAMP_DECIDED]),
                .save = (uint32_t)(x->st[GREEN_STAMP_SAVED] - x->st[GREEN_STAMP_WALKED]),
                .arm = (uint32_t)(x->st[GREEN_STAMP_ARMED] - x->st[GREEN_STAMP_SAVED]),
                .switch_ = (uint32_t)(x->st[GREEN_STAMP_RESUMED] - x->st[GREEN_STAMP_ARMED]),
            };
    }
    x->have = 0;
}
