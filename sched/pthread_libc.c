/*
 * libc's own lock calls, for the interposed ones (pthread.c and the files
 * beside it) and for libgreen's internal locks (green__os_*, sched.h): the
 * public names are libgreen's, which may park.  The calls libc also
 * exports under internal names (__pthread_mutex_lock...) are bound to
 * those at link time (pthread.h; under AddressSanitizer the mutex's are
 * below); the rest are found here with dlsym on libc itself, at load or
 * by the first call.
 */
#include "pthread.h"

#include <dlfcn.h>
#include <stdlib.h>

extern int libc_once(pthread_once_t *, void (*)(void));
__asm__(".symver libc_once, __pthread_once@GLIBC_2.2.5");

#ifdef GREEN_ASAN
/* AddressSanitizer's runtime, first in the lookup order, defines
 * __pthread_mutex_lock and __pthread_mutex_unlock itself, as interceptors
 * whose way to libc's is found with dlsym -- which sees only default
 * versions, not these: they call NULL.  So go to libc's by version. */
static int (*asan_libc_lock)(pthread_mutex_t *), (*asan_libc_unlock)(pthread_mutex_t *);
__attribute__((constructor(101))) static void asan_libc_resolve(void)
{
    void *lib = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    *(void **)&asan_libc_lock = lib ? dlvsym(lib, "__pthread_mutex_lock", "GLIBC_2.2.5") : NULL;
    *(void **)&asan_libc_unlock = lib ? dlvsym(lib, "__pthread_mutex_unlock", "GLIBC_2.2.5") : NULL;
    if (!asan_libc_lock || !asan_libc_unlock) {
        green__write_str(2, "libgreen: fatal: libc has no __pthread_mutex_lock@GLIBC_2.2.5\n");
        abort();
    }
    if (lib)
        dlclose(lib);
}
int libc_mutex_lock(pthread_mutex_t *m)
{
    if (GREEN_UNLIKELY(!asan_libc_lock))
        asan_libc_resolve();
    return asan_libc_lock(m);
}
int libc_mutex_unlock(pthread_mutex_t *m)
{
    if (GREEN_UNLIKELY(!asan_libc_unlock))
        asan_libc_resolve();
    return asan_libc_unlock(m);
}
#endif

/* The rest by name from libc itself, once. */
struct green__libc green__libc;

void *green__libc_need(void *lib, const char *name)
{
    void *p = lib ? dlsym(lib, name) : NULL;
    if (!p) {
        green__write_str(2, "libgreen: fatal: libc has no ");
        green__write_str(2, name);
        green__write_str(2, "\n");
        abort();
    }
    return p;
}

__attribute__((constructor)) void green__libc_resolve(void)
{
    if (atomic_load_explicit(&green__libc.ready, memory_order_acquire))
        return;
    void *lib = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
#define R(field, name) green__libc.field = green__libc_need(lib, name)
    R(mutex_timedlock, "pthread_mutex_timedlock");
    R(mutex_clocklock, "pthread_mutex_clocklock");
    R(rwlock_timedrdlock, "pthread_rwlock_timedrdlock");
    R(rwlock_timedwrlock, "pthread_rwlock_timedwrlock");
    R(rwlock_clockrdlock, "pthread_rwlock_clockrdlock");
    R(rwlock_clockwrlock, "pthread_rwlock_clockwrlock");
    R(spin_lock, "pthread_spin_lock");
    R(spin_trylock, "pthread_spin_trylock");
    R(spin_unlock, "pthread_spin_unlock");
    R(cond_wait, "pthread_cond_wait");
    R(cond_timedwait, "pthread_cond_timedwait");
    R(cond_clockwait, "pthread_cond_clockwait");
    R(cond_signal, "pthread_cond_signal");
    R(cond_broadcast, "pthread_cond_broadcast");
    R(sem_wait, "sem_wait");
    R(sem_trywait, "sem_trywait");
    R(sem_timedwait, "sem_timedwait");
    R(sem_clockwait, "sem_clockwait");
    R(sem_post, "sem_post");
    R(join, "pthread_join");
    R(timedjoin, "pthread_timedjoin_np");
    R(clockjoin, "pthread_clockjoin_np");
    R(tryjoin, "pthread_tryjoin_np");
    R(barrier_wait, "pthread_barrier_wait");
    R(key_delete, "pthread_key_delete");
#undef R
    if (lib)
        dlclose(lib);
    atomic_store_explicit(&green__libc.ready, 1, memory_order_release);
}

/* For libgreen's internal locks (sched.h). */
int green__os_mutex_lock(pthread_mutex_t *m) { return libc_mutex_lock(m); }
int green__os_mutex_trylock(pthread_mutex_t *m) { return libc_mutex_trylock(m); }
int green__os_mutex_unlock(pthread_mutex_t *m) { return libc_mutex_unlock(m); }
int green__os_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) { return LIBC(cond_wait)(c, m); }
int green__os_cond_signal(pthread_cond_t *c) { return LIBC(cond_signal)(c); }
int green__os_cond_broadcast(pthread_cond_t *c) { return LIBC(cond_broadcast)(c); }
int green__os_once(pthread_once_t *o, void (*fn)(void)) { return libc_once(o, fn); }
int green__os_join(pthread_t t, void **ret) { return LIBC(join)(t, ret); }

