/*
 * Workers' OS threads: worker 0 is the thread that called green_run, the
 * others are started here and joined when the run is over.  Each names
 * itself (as top -H and gdb show it), records what the signal handler and
 * the sanitizers need of its OS thread, and runs the scheduler loop
 * (loop.c).
 */
#include "sched.h"

#include <errno.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Make the calling OS thread w's: record its errno location, publish its
 * tid (the monitor signals it by that), unblock the preemption signal, and
 * read its stack's bounds (for the sanitizers).  Requires: called on w's
 * own OS thread. */
static void adopt_os_thread(struct green__worker *w)
{
    w->errno_loc = green__errno();
    atomic_store_explicit(&w->tid, (pid_t)syscall(SYS_gettid), memory_order_release);
    /* The preemption signal must reach every worker, whatever mask the
     * thread that called green_run had (green_run made sure it did not
     * block it for itself: signals/mode.c).  Without preemption by signal,
     * the workers keep that thread's mask: a signal the program blocks
     * everywhere to take it with sigwait or signalfd stays blocked. */
    sigset_t set;
    sigemptyset(&set);
    int mode = w->rt->cfg.preempt;
    bool by_signal = mode == GREEN_PREEMPT_SIGNAL || mode == GREEN_PREEMPT_BOTH;
    if (by_signal)
        sigaddset(&set, w->rt->cfg.signo);
    pthread_sigmask(SIG_UNBLOCK, &set, &w->sigmask_before);
    w->sigmask = w->sigmask_before;
    if (by_signal)
        sigdelset(&w->sigmask, w->rt->cfg.signo);
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &w->os_stack_lo, &w->os_stack_size);
        pthread_attr_destroy(&attr);
    }
}

static void *worker_main(void *arg)
{
    struct green__worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "green-worker-%u", w->index);
    prctl(PR_SET_NAME, name);        /* as top -H and gdb show it */
    green__worker_set(w);
    adopt_os_thread(w);
    if (green__altstack_setup(w) != 0)
        green__write_str(2, "libgreen: warning: no sigaltstack for a worker; "
                            "stack overflows there will not be reported\n");
    green__worker_loop(w);
    green__altstack_teardown(w);
    green__worker_set(NULL);
    return NULL;
}

int green__workers_start(struct green__rt *rt)
{
    struct green__worker *w0 = &rt->workers[0];
    green__worker_set(w0);
    adopt_os_thread(w0);
    if (green__altstack_setup(w0) != 0)
        green__write_str(2, "libgreen: warning: no sigaltstack for a worker; "
                            "stack overflows there will not be reported\n");
    for (unsigned i = 1; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        int err = pthread_create(&w->pthread, NULL, worker_main, w);
        if (err != 0) {
            /* Stop the ones already started: they find `done` and leave. */
            atomic_store(&rt->done, 1);
            green__wake_all(rt);
            for (unsigned j = 1; j < i; j++)
                green__os_join(rt->workers[j].pthread, NULL);
            green__altstack_teardown(w0);
            pthread_sigmask(SIG_SETMASK, &w0->sigmask_before, NULL);
            green__worker_set(NULL);
            return EAGAIN;
        }
    }
    return 0;
}

void green__workers_join(struct green__rt *rt)
{
    for (unsigned i = 1; i < rt->nworkers; i++)
        green__os_join(rt->workers[i].pthread, NULL);
    green__altstack_teardown(&rt->workers[0]);
    /* The thread that called green_run gets its own mask back. */
    pthread_sigmask(SIG_SETMASK, &rt->workers[0].sigmask_before, NULL);
    green__worker_set(NULL);
}
