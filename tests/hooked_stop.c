/* Stops itself with SIGTRAP while a return is hooked, for tests/hooked_gdb.sh.
 *
 * One worker, a 100 us quantum, a bystander thread keeping it wanted; the
 * main thread sorts two ints through qsort_r with a comparator that spins in
 * the program's own code until a refused preemption has hooked qsort's
 * return (qsort is libc's, the outermost frame the program does not own),
 * then raises SIGTRAP.  Under gdb, `bt` must read through the hooked
 * return -- green__hooked_return, then sort_caller and hooked_thread -- to
 * the thread's base.  Run alone it dies of the SIGTRAP: it is only for gdb.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "green.h"

static atomic_int stop;

static uint64_t hijacks(void)
{
    green_stats_t s;
    green_stats(&s);
    return s.hijacks;
}

static void *bystander(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        __asm__ volatile("" ::: "memory");
    return NULL;
}

static int stop_when_hooked(const void *a, const void *b, void *arg)
{
    uint64_t before = *(uint64_t *)arg;
    while (hijacks() == before)
        for (int i = 0; i < 20000; i++)
            __asm__ volatile("" ::: "memory");
    raise(SIGTRAP);
    return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) void sort_caller(int *v)
{
    uint64_t before = hijacks();
    qsort_r(v, 2, sizeof v[0], stop_when_hooked, &before);
}

__attribute__((noinline)) void *hooked_thread(void *arg)
{
    (void)arg;
    green_t b;
    if (green_spawn(&b, bystander, NULL) != 0)
        abort();
    green_yield();
    int v[2] = { 2, 1 };
    sort_caller(v);
    atomic_store(&stop, 1);
    green_join(b, NULL);
    return NULL;
}

int main(void)
{
    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        return 2;
    cfg.workers = 1;
    cfg.quantum_us = 100;
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    return green_run(hooked_thread, NULL, &cfg, NULL) ? 1 : 0;
}
