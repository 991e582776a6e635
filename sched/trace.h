/* Private to libgreen. */
/*
 * The scheduling timeline (GREEN_TRACE=path; trace.c, trace_json.c): what
 * a worker records at each event, and the calls that start a run's trace
 * and write it out.
 *
 * Each worker of a traced run has two rings of fixed-size records (struct
 * green__trace_rec), mmap'd when the run starts: `ev`, written by the
 * worker's OS thread outside signal handlers, and `sig`, written by
 * libgreen's signal handler on that OS thread (refusals).  A ring has one
 * writer each -- the handler interrupts the thread's own writes but never
 * itself (the signal is blocked while it runs) -- so a record is a plain
 * store at head, head + 1: no atomics, no locks, no allocation, which the
 * event sites need (inside the switch, under wait-queue locks, in the
 * handler).  A full ring overwrites its oldest records; the writer counts
 * what was lost.  Records are read only after the workers have stopped.
 *
 * Off: w->trace is NULL (rt->trace too), and each event site is one load
 * and one predictable branch; the recording itself is out of line (cold,
 * trace.c) where it sits on the switch, so that an untraced switch keeps
 * no register for it (bench/instructions.sh: 2 instructions a switch).
 */
#ifndef GREEN_TRACE_H
#define GREEN_TRACE_H

#include "rt.h"

#include <x86intrin.h>

/* tk's top byte. */
enum green__trace_kind {
    GREEN_TR_SWITCH = 1,    /* tid: the thread switched to (0: the scheduler
                             * loop); a: the one switched from */
    GREEN_TR_SPAWN,         /* tid: the new thread; a: its spawner (0: green_run) */
    GREEN_TR_EXIT,          /* tid: the thread that finished */
    GREEN_TR_PARK,          /* tid: the thread; a: the call (const char *);
                             * b: the object */
    GREEN_TR_WAKE,          /* tid: the thread; a: its waker (a thread id or
                             * GREEN_TR_BY_*); b: the outcome (errno); the
                             * time is the waker's, never before the park's */
    GREEN_TR_PREEMPT,       /* tid; a: enum green__trace_preempt */
    GREEN_TR_REFUSE,        /* tid; a: why (const char *), in the sig ring */
    GREEN_TR_STEAL,         /* tid: the thread taken; a: the victim worker */
    GREEN_TR_NETPOLL,       /* a: threads made runnable by one poll */
    GREEN_TR_OFFLOAD,       /* tid; a: the function handed to the pool */
    GREEN_TR_NAME,          /* tid; a: 8 bytes of its name at offset b */
    GREEN_TR_HANDOFF,       /* tid: a lock holder run ahead of its queue for a
                             * waiter (handoff.c) */
};

/* Wakers that are no green thread. */
#define GREEN_TR_BY_OUTSIDE UINT64_MAX        /* another OS thread: the monitor's
                                               * poll, an offload thread, ... */
#define GREEN_TR_BY_TIMER (UINT64_MAX - 1)    /* a deadline or a sleep's end */
#define GREEN_TR_BY_NETPOLL (UINT64_MAX - 2)  /* an fd became ready */

enum green__trace_preempt {
    GREEN_TR_BY_SIGNAL = 1, /* the signal's trampoline */
    GREEN_TR_ON_WAY_OUT,    /* a refused one, at the hooked return */
    GREEN_TR_AT_POLL,       /* a refused one, at a call into libgreen */
    GREEN_TR_BUDGET,        /* the reduction budget ran out */
};

#define GREEN_TR_TSC_MASK ((1ull << 56) - 1)

struct green__trace_rec {
    uint64_t tk;            /* TSC << 8 >> 8 | kind << 56 */
    uint64_t tid;
    uint64_t a, b;
};

struct green__trace_ring {
    struct green__trace_rec *rec;     /* mask + 1 of them */
    uint64_t mask;
    uint64_t head;                    /* records ever written */
};

/* One worker's (w->trace).  Owner: the worker's OS thread; read by
 * trace_json.c once the workers have stopped.  Lives in one mmap'd region
 * with its rings, from the run's start to its end. */
struct green__trace_w {
    struct green__trace_ring ev;      /* the worker, outside handlers */
    struct green__trace_ring sig;     /* its signal handler */
    uint64_t waker;                   /* 0: wakes are by w->cur; or GREEN_TR_BY_* */
};

/* The run's (rt->trace). */
struct green__trace {
    char *path;                       /* GREEN_TRACE's value, copied */
    int fd;                           /* opened at the start, written at the end */
    uint64_t events;                  /* records per ring (a power of two) */
    uint64_t tsc0, ns0, tsc1, ns1;    /* the clock, at the start and the end */
    size_t map_size;                  /* of each worker's region */
};

/* AS-safe (on the ring's own writer). */
static inline void green__trace_put(struct green__trace_ring *r, uint64_t tsc, unsigned kind,
                                    uint64_t tid, uint64_t a, uint64_t b)
{
    struct green__trace_rec *p = &r->rec[r->head & r->mask];
    r->head++;
    p->tk = (tsc & GREEN_TR_TSC_MASK) | (uint64_t)kind << 56;
    p->tid = tid;
    p->a = a;
    p->b = b;
}

/* trace.c: green__trace's recording, out of line -- so that a run
 * without a trace pays the test and the branch, and no register for it. */
__attribute__((cold)) void green__trace_ev(struct green__worker *w, unsigned kind, uint64_t tid,
                                           uint64_t a, uint64_t b);

/* trace.c: w switches from w->prev to w->cur (set already); returns w. */
__attribute__((cold)) struct green__worker *green__trace_switch(struct green__worker *w);

/* An event of w's, now. */
static inline void green__trace(struct green__worker *w, unsigned kind, uint64_t tid,
                                uint64_t a, uint64_t b)
{
    if (GREEN_UNLIKELY(w->trace))
        green__trace_ev(w, kind, tid, a, b);
}

/* A waker makes t runnable: who, and when (the woken thread records it
 * when it runs again, green__trace_resumed).  w: the waker's worker, or
 * NULL. */
static inline void green__trace_woken(struct green__worker *w, struct green__thread *t)
{
    if (GREEN_LIKELY(!t->rt->trace))
        return;
    /* A spawn is no wake, and a thread that has not run has no cold part
     * to write yet (thread.h). */
    if (atomic_load_explicit(&t->on_cpu, memory_order_relaxed) == GREEN_ON_CPU_LAUNCH)
        return;
    struct green__thread_cold *c = green__cold(t);
    c->trace_woken = __rdtsc();
    if (!w || w->rt != t->rt || !w->trace)
        c->trace_waker = GREEN_TR_BY_OUTSIDE;
    else
        c->trace_waker = w->trace->waker ? w->trace->waker : w->cur->id;
}

/* The running thread of w is back from a park that began at parked_tsc. */
static inline void green__trace_resumed(struct green__worker *w, struct green__thread *self)
{
    if (GREEN_LIKELY(!w->trace))
        return;
    struct green__thread_cold *c = green__cold(self);
    uint64_t at = c->trace_woken > self->parked_tsc ? c->trace_woken : self->parked_tsc;
    green__trace_put(&w->trace->ev, at, GREEN_TR_WAKE, self->id,
                     c->trace_woken ? c->trace_waker : GREEN_TR_BY_OUTSIDE,
                     (uint64_t)c->wake_err);
    c->trace_woken = 0;
    self->trace_parking = false;     /* woken before it got away: no switch */
}

/* Wakes made by w from now on are by `by` (GREEN_TR_BY_*; 0: by w->cur).
 * Returns the previous setting, to put back. */
static inline uint64_t green__trace_wakes_by(struct green__worker *w, uint64_t by)
{
    if (GREEN_LIKELY(!w || !w->trace))
        return 0;
    uint64_t old = w->trace->waker;
    w->trace->waker = by;
    return old;
}

/* AS-safe.  libgreen's handler refused to preempt t on w. */
static inline void green__trace_refused(struct green__worker *w, struct green__thread *t,
                                        const char *why)
{
    if (GREEN_UNLIKELY(w->trace))
        green__trace_put(&w->trace->sig, __rdtsc(), GREEN_TR_REFUSE, t->id,
                         (uint64_t)(uintptr_t)why, 0);
}

/* trace.c.  GREEN_TRACE set: open its file and map every worker's rings
 * (0; or an errno, with one line on stderr naming the path).  Unset: 0,
 * and the run is not traced. */
int green__trace_start(struct green__rt *rt);
/* After the workers have stopped: write the timeline, free it all. */
void green__trace_finish(struct green__rt *rt);
/* The running thread named itself. */
void green__trace_name(struct green__worker *w, struct green__thread *t);

/* trace_json.c: the records as Chrome trace-event JSON, to tr->fd (0, or
 * an errno). */
int green__trace_json(struct green__rt *rt, struct green__trace *tr);

#endif /* GREEN_TRACE_H */
