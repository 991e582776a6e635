/*
 * Small things every file of sched/ needs: panics, the clock, futexes, a
 * spinlock's slow path, errno access that survives migration, AS-safe output,
 * installing a signal handler that chains to the old one, and a PRNG.
 *
 * Why green__errno is out of line: glibc declares __errno_location() const,
 * so a compiler may compute &errno once per function and reuse it across a
 * context switch -- after which the green thread may run on another worker,
 * whose errno lives elsewhere.  An opaque function with a memory clobber is
 * evaluated afresh at every use.
 */
#include "sched.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void green__panic(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    (void)n;
    green__write_str(2, "libgreen: panic: ");
    green__write_str(2, buf);
    green__write_str(2, "\n");
    abort();
}

uint64_t green__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void green__futex_wait(_Atomic uint32_t *word, uint32_t val, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != GREEN_FOREVER) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
        ts.tv_nsec = (long)(deadline_ns % 1000000000u);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tsp,
            NULL, FUTEX_BITSET_MATCH_ANY);
}

void green__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

void green__spin_lock_slow(green__spin_t *l)
{
    for (unsigned spins = 0;; spins++) {
        uint32_t z = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->v, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        /* The holder's OS thread may have been descheduled: after a while,
         * give the CPU away instead of burning it. */
        if (spins < 128)
            green__cpu_relax();
        else
            sched_yield();
    }
}

__attribute__((noinline)) int *green__errno(void)
{
    int *p = &errno;
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* AS-safe */
void green__write_str(int fd, const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    while (n > 0) {
        ssize_t w = green__sys_write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* AS-safe */
void green__write_u64(int fd, uint64_t v)
{
    char buf[24];
    int i = (int)sizeof buf - 1;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    green__write_str(fd, buf + i);
}

int green__sigaction_chain(int sig, const struct sigaction *sa, struct sigaction *old)
{
    struct sigaction prev;
    if (sigaction(sig, NULL, old) != 0 || sigaction(sig, sa, &prev) != 0)
        return -1;
    /* Changed by another thread between the two calls: take the later. */
    if (prev.sa_handler != old->sa_handler || prev.sa_flags != old->sa_flags)
        *old = prev;
    return 0;
}

/* splitmix64: small state, good enough for victim choice and select order. */
uint64_t green__rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

uint32_t green__rand_below(uint64_t *state, uint32_t n)
{
    /* Lemire's multiply-shift: no division, negligible bias for small n. */
    return (uint32_t)(((green__rand_next(state) & 0xffffffffu) * (uint64_t)n) >> 32);
}
