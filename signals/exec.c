/*
 * exec from a green thread: no preemption signal of libgreen's survives
 * into the new image.
 *
 * execve keeps the signals pending for the thread that calls it, and
 * resets their handlers to the default -- for SIGALRM, death.  A request
 * the monitor had just sent the worker, or its slice timer's last expiry,
 * killed the program that was exec'd (45 of 300 runs of a program whose
 * green thread execs /bin/true beside CPU hogs at a 50 us quantum).
 *
 * So on a worker of a run that preempts by signal, every exec call:
 *   1. blocks the signal on this OS thread;
 *   2. closes the worker to new requests and disarms its slice timer
 *      (green__sig_quiet), then waits for a request already decided to be
 *      sent -- however long that takes: the monitor says when it has
 *      (its `sending` flag).  A wait of at most 100 ms, before, let an
 *      exec go on when the host kept the monitor off its CPU that long
 *      between setting the request and sending it, and a signal landing
 *      in the exec then kills the new image (the one way found for the
 *      exec storm of tests/test_exec.c under ASan to have died of
 *      SIGALRM, once in ~7000 execs; not proven the cause);
 *   3. takes every pending instance of the signal (sigtimedwait): libgreen's
 *      are dropped, the program's own are queued again, as they were, for
 *      the process -- the new image gets what it would without libgreen;
 *   4. gives the signal the mask the thread had before the run and execs.
 * If the exec fails, the worker goes back to being preempted and the call
 * returns libc's error.
 *
 * libgreen.so exports the exec calls under libc's names, as it does the
 * lock calls (sched/pthread.c); each does the above, then calls libc's own.
 * The list-argument forms (execl, execlp, execle) are turned into their
 * vector forms.
 */
#include "sched.h"
#include "signals.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static struct {
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execvp)(const char *, char *const[]);
    int (*execvpe)(const char *, char *const[], char *const[]);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*execveat)(int, const char *, char *const[], char *const[], int);
    _Atomic int ready;
} libc;

static void resolve(void)
{
    if (atomic_load_explicit(&libc.ready, memory_order_acquire))
        return;
    void *lib = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) {
        green__write_str(2, "libgreen: fatal: libc.so.6 is not loaded\n");
        abort();
    }
    *(void **)&libc.execve = dlsym(lib, "execve");
    *(void **)&libc.execvp = dlsym(lib, "execvp");
    *(void **)&libc.execvpe = dlsym(lib, "execvpe");
    *(void **)&libc.fexecve = dlsym(lib, "fexecve");
    *(void **)&libc.execveat = dlsym(lib, "execveat");   /* glibc 2.34 */
    dlclose(lib);
    if (!libc.execve || !libc.execvp || !libc.execvpe || !libc.fexecve) {
        green__write_str(2, "libgreen: fatal: libc lacks one of execve, execvp, execvpe, "
                            "fexecve\n");
        abort();
    }
    atomic_store_explicit(&libc.ready, 1, memory_order_release);
}

/* What an exec call restores if it fails. */
struct exec_guard {
    struct green__worker *w;         /* NULL: nothing was done */
    sigset_t mask;                   /* the thread's mask at the call */
};

/* The monitor decided on a request for w before the exec closed it: wait
 * until it is sent (queued on this thread, where the signal is blocked),
 * however long the monitor takes to get there. */
static void wait_sent(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    struct timespec pause = { 0, 50000 };
    while (s && atomic_load(&s->sending))
        syscall(SYS_nanosleep, &pause, NULL);   /* not the shim's, which parks */
}

/* Take the pending instances of sig: libgreen's dropped, the program's
 * queued again for the process after the loop (sigqueue keeps the value;
 * the sender's identity is the kernel's to give and is lost). */
static void drain(struct green__worker *w, int sig)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    siginfo_t theirs[8];
    unsigned ntheirs = 0;
    for (;;) {
        siginfo_t si;
        struct timespec zero = { 0, 0 };
        if (sigtimedwait(&set, &si, &zero) != sig)
            break;
        if (!green__sig_ours(w, &si) && ntheirs < sizeof theirs / sizeof theirs[0])
            theirs[ntheirs++] = si;
    }
    for (unsigned i = 0; i < ntheirs; i++)
        sigqueue(getpid(), sig, theirs[i].si_value);
}

static void exec_enter(struct exec_guard *g)
{
    resolve();
    g->w = green__worker_self();
    /* A vfork child (AddressSanitizer's vfork, which libgreen does not
     * turn into fork: sched/fork.c) shares the parent's memory, worker
     * included, but is another task: closing the worker there would close
     * the parent's for good. */
    if (!g->w || green__in_handler_now() ||
        gettid() != atomic_load_explicit(&g->w->tid, memory_order_relaxed))
        goto plain;
    struct green__rt *rt = g->w->rt;
    if (rt->cfg.preempt != GREEN_PREEMPT_SIGNAL && rt->cfg.preempt != GREEN_PREEMPT_BOTH)
        goto plain;
    int sig = rt->cfg.signo;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, sig);
    if (pthread_sigmask(SIG_BLOCK, &block, &g->mask) != 0)
        goto plain;
    if (green__sig_quiet(g->w))
        wait_sent(g->w);
    drain(g->w, sig);
    /* The signal as the thread had it before the run: blocked only if the
     * program blocked it. */
    sigset_t mask = g->mask;
    if (sigismember(&g->w->sigmask_before, sig))
        sigaddset(&mask, sig);
    else
        sigdelset(&mask, sig);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    return;
plain:
    g->w = NULL;
}

static void exec_failed(struct exec_guard *g)
{
    if (!g->w)
        return;
    int saved = errno;
    green__sig_unquiet(g->w);
    pthread_sigmask(SIG_SETMASK, &g->mask, NULL);
    errno = saved;
}

/* ---- The calls ---------------------------------------------------------- */

#define EXEC_CALL(call)                                                       \
    do {                                                                      \
        struct exec_guard g;                                                  \
        exec_enter(&g);                                                       \
        int r = (call);                                                       \
        exec_failed(&g);                                                      \
        return r;                                                             \
    } while (0)

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    EXEC_CALL(libc.execve(path, argv, envp));
}

EXPORT int execv(const char *path, char *const argv[])
{
    EXEC_CALL(libc.execve(path, argv, environ));
}

EXPORT int execvp(const char *file, char *const argv[])
{
    EXEC_CALL(libc.execvp(file, argv));
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    EXEC_CALL(libc.execvpe(file, argv, envp));
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    EXEC_CALL(libc.fexecve(fd, argv, envp));
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                    int flags)
{
    resolve();
    if (!libc.execveat) {
        errno = ENOSYS;
        return -1;
    }
    EXEC_CALL(libc.execveat(dirfd, path, argv, envp, flags));
}

/* The list forms: count the arguments, then the vector form.  envp, for
 * execle, follows the NULL that ends the list.  (<unistd.h> declares arg0
 * nonnull.) */
#define LIST_TO_VECTOR(arg0, ap, argv, envp_out)                              \
    size_t n_ = 1;                                                            \
    va_start(ap, arg0);                                                       \
    while (va_arg(ap, const char *))                                          \
        n_++;                                                                 \
    va_end(ap);                                                               \
    const char *argv[n_ + 1];                                                 \
    argv[0] = arg0;                                                           \
    va_start(ap, arg0);                                                       \
    for (size_t i_ = 1; i_ <= n_; i_++)                                       \
        argv[i_] = va_arg(ap, const char *);                                  \
    envp_out;                                                                 \
    va_end(ap)

EXPORT int execl(const char *path, const char *arg0, ...)
{
    va_list ap;
    LIST_TO_VECTOR(arg0, ap, argv, (void)0);
    EXEC_CALL(libc.execve(path, (char *const *)argv, environ));
}

EXPORT int execlp(const char *file, const char *arg0, ...)
{
    va_list ap;
    LIST_TO_VECTOR(arg0, ap, argv, (void)0);
    EXEC_CALL(libc.execvp(file, (char *const *)argv));
}

EXPORT int execle(const char *path, const char *arg0, ...)
{
    va_list ap;
    char *const *envp;
    LIST_TO_VECTOR(arg0, ap, argv, envp = va_arg(ap, char *const *));
    EXEC_CALL(libc.execve(path, (char *const *)argv, envp));
}
