/* Private to libgreen. */
/*
 * A worker: the OS thread that runs green threads (struct green__worker),
 * its run queue and timer heap, and the calls that switch between threads,
 * make them runnable and run the scheduler loop (self.c, switch.c, ready.c,
 * loop.c, worker.c, timer.c).
 */
#ifndef GREEN_WORKER_H
#define GREEN_WORKER_H

#include "thread.h"
#include "pool.h"

/* ---- Run queues (runq.c) ------------------------------------------------ */

#define GREEN_RUNQ_SIZE 256u
#define GREEN_RUNNEXT_MAX 32u      /* LIFO picks in a row before the queue's turn */

/* Go's runq: single producer (the owner), many consumers (owner and
 * stealers, by CAS on head). */
struct green__runq {
    _Atomic uint32_t head;
    _Atomic uint32_t tail;
    _Atomic(struct green__thread *) slot[GREEN_RUNQ_SIZE];
};

/* ---- Timers (timer.c) --------------------------------------------------- */

struct green__timer {
    uint64_t deadline;
    struct green__thread *t;
};

/* ---- Workers ------------------------------------------------------------ */

struct green__trace_w;               /* trace.h */

struct green__worker {
    /* Fixed at start. */
    struct green__rt *rt;
    unsigned index;
    pthread_t pthread;

    /* Owner: this worker's OS thread. */
    struct green__thread *cur;       /* running: a green thread or &g0; the
                                      * monitor and other workers read it:
                                      * relaxed atomic stores and loads */
    struct green__trace_w *trace;    /* its timeline's rings (trace.h), or NULL:
                                      * not traced; fixed for the run */
    struct green__thread *prev;      /* context just left; finished by the next */
    struct green__thread *detour;    /* picked while still on another CPU: g0
                                      * switches to it (green__switch) */
    _Atomic uint32_t tick;           /* picks; owner writes, sysmon reads */
    uint32_t runnext_streak;         /* consecutive runnext picks */
    uint32_t fair_tick;              /* picks since the global queue's turn */
    uint64_t rng;
    bool spinning;                   /* counted in rt->nspinning */
    struct green__cache stack_cache; /* free stacks and control blocks */
    struct green__cache thread_cache;
    struct green__cache key_cache;   /* free key pages (keys.c) */
    struct green__thread *pinned_head, *pinned_tail; /* preempted: stay here */
    _Atomic uint32_t npinned;        /* their number; others read it */
    uint64_t pinned_held_since;      /* when fresh work first went before the
                                      * pinned queue's first thread; 0: it has
                                      * not (turn_of_pinned) */
    uint32_t pinned_holders;         /* pinned threads that hold foreign locks */
    bool pinned_hold_renewed;        /* the hold restarted once (loop.c) */
    /* A thread pinned here that holds a lock others wait for: a waiter
     * asks (handoff.c) that it run next; the owner takes it at its next
     * pick. */
    _Atomic(struct green__thread *) handoff;
    /* Holders of foreign locks that run here (foreign.c): its own list.
     * inbox: holders made runnable by other OS threads, under inbox_lock,
     * moved to the pinned queue by the owner at its next pick. */
    struct green__thread *holders;
    green__spin_t inbox_lock;
    struct green__thread *inbox_head, *inbox_tail;
    _Atomic uint32_t ninbox;
    int64_t slice_len;               /* reductions the running slice was given */
    uint64_t kept_since;             /* first preemption deferred for an idle
                                      * worker, ns; 0: none */

    /* Published by the worker's OS thread when it starts (release; 0
     * before: the monitor leaves it alone). */
    _Atomic pid_t tid;
    uint64_t id_next, id_end;        /* block of thread ids */
    int *errno_loc;                  /* this OS thread's errno: fixed */
    sigset_t sigmask;                /* its signal mask, once started */
    sigset_t sigmask_before;         /* its OS thread's mask before the run */
    _Atomic uint64_t spawned, exited;/* written by owner; read when quiescent */
    void *altstack;                  /* sigaltstack for overflow reports */
    size_t altstack_size;
    stack_t old_altstack;
    void *os_stack_lo;               /* g0's stack, for sanitizers */
    size_t os_stack_size;

    /* Run queue: see runq.c.  runnext: the owner's alone, but for a
     * rescue by the monitor (rn_busy / rn_rescue, runq.c). */
    _Atomic(struct green__thread *) runnext;
    _Atomic uint32_t rn_busy;        /* owner is touching runnext */
    _Atomic uint32_t rn_rescue;      /* the monitor wants runnext */
    struct green__runq q;

    /* Timers: heap under tlock; timer_next = earliest deadline or FOREVER. */
    green__spin_t tlock;
    struct green__timer *heap;
    size_t ntimers, heapcap;
    _Atomic uint64_t timer_next;

    /* Idle parking.  wakeword: futex; idle_next/idle: under rt->idle_lock.
     * in_netpoll: asleep in epoll_wait, not on wakeword (netpoll.c). */
    _Atomic uint32_t wakeword;
    _Atomic uint32_t in_netpoll;
    struct green__worker *idle_next;
    bool idle;
    _Atomic bool stw_stopped;        /* waiting out a dump (loop.c) */
    /* A dump wants this worker stopped (dump.c; read at every pick). */
    _Atomic uint32_t stw_asked;

    struct green__thread g0;         /* the scheduler loop's context */
} __attribute__((aligned(GREEN_CACHELINE)));

/* self.c, switch.c, ready.c, loop.c, worker.c */
extern __thread struct green__worker *green__tls_worker
    __attribute__((tls_model("initial-exec")));
/* AS-safe.  The worker this OS thread is, or NULL.  Inline is safe: with the
 * initial-exec model each use is one %fs-relative load, and any switch in
 * between is an opaque call after which the compiler must load again. */
static inline struct green__worker *green__worker_self(void)
{
    return green__tls_worker;
}
void green__worker_set(struct green__worker *w);
/* AS-safe.  Set while libgreen's own signal handler runs on this OS thread
 * (signals/handler.c), or libgreen walks a green thread's stack on it
 * (safepoints/budget.c): what runs then -- libunwind, which may call read()
 * and write() on a pipe of its own and lock a mutex, or the program's
 * handler for a signal that was not libgreen's -- belongs to no green
 * thread.  green_worker_index says so (the LD_PRELOAD shim then passes
 * calls straight through), and so does green__foreign_self (the lock calls
 * are libc's). */
extern __thread unsigned green__in_handler __attribute__((tls_model("initial-exec")));
/* Left by libgreen's signal handler while it runs (signals/handler.c): the
 * thread it interrupted, its own frame, and green__in_handler before it.
 * The program's handler, which it calls for a signal that was not
 * libgreen's, may leave by siglongjmp -- the classic alarm() timeout -- and
 * the count then stayed up forever: that worker was never preempted again,
 * its lock calls were libc's, green_worker_index said -1.  So wherever the
 * count is found up, green__handler_left asks where the stack is: back on
 * the interrupted thread's stack (above the handler's frame, if it ran
 * there) means the handler is gone -- and every one it was nested in --
 * and the count goes down by as many. */
struct green__handler_mark {
    const struct green__thread *t;   /* NULL: no handler of ours runs */
    uintptr_t frame;
    unsigned depth;                  /* handlers of ours running, nested */
};
extern __thread struct green__handler_mark green__handler_mark
    __attribute__((tls_model("initial-exec")));
/* AS-safe.  True (and the count put back) if the handler the mark names was
 * left without returning, judging from sp, a stack pointer of this OS
 * thread's; green__handler_left judges from its own frame. */
bool green__handler_left_at(uintptr_t sp);
bool green__handler_left(void);
/* AS-safe.  Does libgreen's handler, or a walk, run on this OS thread now? */
static inline bool green__in_handler_now(void)
{
    return GREEN_UNLIKELY(green__in_handler != 0) && !green__handler_left();
}
int green__workers_start(struct green__rt *rt);   /* workers 1..n-1 */
void green__worker_loop(struct green__worker *w); /* runs until rt->done */
void green__workers_join(struct green__rt *rt);
void green__wakep(struct green__rt *rt);
/* Make t runnable.  w: the caller's worker (its queues are used), or NULL
 * from a foreign thread (the global queue).  next: run t soon (LIFO slot). */
void green__ready(struct green__worker *w, struct green__thread *t, bool next);
/* green__ready for each thread of a list chained by t->next; returns how
 * many. */
unsigned green__ready_list(struct green__worker *w, struct green__thread *list, bool next);
/* Switch from the running thread to `to`; returns, on whatever worker
 * resumes the caller, that worker. */
struct green__worker *green__switch(struct green__worker *w, struct green__thread *to);
/* The running thread leaves the CPU (already queued, parked or dead). */
struct green__worker *green__sched_leave(struct green__worker *w);
/* The running thread was preempted asynchronously: let others run, and come
 * back on this same worker (its code may hold TLS addresses). */
void green__sched_preempted(struct green__worker *w);
/* Done by every context right after it is switched to. */
void green__switch_finish(struct green__worker *w);
/* A refused preemption is pending on the running thread, or its budget is
 * spent: take it now (a yield), unless inside green_nopreempt_begin/end.
 * Returns the worker the thread resumes on. */
struct green__worker *green__take_deferred(struct green__worker *w);
/* Refused preemptions taken at polls and returns, for green_stats. */
extern _Atomic uint64_t green__deferred_taken;
/* handoff.c: lock holders run ahead of their queue for a waiter. */
extern _Atomic uint64_t green__lock_handoffs;
/* A waiter, about to park on a lock h holds: if h is runnable and pinned
 * to a worker, ask that worker to run it next. */
void green__handoff_ask(struct green__thread *self, struct green__thread *h);
/* The owner of w, at a pick: the holder asked for, taken out of the
 * pinned queue, or NULL. */
struct green__thread *green__handoff_take(struct green__worker *w);
/* lockwarn.c: the monitor, when cfg.lock_warn_ms is set: warn of holders
 * parked while others wait; returns when to look again. */
uint64_t green__lock_warn_scan(struct green__rt *rt, uint64_t now);

/* Wake an idle worker v from its futex or from epoll_wait. */
void green__worker_wake(struct green__worker *v);
/* The next thread from w's own queues, or NULL: a scheduling decision
 * (switch.c). */
struct green__thread *green__pick(struct green__worker *w);
/* Fire w's timers that are due. */
void green__check_timers(struct green__worker *w);
/* Wake every worker of the run (loop.c): it is over. */
void green__wake_all(struct green__rt *rt);
/* The owner's counters that others read: plain increments, published. */
static inline void green__add_relaxed(_Atomic uint32_t *c, uint32_t d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}
/* t has left w's pinned queue, by its turn or a handoff.  If it was the
 * first (head), the next thread there starts a new hold (switch.c,
 * turn_of_pinned); a handoff from further back leaves the first one's
 * hold as it is, or a stream of handoffs would hold it back for ever. */
static inline void green__pinned_left(struct green__worker *w, struct green__thread *t, bool head)
{
    green__add_relaxed(&w->npinned, (uint32_t)-1);
    w->pinned_holders -= t->pin_holder;
    if (head) {
        w->pinned_held_since = 0;
        w->pinned_hold_renewed = false;
    }
    __atomic_store_n(&t->pinned, false, __ATOMIC_RELAXED);
}
/* A scheduling decision: the monitor dates slices by it. */
static inline void green__new_slice(struct green__worker *w) { green__add_relaxed(&w->tick, 1); }

/* timer.c */
int green__timer_add(struct green__worker *w, struct green__thread *t,
                     uint64_t deadline);
void green__timer_cancel_slow(struct green__thread *t);
static inline void green__timer_cancel(struct green__thread *t)
{
    if (t->timer_w)
        green__timer_cancel_slow(t);
}
/* Fire w's expired timers; returns how many threads became runnable. */
unsigned green__timers_run(struct green__worker *w, struct green__worker *heap_of,
                           uint64_t now);
/* Earliest deadline across all workers (FOREVER: none). */
uint64_t green__timers_next(struct green__rt *rt);
bool green__timers_pending(struct green__rt *rt);
void green__timers_free(struct green__worker *w);

#endif /* GREEN_WORKER_H */
