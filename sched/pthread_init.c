/*
 * The interposed calls of stdio's FILE locks and of one-time
 * initialization -- pthread_once and C++ static guards -- (pthread.h,
 * pthread.c has the design).  The holder of a FILE lock, and the thread
 * running an initializer, is a holder like any other: never preempted,
 * kept on its worker.
 */
#include "pthread.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>

extern int libc_once(pthread_once_t *, void (*)(void));
__asm__(".symver libc_once, __pthread_once@GLIBC_2.2.5");
/* stdio's locks have public internal names of their own. */
extern void _IO_flockfile(FILE *);
extern void _IO_funlockfile(FILE *);
extern int _IO_ftrylockfile(FILE *);

/* ---- stdio's FILE locks -------------------------------------------------- */

static int file_try(void *p)
{
    struct green__worker *w = here();
    if (w->holders && green__held_by_other(w, w->cur, p))
        return EBUSY;
    return _IO_ftrylockfile(p) == 0 ? 0 : EBUSY;
}

EXPORT void flockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t) {
        _IO_flockfile(f);
        return;
    }
    /* The owner's relock is a count, as libc's: try succeeds for it.
     * Who holds it otherwise -- stdio locks itself inside libc, unseen --
     * is not known: wait on a timer as well. */
    if (file_try(f) != 0)
        green__fwait(&w, f, file_try, f, GREEN_FOREVER, NULL, "flockfile");
    green__held_push(here(), t, f);
}

EXPORT int ftrylockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t)
        return _IO_ftrylockfile(f);
    if (file_try(f) != 0)
        return -1;
    green__held_push(w, t, f);
    return 0;
}

EXPORT void funlockfile(FILE *f)
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    _IO_funlockfile(f);
    green__fwake(f, false);
    if (t)
        green__held_drop(&w, t, f, true);
}

/* ---- pthread_once -------------------------------------------------------- */

/* glibc's once control: DONE, or INPROGRESS with the fork generation of
 * the process that began it (a child's generation differs, so it starts
 * over an initialization its parent had under way). */
#define ONCE_INPROGRESS 1
#define ONCE_DONE       2

/* The generation, read from inside libc's own pthread_once on a control
 * of our own: during the routine the control holds generation|INPROGRESS.
 * Again after a fork (the child's generation is new). */
static _Atomic int once_gen = -1;
static int *once_probe_ctl;
static void once_probe(void) { once_gen = *once_probe_ctl & ~ONCE_INPROGRESS; }
static void once_forget_gen(void) { atomic_store(&once_gen, -1); }

static int once_generation(void)
{
    int g = atomic_load(&once_gen);
    if (g >= 0)
        return g;
    static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
    static _Atomic int atfork_done;
    green__os_mutex_lock(&probe_lock);
    if (!atomic_exchange(&atfork_done, 1))
        pthread_atfork(NULL, NULL, once_forget_gen);
    pthread_once_t ctl = PTHREAD_ONCE_INIT;
    once_probe_ctl = (int *)&ctl;
    libc_once(&ctl, once_probe);
    g = atomic_load(&once_gen);
    green__os_mutex_unlock(&probe_lock);
    return g;
}

static int once_try(void *p)
{
    int v = __atomic_load_n((int *)p, __ATOMIC_ACQUIRE);
    return (v & ONCE_INPROGRESS) && !(v & ONCE_DONE) ? EBUSY : 0;
}

EXPORT int pthread_once(pthread_once_t *o, void (*fn)(void))
{
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    int *ctl = (int *)o;
    if (!t || (__atomic_load_n(ctl, __ATOMIC_ACQUIRE) & ONCE_DONE)) {
        int r = libc_once(o, fn);
        if (t == NULL)
            green__fwake(o, true);   /* green threads parked on it */
        return r;
    }
    int gen = once_generation();
    for (;;) {
        int v = __atomic_load_n(ctl, __ATOMIC_ACQUIRE);
        if (v & ONCE_DONE)
            return 0;
        int mine = gen | ONCE_INPROGRESS;
        if (v == mine) {
            /* Under way in this process: by another thread, or -- libc
             * would sleep for good -- by this one from inside fn. */
            green__fwait(&w, o, once_try, o, GREEN_FOREVER, NULL, "pthread_once");
            continue;
        }
        if (__atomic_compare_exchange_n(ctl, &v, mine, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            break;
    }
    w = here();
    green__held_push(w, t, o);
    fn();
    __atomic_store_n(ctl, ONCE_DONE, __ATOMIC_RELEASE);
    syscall(SYS_futex, ctl, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);  /* libc's sleepers */
    green__fwake(o, true);
    green__held_drop(&w, t, o, true);
    return 0;
}

/* ---- C++ static guards (libstdc++'s protocol) --------------------------- */

/* The guard's first int: byte 0 is set once initialized (the ABI's rule);
 * libstdc++ marks an initialization under way with PENDING and sleepers
 * on the futex with WAITING. */
#define GUARD_DONE    0x1
#define GUARD_PENDING 0x100
#define GUARD_WAITING 0x10000

static struct {
    int (*acquire)(uint64_t *);
    void (*release)(uint64_t *);
    void (*abort)(uint64_t *);
    bool libstdcxx;                  /* the protocol above; else pass through */
    _Atomic int ready;
} cxa;

static void cxa_resolve(void)
{
    if (atomic_load_explicit(&cxa.ready, memory_order_acquire))
        return;
    void *lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
    cxa.libstdcxx = lib != NULL;
    if (!lib)
        lib = RTLD_NEXT;             /* another C++ runtime: its own calls */
    cxa.acquire = green__libc_need(lib, "__cxa_guard_acquire");
    cxa.release = green__libc_need(lib, "__cxa_guard_release");
    cxa.abort = green__libc_need(lib, "__cxa_guard_abort");
    if (lib != RTLD_NEXT)
        dlclose(lib);
    atomic_store_explicit(&cxa.ready, 1, memory_order_release);
}

static int guard_try(void *p)
{
    return __atomic_load_n((int *)p, __ATOMIC_ACQUIRE) & GUARD_PENDING ? EBUSY : 0;
}

EXPORT int __cxa_guard_acquire(uint64_t *g)
{
    if (__atomic_load_n((const char *)g, __ATOMIC_ACQUIRE))
        return 0;                    /* initialized: the inline fast path's answer */
    cxa_resolve();
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (!t || !cxa.libstdcxx)
        return cxa.acquire(g);
    int *gi = (int *)g;
    for (;;) {
        int v = 0;
        if (__atomic_compare_exchange_n(gi, &v, GUARD_PENDING, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            green__held_push(here(), t, g);
            return 1;                /* ours to initialize */
        }
        if (v & GUARD_DONE)
            return 0;
        /* Under way elsewhere (or, recursively, here: libstdc++ would sleep
         * for good, and so do we -- a deadlock the report names). */
        w = here();
        green__fwait(&w, g, guard_try, g, GREEN_FOREVER, NULL, "__cxa_guard_acquire");
    }
}

EXPORT void __cxa_guard_release(uint64_t *g)
{
    cxa_resolve();
    cxa.release(g);                  /* sets DONE, wakes libstdc++'s sleepers */
    green__fwake(g, true);
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (t)
        green__held_drop(&w, t, g, true);
}

EXPORT void __cxa_guard_abort(uint64_t *g)
{
    cxa_resolve();
    cxa.abort(g);
    green__fwake(g, true);
    struct green__worker *w;
    struct green__thread *t = green__foreign_self(&w);
    if (t)
        green__held_drop(&w, t, g, true);
}

