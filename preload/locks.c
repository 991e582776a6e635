/*
 * The lock calls under the shim.  libgreen.so interposes the pthread, stdio
 * and C++ ABI lock calls itself (sched/pthread.c): a program linked with
 * -lgreen has them from it.  A preloaded object's own dependencies come
 * after libc in the lookup order, though, so under LD_PRELOAD libgreen's
 * definitions would never be reached: this file exports the same names and
 * forwards each to libgreen's definition, found in libgreen.so itself.
 *
 * The same goes for the thread-specific data calls (sched/keys.c).
 *
 * The forwarders are resolved at load (the constructor) or by the first
 * call, whichever comes first.  Resolving calls dlopen and dlsym, which may
 * allocate, and an allocator may lock a mutex: while this thread resolves,
 * the mutex, rwlock and once calls go straight to libc's internal names,
 * which nothing interposes.  No green thread exists before green_run, so
 * nothing is lost by that.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "green.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* libc's internal names, for what an allocator may call while this thread
 * resolves: nothing interposes them. */
extern int libc_mutex_lock(pthread_mutex_t *);
extern int libc_mutex_trylock(pthread_mutex_t *);
extern int libc_mutex_unlock(pthread_mutex_t *);
extern int libc_rwlock_rdlock(pthread_rwlock_t *);
extern int libc_rwlock_wrlock(pthread_rwlock_t *);
extern int libc_rwlock_unlock(pthread_rwlock_t *);
extern int libc_once(pthread_once_t *, void (*)(void));
__asm__(".symver libc_mutex_lock, __pthread_mutex_lock@GLIBC_2.2.5");
__asm__(".symver libc_mutex_trylock, __pthread_mutex_trylock@GLIBC_2.2.5");
__asm__(".symver libc_mutex_unlock, __pthread_mutex_unlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_rdlock, __pthread_rwlock_rdlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_wrlock, __pthread_rwlock_wrlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_unlock, __pthread_rwlock_unlock@GLIBC_2.2.5");
__asm__(".symver libc_once, __pthread_once@GLIBC_2.2.5");
extern int libc_key_create(pthread_key_t *, void (*)(void *));
extern void *libc_getspecific(pthread_key_t);
extern int libc_setspecific(pthread_key_t, const void *);
__asm__(".symver libc_key_create, __pthread_key_create@GLIBC_2.2.5");
__asm__(".symver libc_getspecific, __pthread_getspecific@GLIBC_2.2.5");
__asm__(".symver libc_setspecific, __pthread_setspecific@GLIBC_2.2.5");
extern void _IO_flockfile(FILE *);
extern void _IO_funlockfile(FILE *);
extern int _IO_ftrylockfile(FILE *);

/* libgreen's definitions, one pointer per call. */
static struct {
    int (*pthread_mutex_lock)(pthread_mutex_t *m);
    int (*pthread_mutex_trylock)(pthread_mutex_t *m);
    int (*pthread_mutex_unlock)(pthread_mutex_t *m);
    int (*pthread_mutex_timedlock)(pthread_mutex_t *m, const struct timespec *t);
    int (*pthread_mutex_clocklock)(pthread_mutex_t *m, clockid_t c, const struct timespec *t);
    int (*pthread_rwlock_rdlock)(pthread_rwlock_t *l);
    int (*pthread_rwlock_wrlock)(pthread_rwlock_t *l);
    int (*pthread_rwlock_tryrdlock)(pthread_rwlock_t *l);
    int (*pthread_rwlock_trywrlock)(pthread_rwlock_t *l);
    int (*pthread_rwlock_unlock)(pthread_rwlock_t *l);
    int (*pthread_rwlock_timedrdlock)(pthread_rwlock_t *l, const struct timespec *t);
    int (*pthread_rwlock_timedwrlock)(pthread_rwlock_t *l, const struct timespec *t);
    int (*pthread_rwlock_clockrdlock)(pthread_rwlock_t *l, clockid_t c, const struct timespec *t);
    int (*pthread_rwlock_clockwrlock)(pthread_rwlock_t *l, clockid_t c, const struct timespec *t);
    int (*pthread_spin_lock)(pthread_spinlock_t *l);
    int (*pthread_spin_trylock)(pthread_spinlock_t *l);
    int (*pthread_spin_unlock)(pthread_spinlock_t *l);
    int (*pthread_cond_wait)(pthread_cond_t *c, pthread_mutex_t *m);
    int (*pthread_cond_timedwait)(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t);
    int (*pthread_cond_clockwait)(pthread_cond_t *c, pthread_mutex_t *m, clockid_t k, const struct timespec *t);
    int (*pthread_cond_signal)(pthread_cond_t *c);
    int (*pthread_cond_broadcast)(pthread_cond_t *c);
    int (*pthread_once)(pthread_once_t *o, void (*f)(void));
    int (*sem_wait)(sem_t *s);
    int (*sem_timedwait)(sem_t *s, const struct timespec *t);
    int (*sem_clockwait)(sem_t *s, clockid_t c, const struct timespec *t);
    int (*sem_post)(sem_t *s);
    void (*flockfile)(FILE *f);
    int (*ftrylockfile)(FILE *f);
    void (*funlockfile)(FILE *f);
    int (*__cxa_guard_acquire)(uint64_t *g);
    void (*__cxa_guard_release)(uint64_t *g);
    void (*__cxa_guard_abort)(uint64_t *g);
    int (*pthread_join)(pthread_t t, void **r);
    int (*pthread_timedjoin_np)(pthread_t t, void **r, const struct timespec *a);
    int (*pthread_clockjoin_np)(pthread_t t, void **r, clockid_t c, const struct timespec *a);
    int (*pthread_barrier_wait)(pthread_barrier_t *b);
    int (*pthread_key_create)(pthread_key_t *k, void (*d)(void *));
    int (*pthread_key_delete)(pthread_key_t k);
    void *(*pthread_getspecific)(pthread_key_t k);
    int (*pthread_setspecific)(pthread_key_t k, const void *v);
} green;

static _Atomic int resolved;
static __thread int resolving;

static void resolve(void)
{
    if (atomic_load_explicit(&resolved, memory_order_acquire))
        return;
    resolving++;
    Dl_info info;
    void *lib = NULL;
    if (dladdr((void *)green_worker_index, &info) && info.dli_fname)
        lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) {
        fprintf(stderr, "libgreen-preload: libgreen.so is not loaded: %s\n", dlerror());
        abort();
    }
#define FIND(name)                                                                         \
    if (!(*(void **)&green.name = dlsym(lib, #name))) {                                    \
        fprintf(stderr, "libgreen-preload: libgreen.so has no %s\n", #name);               \
        abort();                                                                           \
    }
    FIND(pthread_mutex_lock)
    FIND(pthread_mutex_trylock)
    FIND(pthread_mutex_unlock)
    FIND(pthread_mutex_timedlock)
    FIND(pthread_mutex_clocklock)
    FIND(pthread_rwlock_rdlock)
    FIND(pthread_rwlock_wrlock)
    FIND(pthread_rwlock_tryrdlock)
    FIND(pthread_rwlock_trywrlock)
    FIND(pthread_rwlock_unlock)
    FIND(pthread_rwlock_timedrdlock)
    FIND(pthread_rwlock_timedwrlock)
    FIND(pthread_rwlock_clockrdlock)
    FIND(pthread_rwlock_clockwrlock)
    FIND(pthread_spin_lock)
    FIND(pthread_spin_trylock)
    FIND(pthread_spin_unlock)
    FIND(pthread_cond_wait)
    FIND(pthread_cond_timedwait)
    FIND(pthread_cond_clockwait)
    FIND(pthread_cond_signal)
    FIND(pthread_cond_broadcast)
    FIND(pthread_once)
    FIND(sem_wait)
    FIND(sem_timedwait)
    FIND(sem_clockwait)
    FIND(sem_post)
    FIND(flockfile)
    FIND(ftrylockfile)
    FIND(funlockfile)
    FIND(__cxa_guard_acquire)
    FIND(__cxa_guard_release)
    FIND(__cxa_guard_abort)
    FIND(pthread_join)
    FIND(pthread_timedjoin_np)
    FIND(pthread_clockjoin_np)
    FIND(pthread_barrier_wait)
    FIND(pthread_key_create)
    FIND(pthread_key_delete)
    FIND(pthread_getspecific)
    FIND(pthread_setspecific)
#undef FIND
    dlclose(lib);
    atomic_store_explicit(&resolved, 1, memory_order_release);
    resolving--;
}

__attribute__((constructor)) static void locks_init(void) { resolve(); }

/* A call made while this thread resolves (an allocator inside dlsym):
 * libc's own where an allocator may need it; anything else cannot happen. */
__attribute__((noreturn, cold)) static void early(const char *name)
{
    fprintf(stderr, "libgreen-preload: %s called while resolving the lock calls\n", name);
    abort();
}

#define FORWARD(name, ret, params, args, early_call)                                       \
    EXPORT ret name params                                                                 \
    {                                                                                      \
        if (__builtin_expect(!atomic_load_explicit(&resolved, memory_order_acquire), 0)) { \
            if (resolving) {                                                               \
                early_call;                                                                \
            }                                                                              \
            resolve();                                                                     \
        }                                                                                  \
        return green.name args;                                                            \
    }

FORWARD(pthread_mutex_lock, int, (pthread_mutex_t *m), (m), return libc_mutex_lock(m))
FORWARD(pthread_mutex_trylock, int, (pthread_mutex_t *m), (m), return libc_mutex_trylock(m))
FORWARD(pthread_mutex_unlock, int, (pthread_mutex_t *m), (m), return libc_mutex_unlock(m))
FORWARD(pthread_mutex_timedlock, int, (pthread_mutex_t *m, const struct timespec *t), (m, t), early("pthread_mutex_timedlock"))
FORWARD(pthread_mutex_clocklock, int, (pthread_mutex_t *m, clockid_t c, const struct timespec *t), (m, c, t), early("pthread_mutex_clocklock"))
FORWARD(pthread_rwlock_rdlock, int, (pthread_rwlock_t *l), (l), return libc_rwlock_rdlock(l))
FORWARD(pthread_rwlock_wrlock, int, (pthread_rwlock_t *l), (l), return libc_rwlock_wrlock(l))
FORWARD(pthread_rwlock_tryrdlock, int, (pthread_rwlock_t *l), (l), early("pthread_rwlock_tryrdlock"))
FORWARD(pthread_rwlock_trywrlock, int, (pthread_rwlock_t *l), (l), early("pthread_rwlock_trywrlock"))
FORWARD(pthread_rwlock_unlock, int, (pthread_rwlock_t *l), (l), return libc_rwlock_unlock(l))
FORWARD(pthread_rwlock_timedrdlock, int, (pthread_rwlock_t *l, const struct timespec *t), (l, t), early("pthread_rwlock_timedrdlock"))
FORWARD(pthread_rwlock_timedwrlock, int, (pthread_rwlock_t *l, const struct timespec *t), (l, t), early("pthread_rwlock_timedwrlock"))
FORWARD(pthread_rwlock_clockrdlock, int, (pthread_rwlock_t *l, clockid_t c, const struct timespec *t), (l, c, t), early("pthread_rwlock_clockrdlock"))
FORWARD(pthread_rwlock_clockwrlock, int, (pthread_rwlock_t *l, clockid_t c, const struct timespec *t), (l, c, t), early("pthread_rwlock_clockwrlock"))
FORWARD(pthread_spin_lock, int, (pthread_spinlock_t *l), (l), early("pthread_spin_lock"))
FORWARD(pthread_spin_trylock, int, (pthread_spinlock_t *l), (l), early("pthread_spin_trylock"))
FORWARD(pthread_spin_unlock, int, (pthread_spinlock_t *l), (l), early("pthread_spin_unlock"))
FORWARD(pthread_cond_wait, int, (pthread_cond_t *c, pthread_mutex_t *m), (c, m), early("pthread_cond_wait"))
FORWARD(pthread_cond_timedwait, int, (pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t), (c, m, t), early("pthread_cond_timedwait"))
FORWARD(pthread_cond_clockwait, int, (pthread_cond_t *c, pthread_mutex_t *m, clockid_t k, const struct timespec *t), (c, m, k, t), early("pthread_cond_clockwait"))
FORWARD(pthread_cond_signal, int, (pthread_cond_t *c), (c), early("pthread_cond_signal"))
FORWARD(pthread_cond_broadcast, int, (pthread_cond_t *c), (c), early("pthread_cond_broadcast"))
FORWARD(pthread_once, int, (pthread_once_t *o, void (*f)(void)), (o, f), return libc_once(o, f))
FORWARD(sem_wait, int, (sem_t *s), (s), early("sem_wait"))
FORWARD(sem_timedwait, int, (sem_t *s, const struct timespec *t), (s, t), early("sem_timedwait"))
FORWARD(sem_clockwait, int, (sem_t *s, clockid_t c, const struct timespec *t), (s, c, t), early("sem_clockwait"))
FORWARD(sem_post, int, (sem_t *s), (s), early("sem_post"))
FORWARD(flockfile, void, (FILE *f), (f), _IO_flockfile(f); return)
FORWARD(ftrylockfile, int, (FILE *f), (f), return _IO_ftrylockfile(f))
FORWARD(funlockfile, void, (FILE *f), (f), _IO_funlockfile(f); return)
FORWARD(__cxa_guard_acquire, int, (uint64_t *g), (g), early("__cxa_guard_acquire"))
FORWARD(__cxa_guard_release, void, (uint64_t *g), (g), early("__cxa_guard_release"))
FORWARD(__cxa_guard_abort, void, (uint64_t *g), (g), early("__cxa_guard_abort"))
FORWARD(pthread_join, int, (pthread_t t, void **r), (t, r), early("pthread_join"))
FORWARD(pthread_timedjoin_np, int, (pthread_t t, void **r, const struct timespec *a), (t, r, a), early("pthread_timedjoin_np"))
FORWARD(pthread_clockjoin_np, int, (pthread_t t, void **r, clockid_t c, const struct timespec *a), (t, r, c, a), early("pthread_clockjoin_np"))
FORWARD(pthread_barrier_wait, int, (pthread_barrier_t *b), (b), early("pthread_barrier_wait"))
/* Thread-specific data (sched/keys.c).  These never resolve: until the
 * constructor has, they are libc's.  No green thread exists before it, and
 * they are called too early for resolving to be safe -- AddressSanitizer's
 * runtime creates its key while it initializes, when dlopen may not be
 * called.  A key made then stays per OS thread (sched/keys.c).
 *
 * <pthread.h> declares pthread_setspecific's value `access (none)`; gcc 12
 * then warns that passing it on may read it uninitialized.  Nothing reads
 * it. */
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define FORWARD_RESOLVED(name, ret, params, args, libc_call)                                 \
    EXPORT ret name params                                                                 \
    {                                                                                      \
        if (__builtin_expect(!atomic_load_explicit(&resolved, memory_order_acquire), 0))   \
            libc_call;                                                                     \
        return green.name args;                                                            \
    }
FORWARD_RESOLVED(pthread_key_create, int, (pthread_key_t *k, void (*d)(void *)), (k, d), return libc_key_create(k, d))
FORWARD_RESOLVED(pthread_getspecific, void *, (pthread_key_t k), (k), return libc_getspecific(k))
FORWARD_RESOLVED(pthread_setspecific, int, (pthread_key_t k, const void *v), (k, v), return libc_setspecific(k, v))
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
/* libc's, found the way libgreen finds it, when called before then. */
EXPORT int pthread_key_delete(pthread_key_t k)
{
    if (__builtin_expect(!atomic_load_explicit(&resolved, memory_order_acquire), 0)) {
        int (*libc_delete)(pthread_key_t);
        *(void **)&libc_delete = dlsym(RTLD_NEXT, "pthread_key_delete");
        return libc_delete ? libc_delete(k) : EINVAL;
    }
    return green.pthread_key_delete(k);
}
