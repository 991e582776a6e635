/* Helpers shared by the Criterion suites in tests/test_*.c: units, the
 * pointer <-> integer casts used to pass small values through void *, a
 * green_run wrapper, and a monotonic clock.  Everything is a macro or a
 * static inline function, so a suite that does not use a helper pays nothing
 * for it.  tests/stress/stress.c is a plain program, not a Criterion suite,
 * and does not include this.
 */
#ifndef GREEN_TESTS_COMMON_H
#define GREEN_TESTS_COMMON_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <time.h>

#include "green.h"

#define US 1000u
#define MS (1000u * 1000u)
#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

/* The defaults (and GREEN_* variables), on `workers` workers. */
static inline green_config_t config(unsigned workers)
{
    green_config_t cfg;
    cr_assert_eq(green_config_init(&cfg), 0, "green_config_init failed");
    cfg.workers = workers;
    return cfg;
}

/* Run fn on `workers` workers (preempt < 0: the default mode); *ret, when
 * ret is not NULL, gets fn's result.  Returns green_run's result. */
static inline int run(void *(*fn)(void *), void *arg, unsigned workers, int preempt,
                      void **ret)
{
    green_config_t cfg = config(workers);
    if (preempt >= 0)
        cfg.preempt = preempt;
    return green_run(fn, arg, &cfg, ret);
}

/* On one worker, cooperative: after this, every other runnable thread has
 * run until it parked.  The short sleep covers runtimes that spin a while
 * before parking. */
static inline void settle(void)
{
    for (int i = 0; i < 10; i++)
        green_yield();
    green_sleep_ns(2 * MS);
    for (int i = 0; i < 10; i++)
        green_yield();
}

/* CLOCK_MONOTONIC in nanoseconds, read without the runtime. */
static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
