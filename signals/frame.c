/*
 * The trampoline's frame on a green thread's stack: how big it is, and
 * whether it fits.
 *
 * Both trampolines (trampoline_x86_64.S) build the same frame below the
 * interrupted stack pointer: past the red zone, the return address, rflags
 * and the fifteen general registers, then the whole extended state with
 * XSAVE, 64-byte aligned -- as large as the CPU's enabled state, which
 * CPUID says before each run that preempts (green__xsave_setup) -- and
 * below it the C frames of the switch.  The handler preempts, and a
 * refused preemption's return is hooked (hijack.c), only where all of it
 * fits in the thread's stack: otherwise the handler refuses
 * (refused_headroom) and no hook is placed, never a stack overflow.
 */
#include "signals.h"

#include <cpuid.h>
#include <errno.h>

#define GREEN_HEADROOM 8192u           /* stack for the switch's C frames */

uint64_t green__xsave_size;

int green__xsave_setup(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return ENOTSUP;
    __cpuid_count(0xd, 0, a, b, c, d);
    if (b < 576)
        return ENOTSUP;
    green__xsave_size = b;
    return 0;
}

/* AS-safe */
bool green__preempt_room(const struct green__thread *t, uintptr_t sp)
{
    return sp >= (uintptr_t)green__stack_lo(t) + 136 + 64 + green__xsave_size + GREEN_HEADROOM &&
           sp <= (uintptr_t)t->stack_hi;
}
