/*
 * The safepoint table in force: which code a preemption signal may
 * interrupt, as the handler reads it.
 *
 * The table is a sorted array of disjoint executable address ranges, each
 * of one kind (enum green_code): preemptible, a GREEN_NOPREEMPT function,
 * unsafe (may hold a lock), libgreen itself.  build.c paints it from the
 * loaded objects, classify.c says what each object is, refresh.c keeps it
 * current; this file owns the one in force and answers the lookups.
 *
 * An address in no range is unknown -- code loaded since the table was
 * built, or generated at run time -- and the handler treats it as unsafe:
 * a library dlopen'ed a moment ago is never preempted before the table
 * knows what it is.  Handlers that meet unknown code hint the monitor,
 * which rebuilds at once if the loader's counters moved (refresh.c).
 *
 * Walking and hooking.  Besides the kind, a range says whether the handler
 * may walk the stack from a PC inside it (green__sp_may_walk), and the
 * table keeps apart the functions whose frames may not have their return
 * hooked (green__sp_may_hook); classify.c says which and why.
 *
 * Publication and reclamation.  A build happens under refresh.c's lock,
 * outside any handler, and is published by an atomic swap of `current`; the
 * old table goes on a retired list.  Readers (handlers, green_code_kind)
 * bracket their use: readers++, load current, ..., readers--, all seq_cst.
 * A retired table is freed once `readers` is seen at zero after it was
 * swapped out: a reader that started before the swap has finished, and one
 * that starts after it loads the new table.
 *
 * Everything here but publication and reclamation is AS-safe.  This file
 * calls no other: the files that build, keep, walk and budget read it.
 */
#include "table.h"

#include <stdatomic.h>
#include <stdlib.h>

/* Readers: any thread, lock-free.  The retired list: under the lock. */
static _Atomic(struct green__sp_table *) current;
static _Atomic unsigned readers;
static struct green__sp_table *retired;

/* ---- Readers ------------------------------------------------------------ */

/* AS-safe */
const struct green__sp_table *green__sp_enter(void)
{
    atomic_fetch_add(&readers, 1);
    return atomic_load(&current);
}

/* AS-safe */
void green__sp_exit(void) { atomic_fetch_sub(&readers, 1); }

/* AS-safe.  The range of r[0 .. n), sorted and disjoint, that holds pc, or
 * NULL. */
static const struct range *range_at(const struct range *r, size_t n, uintptr_t pc)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pc < r[mid].lo)
            hi = mid;
        else if (pc >= r[mid].hi)
            lo = mid + 1;
        else
            return &r[mid];
    }
    return NULL;
}

/* AS-safe */
enum green_code green__sp_lookup(const struct green__sp_table *t, uintptr_t pc)
{
    const struct range *r = t ? range_at(t->r, t->n, pc) : NULL;
    return r ? (enum green_code)r->kind : GREEN_CODE_UNKNOWN;
}

/* AS-safe */
bool green__sp_may_walk(const struct green__sp_table *t, uintptr_t pc)
{
    const struct range *r = t ? range_at(t->r, t->n, pc) : NULL;
    return r && !(r->flags & NOWALK);
}

/* AS-safe */
bool green__sp_may_hook(const struct green__sp_table *t, uintptr_t pc)
{
    return t && range_at(t->r, t->n, pc) && !range_at(t->r + t->n, t->nfn, pc);
}

bool green__sp_knows_runtime(void)
{
    const struct green__sp_table *t = green__sp_enter();
    bool knows = t && t->knows_runtime;
    green__sp_exit();
    return knows;
}

/* ---- Publication and reclamation ----------------------------------------- */

bool green__sp_table_published(void) { return atomic_load(&current) != NULL; }

/* Requires: lock held. */
void green__sp_table_publish(struct green__sp_table *t)
{
    struct green__sp_table *old = atomic_exchange(&current, t);
    if (old) {
        old->retired_next = retired;
        retired = old;
    }
}

/* Requires: lock held. */
void green__sp_table_reclaim(void)
{
    if (retired && atomic_load(&readers) == 0) {
        while (retired) {
            struct green__sp_table *next = retired->retired_next;
            free(retired);
            retired = next;
        }
    }
}
