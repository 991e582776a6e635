/*
 * The walk: is any caller of the interrupted code unsafe?
 *
 * A PC in the program's own code can still run with a lock held by a caller:
 * a comparator called back from qsort, a pthread_once routine, a global
 * C++ constructor run by the dynamic loader.  Before a preemption is taken,
 * the handler walks the interrupted thread's frames with libunwind, from the
 * signal frame (UNW_INIT_SIGNAL_FRAME: the first PC is exact, not a return
 * address) up to the thread's base -- the return address inside
 * green__call_entry, under which every green thread's own code runs -- and
 * looks each return address up in the table (at address - 1: a call that
 * never returns may end its function).  The walk is unw_backtrace's fast
 * path (see green__sp_walk); the frame-by-frame unw_step walk serves when
 * that cannot find the interrupted frame, and to find a GREEN_NOPREEMPT
 * frame's return-address slot.
 *
 * Verdicts: every frame preemptible -> SAFE; any frame unsafe, unknown, or
 * in libgreen other than the base -> UNSAFE; otherwise, if a frame is a
 * GREEN_NOPREEMPT function -> NOPREEMPT, with the stack slot holding the
 * return address of the outermost such frame, where the deferred preemption
 * can be hooked (its caller is then known to be preemptible).  A walk that
 * ends without reaching the base, or goes deeper than GREEN_WALK_MAX_DEPTH
 * frames, is FAILED: the handler refuses rather than guess.
 *
 * libunwind's local unwinding is meant to be called from signal handlers:
 * it allocates nothing, and its per-thread cache is safe there.  It finds
 * unwind tables through dl_iterate_phdr, whose lock is recursive; the
 * handler never walks when the PC is in the loader or libc, so the thread it
 * interrupted cannot be inside that lock's critical section.
 */
#define UNW_LOCAL_ONLY
#include "safepoints.h"

#include <libunwind.h>

/* The return address of the call that runs a green thread's function
 * (sched/switch_x86_64.S). */
extern const char green__call_entry_ret[];

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

/* AS-safe.  What a caller frame whose return address is ip says: GREEN_WALK_
 * SAFE (preemptible), _NOPREEMPT, or _UNSAFE (anything else). */
static enum green__sp_walk caller(const struct green__sp_table *t, uintptr_t ip)
{
    switch (green__sp_lookup(t, ip - 1)) {
    case GREEN_CODE_PREEMPTIBLE: return GREEN_WALK_SAFE;
    case GREEN_CODE_NOPREEMPT: return GREEN_WALK_NOPREEMPT;
    default: return GREEN_WALK_UNSAFE;
    }
}

/* AS-safe.  The frame-by-frame walk: unw_step over each caller.  Finds the
 * return-address slot of a GREEN_NOPREEMPT frame, which the fast walk
 * cannot. */
static enum green__sp_walk walk_steps(const struct green__sp_table *t, ucontext_t *uc,
                                      enum green_code kind, uintptr_t lo, uintptr_t hi,
                                      uint64_t **ret_slot)
{
    unw_cursor_t c;
    *ret_slot = NULL;
    if (unw_init_local2(&c, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) < 0)
        return GREEN_WALK_FAILED;
    bool nopreempt = kind == GREEN_CODE_NOPREEMPT;
    bool prev_nopreempt = nopreempt;
    for (int depth = 1; depth <= GREEN_WALK_MAX_DEPTH; depth++) {
        if (unw_step(&c) <= 0)
            return GREEN_WALK_FAILED;
        unw_word_t ip, sp;
        if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || unw_get_reg(&c, UNW_REG_SP, &sp) < 0)
            return GREEN_WALK_FAILED;
        if (prev_nopreempt) {
            /* The caller's stack pointer is the callee's CFA; its return
             * address sits just below. */
            uint64_t *slot = (uint64_t *)(uintptr_t)(sp - 8);
            *ret_slot = (uintptr_t)slot >= lo && (uintptr_t)slot + 8 <= hi && *slot == ip
                            ? slot
                            : NULL;
        }
        if (ip == (unw_word_t)(uintptr_t)green__call_entry_ret)
            return nopreempt ? GREEN_WALK_NOPREEMPT : GREEN_WALK_SAFE;
        enum green__sp_walk v = caller(t, (uintptr_t)ip);
        if (v == GREEN_WALK_UNSAFE)
            return v;
        prev_nopreempt = v == GREEN_WALK_NOPREEMPT;
        nopreempt |= prev_nopreempt;
    }
    return GREEN_WALK_FAILED;
}

/* Frames of the handler itself above the interrupted ones: this function,
 * decide, on_signal, the kernel's signal trampoline, and some slack. */
#define HANDLER_FRAMES 16

/* AS-safe */
enum green__sp_walk green__sp_walk(const struct green__sp_table *t, ucontext_t *uc,
                                   enum green_code kind, uintptr_t lo, uintptr_t hi,
                                   uint64_t **ret_slot)
{
    /* The fast walk: unw_backtrace from here, through the signal frame,
     * with libunwind's per-thread cache of frame shapes -- a few ns a
     * frame, where unw_step costs two sigprocmask calls and a
     * dl_iterate_phdr each (~0.5 us here).  The interrupted PC is the entry
     * equal to the context's; its callers follow. */
    void *ip[GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES];
    *ret_slot = NULL;
    int n = unw_backtrace(ip, (int)(sizeof ip / sizeof ip[0]));
    void *pc = (void *)(uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    int i = 0;
    while (i < n && i < HANDLER_FRAMES && ip[i] != pc)
        i++;
    if (i == n || i == HANDLER_FRAMES)
        return walk_steps(t, uc, kind, lo, hi, ret_slot);
    bool nopreempt = kind == GREEN_CODE_NOPREEMPT;
    for (i++; i < n; i++) {
        if (ip[i] == (void *)green__call_entry_ret)
            /* Rare: find where to hook the nopreempt function's return. */
            return nopreempt ? walk_steps(t, uc, kind, lo, hi, ret_slot) : GREEN_WALK_SAFE;
        enum green__sp_walk v = caller(t, (uintptr_t)ip[i]);
        if (v == GREEN_WALK_UNSAFE)
            return v;
        nopreempt |= v == GREEN_WALK_NOPREEMPT;
    }
    /* Stopped short of the base: no unwind information somewhere, or too
     * deep. */
    return GREEN_WALK_FAILED;
}

/* Not for handlers: from a green thread's own code (the budget's hooks).
 * The frames on top are libgreen's own -- skipped -- and then must come
 * only preemptible code (or GREEN_NOPREEMPT functions) up to the base. */
enum green__sp_walk green__sp_walk_here(const struct green__sp_table *t)
{
    void *ip[GREEN_WALK_MAX_DEPTH + HANDLER_FRAMES];
    int n = unw_backtrace(ip, (int)(sizeof ip / sizeof ip[0]));
    int i = 0;
    while (i < n && i < HANDLER_FRAMES &&
           green__sp_lookup(t, (uintptr_t)ip[i]) == GREEN_CODE_RUNTIME)
        i++;
    bool nopreempt = false;
    for (; i < n; i++) {
        if (ip[i] == (void *)green__call_entry_ret)
            return nopreempt ? GREEN_WALK_NOPREEMPT : GREEN_WALK_SAFE;
        enum green__sp_walk v = caller(t, (uintptr_t)ip[i]);
        if (v == GREEN_WALK_UNSAFE)
            return v;
        nopreempt |= v == GREEN_WALK_NOPREEMPT;
    }
    return GREEN_WALK_FAILED;
}
