/*
 * Keeping the safepoint table current: when a new table is built, and the
 * calls that change what goes into it (the runs' GREEN_UNSAFE and
 * GREEN_PREEMPTIBLE, the user's ranges).
 *
 * Rebuilding.  glibc counts loads and unloads (dlpi_adds, dlpi_subs); the
 * monitor compares them with the build's at most once a millisecond, or at
 * once after a hint (a handler met unknown code).  A user range rebuilds in
 * the call that adds it; a run's names, in the call that counts them in.
 * Every build happens here, under `lock` and outside any handler: build.c
 * makes the table, table.c publishes it and frees the old ones once no
 * reader holds them.
 *
 * When the objects change, libunwind's cache of frame shapes goes too
 * (green__sp_walk_flush): unloaded objects' unwind rules must not be used
 * for what replaces them at the same addresses.  The flush is walk.c's, as
 * the cache is; this file only says when.  The calls run one way: this
 * file calls names.c, build.c, table.c and walk.c, none of which calls
 * back.
 *
 * Rejected: interposing dlopen/dlclose (libgreen exports only green_*
 * names) and LD_AUDIT (a user's environment choice, not a library's).
 * Known gap: an object unloaded and another loaded at the same address
 * between two looks of the monitor is classified as the old one for up to
 * a millisecond.
 */
#include "table.h"

#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Handlers: the hint, lock-free.  Everything else: under `lock`. */
static atomic_bool stale_hint;

static _Atomic uint64_t last_check_ns; /* any monitor; written under lock */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long built_adds, built_subs;

static struct green__sp_user_range *uranges;
static size_t nuranges, capuranges;

/* Requires: lock held.  Build and publish a new table, forget what
 * libunwind cached of the old objects, and free the retired tables no
 * reader holds: 0 or ENOMEM. */
static int rebuild_and_publish(void)
{
    unsigned long long counts[2];
    struct green__sp_table *t = green__sp_table_build(uranges, nuranges, counts);
    if (!t)
        return ENOMEM;
    built_adds = counts[0];
    built_subs = counts[1];
    green__sp_table_publish(t);
    green__sp_walk_flush();
    green__sp_table_reclaim();
    return 0;
}

/* dl_iterate_phdr's callback: the loader's load and unload counts. */
static int read_load_counts(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *c = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        c[0] = info->dlpi_adds;
        c[1] = info->dlpi_subs;
    }
    return 1;                        /* the first object is enough */
}

/* Requires: lock held.  Rebuild if forced, if there is no table yet, or if
 * objects were loaded or unloaded since the last build: 0 or ENOMEM. */
static int rebuild_if_changed(bool force)
{
    unsigned long long c[2] = { 0, 0 };
    dl_iterate_phdr(read_load_counts, c);
    if (!force && green__sp_table_published() && c[0] == built_adds && c[1] == built_subs)
        return 0;
    return rebuild_and_publish();
}

void green__sp_refresh(uint64_t now)
{
    /* Most looks end here: no lock, no system call. */
    if (!atomic_load_explicit(&stale_hint, memory_order_relaxed) &&
        now - atomic_load_explicit(&last_check_ns, memory_order_relaxed) < 1000000u)
        return;
    if (pthread_mutex_trylock(&lock) != 0)
        return;                      /* someone is building: that will do */
    atomic_store_explicit(&stale_hint, false, memory_order_relaxed);
    atomic_store_explicit(&last_check_ns, now, memory_order_relaxed);
    rebuild_if_changed(false);
    green__sp_table_reclaim();
    pthread_mutex_unlock(&lock);
}

/* AS-safe */
void green__sp_hint_stale(void) { atomic_store_explicit(&stale_hint, true, memory_order_relaxed); }

/* ---- Runs --------------------------------------------------------------- */

int green__sp_acquire(const char *unsafe, const char *preemptible)
{
    int err = 0;
    pthread_mutex_lock(&lock);
    bool changed = green__sp_names_count(unsafe, false, 1, &err);
    if (!err) {
        changed |= green__sp_names_count(preemptible, true, 1, &err);
        if (err)
            green__sp_names_count(unsafe, false, -1, &(int){ 0 });
    }
    if (!err && (err = rebuild_if_changed(changed)) != 0) {
        green__sp_names_count(unsafe, false, -1, &(int){ 0 });
        green__sp_names_count(preemptible, true, -1, &(int){ 0 });
    }
    pthread_mutex_unlock(&lock);
    return err;
}

void green__sp_release(const char *unsafe, const char *preemptible)
{
    pthread_mutex_lock(&lock);
    bool changed = green__sp_names_count(unsafe, false, -1, &(int){ 0 });
    changed |= green__sp_names_count(preemptible, true, -1, &(int){ 0 });
    if (changed)
        rebuild_if_changed(true);
    green__sp_table_reclaim();
    pthread_mutex_unlock(&lock);
}

/* ---- The public calls ---------------------------------------------------- */

int green_code_range_add(const void *start, size_t len, int kind)
{
    uintptr_t lo = (uintptr_t)start, hi = lo + len;
    if (!start || len == 0 || hi < lo ||
        (kind != GREEN_CODE_PREEMPTIBLE && kind != GREEN_CODE_UNSAFE))
        return EINVAL;
    int err = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nuranges; i++)
        if (lo < uranges[i].hi && uranges[i].lo < hi)
            err = EEXIST;
    if (!err && !green__sp_grow(&uranges, &capuranges, nuranges + 1, sizeof *uranges))
        err = ENOMEM;
    if (!err) {
        uranges[nuranges++] = (struct green__sp_user_range){ lo, hi, (enum green_code)kind };
        if ((err = rebuild_and_publish()) != 0)
            nuranges--;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

int green_code_range_remove(const void *start, size_t len)
{
    uintptr_t lo = (uintptr_t)start, hi = lo + len;
    int err = ENOENT;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nuranges; i++) {
        if (uranges[i].lo == lo && uranges[i].hi == hi) {
            struct green__sp_user_range gone = uranges[i];
            uranges[i] = uranges[--nuranges];
            if ((err = rebuild_and_publish()) != 0)
                uranges[nuranges++] = gone;   /* still in force */
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return err;
}

int green_code_kind(const void *pc)
{
    if (!green__sp_table_published()) {
        pthread_mutex_lock(&lock);
        if (!green__sp_table_published())
            rebuild_and_publish();
        pthread_mutex_unlock(&lock);
    }
    const struct green__sp_table *t = green__sp_enter();
    enum green_code kind = green__sp_lookup(t, (uintptr_t)pc);
    green__sp_exit();
    return (int)kind;
}
