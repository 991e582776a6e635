/* Private to libgreen: what the interposed lock calls share (pthread.c,
 * pthread_wait.c, pthread_init.c; pthread_libc.c reaches libc's own). */
#ifndef GREEN_PTHREAD_H
#define GREEN_PTHREAD_H

#include "foreign.h"

#include <semaphore.h>
#include <stdio.h>
#include <time.h>

/* The names libgreen exports besides green_* (green.map). */
#define EXPORT __attribute__((visibility("default")))

/* libc's calls that are not bound by their internal names, found with
 * dlsym on libc itself (pthread_libc.c). */
struct green__libc {
    int (*mutex_timedlock)(pthread_mutex_t *, const struct timespec *);
    int (*mutex_clocklock)(pthread_mutex_t *, clockid_t, const struct timespec *);
    int (*rwlock_timedrdlock)(pthread_rwlock_t *, const struct timespec *);
    int (*rwlock_timedwrlock)(pthread_rwlock_t *, const struct timespec *);
    int (*rwlock_clockrdlock)(pthread_rwlock_t *, clockid_t, const struct timespec *);
    int (*rwlock_clockwrlock)(pthread_rwlock_t *, clockid_t, const struct timespec *);
    int (*spin_lock)(pthread_spinlock_t *);
    int (*spin_trylock)(pthread_spinlock_t *);
    int (*spin_unlock)(pthread_spinlock_t *);
    int (*cond_wait)(pthread_cond_t *, pthread_mutex_t *);
    int (*cond_timedwait)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    int (*cond_clockwait)(pthread_cond_t *, pthread_mutex_t *, clockid_t,
                          const struct timespec *);
    int (*cond_signal)(pthread_cond_t *);
    int (*cond_broadcast)(pthread_cond_t *);
    int (*sem_wait)(sem_t *);
    int (*sem_trywait)(sem_t *);
    int (*sem_timedwait)(sem_t *, const struct timespec *);
    int (*sem_clockwait)(sem_t *, clockid_t, const struct timespec *);
    int (*sem_post)(sem_t *);
    int (*join)(pthread_t, void **);
    int (*timedjoin)(pthread_t, void **, const struct timespec *);
    int (*clockjoin)(pthread_t, void **, clockid_t, const struct timespec *);
    int (*tryjoin)(pthread_t, void **);
    int (*barrier_wait)(pthread_barrier_t *);
    int (*key_delete)(pthread_key_t);
    _Atomic int ready;
};
extern struct green__libc green__libc;
void green__libc_resolve(void);
/* Exit with a line on stderr if lib (a dlopen handle) lacks name. */
void *green__libc_need(void *lib, const char *name);
/* libc's function `f`, resolving them all on first use if a constructor
 * that ran before libgreen's needed one. */
#define LIBC(f) (GREEN_LIKELY(atomic_load_explicit(&green__libc.ready, memory_order_acquire)) \
                     ? green__libc.f : (green__libc_resolve(), green__libc.f))

/* libc's mutex and rwlock calls, bound at link time to glibc's internal
 * aliases, which libgreen does not interpose: no lookup, so usable before
 * any constructor has run and from inside one (malloc may lock a mutex
 * while dlsym resolves the rest).  Under AddressSanitizer the mutex's two
 * are functions of pthread_libc.c instead (it says why). */
extern int libc_mutex_trylock(pthread_mutex_t *);
#ifndef GREEN_ASAN
extern int libc_mutex_lock(pthread_mutex_t *);
extern int libc_mutex_unlock(pthread_mutex_t *);
__asm__(".symver libc_mutex_lock, __pthread_mutex_lock@GLIBC_2.2.5");
__asm__(".symver libc_mutex_unlock, __pthread_mutex_unlock@GLIBC_2.2.5");
#else
int libc_mutex_lock(pthread_mutex_t *m);
int libc_mutex_unlock(pthread_mutex_t *m);
#endif
extern int libc_rwlock_rdlock(pthread_rwlock_t *);
extern int libc_rwlock_wrlock(pthread_rwlock_t *);
extern int libc_rwlock_tryrdlock(pthread_rwlock_t *);
extern int libc_rwlock_trywrlock(pthread_rwlock_t *);
extern int libc_rwlock_unlock(pthread_rwlock_t *);
__asm__(".symver libc_mutex_trylock, __pthread_mutex_trylock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_rdlock, __pthread_rwlock_rdlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_wrlock, __pthread_rwlock_wrlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_tryrdlock, __pthread_rwlock_tryrdlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_trywrlock, __pthread_rwlock_trywrlock@GLIBC_2.2.5");
__asm__(".symver libc_rwlock_unlock, __pthread_rwlock_unlock@GLIBC_2.2.5");

/* An absolute time on clock clk as a deadline on the run's clock; EINVAL
 * for what libc would refuse. */
int green__pt_deadline(struct green__rt *rt, clockid_t clk, const struct timespec *abs,
                       uint64_t *out);

/* The green thread's own worker after a park (it may have moved). */
static inline struct green__worker *here(void) { return green__worker_self(); }

/* pthread.c: a mutex's owner-checked kinds, and its lock and release on a
 * green thread (pthread_cond_wait's, too). */
bool green__pt_mutex_checked(const pthread_mutex_t *m);
int green__pt_mutex_acquire(struct green__worker *w, struct green__thread *t, pthread_mutex_t *m,
                            clockid_t clk, const struct timespec *abs, const char *what);
int green__pt_mutex_release(struct green__worker **wp, struct green__thread *t,
                            pthread_mutex_t *m, bool poll);

#endif
