/*
 * Switching: how the running green thread leaves the CPU and which thread
 * its worker runs next, and how a thread becomes runnable.
 *
 * A thread that leaves the CPU (yield, park, exit) switches straight to the
 * next runnable thread of its worker -- one switch, not two -- and only when
 * there is none does it switch to the worker's scheduler loop (g0, on the
 * worker's own OS stack; loop.c), which steals, fires timers, and sleeps.
 *
 * The next thread of a worker's own (pick): the LIFO slot, up to
 * GREEN_RUNNEXT_MAX times in a row; the ring; the threads preempted here
 * (pinned: they may hold addresses of this OS thread's TLS), each once the
 * ring has run what it held when the thread was preempted; every 61st pick
 * the global queue first, for fairness.
 *
 * Making a thread runnable (green__ready) puts it in the caller's worker's
 * queues (or the global queue, from a foreign thread) and wakes an idle
 * worker only when nobody is hunting for work already (green__wakep; the
 * protocol is in loop.c).
 */
#include "foreign.h"

#include <errno.h>

#define GREEN_FAIR_PERIOD 61      /* picks between looks at the global queue (Go's) */

/* ---- Switching ---------------------------------------------------------- */

/* A thread's first switch-in ("The on_cpu protocol", sched.h): its stack's
 * top record and its control block's cold part (thread.h), then the frame
 * green__ctx_switch restores (switch_x86_64.S), written by the worker about
 * to run it (switch_busy): the stack's top page is first touched here. */
/* may_alias: the stores write a struct green__thread_cold. */
typedef long long green__v16 __attribute__((vector_size(16), may_alias));

static void launch(struct green__thread *t)
{
    struct green__stack_top *top = green__stack_top(t);
    top->mark = GREEN_STACK_TOP_MARK;
    /* Zeroed by 16-byte stores: gcc turns a memset of this size into a
     * `rep stos`, slower to start than the 14 stores. */
    struct green__thread_cold *cold = green__cold(t);
    green__v16 *z = (green__v16 *)(void *)cold;
#pragma GCC unroll 16
    for (size_t i = 0; i < sizeof *cold / sizeof *z; i++)
        z[i] = (green__v16){ 0, 0 };
    cold->spawn_pc = t->spawn_pc;
    uint64_t *sp = (uint64_t *)((uintptr_t)cold & ~(uintptr_t)15);
    sp[-1] = (uint64_t)(uintptr_t)green__ctx_entry;   /* return address */
    sp[-2] = 0;                                        /* rbp */
    sp[-3] = (uint64_t)(uintptr_t)t;                   /* rbx */
    sp[-4] = (uint64_t)(uintptr_t)t->rt->thread_main;  /* r12 */
    sp[-5] = sp[-6] = sp[-7] = 0;                      /* r13 r14 r15 */
    sp[-8] = t->rt->fp_control;                        /* MXCSR, x87 CW */
    t->sp = &sp[-8];
}

#ifdef GREEN_ASAN
static void asan_start(struct green__worker *w, struct green__thread *from,
                       struct green__thread *to)
{
    const void *lo = to == &w->g0 ? w->os_stack_lo : green__stack_lo(to);
    size_t size = to == &w->g0 ? w->os_stack_size : green__stack_size(to);
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

/* green__switch's way out when `to` has on_cpu set: a thread that has
 * never run (launch it), or one still switching out on another worker.
 * Returns the thread to switch to.  Out of line, so that the switch's
 * common path keeps its registers. */
__attribute__((noinline, cold)) static struct green__thread *
switch_busy(struct green__worker *w, struct green__thread *from, struct green__thread *to)
{
    if (atomic_load_explicit(&to->on_cpu, memory_order_relaxed) == GREEN_ON_CPU_LAUNCH) {
        launch(to);                     /* its first run */
        return to;
    }
    /* Picked while still switching out on another worker.  Wait for it
     * only on g0: `from` stays on this CPU while we wait, and that worker
     * may be waiting the same way for `from` -- each on the other's
     * thread, for good.  So leave `from` first, by way of g0, which takes
     * `to` as its next pick (find_runnable). */
    if (from != &w->g0) {
        w->detour = to;
        return &w->g0;
    }
    while (atomic_load_explicit(&to->on_cpu, memory_order_acquire))
        green__cpu_relax();
    return to;
}

struct green__worker *green__switch(struct green__worker *w, struct green__thread *to)
{
    struct green__thread *from = w->cur;
    from->err = *w->errno_loc;
    /* A holder of foreign locks leaves the CPU: the next thread here must
     * see it (foreign.c). */
    if (GREEN_UNLIKELY(from->nheld) && !from->hold_linked)
        green__holders_link(w, from);
    if (to != &w->g0 && GREEN_UNLIKELY(atomic_load_explicit(&to->on_cpu, memory_order_acquire)))
        to = switch_busy(w, from, to);
    /* Any switch satisfies a refused preemption (a hook that waited for
     * it finds nothing pending when it fires).  After switch_busy: a
     * preemption refused while it launched a thread (a page fault long)
     * was meant for `from`, and this switch satisfies it too. */
    __atomic_store_n(&from->preempt_pending, false, __ATOMIC_RELAXED);
    if (to != &w->g0) {
        atomic_store_explicit(&to->on_cpu, 1, memory_order_relaxed);
        __atomic_store_n(&to->home, w, __ATOMIC_RELAXED);  /* can_spin reads it */
    }
    green__set_state(to, GREEN_T_RUNNING);
    w->prev = from;
    __atomic_store_n(&w->cur, to, __ATOMIC_RELAXED);   /* the monitor reads it */
    if (GREEN_UNLIKELY(w->trace)) {
        /* Everything it needs read back from w: untraced, the switch
         * keeps no register for it. */
        w = green__trace_switch(w);
        to = w->cur;
    }
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


static struct green__thread *pinned_pop(struct green__worker *w)
{
    struct green__thread *t = w->pinned_head;
    w->pinned_head = t->next;
    if (!w->pinned_head)
        w->pinned_tail = NULL;
    green__pinned_left(w, t, true);
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

/* The pinned queue's first thread has waited out the ring as it was when
 * the thread was preempted.  Under preemption by signal, threads that used
 * up a quantum then yield to threads that did not -- woken, spawned,
 * yielded: the ring -- for up to GREEN_PINNED_WAIT_QUANTA quanta from the
 * first pick that held the queue's first thread back; then it runs,
 * whatever the ring holds.  So a short request that arrives while long
 * ones take turns waits for the quantum that is running, not for one
 * quantum per long request, and the preempted threads together still get
 * one quantum in GREEN_PINNED_WAIT_QUANTA + 1 when fresh work never stops.
 * Fresh work that computes a whole quantum itself -- a long request just
 * arrived -- is preempted in turn, and its slice restarts the hold, once
 * a hold (green__sched_preempted): otherwise the short requests queued
 * behind it would find the hold used up, and wait for the pinned thread's
 * quantum after its own (seen: short requests waiting 8 ms behind five
 * such quanta back to back).  So the first thread of the pinned queue
 * waits at most two holds, each GREEN_PINNED_WAIT_QUANTA quanta plus the
 * slice that runs when it ends: with fresh work that computes arriving all
 * the time and slices of a quantum, the preempted threads together still
 * get one quantum in 2 * GREEN_PINNED_WAIT_QUANTA + 3.
 * (The budget's slices are counted in reductions, not time: there the
 * preempted thread's turn comes when the ring has run.)  Nobody is held
 * back while a holder of foreign locks, which others may wait for, is in
 * the pinned queue.
 *
 * Threads whose fds became ready count as fresh work: while the queue is
 * held back and the ring is empty -- and once before each preempted
 * thread's turn -- one non-blocking epoll_wait lets them in, if threads
 * wait on fds and nobody polled in the last GREEN_NETPOLL_PINNED_NS.
 * NULL: the ring goes first. */
__attribute__((noinline)) static struct green__thread *turn_of_pinned(struct green__worker *w)
{
    struct green__thread *p = w->pinned_head;
    if (!w->pinned_holders) {
        struct green__rt *rt = w->rt;
        uint64_t now = green__clock_ns();
        if (!w->pinned_held_since)
            w->pinned_held_since = now;
        uint64_t wait = rt->cfg.preempt == GREEN_PREEMPT_SIGNAL
                            ? (uint64_t)rt->cfg.quantum_us * 1000u * GREEN_PINNED_WAIT_QUANTA
                            : 0;
        bool held = now - w->pinned_held_since < wait;
        if (held && !green__runq_empty(w))
            return NULL;
        if (held || !p->pin_polled) {
            p->pin_polled = true;
            uint32_t tail = atomic_load_explicit(&w->q.tail, memory_order_relaxed);
            green__netpoll_stale(rt, w, now, GREEN_NETPOLL_PINNED_NS);
            uint32_t after = atomic_load_explicit(&w->q.tail, memory_order_relaxed);
            if (after != tail) {
                p->pin_mark = after;     /* behind what the poll let in, at least */
                return NULL;
            }
        }
    }
    return pinned_pop(w);
}

/* The next thread from w's own queues, or NULL: a scheduling decision. */
struct green__thread *green__pick(struct green__worker *w)
{
    struct green__thread *t;
    /* A dump stops the world: to the scheduler loop, which waits it out. */
    if (GREEN_UNLIKELY(atomic_load_explicit(&w->stw_asked, memory_order_relaxed)) &&
        w->cur != &w->g0)
        return &w->g0;
    green__new_slice(w);
    if (GREEN_UNLIKELY(atomic_load_explicit(&w->ninbox, memory_order_relaxed)))
        green__inbox_drain(w);
    if (GREEN_UNLIKELY(w->rt->det))
        return det_pick(w);
    if (GREEN_UNLIKELY(atomic_load_explicit(&w->handoff, memory_order_relaxed)) &&
        (t = green__handoff_take(w)) != NULL)
        return t;
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
     * run what it held when they were preempted, and then behind fresh
     * work for a while (turn_of_pinned). */
    if (w->pinned_head &&
        (int32_t)(atomic_load_explicit(&w->q.head, memory_order_relaxed) -
                  w->pinned_head->pin_mark) >= 0 &&
        (t = turn_of_pinned(w)) != NULL)
        return t;
    if ((t = green__runq_pop(w)) != NULL)
        return t;
    if (w->pinned_head)
        return pinned_pop(w);
    if (atomic_load_explicit(&w->runnext, memory_order_relaxed))
        return green__runnext_swap(w, NULL);
    return NULL;
}

void green__check_timers(struct green__worker *w)
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
        green__check_timers(w);
    struct green__thread *t = green__pick(w);
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
        green__check_timers(w);
    struct green__thread *t = green__pick(w);
    if (!t) {
        green__slice_refill(w);      /* nobody else: a new slice all the same */
        return;
    }
    struct green__thread *self = w->cur;
    green__set_state(self, GREEN_T_RUNNABLE);
    if (GREEN_UNLIKELY(self->nheld))
        green__pinned_push(w, self, false);        /* a holder stays where it holds */
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
        green__trace(w, GREEN_TR_PREEMPT, t->id, GREEN_TR_AT_POLL, 0);
    } else {
        atomic_fetch_add_explicit(&green__budget_yields, 1, memory_order_relaxed);
        green__trace(w, GREEN_TR_PREEMPT, t->id, GREEN_TR_BUDGET, 0);
    }
    green_yield();
    return green__worker_self();
}
