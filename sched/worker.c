/*
 * Workers: the OS threads that run green threads, and how they find work,
 * switch, go idle and decide that a run is over.
 *
 * A worker runs green threads one after another.  A thread that leaves the
 * CPU (yield, park, exit) switches straight to the next runnable thread of
 * its worker -- one switch, not two -- and only when there is none does it
 * switch to the worker's scheduler loop (g0, on the worker's own OS stack),
 * which steals, fires timers, and sleeps.
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
 * a deadlock, reported on stderr.
 */
#include "foreign.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GREEN_FAIR_PERIOD 61      /* picks between looks at the global queue (Go's) */
#define GREEN_STEAL_ROUNDS 4
#define GREEN_SPIN_NS 20000       /* how long a spinner hunts before sleeping */

__thread struct green__worker *green__tls_worker __attribute__((tls_model("initial-exec")));

void green__worker_set(struct green__worker *w) { green__tls_worker = w; }

__thread unsigned green__in_handler __attribute__((tls_model("initial-exec")));

int green_worker_index(void)
{
    struct green__worker *w = green__worker_self();
    return w && w->cur != &w->g0 && !green__in_handler ? (int)w->index : -1;
}

/* ---- Switching ---------------------------------------------------------- */

#ifdef GREEN_ASAN
static void asan_start(struct green__worker *w, struct green__thread *from,
                       struct green__thread *to)
{
    const void *lo = to == &w->g0 ? w->os_stack_lo : to->stack_lo;
    size_t size = to == &w->g0 ? w->os_stack_size : to->stack_size;
    __sanitizer_start_switch_fiber(green__state(from) == GREEN_T_DEAD ? NULL : &from->asan_fake,
                                   lo, size);
}
static void asan_finish(struct green__thread *self)
{
    __sanitizer_finish_switch_fiber(self->asan_fake, NULL, NULL);
}
#else
static void asan_start(struct green__worker *w, struct green__thread *from,
                       struct green__thread *to)
{
    (void)w, (void)from, (void)to;
}
static void asan_finish(struct green__thread *self) { (void)self; }
#endif

void green__switch_finish(struct green__worker *w)
{
    asan_finish(w->cur);
    struct green__thread *prev = w->prev;
    if (prev == &w->g0)
        return;
    if (green__state(prev) == GREEN_T_DEAD) {
        /* Off its stack at last: the stack goes back now, the control
         * block when it is joined (or now, if detached). */
        green__stack_put(w, prev);
        if (prev->free_on_switch) {
            prev->free_on_switch = false;
            atomic_store_explicit(&prev->on_cpu, 0, memory_order_relaxed);
            green__thread_free(w, prev);
            return;
        }
    }
    /* Its registers are saved: whoever picked it may now switch to it. */
    atomic_store_explicit(&prev->on_cpu, 0, memory_order_release);
}

struct green__worker *green__switch(struct green__worker *w, struct green__thread *to)
{
    struct green__thread *from = w->cur;
    from->err = *w->errno_loc;
    /* A holder of foreign locks leaves the CPU: the next thread here must
     * see it (foreign.c). */
    if (GREEN_UNLIKELY(from->nheld) && !from->hold_linked)
        green__holders_link(w, from);
    /* Any switch satisfies a refused preemption (a hook that waited for
     * it finds nothing pending when it fires). */
    __atomic_store_n(&from->preempt_pending, false, __ATOMIC_RELAXED);
    if (to != &w->g0 && GREEN_UNLIKELY(atomic_load_explicit(&to->on_cpu, memory_order_acquire))) {
        /* Picked while still switching out on another worker.  Wait for it
         * only on g0: `from` stays on this CPU while we wait, and that
         * worker may be waiting the same way for `from` -- each on the
         * other's thread, for good.  So leave `from` first, by way of g0,
         * which takes `to` as its next pick (find_runnable). */
        if (from != &w->g0) {
            w->detour = to;
            to = &w->g0;
        } else {
            while (atomic_load_explicit(&to->on_cpu, memory_order_acquire))
                green__cpu_relax();
        }
    }
    if (to != &w->g0) {
        atomic_store_explicit(&to->on_cpu, 1, memory_order_relaxed);
        __atomic_store_n(&to->home, w, __ATOMIC_RELAXED);  /* can_spin reads it */
    }
    green__set_state(to, GREEN_T_RUNNING);
    w->prev = from;
    __atomic_store_n(&w->cur, to, __ATOMIC_RELAXED);   /* the monitor reads it */
    green__slice_start(w, to);
    asan_start(w, from, to);
#ifdef GREEN_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    w = green__ctx_switch(&from->sp, to->sp, w);
    green__switch_finish(w);
    *w->errno_loc = from->err;
    return w;
}

/* The owner's counters that others read: plain increments, published. */
static void add_relaxed(_Atomic uint32_t *c, uint32_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* A scheduling decision: the monitor dates slices by it. */
static void new_slice(struct green__worker *w) { add_relaxed(&w->tick, 1); }

/* A preempted thread waits behind the threads queued in the ring when it
 * was preempted (pin_mark), as it would at the tail of a FIFO: the ring
 * cannot make it wait longer, and it cannot take a quantum per thread the
 * ring holds. */
static void pinned_push(struct green__worker *w, struct green__thread *t)
{
    green__pinned_push(w, t, false);
}

/* now: a holder of foreign locks made runnable -- others may wait for what
 * it holds, so it need not wait for the ring. */
void green__pinned_push(struct green__worker *w, struct green__thread *t, bool now)
{
    t->next = NULL;
    t->pin_mark = atomic_load_explicit(now ? &w->q.head : &w->q.tail, memory_order_relaxed);
    if (w->pinned_tail)
        w->pinned_tail->next = t;
    else
        w->pinned_head = t;
    w->pinned_tail = t;
    add_relaxed(&w->npinned, 1);
}

static struct green__thread *pinned_pop(struct green__worker *w)
{
    struct green__thread *t = w->pinned_head;
    w->pinned_head = t->next;
    if (!w->pinned_head)
        w->pinned_tail = NULL;
    add_relaxed(&w->npinned, (uint32_t)-1);
    return t;
}

/* A deterministic run (one worker): gather every runnable thread into the
 * run's pool -- the LIFO slot, the ring, the pinned queue, the global queue,
 * always in this order -- and draw one at random from the seed. */
static __attribute__((noinline, cold)) struct green__thread *det_pick(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    struct green__thread *t;
    for (;;) {
        if (atomic_load_explicit(&w->runnext, memory_order_relaxed) &&
            (t = green__runnext_swap(w, NULL)) != NULL)
            green__det_push(rt, t);
        else if ((t = green__runq_pop(w)) != NULL)
            green__det_push(rt, t);
        else if (w->pinned_head)
            green__det_push(rt, pinned_pop(w));
        else if (atomic_load_explicit(&rt->glen, memory_order_relaxed) &&
                 (t = green__globq_take(w, GREEN_RUNQ_SIZE / 2)) != NULL)
            green__det_push(rt, t);
        else
            return green__det_take(w);
    }
}

/* The next thread from w's own queues, or NULL. */
static struct green__thread *pick(struct green__worker *w)
{
    struct green__thread *t;
    new_slice(w);
    if (GREEN_UNLIKELY(atomic_load_explicit(&w->ninbox, memory_order_relaxed)))
        green__inbox_drain(w);
    if (GREEN_UNLIKELY(w->rt->det))
        return det_pick(w);
    if (GREEN_UNLIKELY(++w->fair_tick >= GREEN_FAIR_PERIOD)) {
        w->fair_tick = 0;
        if (atomic_load_explicit(&w->rt->glen, memory_order_relaxed) &&
            (t = green__globq_take(w, 1)) != NULL)
            return t;
    }
    if (w->runnext_streak < GREEN_RUNNEXT_MAX &&
        atomic_load_explicit(&w->runnext, memory_order_relaxed) &&
        (t = green__runnext_swap(w, NULL))) {
        w->runnext_streak++;
        return t;
    }
    w->runnext_streak = 0;
    /* Threads preempted here wait in the pinned queue until the ring has
     * run what it held when they were preempted. */
    if (w->pinned_head &&
        (int32_t)(atomic_load_explicit(&w->q.head, memory_order_relaxed) -
                  w->pinned_head->pin_mark) >= 0)
        return pinned_pop(w);
    if ((t = green__runq_pop(w)) != NULL)
        return t;
    if (w->pinned_head)
        return pinned_pop(w);
    if (atomic_load_explicit(&w->runnext, memory_order_relaxed))
        return green__runnext_swap(w, NULL);
    return NULL;
}

static void check_timers(struct green__worker *w)
{
    uint64_t next = atomic_load_explicit(&w->timer_next, memory_order_relaxed);
    if (next != GREEN_FOREVER) {
        uint64_t now = green__now(w->rt);
        if (next <= now)
            green__timers_run(w, w, now);
    }
}



struct green__worker *green__sched_leave(struct green__worker *w)
{
    struct green__thread *self = w->cur;
    if ((atomic_load_explicit(&w->tick, memory_order_relaxed) & 63) == 0)
        check_timers(w);
    struct green__thread *t = pick(w);
    if (t == self) {                 /* woken before it got away */
        green__set_state(self, GREEN_T_RUNNING);
        green__slice_refill(w);
        return w;
    }
    return green__switch(w, t ? t : &w->g0);
}

void green_yield(void)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return;
    if ((atomic_load_explicit(&w->tick, memory_order_relaxed) & 63) == 0)
        check_timers(w);
    struct green__thread *t = pick(w);
    if (!t) {
        green__slice_refill(w);      /* nobody else: a new slice all the same */
        return;
    }
    struct green__thread *self = w->cur;
    green__set_state(self, GREEN_T_RUNNABLE);
    if (GREEN_UNLIKELY(self->nheld))
        pinned_push(w, self);        /* a holder stays where it holds */
    else
        green__runq_push(w, self);
    green__switch(w, t);
}

_Atomic uint64_t green__deferred_taken;

/* At a poll: a refused preemption is pending, or the slice's budget is
 * spent (both are satisfied by one yield). */
struct green__worker *green__take_deferred(struct green__worker *w)
{
    struct green__thread *t = w->cur;
    if (t->nopreempt)
        return w;                    /* green_nopreempt_end polls again */
    if (__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED)) {
        __atomic_store_n(&t->preempt_pending, false, __ATOMIC_RELAXED);
        atomic_fetch_add_explicit(&green__deferred_taken, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&green__budget_yields, 1, memory_order_relaxed);
    }
    green_yield();
    return green__worker_self();
}

/* ---- Making threads runnable -------------------------------------------- */

void green__wakep(struct green__rt *rt)
{
    if (atomic_load(&rt->nidle) == 0 || atomic_load(&rt->nspinning) != 0)
        return;
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
        return;
    green__spin_lock(&rt->idle_lock);
    struct green__worker *v = rt->idle_list;
    if (!v) {
        green__spin_unlock(&rt->idle_lock);
        atomic_fetch_sub(&rt->nspinning, 1);
        return;
    }
    rt->idle_list = v->idle_next;
    v->idle = false;
    v->spinning = true;
    bool was_all = atomic_fetch_sub(&rt->nidle, 1) == rt->nworkers;
    green__spin_unlock(&rt->idle_lock);
    if (was_all)
        green__sysmon_kick(rt);
    green__worker_wake(v);
}

void green__worker_wake(struct green__worker *v)
{
    atomic_store_explicit(&v->wakeword, 1, memory_order_release);
    green__futex_wake(&v->wakeword, 1);
    /* A Dekker pair with go_idle: it publishes in_netpoll, then reads
     * wakeword. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&v->in_netpoll, memory_order_relaxed))
        green__netpoll_break(v->rt);
}

void green__ready(struct green__worker *w, struct green__thread *t, bool next)
{
    struct green__rt *rt = t->rt;
    bool wake = true;
    if (GREEN_UNLIKELY(t->nheld)) {
        green__ready_holder(w && w->rt == rt ? w : NULL, t);
        return;
    }
    green__set_state(t, GREEN_T_RUNNABLE);
    if (w && w->rt == rt) {
        if (next) {
            struct green__thread *old = green__runnext_swap(w, t);
            if (old)
                green__runq_push(w, old);
            else
                wake = atomic_load_explicit(&w->q.head, memory_order_relaxed) !=
                       atomic_load_explicit(&w->q.tail, memory_order_relaxed);
        } else {
            green__runq_push(w, t);
        }
    } else {
        green__globq_push(rt, t, t, 1);
    }
    if (wake) {
        atomic_thread_fence(memory_order_seq_cst);
        green__wakep(rt);
    }
}

unsigned green__ready_list(struct green__worker *w, struct green__thread *list, bool next)
{
    unsigned n = 0;
    while (list) {
        struct green__thread *t = list;
        list = t->next;              /* green__ready reuses t->next */
        green__ready(w, t, next);
        n++;
    }
    return n;
}

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
            if (t)
                return t;
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
            if (t)
                return t;
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
    check_timers(w);
    if (GREEN_LIKELY(!rt->det) && atomic_load_explicit(&rt->nidle, memory_order_relaxed) == 0) {
        green__netpoll_stale(rt, w, green__clock_ns(), GREEN_NETPOLL_PREEMPT_NS);
        struct green__thread *g = green__globq_take(w, GREEN_RUNQ_SIZE / 2);
        if (g)
            green__runq_push(w, g);
    }
    struct green__thread *t = NULL;
    if (rt_has_others(w)) {
        /* An idle worker could take the threads queued here -- but not
         * this one, once it is pinned.  So rather than pin it, wake that
         * worker and carry on, a couple of times, while the queue lasts. */
        if (!green__runq_empty(w) && atomic_load(&rt->nidle) > 0 && w->kept_for_idle < 2) {
            w->kept_for_idle++;
            new_slice(w);
            green__wakep(rt);
            return;
        }
        w->kept_for_idle = 0;
        if ((t = balance(w)) != NULL)
            new_slice(w);
    }
    if (!t)
        t = pick(w);
    /* Nothing here: a preemption is a scheduling point, so look for work
     * that waits elsewhere. */
    if (!t && rt_has_others(w))
        t = steal_work(w);
    if (!t)
        return;                      /* nobody else anywhere: carry on */
    green__set_state(self, GREEN_T_RUNNABLE);
    pinned_push(w, self);
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

static void wake_all(struct green__rt *rt)
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
    if (spawned != exited) {
        green__deadlock_report(rt);
        rt->result = EDEADLK;
    }
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
        wake_all(rt);
        return;
    }

    atomic_thread_fence(memory_order_seq_cst);
    if (work_visible(rt) || atomic_load(&w->ninbox)) {
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
     * instead (netpoll.c); its wakers break it through the eventfd. */
    uint32_t zero = 0;
    if (green__netpoll_waiting(rt) &&
        atomic_compare_exchange_strong(&rt->np.blocked, &zero, 1)) {
        atomic_store(&w->in_netpoll, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&w->wakeword, memory_order_acquire) == 0 &&
            !atomic_load(&rt->done))
            green__netpoll(rt, w, deadline);
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
        uint64_t now = green__now(rt);
        if (green__timers_next(rt) <= now)
            run_all_timers(w, now);
        if ((t = pick(w)) != NULL || (t = green__globq_take(w, GREEN_RUNQ_SIZE / 2)))
            break;
        if (green__netpoll_waiting(rt) && !atomic_load(&rt->np.blocked) &&
            green__netpoll(rt, w, 0) > 0)
            continue;                /* fds became ready: run their threads */
        if (GREEN_UNLIKELY(rt->det)) {
            /* One worker, nothing to steal, and no timer but on the virtual
             * clock: move it to the next deadline, or rest. */
            if (!green__det_idle(rt))
                go_idle(w);
            continue;
        }
        unsigned busy = rt->nworkers - atomic_load(&rt->nidle);
        if (w->spinning || 2 * atomic_load(&rt->nspinning) < busy) {
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
    wake_all(w->rt);
}

/* ---- Worker OS threads -------------------------------------------------- */

/* Requires: called on w's own OS thread. */
static void os_stack_bounds(struct green__worker *w)
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
    os_stack_bounds(w);
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
    os_stack_bounds(w0);
    if (green__altstack_setup(w0) != 0)
        green__write_str(2, "libgreen: warning: no sigaltstack for a worker; "
                            "stack overflows there will not be reported\n");
    for (unsigned i = 1; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        int err = pthread_create(&w->pthread, NULL, worker_main, w);
        if (err != 0) {
            /* Stop the ones already started: they find `done` and leave. */
            atomic_store(&rt->done, 1);
            wake_all(rt);
            for (unsigned j = 1; j < i; j++)
                pthread_join(rt->workers[j].pthread, NULL);
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
        pthread_join(rt->workers[i].pthread, NULL);
    green__altstack_teardown(&rt->workers[0]);
    /* The thread that called green_run gets its own mask back. */
    pthread_sigmask(SIG_SETMASK, &rt->workers[0].sigmask_before, NULL);
    green__worker_set(NULL);
}
