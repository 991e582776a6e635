/* Naive Fibonacci, the call-heavy workload of bench/budget_bench: built
 * twice from this one file, plain and with -finstrument-functions, so the
 * two builds differ in nothing but the instrumentation.  FIB_NAME is set
 * per build (Makefile.am): fib_plain / fib_instr, and *_calls.
 *
 * FIB_NAME is the textbook function, which gcc -O2 rewrites: it turns one
 * of the two recursive calls into a loop and inlines levels of the other,
 * so the plain build makes a fraction of the calls.  The instrumented build
 * keeps a hook call for every call of the source, inlined or not.
 * FIB_NAME##_calls keeps every call a real call in both builds (no
 * inlining, and a barrier that leaves no call in tail position): the
 * hooks' cost per call, with the same calls on both sides. */
#include <stdint.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FIB_CALLS CAT(FIB_NAME, _calls)

uint64_t FIB_NAME(unsigned n);
uint64_t FIB_CALLS(unsigned n);

uint64_t FIB_NAME(unsigned n)
{
    return n < 2 ? n : FIB_NAME(n - 1) + FIB_NAME(n - 2);
}

__attribute__((noinline, noclone)) uint64_t FIB_CALLS(unsigned n)
{
    if (n < 2)
        return n;
    uint64_t a = FIB_CALLS(n - 1);
    uint64_t b = FIB_CALLS(n - 2);
    __asm__("" : "+r"(a), "+r"(b));
    return a + b;
}
