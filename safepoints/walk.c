/*
 * The walk: where may this green thread be switched out?
 *
 * A PC in the program's own code can still run under a caller that may not
 * be interrupted: a comparator called back from qsort, a pthread_once
 * routine, a GREEN_NOPREEMPT function; and a PC in a library always may not
 * be.  So the handler walks the interrupted thread's frames with libunwind,
 * from the signal frame (UNW_INIT_SIGNAL_FRAME: the first PC is exact, not
 * a return address) up to the thread's base -- the return address inside
 * green__call_entry, under which every green thread's own code runs -- and
 * looks each one up in the table (return addresses at address - 1: a call
 * that never returns may end its function).  A frame is preemptible when
 * its code is; anything else -- unsafe, unknown, libgreen, GREEN_NOPREEMPT
 * -- may not be interrupted.
 *
 * Verdicts:
 *   SAFE    every frame up to the base is preemptible: switch here.
 *   HOOK    some frame is not.  Take the outermost such frame, frame j:
 *           every frame above it is preemptible, so the instant j returns
 *           the thread is in code that may be switched out.  The caller
 *           hooks j's return address (signals/hijack.c); the slot that
 *           holds it is found by stepping the frames one by one (the fast
 *           walk below knows return addresses, not where they are).  The
 *           slot is trusted only if it lies in the live stack, holds the
 *           return address the walk found, and frame j is an ordinary call
 *           (not a signal frame, whose "return" is a sigreturn).
 *   HOOKED  frame j is the hook's own frame: the walk met the trampoline's
 *           address as a caller (its unwind information leads on to the
 *           real one), so the hook placed earlier is still in place and is
 *           the right one -- the frames above a frame that runs cannot
 *           change.  Nothing to do.  This is how a hook is known to be in
 *           place: never by reading its slot, which after a longjmp past
 *           the frame may hold the same word inside a live frame's memory.
 *   STUCK   frame j is the thread's own function (its caller is the base),
 *           so there is no owned code to return into; or its slot could not
 *           be trusted (a frame whose return address is not where a call
 *           leaves it: libgreen's preemption trampoline, which calls back a
 *           test build's tracer); or a frame up to j must not be hooked
 *           (setjmp saves its return address, a forked child would return
 *           through the hook: green__sp_may_hook); or a hook below j is in
 *           place (one per thread).  The monitor retries with a backoff.
 *   FAILED  the walk did not reach the base (no unwind information, deeper
 *           than GREEN_WALK_MAX_DEPTH): refuse rather than guess.
 *
 * Speed.  The classification uses unw_backtrace's fast path: libunwind's
 * per-thread cache of frame shapes, a few ns a frame, where unw_step costs a
 * dl_iterate_phdr and two sigprocmask calls on a cache miss (~0.5 us here).
 * Only a HOOK steps, and only as far as frame j + 1.
 *
 * Safety.  libunwind's local unwinding is meant to be called from signal
 * handlers: it allocates nothing, and its per-thread cache is safe there --
 * unless the interrupted code is libunwind itself, whose cache the walk
 * would re-enter.  It finds unwind tables through dl_iterate_phdr, whose
 * lock is recursive: re-entering it from a thread that holds it to read the
 * list is harmless, unless the thread is ld.so changing that list.  So the
 * handler never walks from a PC in libunwind or ld.so
 * (green__sp_may_walk); callers inside them have called out of the
 * critical part (a callback, malloc).
 */
#define UNW_LOCAL_ONLY
#include "safepoints.h"

#include <libunwind.h>
#include <string.h>

/* The return address of the call that runs a green thread's function
 * (sched/switch_x86_64.S). */
extern const char green__call_entry_ret[];

/* Backtraces are written by libunwind as void *. */
typedef uintptr_t __attribute__((may_alias)) frame_ip;

/* Frames of the handler itself above the interrupted ones: green__sp_walk,
 * decide, on_signal, the kernel's signal trampoline, and some slack. */
#define HANDLER_FRAMES 16

void green__sp_walk_init(void)
{
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
}

void green__sp_walk_flush(void)
{
    /* Unloaded objects' unwind rules must not be used for what replaces
     * them at the same addresses. */
    unw_flush_cache(unw_local_addr_space, 0, 0);
}

static bool is_base(uintptr_t ip)
{
    return ip == (uintptr_t)green__call_entry_ret;
}

/* The address frame k's code is looked up at: ip[0] is exact when
 * `exact` (a signal's PC); return addresses are looked up one byte back. */
static uintptr_t code_at(const frame_ip *ip, int k, bool exact)
{
    return ip[k] - (k > 0 || !exact);
}

/* AS-safe.  Classify frames ip[0 .. n) below the base: the outermost frame
 * that may not be interrupted, or -1; *hooked, the frame whose return a
 * hook in place has (the walk met hook_ret), or -1. */
static int outermost_unpreemptible(const struct green__sp_table *t, const frame_ip *ip,
                                   int n, bool exact, uintptr_t hook_ret,
                                   struct green__sp_verdict *v, int *hooked)
{
    int j = -1;
    *hooked = -1;
    for (int k = 0; k < n; k++) {
        enum green_code kind = green__sp_lookup(t, code_at(ip, k, exact));
        if (kind != GREEN_CODE_PREEMPTIBLE) {
            j = k;
            v->kind = kind;
        }
        if (k > 0 && ip[k] == hook_ret)
            *hooked = k - 1;
    }
    v->at_pc = j == 0;
    return j;
}

/* AS-safe.  Step cursor c (at frame 0) to frame j + 1 and find the slot that
 * holds frame j's return address, ip[j + 1]; NULL if it cannot be trusted.
 * The slot must lie in [lo, hi). */
static uint64_t *return_slot(unw_cursor_t *c, int j, const frame_ip *ip, uintptr_t lo,
                             uintptr_t hi)
{
    for (int k = 0; k < j; k++)
        if (unw_step(c) <= 0)
            return NULL;
    unw_word_t pc, sp;
    if (j > 0 && (unw_get_reg(c, UNW_REG_IP, &pc) < 0 || pc != ip[j]))
        return NULL;                 /* the two walks disagree */
    if (unw_is_signal_frame(c) > 0)
        return NULL;                 /* frame j returns by sigreturn */
    if (unw_step(c) <= 0 || unw_get_reg(c, UNW_REG_IP, &pc) < 0 ||
        unw_get_reg(c, UNW_REG_SP, &sp) < 0 || pc != ip[j + 1])
        return NULL;
    /* The caller's stack pointer is frame j's CFA; its return address sits
     * just below. */
    uint64_t *slot = (uint64_t *)(uintptr_t)(sp - 8);
    if ((uintptr_t)slot < lo || (uintptr_t)slot + 8 > hi || *slot != pc)
        return NULL;
    return slot;
}

/* AS-safe.  The verdict on frames ip[0 .. n) below the base (n < 0: the
 * base was not reached), but for a HOOK's slot: *j is then the frame to
 * hook, and the caller finds its slot (return_slot). */
static struct green__sp_verdict judge(const struct green__sp_table *t, const frame_ip *ip,
                                      int n, bool exact, uintptr_t hook_ret, int *j)
{
    struct green__sp_verdict v = { .walk = GREEN_WALK_FAILED };
    if (n < 0)
        return v;
    int hooked;
    *j = outermost_unpreemptible(t, ip, n, exact, hook_ret, &v, &hooked);
    v.hook_live = hooked >= 0;
    if (*j < 0) {
        v.walk = GREEN_WALK_SAFE;
    } else if (hooked >= 0) {
        /* The trampoline's frame (hooked + 1) is libgreen's: j is it, or a
         * frame above it that the one hook a thread has cannot serve. */
        v.walk = *j == hooked + 1 ? GREEN_WALK_HOOKED : GREEN_WALK_STUCK;
    } else if (*j == n - 1) {
        v.walk = GREEN_WALK_STUCK;
    } else {
        v.walk = GREEN_WALK_HOOK;
        for (int k = 0; k <= *j; k++)
            if (!green__sp_may_hook(t, code_at(ip, k, exact)))
                v.walk = GREEN_WALK_STUCK;
    }
    return v;
}

/* AS-safe.  From entries ip[i ..] of a backtrace, the frames below the
 * base, moved to the front of ip: how many, or -1 if there is no base. */
static int keep_frames_below_base(frame_ip *ip, int i, int n)
{
    for (int k = i; k < n; k++) {
        if (is_base(ip[k])) {
            memmove(ip, ip + i, (size_t)(k - i) * sizeof ip[0]);
            return k - i;
        }
    }
    return -1;
}

/* AS-safe.  The frame-by-frame walk, when the fast one cannot find the
 * interrupted frame: fills ip like keep_frames_below_base. */
static int frames_by_steps(ucontext_t *uc, frame_ip *ip)
{
    unw_cursor_t c;
    if (unw_init_local2(&c, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) < 0)
        return -1;
    for (int n = 0; n <= GREEN_WALK_MAX_DEPTH; n++) {
        unw_word_t pc;
        if (unw_get_reg(&c, UNW_REG_IP, &pc) < 0)
            return -1;
        if (n > 0 && is_base(pc))
            return n;
        ip[n] = pc;
        if (unw_step(&c) <= 0)
            return -1;
    }
    return -1;
}

/* AS-safe */
struct green__sp_verdict green__sp_walk(const struct green__sp_table *t, ucontext_t *uc,
                                        uintptr_t lo, uintptr_t hi, uintptr_t hook_ret)
{
    /* The fast walk: unw_backtrace from here, through the signal frame.
     * The interrupted PC is the entry equal to the context's; its callers
     * follow. */
    frame_ip ip[GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES + 1];
    int n = unw_backtrace((void **)ip, GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES);
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
    int i = 0;
    while (i < n && i < HANDLER_FRAMES && ip[i] != pc)
        i++;
    n = i < n && i < HANDLER_FRAMES ? keep_frames_below_base(ip, i, n)
                                    : frames_by_steps(uc, ip);
    int j;
    struct green__sp_verdict v = judge(t, ip, n, true, hook_ret, &j);
    if (v.walk != GREEN_WALK_HOOK)
        return v;
    unw_cursor_t c;
    if (unw_init_local2(&c, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) < 0 ||
        !(v.slot = return_slot(&c, j, ip, sp > lo ? sp : lo, hi)))
        v.walk = GREEN_WALK_STUCK;
    return v;
}

/* Not for handlers: from a green thread's own code (the budget's hooks).
 * The frames on top are libgreen's own (this function, the budget's
 * decision, the instrumentation hook): skipped.  Then the judgement is the
 * handler's, with every frame a return address. */
struct green__sp_verdict green__sp_walk_here(const struct green__sp_table *t, uintptr_t lo,
                                             uintptr_t hi, uintptr_t hook_ret)
{
    frame_ip ip[GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES + 1];
    int n = unw_backtrace((void **)ip, GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES);
    /* libgreen's own frames on top -- up to one whose return is hooked
     * (its caller is the trampoline): the walk must meet that hook, or it
     * would forget it while it is in place. */
    int top = 0;
    while (top < n && top < HANDLER_FRAMES && !(top + 1 < n && ip[top + 1] == hook_ret) &&
           green__sp_lookup(t, ip[top] - (top > 0)) == GREEN_CODE_RUNTIME)
        top++;
    n = keep_frames_below_base(ip, top, n);
    int j;
    struct green__sp_verdict v = judge(t, ip, n, false, hook_ret, &j);
    if (v.walk != GREEN_WALK_HOOK)
        return v;
    /* A cursor on this frame, stepped to the first frame judged. */
    unw_context_t ctx;
    unw_cursor_t c;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    bool ok = unw_getcontext(&ctx) == 0 && unw_init_local(&c, &ctx) == 0;
    for (int k = 0; ok && k < top; k++)
        ok = unw_step(&c) > 0;
    if (!ok || !(v.slot = return_slot(&c, j, ip, sp > lo ? sp : lo, hi)))
        v.walk = GREEN_WALK_STUCK;
    return v;
}
