/*
 * What a loaded object is: preemptible or unsafe, walkable or not, and the
 * functions in it whose frames are never hooked.
 *
 * The rule: preempt only code the program owns.  Owned code is the main
 * executable, the objects the user names (GREEN_PREEMPTIBLE, the config's
 * preemptible_objects) and ranges added with green_code_range_add.  Every
 * other object -- libc, ld.so, the vdso, libstdc++, every third-party
 * library -- may hold a lock or per-OS-thread state (jemalloc's thread
 * caches, OpenSSL's and SQLite's pthread mutexes, a stdio FILE lock) that
 * another green thread on the same worker would need, so it is never
 * interrupted: a preemption refused there is taken on the way out (walk.c,
 * signals/hijack.c).  GREEN_UNSAFE takes objects back out of what is owned
 * (names.c counts both words).  The objects of the system's runtime (libc,
 * ld.so, the vdso, libgcc_s, libunwind, libstdc++, the sanitizers) stay
 * unsafe even when named preemptible.
 *
 * Walking and hooking.  Besides the kind, the table says whether the
 * handler may walk the stack from a PC in an object: not from ld.so, which
 * may be changing the list of loaded objects that libunwind's lookups read,
 * nor from libunwind, whose per-thread cache the walk would re-enter, nor
 * from unknown code, which has no unwind information.  And whether a frame
 * of that code may have its return hooked (green__sp_may_hook): not the
 * functions that read their own return address as data -- setjmp and
 * getcontext save it, dlopen and dlsym ask whose code called them -- nor
 * those that return twice or in another process -- fork, vfork, clone,
 * daemon: the child would return through the hook and switch to another
 * green thread.  They are found by name in every object that defines them
 * (build.c; the first definition may be a sanitizer's interceptor, which
 * calls libc's).
 *
 * Rejected: preempting every object but a list of known offenders (the
 * rule before this one): jemalloc preloaded hung 3 runs of 3, OpenSSL under
 * libcurl crashed, and the list can never be complete.
 */
#include "table.h"

#include <string.h>

/* The system's runtime: never preemptible, whatever GREEN_PREEMPTIBLE says. */
static const char *const system_runtime[] = {
    "libc.so", "ld-linux", "linux-vdso", "libpthread.so", "libdl.so", "librt.so",
    "libgcc_s.so", "libunwind", "libstdc++.so", "libasan.so", "libubsan.so",
    "liblsan.so", "libtsan.so",
};

/* Objects the handler must not walk from, and functions whose frames must
 * not be hooked (see the top of this file). */
static const char *const no_walk[] = { "ld-linux", "libunwind" };
const char *const green__sp_never_hooked[] = {
    "setjmp", "_setjmp", "__sigsetjmp", "getcontext", "swapcontext",
    "fork", "_Fork", "__fork", "vfork", "__vfork", "clone", "__clone", "daemon",
    "dlopen", "dlmopen", "dlsym", "dlvsym",
};
const size_t green__sp_nnever_hooked =
    sizeof green__sp_never_hooked / sizeof green__sp_never_hooked[0];

/* Is path named in list[0 .. n) (names.c says what a name matches)? */
static bool in_list(const char *path, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (green__sp_name_matches(path, list[i], strlen(list[i])))
            return true;
    return false;
}

/* Either way round: "libc" names libc.so.6 as surely as "libc.so.6" does. */
bool green__sp_system_object(const char *name)
{
    size_t n = sizeof system_runtime / sizeof system_runtime[0];
    for (size_t i = 0; i < n; i++)
        if (green__sp_name_matches(system_runtime[i], name, strlen(name)))
            return true;
    return in_list(name, system_runtime, n);
}

/* Requires: lock held. */
enum green_code green__sp_object_kind(const char *path, bool program)
{
    if (green__sp_system_object(path) || green__sp_named(path, false))
        return GREEN_CODE_UNSAFE;
    return program || green__sp_named(path, true) ? GREEN_CODE_PREEMPTIBLE : GREEN_CODE_UNSAFE;
}

bool green__sp_object_walkable(const char *name)
{
    return !in_list(name, no_walk, sizeof no_walk / sizeof no_walk[0]);
}
