/*
 * fork: the child of a process with runs starts with none.
 *
 * fork copies the memory of every run -- workers, queues, timers, the
 * netpollers, the green threads' stacks -- but only the calling OS thread.
 * None of it is the child's: the workers are gone, their epoll instances
 * are still the parent's (shared with the child), and a worker pointer left
 * in the calling thread's TLS made the child act as that worker: green_run
 * said EBUSY, the budget's yields switched to other green threads' copied
 * stacks and ran their code, the shim's close removed the parent's epoll
 * registrations.
 *
 * So libgreen registers pthread_atfork handlers (at load): the child's
 * thread is no worker and no green thread; the netpollers and the lock
 * waiters are forgotten (netpoll.c, foreign.c; the signal layer resets its
 * own, signals/install.c).  The child may call green_run for runs of its
 * own.  A child forked from a green thread runs on a copy of that thread's
 * stack; if its function returns, the child exits with status 0, as a
 * process does when its last thread returns -- by _exit: the atexit
 * handlers of a multithreaded parent's copy are not the child's to run.
 *
 * vfork is fork here: its child shares the parent's memory and fd
 * bookkeeping, and no atfork handler runs for it, so a child that closed an
 * fd through the shim, or just ran libgreen's code, changed the parent's
 * runs.  (posix_spawn, which clones its own child and only execs there,
 * needs none of this.)
 */
#include "sched.h"

#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static void prepare(void) { green__netpoll_atfork(GREEN_FORK_PREPARE); }
static void parent(void) { green__netpoll_atfork(GREEN_FORK_PARENT); }

static void child(void)
{
    green__tls_worker = NULL;
    green__in_handler = 0;
    green__handler_mark = (struct green__handler_mark){ NULL, 0, 0 };
    green__reductions = GREEN_BUDGET_NONE;
    green__netpoll_atfork(GREEN_FORK_CHILD);
    green__foreign_atfork_child();
}

__attribute__((constructor)) static void fork_init(void)
{
    pthread_atfork(prepare, parent, child);
}

/* Not under AddressSanitizer: its runtime intercepts vfork first, with a
 * child that must share the parent's memory, and a fork beneath it trips
 * its checks. */
#ifndef __SANITIZE_ADDRESS__
EXPORT pid_t vfork(void)
{
    return fork();
}
#endif
