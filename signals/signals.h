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
/* exec.c's: silence w's requests and slice timer (true: a request may be
 * in flight), undo that, and tell libgreen's signals from others. */
bool green__sig_quiet(struct green__worker *w);
void green__sig_unquiet(struct green__worker *w);
bool green__sig_ours(const struct green__worker *w, const siginfo_t *si);

/* hijack.c: the way out of a refused preemption.  After a walk of t's
 * stack (walk: enum green__sp_walk; hook_live: the walk met t's hook; slot:
 * a HOOK's), keep, place or forget t's hook -- for the handler, and for the
 * budget through rt->hooks; the trampoline's side when it fires (true:
 * switch); is there room below sp for the trampoline's frame and the
 * switch?  All on t's worker, AS-safe but for green__hijack_fired. */
void green__hijack_after_walk(struct green__thread *t, int walk, bool hook_live, uint64_t *slot);
bool green__hijack_fired(struct green__thread *t, uint64_t *ret_slot);
bool green__preempt_room(const struct green__thread *t, uintptr_t sp);
extern _Atomic uint64_t green__hijacks, green__hijacks_undone;

/* The trampolines' entries, and the call they make with every register
 * saved: ret_slot holds the interrupted PC, or 0 when a hooked frame
 * returned into green__deferred_trampoline. */
void green__preempt_trampoline(void);
void green__deferred_trampoline(void);
void green__hijack_resume(void);
int green__hijack_personality(int version, int actions, uint64_t exception_class, void *exc,
                              void *context);
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
 * green__xsave_setup (0 or ENOTSUP) before a run in signal or budget mode
 * starts; read by the trampolines. */
extern uint64_t green__xsave_size;
int green__xsave_setup(void);

#endif /* GREEN_SIGNALS_H */
