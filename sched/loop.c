/*
 * The scheduler loop: how a worker finds work, goes idle, and decides that
 * a run is over.  It runs on g0, the worker's own OS stack, when the thread
 * that left the CPU found nothing of its worker's own to switch to
 * (switch.c).
 *
 * Finding work, in order: timers that have expired; the LIFO slot and the
 * local queue (the global queue every 61st pick, for fairness); a batch from
 * the global queue; stealing half of a random victim's queue (a few rounds;
 * never its LIFO slot, which only the monitor may rescue); then idle.
 *
 * Idle workers sleep on their own futex and are woken one at a time.  The
 * protocol is Go's: at most one "spinning" worker hunts for work at a time;
 * making a thread runnable wakes an idle worker only when nobody is spinning
 * (green__wakep), and a spinner that finds work wakes the next one.  A wake
 * for a thread put in the LIFO slot is skipped when nothing was displaced:
 * the waker is about to block more often than not (a send then a receive),
 * and a futex wake per message would cost more than the message.
 *
 * Lost wake-ups are excluded by a Dekker pair of seq_cst fences: a producer
 * publishes work, fences, and reads nidle/nspinning; a worker going idle
 * publishes itself in nidle (and drops spinning), fences, and re-reads every
 * queue.  One of the two always sees the other.
 *
 * End of a run: the last worker to go idle (nidle == nworkers, under
 * idle_lock) looks at the whole runtime at rest.  No thread can become
 * runnable except by a timer.  With no timers pending, either every thread
 * has finished (the run is done) or the remaining ones are parked for good:
 * a deadlock, which green_run reports once the workers have stopped
 * (run.c).
 *
 * A preemption is a scheduling point too (green__sched_preempted): the
 * preempted thread is pinned to its worker, behind what its ring holds.
 */
#include "foreign.h"

#include <errno.h>

#define GREEN_STEAL_ROUNDS 4
#define GREEN_SPIN_NS 20000       /* how long a spinner hunts before sleeping */
/* How long a preempted thread keeps its worker while an idle worker is
 * woken to take what is queued behind it (green__sched_preempted). */
#define GREEN_KEEP_FOR_IDLE_NS 10000000u   /* 10 ms */

/* ---- Finding work ------------------------------------------------------- */

static struct green__thread *steal_work(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    unsigned n = rt->nworkers;
    for (unsigned round = 0; round < GREEN_STEAL_ROUNDS; round++) {
        unsigned start = green__rand_below(&w->rng, n);
        for (unsigned i = 0; i < n; i++) {
            struct green__worker *v = &rt->workers[(start + i) % n];
            if (v == w)
                continue;
            struct green__thread *t = green__runq_steal(w, v);
            if (t) {
                green__trace(w, GREEN_TR_STEAL, t->id, v->index, 0);
                return t;
            }
        }
        struct green__thread *t = green__globq_take(w, GREEN_RUNQ_SIZE / 2);
        if (t)
            return t;
    }
    return NULL;
}

static bool rt_has_others(struct green__worker *w) { return w->rt->nworkers > 1; }

/* Threads a worker has to run, as another worker sees it (racy, a hint):
 * the one running, its LIFO slot, its ring, and those pinned to it. */
static uint32_t load_of(struct green__worker *v)
{
    uint32_t head = atomic_load_explicit(&v->q.head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&v->q.tail, memory_order_relaxed);
    uint32_t n = (uint32_t)(tail - head) <= GREEN_RUNQ_SIZE ? tail - head : 0;
    n += atomic_load_explicit(&v->npinned, memory_order_relaxed);
    n += atomic_load_explicit(&v->runnext, memory_order_relaxed) != NULL;
    n += __atomic_load_n(&v->cur, __ATOMIC_RELAXED) != &v->g0;
    return n;
}

/* At a preemption, even with work of its own: take from a worker that has
 * at least two threads more, so CPU hogs spread evenly over the workers
 * while they still can -- once preempted, a thread is pinned. */
static struct green__thread *balance(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    uint32_t mine = load_of(w);
    unsigned n = rt->nworkers, start = green__rand_below(&w->rng, n);
    for (unsigned i = 0; i < n; i++) {
        struct green__worker *v = &rt->workers[(start + i) % n];
        if (v != w && load_of(v) >= mine + 2) {
            struct green__thread *t = green__runq_steal(w, v);
            if (t) {
                green__trace(w, GREEN_TR_STEAL, t->id, v->index, 0);
                return t;
            }
        }
    }
    return NULL;
}

void green__sched_preempted(struct green__worker *w)
{
    struct green__thread *self = w->cur;
    struct green__rt *rt = w->rt;
    /* A thread that ran a whole quantum kept this worker from its timers --
     * and, when no worker is idle to do it, from the fds and the global
     * queue: what they have queues up in the ring before self is pinned
     * behind it.  (With a worker idle, leave the global queue to it: the
     * monitor puts there what it takes from a busy worker for an idle one.) */
    green__check_timers(w);
    struct green__thread *t = NULL;
    if (atomic_load_explicit(&w->stw_asked, memory_order_relaxed)) {
        t = &w->g0;                  /* a dump: wait it out in the loop */
        goto leave;
    }
    if (GREEN_LIKELY(!rt->det) && atomic_load_explicit(&rt->nidle, memory_order_relaxed) == 0) {
        green__netpoll_stale(rt, w, green__clock_ns(), GREEN_NETPOLL_PREEMPT_NS);
        struct green__thread *g = green__globq_take(w, GREEN_RUNQ_SIZE / 2);
        if (g)
            green__runq_push(w, g);
    }
    if (rt_has_others(w)) {
        /* An idle worker could take the threads queued here -- but not
         * this one, once it is pinned.  So rather than pin it, wake that
         * worker and carry on while the queue lasts, for up to
         * GREEN_KEEP_FOR_IDLE_NS.  Two CPU hogs pinned to one worker stay
         * there for good, the other worker idle: a bound of two
         * preemptions (1-2 ms) was missed by a vCPU the host woke late
         * (netpoll::ten_thousand_threads_wait_on_their_own_sockets_beside_
         * cpu_hogs, under ASan). */
        if (!green__runq_empty(w) && atomic_load(&rt->nidle) > 0) {
            uint64_t now = green__clock_ns();
            if (!w->kept_since)
                w->kept_since = now;
            if (now - w->kept_since < GREEN_KEEP_FOR_IDLE_NS) {
                green__new_slice(w);
                green__wakep(rt);
                return;
            }
        }
        w->kept_since = 0;
        if ((t = balance(w)) != NULL)
            green__new_slice(w);
    }
    /* Fresh work that turned out to compute: its slice does not use up the
     * hold of the pinned queue's first thread, once a hold (switch.c,
     * turn_of_pinned). */
    if (w->pinned_held_since && !w->pinned_hold_renewed) {
        w->pinned_held_since = 0;
        w->pinned_hold_renewed = true;
    }
    if (!t)
        t = green__pick(w);
    /* Nothing here: a preemption is a scheduling point, so look for work
     * that waits elsewhere. */
    if (!t && rt_has_others(w))
        t = steal_work(w);
    if (!t)
        return;                      /* nobody else anywhere: carry on */
leave:
    green__set_state(self, GREEN_T_RUNNABLE);
    green__pinned_push(w, self, false);
    /* Only this worker takes from its pinned queue: the switch returns
     * here, on w. */
    green__switch(w, t);
}

static bool work_visible(struct green__rt *rt)
{
    if (atomic_load(&rt->glen))
        return true;
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (!green__runq_empty(&rt->workers[i]))
            return true;
    return false;
}

static void run_all_timers(struct green__worker *w, uint64_t now)
{
    struct green__rt *rt = w->rt;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *v = &rt->workers[i];
        if (atomic_load_explicit(&v->timer_next, memory_order_relaxed) <= now)
            green__timers_run(w, v, now);
    }
}

void green__wake_all(struct green__rt *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++)
        green__worker_wake(&rt->workers[i]);
}

/* Requires: rt->idle_lock held and every worker idle. */
static void quiescent_check(struct green__rt *rt)
{
    if (green__timers_pending(rt) || green__netpoll_waiting(rt) || green__offload_waiting(rt) ||
        atomic_load(&rt->os_wakeable))
        return;                      /* a timer, an fd, a job or a plain OS thread
                                      * (signalling a pthread condition,
                                      * posting a semaphore) can still
                                      * wake one */
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (atomic_load(&rt->workers[i].ninbox))
            return;                  /* a holder made runnable, its worker woken */
    uint64_t spawned = 0, exited = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        spawned += atomic_load_explicit(&rt->workers[i].spawned, memory_order_relaxed);
        exited += atomic_load_explicit(&rt->workers[i].exited, memory_order_relaxed);
    }
    if (spawned != exited)
        rt->result = EDEADLK;        /* green_run reports it (run.c) */
    atomic_store(&rt->done, 1);
}

/* Requires: w is in the idle list or was just taken out by a waker. */
static void unidle(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    bool kick = false;
    green__spin_lock(&rt->idle_lock);
    if (w->idle) {
        struct green__worker **pp = &rt->idle_list;
        while (*pp != w)
            pp = &(*pp)->idle_next;
        *pp = w->idle_next;
        w->idle = false;
        if (atomic_fetch_sub(&rt->nidle, 1) == rt->nworkers)
            kick = true;
    }
    green__spin_unlock(&rt->idle_lock);
    if (kick)
        green__sysmon_kick(rt);
}

/* Publish w as idle, look once more, then sleep until woken or the next
 * timer is due (if w is the one watching timers). */
static void go_idle(struct green__worker *w)
{
    struct green__rt *rt = w->rt;

    green__pool_scavenge(&rt->stacks);
    green__spin_lock(&rt->idle_lock);
    if (atomic_load(&rt->done) || atomic_load(&rt->glen)) {
        green__spin_unlock(&rt->idle_lock);
        return;
    }
    atomic_store(&w->wakeword, 0);
    w->idle = true;
    w->idle_next = rt->idle_list;
    rt->idle_list = w;
    atomic_fetch_add(&rt->nidle, 1);
    if (w->spinning) {
        w->spinning = false;
        atomic_fetch_sub(&rt->nspinning, 1);
    }
    if (atomic_load(&rt->nidle) == rt->nworkers)
        quiescent_check(rt);
    green__spin_unlock(&rt->idle_lock);
    if (atomic_load(&rt->done)) {
        green__wake_all(rt);
        return;
    }

    atomic_thread_fence(memory_order_seq_cst);
    /* A dump sets stw, then wakes every worker: seen here, or woken. */
    if (work_visible(rt) || atomic_load(&w->ninbox) || atomic_load(&w->stw_asked)) {
        unidle(w);
        return;
    }

    /* The watcher also comes back to give idle stacks' memory back. */
    uint64_t deadline = green__timers_next(rt);
    uint64_t release = green__pool_release_due(&rt->stacks);
    if (release < deadline)
        deadline = release;
    bool watching = false;
    if (deadline != GREEN_FOREVER) {
        green__spin_lock(&rt->idle_lock);
        if (!rt->watcher) {
            rt->watcher = w;
            atomic_store(&rt->watch_until, deadline);
            watching = true;
        }
        green__spin_unlock(&rt->idle_lock);
        if (!watching)
            deadline = GREEN_FOREVER;
    }
    /* While threads wait on fds, one idle worker sleeps in epoll_wait
     * instead (netpoll.c); its wakers break it through the eventfd.  The
     * threads it finds ready are made runnable once it has left idle, the
     * first in its own LIFO slot: made runnable by an idle worker, they
     * would wake one -- often itself, through its futex and the eventfd,
     * four system calls for nothing -- and the first would wake another
     * worker to steal what this one is about to run. */
    uint32_t zero = 0;
    struct green__thread *ready = NULL;
    if (green__netpoll_waiting(rt) &&
        atomic_compare_exchange_strong(&rt->np.blocked, &zero, 1)) {
        atomic_store(&w->in_netpoll, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&w->wakeword, memory_order_acquire) == 0 &&
            !atomic_load(&rt->done))
            ready = green__netpoll_collect(rt, deadline);
        atomic_store(&w->in_netpoll, 0);
        atomic_store(&rt->np.blocked, 0);
    } else {
        while (atomic_load_explicit(&w->wakeword, memory_order_acquire) == 0 &&
               !atomic_load(&rt->done)) {
            green__futex_wait(&w->wakeword, 0, deadline);
            if (deadline != GREEN_FOREVER && green__clock_ns() >= deadline)
                break;
        }
    }
    if (watching) {
        green__spin_lock(&rt->idle_lock);
        rt->watcher = NULL;
        atomic_store(&rt->watch_until, GREEN_FOREVER);
        green__spin_unlock(&rt->idle_lock);
    }
    unidle(w);
    green__netpoll_ready(w, ready, true);
}

/* A dump is listing the threads (dump.c): wait, in the scheduler loop,
 * until it is done. */
static __attribute__((noinline, cold)) void stw_stop(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    atomic_store(&w->stw_stopped, true);
    atomic_fetch_add(&rt->stw_stopped, 1);
    green__futex_wake(&rt->stw_stopped, 1);
    while (atomic_load(&w->stw_asked))
        green__futex_wait(&rt->stw, 1, GREEN_FOREVER);
    atomic_fetch_sub(&rt->stw_stopped, 1);
    atomic_store(&w->stw_stopped, false);
}

static struct green__thread *find_runnable(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    uint64_t spin_until = 0;
    struct green__thread *t;

    if (GREEN_UNLIKELY(w->detour)) {     /* picked already (green__switch) */
        t = w->detour;
        w->detour = NULL;
        return t;
    }
    for (;;) {
        if (atomic_load_explicit(&rt->done, memory_order_acquire))
            return NULL;
        if (GREEN_UNLIKELY(atomic_load_explicit(&w->stw_asked, memory_order_relaxed))) {
            stw_stop(w);
            continue;
        }
        uint64_t now = green__now(rt);
        if (green__timers_next(rt) <= now)
            run_all_timers(w, now);
        if ((t = green__pick(w)) != NULL || (t = green__globq_take(w, GREEN_RUNQ_SIZE / 2)))
            break;
        /* Once per hunt, not on every turn of the spin: a system call
         * each, ~1.3 us here; the blocking poll of go_idle catches the rest. */
        if (!spin_until && green__netpoll_waiting(rt) && !atomic_load(&rt->np.blocked) &&
            green__netpoll(rt, w, 0, true) > 0)
            continue;                /* fds became ready: run their threads */
        if (GREEN_UNLIKELY(rt->det)) {
            /* One worker, nothing to steal, and no timer but on the virtual
             * clock: move it to the next deadline, or rest. */
            if (!green__det_idle(rt))
                go_idle(w);
            continue;
        }
        /* Spin to steal -- not with nobody to steal from. */
        unsigned busy = rt->nworkers - atomic_load(&rt->nidle);
        if (rt_has_others(w) && (w->spinning || 2 * atomic_load(&rt->nspinning) < busy)) {
            if (!w->spinning) {
                w->spinning = true;
                atomic_fetch_add(&rt->nspinning, 1);
            }
            if ((t = steal_work(w)) != NULL)
                break;
            if (!spin_until)
                spin_until = now + GREEN_SPIN_NS;
            if (now < spin_until)
                continue;
        }
        go_idle(w);
        spin_until = 0;
    }

    if (w->spinning) {
        /* Keep one worker hunting while work remains to be found. */
        w->spinning = false;
        if (atomic_fetch_sub(&rt->nspinning, 1) == 1 && work_visible(rt))
            green__wakep(rt);
    }
    return t;
}

void green__worker_loop(struct green__worker *w)
{
#ifdef GREEN_TSAN
    w->g0.tsan_fiber = __tsan_get_current_fiber();   /* the OS thread's own */
#endif
    __atomic_store_n(&w->cur, &w->g0, __ATOMIC_RELAXED);
    green__set_state(&w->g0, GREEN_T_RUNNING);
    green__reductions = 0;           /* whatever an earlier run left */
    w->slice_len = 0;
    struct green__thread *t;
    while ((t = find_runnable(w)) != NULL)
        w = green__switch(w, t);
    if (w->rt->hooks && w->rt->hooks->worker_exit)
        w->rt->hooks->worker_exit(w);
    /* Wake the others: they may be asleep without having seen `done`. */
    green__wake_all(w->rt);
}
