/*
 * Stacks: where green threads live, and what happens when one runs out.
 *
 * Each green thread owns one slot of a large anonymous region:
 *
 *     slot:  [ guard | stack ................................. | control block ]
 *            low                                                            high
 *
 * The control block (struct green__thread) sits at the top of the slot, on the
 * same page as the first frames of the stack: a parked thread that has not
 * gone deep costs one page.  Regions are reserved with MAP_NORESERVE, so only
 * touched pages cost memory.  A region is one VMA: the guard is installed with
 * MADV_GUARD_INSTALL (Linux 6.13+), which splits nothing, so a million stacks
 * fit under vm.max_map_count.  Older kernels get mprotect guards (two VMAs per
 * stack: about 32k threads under the default map count).
 *
 * Slots are never unmapped while the run lasts, only released to the kernel
 * (MADV_DONTNEED, which leaves guards in place).  So a handle's pointer always
 * names mapped memory of the right type: green__stack_lookup checks that it
 * falls on a slot boundary of this run's regions, and the id in jword does the
 * rest.  Everything is unmapped when green_run returns.
 *
 * Free slots go to the freeing worker's cache (LIFO, warm), and past
 * GREEN_STACK_CACHE to the run's free list, whose memory an idle worker gives
 * back in one madvise per run of adjacent slots (green__stacks_scavenge).
 *
 * Overflow: a thread that runs off the bottom of its stack hits the guard;
 * SIGSEGV arrives on the worker's sigaltstack, and the handler reports
 * "green thread N overflowed its K-byte stack" and aborts.  Faults that are
 * not ours go to the handler that was installed before.
 *
 * Rejected: one mmap per stack (a syscall per spawn, and one VMA each);
 * control blocks in a separate slab (one more cache line and page per thread,
 * and a second allocator to keep type-stable).
 */
#include "sched.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GREEN_STACK_CACHE 64u          /* slots a worker keeps for itself */
#define GREEN_SCAVENGE_MIN 64u         /* dirty free slots worth a release */
#define GREEN_REGION_FIRST ((size_t)1 << 40)
#define GREEN_GUARD_BYTES ((size_t)16 << 10)

static size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

int green__stacks_init(struct green__stacks *s, size_t stack_size)
{
    size_t page = page_size();
    size_t tcb = round_up(sizeof(struct green__thread), GREEN_CACHELINE);

    memset(s, 0, sizeof *s);
    s->guard = round_up(GREEN_GUARD_BYTES, page);
    s->slot = round_up(s->guard + stack_size + tcb, page);
    s->tcb_off = s->slot - tcb;
    s->stack_size = s->tcb_off - s->guard;
    s->next_region_size = GREEN_REGION_FIRST;
    if (pthread_mutex_init(&s->lock, NULL) != 0)
        return EAGAIN;
    return 0;
}

void green__stacks_destroy(struct green__stacks *s)
{
    unsigned n = atomic_load(&s->nregions);
    for (unsigned i = 0; i < n; i++)
        munmap(s->regions[i].base, s->regions[i].size);
    free(s->free);
    pthread_mutex_destroy(&s->lock);
}

/* Requires: s->lock held. */
static int region_add(struct green__stacks *s)
{
    unsigned n = atomic_load_explicit(&s->nregions, memory_order_relaxed);
    if (n == GREEN_MAX_REGIONS)
        return ENOMEM;
    /* Reserve as much address space as the system lets us, halving down to
     * a few dozen slots (valgrind and strict overcommit allow less). */
    size_t min = s->slot * 64;
    for (size_t size = s->next_region_size; size >= min; size /= 2) {
        size = round_up(size, s->slot);
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            continue;
        s->regions[n].base = p;
        s->regions[n].size = size;
        atomic_store_explicit(&s->regions[n].used, 0, memory_order_relaxed);
        atomic_store_explicit(&s->nregions, n + 1, memory_order_release);
        s->next_region_size = size;
        return 0;
    }
    return ENOMEM;
}

static int guard_install(struct green__stacks *s, char *base)
{
    if (!s->use_mprotect) {
        if (madvise(base, s->guard, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return EAGAIN;
        s->use_mprotect = true;      /* kernel older than 6.13 */
    }
    return mprotect(base, s->guard, PROT_NONE) == 0 ? 0 : EAGAIN;
}

static struct green__thread *slot_tcb(struct green__stacks *s, char *base)
{
    struct green__thread *t = (struct green__thread *)(base + s->tcb_off);
    t->stack_lo = base + s->guard;
    t->stack_size = s->stack_size;
    return t;
}

static char *tcb_slot(struct green__stacks *s, struct green__thread *t)
{
    return (char *)t - s->tcb_off;
}

/* Requires: s->lock held.  A fresh slot from the newest region. */
static struct green__thread *bump(struct green__stacks *s, int *err)
{
    unsigned n = atomic_load_explicit(&s->nregions, memory_order_relaxed);
    struct green__region *r = n ? &s->regions[n - 1] : NULL;
    if (!r || atomic_load_explicit(&r->used, memory_order_relaxed) + s->slot > r->size) {
        if ((*err = region_add(s)) != 0)
            return NULL;
        r = &s->regions[n];
    }
    size_t used = atomic_load_explicit(&r->used, memory_order_relaxed);
    char *base = r->base + used;
    if ((*err = guard_install(s, base)) != 0)
        return NULL;                 /* the slot is skipped for good */
    atomic_store_explicit(&r->used, used + s->slot, memory_order_release);
    return slot_tcb(s, base);
}

struct green__thread *green__stack_alloc(struct green__worker *w, int *err)
{
    struct green__stacks *s = &w->rt->stacks;
    struct green__thread *t = w->cache;
    if (GREEN_LIKELY(t != NULL)) {
        w->cache = t->next;
        w->ncache--;
        return slot_tcb(s, tcb_slot(s, t));
    }
    pthread_mutex_lock(&s->lock);
    if (s->nfree > 0) {
        /* Refill the cache with a batch, newest (warmest) first. */
        unsigned take = GREEN_STACK_CACHE / 2;
        while (take-- > 0 && s->nfree > 1) {
            struct green__thread *c = s->free[--s->nfree];
            c->next = w->cache;
            w->cache = c;
            w->ncache++;
        }
        t = s->free[--s->nfree];
        if (s->nclean > s->nfree)
            s->nclean = s->nfree;
        pthread_mutex_unlock(&s->lock);
        return slot_tcb(s, tcb_slot(s, t));
    }
    t = bump(s, err);
    pthread_mutex_unlock(&s->lock);
    return t;
}

/* Requires: s->lock held. */
static bool free_reserve(struct green__stacks *s, size_t more)
{
    if (s->nfree + more <= s->freecap)
        return true;
    size_t cap = s->freecap ? s->freecap * 2 : 1024;
    while (cap < s->nfree + more)
        cap *= 2;
    struct green__thread **f = realloc(s->free, cap * sizeof *f);
    if (!f)
        return false;
    s->free = f;
    s->freecap = cap;
    return true;
}

void green__stack_free(struct green__worker *w, struct green__thread *t)
{
    struct green__stacks *s = &w->rt->stacks;

    t->state = GREEN_T_FREE;
    atomic_store_explicit(&t->jword, 0, memory_order_relaxed);
    t->next = w->cache;
    w->cache = t;
    if (++w->ncache <= GREEN_STACK_CACHE)
        return;

    /* Spill half of the cache to the run's free list.  Should the list fail
     * to grow, the cache just stays larger: nothing is lost. */
    pthread_mutex_lock(&s->lock);
    unsigned spill = GREEN_STACK_CACHE / 2;
    if (free_reserve(s, spill)) {
        while (spill-- > 0) {
            struct green__thread *c = w->cache;
            w->cache = c->next;
            w->ncache--;
            s->free[s->nfree++] = c;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(struct green__thread *const *)a;
    uintptr_t y = (uintptr_t)*(struct green__thread *const *)b;
    return x < y ? -1 : x > y;
}

void green__stacks_scavenge(struct green__stacks *s)
{
    if (pthread_mutex_trylock(&s->lock) != 0)
        return;
    if (s->nfree - s->nclean >= GREEN_SCAVENGE_MIN) {
        /* Sort the dirty part, then one madvise per run of adjacent slots:
         * the guards in between stay (MADV_DONTNEED keeps guard markers and
         * PROT_NONE). */
        qsort(s->free + s->nclean, s->nfree - s->nclean, sizeof *s->free, by_address);
        size_t i = s->nclean;
        while (i < s->nfree) {
            size_t j = i + 1;
            while (j < s->nfree &&
                   (char *)s->free[j] - (char *)s->free[j - 1] == (ptrdiff_t)s->slot)
                j++;
            char *lo = tcb_slot(s, s->free[i]) + s->guard;
            char *hi = tcb_slot(s, s->free[j - 1]) + s->slot;
            madvise(lo, (size_t)(hi - lo), MADV_DONTNEED);
            i = j;
        }
        s->nclean = s->nfree;
    }
    pthread_mutex_unlock(&s->lock);
}

struct green__thread *green__stack_lookup(struct green__rt *rt, const void *p)
{
    struct green__stacks *s = &rt->stacks;
    unsigned n = atomic_load_explicit(&s->nregions, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        const struct green__region *r = &s->regions[i];
        uintptr_t off = (uintptr_t)p - (uintptr_t)r->base;
        if ((uintptr_t)p < (uintptr_t)r->base ||
            off >= atomic_load_explicit(&r->used, memory_order_acquire))
            continue;
        return off % s->slot == s->tcb_off ? (struct green__thread *)p : NULL;
    }
    return NULL;
}

void green__stacks_foreach(struct green__stacks *s,
                           void (*fn)(struct green__thread *, void *), void *arg)
{
    unsigned n = atomic_load(&s->nregions);
    for (unsigned i = 0; i < n; i++) {
        struct green__region *r = &s->regions[i];
        size_t used = atomic_load(&r->used);
        for (size_t off = 0; off < used; off += s->slot)
            fn((struct green__thread *)(r->base + off + s->tcb_off), arg);
    }
}

/* ---- Overflow reports --------------------------------------------------- */

static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned handler_users;
static struct sigaction old_segv;

/* AS-safe */
static bool is_overflow(const struct green__thread *t, const char *addr,
                        const char *rsp)
{
    const char *lo = t->stack_lo;
    size_t guard = t->rt->stacks.guard;
    if (addr < lo && addr >= lo - guard)
        return true;
    /* A frame larger than the guard may fault beyond it: then the stack
     * pointer itself has left the stack. */
    return rsp < lo && rsp >= lo - guard - t->rt->stacks.slot;
}

/* AS-safe */
static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    struct green__worker *w = green__worker_self();
    ucontext_t *uc = uctx;
    if (w && w->cur && w->cur != &w->g0) {
        struct green__thread *t = w->cur;
        const char *rsp = (const char *)uc->uc_mcontext.gregs[REG_RSP];
        if (is_overflow(t, si->si_addr, rsp)) {
            green__write_str(2, "libgreen: green thread ");
            green__write_u64(2, t->id);
            green__write_str(2, " overflowed its ");
            green__write_u64(2, t->rt->cfg.stack_size);
            green__write_str(2, "-byte stack (set GREEN_STACK_SIZE or "
                                "green_config_t.stack_size)\n");
            abort();
        }
    }
    /* Not ours: hand it to whoever had it before. */
    if (old_segv.sa_flags & SA_SIGINFO) {
        old_segv.sa_sigaction(sig, si, uctx);
    } else if (old_segv.sa_handler == SIG_DFL || old_segv.sa_handler == SIG_IGN) {
        /* Return and fault again, now with the default action. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    } else {
        old_segv.sa_handler(sig);
    }
    errno = saved;
}

int green__overflow_install(void)
{
    int err = 0;
    pthread_mutex_lock(&handler_lock);
    if (handler_users++ == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &old_segv) != 0) {
            handler_users--;
            err = EAGAIN;
        }
    }
    pthread_mutex_unlock(&handler_lock);
    return err;
}

void green__overflow_uninstall(void)
{
    pthread_mutex_lock(&handler_lock);
    if (--handler_users == 0) {
        struct sigaction cur;
        /* Put the old handler back unless the program replaced ours. */
        if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
            cur.sa_sigaction == on_segv)
            sigaction(SIGSEGV, &old_segv, NULL);
    }
    pthread_mutex_unlock(&handler_lock);
}

int green__altstack_setup(struct green__worker *w)
{
    size_t size = round_up(64 << 10, page_size());
    long min = sysconf(_SC_MINSIGSTKSZ);
    if (min > 0 && (size_t)min * 4 > size)
        size = round_up((size_t)min * 4, page_size());
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return EAGAIN;
    stack_t ss = { .ss_sp = p, .ss_size = size, .ss_flags = 0 };
    if (sigaltstack(&ss, &w->old_altstack) != 0) {
        munmap(p, size);
        return EAGAIN;
    }
    w->altstack = p;
    w->altstack_size = size;
    return 0;
}

void green__altstack_teardown(struct green__worker *w)
{
    if (!w->altstack)
        return;
    sigaltstack(&w->old_altstack, NULL);
    munmap(w->altstack, w->altstack_size);
    w->altstack = NULL;
}
