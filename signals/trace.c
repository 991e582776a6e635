/*
 * Preemption tracing, for test builds only (libgreen-trace, GREEN_TRACE).
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

void green__trace_preempt(bool deferred)
{
    green_trace_fn *fn = atomic_load(&trace_fn);
    if (!fn)
        return;
    void *ip[48];
    int n = backtrace(ip, 48);
    fn(ip, n, deferred);
}
