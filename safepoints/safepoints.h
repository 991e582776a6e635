/* Private to libgreen. */
/*
 * Safepoints: where a green thread may be interrupted.
 *
 * table.c  the table: sorted executable address ranges, each of one kind
 *          (enum green_code, public): preemptible, a GREEN_NOPREEMPT
 *          function, unsafe (may hold a lock), libgreen itself.  An address
 *          in no range is unknown code, treated as unsafe.  Built outside
 *          any signal handler, published by an atomic pointer swap, read by
 *          handlers between green__sp_enter and green__sp_exit.
 * elf.c    finds named sections (green_nopreempt, green_runtime) in an
 *          object's file, for the table.
 * walk.c   the handler's libunwind walk of the interrupted frames.
 * budget.c the reduction budget: green_reduce and the instrumentation
 *          hooks' way in (libgreen-budget, budget_hooks.c).
 */
#ifndef GREEN_SAFEPOINTS_H
#define GREEN_SAFEPOINTS_H

#include "green.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ucontext.h>

struct green__sp_table;

/* A run in signal mode starts / ends.  acquire builds or refreshes the
 * table and adds the object names of `unsafe` (GREEN_UNSAFE: a ':'-separated
 * list, may be NULL) for as long as that run lasts; release takes them away.
 * acquire returns 0 or ENOMEM. */
int green__sp_acquire(const char *unsafe);
void green__sp_release(const char *unsafe);

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

/* The verdict of a walk over the interrupted thread's callers. */
enum green__sp_walk {
    GREEN_WALK_SAFE,                 /* every caller up to the thread's base
                                      * is preemptible */
    GREEN_WALK_NOPREEMPT,            /* none unsafe, but one is a
                                      * GREEN_NOPREEMPT function */
    GREEN_WALK_UNSAFE,               /* a caller may hold a lock */
    GREEN_WALK_FAILED,               /* the base was not reached (no unwind
                                      * information, or deeper than
                                      * GREEN_WALK_MAX_DEPTH) */
};
#define GREEN_WALK_MAX_DEPTH 256

/* AS-safe.  Walk the callers of the code interrupted in uc, of kind `kind`
 * (already looked up), on a green thread whose stack is [lo, hi).  On
 * GREEN_WALK_NOPREEMPT, *ret_slot is the stack slot that holds the return
 * address of the outermost GREEN_NOPREEMPT frame (NULL if it could not be
 * found): the deferred preemption can be hooked there. */
enum green__sp_walk green__sp_walk(const struct green__sp_table *t, ucontext_t *uc,
                                   enum green_code kind, uintptr_t lo, uintptr_t hi,
                                   uint64_t **ret_slot);

/* The same verdict for the calling green thread, from its own code (not a
 * handler): libgreen's frames on top are skipped. */
enum green__sp_walk green__sp_walk_here(const struct green__sp_table *t);

/* Set up libunwind for use from the handler (its per-thread cache); drop
 * what it cached, when objects were unloaded. */
void green__sp_walk_init(void);
void green__sp_walk_flush(void);

/* elf.c: the address ranges of the sections named green_nopreempt and
 * green_runtime in the file at path (an ELF object loaded at bias `base`).
 * Zero-length results mean absent.  Returns 0, or an errno if the file
 * cannot be read as ELF. */
struct green__sp_sections {
    uintptr_t nopreempt_lo, nopreempt_hi;
    uintptr_t runtime_lo, runtime_hi;
};
int green__sp_elf_sections(const char *path, uintptr_t base, struct green__sp_sections *out);

#endif /* GREEN_SAFEPOINTS_H */
