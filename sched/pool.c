/*
 * Pools: fixed-size slots carved from large reserved regions, for stacks and
 * for thread control blocks.
 *
 * A region is one anonymous MAP_NORESERVE mapping, reserved as large as the
 * system allows (halving on refusal: valgrind and strict overcommit allow
 * less) and handed out slot by slot from its low end.  Only touched pages
 * cost memory.  Slots are never unmapped while the run lasts -- a pool only
 * grows, by more regions -- so any pointer into a pool stays readable:
 * green__pool_owns() can tell whether an untrusted pointer (a thread handle)
 * names a slot, and reading that slot is safe whatever its state.
 *
 * A slot may start with a guard (stacks): installed once, before the slot is
 * first handed out, with MADV_GUARD_INSTALL (Linux 6.13+, no VMA split) or
 * mprotect on older kernels.
 *
 * Fresh slots are prepared in batches, ahead of their first use: the
 * guards of the whole batch installed, and the bytes at each slot's top
 * that a new object touches at once (a stack's top page, a control block)
 * populated, by one process_madvise(2) each (Linux 6.13+ takes any advice
 * for the calling process; PIDFD_SELF_THREAD_GROUP from 6.15, else a pidfd
 * opened for the call).  A first touch is a page fault, ~11 us on the VM
 * this was measured on, a guard one madvise, ~1.4 us: in a batch, 0.6 us
 * and 0.25 us a slot (what is left of the fault is the hypervisor's, at the
 * first touch, ~5 us: for a stack, paid by the worker that first runs its
 * thread, see launch() in switch.c).  A batch starts at
 * GREEN_PREPARE_MIN slots and doubles while the pool keeps growing, up to
 * GREEN_PREPARE_MAX, so a program of a few threads populates a few pages
 * ahead and one that spawns a million amortises each call over 512.  Where
 * process_madvise refuses (older kernels, seccomp), each guard is one
 * madvise and pages fault in as before.
 *
 * Free slots: each worker keeps a LIFO cache per pool (warm memory, no lock),
 * linked through a word of the free object itself; past GREEN_POOL_CACHE the
 * cache spills half to the pool's free array, under the pool's lock.  For
 * pools that release memory (stacks), an idle worker gives the pages of the
 * free array's newly added slots back to the kernel, one madvise per run of
 * adjacent slots (MADV_DONTNEED keeps guards in place) -- but only once they
 * have lain unused for GREEN_SCAVENGE_DELAY_NS: a burst of threads followed
 * by another finds its stacks still warm, as Go's lazy scavenger allows, and
 * a page fault costs microseconds on a VM.
 */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#define GREEN_PIDFD_SELF_THREAD_GROUP (-10001)  /* Linux 6.15+ */

#define GREEN_PREPARE_MIN 16u          /* slots in a pool's first batch */
#define GREEN_PREPARE_MAX 512u         /* and its largest (<= UIO_MAXIOV) */
#define GREEN_SCAVENGE_MIN 64u         /* new free slots worth a release */
#define GREEN_SCAVENGE_DELAY_NS 1000000000u /* how long free slots stay warm */

size_t green__page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

int green__pool_init(struct green__pool *p, size_t slot, size_t guard, size_t obj_off,
                     ptrdiff_t link_off, size_t first_region, bool release, size_t touch)
{
    memset(p, 0, sizeof *p);
    p->slot = slot;
    if ((slot & (slot - 1)) == 0)
        p->slot_shift = (unsigned)__builtin_ctzl(slot);
    p->guard = guard;
    p->obj_off = obj_off;
    p->link_off = link_off;
    p->release = release;
    p->touch = touch < slot - guard ? touch : slot - guard;
    p->batch = GREEN_PREPARE_MIN;
    if (guard || touch) {
        p->prep_iov = malloc(GREEN_PREPARE_MAX * sizeof *p->prep_iov);
        p->no_batch = !p->prep_iov;  /* the old way, then */
    } else {
        p->no_batch = true;
    }
    p->next_region_size = first_region;
    if (pthread_mutex_init(&p->lock, NULL) == 0)
        return 0;
    free(p->prep_iov);
    return EAGAIN;
}

void green__pool_destroy(struct green__pool *p)
{
    unsigned n = atomic_load(&p->nregions);
    for (unsigned i = 0; i < n; i++)
        munmap(p->regions[i].base, p->regions[i].size);
    free(p->free);
    free(p->prep_iov);
    pthread_mutex_destroy(&p->lock);
}

static char *slot_of(struct green__pool *p, void *obj)
{
    return (char *)obj - p->obj_off;
}

/* Requires: p->lock held. */
static int region_add(struct green__pool *p)
{
    unsigned n = atomic_load_explicit(&p->nregions, memory_order_relaxed);
    if (n == GREEN_MAX_REGIONS)
        return ENOMEM;
    size_t min = p->slot * 64;
    for (size_t size = p->next_region_size; size >= min; size /= 2) {
        size = size / p->slot * p->slot;
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            continue;
        if (p->huge_from && size > p->huge_from)     /* best effort */
            madvise((char *)m + p->huge_from, size - p->huge_from, MADV_HUGEPAGE);
        p->regions[n].base = m;
        p->regions[n].size = size;
        atomic_store_explicit(&p->regions[n].used, 0, memory_order_relaxed);
        p->regions[n].prepared = 0;
        atomic_store_explicit(&p->nregions, n + 1, memory_order_release);
        p->next_region_size = size;
        return 0;
    }
    return ENOMEM;
}

/* Requires: p->lock held. */
static int guard_install(struct green__pool *p, char *base)
{
    if (!p->use_mprotect) {
        if (madvise(base, p->guard, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return EAGAIN;
        p->use_mprotect = true;      /* kernel older than 6.13 */
    }
    return mprotect(base, p->guard, PROT_NONE) == 0 ? 0 : EAGAIN;
}

/* One advice over n ranges of this process, in one call: true if the
 * kernel took all of it. */
static bool madvise_ranges(struct iovec *iov, unsigned n, int advice)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].iov_len;
    long r = syscall(SYS_process_madvise, GREEN_PIDFD_SELF_THREAD_GROUP, iov, (size_t)n,
                     advice, 0u);
    if (r < 0 && errno == EBADF) {   /* before 6.15: a pidfd of our own */
        int fd = (int)syscall(SYS_pidfd_open, getpid(), 0u);
        if (fd < 0)
            return false;
        r = syscall(SYS_process_madvise, fd, iov, (size_t)n, advice, 0u);
        green__sys_close(fd);
    }
    return r >= 0 && (size_t)r == total;
}

/* The whole pages over [a, a + n): madvise takes page-aligned ranges
 * only, and slots smaller than a page (control blocks) straddle them.  A
 * page shared with the previous batch is populated again, which costs
 * nothing; the part past the batch's end is the region's, mapped in whole
 * pages like every mapping. */
static struct iovec page_span(char *a, size_t n)
{
    uintptr_t mask = green__page_size() - 1;
    uintptr_t lo = (uintptr_t)a & ~mask, hi = ((uintptr_t)a + n + mask) & ~mask;
    return (struct iovec){ (void *)lo, hi - lo };
}

/* Requires: p->lock held.  Prepare the next batch of r's fresh slots (at
 * least one): guards installed (0, or why not: that slot cannot be used),
 * tops populated (best effort). */
static int prepare(struct green__pool *p, struct green__region *r)
{
    size_t left = (r->size - r->prepared) / p->slot;
    unsigned n = p->batch < left ? p->batch : (unsigned)left;
    if (n == 0)
        return ENOMEM;
    struct iovec *iov = p->prep_iov;
    char *first = r->base + r->prepared;
    bool batched = !p->no_batch && n > 1;
    if (p->guard) {
        if (batched && !p->use_mprotect) {
            for (unsigned i = 0; i < n; i++)
                iov[i] = (struct iovec){ first + i * p->slot, p->guard };
            if (!madvise_ranges(iov, n, MADV_GUARD_INSTALL))
                batched = false, p->no_batch = true;
        }
        if (!batched || p->use_mprotect) {
            n = 1;                   /* one at a time: a failure fails one spawn */
            int err = guard_install(p, first);
            if (err)
                return err;
        }
    }
    if (p->touch && batched) {
        unsigned k = n;
        if (!p->guard && p->touch == p->slot) {   /* whole slots, back to back */
            iov[0] = page_span(first, n * p->slot);
            k = 1;
        } else {
            for (unsigned i = 0; i < n; i++)
                iov[i] = page_span(first + (i + 1) * p->slot - p->touch, p->touch);
        }
        if (!madvise_ranges(iov, k, MADV_POPULATE_WRITE))
            p->no_batch = true;      /* the pages fault in as they are touched */
    }
    r->prepared += n * p->slot;
    if (n == p->batch && p->batch < GREEN_PREPARE_MAX)
        p->batch *= 2;
    return 0;
}

/* Requires: p->lock held.  A fresh slot from the newest region. */
static void *bump(struct green__pool *p, int *err)
{
    unsigned n = atomic_load_explicit(&p->nregions, memory_order_relaxed);
    struct green__region *r = n ? &p->regions[n - 1] : NULL;
    if (!r || atomic_load_explicit(&r->used, memory_order_relaxed) + p->slot > r->size) {
        if ((*err = region_add(p)) != 0)
            return NULL;
        r = &p->regions[n];
    }
    size_t used = atomic_load_explicit(&r->used, memory_order_relaxed);
    char *base = r->base + used;
    if (used + p->slot > r->prepared) {
        *err = 0;
        if (!p->no_batch)
            *err = prepare(p, r);
        else if (!p->guard || (*err = guard_install(p, base)) == 0)
            r->prepared += p->slot;  /* the old way: a call a guard */
        if (*err)
            return NULL;             /* its guard failed: tried again next time */
    }
    atomic_store_explicit(&r->used, used + p->slot, memory_order_release);
    return base + p->obj_off;
}

void *green__pool_get_slow(struct green__pool *p, struct green__cache *c, int *err)
{
    void *obj;
    green__os_mutex_lock(&p->lock);
    if (p->nfree > 0) {
        /* Refill the cache with a batch, newest (warmest) first. */
        unsigned take = GREEN_POOL_CACHE / 2;
        while (take-- > 0 && p->nfree > 1) {
            void *f = p->free[--p->nfree];
            *green__pool_link(p, f) = c->head;
            c->head = f;
            c->n++;
        }
        obj = p->free[--p->nfree];
        if (p->nclean > p->nfree)
            p->nclean = p->nfree;
    } else {
        obj = bump(p, err);
    }
    green__os_mutex_unlock(&p->lock);
    return obj;
}

/* Requires: p->lock held. */
static bool free_reserve(struct green__pool *p, size_t more)
{
    if (p->nfree + more <= p->freecap)
        return true;
    size_t cap = p->freecap ? p->freecap * 2 : 1024;
    while (cap < p->nfree + more)
        cap *= 2;
    void **f = realloc(p->free, cap * sizeof *f);
    if (!f)
        return false;
    p->free = f;
    p->freecap = cap;
    return true;
}

void green__pool_spill(struct green__pool *p, struct green__cache *c)
{
    /* Spill half to the free array.  Should it fail to grow, the cache just
     * stays larger: nothing is lost. */
    green__os_mutex_lock(&p->lock);
    unsigned spill = GREEN_POOL_CACHE / 2;
    if (free_reserve(p, spill)) {
        while (spill-- > 0) {
            void *f = c->head;
            c->head = *green__pool_link(p, f);
            c->n--;
            p->free[p->nfree++] = f;
        }
        if (!p->dirty_since)         /* read unlocked by green__pool_release_due */
            __atomic_store_n(&p->dirty_since, green__clock_ns(), __ATOMIC_RELAXED);
    }
    green__os_mutex_unlock(&p->lock);
}

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

uint64_t green__pool_release_due(struct green__pool *p)
{
    /* Read without the lock: a stale answer only moves a release a little. */
    uint64_t since = __atomic_load_n(&p->dirty_since, __ATOMIC_RELAXED);
    return p->release && since ? since + GREEN_SCAVENGE_DELAY_NS : GREEN_FOREVER;
}

void green__pool_scavenge(struct green__pool *p)
{
    if (green__pool_release_due(p) > green__clock_ns() ||
        green__os_mutex_trylock(&p->lock) != 0)
        return;
    __atomic_store_n(&p->dirty_since, 0, __ATOMIC_RELAXED);
    if (p->nfree - p->nclean >= GREEN_SCAVENGE_MIN) {
        qsort(p->free + p->nclean, p->nfree - p->nclean, sizeof *p->free, by_address);
        size_t i = p->nclean;
        while (i < p->nfree) {
            size_t j = i + 1;
            while (j < p->nfree &&
                   (char *)p->free[j] - (char *)p->free[j - 1] == (ptrdiff_t)p->slot)
                j++;
            char *lo = slot_of(p, p->free[i]) + p->guard;
            char *hi = slot_of(p, p->free[j - 1]) + p->slot;
            madvise(lo, (size_t)(hi - lo), MADV_DONTNEED);
            i = j;
        }
        p->nclean = p->nfree;
    }
    green__os_mutex_unlock(&p->lock);
}

bool green__pool_owns(struct green__pool *p, const void *obj)
{
    unsigned n = atomic_load_explicit(&p->nregions, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        const struct green__region *r = &p->regions[i];
        uintptr_t off = (uintptr_t)obj - (uintptr_t)r->base;
        if ((uintptr_t)obj < (uintptr_t)r->base + p->obj_off || off >= r->size)
            continue;
        off -= p->obj_off;
        size_t rem = p->slot_shift ? off & (p->slot - 1) : off % p->slot;
        return rem == 0 &&
               off < atomic_load_explicit(&r->used, memory_order_acquire);
    }
    return false;
}

void green__pool_foreach(struct green__pool *p, void (*fn)(void *obj, void *arg), void *arg)
{
    unsigned n = atomic_load(&p->nregions);
    for (unsigned i = 0; i < n; i++) {
        struct green__region *r = &p->regions[i];
        size_t used = atomic_load(&r->used);
        for (size_t off = 0; off < used; off += p->slot)
            fn(r->base + off + p->obj_off, arg);
    }
}
