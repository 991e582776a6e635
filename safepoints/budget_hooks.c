/*
 * libgreen-budget: the function-entry hooks of the reduction budget.
 *
 * Code built with -finstrument-functions calls __cyg_profile_func_enter at
 * the entry of every function and __cyg_profile_func_exit at every return.
 * Here the entry charges one reduction to the running slice and, when none
 * are left, lets libgreen decide whether and where to yield
 * (green_budget_spent, safepoints/budget.c); the exit does nothing.  clang's
 * cheaper -finstrument-function-entry-bare calls __cyg_profile_func_enter_bare
 * (entry only, no arguments), which is the same charge.
 *
 * The counter is libgreen's, per OS thread; its address is asked for once
 * per thread and kept in a thread-local pointer, so a charge is a load, a
 * decrement and a branch.  A thread that is no green thread gets a counter
 * that never reaches zero after its first call.
 *
 * This is its own library -- and the only one that exports these names --
 * so that linking libgreen binds nothing a profiler may want; see budget.c.
 * It must never be built with -finstrument-functions itself.
 */
#include "green.h"

#include <stdbool.h>

/* In the section green_runtime: libgreen's safepoint table counts these
 * functions as libgreen's own, so the budget's walk skips their frames and a
 * preemption signal never lands in them. */
#define RUNTIME __attribute__((section("green_runtime"), no_instrument_function))
#define HOOK __attribute__((visibility("default"))) RUNTIME

static __thread int64_t *left __attribute__((tls_model("initial-exec")));

/* The first charge on this OS thread, or the last of a slice. */
static __attribute__((noinline, cold)) RUNTIME void charge_slow(bool first)
{
    if (first) {
        left = green_budget_counter();
        if (--*left > 0)
            return;
    }
    green_budget_spent();
}

static inline __attribute__((always_inline)) void charge(void)
{
    int64_t *p = left;
    if (__builtin_expect(p == NULL, 0))
        charge_slow(true);
    else if (__builtin_expect(--*p <= 0, 0))
        charge_slow(false);
}

HOOK void __cyg_profile_func_enter(void *fn, void *call_site)
{
    (void)fn, (void)call_site;
    charge();
}

HOOK void __cyg_profile_func_exit(void *fn, void *call_site)
{
    (void)fn, (void)call_site;
}

HOOK void __cyg_profile_func_enter_bare(void)
{
    charge();
}
