/* Private to libgreen. */
/*
 * Safepoints: where a green thread may be interrupted.
 *
 * The table is a sorted array of executable address ranges that must not be
 * interrupted: code that may hold a lock another green thread on the same
 * worker could need (libc's malloc and stdio, the dynamic loader, the vdso)
 * and libgreen itself.  It is built outside any signal handler, from
 * dl_iterate_phdr, and published with an atomic pointer swap; the handler
 * only reads it (green__sp_classify: a binary search, AS-safe).
 */
#ifndef GREEN_SAFEPOINTS_H
#define GREEN_SAFEPOINTS_H

#include <stdbool.h>
#include <stdint.h>

/* Build the table if no run has one (reference-counted across runs). */
int green__sp_acquire(void);
void green__sp_release(void);
/* Does the table know where libgreen's own code is?  (Not when libgreen is
 * linked statically into the program.) */
bool green__sp_knows_runtime(void);
enum green__sp_kind {
    GREEN_SP_SAFE = 0,               /* preemptible */
    GREEN_SP_RUNTIME,                /* libgreen itself */
    GREEN_SP_UNSAFE,                 /* may hold a lock: libc, ld.so, ... */
};

/* AS-safe.  What kind of code is pc in? */
enum green__sp_kind green__sp_classify(uintptr_t pc);

#endif /* GREEN_SAFEPOINTS_H */
