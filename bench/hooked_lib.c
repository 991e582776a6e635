/* A shared library the program does not own, for bench/safepoint_bench's
 * hooked-return figure: libgreen never interrupts code in here, and takes a
 * preemption refused here the moment hooked_spin returns into the program.
 * hooked_spin notes the TSC, and who returned, as its last act. */
#include <stdint.h>
#include <x86intrin.h>

volatile uint64_t hooked_last_tsc;
volatile int hooked_last_who;

/* Spin until the TSC passes until, then stamp the return. */
void hooked_spin(uint64_t until, int who)
{
    while (__rdtsc() < until)
        for (int i = 0; i < 64; i++)
            __asm__ volatile("" ::: "memory");
    hooked_last_who = who;
    hooked_last_tsc = __rdtsc();
}
