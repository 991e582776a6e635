/* Private to safepoints/: the files that make the safepoint table and the
 * one that keeps it current.  The rest of libgreen sees safepoints.h only.
 *
 * The calls run one way (tests/layers.sh):
 *
 *   refresh.c   keeps the table current: counts the runs' names (names.c),
 *               builds (build.c), publishes (table.c), and flushes the
 *               walk's cache (walk.c) when the objects change
 *   build.c     paints a new table from the loaded objects: asks
 *               classify.c and elf.c, fills table.c's shape
 *   classify.c  what a loaded object is (preemptible, unsafe, walkable);
 *               asks names.c
 *   names.c     the names of GREEN_UNSAFE and GREEN_PREEMPTIBLE, counted
 *   elf.c       the sections of a loaded object, read from its file
 *   table.c     the table in force: lookups, publication, reclamation
 *
 * walk.c and budget.c only read the table (table.c); none of these calls
 * refresh.c.  Everything marked "Requires: lock held" runs under
 * refresh.c's lock, outside any handler.
 */
#ifndef GREEN_SAFEPOINTS_TABLE_H
#define GREEN_SAFEPOINTS_TABLE_H

#include "safepoints.h"

#include <stdlib.h>

/* ---- table.c: the table's shape and its publication ---------------------- */

/* Range flags. */
#define NOWALK 1u                    /* no stack walk from a PC in here */

struct range {
    uintptr_t lo, hi;
    uint8_t kind;                    /* enum green_code */
    uint8_t flags;
};

/* r[0 .. n): the ranges by kind; r[n .. n + nfn): the functions never
 * hooked, apart -- a handful, looked at only to place a hook, and kept out
 * of the ranges every lookup searches. */
struct green__sp_table {
    struct green__sp_table *retired_next; /* under lock, once retired */
    bool knows_runtime;
    size_t n, nfn;
    struct range r[];
};

/* Is a table published yet? */
bool green__sp_table_published(void);

/* Requires: lock held.  Make t the table readers get, and retire the one it
 * replaces. */
void green__sp_table_publish(struct green__sp_table *t);

/* Requires: lock held.  Free the retired tables no reader can hold. */
void green__sp_table_reclaim(void);

/* ---- build.c: a new table from the loaded objects ----------------------- */

/* green_code_range_add's ranges: disjoint. */
struct green__sp_user_range {
    uintptr_t lo, hi;
    enum green_code kind;
};

/* Requires: lock held.  Build a table (not yet published) from the objects
 * loaded now and the user's ranges ur[0 .. nur); NULL if out of memory.
 * counts[0], counts[1]: the loader's load and unload counts it was built
 * from (dlpi_adds, dlpi_subs).  The sections of objects no longer loaded
 * are forgotten (elf.c). */
struct green__sp_table *green__sp_table_build(const struct green__sp_user_range *ur, size_t nur,
                                              unsigned long long counts[2]);

/* ---- classify.c: what a loaded object is --------------------------------- */

/* Requires: lock held.  The kind of a whole object other than libgreen;
 * path is its file ("/proc/self/exe" resolved for the program). */
enum green_code green__sp_object_kind(const char *path, bool program);

/* May the handler walk the stack from a PC in the object of that name?
 * Not in ld.so or libunwind. */
bool green__sp_object_walkable(const char *name);

/* The functions whose frames are never hooked, by name:
 * green__sp_never_hooked[0 .. green__sp_nnever_hooked). */
extern const char *const green__sp_never_hooked[];
extern const size_t green__sp_nnever_hooked;

/* ---- names.c: GREEN_UNSAFE and GREEN_PREEMPTIBLE -------------------------- */

/* Does the object at path answer to name[0 .. len)?  (A path, or a file
 * name's start: names.c says how.) */
bool green__sp_name_matches(const char *path, const char *name, size_t len);

/* Requires: lock held.  Is path named in the runs' lists of that kind
 * (preemptible: GREEN_PREEMPTIBLE, else GREEN_UNSAFE)? */
bool green__sp_named(const char *path, bool preemptible);

/* Requires: lock held.  Count the names of the ':'-separated list (NULL:
 * none) in (d = 1) or out (d = -1), all or none: on ENOMEM (*err) what was
 * counted is taken back.  True if a name came or went. */
bool green__sp_names_count(const char *list, bool preemptible, int d, int *err);

/* ---- elf.c: the sections of loaded objects -------------------------------- */

/* The address ranges of the sections named green_nopreempt and
 * green_runtime in an object; zero-length ranges mean absent. */
struct green__sp_sections {
    uintptr_t nopreempt_lo, nopreempt_hi;
    uintptr_t runtime_lo, runtime_hi;
};

/* Requires: lock held.  The sections of the object loaded at bias base from
 * the file at path: read once, then remembered while it stays loaded.  NULL
 * if out of memory.  Marks the object seen by this build. */
const struct green__sp_sections *green__sp_sections_of(uintptr_t base, const char *path);

/* Requires: lock held.  A build is done: forget the sections of the objects
 * it did not see (unloaded). */
void green__sp_sections_forget_unseen(void);

/* ---- Shared ---------------------------------------------------------------- */

/* Grow *v (of *cap elements of size sz) to hold n; false if out of memory. */
static inline bool green__sp_grow(void *v, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return true;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < n)
        c *= 2;
    void *p = realloc(*(void **)v, c * sz);
    if (!p)
        return false;
    *(void **)v = p;
    *cap = c;
    return true;
}

#endif /* GREEN_SAFEPOINTS_TABLE_H */
