/*
 * Building a safepoint table from the loaded objects.
 *
 * A build lists the loaded objects (dl_iterate_phdr), asks classify.c what
 * each one is and elf.c which sections it has, and paints the table from
 * spans in four levels, a higher level winning where spans overlap:
 *
 *   object    every PT_LOAD segment with PF_X of every loaded object
 *             (dl_iterate_phdr): preemptible if owned (classify.c), unsafe
 *             otherwise.  The objects of the system's runtime stay unsafe
 *             even when named preemptible.
 *   section   the section green_nopreempt of an owned object (GREEN_NOPREEMPT
 *             functions) and the section green_runtime of any object
 *             (libgreen-budget's hooks), read from the object's file (elf.c)
 *   user      ranges added with green_code_range_add
 *   runtime   libgreen: its whole object when shared, its green_runtime
 *             section when linked statically
 *
 * Within one level the stricter kind wins.  Beside the ranges, the table
 * gets the functions whose frames are never hooked (classify.c names them),
 * found in every loaded object that defines them.
 *
 * A build only makes a table: refresh.c decides when to build, under its
 * lock and outside any handler, and publishes the result (table.c).
 */
#include "table.h"

#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Does one of the object's loaded segments hold addr? */
static bool object_holds(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz)
            return true;
    }
    return false;
}

/* dl_iterate_phdr's callback: copy one object into b -- its path, what it
 * is (classify.c) and its executable segments -- and the loader's counts. */
static int copy_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct build *b = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        b->adds = info->dlpi_adds;
        b->subs = info->dlpi_subs;
    }
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    bool self = object_holds(info, (uintptr_t)&green__sp_lookup);
    if (!green__sp_grow(&b->obj, &b->capobj, b->nobj + 1, sizeof *b->obj)) {
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
                          .kind = green__sp_object_kind(program ? b->exe : name, program),
                          .flags = green__sp_object_walkable(name) ? 0 : NOWALK,
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
        if (!green__sp_grow(&b->segs, &b->capseg, b->nseg + 1, sizeof *b->segs)) {
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
    if (!green__sp_grow(&b->spans, &b->capspan, b->nspan + 1, sizeof *b->spans)) {
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

/* Requires: lock held.  o's spans: its segments at the object level (the
 * runtime level for libgreen), and its sections. */
static void add_object_spans(struct build *b, const struct object *o)
{
    enum green_code kind = o->self ? GREEN_CODE_RUNTIME : o->kind;
    for (size_t i = o->first_seg; i < o->first_seg + o->nseg; i++)
        span_add(b, b->segs[i].lo, b->segs[i].hi, o->self ? LV_RUNTIME : LV_OBJECT, kind,
                 o->flags);
    /* libgreen needs no sections; the vdso has no file. */
    if (o->self || !o->path)
        return;
    const struct green__sp_sections *s = green__sp_sections_of(o->base, o->path);
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

/* Append [lo, hi) to t's ranges, or extend the last one if it ends at lo
 * and is alike. */
static void extend_or_append(struct green__sp_table *t, uintptr_t lo, uintptr_t hi,
                             enum green_code kind, uint8_t flags)
{
    struct range *last = t->n ? &t->r[t->n - 1] : NULL;
    if (last && last->hi == lo && last->kind == kind && last->flags == flags)
        last->hi = hi;
    else
        t->r[t->n++] = (struct range){ lo, hi, (uint8_t)kind, flags };
}

/* Paint the spans into disjoint ranges of a new table: a sweep over their
 * ends.  The kind comes from the highest level present; a flag from any
 * span.  The functions never hooked follow the ranges. */
static struct green__sp_table *paint_table(const struct build *b)
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
            extend_or_append(t, ev[i - 1].at, at, (enum green_code)cur, nowalk ? NOWALK : 0);
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

/* Requires: lock held.  The functions whose frames are never hooked, in
 * every loaded object that defines them. */
static void add_never_hooked_functions(struct build *b)
{
    for (size_t i = 0; i < b->nobj && !b->failed; i++) {
        const char *path = b->obj[i].path;
        void *h = path && i > 0 ? dlopen(path, RTLD_LAZY | RTLD_NOLOAD) : NULL;
        for (size_t k = 0; h && k < green__sp_nnever_hooked; k++) {
            void *fn = dlsym(h, green__sp_never_hooked[k]);
            Dl_info info;
            const ElfW(Sym) *sym = NULL;
            if (!fn || !dladdr1(fn, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym ||
                !sym->st_size)
                continue;
            if (!green__sp_grow(&b->fns, &b->capfn, b->nfn + 1, sizeof *b->fns)) {
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

/* Requires: lock held. */
struct green__sp_table *green__sp_table_build(const struct green__sp_user_range *ur, size_t nur,
                                              unsigned long long counts[2])
{
    struct build b = { 0 };
    ssize_t n = readlink("/proc/self/exe", b.exe, sizeof b.exe - 1);
    b.exe[n > 0 ? n : 0] = '\0';
    dl_iterate_phdr(copy_object, &b);
    for (size_t i = 0; i < b.nobj && !b.failed; i++)
        add_object_spans(&b, &b.obj[i]);
    add_never_hooked_functions(&b);
    for (size_t i = 0; i < nur && !b.failed; i++)
        span_add(&b, ur[i].lo, ur[i].hi, LV_USER, ur[i].kind, 0);
    struct green__sp_table *t = b.failed ? NULL : paint_table(&b);
    build_free(&b);
    if (!t)
        return NULL;
    green__sp_sections_forget_unseen();
    counts[0] = b.adds;
    counts[1] = b.subs;
    return t;
}
