/*
 * Step 3 of preemption by signal (handler.c has the whole design): what the
 * trampolines (trampoline_x86_64.S) call with every register of the thread
 * saved, and the personality of the deferred trampoline's frame.
 *
 * green__preempt_switch is a yield that keeps the thread on this worker
 * (compilers keep TLS addresses such as &errno in registers across any
 * instruction) until its next cooperative switch; before it, a thread that
 * signal preempted has its worker's slice timer armed (slice_timer.c).
 *
 * The hook fires: hijack_fired checks that it came through the hooked
 * slot -- a copy of the trampoline's address elsewhere (setjmp saves
 * its return address; such functions are never hooked, see
 * green__sp_may_hook) would return to someone else's address -- puts the
 * real return address in the trampoline's frame and says whether to switch.
 *
 * C++ exceptions.  A C++ exception thrown below the hooked frame
 * (libstdc++'s own throws, a callback's through qsort) meets the trampoline
 * as a frame: its personality, green__hijack_personality, lands the
 * unwinder there as in a cleanup, and the exception goes on from
 * green__hijack_resume (trampoline_x86_64.S says why).  The unwinder is the
 * one the exception came from: libgcc's, the system's (libgreen links
 * libgcc_s before libunwind, whose _Unwind_* names would otherwise answer
 * for a C program's forced unwinds).
 *
 * Nothing here names a trampoline but green__hijack_resume (resume_x86_64.S),
 * so that the trampolines call down into this file and no call comes back.
 */
#include "signals.h"
#include "safepoints.h"

/* The Itanium ABI's unwinding interface, as much as the personality needs
 * (libgcc's and libunwind's unwind.h differ; the values are the ABI's). */
enum {
    URC_INSTALL_CONTEXT = 7,
    URC_CONTINUE_UNWIND = 8,
    UA_CLEANUP_PHASE = 2,
};

/* The personality of the deferred trampoline's frame, which an unwinder
 * meets while a hook is in place: nothing to catch in the search phase; in
 * the cleanup phase (a handler further up, or a forced unwind), land in the
 * trampoline -- where the unwinder resumes is the frame's "return address",
 * the trampoline itself -- with the exception kept for hijack_fired.
 * From here to the landing no signal touches the hook (the handler refuses
 * while its hook's exc is set). */
int green__hijack_personality(int version, int actions, uint64_t exception_class, void *exc,
                              void *context)
{
    (void)version, (void)exception_class, (void)context;
    if (!(actions & UA_CLEANUP_PHASE))
        return URC_CONTINUE_UNWIND;
    struct green__worker *w = green__worker_self();
    green__assert(w && w->cur != &w->g0);
    green__patch_of(w->cur)->exc = exc;
    return URC_INSTALL_CONTEXT;
}

/* The trampoline's frame: the return address slot, 136 bytes below the
 * hooked frame's CFA (so 16 words below the hooked slot), and the saved rdi
 * (pushed after the return address, flags, rax, rbx, rcx, rdx and rsi). */
#define HOOKED_SLOT(ret_slot) ((ret_slot) + 16)
#define SAVED_RDI(ret_slot) ((ret_slot) - 7)

/* The trampoline fired: put the real return address in *ret_slot, its own
 * frame's, and say whether to switch -- not if a switch took the preemption
 * meanwhile (a poll without a switch clears it too), nor inside
 * green_nopreempt_begin/end, whose end polls.  Or an exception landed (see
 * the personality): leave through green__hijack_resume, the exception in
 * rdi -- after the switch, if one is due: the frame is gone as surely as by
 * a return, and this is a landing pad like any other (a thread throwing in
 * a loop would otherwise never be preempted: every hook is unwound). */
static bool hijack_fired(struct green__thread *t, uint64_t *ret_slot)
{
    if (green__patch_of(t)->slot != HOOKED_SLOT(ret_slot))
        green__panic("green thread %llu returned into libgreen's preemption trampoline from "
                     "%p, not from the return it hooked (%p): a copy of a hooked return "
                     "address was used (a function that saves its own return address?)",
                     (unsigned long long)t->id, (void *)HOOKED_SLOT(ret_slot),
                     (void *)green__patch_of(t)->slot);
    *ret_slot = green__stack_top(t)->ret;
    green__patch_of(t)->slot = NULL;
    if (green__patch_of(t)->exc) {
        *ret_slot = (uint64_t)(uintptr_t)green__hijack_resume;
        *SAVED_RDI(ret_slot) = (uint64_t)(uintptr_t)green__patch_of(t)->exc;
        green__patch_of(t)->exc = NULL;
    }
    if (!__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED) || t->nopreempt) {
        green__count(&green__sig_stats.hijacks_undone);
        return false;
    }
    t->preempt_pending = false;
    atomic_fetch_add_explicit(&green__deferred_taken, 1, memory_order_relaxed);
    return true;
}

/* Called by the trampoline with every register of the thread saved. */
void green__preempt_switch(uint64_t *ret_slot)
{
    struct green__worker *w = green__worker_self();
    struct green__thread *t = w->cur;
    bool deferred = *ret_slot == 0;
    GREEN_TEST_TRACE_STAMP(w, GREEN_STAMP_SAVED);
    if (deferred) {
        /* A hooked frame returned (hijack.c): back to its caller after
         * this, switching first if the preemption is still wanted. */
        if (!hijack_fired(t, ret_slot))
            return;
    } else {
        green__count(&green__sig_stats.preemptions);
    }
    GREEN_TEST_TRACE_PREEMPT(deferred);
    green__trace(w, GREEN_TR_PREEMPT, t->id, deferred ? GREEN_TR_ON_WAY_OUT : GREEN_TR_BY_SIGNAL,
                 0);
    /* A budget's hook ends here too: no signal, so no slice timer. */
    if (w->rt->cfg.preempt & GREEN_PREEMPT_SIGNAL)
        green__slice_timer_arm(w);
    GREEN_TEST_TRACE_STAMP(w, GREEN_STAMP_ARMED);
    green__sched_preempted(w);
    GREEN_TEST_TRACE_STAMP(green__worker_self(), GREEN_STAMP_RESUMED);
}
