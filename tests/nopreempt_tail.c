/* A GREEN_NOPREEMPT function whose last act is a call: at -O2 a compiler
 * turns that call into a jump (a tail call) unless told not to, and the
 * protected frame is gone while the callee runs.  Built three times by
 * Makefile.am, at -O2 whatever CFLAGS say: with gcc and with clang (the
 * macro as shipped), and as a control with the section alone (the macro as
 * it was: the tail call stays).  VARIANT gives each build its own names. */
#include <stdint.h>
#include <x86intrin.h>

#include "green.h"

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define NAME(x) CAT(VARIANT, x)

#ifdef TAIL_CONTROL
#define PROTECTED __attribute__((section("green_nopreempt"), noinline))
#else
#define PROTECTED GREEN_NOPREEMPT
#endif

volatile int NAME(in_crit);

/* Spins until the TSC passes until, then leaves the critical part. */
__attribute__((noinline)) void NAME(work)(uint64_t until)
{
    while (__rdtsc() < until)
        for (int i = 0; i < 256; i++)
            __asm__ volatile("" ::: "memory");
    NAME(in_crit) = 0;
}

PROTECTED void NAME(crit)(uint64_t until)
{
    NAME(in_crit) = 1;
    NAME(work)(until);
}
