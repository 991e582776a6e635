/*
 * Thread dumps (green_dump, GREEN_DUMP_SIGNAL): every green thread of every
 * run, listed while the program runs.
 *
 * Stopping the world.  The dump asks each worker of a run to stop
 * (w->stw_asked), wakes the idle ones and waits, 200 ms at most, until
 * each has come to a scheduling decision -- a switch, a preemption, its
 * loop -- where green__pick sends it to its scheduler loop, which waits
 * there until the dump is over (loop.c).  A worker that does not come runs
 * a thread that neither switches nor can be preempted (a system call
 * libgreen does not wrap, code it may not interrupt, preemption off): the
 * dump names it, lists every thread all the same, and unwinds no stack --
 * that worker could switch to any of them meanwhile.  A green thread that
 * dumps is not stopped: it shows as running, with its own stack.
 *
 * The snapshot.  While the world is stopped nothing is allocated and no
 * lock a green thread could hold is taken (a stopped thread may be parked
 * holding an allocator's lock, which libgreen interposes): each thread is
 * copied, its stack unwound to bare PCs by libunwind from the context
 * green__ctx_switch saved on it (switch_x86_64.S: the control words, r15
 * to rbx, rbp, the return address), into memory mapped before the stop.
 * Names, sorting and text come once the workers have gone on
 * (dump_text.c names each PC from its object's symbol table).
 *
 * The process's runs are in one list (green__runs_add and _remove, from
 * run.c), locked for a dump's length: a run cannot end and free its state
 * meanwhile.
 *
 * GREEN_DUMP_SIGNAL's handler and thread are in dump_signal.c.
 */
#define UNW_LOCAL_ONLY
#include "dump.h"
#include "foreign.h"
#include "mutex.h"

#include <libunwind.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <x86intrin.h>

#define STW_WAIT_NS 200000000u

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

/* ---- The snapshot ------------------------------------------------------- */

#define SNAP_HELD 4
#define SNAP_FDS 4

struct snap {
    uint64_t id;
    uint64_t holder;                 /* of the green mutex it waits on; 0 */
    const char *what;                /* the blocking call (a literal) */
    const void *obj, *spawn_pc;
    struct pollfd fds[SNAP_FDS];     /* fd waits: the first fds, and how many */
    uint32_t nfds;
    uint64_t parked_tsc;
    const void *held[SNAP_HELD];
    uint32_t nheld;                  /* all it holds; SNAP_HELD kept */
    uint32_t waiters;                /* threads parked on a lock it holds */
    uint8_t state;
    bool is_main, pinned, self;
    int worker;                      /* running or pinned there, or -1 */
    char name[GREEN_NAME_MAX];
    struct green__bt bt;
};

struct snapshot {
    struct green__rt *rt;
    const struct green__thread *self;
    const struct green__worker *self_w;
    struct snap *v;
    size_t n, cap, missed;
    bool stopped;                    /* every other worker stopped */
    uint64_t tsc;
};

static bool is_fd_wait(const char *what)
{
    return what && (strcmp(what, "green_fd_wait") == 0 || strcmp(what, "green_poll") == 0);
}

static void snap_one(void *obj, void *arg)
{
    const struct green__thread *t = obj;
    struct snapshot *ss = arg;
    uint8_t st = green__state(t);
    if (st == GREEN_T_FREE)
        return;
    if (ss->n == ss->cap) {
        ss->missed++;
        return;
    }
    struct snap *sn = &ss->v[ss->n++];
    struct green__rt *rt = ss->rt;
    sn->id = t->id;
    sn->state = st;
    sn->is_main = t->is_main;
    sn->self = t == ss->self;
    /* The cold part: none before its first run or after its end. */
    const struct green__thread_cold *c = green__cold_racy(t);
    sn->what = c ? c->wait_what : NULL;
    sn->obj = c ? c->wait_obj : NULL;
    /* An fd wait's pollfds are on the parked thread's stack: read while
     * nothing runs. */
    if (ss->stopped && st == GREEN_T_PARKED && sn->obj && is_fd_wait(sn->what)) {
        sn->nfds = c->wait_n;
        memcpy(sn->fds, sn->obj, (sn->nfds < SNAP_FDS ? sn->nfds : SNAP_FDS) * sizeof *sn->fds);
    }
    if (c) {
        sn->spawn_pc = c->spawn_pc;
    } else {
        /* The control block holds it until the first run; ret takes its
         * place at the end, so it is only good while on_cpu says so. */
        const void *pc = t->spawn_pc;
        sn->spawn_pc = atomic_load_explicit(&t->on_cpu, memory_order_acquire) ==
                               GREEN_ON_CPU_LAUNCH ? pc : NULL;
    }
    sn->parked_tsc = t->parked_tsc;
    if (c)
        memcpy(sn->name, c->name, sizeof sn->name);
    else
        sn->name[0] = '\0';
    sn->name[GREEN_NAME_MAX - 1] = '\0';
    sn->worker = -1;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct green__worker *w = &rt->workers[i];
        if (__atomic_load_n(&w->cur, __ATOMIC_RELAXED) == t)
            sn->worker = (int)i;
        for (const struct green__thread *p = ss->stopped ? w->pinned_head : NULL; p;
             p = p->next)
            if (p == t) {
                sn->pinned = true;
                sn->worker = (int)i;
            }
    }
    sn->nheld = t->nheld;
    for (uint32_t i = 0; i < sn->nheld && i < SNAP_HELD && i < t->heldcap; i++)
        sn->held[i] = t->held[i];
    /* A mutex is read only while nothing runs: a thread woken meanwhile may
     * have freed it. */
    if (ss->stopped && st == GREEN_T_PARKED && sn->obj && sn->what &&
        strcmp(sn->what, "green_mutex_lock") == 0)
        sn->holder = green__mutex_holder(sn->obj);
    if (sn->self)
        green__bt_own(&sn->bt);
    else if (ss->stopped && st != GREEN_T_DEAD && sn->worker < 0)
        green__bt_saved(&sn->bt, t);
    else if (ss->stopped && sn->pinned)
        green__bt_saved(&sn->bt, t);
}

/* Threads a run's pool has handed out, at most. */
static size_t pool_slots(struct green__pool *p)
{
    size_t n = 0;
    unsigned nr = atomic_load(&p->nregions);
    for (unsigned i = 0; i < nr; i++)
        n += atomic_load(&p->regions[i].used) / p->slot;
    return n;
}

/* Stop rt's workers, copy its threads, let them go on. */
static int take_snapshot(struct snapshot *ss, struct green__rt *rt,
                         const struct green__worker *self_w)
{
    memset(ss, 0, sizeof *ss);
    ss->rt = rt;
    ss->self_w = self_w && self_w->rt == rt ? self_w : NULL;
    ss->self = ss->self_w ? ss->self_w->cur : NULL;
    /* Room for the threads there are, and for those spawned before the
     * workers stop; only the pages used are touched. */
    ss->cap = pool_slots(&rt->threads) + 4096;
    ss->v = mmap(NULL, ss->cap * sizeof *ss->v, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ss->v == MAP_FAILED) {
        ss->v = NULL;
        return ENOMEM;
    }

    /* Stop the world -- but for the dumper's own worker, which runs it. */
    atomic_store(&rt->stw, 1);
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (&rt->workers[i] != ss->self_w)
            atomic_store(&rt->workers[i].stw_asked, 1);
    green__wake_all(rt);
    uint32_t need = rt->nworkers - (ss->self_w ? 1 : 0);
    uint64_t until = green__clock_ns() + STW_WAIT_NS;
    for (;;) {
        uint32_t n = atomic_load(&rt->stw_stopped);
        if (n >= need || green__clock_ns() >= until)
            break;
        green__futex_wait(&rt->stw_stopped, n, until);
    }
    ss->stopped = atomic_load(&rt->stw_stopped) >= need;
    ss->tsc = __rdtsc();
    green__pool_foreach(&rt->threads, snap_one, ss);

    for (unsigned i = 0; i < rt->nworkers; i++)
        atomic_store_explicit(&rt->workers[i].stw_asked, 0, memory_order_relaxed);
    atomic_store(&rt->stw, 0);
    green__futex_wake(&rt->stw, INT32_MAX);
    return 0;
}

/* ---- The text ----------------------------------------------------------- */

/* Who holds a lock libgreen interposes: (lock, holder) pairs, by lock. */
struct hold {
    const void *lock;
    const struct snap *by;
};

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const struct snap *)a)->id, y = ((const struct snap *)b)->id;
    return (x > y) - (x < y);
}

static int by_lock(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct hold *)a)->lock;
    uintptr_t y = (uintptr_t)((const struct hold *)b)->lock;
    return (x > y) - (x < y);
}

static const struct snap *snap_by_id(const struct snapshot *ss, uint64_t id)
{
    size_t lo = 0, hi = ss->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ss->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ss->n && ss->v[lo].id == id ? &ss->v[lo] : NULL;
}

/* TSC ticks per ns, from two readings against the clock: at load, and now. */
static uint64_t tsc0, ns0;
__attribute__((constructor)) static void tsc_mark(void)
{
    ns0 = green__clock_ns();
    tsc0 = __rdtsc();
}

static void print_name(struct green__out *o, const struct snap *sn)
{
    char name[GREEN_NAME_MAX];
    memcpy(name, sn->name, sizeof name);
    for (char *c = name; *c; c++)
        if (*c < ' ' || *c == '"' || *c == 0x7f)
            *c = '?';                /* one line per thread, names quoted */
    green__outf(o, "green thread %llu", (unsigned long long)sn->id);
    if (name[0])
        green__outf(o, " \"%s\"", name);
    if (sn->is_main)
        green__outf(o, " (main)");
}

static void print_holder(struct green__out *o, const struct snap *h, uint64_t id, const struct snap *sn)
{
    green__outf(o, ", held by ");
    if (h == sn)
        green__outf(o, "itself");
    else if (h)
        print_name(o, h);
    else
        green__outf(o, "green thread %llu", (unsigned long long)id);
}

static void print_fds(struct green__out *o, const struct snap *sn)
{
    green__outf(o, " on ");
    if (sn->nfds > 1)
        green__outf(o, "%u fds: ", sn->nfds);
    for (uint32_t i = 0; i < sn->nfds && i < SNAP_FDS; i++) {
        short ev = sn->fds[i].events;
        green__outf(o, "%sfd %d (%s%s%s)", i ? ", " : "", sn->fds[i].fd,
                    ev & POLLIN ? "in" : "", (ev & POLLIN) && (ev & POLLOUT) ? "+" : "",
                    ev & POLLOUT ? "out" : "");
    }
    if (sn->nfds > SNAP_FDS)
        green__outf(o, ", ...");
}

static void print_state(struct green__out *o, const struct snapshot *ss, const struct snap *sn,
                        const struct hold *holds, size_t nholds, double tsc_per_ns)
{
    switch (sn->state) {
    case GREEN_T_RUNNING:
        if (sn->worker >= 0)
            green__outf(o, "running on worker %d", sn->worker);
        else
            green__outf(o, "running");
        if (sn->self)
            green__outf(o, " (making this dump)");
        return;
    case GREEN_T_RUNNABLE:
        if (sn->pinned)
            green__outf(o, "runnable, preempted and pinned to worker %d", sn->worker);
        else
            green__outf(o, "runnable");
        return;
    case GREEN_T_DEAD:
        green__outf(o, "finished, not yet joined");
        return;
    case GREEN_T_PARKED:
        break;
    default:
        green__outf(o, "in state %u", sn->state);
        return;
    }
    const char *what = sn->what ? sn->what : "an unknown call";
    green__outf(o, "parked in %s", what);
    if (sn->obj && strcmp(what, "green_join") == 0)
        green__outf(o, " on green thread %llu",
             (unsigned long long)((const struct green__thread *)sn->obj)->id);
    else if (sn->nfds)
        print_fds(o, sn);
    else if (sn->obj)
        green__outf(o, " on %p", sn->obj);
    if (sn->holder) {
        print_holder(o, snap_by_id(ss, sn->holder), sn->holder, sn);
    } else if (sn->obj && nholds && strncmp(what, "green_", 6) != 0) {
        struct hold key = { sn->obj, NULL };
        const struct hold *h = bsearch(&key, holds, nholds, sizeof key, by_lock);
        if (h)
            print_holder(o, h->by, h->by->id, sn);
    }
    if (sn->parked_tsc && ss->tsc > sn->parked_tsc && tsc_per_ns > 0)
        green__outf(o, ", for %.3f s", (double)(ss->tsc - sn->parked_tsc) / tsc_per_ns / 1e9);
}

static void dump_run(struct green__out *o, struct green__syms *syms, const struct green__worker *self_w,
                     struct green__rt *rt, unsigned run_no)
{
    struct snapshot ss;
    if (take_snapshot(&ss, rt, self_w) != 0) {
        green__outf(o, "libgreen: run %u: no memory for a snapshot\n", run_no);
        o->err = ENOMEM;
        return;
    }
    if (ss.n)
        qsort(ss.v, ss.n, sizeof *ss.v, by_id);
    size_t nholds = 0;
    for (size_t k = 0; k < ss.n; k++)
        nholds += ss.v[k].nheld < SNAP_HELD ? ss.v[k].nheld : SNAP_HELD;
    struct hold *holds = nholds ? malloc(nholds * sizeof *holds) : NULL;
    if (!holds)
        nholds = 0;
    for (size_t k = 0, h = 0; k < ss.n && h < nholds; k++)
        for (uint32_t i = 0; i < ss.v[k].nheld && i < SNAP_HELD; i++)
            holds[h++] = (struct hold){ ss.v[k].held[i], &ss.v[k] };
    if (nholds)
        qsort(holds, nholds, sizeof *holds, by_lock);
    /* Who waits for whom: a holder parked while others wait for its lock
     * is the futurelock shape (lockwarn.c). */
    for (size_t k = 0; k < ss.n; k++) {
        struct snap *sn = &ss.v[k];
        struct snap *h = NULL;
        if (sn->state != GREEN_T_PARKED || !sn->obj || !sn->what)
            continue;
        if (sn->holder) {
            h = (struct snap *)snap_by_id(&ss, sn->holder);
        } else if (nholds && strncmp(sn->what, "green_", 6) != 0) {
            struct hold key = { sn->obj, NULL };
            const struct hold *f = bsearch(&key, holds, nholds, sizeof key, by_lock);
            h = f ? (struct snap *)f->by : NULL;
        }
        if (h && h != sn)
            h->waiters++;
    }
    uint64_t ns_now = green__clock_ns();
    double tsc_per_ns = ns_now > ns0 ? (double)(ss.tsc - tsc0) / (double)(ns_now - ns0) : 0;

    green__outf(o, "libgreen: run %u: %u workers, %zu green threads\n", run_no, rt->nworkers,
         ss.n + ss.missed);
    if (ss.missed)
        green__outf(o, "  (%zu threads spawned while the dump began are not listed)\n", ss.missed);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        const struct green__worker *w = &rt->workers[i];
        if (ss.stopped)
            break;
        if (w == ss.self_w)
            continue;
        for (size_t k = 0; k < ss.n; k++)
            if (ss.v[k].worker == (int)i && ss.v[k].state == GREEN_T_RUNNING)
                green__outf(o, "  worker %u did not stop: green thread %llu runs there without a "
                        "scheduling point (a call libgreen does not wrap, code it may not "
                        "interrupt, or preemption off); no stack is shown\n",
                     i, (unsigned long long)ss.v[k].id);
    }
    for (size_t k = 0; k < ss.n; k++) {
        const struct snap *sn = &ss.v[k];
        green__outf(o, "\n");
        print_name(o, sn);
        green__outf(o, ": ");
        print_state(o, &ss, sn, holds, nholds, tsc_per_ns);
        green__outf(o, "\n");
        if (sn->waiters && sn->state == GREEN_T_PARKED)
            green__outf(o, "  %u green thread%s wait%s for a lock it holds while it is parked\n",
                        sn->waiters, sn->waiters == 1 ? "" : "s", sn->waiters == 1 ? "s" : "");
        for (uint32_t i = 0; i < sn->nheld && i < SNAP_HELD; i++)
            green__outf(o, "  holds %p\n", sn->held[i]);
        if (sn->nheld > SNAP_HELD)
            green__outf(o, "  holds %u more\n", sn->nheld - SNAP_HELD);
        if (sn->spawn_pc)
            green__print_pc(o, syms, "  spawned at ", (uintptr_t)sn->spawn_pc, false);
        else
            green__outf(o, "  spawned by green_run\n");
        green__bt_print(o, syms, &sn->bt);
        if (!sn->bt.unwound && sn->state != GREEN_T_DEAD && !ss.stopped)
            green__outf(o, "    (not unwound: a worker did not stop)\n");
    }
    green__outf(o, "\n");
    free(holds);
    munmap(ss.v, ss.cap * sizeof *ss.v);
}

int green_dump(int fd)
{
    if (fd < 0)
        return EBADF;
    struct green__out *o = malloc(sizeof *o);
    struct green__syms syms = { 0 };
    if (!o)
        return ENOMEM;
    o->fd = fd;
    o->err = 0;
    o->n = 0;
    struct green__worker *w = green__worker_self();
    const struct green__worker *self_w =
        w && w->cur != &w->g0 && !green__in_handler_now() ? w : NULL;
    /* On a green thread: the lock calls libgreen interposes (libunwind's,
     * an allocator's) are libc's while it dumps -- it must not park, its
     * worker running on to other threads meanwhile -- and the shim passes
     * its calls through. */
    if (self_w)
        green__in_handler++;
    green__os_mutex_lock(&runs_lock);
    unsigned n = 0;
    for (struct green__rt *rt = runs; rt; rt = rt->runs_next)
        n++;
    green__outf(o, "libgreen: dump of %u run%s (pid %d)\n", n, n == 1 ? "" : "s", (int)getpid());
    unsigned k = 0;
    for (struct green__rt *rt = runs; rt; rt = rt->runs_next)
        dump_run(o, &syms, self_w, rt, ++k);
    green__os_mutex_unlock(&runs_lock);
    if (self_w)
        green__in_handler--;
    green__out_flush(o);
    int err = o->err;
    free(o);
    free(syms.v);
    return err;
}
