/*
 * green__run: one runtime, from the first worker's start to the last green
 * thread's end.  (green_run itself, which picks the preemption mode and
 * hands its hooks in, is in signals/mode.c: sched/ knows nothing of signals.)
 *
 * The calling OS thread becomes worker 0 (its own stack runs worker 0's
 * scheduler loop); workers 1..n-1 are new pthreads.  All state of the run
 * lives in one struct green__rt allocated here and freed on return, so runs
 * do not share anything but the overflow handler (reference-counted) and the
 * thread-id counter (ids are never reused in a process).  Several OS threads
 * may each be inside their own green_run at once.
 *
 * Deadlock report.  When the runtime comes to rest with threads still parked
 * and no timer pending (loop.c, quiescent_check), the run ends with EDEADLK;
 * once its workers have stopped, every slot is walked and each parked
 * thread is listed with the call it blocks in.  The threads are
 * abandoned, not resumed: their stacks are unmapped with the rest of the run.
 * Their waiters are unlinked from the objects they were queued on, so those
 * objects can be destroyed; a mutex one of them held stays held.
 */
#include "foreign.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GREEN_REPORT_MAX 100     /* threads listed one by one; the rest counted */

static unsigned online_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void worker_init(struct green__rt *rt, struct green__worker *w, unsigned i)
{
    w->rt = rt;
    w->index = i;
    w->rng = green__rand_next(&(uint64_t){ rt->cfg.seed + i + 1 });
    atomic_store(&w->timer_next, GREEN_FOREVER);
    w->g0.rt = rt;
    green__set_state(&w->g0, GREEN_T_RUNNING);
    __atomic_store_n(&w->cur, &w->g0, __ATOMIC_RELAXED);
}

static void rt_free(struct green__rt *rt)
{
    /* First: a pool thread may still be inside green__ready for the last
     * job's thread, waking a worker, after the run has ended. */
    green__offload_free(rt);
    /* Then the timeline, if traced: every record is in (trace.c). */
    green__trace_finish(rt);
    if (rt->workers) {
        for (unsigned i = 0; i < rt->nworkers; i++)
            green__timers_free(&rt->workers[i]);
        free(rt->workers);
    }
    free(rt->sysmon_seen);
    free(rt->detq);
    green__netpoll_free(rt);
    pthread_mutex_destroy(&rt->np.init_lock);
    green__pool_destroy(&rt->stacks);
    green__pool_destroy(&rt->threads);
    green__pool_destroy(&rt->keypages);
    free(rt);
}

static int rt_new(const green_config_t *cfg, struct green__rt **out)
{
    struct green__rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return ENOMEM;
    rt->cfg = *cfg;
    pthread_mutex_init(&rt->np.init_lock, NULL);
    green__offload_init(rt);
    rt->det = cfg->deterministic != GREEN_DETERMINISTIC_OFF;
    if (!rt->cfg.seed) {
        rt->cfg.seed = green__clock_ns() ^ (uint64_t)getpid() << 32;
        if (rt->det)                 /* else the run could not be replayed */
            fprintf(stderr, "libgreen: deterministic run with seed %llu "
                            "(GREEN_SEED=%llu replays it)\n",
                    (unsigned long long)rt->cfg.seed, (unsigned long long)rt->cfg.seed);
    }
    bool budget = cfg->preempt == GREEN_PREEMPT_BUDGET || cfg->preempt == GREEN_PREEMPT_BOTH;
    rt->slice_budget = budget ? (int64_t)cfg->budget : GREEN_BUDGET_NONE;
    rt->vnow = GREEN_DET_EPOCH;
    rt->digest = 0xcbf29ce484222325u;    /* FNV-1a's offset basis */
    rt->nworkers = cfg->workers ? cfg->workers : online_cpus();
    green__runnext_mode(rt);
    rt->fp_control = green__fp_control();
    atomic_store(&rt->watch_until, GREEN_FOREVER);
    int err = green__stacks_init(rt, cfg->stack_size);
    if (!err && (err = green__threads_init(rt)) != 0)
        green__pool_destroy(&rt->stacks);
    if (!err && (err = green__keys_init(rt)) != 0) {
        green__pool_destroy(&rt->threads);
        green__pool_destroy(&rt->stacks);
    }
    if (err) {
        free(rt);
        return err;
    }
    size_t bytes = rt->nworkers * sizeof *rt->workers;
    rt->workers = aligned_alloc(GREEN_CACHELINE, bytes);
    if (!rt->workers) {
        rt_free(rt);
        return ENOMEM;
    }
    memset(rt->workers, 0, bytes);
    rt->sysmon_seen = calloc(rt->nworkers, sizeof *rt->sysmon_seen);
    if (!rt->sysmon_seen) {
        rt_free(rt);
        return ENOMEM;
    }
    for (unsigned i = 0; i < rt->nworkers; i++)
        worker_init(rt, &rt->workers[i], i);
    *out = rt;
    return 0;
}

static void deadlock_report(struct green__rt *rt);

int green__run(void *(*main_fn)(void *), void *arg, const green_config_t *cfg,
               void **ret, const struct green__hooks *hooks)
{
    if (!main_fn)
        return EINVAL;
    if (green__worker_self())
        return EBUSY;
    int err = green__dump_signal_init(cfg->signo);
    if (err)
        return err;
    struct green__rt *rt;
    if ((err = rt_new(cfg, &rt)) != 0)
        return err;
    if ((err = green__trace_start(rt)) != 0) {
        rt_free(rt);
        return err;
    }
    rt->hooks = hooks;
    if ((err = green__overflow_install()) != 0) {
        rt_free(rt);
        return err;
    }
    if (hooks && hooks->start && (err = hooks->start(rt)) != 0) {
        green__overflow_uninstall();
        rt_free(rt);
        return err;
    }

    bool listed = false;
    struct green__worker *w0 = &rt->workers[0];
    struct green__thread *main_t = green__thread_new(w0, main_fn, arg, true, &err);
    if (!main_t) {
        err = err == ENOMEM ? ENOMEM : EAGAIN;
        goto out;
    }
    main_t->is_main = true;
    green__trace(w0, GREEN_TR_SPAWN, main_t->id, 0, 0);
    green__runq_push(w0, main_t);

    green__runs_add(rt);
    listed = true;
    if ((err = green__sysmon_start(rt)) != 0)
        goto out;
    if ((err = green__workers_start(rt)) != 0) {
        green__sysmon_stop(rt);
        goto out;
    }
    green__worker_loop(w0);
    green__workers_join(rt);
    green__sysmon_stop(rt);
    green__runs_remove(rt);          /* waits for a dump under way */
    listed = false;

    err = rt->result;
    if (err == EDEADLK)
        deadlock_report(rt);
    if (cfg->deterministic == GREEN_DETERMINISTIC_PRINT)
        fprintf(stderr, "libgreen: deterministic run: seed %llu, %llu switches, "
                        "schedule digest %016llx\n",
                (unsigned long long)rt->cfg.seed, (unsigned long long)rt->switches,
                (unsigned long long)rt->digest);
    if (ret)
        *ret = err == 0 ? rt->main_ret : NULL;
out:
    if (listed)
        green__runs_remove(rt);
    if (hooks && hooks->stop)
        hooks->stop(rt);
    green__overflow_uninstall();
    rt_free(rt);
    return err;
}

/* ---- Deadlock report ---------------------------------------------------- */

struct report {
    uint64_t listed;
};

/* Who holds a foreign lock (sched/foreign.c), for the report. */
struct holder_of {
    const void *lock;
    const struct green__thread *holder;
};

static void find_holder(void *obj, void *arg)
{
    struct green__thread *t = obj;
    struct holder_of *h = arg;
    uint8_t st = green__state(t);
    if (!h->holder && st != GREEN_T_FREE && st != GREEN_T_DEAD && green__held_by(t, h->lock))
        h->holder = t;
}

static void report_thread(void *obj, void *arg)
{
    struct green__thread *t = obj;
    struct report *r = arg;
    if (green__state(t) != GREEN_T_PARKED)
        return;
    struct green__thread_cold *c = green__cold(t);   /* parked: it has run */
    if (r->listed++ < GREEN_REPORT_MAX) {
        const char *what = c->wait_what ? c->wait_what : "an unknown call";
        fprintf(stderr, "  green thread %llu%s: blocked in %s",
                (unsigned long long)t->id, t->is_main ? " (main)" : "", what);
        if (c->wait_obj && strcmp(what, "green_join") == 0)
            fprintf(stderr, " on green thread %llu",
                    (unsigned long long)((const struct green__thread *)c->wait_obj)->id);
        else if (c->wait_obj)
            fprintf(stderr, " on %p", c->wait_obj);
        if (c->wait_obj && strncmp(what, "pthread_rwlock_", 15) == 0) {
            /* The lock's words, for whoever reads the report: readers
             * count << 3 | flags, and the writer's OS thread id. */
            const pthread_rwlock_t *rw = c->wait_obj;
            fprintf(stderr, " (readers word %#x, writer tid %d)",
                    __atomic_load_n(&rw->__data.__readers, __ATOMIC_RELAXED),
                    __atomic_load_n(&rw->__data.__cur_writer, __ATOMIC_RELAXED));
        }
        if (c->wait_obj && t->rt) {
            struct holder_of h = { c->wait_obj, NULL };
            green__pool_foreach(&t->rt->threads, find_holder, &h);
            if (h.holder)
                fprintf(stderr, ", held by green thread %llu%s", (unsigned long long)h.holder->id,
                        h.holder == t ? " (itself)" : "");
        }
        fputc('\n', stderr);
    }
    /* Nobody will unlink these now: do it, so the objects can be destroyed. */
    for (struct green__waiter *wt = c->waiters; wt; wt = wt->tnext)
        if (wt->linked)
            green__wq_remove(wt->q, wt);
}

/* Print the blocked threads, then unlink their waiters from the objects
 * they wait on, so that the program can destroy those objects.  Requires:
 * the workers have stopped (the last one to go idle found the rest parked
 * for good: loop.c). */
static void deadlock_report(struct green__rt *rt)
{
    struct report r = { 0 };
    uint64_t live = 0;
    for (unsigned i = 0; i < rt->nworkers; i++)
        live += atomic_load(&rt->workers[i].spawned) - atomic_load(&rt->workers[i].exited);
    fprintf(stderr, "libgreen: deadlock: all %llu remaining green threads are blocked "
                    "and nothing can wake them:\n", (unsigned long long)live);
    green__pool_foreach(&rt->threads, report_thread, &r);
    if (r.listed > GREEN_REPORT_MAX)
        fprintf(stderr, "  ... and %llu more\n",
                (unsigned long long)(r.listed - GREEN_REPORT_MAX));
    fflush(stderr);
}
