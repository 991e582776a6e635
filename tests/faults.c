/* libfaults: a test-only interposer that makes one call of a chosen kind
 * fail -- the Nth from the moment it is armed -- as the system would when
 * out of memory or threads: malloc and friends (ENOMEM), mmap (ENOMEM),
 * pthread_create (EAGAIN), timer_create (EAGAIN), sigaction (EINVAL: the
 * kernel has no other failure), epoll_create1 / epoll_ctl / eventfd
 * (ENOMEM).  It can also deliver a signal in the middle of a sigaction
 * (faults_signal_on_install).  Compiled into tests/test_faults: the
 * program's definitions come before every library's.
 *
 * It also counts the calls of each kind, and the blocks malloc and friends
 * have handed out and not had back (faults_live), so a test can see that a
 * failed run leaked nothing.
 *
 * malloc and friends come from glibc's __libc_* entry points (dlsym itself
 * allocates); everything else from dlsym(RTLD_NEXT).  Not for ASan builds:
 * ASan's allocator comes first and would never reach these (the test says
 * so and skips the malloc kind there).
 */
#define _GNU_SOURCE
#include "faults.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if !defined(__SANITIZE_ADDRESS__)
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
#endif

static atomic_long calls[FAULT_KINDS];
static atomic_long armed_kinds;      /* bit mask; 0: counting only */
static atomic_long countdown;        /* the call that fails when it hits 0 */
static atomic_long failed;           /* injected failures */
static atomic_long live;             /* blocks out */
static atomic_int signal_on_install;

void faults_arm(unsigned kinds, long nth)
{
    atomic_store(&countdown, nth);
    atomic_store(&failed, 0);
    atomic_store(&armed_kinds, (long)kinds);
}

void faults_disarm(void) { atomic_store(&armed_kinds, 0); }

long faults_calls(int kind) { return atomic_load(&calls[kind]); }

long faults_failed(void) { return atomic_load(&failed); }

long faults_live(void) { return atomic_load(&live); }

void faults_signal_on_install(int sig) { atomic_store(&signal_on_install, sig); }

/* Count a call of `kind`; true: make it fail. */
static bool fail_now(int kind)
{
    atomic_fetch_add_explicit(&calls[kind], 1, memory_order_relaxed);
    if (!(atomic_load_explicit(&armed_kinds, memory_order_relaxed) & (1L << kind)))
        return false;
    if (atomic_fetch_sub(&countdown, 1) != 1)
        return false;
    atomic_fetch_add(&failed, 1);
    return true;
}

/* ---- memory -------------------------------------------------------------- */

#if !defined(__SANITIZE_ADDRESS__)

void *malloc(size_t n)
{
    if (fail_now(FAULT_MALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_malloc(n);
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (fail_now(FAULT_MALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_calloc(n, size);
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

void *realloc(void *old, size_t n)
{
    if (!old)
        return malloc(n);
    if (n == 0) {
        free(old);
        return NULL;
    }
    if (fail_now(FAULT_MALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(old, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    if (fail_now(FAULT_MALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_memalign(align, n);
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now(FAULT_MALLOC))
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    *out = p;
    return 0;
}

void free(void *p)
{
    if (p) {
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
        __libc_free(p);
    }
}

#endif /* ASan brings its own allocator: these would bypass it */

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (fail_now(FAULT_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/* ---- threads, timers, signals, epoll ------------------------------------- */

#define NEXT(name, type) ((type)dlsym(RTLD_NEXT, #name))

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (fail_now(FAULT_THREAD))
        return EAGAIN;
    return NEXT(pthread_create, int (*)(pthread_t *, const pthread_attr_t *,
                                        void *(*)(void *), void *))(t, attr, fn, arg);
}

int timer_create(clockid_t clk, struct sigevent *ev, timer_t *id)
{
    if (fail_now(FAULT_TIMER)) {
        errno = EAGAIN;
        return -1;
    }
    return NEXT(timer_create, int (*)(clockid_t, struct sigevent *, timer_t *))(clk, ev, id);
}

int sigaction(int sig, const struct sigaction *sa, struct sigaction *old)
{
    /* Only the calls that install something can fail in the kernel. */
    if (sa && fail_now(FAULT_SIGNAL)) {
        errno = EINVAL;
        return -1;
    }
    int (*next)(int, const struct sigaction *, struct sigaction *) =
        NEXT(sigaction, int (*)(int, const struct sigaction *, struct sigaction *));
    if (!sa || sig != atomic_load(&signal_on_install))
        return next(sig, sa, old);
    struct sigaction prev;
    int rc = next(sig, sa, &prev);
    if (rc == 0) {
        /* Unblocked, it runs the new handler before raise returns. */
        raise(sig);
        if (old)
            *old = prev;
    }
    return rc;
}

int epoll_create1(int flags)
{
    if (fail_now(FAULT_EPOLL)) {
        errno = ENOMEM;
        return -1;
    }
    return NEXT(epoll_create1, int (*)(int))(flags);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (op != EPOLL_CTL_DEL && fail_now(FAULT_EPOLL)) {
        errno = ENOMEM;
        return -1;
    }
    return NEXT(epoll_ctl, int (*)(int, int, int, struct epoll_event *))(epfd, op, fd, ev);
}

int eventfd(unsigned v, int flags)
{
    if (fail_now(FAULT_EPOLL)) {
        errno = ENOMEM;
        return -1;
    }
    return NEXT(eventfd, int (*)(unsigned, int))(v, flags);
}
