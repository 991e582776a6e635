/* A library the safepoint and hijack tests dlopen: CPU hogs that make no
 * calls, and return values in registers. */
#include <stdint.h>
#include <x86intrin.h>

/* Spin until the TSC passes `until`; returns the iterations done. */
uint64_t spin_until_tsc(uint64_t until)
{
    uint64_t n = 0;
    while (__rdtsc() < until)
        for (int i = 0; i < 1024; i++)
            __asm__ volatile("" : "+r"(n));
    return n;
}

/* Spin until `until`, then hand a and b back in rax:rdx. */
struct pair {
    uint64_t a, b;
};
struct pair spin_pair(uint64_t until, uint64_t a, uint64_t b)
{
    spin_until_tsc(until);
    return (struct pair){ a, b };
}

/* Spin until `until`, then hand 2x back in xmm0. */
double spin_double(uint64_t until, double x)
{
    spin_until_tsc(until);
    return 2.0 * x;
}

/* Call f: a library frame between the program's code and its callback. */
volatile int spin_calls;
void spin_call(void (*f)(void))
{
    f();
    spin_calls++;
}
