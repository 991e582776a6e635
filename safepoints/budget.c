/*
 * The reduction budget: preemption without signals, as BEAM does it.
 *
 * Each slice gets a number of reductions (green_config_t.budget, default
 * 4000, BEAM's); code charges them as it runs, and a thread whose slice has
 * none left yields at the next point where a switch is allowed.  What
 * charges (the counter itself, green__reductions, is sched/slice.c's):
 *
 *   1. every function entry in code built with -finstrument-functions: the
 *      hooks in libgreen-budget (budget_hooks.c) count down this OS thread's
 *      counter through the address green_budget_counter gave them, and call
 *      green_budget_spent at zero;
 *   2. green_reduce(n), for loops the program knows to be long;
 *   3. every call into libgreen, one each (green__poll).
 *
 * No signal, no clock read, no system call on any of these paths.
 *
 * Where the yield may happen.  A call into libgreen or to green_reduce is a
 * switch point by the API's contract, like green_yield.  A function entry is
 * a safe point for the compiler -- a real call, with nothing live in
 * caller-saved registers -- but not always for the program: a comparator
 * called back from qsort, a pthread_once routine or a GREEN_NOPREEMPT
 * function's callee may run with a lock held by a caller or inside code that
 * must not be interleaved.  So green_budget_spent walks the callers as the
 * signal handler does (walk.c, green__sp_walk_here, against the same
 * safepoint table) and yields only when every one up to the thread's base is
 * preemptible.  Otherwise the yield stays pending, as a refused signal's
 * does, and is taken on the way out, as a refused signal's is: the return of
 * the outermost frame that may not be interrupted is hooked (the preemption
 * layer's rt->hooks->hijack, signals/hijack.c), or else at the next poll
 * (any libgreen call, green_safepoint, green_nopreempt_end); the slice gets
 * another budget meanwhile.  The walk costs ~0.1-1 us, once per budget --
 * but ~35 us through a hooked frame, whose unwind rule is an expression
 * libunwind's fast path does not take: so a hook in place answers for the
 * walks that would only find it again (callers_allow_else_hook).
 *
 * The yield at a function entry keeps the thread on its worker, as a
 * preemption by signal does (green__sched_preempted): the interrupted
 * function's callers may hold the address of errno or of a __thread
 * variable in a register, believing no call can change the OS thread.
 *
 * Rejected: the hooks in libgreen.so itself.  The names
 * __cyg_profile_func_enter/exit would then be bound by every program that
 * links libgreen, and a profiler's own hooks, loaded later, would silently
 * lose to them (or win, and the budget would silently stop).  The hooks come
 * in their own library, which a program asks for with
 * `pkg-config green-budget`, and libgreen.so keeps exporting only green_*.
 */
#include "sched.h"
#include "safepoints.h"

int64_t *green_budget_counter(void)
{
    return &green__reductions;
}

/* The caller is not a green thread of a run with a budget: give it a slice
 * no program counts down. */
static bool no_budget(struct green__worker *w)
{
    if (w && w->cur != &w->g0 && w->rt->slice_budget != GREEN_BUDGET_NONE)
        return false;
    if (!w)
        green__reductions = GREEN_BUDGET_NONE;
    return true;
}

void green_reduce(unsigned n)
{
    green__reductions -= n;
    if (GREEN_LIKELY(green__reductions > 0))
        return;
    struct green__worker *w = green__worker_self();
    if (no_budget(w) || w->cur->nopreempt)
        return;                      /* green_nopreempt_end polls */
    atomic_fetch_add_explicit(&green__budget_yields, 1, memory_order_relaxed);
    green_yield();
}

/* Polls a hook answers for before the callers are walked again (see
 * callers_allow_else_hook). */
#define GREEN_HOOK_TRUST 256u

/* Does the hooked slot still hold the hook?  Only a "no" is certain: a
 * frame left by longjmp may have left the word behind in what is now a
 * live frame's memory -- maybe in its AddressSanitizer redzone, hence the
 * unchecked read.  The caller runs below the slot, so it is mapped. */
__attribute__((no_sanitize_address)) static bool slot_holds(const uint64_t *slot, uintptr_t hook)
{
    return *(const volatile uint64_t *)slot == hook;
}

/* May the calling green thread switch here, at a function entry?  If not,
 * the preemption layer hooks the way out where the walk found one. */
static bool callers_allow_else_hook(struct green__worker *w, struct green__thread *t)
{
    if (t->nopreempt)
        return false;
    const struct green__hooks *h = w->rt->hooks;
    /* A hook placed by an earlier walk still answers: the frame it hooks
     * is the outermost that may not be interrupted for as long as it runs,
     * and the walk would only find it again (a budget of 50 in a long
     * qsort, or the release of every lock SQLite takes inside one call:
     * thousands of walks, each of them libunwind's slow path -- the hooked
     * return's unwind rule is an expression, ~35 us a walk of 16 frames
     * here).  Unless its frame was left by longjmp.  That is certain when
     * the stack is now above the hooked slot, or when the slot holds
     * another word (the calls made since the longjmp wrote their own return
     * addresses there: libpng's way, setjmp beside the call); it is
     * possible however it looks.  So walk again then, and every
     * GREEN_HOOK_TRUST polls, which forgets a stale hook. */
    struct green__patch *p = green__patch_of(t);
    if (p->slot && p->trusted > 0 &&
        (uintptr_t)__builtin_frame_address(0) < (uintptr_t)p->slot &&
        slot_holds(p->slot, h->hook_ret)) {
        p->trusted--;
        return false;
    }
    /* libunwind takes locks of its own: libc's, not a green thread's. */
    green__in_handler++;
    const struct green__sp_table *tab = green__sp_enter();
    struct green__sp_verdict v = { .walk = GREEN_WALK_FAILED };
    if (tab)
        v = green__sp_walk_here(tab, (uintptr_t)green__stack_lo(t), (uintptr_t)green__stack_top(t),
                                h->hook_ret);
    green__sp_exit();
    h->hijack(t, v.walk, v.hook_live, v.slot);
    green__in_handler--;
    if (p->slot)
        p->trusted = GREEN_HOOK_TRUST;
    return v.walk == GREEN_WALK_SAFE;
}

bool green__switch_allowed_here(struct green__worker *w, struct green__thread *t)
{
    return callers_allow_else_hook(w, t);
}

void green_budget_spent(void)
{
    struct green__worker *w = green__worker_self();
    if (no_budget(w))
        return;
    struct green__thread *t = w->cur;
    if (!callers_allow_else_hook(w, t)) {
        atomic_fetch_add_explicit(&green__budget_refused, 1, memory_order_relaxed);
        __atomic_store_n(&t->preempt_pending, true, __ATOMIC_RELAXED);
        green__slice_refill(w);
        return;
    }
    atomic_fetch_add_explicit(&green__budget_yields, 1, memory_order_relaxed);
    green__sched_preempted(w);       /* returns on w */
    if (green__reductions <= 0)      /* nobody else ran: no switch set it */
        green__slice_refill(w);
}
