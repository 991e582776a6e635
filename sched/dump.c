/*
 * Thread dumps (green_dump, GREEN_DUMP_SIGNAL): every green thread of every
 * run, listed while the program runs.
 *
 * Stopping the world.  A run's threads are listed with its workers stopped.
 * The dump sets rt->stw, wakes the idle workers and waits, 200 ms at most,
 * until each has come to a scheduling decision -- a switch, a preemption,
 * its loop -- where green__pick sends it to its scheduler loop, which waits
 * while stw stays set (loop.c).  A worker that does not come runs a thread
 * that neither switches nor can be preempted (a system call libgreen does
 * not wrap, code it may not interrupt, preemption off): the dump names it,
 * lists every thread all the same from the control blocks, and unwinds no
 * stack -- that worker could switch to any of them meanwhile.  A dump made
 * by a green thread counts its own worker as stopped, and shows its own
 * stack as it is.
 *
 * A switched-out thread's stack is unwound by libunwind from the context
 * green__ctx_switch saved on it (switch_x86_64.S: the control words, r15 to
 * rbx, rbp, the return address), and each frame is named from its object's
 * symbol table, once per PC and dump.
 *
 * The process's runs are in one list (green__runs_add and _remove, from
 * run.c), locked for a dump's length: a run cannot end and free its state
 * meanwhile.
 *
 * GREEN_DUMP_SIGNAL's handler and thread are in dump_signal.c.
 */
#define UNW_LOCAL_ONLY
#include "foreign.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>

#define STW_WAIT_NS 200000000u
#define DUMP_FRAMES 64

static pthread_mutex_t runs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct green__rt *runs;

void green__runs_add(struct green__rt *rt)
{
    green__os_mutex_lock(&runs_lock);
    rt->runs_next = runs;
    runs = rt;
    green__os_mutex_unlock(&runs_lock);
}

void green__runs_remove(struct green__rt *rt)
{
    green__os_mutex_lock(&runs_lock);
    for (struct green__rt **pp = &runs; *pp; pp = &(*pp)->runs_next)
        if (*pp == rt) {
            *pp = rt->runs_next;
            break;
        }
    green__os_mutex_unlock(&runs_lock);
}

/* ---- Output ------------------------------------------------------------- */

struct out {
    int fd, err;
    size_t n;
    char buf[16384];
};

static void out_flush(struct out *o)
{
    size_t done = 0;
    while (done < o->n && !o->err) {
        ssize_t k = write(o->fd, o->buf + done, o->n - done);
        if (k > 0)
            done += (size_t)k;
        else if (k < 0 && errno != EINTR)
            o->err = errno;
        else if (k == 0)
            o->err = EIO;
    }
    o->n = 0;
}

static __attribute__((format(printf, 2, 3))) void outf(struct out *o, const char *fmt, ...)
{
    for (int tries = 0; tries < 2; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(o->buf + o->n, sizeof o->buf - o->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < sizeof o->buf - o->n) {
            o->n += (size_t)k;
            return;
        }
        out_flush(o);                /* then once more, into an empty buffer */
    }
}

/* ---- Frame names, once per PC ------------------------------------------- */

struct sym {
    uintptr_t pc, off;
    char name[96];
    char obj[48];
};

struct syms {
    struct sym *v;
    size_t cap, n;
};

static const struct sym *sym_of(struct syms *s, unw_cursor_t *c, uintptr_t pc)
{
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        struct sym *v = calloc(cap, sizeof *v);
        if (!v)
            return NULL;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->v[i].pc)
                continue;
            size_t j = (s->v[i].pc * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
            while (v[j].pc)
                j = (j + 1) & (cap - 1);
            v[j] = s->v[i];
        }
        free(s->v);
        s->v = v;
        s->cap = cap;
    }
    size_t j = (pc * 0x9e3779b97f4a7c15ull >> 20) & (s->cap - 1);
    while (s->v[j].pc && s->v[j].pc != pc)
        j = (j + 1) & (s->cap - 1);
    struct sym *e = &s->v[j];
    if (e->pc)
        return e;
    e->pc = pc;
    s->n++;
    unw_word_t off = 0;
    if (unw_get_proc_name(c, e->name, sizeof e->name, &off) != 0 && !e->name[0])
        snprintf(e->name, sizeof e->name, "?");
    e->off = off;
    Dl_info di;
    if (dladdr((void *)pc, &di) && di.dli_fname) {
        /* The executable's name is its argv[0], which a program may have
         * rewritten (Criterion's workers say boxfort-worker). */
        char exe[256];
        const char *f = di.dli_fname;
        ssize_t k;
        if (strcmp(f, program_invocation_name) == 0 &&
            (k = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
            exe[k] = '\0';
            f = exe;
        }
        const char *base = strrchr(f, '/');
        base = base ? base + 1 : f;
        size_t n = strnlen(base, sizeof e->obj - 1);
        memcpy(e->obj, base, n);
        e->obj[n] = '\0';
    }
    return e;
}

/* The name of any code address (a spawn site). */
static const struct sym *sym_of_pc(struct syms *s, uintptr_t pc)
{
    unw_context_t uc;
    unw_cursor_t c;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    uc.uc_mcontext.gregs[REG_RSP] = (greg_t)(uintptr_t)&uc;
    return unw_init_local(&c, &uc) == 0 ? sym_of(s, &c, pc) : NULL;
}

static void print_frames(struct out *o, struct syms *s, unw_cursor_t *c)
{
    for (int i = 0; i < DUMP_FRAMES; i++) {
        unw_word_t pc;
        if (unw_get_reg(c, UNW_REG_IP, &pc) < 0 || pc == 0)
            break;
        const struct sym *e = sym_of(s, c, (uintptr_t)pc);
        if (e)
            outf(o, "    #%d 0x%lx %s+0x%lx (%s)\n", i, (unsigned long)pc, e->name,
                 (unsigned long)e->off, e->obj[0] ? e->obj : "?");
        if (unw_step(c) <= 0)
            return;
    }
    outf(o, "    ...\n");
}

/* The stack of a switched-out thread, from the frame green__ctx_switch left. */
static void print_saved_stack(struct out *o, struct syms *s, const struct green__thread *t)
{
    const uint64_t *sp = t->sp;
    if (!sp || (const char *)sp < t->stack_lo || (const char *)(sp + 8) > t->stack_hi) {
        outf(o, "    (no saved context)\n");
        return;
    }
    unw_context_t uc;
    memset(&uc, 0, sizeof uc);
    greg_t *g = uc.uc_mcontext.gregs;
    g[REG_R15] = (greg_t)sp[1];
    g[REG_R14] = (greg_t)sp[2];
    g[REG_R13] = (greg_t)sp[3];
    g[REG_R12] = (greg_t)sp[4];
    g[REG_RBX] = (greg_t)sp[5];
    g[REG_RBP] = (greg_t)sp[6];
    g[REG_RIP] = (greg_t)sp[7];
    g[REG_RSP] = (greg_t)(uintptr_t)(sp + 8);
    unw_cursor_t c;
    if (unw_init_local(&c, &uc) < 0) {
        outf(o, "    (unwinding failed)\n");
        return;
    }
    print_frames(o, s, &c);
}

/* The dumping thread's own stack, from its caller on. */
static __attribute__((noinline)) void print_own_stack(struct out *o, struct syms *s)
{
    unw_context_t uc;
    unw_cursor_t c;
    if (unw_getcontext(&uc) < 0 || unw_init_local(&c, &uc) < 0 || unw_step(&c) <= 0) {
        outf(o, "    (unwinding failed)\n");
        return;
    }
    print_frames(o, s, &c);
}

/* ---- One run ------------------------------------------------------------ */

/* Who holds a foreign lock: every (lock, holder) pair, sorted by lock. */
struct hold {
    const void *lock;
    const struct green__thread *t;
};

struct view {
    struct green__rt *rt;
    const struct green__thread **t;  /* the threads in use */
    size_t n, cap;
    struct hold *holds;
    size_t nholds, holdcap;
    bool oom;
};

static void collect(void *obj, void *arg)
{
    struct green__thread *t = obj;
    struct view *v = arg;
    uint8_t st = green__state(t);
    if (st == GREEN_T_FREE || v->oom)
        return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        const struct green__thread **a = realloc(v->t, cap * sizeof *a);
        if (!a) {
            v->oom = true;
            return;
        }
        v->t = a;
        v->cap = cap;
    }
    v->t[v->n++] = t;
    uint32_t nheld = t->nheld;
    for (uint32_t i = 0; i < nheld && i < t->heldcap; i++) {
        if (v->nholds == v->holdcap) {
            size_t cap = v->holdcap ? 2 * v->holdcap : 64;
            struct hold *h = realloc(v->holds, cap * sizeof *h);
            if (!h) {
                v->oom = true;
                return;
            }
            v->holds = h;
            v->holdcap = cap;
        }
        v->holds[v->nholds++] = (struct hold){ t->held[i], t };
    }
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = (*(const struct green__thread *const *)a)->id;
    uint64_t y = (*(const struct green__thread *const *)b)->id;
    return (x > y) - (x < y);
}

static int by_lock(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct hold *)a)->lock;
    uintptr_t y = (uintptr_t)((const struct hold *)b)->lock;
    return (x > y) - (x < y);
}

static const struct green__thread *holder_of(const struct view *v, const void *lock)
{
    struct hold key = { lock, NULL };
    if (!v->nholds)
        return NULL;
    const struct hold *h = bsearch(&key, v->holds, v->nholds, sizeof key, by_lock);
    return h ? h->t : NULL;
}

static const struct green__thread *thread_by_id(const struct view *v, uint64_t id)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->t[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->n && v->t[lo]->id == id ? v->t[lo] : NULL;
}

/* TSC ticks per ns, from two readings against the clock: at load, and now. */
static uint64_t tsc0, ns0;
__attribute__((constructor)) static void tsc_mark(void)
{
    ns0 = green__clock_ns();
    tsc0 = __rdtsc();
}

static void print_name(struct out *o, const struct green__thread *t)
{
    char name[GREEN_NAME_MAX];
    memcpy(name, t->name, sizeof name);
    name[GREEN_NAME_MAX - 1] = '\0';
    for (char *c = name; *c; c++)
        if (*c < ' ' || *c == '"' || *c == 0x7f)
            *c = '?';                /* one line per thread, names quoted */
    outf(o, "green thread %llu", (unsigned long long)t->id);
    if (name[0])
        outf(o, " \"%s\"", name);
    if (t->is_main)
        outf(o, " (main)");
}

static void print_holder(struct out *o, const struct green__thread *h, uint64_t id,
                         const struct green__thread *self)
{
    outf(o, ", held by ");
    if (h == self)
        outf(o, "itself");
    else if (h)
        print_name(o, h);
    else
        outf(o, "green thread %llu", (unsigned long long)id);
}

/* What a parked thread waits on, on the line of its state. */
static void print_wait(struct out *o, const struct view *v, const struct green__thread *t,
                       double tsc_per_ns, uint64_t tsc_now)
{
    const char *what = t->wait_what ? t->wait_what : "an unknown call";
    const void *obj = t->wait_obj;
    outf(o, "parked in %s", what);
    if (obj && strcmp(what, "green_join") == 0)
        outf(o, " on green thread %llu",
             (unsigned long long)((const struct green__thread *)obj)->id);
    else if (obj)
        outf(o, " on %p", obj);
    if (obj && strcmp(what, "green_mutex_lock") == 0) {
        uint64_t id = green__mutex_holder(obj);
        if (id)
            print_holder(o, thread_by_id(v, id), id, t);
    } else if (obj && strncmp(what, "green_", 6) != 0) {
        const struct green__thread *h = holder_of(v, obj);
        if (h)
            print_holder(o, h, h->id, t);
    }
    uint64_t parked = t->parked_tsc;
    if (parked && tsc_now > parked && tsc_per_ns > 0)
        outf(o, ", for %.3f s", (double)(tsc_now - parked) / tsc_per_ns / 1e9);
}

struct run_dump {
    struct out *o;
    struct syms *syms;
    const struct green__worker *self_w; /* the dumper's worker, if in this run */
};

static void dump_run(struct run_dump *d, struct green__rt *rt, unsigned run_no)
{
    struct out *o = d->o;
    const struct green__thread *self =
        d->self_w && d->self_w->rt == rt ? d->self_w->cur : NULL;

    /* Stop the world. */
    atomic_store(&rt->stw, 1);
    for (unsigned i = 0; i < rt->nworkers; i++)
        atomic_store_explicit(&rt->workers[i].stw_asked, 1, memory_order_relaxed);
    green__wake_all(rt);
    uint32_t need = rt->nworkers - (self ? 1 : 0);
    uint64_t until = green__clock_ns() + STW_WAIT_NS;
    for (;;) {
        uint32_t n = atomic_load(&rt->stw_stopped);
        if (n >= need || green__clock_ns() >= until)
            break;
        green__futex_wait(&rt->stw_stopped, n, until);
    }
    bool all_stopped = atomic_load(&rt->stw_stopped) >= need;

    struct view v = { .rt = rt };
    green__pool_foreach(&rt->threads, collect, &v);
    if (v.n)
        qsort(v.t, v.n, sizeof *v.t, by_id);
    if (v.nholds)
        qsort(v.holds, v.nholds, sizeof *v.holds, by_lock);
    uint64_t tsc_now = __rdtsc(), ns_now = green__clock_ns();
    double tsc_per_ns = ns_now > ns0 ? (double)(tsc_now - tsc0) / (double)(ns_now - ns0) : 0;

    outf(o, "libgreen: run %u: %u workers, %zu green threads\n", run_no, rt->nworkers, v.n);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct green__worker *w = &rt->workers[i];
        const struct green__thread *cur = __atomic_load_n(&w->cur, __ATOMIC_RELAXED);
        if (w == d->self_w || atomic_load(&w->stw_stopped) || cur == &w->g0)
            continue;
        outf(o, "  worker %u did not stop: green thread %llu runs there without a "
                "scheduling point (a call libgreen does not wrap, code it may not "
                "interrupt, or preemption off); no stack is shown\n",
             i, (unsigned long long)cur->id);
    }
    if (v.oom)
        outf(o, "  (out of memory: some threads are missing)\n");

    for (size_t k = 0; k < v.n; k++) {
        const struct green__thread *t = v.t[k];
        const struct green__worker *on = NULL;
        for (unsigned i = 0; i < rt->nworkers && !on; i++)
            if (__atomic_load_n(&rt->workers[i].cur, __ATOMIC_RELAXED) == t)
                on = &rt->workers[i];
        bool pinned = false;
        for (unsigned i = 0; i < rt->nworkers && !pinned && all_stopped; i++)
            for (const struct green__thread *p = rt->workers[i].pinned_head; p; p = p->next)
                if (p == t) {
                    pinned = true;
                    on = &rt->workers[i];
                    break;
                }
        outf(o, "\n");
        print_name(o, t);
        outf(o, ": ");
        switch (green__state(t)) {
        case GREEN_T_RUNNING:
            if (on)
                outf(o, "running on worker %u", on->index);
            else
                outf(o, "running");
            if (t == self)
                outf(o, " (making this dump)");
            break;
        case GREEN_T_RUNNABLE:
            if (pinned)
                outf(o, "runnable, preempted and pinned to worker %u", on->index);
            else
                outf(o, "runnable");
            break;
        case GREEN_T_PARKED:
            print_wait(o, &v, t, tsc_per_ns, tsc_now);
            break;
        case GREEN_T_DEAD:
            outf(o, "finished, not yet joined");
            break;
        default:
            outf(o, "in state %u", green__state(t));
        }
        outf(o, "\n");
        uint32_t nheld = t->nheld;
        for (uint32_t i = 0; i < nheld && i < t->heldcap; i++)
            outf(o, "  holds %p\n", t->held[i]);
        if (t->spawn_pc) {
            /* The return address of the call: the call itself is before. */
            const struct sym *e = sym_of_pc(d->syms, (uintptr_t)t->spawn_pc - 1);
            if (e)
                outf(o, "  spawned at %p %s+0x%lx (%s)\n", t->spawn_pc, e->name,
                     (unsigned long)e->off + 1, e->obj[0] ? e->obj : "?");
            else
                outf(o, "  spawned at %p\n", t->spawn_pc);
        } else {
            outf(o, "  spawned by green_run\n");
        }
        if (t == self) {
            print_own_stack(o, d->syms);
        } else if (green__state(t) == GREEN_T_DEAD) {
            /* its stack is gone */
        } else if (!all_stopped) {
            outf(o, "    (not unwound: a worker did not stop)\n");
        } else if (green__state(t) != GREEN_T_RUNNING) {
            print_saved_stack(o, d->syms, t);
        }
    }
    outf(o, "\n");

    for (unsigned i = 0; i < rt->nworkers; i++)
        atomic_store_explicit(&rt->workers[i].stw_asked, 0, memory_order_relaxed);
    atomic_store(&rt->stw, 0);
    green__futex_wake(&rt->stw, INT32_MAX);
    free(v.t);
    free(v.holds);
}

int green_dump(int fd)
{
    if (fd < 0)
        return EBADF;
    struct out *o = malloc(sizeof *o);
    struct syms syms = { 0 };
    if (!o)
        return ENOMEM;
    o->fd = fd;
    o->err = 0;
    o->n = 0;
    struct green__worker *w = green__worker_self();
    struct run_dump d = { o, &syms, w && !green__in_handler_now() ? w : NULL };
    green__os_mutex_lock(&runs_lock);
    unsigned n = 0;
    for (struct green__rt *rt = runs; rt; rt = rt->runs_next)
        n++;
    outf(o, "libgreen: dump of %u run%s (pid %d)\n", n, n == 1 ? "" : "s", (int)getpid());
    unsigned k = 0;
    for (struct green__rt *rt = runs; rt; rt = rt->runs_next)
        dump_run(&d, rt, ++k);
    green__os_mutex_unlock(&runs_lock);
    out_flush(o);
    int err = o->err;
    free(o);
    free(syms.v);
    return err;
}
