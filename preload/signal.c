/*
 * Inside a signal handler every interposed call is libc's.
 *
 * A handler that parked would leave its frame -- on the green thread's
 * stack, or on the worker's sigaltstack (SA_ONSTACK), which the next signal
 * on that worker overwrites -- and its signal mask (a full sa_mask blocks
 * everything, preemption too) on a worker that goes on to run other green
 * threads; and it would return on whichever OS thread resumed it.  So the
 * shim wraps every handler the program installs (sigaction, signal,
 * bsd_signal, sysv_signal): the kernel runs `enter`, which counts the
 * handlers running on this OS thread around the program's handler, and
 * shim__parks() says no while any does.  libgreen's own handlers, installed
 * through the same calls, are wrapped too, so a call libunwind makes from
 * the preemption handler is libc's as well.
 *
 * sigaction reports the program's handler and flags, never the wrapper.
 * The wrapper passes siginfo and context to every handler; one installed
 * without SA_SIGINFO ignores them (the x86-64 and AArch64 calling
 * conventions let a function take fewer arguments than it is given).
 *
 * A handler may leave by siglongjmp instead of returning.  Each running
 * handler is therefore recorded with its wrapper's frame and the green
 * thread it interrupted: it still runs only while the caller is that green
 * thread, on a frame below the wrapper's (the handler's own stack, or the
 * sigaltstack); a record that fails the test is dropped.  libgreen never
 * preempts a green thread inside a handler (the walk meets the signal
 * frame), so the thread a handler interrupted stays the one that runs it.
 */
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <string.h>

__thread unsigned shim__in_handler __attribute__((tls_model("initial-exec")));

#define NESTED 8
#define NEAR (1u << 20)    /* how deep a handler's frames may go */

static __thread struct {
    uintptr_t frame;       /* the wrapper's */
    uint64_t green;        /* the green thread interrupted (0: none) */
} running[NESTED] __attribute__((tls_model("initial-exec")));

/* What the program installed, per signal, while the wrapper is the kernel's. */
static struct {
    _Atomic(void (*)(int, siginfo_t *, void *)) fn;
    _Atomic int flags;     /* the program's sa_flags */
} prog[_NSIG];

/* AS-safe */
static void enter(int sig, siginfo_t *si, void *uc)
{
    unsigned d = shim__in_handler;
    if (d < NESTED) {
        running[d].frame = (uintptr_t)__builtin_frame_address(0);
        running[d].green = green_id(green_self());
    }
    shim__in_handler = d + 1;
    void (*fn)(int, siginfo_t *, void *) = atomic_load_explicit(&prog[sig].fn,
                                                                 memory_order_acquire);
    if (fn)
        fn(sig, si, uc);
    shim__in_handler = d;
}

bool shim__handler_running(void)
{
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    uint64_t green = green_id(green_self());
    while (shim__in_handler > 0) {
        unsigned d = shim__in_handler - 1;
        if (d >= NESTED)
            return true;
        if (running[d].green == green && here < running[d].frame &&
            running[d].frame - here < NEAR)
            return true;
        shim__in_handler = d;        /* left by a jump: forget it */
    }
    return false;
}

/* libc's sigaction, bound without pthread_once: ASan's initialisation
 * installs its handlers through here before any constructor has run, when
 * the shim's own pthread_once (locks.c) cannot be called yet. */
static int next_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    static _Atomic(int (*)(int, const struct sigaction *, struct sigaction *)) fn;
    int (*f)(int, const struct sigaction *, struct sigaction *) = atomic_load(&fn);
    if (!f) {
        *(void **)&f = dlsym(RTLD_NEXT, "sigaction");
        if (!f) {
            errno = ENOSYS;
            return -1;
        }
        atomic_store(&fn, f);
    }
    return f(sig, act, old);
}

static bool wrapped(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == enter;
}

SHIM int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (sig <= 0 || sig >= _NSIG)
        return next_sigaction(sig, act, old);
    int prev_flags = atomic_load(&prog[sig].flags);
    void (*prev_fn)(int, siginfo_t *, void *) = atomic_load(&prog[sig].fn);
    int r;
    if (act && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN) {
        struct sigaction mine = *act;
        mine.sa_sigaction = enter;
        mine.sa_flags |= SA_SIGINFO;
        atomic_store(&prog[sig].flags, act->sa_flags);
        atomic_store_explicit(&prog[sig].fn, act->sa_sigaction, memory_order_release);
        r = next_sigaction(sig, &mine, old);
    } else {
        r = next_sigaction(sig, act, old);
    }
    if (r != 0) {
        atomic_store(&prog[sig].flags, prev_flags);
        atomic_store(&prog[sig].fn, prev_fn);
        return r;
    }
    if (old && wrapped(old)) {
        old->sa_sigaction = prev_fn;
        old->sa_flags = (old->sa_flags & ~SA_SIGINFO) | (prev_flags & SA_SIGINFO);
    }
    return 0;
}

static __sighandler_t install(int sig, __sighandler_t h, int flags, bool self_mask)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (self_mask && sig > 0 && sig < _NSIG)
        sigaddset(&sa.sa_mask, sig);
    if (h == SIG_ERR || sigaction(sig, &sa, &old) != 0) {
        errno = EINVAL;
        return SIG_ERR;
    }
    return old.sa_handler;
}

/* glibc's signal() has BSD semantics: restart, the signal blocked while
 * its handler runs, the handler kept. */
SHIM __sighandler_t signal(int sig, __sighandler_t h)
{
    return install(sig, h, SA_RESTART, true);
}

SHIM __sighandler_t bsd_signal(int sig, __sighandler_t h)
{
    return install(sig, h, SA_RESTART, true);
}

SHIM __sighandler_t sysv_signal(int sig, __sighandler_t h)
{
    return install(sig, h, SA_RESETHAND | SA_NODEFER, false);
}
