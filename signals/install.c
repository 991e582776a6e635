/*
 * Installing the preemption signal's handler, once per signal for all the
 * runs that preempt with it.
 *
 * The first run that preempts with a signal installs green__sig_handler
 * (handler.c) for it -- SA_ONSTACK: it runs on the worker's sigaltstack --
 * and keeps the disposition it replaces, to which the handler passes the
 * program's own signals; the last run to stop puts that disposition back,
 * unless the program has replaced libgreen's meanwhile.  Runs at once count
 * as users of the signal number.  Installing also sizes the trampoline's
 * XSAVE area (frame.c) and acquires the safepoint table (safepoints/),
 * which the handler reads.
 */
#define _GNU_SOURCE
#include "signals.h"
#include "safepoints.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned users[NSIG];

/* fork (sched/fork.c): the child has no run, but keeps the handler the
 * parent's runs installed -- it passes the program's own signals on -- and
 * must mark its requests with its own pid should it start a run. */
static void atfork_prepare(void) { green__os_mutex_lock(&install_lock); }
static void atfork_parent(void) { green__os_mutex_unlock(&install_lock); }
static void atfork_child(void)
{
    green__sig_pid = getpid();
    green__os_mutex_unlock(&install_lock);
}
__attribute__((constructor)) static void handler_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int green__sig_install(struct green__rt *rt)
{
    int sig = rt->cfg.signo, err = 0;
    if ((err = green__xsave_setup()) != 0)
        return err;
    if ((err = green__sp_acquire(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects)) != 0)
        return err;
    if (!green__sp_knows_runtime()) {
        /* Statically linked, libgreen's code is part of the program and
         * the table cannot keep the signal out of the scheduler. */
        green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
        green__write_str(2, "libgreen: preemption by signal (GREEN_PREEMPT=signal, the "
                            "default) needs the shared library (libgreen.so) for now; link "
                            "with -lgreen, not libgreen.a, or set GREEN_PREEMPT=budget or off\n");
        return ENOTSUP;
    }
    green__os_mutex_lock(&install_lock);
    if (users[sig]++ == 0) {
        green__sig_pid = getpid();
        green__sig_uid = getuid();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = green__sig_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (green__sigaction_chain(sig, &sa, &green__sig_chained[sig]) != 0) {
            users[sig]--;
            err = EINVAL;
        }
    }
    green__os_mutex_unlock(&install_lock);
    if (err) {
        green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
        return err;
    }
    green__sp_walk_init();
    return 0;
}

void green__sig_uninstall(struct green__rt *rt)
{
    int sig = rt->cfg.signo;
    green__os_mutex_lock(&install_lock);
    if (--users[sig] == 0) {
        struct sigaction cur;
        /* Put the old disposition back unless the program replaced ours. */
        if (sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
            cur.sa_sigaction == green__sig_handler)
            sigaction(sig, &green__sig_chained[sig], NULL);
    }
    green__os_mutex_unlock(&install_lock);
    green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
}
