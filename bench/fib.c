/* Naive Fibonacci, the call-heavy workload of bench/budget_bench: built
 * twice from this one file, plain (fib_plain) and with
 * -finstrument-functions (fib_instr), so the two differ in nothing but the
 * instrumentation.  FIB_NAME is set per build (Makefile.am). */
#include <stdint.h>

uint64_t FIB_NAME(unsigned n);

uint64_t FIB_NAME(unsigned n)
{
    return n < 2 ? n : FIB_NAME(n - 1) + FIB_NAME(n - 2);
}
