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
 * The hook fires, or an exception meets it: trampoline.c.
 */
#include "signals.h"
#include "safepoints.h"

_Static_assert(sizeof(struct green__patch) <= sizeof(struct green__preempt_slot) &&
                   _Alignof(struct green__patch) <= _Alignof(struct green__preempt_slot),
               "struct green__preempt_slot (sched/thread.h) too small for a hook");

/* AS-safe.  t's hook, whose frame is gone, goes without a trace: the word
 * in its slot is not ours any more. */
static void forget(struct green__thread *t)
{
    if (!green__patch_of(t)->slot)
        return;
    green__patch_of(t)->slot = NULL;
    green__count(&green__sig_stats.hijacks_undone);
}

/* AS-safe.  Point the return address in *slot, on t's stack, at the
 * deferred trampoline, if the trampoline's frame will fit below it. */
static void hook(struct green__thread *t, uint64_t *slot)
{
    uint64_t tramp = (uint64_t)(uintptr_t)green__deferred_trampoline;
    if (*slot == tramp) {
        /* Hooked a moment ago: a signal came between a budget's walk and
         * this (mode both).  The record already holds the real address. */
        green__patch_of(t)->slot = slot;
        return;
    }
    if (!green__preempt_room(t, (uintptr_t)(slot + 1)))
        return;                      /* the monitor retries instead */
    green__stack_top(t)->ret = *slot;
    *green__patch_of(t) = (struct green__patch){ slot, 0, NULL };
    *slot = tramp;
    green__count(&green__sig_stats.hijacks);
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
