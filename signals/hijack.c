/*
 * Taking a refused preemption on the way out: the return hijack.
 *
 * A preemption is refused when the thread is in code it may not be
 * switched out of -- a library, GREEN_NOPREEMPT, libgreen -- or has such a
 * frame among its callers.  The walk (safepoints/walk.c) then names the
 * outermost such frame, whose caller is the program's own code, and the
 * slot on the stack that holds its return address.  Here that return
 * address is pointed at green__deferred_trampoline (trampoline_x86_64.S):
 * the instant the frame returns, the thread is in preemptible code with
 * every register as its caller expects, and the trampoline saves them all,
 * puts the real return address back, and switches if the preemption is
 * still pending.  A loop that spends its time in libc is thus preempted at
 * its next return from libc: the latency is one library call, not the
 * monitor's backoff.  CoreCLR stops threads for its GC the same way.
 *
 * States of t->patch (sched.h), all on the thread's own worker:
 *   none      slot == NULL.
 *   in place  *slot == wrote (the trampoline), saved = the real return
 *             address, also in the stack's top record for unwinders.
 *   fired     the frame returned into the trampoline: green__preempt_switch
 *             writes saved back where the trampoline's frame keeps its
 *             return address and sets slot = NULL.
 *   undone    a switch came first (green__switch: the switch was the
 *             preemption), or a new signal re-walks (green__hijack_undo),
 *             and the word is put back.
 *   abandoned the frame was left without returning -- longjmp, a C++
 *             exception caught above it -- so the slot is dead stack below
 *             the stack pointer; the next undo finds it so (or holding
 *             something else) and only forgets it.
 * At most one patch is in place per thread, and only on the running thread:
 * every switch undoes it.
 *
 * Unwinders meet the trampoline's address as the frame's caller while the
 * patch is in place: its unwind information leads them on to the real
 * caller (trampoline_x86_64.S), so gdb, glibc's backtrace and libunwind
 * see the whole stack.  A C++ exception thrown below the hooked frame
 * (libstdc++'s own throws, a callback's through qsort) lands in the
 * trampoline as a cleanup -- green__hijack_personality -- and goes on from
 * green__hijack_resume: the patch is then gone with its frame.  The unwinder
 * is the one the exception came from: libgcc's, the system's (libgreen
 * links libgcc_s before libunwind, whose _Unwind_* names would otherwise
 * answer for a C program's forced unwinds).
 */
#include "signals.h"

_Atomic uint64_t green__hijacks;

/* AS-safe.  Point the return address in *slot, on t's stack, at the
 * deferred trampoline.  again: the same slot was patched until a moment ago
 * (a new signal re-walked), so this is not a new hook for the stats.
 * Requires: no patch in place on t. */
void green__hijack(struct green__thread *t, uint64_t *slot, bool again)
{
    uint64_t ret = *slot;
    green__stack_top(t)->ret = ret;
    t->patch = (struct green__patch){ slot, ret, (uint64_t)(uintptr_t)green__deferred_trampoline, 0,
                                      NULL };
    *slot = t->patch.wrote;
    if (!again)
        atomic_fetch_add_explicit(&green__hijacks, 1, memory_order_relaxed);
}

/* AS-safe.  Take t's patch back before its stack is walked again; sp is
 * t's stack pointer now (below it the patched frame is gone; at it, a
 * frameless function's return address still lives).  Returns where the
 * patch was in place, or NULL if there was none (an abandoned one is
 * forgotten, and counted as undone). */
uint64_t *green__hijack_undo(struct green__thread *t, uintptr_t sp)
{
    uint64_t *slot = t->patch.slot;
    if (!slot)
        return NULL;
    if ((uintptr_t)slot < sp || *slot != t->patch.wrote) {
        t->patch.slot = NULL;        /* abandoned: the word is not ours */
        atomic_fetch_add_explicit(&green__patches_undone, 1, memory_order_relaxed);
        return NULL;
    }
    green__patch_undo(t);
    return slot;
}

/* The Itanium ABI's unwinding interface, as much as the personality needs
 * (libgcc's and libunwind's unwind.h differ; the values are the ABI's). */
enum {
    URC_INSTALL_CONTEXT = 7,
    URC_CONTINUE_UNWIND = 8,
    UA_CLEANUP_PHASE = 2,
};

/* The personality of the deferred trampoline's frame, which an unwinder
 * meets while a patch is in place: nothing to catch in the search phase;
 * in the cleanup phase (a handler further up, or a forced unwind), land in
 * the trampoline -- where the unwinder resumes is the frame's "return
 * address", the trampoline itself -- with the exception kept for
 * green__hijack_fired. */
int green__hijack_personality(int version, int actions, uint64_t exception_class, void *exc,
                              void *context)
{
    (void)version, (void)exception_class, (void)context;
    if (!(actions & UA_CLEANUP_PHASE))
        return URC_CONTINUE_UNWIND;
    struct green__worker *w = green__worker_self();
    green__assert(w && w->cur != &w->g0 && w->cur->patch.slot);
    w->cur->patch.exc = exc;
    return URC_INSTALL_CONTEXT;
}

/* The trampoline's saved rdi (trampoline_x86_64.S: pushed after the return
 * address, flags, rax, rbx, rcx, rdx and rsi). */
#define SAVED_RDI(ret_slot) ((ret_slot) - 7)

/* The trampoline fired: put the real return address in *ret_slot, its own
 * frame's, and say whether to switch -- not if a switch took the preemption
 * meanwhile (a poll without a switch clears it too), nor inside
 * green_nopreempt_begin/end, whose end polls.  Or an exception landed (see
 * the personality): leave through green__hijack_resume, the exception in
 * rdi -- after the switch, if one is due: the frame is gone as surely as by
 * a return, and this is a landing pad like any other (a thread throwing in
 * a loop would otherwise never be preempted: every hook is unwound). */
bool green__hijack_fired(struct green__thread *t, uint64_t *ret_slot)
{
    *ret_slot = t->patch.saved;
    t->patch.slot = NULL;
    if (t->patch.exc) {
        *ret_slot = (uint64_t)(uintptr_t)green__hijack_resume;
        *SAVED_RDI(ret_slot) = (uint64_t)(uintptr_t)t->patch.exc;
        t->patch.exc = NULL;
    }
    if (!__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED) || t->nopreempt)
        return false;
    t->preempt_pending = false;
    atomic_fetch_add_explicit(&green__deferred_taken, 1, memory_order_relaxed);
    return true;
}
