/*
 * The offload pool: OS threads that run, for a parked green thread, work
 * that would block its worker and that no poller can wait for -- a blocking
 * library call (getaddrinfo), regular-file I/O.
 *
 * A job lives on the stack of the green thread that offloads it.  Under the
 * pool's lock it joins a FIFO queue; an idle pool thread (or a new one, up to
 * the run's offload_threads) takes it, runs fn, stores the result and claims
 * the green thread, which goes to the run's global queue like any thread
 * woken from outside the workers.  Until then the run is not at rest: the
 * deadlock check counts parked offloaders as able to wake (pending).
 *
 * Pool threads start on demand and live until the run ends, when they are
 * stopped and joined; they never run green threads and block the run's
 * preemption signal.
 *
 * Rejected: running the call on the worker itself and handing the worker's
 * queue to another OS thread while it blocks (Go's entersyscall/handoffp).
 * It needs no thread switch for calls that return at once, but a worker
 * would then have to be replaceable mid-run, which ours are not.
 */
#include "sched.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>

struct green__job {
    void *(*fn)(void *);
    void *arg;
    void *ret;
    struct green__thread *t;
    struct green__job *next;
};

void green__offload_init(struct green__rt *rt)
{
    struct green__offload *off = &rt->off;
    pthread_mutex_init(&off->lock, NULL);
    pthread_cond_init(&off->cond, NULL);
    off->max = rt->cfg.offload_threads ? rt->cfg.offload_threads
                                       : GREEN_DEFAULT_OFFLOAD_THREADS;
}

static void *offload_main(void *arg)
{
    struct green__rt *rt = arg;
    struct green__offload *off = &rt->off;
    prctl(PR_SET_NAME, "green-offload");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, rt->cfg.signo);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    green__os_mutex_lock(&off->lock);
    for (;;) {
        while (!off->head && !off->stopping) {
            off->nidle++;
            green__os_cond_wait(&off->cond, &off->lock);
            off->nidle--;
        }
        struct green__job *job = off->head;
        if (!job)
            break;                   /* stopping, and nothing left */
        off->head = job->next;
        if (!off->head)
            off->tail = NULL;
        off->nqueued--;
        green__os_mutex_unlock(&off->lock);

        job->ret = job->fn(job->arg);
        /* The job is on t's stack: t may return the moment it runs. */
        struct green__thread *t = job->t;
        if (green__claim(t))
            green__ready(NULL, t, false);

        green__os_mutex_lock(&off->lock);
    }
    green__os_mutex_unlock(&off->lock);
    return NULL;
}

/* Requires: off->lock held.  One more pool thread.  0 or an errno. */
static int offload_grow(struct green__rt *rt)
{
    struct green__offload *off = &rt->off;
    pthread_t *tids = realloc(off->tids, (off->nthreads + 1) * sizeof *tids);
    if (!tids)
        return ENOMEM;
    off->tids = tids;
    int err = pthread_create(&tids[off->nthreads], NULL, offload_main, rt);
    if (err == 0)
        off->nthreads++;
    return err;
}

int green_offload(void *(*fn)(void *), void *arg, void **ret)
{
    if (!fn)
        return EINVAL;
    struct green__worker *w;
    struct green__thread *self;
    if (green__enter(&w, &self) != 0) {
        void *r = fn(arg);           /* an OS thread of its own: block here */
        if (ret)
            *ret = r;
        return 0;
    }
    struct green__rt *rt = w->rt;
    struct green__offload *off = &rt->off;
    struct green__job job = { .fn = fn, .arg = arg, .t = self };

    green__os_mutex_lock(&off->lock);
    if (off->nqueued >= off->nidle && off->nthreads < off->max &&
        offload_grow(rt) != 0 && off->nthreads == 0) {
        green__os_mutex_unlock(&off->lock);
        return EAGAIN;
    }
    /* Claimable before a pool thread can see the job. */
    green__park_prepare(self, "green_offload", fn, true);
    green__trace(w, GREEN_TR_OFFLOAD, self->id, (uint64_t)(uintptr_t)fn, 0);
    if (off->tail)
        off->tail->next = &job;
    else
        off->head = &job;
    off->tail = &job;
    off->nqueued++;
    atomic_fetch_add(&off->pending, 1);
    green__os_cond_signal(&off->cond);
    green__os_mutex_unlock(&off->lock);

    green__park(&w, GREEN_FOREVER);
    atomic_fetch_sub(&off->pending, 1);
    if (ret)
        *ret = job.ret;
    return 0;
}

bool green__offload_waiting(struct green__rt *rt)
{
    return atomic_load_explicit(&rt->off.pending, memory_order_relaxed) != 0;
}

void green__offload_free(struct green__rt *rt)
{
    struct green__offload *off = &rt->off;
    green__os_mutex_lock(&off->lock);
    off->stopping = true;
    green__os_cond_broadcast(&off->cond);
    green__os_mutex_unlock(&off->lock);
    for (unsigned i = 0; i < off->nthreads; i++)
        green__os_join(off->tids[i], NULL);
    free(off->tids);
    pthread_cond_destroy(&off->cond);
    pthread_mutex_destroy(&off->lock);
}
