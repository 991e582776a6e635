/* Private to libgreen. */
/*
 * What every file of libgreen uses: the sanitizers' switches, the branch
 * hints, panics and assertions, the clock, futexes, the spin lock, libc's own
 * lock calls for libgreen's internal locks, and the context switch
 * (switch_x86_64.S).  Calls nothing above util.c, pthread_libc.c and
 * self.c.
 */
#ifndef GREEN_BASE_H
#define GREEN_BASE_H

#include "green.h"

#include <errno.h>
#include <pthread.h>
#include <sys/types.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define GREEN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREEN_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define GREEN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GREEN_TSAN 1
#endif
#endif
#ifdef GREEN_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#ifdef GREEN_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif
#ifdef GREEN_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define GREEN_NORETURN __attribute__((noreturn))
#define GREEN_LIKELY(x) __builtin_expect(!!(x), 1)
#define GREEN_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define GREEN_CACHELINE 64

/* ---- util.c ------------------------------------------------------------- */

/* Impossible state: print "libgreen: panic: ..." and abort. */
GREEN_NORETURN void green__panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* An assertion that stays in release builds. */
#define green__assert(cond)                                                    \
    do {                                                                       \
        if (GREEN_UNLIKELY(!(cond)))                                           \
            green__panic("%s:%d: assertion failed: %s", __FILE__, __LINE__,    \
                         #cond);                                               \
    } while (0)

uint64_t green__clock_ns(void);
/* Wait while *word == val, until deadline_ns (CLOCK_MONOTONIC; GREEN_FOREVER
 * for none).  Spurious returns are allowed. */
void green__futex_wait(_Atomic uint32_t *word, uint32_t val, uint64_t deadline_ns);
void green__futex_wake(_Atomic uint32_t *word, int n);
/* &errno of the calling OS thread, read afresh: never cached across a switch. */
int *green__errno(void);
/* AS-safe: write a NUL-terminated string / an unsigned number to fd. */
void green__write_str(int fd, const char *s);
void green__write_u64(int fd, uint64_t v);
/* sigaction(sig, sa, old) for a handler that passes what is not its own to
 * *old: *old is filled before sa is installed.  (sigaction(2) fills it only
 * after, and a signal already on its way runs the new handler in between,
 * which would find *old empty -- SIG_DFL -- and kill the process.) */
int green__sigaction_chain(int sig, const struct sigaction *sa, struct sigaction *old);
uint64_t green__rand_next(uint64_t *state);
/* A uniformly random number in [0, n). */
uint32_t green__rand_below(uint64_t *state, uint32_t n);

/* The init calls of the primitives whose all-zero bytes are their initial
 * state (mutex, condition, wait group): EINVAL for NULL. */
static inline int green__init_zero(void *obj, size_t size)
{
    if (!obj)
        return EINVAL;
    memset(obj, 0, size);
    return 0;
}

static inline void green__cpu_relax(void) { __builtin_ia32_pause(); }

/* A test-and-test-and-set lock for the runtime's short critical sections.
 * Never held across a switch.  Zero is unlocked. */
typedef struct green__spin { _Atomic uint32_t v; } green__spin_t;
void green__spin_lock_slow(green__spin_t *l);
static inline void green__spin_lock(green__spin_t *l)
{
    uint32_t z = 0;
    if (GREEN_LIKELY(atomic_compare_exchange_weak_explicit(
            &l->v, &z, 1, memory_order_acquire, memory_order_relaxed)))
        return;
    green__spin_lock_slow(l);
}
static inline void green__spin_unlock(green__spin_t *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* ---- switch_x86_64.S ---------------------------------------------------- */

/* Save the callee-saved registers, MXCSR and the x87 control word on the
 * current stack, store the stack pointer in *save_sp, load new_sp and restore
 * from it.  Returns `transfer` as handed over by whoever switches back. */
void *green__ctx_switch(void **save_sp, void *new_sp, void *transfer);
/* First return address of a new thread: calls r12(transfer, rbx). */
void green__ctx_entry(void);
/* fn(arg) from a known return address: the base of a green thread's own
 * frames, where the safepoint walk stops. */
void *green__call_entry(void *(*fn)(void *), void *arg);

/* pthread_libc.c, pthread.c: libc's own calls, for libgreen's internal locks (the public
 * names are libgreen's interposed ones, which may park). */
int green__os_mutex_lock(pthread_mutex_t *m);
int green__os_mutex_trylock(pthread_mutex_t *m);
int green__os_mutex_unlock(pthread_mutex_t *m);
int green__os_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int green__os_cond_signal(pthread_cond_t *c);
int green__os_cond_broadcast(pthread_cond_t *c);
int green__os_once(pthread_once_t *o, void (*fn)(void));
int green__os_join(pthread_t t, void **ret);

#endif /* GREEN_BASE_H */
