/* Private to libgreen. */
/*
 * Preemption by signal: the files of signals/ and what each offers the
 * others.  handler.c has the design; the trampolines are
 * trampoline_x86_64.S and resume_x86_64.S.
 *
 * Calls between the files run one way, from the run's entry down to what
 * the trampolines call (tests/layers.sh checks it):
 *   mode.c -> install.c, monitor.c, exec.c -> handler.c -> hijack.c
 *     -> trampoline_x86_64.S -> trampoline.c -> resume_x86_64.S,
 * with slice_timer.c, frame.c, stats.c and nopreempt.c below whichever
 * needs them.  The trampoline calls back into C, so what it calls
 * (trampoline.c) lies below every file that names the trampoline.
 */
#ifndef GREEN_SIGNALS_H
#define GREEN_SIGNALS_H

#include "sched.h"

#include <signal.h>
#include <time.h>

/* ---- The layer's own state, per worker ---------------------------------- */

/* The monitor's view of one worker, for green__sig_tick.  Monitor-owned. */
struct green__watch {
    bool busy;                       /* running a green thread at last look */
    bool asked;                      /* signalled during this slice */
    uint32_t tick;                   /* w->tick of the current slice */
    uint64_t since, cpu_since;       /* its start (or first sight): wall and
                                      * the worker's CPU time, ns */
    uint64_t asked_at, asked_cpu;    /* the same, when we signalled */
    uint64_t retry_at, backoff;      /* after a request: when to ask again */
    uint64_t end;                    /* when the slice may be ended */
    uint64_t req_at;                 /* when the pending request was sent */
    uint64_t blocked_at;             /* first seen blocked there, or 0 */
    bool said_blocked;               /* reported: the signal is blocked there */
};

/* What signals/ keeps of one worker of a run that preempts by signal: an
 * array of them, one per worker (index w->index), is the run's
 * rt->preempt, which sched/ does not read; mode.c's start hook makes it and
 * its stop hook frees it.  A run in another mode has none (NULL).  Each
 * worker's on lines of its own, and the monitor's view on a line apart
 * from what the worker writes. */
struct green__sig_worker {
    /* The request: set by the monitor (CAS 0 -> 1), consumed by this
     * worker's handler; 2 while an exec closes it (exec.c). */
    _Atomic uint32_t preempt_req;
    /* 1 around each send of the monitor's: set before it sets the request
     * (or, to send it again, looks at it once more), cleared once the
     * signal is queued (request_preemption, resend).  An exec that found a
     * request set waits for it to drop, then finds the signal pending. */
    _Atomic uint32_t sending;
    /* The slice timer (slice_timer.c): a POSIX timer that signals this
     * worker alone, armed at each preemption for the next slice.
     * slice_timed: armed and the monitor leaves this worker to it; set by
     * the owner, cleared by the owner's signal handler -- or by the
     * monitor, when an expiry was lost (green__slice_timer_watching). */
    _Atomic uint32_t slice_timed;
    uint32_t slice_tick;             /* w->tick of the slice it was armed for */
    bool slice_timer_ok;             /* created */
    bool slice_rearmed;              /* armed by its own expiry, not a preemption */
    /* Set while green__slice_timer_arm runs: an expiry of the timer armed
     * before, landing then, leaves the timer to it (slice_tick and
     * slice_rearmed are the owner's and its handler's, on one thread). */
    volatile sig_atomic_t slice_arming;
    timer_t slice_timer;
    uint64_t slice_armed_ns;         /* when it was armed (the monitor reads it) */
    _Alignas(GREEN_CACHELINE) struct green__watch watch;
};

/* w's state; NULL if w's run does not preempt by signal. */
static inline struct green__sig_worker *green__sig_worker(const struct green__worker *w)
{
    struct green__sig_worker *all = w->rt->preempt;
    return all ? &all[w->index] : NULL;
}

/* ---- mode.c's hooks, from the files below ------------------------------- */

/* install.c: install the preemption signal's handler for a run
 * (reference-counted per signal number; the previous disposition is kept
 * and chained). */
int green__sig_install(struct green__rt *rt);
void green__sig_uninstall(struct green__rt *rt);

/* monitor.c: the monitor's look, in signal mode: ask each worker whose
 * thread has run for a whole quantum to switch (sysmon.c calls it through
 * rt->hooks->tick); returns when to look next. */
uint64_t green__sig_tick(struct green__rt *rt, uint64_t now);
/* exec.c's: silence w's requests and slice timer (true: a request may be
 * in flight), and undo that. */
bool green__sig_quiet(struct green__worker *w);
void green__sig_unquiet(struct green__worker *w);

/* ---- handler.c ---------------------------------------------------------- */

/* The handler, and what tells libgreen's signals from the program's: the
 * process's pid and uid (set by install.c, and in a forked child), the
 * value a request carries (this variable's address, which no other sender
 * uses), and the disposition install.c replaced, to which the program's
 * signals are passed on. */
void green__sig_handler(int sig, siginfo_t *si, void *uctx);
extern pid_t green__sig_pid;
extern uid_t green__sig_uid;
extern const char green__sig_request_mark;
extern struct sigaction green__sig_chained[NSIG];
/* Was si sent by libgreen to w -- a request or its slice timer? */
bool green__sig_ours(const struct green__worker *w, const siginfo_t *si);

/* ---- hijack.c: the way out of a refused preemption ---------------------- */

/* After a walk of t's stack (walk: enum green__sp_walk; hook_live: the walk
 * met t's hook; slot: a HOOK's), keep, place or forget t's hook -- for the
 * handler, and for the budget through rt->hooks.  On t's worker, AS-safe. */
void green__hijack_after_walk(struct green__thread *t, int walk, bool hook_live, uint64_t *slot);

/* ---- The trampolines (trampoline_x86_64.S, resume_x86_64.S) ------------- */

/* Their entries, and the call they make with every register saved
 * (trampoline.c): ret_slot holds the interrupted PC, or 0 when a hooked
 * frame returned into green__deferred_trampoline; the personality of the
 * deferred trampoline's frame, for a C++ exception that meets it. */
void green__preempt_trampoline(void);
void green__deferred_trampoline(void);
void green__hijack_resume(void);
void green__preempt_switch(uint64_t *ret_slot);
int green__hijack_personality(int version, int actions, uint64_t exception_class, void *exc,
                              void *context);

/* ---- slice_timer.c ------------------------------------------------------ */

/* w's one-shot slice timer: arm it for the slice the next pick starts (on
 * w, in the switch of a preemption); is the slice it fired for still
 * running (AS-safe; if not, it re-arms for the slice now running once,
 * when a timer of w's is due within a quantum, else sends w back to the
 * monitor)?  Leave it to the
 * monitor (AS-safe); disarm it (exec); delete it, on w's own thread as w
 * stops (rt->hooks->worker_exit). */
void green__slice_timer_arm(struct green__worker *w);
bool green__slice_timer_fired(struct green__worker *w);
void green__slice_timer_release(struct green__worker *w);
/* The monitor's look: does w's slice timer still watch it?  (An armed
 * timer not heard from is taken as lost.) */
bool green__slice_timer_watching(struct green__worker *w, uint64_t now);
void green__slice_timer_disarm(struct green__worker *w);
void green__slice_timer_delete(struct green__worker *w);

static inline uint64_t green__min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t green__max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The run's quantum, ns. */
static inline uint64_t green__quantum_ns(const struct green__rt *rt)
{
    return (uint64_t)rt->cfg.quantum_us * 1000u;
}

/* When a slice that began at `start` may be ended, for the monitor and the
 * slice timer alike: after a quantum, or after a quarter quantum once a
 * timer of its worker (earliest deadline `timer`) is due -- the thread it
 * wakes should not wait out the quantum of a thread that never blocks. */
static inline uint64_t green__slice_end(uint64_t start, uint64_t quantum, uint64_t timer)
{
    uint64_t end = start + quantum;
    if (timer != GREEN_FOREVER)
        end = green__min_u64(end, green__max_u64(timer, start + quantum / 4));
    return end;
}

/* ---- frame.c: the trampoline's frame ------------------------------------ */

/* XSAVE area size for this CPU's enabled state (CPUID leaf 0xD), set by
 * green__xsave_setup (0 or ENOTSUP) before a run in signal or budget mode
 * starts; read by the trampolines.  Is there room below sp for the
 * trampoline's frame and the switch (AS-safe)? */
extern uint64_t green__xsave_size;
int green__xsave_setup(void);
bool green__preempt_room(const struct green__thread *t, uintptr_t sp);

/* ---- stats.c: the counters behind green_stats --------------------------- */

struct green__sig_stats {
    _Atomic uint64_t signals_sent, preemptions, refused_runtime, refused_nopreempt,
        refused_unsafe_pc, refused_headroom, foreign, refused_unsafe_frame, refused_unwind,
        signal_lost, hijacks, hijacks_undone;
};
extern struct green__sig_stats green__sig_stats;

/* AS-safe */
static inline void green__count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

#ifdef GREEN_TEST_TRACE
/* Test builds (libgreen-trace, test_trace.c): the frames of each preemption,
 * from green__preempt_switch before the switch; and the time stamps of its
 * stages, for the cost breakdown in bench/safepoint_bench. */
enum green__stamp {
    GREEN_STAMP_ENTRY,               /* the handler has recognised its signal */
    GREEN_STAMP_DECIDED,             /* the PC looked up, the cheap checks done */
    GREEN_STAMP_WALKED,              /* the callers walked: the handler returns */
    GREEN_STAMP_SAVED,               /* the trampoline saved the state */
    GREEN_STAMP_ARMED,               /* the slice timer is set */
    GREEN_STAMP_RESUMED,             /* the next thread runs */
};
void green__test_trace_preempt(bool deferred);
void green__test_trace_stamp(struct green__worker *w, enum green__stamp s); /* AS-safe */
void green__test_trace_deadline(struct green__worker *w, uint64_t ns);
#define GREEN_TEST_TRACE_STAMP(w, s) green__test_trace_stamp((w), (s))
#define GREEN_TEST_TRACE_DEADLINE(w, ns) green__test_trace_deadline((w), (ns))
#define GREEN_TEST_TRACE_PREEMPT(deferred) green__test_trace_preempt(deferred)
#else
#define GREEN_TEST_TRACE_STAMP(w, s) ((void)0)
#define GREEN_TEST_TRACE_DEADLINE(w, ns) ((void)0)
#define GREEN_TEST_TRACE_PREEMPT(deferred) ((void)0)
#endif

#endif /* GREEN_SIGNALS_H */
