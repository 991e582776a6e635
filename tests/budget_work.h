/* Code the budget tests run instrumented: tests/budget_work.c is built with
 * -finstrument-functions (tests/libbudgetwork.la), the suites that call it
 * are not. */
#ifndef GREEN_TESTS_BUDGET_WORK_H
#define GREEN_TESTS_BUDGET_WORK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Naive Fibonacci: fib(n) calls itself fib(n+1)*2-1 times. */
uint64_t bw_fib(unsigned n);
/* One function entry, nothing else. */
void bw_touch(void);
/* Sort n values with qsort and a comparator that makes instrumented calls
 * (a fib(6) each time) and checks that *other did not move while qsort ran:
 * returns how many comparisons saw it move. */
size_t bw_sort_watching(int64_t *v, size_t n, const atomic_ulong *other);
/* A GREEN_NOPREEMPT function that computes fib(n) with instrumented calls
 * and reports whether *other moved meanwhile. */
int bw_nopreempt_fib(unsigned n, const atomic_ulong *other, uint64_t *result);

#endif
