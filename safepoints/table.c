/*
 * The safepoint table: which code may be interrupted by a preemption signal.
 *
 * Unsafe, as whole objects: libgreen (its spinlocks and queues), libc (malloc
 * arenas, stdio locks, pthread_once), the dynamic loader (its lock), the
 * vdso, libgcc_s and libunwind (the unwinder's caches), libstdc++ (static
 * initialisation guards), and the sanitizer runtimes.  Everything else --
 * the program and the libraries it brings -- is preemptible.
 *
 * Only the PT_LOAD segments with PF_X count.  The ranges are sorted and
 * merged; the handler binary-searches them.  The table is built when the
 * first run starts and freed when the last one ends (no handler can run
 * then: the preemption signal is only sent to running workers).
 *
 * Still to come (the safepoints issue): rebuilding on dlopen/dlclose,
 * GREEN_UNSAFE and GREEN_NOPREEMPT functions, the libunwind walk of the
 * interrupted frames, and finding libgreen's own code in a static link (the
 * table knows libgreen only as a shared object; statically linked, its code
 * is part of the program and only the scheduler itself is protected).
 */
#include "safepoints.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct range {
    uintptr_t lo, hi;
    enum green__sp_kind kind;
};

struct table {
    size_t n, cap;
    struct range r[];
};

static _Atomic(struct table *) current;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned users;

static const char *const unsafe_prefixes[] = {
    "libc.so", "ld-linux", "linux-vdso", "libpthread.so", "libdl.so", "librt.so",
    "libgcc_s.so", "libunwind", "libstdc++.so", "libasan.so", "libubsan.so",
    "liblsan.so", "libtsan.so", "libgreen.so",
};

static bool unsafe_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < sizeof unsafe_prefixes / sizeof unsafe_prefixes[0]; i++)
        if (strncmp(base, unsafe_prefixes[i], strlen(unsafe_prefixes[i])) == 0)
            return true;
    return false;
}

struct build {
    struct table *t;
    bool failed;
    uintptr_t self;                  /* an address inside libgreen */
};

static bool contains(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz)
            return true;
    }
    return false;
}

static int add_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct build *b = arg;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    bool main_program = name[0] == '\0' && !contains(info, (uintptr_t)&add_object);
    bool is_self = contains(info, b->self);
    /* Statically linked, libgreen is inside the program: do not mark the
     * whole program unsafe. */
    if (main_program || !(unsafe_name(name) || (is_self && name[0] != '\0')))
        return 0;
    enum green__sp_kind kind = is_self ? GREEN_SP_RUNTIME : GREEN_SP_UNSAFE;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        struct table *t = b->t;
        if (t->n == t->cap) {
            size_t cap = t->cap * 2;
            struct table *bigger = realloc(t, sizeof *t + cap * sizeof t->r[0]);
            if (!bigger) {
                b->failed = true;
                return 1;
            }
            bigger->cap = cap;
            b->t = t = bigger;
        }
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        t->r[t->n++] = (struct range){ lo, lo + ph->p_memsz, kind };
    }
    return 0;
}

static int by_lo(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static struct table *build(void)
{
    struct build b = { malloc(sizeof *b.t + 16 * sizeof b.t->r[0]), false,
                       (uintptr_t)&green__sp_classify };
    if (!b.t)
        return NULL;
    b.t->n = 0;
    b.t->cap = 16;
    dl_iterate_phdr(add_object, &b);
    if (b.failed) {
        free(b.t);
        return NULL;
    }
    qsort(b.t->r, b.t->n, sizeof b.t->r[0], by_lo);
    size_t k = 0;
    for (size_t i = 0; i < b.t->n; i++) {
        if (k && b.t->r[i].lo <= b.t->r[k - 1].hi && b.t->r[i].kind == b.t->r[k - 1].kind) {
            if (b.t->r[i].hi > b.t->r[k - 1].hi)
                b.t->r[k - 1].hi = b.t->r[i].hi;
        } else {
            b.t->r[k++] = b.t->r[i];
        }
    }
    b.t->n = k;
    return b.t;
}

bool green__sp_knows_runtime(void)
{
    const struct table *t = atomic_load_explicit(&current, memory_order_acquire);
    for (size_t i = 0; t && i < t->n; i++)
        if (t->r[i].kind == GREEN_SP_RUNTIME)
            return true;
    return false;
}

int green__sp_acquire(void)
{
    int err = 0;
    pthread_mutex_lock(&lock);
    if (users == 0) {
        struct table *t = build();
        if (t)
            atomic_store_explicit(&current, t, memory_order_release);
        else
            err = ENOMEM;
    }
    if (!err)
        users++;
    pthread_mutex_unlock(&lock);
    return err;
}

void green__sp_release(void)
{
    pthread_mutex_lock(&lock);
    if (--users == 0)
        free(atomic_exchange_explicit(&current, NULL, memory_order_acq_rel));
    pthread_mutex_unlock(&lock);
}

/* AS-safe */
enum green__sp_kind green__sp_classify(uintptr_t pc)
{
    const struct table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return GREEN_SP_UNSAFE;
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pc < t->r[mid].lo)
            hi = mid;
        else if (pc >= t->r[mid].hi)
            lo = mid + 1;
        else
            return t->r[mid].kind;
    }
    return GREEN_SP_SAFE;
}
