/*
 * Taking a refused preemption on the way out: the return hijack.
 *
 * A preemption is refused when the thread is in code it may not be
 * switched out of -- a library, GREEN_NOPREEMPT, libgreen -- or has such a
 * frame among its callers.  The walk (safepoints/walk.c) then names the
 * outermost such frame, whose caller is the program's own code, and the
 * slot on the stack that holds its return address.  Here that return
 * address is pointed at green__deferred_trampoline (trampoline_x86_64.S),
 * and the real one is kept in the stack's top record (sched.h): the instant
 * the frame returns, the thread is in preemptible code with every register
 * as its caller expects, and the trampoline saves them all, puts the real
 * return address back, and switches if the preemption is still pending.  A
 * loop that spends its time in libc is thus preempted at its next return
 * from libc: the latency is one library call, not the monitor's backoff.
 * CoreCLR stops threads for its GC the same way.
 *
 * What a hook's slot holds is never read to learn whether the hook is still
 * in place: after a longjmp past the frame, or an exception caught above
 * it, the slot is dead stack that a new frame may cover without writing
 * that word.  Only a walk can tell: it meets the trampoline's address as a
 * caller while the hook is in place (its unwind information leads on to the
 * real caller).  So, after every walk of the thread (green__hijack_after_walk):
 *   HOOKED    the walk met the hook, and it is the outermost frame that may
 *             not be interrupted: keep it;
 *   HOOK      a frame to hook, and no hook met: forget any earlier one (its
 *             frame is gone) and hook this one;
 *   SAFE, or STUCK with no hook met: forget any earlier one;
 *   FAILED, or a hook met below the outermost frame: keep what there is.
 * A thread has at most one hook, then, and no new hook is placed while the
 * old one can still fire.  A switch (a blocking call inside the hooked
 * frame) does not take the hook back: that would need a walk; when the frame
 * returns, the trampoline finds nothing pending and only returns.
 *
 * The hook fires: green__hijack_fired checks that it came through the
 * hooked slot -- a copy of the trampoline's address elsewhere (setjmp saves
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
 */
#include "signals.h"
#include "safepoints.h"

_Atomic uint64_t green__hijacks, green__hijacks_undone;

#define GREEN_HEADROOM 8192u           /* stack for the switch's C frames */

/* AS-safe */
bool green__preempt_room(const struct green__thread *t, uintptr_t sp)
{
    return sp >= (uintptr_t)t->stack_lo + 136 + 64 + green__xsave_size + GREEN_HEADROOM &&
           sp <= (uintptr_t)t->stack_hi;
}

/* AS-safe.  t's hook, whose frame is gone, goes without a trace: the word
 * in its slot is not ours any more. */
static void forget(struct green__thread *t)
{
    if (!t->patch.slot)
        return;
    t->patch.slot = NULL;
    atomic_fetch_add_explicit(&green__hijacks_undone, 1, memory_order_relaxed);
}

/* AS-safe.  Point the return address in *slot, on t's stack, at the
 * deferred trampoline, if the trampoline's frame will fit below it. */
static void hook(struct green__thread *t, uint64_t *slot)
{
    uint64_t tramp = (uint64_t)(uintptr_t)green__deferred_trampoline;
    if (*slot == tramp) {
        /* Hooked a moment ago: a signal came between a budget's walk and
         * this (mode both).  The record already holds the real address. */
        t->patch.slot = slot;
        return;
    }
    if (!green__preempt_room(t, (uintptr_t)(slot + 1)))
        return;                      /* the monitor retries instead */
    green__stack_top(t)->ret = *slot;
    t->patch = (struct green__patch){ slot, 0, NULL };
    *slot = tramp;
    atomic_fetch_add_explicit(&green__hijacks, 1, memory_order_relaxed);
}

/* AS-safe */
void green__hijack_after_walk(struct green__thread *t, int walk, bool hook_live, uint64_t *slot)
{
    switch (walk) {
    case GREEN_WALK_HOOK:
        forget(t);
        hook(t, slot);
        break;
    case GREEN_WALK_SAFE:
    case GREEN_WALK_STUCK:
        if (!hook_live)
            forget(t);
        break;
    default:                         /* HOOKED, FAILED: keep */
        break;
    }
}

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
 * the trampoline itself -- with the exception kept for green__hijack_fired.
 * From here to the landing no signal touches the hook (decide() refuses
 * while patch.exc is set). */
int green__hijack_personality(int version, int actions, uint64_t exception_class, void *exc,
                              void *context)
{
    (void)version, (void)exception_class, (void)context;
    if (!(actions & UA_CLEANUP_PHASE))
        return URC_CONTINUE_UNWIND;
    struct green__worker *w = green__worker_self();
    green__assert(w && w->cur != &w->g0);
    w->cur->patch.exc = exc;
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
bool green__hijack_fired(struct green__thread *t, uint64_t *ret_slot)
{
    if (t->patch.slot != HOOKED_SLOT(ret_slot))
        green__panic("green thread %llu returned into libgreen's preemption trampoline from "
                     "%p, not from the return it hooked (%p): a copy of a hooked return "
                     "address was used (a function that saves its own return address?)",
                     (unsigned long long)t->id, (void *)HOOKED_SLOT(ret_slot),
                     (void *)t->patch.slot);
    *ret_slot = green__stack_top(t)->ret;
    t->patch.slot = NULL;
    if (t->patch.exc) {
        *ret_slot = (uint64_t)(uintptr_t)green__hijack_resume;
        *SAVED_RDI(ret_slot) = (uint64_t)(uintptr_t)t->patch.exc;
        t->patch.exc = NULL;
    }
    if (!__atomic_load_n(&t->preempt_pending, __ATOMIC_RELAXED) || t->nopreempt) {
        atomic_fetch_add_explicit(&green__hijacks_undone, 1, memory_order_relaxed);
        return false;
    }
    t->preempt_pending = false;
    atomic_fetch_add_explicit(&green__deferred_taken, 1, memory_order_relaxed);
    return true;
}
