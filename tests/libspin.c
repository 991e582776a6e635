/* A library the safepoint tests dlopen: a CPU hog that makes no calls. */
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
