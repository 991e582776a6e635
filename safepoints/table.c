/*
 * The safepoint table: which code a preemption signal may interrupt.
 *
 * The rule: preempt only code the program owns.  Owned code is the main
 * executable, the objects the user names (GREEN_PREEMPTIBLE, the config's
 * preemptible_objects) and ranges added with green_code_range_add.  Every
 * other object -- libc, ld.so, the vdso, libstdc++, every third-party
 * library -- may hold a lock or per-OS-thread state (jemalloc's thread
 * caches, OpenSSL's and SQLite's pthread mutexes, a stdio FILE lock) that
 * another green thread on the same worker would need, so it is never
 * interrupted: a preemption refused there is taken on the way out (walk.c,
 * signals/hijack.c).  GREEN_UNSAFE takes objects back out of what is owned.
 *
 * The table is a sorted array of disjoint executable address ranges, each
 * of one kind (enum green_code).  It is painted from spans in four levels,
 * a higher level winning where spans overlap:
 *
 *   object    every PT_LOAD segment with PF_X of every loaded object
 *             (dl_iterate_phdr): preemptible if owned (above), unsafe
 *             otherwise.  The objects of the system's runtime (libc, ld.so,
 *             the vdso, libgcc_s, libunwind, libstdc++, the sanitizers) stay
 *             unsafe even when named preemptible.
 *   section   the section green_nopreempt of an owned object (GREEN_NOPREEMPT
 *             functions) and the section green_runtime of any object
 *             (libgreen-budget's hooks), read from the object's file (elf.c)
 *   user      ranges added with green_code_range_add
 *   runtime   libgreen: its whole object when shared, its green_runtime
 *             section when linked statically
 *
 * An address in no range is unknown -- code loaded since the table was
 * built, or generated at run time -- and the handler treats it as unsafe:
 * a library dlopen'ed a moment ago is never preempted before the table
 * knows what it is.  Handlers that meet unknown code hint the monitor,
 * which rebuilds at once if the loader's counters moved.
 *
 * Walking and hooking.  Besides the kind, a range says whether the handler
 * may walk the stack from a PC inside it (green__sp_may_walk): not from
 * ld.so, which may be changing the list of loaded objects that libunwind's
 * lookups read, nor from libunwind, whose per-thread cache the walk would
 * re-enter, nor from unknown code, which has no unwind information.  And
 * whether a frame of that code may have its return hooked
 * (green__sp_may_hook): not the functions that read their own return
 * address as data -- setjmp and getcontext save it, dlopen and dlsym ask
 * whose code called them -- nor those that return twice or in another
 * process -- fork, vfork, clone, daemon: the child would return through the
 * hook and switch to another green thread.  They are found by name in every
 * object that defines them (the first definition may be a sanitizer's
 * interceptor, which calls libc's).
 *
 * Publication and reclamation.  A build happens under `lock`, outside any
 * handler, and is published by an atomic swap of `current`; the old table
 * goes on a retired list.  Readers (handlers, green_code_kind) bracket
 * their use: readers++, load current, ..., readers--, all seq_cst.  A
 * retired table is freed once `readers` is seen at zero after it was
 * swapped out: a reader that started before the swap has finished, and one
 * that starts after it loads the new table.
 *
 * Rebuilding.  glibc counts loads and unloads (dlpi_adds, dlpi_subs); the
 * monitor compares them with the build's at most once a millisecond, or at
 * once after a hint.  A user range rebuilds in the call that adds it.
 *
 * Rejected: interposing dlopen/dlclose (libgreen exports only green_*
 * names) and LD_AUDIT (a user's environment choice, not a library's);
 * preempting every object but a list of known offenders (the rule before
 * this one): jemalloc preloaded hung 3 runs of 3, OpenSSL under libcurl
 * crashed, and the list can never be complete.
 * Known gap: an object unloaded and another loaded at the same address
 * between two looks of the monitor is classified as the old one for up to
 * a millisecond.
 */
#include "safepoints.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Readers: any thread, lock-free.  Everything else: under `lock`. */
static _Atomic(struct green__sp_table *) current;
static _Atomic unsigned readers;
static atomic_bool stale_hint;

static _Atomic uint64_t last_check_ns; /* any monitor; written under lock */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct green__sp_table *retired;
static unsigned long long built_adds, built_subs;

/* green_code_range_add's ranges: disjoint. */
struct user_range {
    uintptr_t lo, hi;
    enum green_code kind;
};
static struct user_range *uranges;
static size_t nuranges, capuranges;

/* GREEN_UNSAFE and GREEN_PREEMPTIBLE names of the runs that preempt,
 * counted. */
struct name {
    char *s;
    unsigned refs;
    bool preemptible;                /* GREEN_PREEMPTIBLE, else GREEN_UNSAFE */
};
static struct name *names;
static size_t nnames, capnames;

/* Sections found in objects' files, by (bias, path); kept while loaded. */
struct objsec {
    uintptr_t base;
    char *path;
    struct green__sp_sections s;
    bool seen;
};
static struct objsec *cache;
static size_t ncache, capcache;

/* Grow *v (of *cap elements of size sz) to hold n; false if out of memory. */
static bool grow(void *v, size_t *cap, size_t n, size_t sz)
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
static const struct range *find(const struct range *r, size_t n, uintptr_t pc)
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
    const struct range *r = t ? find(t->r, t->n, pc) : NULL;
    return r ? (enum green_code)r->kind : GREEN_CODE_UNKNOWN;
}

/* AS-safe */
bool green__sp_may_walk(const struct green__sp_table *t, uintptr_t pc)
{
    const struct range *r = t ? find(t->r, t->n, pc) : NULL;
    return r && !(r->flags & NOWALK);
}

/* AS-safe */
bool green__sp_may_hook(const struct green__sp_table *t, uintptr_t pc)
{
    return t && find(t->r, t->n, pc) && !find(t->r + t->n, t->nfn, pc);
}

/* AS-safe */
void green__sp_hint_stale(void) { atomic_store_explicit(&stale_hint, true, memory_order_relaxed); }

bool green__sp_knows_runtime(void)
{
    const struct green__sp_table *t = green__sp_enter();
    bool knows = t && t->knows_runtime;
    green__sp_exit();
    return knows;
}

/* ---- Which objects are owned -------------------------------------------- */

/* The system's runtime: never preemptible, whatever GREEN_PREEMPTIBLE says. */
static const char *const system_runtime[] = {
    "libc.so", "ld-linux", "linux-vdso", "libpthread.so", "libdl.so", "librt.so",
    "libgcc_s.so", "libunwind", "libstdc++.so", "libasan.so", "libubsan.so",
    "liblsan.so", "libtsan.so",
};

/* Objects the handler must not walk from, and functions whose frames must
 * not be hooked (see the top of this file). */
static const char *const no_walk[] = { "ld-linux", "libunwind" };
static const char *const no_hook[] = {
    "setjmp", "_setjmp", "__sigsetjmp", "getcontext", "swapcontext",
    "fork", "_Fork", "__fork", "vfork", "__vfork", "clone", "__clone", "daemon",
    "dlopen", "dlmopen", "dlsym", "dlvsym",
};

/* A name with a '/' is a whole path; without, it matches a file name that
 * starts with it and goes on with nothing, '.' or '-' ("libfoo.so" matches
 * libfoo.so.1; "libm" matches libm.so.6, not libmagic.so). */
static bool name_matches(const char *path, const char *name, size_t len)
{
    if (memchr(name, '/', len))
        return strlen(path) == len && memcmp(path, name, len) == 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, name, len) == 0 &&
           (base[len] == '\0' || base[len] == '.' || base[len] == '-');
}

static bool in_list(const char *path, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (name_matches(path, list[i], strlen(list[i])))
            return true;
    return false;
}

/* Requires: lock held.  Is path named in the runs' lists of that kind? */
static bool named(const char *path, bool preemptible)
{
    for (size_t i = 0; i < nnames; i++)
        if (names[i].preemptible == preemptible &&
            name_matches(path, names[i].s, strlen(names[i].s)))
            return true;
    return false;
}

/* Either way round: "libc" names libc.so.6 as surely as "libc.so.6" does. */
bool green__sp_system_object(const char *name)
{
    size_t n = sizeof system_runtime / sizeof system_runtime[0];
    for (size_t i = 0; i < n; i++)
        if (name_matches(system_runtime[i], name, strlen(name)))
            return true;
    return in_list(name, system_runtime, n);
}

/* Requires: lock held.  The kind of a whole object other than libgreen;
 * path is its file ("/proc/self/exe" resolved for the program). */
static enum green_code object_kind(const char *path, bool program)
{
    if (green__sp_system_object(path) || named(path, false))
        return GREEN_CODE_UNSAFE;
    return program || named(path, true) ? GREEN_CODE_PREEMPTIBLE : GREEN_CODE_UNSAFE;
}

/* ---- Building ----------------------------------------------------------- */

enum level { LV_OBJECT, LV_SECTION, LV_USER, LV_RUNTIME, NLEVELS };

struct span {
    uintptr_t lo, hi;
    uint8_t level, kind, flags;
};

/* What dl_iterate_phdr reported, copied out so that files are read after
 * the loader's lock is released. */
struct object {
    uintptr_t base;
    char *path;                      /* NULL: no file (the vdso) */
    bool self;                       /* libgreen */
    uint8_t flags;                   /* of the whole object */
    enum green_code kind;            /* of the whole object, unless self */
    size_t first_seg, nseg;          /* into build.segs */
};

struct build {
    char exe[4096];                  /* the program's file */
    struct object *obj;
    size_t nobj, capobj;
    struct span *segs;               /* executable segments, kind unset */
    size_t nseg, capseg;
    struct span *spans;
    size_t nspan, capspan;
    struct span *fns;                /* functions never hooked */
    size_t nfn, capfn;
    bool failed;
    unsigned long long adds, subs;
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

static int collect(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct build *b = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        b->adds = info->dlpi_adds;
        b->subs = info->dlpi_subs;
    }
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    bool self = contains(info, (uintptr_t)&green__sp_lookup);
    if (!grow(&b->obj, &b->capobj, b->nobj + 1, sizeof *b->obj)) {
        b->failed = true;
        return 1;
    }
    struct object *o = &b->obj[b->nobj];
    /* The main program comes first, named "": its file is /proc/self/exe,
     * and its names (for GREEN_UNSAFE) are those of the file that link
     * points to.  The vdso has a name but no file. */
    bool program = b->nobj == 0 && name[0] == '\0';
    const char *path = program ? "/proc/self/exe" : strchr(name, '/') ? name : NULL;
    *o = (struct object){ .base = info->dlpi_addr, .self = self && name[0] != '\0',
                          .kind = object_kind(program ? b->exe : name, program),
                          .flags = in_list(name, no_walk, sizeof no_walk / sizeof no_walk[0])
                                       ? NOWALK
                                       : 0,
                          .first_seg = b->nseg };
    if (path && !(o->path = strdup(path))) {
        b->failed = true;
        return 1;
    }
    b->nobj++;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        if (!grow(&b->segs, &b->capseg, b->nseg + 1, sizeof *b->segs)) {
            b->failed = true;
            return 1;
        }
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        b->segs[b->nseg++] = (struct span){ lo, lo + ph->p_memsz, 0, 0, 0 };
        o->nseg++;
    }
    return 0;
}

static void span_add(struct build *b, uintptr_t lo, uintptr_t hi, enum level lv,
                     enum green_code kind, uint8_t flags)
{
    if (lo >= hi)
        return;
    if (!grow(&b->spans, &b->capspan, b->nspan + 1, sizeof *b->spans)) {
        b->failed = true;
        return;
    }
    b->spans[b->nspan++] = (struct span){ lo, hi, (uint8_t)lv, (uint8_t)kind, flags };
}

/* Is [lo, hi) inside one of o's executable segments? */
static bool in_object(const struct build *b, const struct object *o, uintptr_t lo, uintptr_t hi)
{
    for (size_t i = o->first_seg; i < o->first_seg + o->nseg; i++)
        if (lo >= b->segs[i].lo && hi <= b->segs[i].hi)
            return true;
    return false;
}

/* Requires: lock held.  o's sections, from the cache or its file. */
static const struct green__sp_sections *sections_of(const struct object *o)
{
    for (size_t i = 0; i < ncache; i++)
        if (cache[i].base == o->base && strcmp(cache[i].path, o->path) == 0) {
            cache[i].seen = true;
            return &cache[i].s;
        }
    char *path = strdup(o->path);
    if (!path || !grow(&cache, &capcache, ncache + 1, sizeof *cache)) {
        free(path);
        return NULL;
    }
    struct objsec *c = &cache[ncache++];
    *c = (struct objsec){ .base = o->base, .path = path, .seen = true };
    /* An unreadable file has no sections we can know of. */
    green__sp_elf_sections(path, o->base, &c->s);
    return &c->s;
}

/* Requires: lock held.  Forget the sections of objects no longer loaded. */
static void cache_sweep(void)
{
    size_t k = 0;
    for (size_t i = 0; i < ncache; i++) {
        if (cache[i].seen) {
            cache[i].seen = false;
            cache[k++] = cache[i];
        } else {
            free(cache[i].path);
        }
    }
    ncache = k;
}

/* Requires: lock held. */
static void add_object_spans(struct build *b, const struct object *o)
{
    enum green_code kind = o->self ? GREEN_CODE_RUNTIME : o->kind;
    for (size_t i = o->first_seg; i < o->first_seg + o->nseg; i++)
        span_add(b, b->segs[i].lo, b->segs[i].hi, o->self ? LV_RUNTIME : LV_OBJECT, kind,
                 o->flags);
    /* libgreen needs no sections; the vdso has no file. */
    if (o->self || !o->path)
        return;
    const struct green__sp_sections *s = sections_of(o);
    if (!s)
        return;
    if (kind == GREEN_CODE_PREEMPTIBLE && in_object(b, o, s->nopreempt_lo, s->nopreempt_hi))
        span_add(b, s->nopreempt_lo, s->nopreempt_hi, LV_SECTION, GREEN_CODE_NOPREEMPT, 0);
    if (in_object(b, o, s->runtime_lo, s->runtime_hi))
        span_add(b, s->runtime_lo, s->runtime_hi, LV_RUNTIME, GREEN_CODE_RUNTIME, 0);
}

/* Where spans of one level overlap, the stricter kind wins. */
static int strictness(enum green_code k)
{
    switch (k) {
    case GREEN_CODE_PREEMPTIBLE: return 0;
    case GREEN_CODE_NOPREEMPT: return 1;
    case GREEN_CODE_UNSAFE: return 2;
    default: return 3;
    }
}

struct event {
    uintptr_t at;
    int delta;
    uint8_t level, kind, flags;
};

static int by_lo(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int by_at(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

static void emit(struct green__sp_table *t, uintptr_t lo, uintptr_t hi, enum green_code kind,
                 uint8_t flags)
{
    struct range *last = t->n ? &t->r[t->n - 1] : NULL;
    if (last && last->hi == lo && last->kind == kind && last->flags == flags)
        last->hi = hi;
    else
        t->r[t->n++] = (struct range){ lo, hi, (uint8_t)kind, flags };
}

/* Paint the spans into disjoint ranges: a sweep over their ends.  The
 * kind comes from the highest level present; a flag from any span. */
static struct green__sp_table *paint(const struct build *b)
{
    size_t ne = 2 * b->nspan;
    struct event *ev = malloc((ne ? ne : 1) * sizeof *ev);
    struct green__sp_table *t = malloc(sizeof *t + (ne + b->nfn + 1) * sizeof t->r[0]);
    if (!ev || !t) {
        free(ev);
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < b->nspan; i++) {
        const struct span *s = &b->spans[i];
        ev[2 * i] = (struct event){ s->lo, 1, s->level, s->kind, s->flags };
        ev[2 * i + 1] = (struct event){ s->hi, -1, s->level, s->kind, s->flags };
    }
    qsort(ev, ne, sizeof *ev, by_at);
    t->retired_next = NULL;
    t->knows_runtime = false;
    t->n = 0;
    unsigned active[NLEVELS][GREEN_CODE_RUNTIME + 1] = { { 0 } };
    unsigned nowalk = 0;             /* active spans that forbid walking */
    int cur = -1;                    /* kind painted from ev[i-1].at, or none */
    for (size_t i = 0; i < ne;) {
        uintptr_t at = ev[i].at;
        if (cur >= 0 && i > 0 && at > ev[i - 1].at)
            emit(t, ev[i - 1].at, at, (enum green_code)cur, nowalk ? NOWALK : 0);
        for (; i < ne && ev[i].at == at; i++) {
            active[ev[i].level][ev[i].kind] += (unsigned)ev[i].delta;
            nowalk += ev[i].flags & NOWALK ? (unsigned)ev[i].delta : 0;
        }
        cur = -1;
        for (int lv = NLEVELS - 1; lv >= 0 && cur < 0; lv--)
            for (int k = 0; k <= GREEN_CODE_RUNTIME; k++)
                if (active[lv][k] && (cur < 0 || strictness(k) > strictness(cur)))
                    cur = k;
    }
    for (size_t i = 0; i < t->n; i++)
        t->knows_runtime |= t->r[i].kind == GREEN_CODE_RUNTIME;
    /* The functions never hooked, sorted, the same one met through several
     * objects' dependencies kept once. */
    struct range *fn = t->r + t->n;
    t->nfn = 0;
    for (size_t i = 0; i < b->nfn; i++)
        fn[t->nfn++] = (struct range){ b->fns[i].lo, b->fns[i].hi, 0, 0 };
    qsort(fn, t->nfn, sizeof *fn, by_lo);
    size_t k = 0;
    for (size_t i = 0; i < t->nfn; i++)
        if (k == 0 || fn[i].lo >= fn[k - 1].hi)
            fn[k++] = fn[i];
    t->nfn = k;
    free(ev);
    return t;
}

static void build_free(struct build *b)
{
    free(b->fns);
    for (size_t i = 0; i < b->nobj; i++)
        free(b->obj[i].path);
    free(b->obj);
    free(b->segs);
    free(b->spans);
}

/* Requires: lock held.  Free the retired tables no reader can hold. */
static void reclaim(void)
{
    if (retired && atomic_load(&readers) == 0) {
        while (retired) {
            struct green__sp_table *next = retired->retired_next;
            free(retired);
            retired = next;
        }
    }
}

/* Requires: lock held.  The functions whose frames are never hooked, in
 * every loaded object that defines them. */
static void add_nohook_spans(struct build *b)
{
    for (size_t i = 0; i < b->nobj && !b->failed; i++) {
        const char *path = b->obj[i].path;
        void *h = path && i > 0 ? dlopen(path, RTLD_LAZY | RTLD_NOLOAD) : NULL;
        for (size_t k = 0; h && k < sizeof no_hook / sizeof no_hook[0]; k++) {
            void *fn = dlsym(h, no_hook[k]);
            Dl_info info;
            const ElfW(Sym) *sym = NULL;
            if (!fn || !dladdr1(fn, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym ||
                !sym->st_size)
                continue;
            if (!grow(&b->fns, &b->capfn, b->nfn + 1, sizeof *b->fns)) {
                b->failed = true;
                break;
            }
            b->fns[b->nfn++] = (struct span){ (uintptr_t)fn, (uintptr_t)fn + sym->st_size,
                                              0, 0, 0 };
        }
        if (h)
            dlclose(h);
    }
}

/* Requires: lock held.  Build and publish a new table: 0 or ENOMEM. */
static int rebuild(void)
{
    struct build b = { 0 };
    ssize_t n = readlink("/proc/self/exe", b.exe, sizeof b.exe - 1);
    b.exe[n > 0 ? n : 0] = '\0';
    dl_iterate_phdr(collect, &b);
    for (size_t i = 0; i < b.nobj && !b.failed; i++)
        add_object_spans(&b, &b.obj[i]);
    add_nohook_spans(&b);
    for (size_t i = 0; i < nuranges && !b.failed; i++)
        span_add(&b, uranges[i].lo, uranges[i].hi, LV_USER, uranges[i].kind, 0);
    struct green__sp_table *t = b.failed ? NULL : paint(&b);
    build_free(&b);
    if (!t)
        return ENOMEM;
    cache_sweep();
    built_adds = b.adds;
    built_subs = b.subs;
    struct green__sp_table *old = atomic_exchange(&current, t);
    if (old) {
        old->retired_next = retired;
        retired = old;
    }
    green__sp_walk_flush();
    reclaim();
    return 0;
}

/* ---- Keeping it current ------------------------------------------------- */

static int read_counts(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *c = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        c[0] = info->dlpi_adds;
        c[1] = info->dlpi_subs;
    }
    return 1;                        /* the first object is enough */
}

/* Requires: lock held. */
static int refresh_locked(bool force)
{
    unsigned long long c[2] = { 0, 0 };
    dl_iterate_phdr(read_counts, c);
    if (!force && atomic_load(&current) && c[0] == built_adds && c[1] == built_subs)
        return 0;
    return rebuild();
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
    refresh_locked(false);
    reclaim();
    pthread_mutex_unlock(&lock);
}

/* ---- Runs --------------------------------------------------------------- */

/* Requires: lock held.  Apply d (+1 / -1) to the count of each name of
 * that kind in the ':'-separated list; true if a name came or went.  On
 * ENOMEM (*err), *done is how much of the list was applied. */
static bool names_adjust(const char *list, bool preemptible, int d, int *err, size_t *done)
{
    bool changed = false;
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t i = 0;
        while (i < nnames && !(names[i].preemptible == preemptible &&
                               strlen(names[i].s) == len && memcmp(names[i].s, p, len) == 0))
            i++;
        if (len && d > 0 && i == nnames) {
            char *s = strndup(p, len);
            if (!s || !grow(&names, &capnames, nnames + 1, sizeof *names)) {
                free(s);
                *err = ENOMEM;
                *done = (size_t)(p - list);
                return changed;
            }
            names[nnames++] = (struct name){ s, 1, preemptible };
            changed = true;
        } else if (len && i < nnames) {
            names[i].refs += (unsigned)d;
            if (names[i].refs == 0) {
                free(names[i].s);
                names[i] = names[--nnames];
                changed = true;
            }
        }
        p = end ? end + 1 : p + len;
    }
    return changed;
}

/* Requires: lock held.  Count the names of one list in (d = 1), or out. */
static bool names_apply(const char *list, bool preemptible, int d, int *err)
{
    size_t done = 0;
    bool changed = names_adjust(list, preemptible, d, err, &done);
    if (*err && done) {
        /* Take back what the failed call counted in. */
        char *prefix = strndup(list, done);
        if (prefix)
            names_adjust(prefix, preemptible, -d, &(int){ 0 }, &(size_t){ 0 });
        free(prefix);
    }
    return changed;
}

int green__sp_acquire(const char *unsafe, const char *preemptible)
{
    int err = 0;
    pthread_mutex_lock(&lock);
    bool changed = names_apply(unsafe, false, 1, &err);
    if (!err) {
        changed |= names_apply(preemptible, true, 1, &err);
        if (err)
            names_apply(unsafe, false, -1, &(int){ 0 });
    }
    if (!err && (err = refresh_locked(changed)) != 0) {
        names_apply(unsafe, false, -1, &(int){ 0 });
        names_apply(preemptible, true, -1, &(int){ 0 });
    }
    pthread_mutex_unlock(&lock);
    return err;
}

void green__sp_release(const char *unsafe, const char *preemptible)
{
    pthread_mutex_lock(&lock);
    bool changed = names_apply(unsafe, false, -1, &(int){ 0 });
    changed |= names_apply(preemptible, true, -1, &(int){ 0 });
    if (changed)
        refresh_locked(true);
    reclaim();
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
    if (!err && !grow(&uranges, &capuranges, nuranges + 1, sizeof *uranges))
        err = ENOMEM;
    if (!err) {
        uranges[nuranges++] = (struct user_range){ lo, hi, (enum green_code)kind };
        if ((err = rebuild()) != 0)
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
            struct user_range gone = uranges[i];
            uranges[i] = uranges[--nuranges];
            if ((err = rebuild()) != 0)
                uranges[nuranges++] = gone;   /* still in force */
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return err;
}

int green_code_kind(const void *pc)
{
    if (!atomic_load(&current)) {
        pthread_mutex_lock(&lock);
        if (!atomic_load(&current))
            rebuild();
        pthread_mutex_unlock(&lock);
    }
    const struct green__sp_table *t = green__sp_enter();
    enum green_code kind = green__sp_lookup(t, (uintptr_t)pc);
    green__sp_exit();
    return (int)kind;
}
