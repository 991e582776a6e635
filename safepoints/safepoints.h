/* Private to libgreen. */
/*
 * Safepoints: where a green thread may be interrupted.
 *
 * table.c     the table in force: sorted executable address ranges, each of
 *             one kind (enum green_code, public): preemptible, a
 *             GREEN_NOPREEMPT function, unsafe (may hold a lock), libgreen
 *             itself.  An address in no range is unknown code, treated as
 *             unsafe.  Read by handlers between green__sp_enter and
 *             green__sp_exit; published by an atomic pointer swap.
 * refresh.c   keeps it current: rebuilds, outside any signal handler, when
 *             objects come or go, a run starts or ends, or the user adds a
 *             range (green_code_range_add).
 * build.c     paints a new table from the loaded objects.
 * classify.c  what a loaded object is: preemptible, unsafe, walkable; the
 *             functions whose frames are never hooked.
 * names.c     the object names of GREEN_UNSAFE and GREEN_PREEMPTIBLE.
 * elf.c       finds named sections (green_nopreempt, green_runtime) in an
 *             object's file, for the table.
 * walk.c      the handler's libunwind walk of the interrupted frames.
 * budget.c    the reduction budget: green_reduce and the instrumentation
 *             hooks' way in (libgreen-budget, budget_hooks.c).
 *
 * table.h is the private header of the files that make the table.
 */
#ifndef GREEN_SAFEPOINTS_H
#define GREEN_SAFEPOINTS_H

#include "green.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ucontext.h>

struct green__sp_table;

/* A run that preempts starts / ends.  acquire builds or refreshes the table
 * and adds the object names of `unsafe` (GREEN_UNSAFE) and `preemptible`
 * (GREEN_PREEMPTIBLE), ':'-separated lists that may be NULL, for as long as
 * that run lasts; release takes them away.  acquire returns 0 or ENOMEM. */
int green__sp_acquire(const char *unsafe, const char *preemptible);
void green__sp_release(const char *unsafe, const char *preemptible);

/* Is name (a file name or path) one of the system's runtime objects (libc,
 * ld.so, libstdc++, ...), which are never preemptible whatever is named? */
bool green__sp_system_object(const char *name);

/* Rebuild the table if objects were loaded or unloaded (dlopen, dlclose)
 * since it was built, and free the tables no handler can still read.  The
 * monitor calls it at every look, with the time (CLOCK_MONOTONIC ns); it
 * does something at most once a millisecond, or at once after a hint. */
void green__sp_refresh(uint64_t now);

/* AS-safe.  A handler met unknown code: the next refresh looks at once. */
void green__sp_hint_stale(void);

/* Does the table know where libgreen's own code is?  (Not when libgreen is
 * linked statically into a program without its green_runtime section.) */
bool green__sp_knows_runtime(void);

/* AS-safe.  Read the current table: every lookup between enter and exit
 * uses the table enter returned (NULL: none yet), which is not freed before
 * exit. */
const struct green__sp_table *green__sp_enter(void);
void green__sp_exit(void);

/* AS-safe.  The kind of code at pc: enum green_code. */
enum green_code green__sp_lookup(const struct green__sp_table *t, uintptr_t pc);

/* AS-safe.  May a handler walk the stack from a PC here?  Not in ld.so,
 * libunwind or unknown code (classify.c says why). */
bool green__sp_may_walk(const struct green__sp_table *t, uintptr_t pc);

/* AS-safe.  May a frame running the code at pc have its return hooked?  Not
 * setjmp, getcontext, fork, vfork, clone, daemon, dlopen, dlsym and their
 * kin (classify.c says why), nor unknown code. */
bool green__sp_may_hook(const struct green__sp_table *t, uintptr_t pc);

/* What a walk over a green thread's frames found (walk.c). */
enum green__sp_walk {
    GREEN_WALK_SAFE,                 /* every frame up to the thread's base is
                                      * preemptible: switch here */
    GREEN_WALK_HOOK,                 /* one is not, but the outermost such
                                      * frame returns into preemptible code:
                                      * hook its return (slot) */
    GREEN_WALK_HOOKED,               /* that frame's return is hooked already
                                      * (the walk met the hook's address) */
    GREEN_WALK_STUCK,                /* the outermost such frame is the
                                      * thread's own function, its return slot
                                      * cannot be trusted, a frame up to it must
                                      * not be hooked (setjmp, fork...), or a
                                      * hook below it is in place: nothing to
                                      * hook */
    GREEN_WALK_FAILED,               /* the base was not reached (no unwind
                                      * information, or deeper than
                                      * GREEN_WALK_MAX_DEPTH) */
};
#define GREEN_WALK_MAX_DEPTH 256

struct green__sp_verdict {
    enum green__sp_walk walk;
    /* HOOK and STUCK: the outermost frame that may not be interrupted. */
    enum green_code kind;            /* its kind (NOPREEMPT, UNSAFE, ...) */
    bool at_pc;                      /* it is the interrupted frame itself */
    uint64_t *slot;                  /* HOOK: its return address's stack slot */
    bool hook_live;                  /* the walk met a hook in place */
};

/* AS-safe.  Walk the frames of the code interrupted in uc, on a green thread
 * whose stack is [lo, hi), and say where it may be switched out.  The
 * caller has checked that a walk from its PC is allowed
 * (green__sp_may_walk).  A hook's slot lies in [lo, hi).  hook_ret: the
 * return address a hooked frame has (the walk passes through it to the real
 * caller, and says HOOKED). */
struct green__sp_verdict green__sp_walk(const struct green__sp_table *t, ucontext_t *uc,
                                        uintptr_t lo, uintptr_t hi, uintptr_t hook_ret);

/* The same for the calling green thread, from its own code (not a handler):
 * libgreen's frames on top are skipped. */
struct green__sp_verdict green__sp_walk_here(const struct green__sp_table *t, uintptr_t lo,
                                             uintptr_t hi, uintptr_t hook_ret);

/* Set up libunwind for use from the handler (its per-thread cache); drop
 * what it cached, when objects were unloaded (refresh.c, at every
 * rebuild). */
void green__sp_walk_init(void);
void green__sp_walk_flush(void);

/* budget.c: may t switch right here (struct green__hooks.switch_allowed)? */
struct green__worker;
struct green__thread;

/* A return address on a thread's stack that the preemption layer pointed
 * at its trampoline (signals/hijack.c; the budget's walk reads it too): the return of a frame that may not
 * be interrupted, hooked so that a refused preemption is taken the instant
 * that frame returns into preemptible code.  Written on the thread's own worker;
 * it lives in the thread's struct green__preempt_slot, which sched/ only
 * zeroes when the control block goes back to rest.  Whether a hook is
 * still in place is never read from its slot -- after a longjmp the slot
 * may be a live frame's memory -- but from a walk of the stack, which
 * meets the trampoline as a caller while it is.  (A slot that no longer
 * holds the hook says for certain that it is gone: budget.c reads it for
 * that, to walk again at once.) */
struct green__patch {
    uint64_t *slot;                  /* the hooked slot; NULL: none */
    uint32_t trusted;                /* polls it answers for unwalked */
    void *exc;                       /* an exception landed in the trampoline */
};
/* t's hook (t: a struct green__thread *). */
#define green__patch_of(t) ((struct green__patch *)(void *)&green__cold(t)->preempt)

bool green__switch_allowed_here(struct green__worker *w, struct green__thread *t);

#endif /* GREEN_SAFEPOINTS_H */
