/* Built with -finstrument-functions: every function entry here charges a
 * reduction (see budget_work.h). */
#include "budget_work.h"

#include <stdlib.h>

#include "green.h"

uint64_t bw_fib(unsigned n)
{
    return n < 2 ? n : bw_fib(n - 1) + bw_fib(n - 2);
}

__attribute__((noinline)) void bw_touch(void)
{
    __asm__ volatile("" ::: "memory");
}

static const atomic_ulong *watched;
static unsigned long watched_at;
static size_t moved;

static int cmp_watching(const void *a, const void *b)
{
    if (bw_fib(6) != 8)
        abort();
    if (atomic_load_explicit(watched, memory_order_relaxed) != watched_at)
        moved++;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

size_t bw_sort_watching(int64_t *v, size_t n, const atomic_ulong *other)
{
    watched = other;
    watched_at = atomic_load(other);
    moved = 0;
    qsort(v, n, sizeof v[0], cmp_watching);
    return moved;
}

GREEN_NOPREEMPT int bw_nopreempt_fib(unsigned n, const atomic_ulong *other, uint64_t *result)
{
    unsigned long before = atomic_load(other);
    *result = bw_fib(n);
    return atomic_load(other) != before;
}
