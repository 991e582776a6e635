/* Private to libgreen. */
/*
 * Preemption by signal: install, request, handle.  See handler.c for the
 * design; the trampoline is trampoline_x86_64.S.
 */
#ifndef GREEN_SIGNALS_H
#define GREEN_SIGNALS_H

#include "sched.h"

/* Install the preemption signal's handler for a run (reference-counted per
 * signal number; the previous disposition is kept and chained). */
int green__sig_install(struct green__rt *rt);
void green__sig_uninstall(struct green__rt *rt);

/* The monitor's look, in signal mode: ask each worker whose thread has run
 * for a whole quantum to switch (sysmon.c calls it through rt->hooks->tick);
 * returns when to look next. */
uint64_t green__sig_tick(struct green__rt *rt, uint64_t now);

/* On a worker's own thread as it stops: delete its slice timer. */
void green__sig_worker_exit(struct green__worker *w);

/* The trampolines' entries, and the call they make with every register
 * saved: ret_slot holds the interrupted PC, or 0 when a GREEN_NOPREEMPT
 * function returned into green__deferred_trampoline. */
void green__preempt_trampoline(void);
void green__deferred_trampoline(void);
void green__preempt_switch(uint64_t *ret_slot);

#ifdef GREEN_TRACE
/* Test builds (libgreen-trace, trace.c): the frames of each preemption,
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
void green__trace_preempt(bool deferred);
void green__trace_stamp(struct green__worker *w, enum green__stamp s); /* AS-safe */
void green__trace_deadline(struct green__worker *w, uint64_t ns);
#define GREEN_TRACE_STAMP(w, s) green__trace_stamp((w), (s))
#define GREEN_TRACE_DEADLINE(w, ns) green__trace_deadline((w), (ns))
#define GREEN_TRACE_PREEMPT(deferred) green__trace_preempt(deferred)
#else
#define GREEN_TRACE_STAMP(w, s) ((void)0)
#define GREEN_TRACE_DEADLINE(w, ns) ((void)0)
#define GREEN_TRACE_PREEMPT(deferred) ((void)0)
#endif

/* XSAVE area size for this CPU's enabled state (CPUID leaf 0xD), set by
 * green__sig_install; read by the trampoline. */
extern uint64_t green__xsave_size;

#endif /* GREEN_SIGNALS_H */
