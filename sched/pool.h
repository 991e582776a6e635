/* Private to libgreen. */
/*
 * Pools of fixed-size slots -- stacks, control blocks, key pages -- with a
 * per-worker cache in front of each (pool.c).
 */
#ifndef GREEN_POOL_H
#define GREEN_POOL_H

#include "base.h"

#include <sys/uio.h>

/* ---- Pools (pool.c) ---------------------------------------------------- */

#define GREEN_MAX_REGIONS 48

struct green__region {
    char *base;
    size_t size;
    _Atomic size_t used;             /* bytes handed out, from base */
    size_t prepared;                 /* bytes of slots guarded and touched ahead */
};

/* A worker's private LIFO of free objects of one pool. */
struct green__cache {
    void *head;
    unsigned n;
};

struct green__pool {
    size_t slot;                     /* bytes per slot */
    unsigned slot_shift;             /* log2(slot) if a power of two, else 0 */
    size_t guard;                    /* guard bytes at the bottom of a slot */
    size_t obj_off;                  /* the object handed out: slot + obj_off */
    ptrdiff_t link_off;              /* a free object's cache link: obj + link_off */
    bool release;                    /* give free slots' pages back */
    bool use_mprotect;               /* kernel lacks MADV_GUARD_INSTALL */
    bool no_batch;                   /* process_madvise refused: a call a slot */
    size_t touch;                    /* bytes at each slot's top populated ahead */
    size_t huge_from;                /* a region's bytes past this: huge pages
                                      * (MADV_HUGEPAGE); 0: never */
    unsigned batch;                  /* slots the next preparation covers */
    struct iovec *prep_iov;          /* its ranges (under lock; not on a
                                      * green thread's small stack) */
    pthread_mutex_t lock;            /* regions (append), free array */
    struct green__region regions[GREEN_MAX_REGIONS];
    _Atomic unsigned nregions;
    size_t next_region_size;
    void **free;                     /* objects spilled by worker caches */
    size_t nfree, nclean, freecap;   /* [0, nclean) already released */
    uint64_t dirty_since;            /* when [nclean, nfree) began to fill; 0 */
};

/* pool.c */
size_t green__page_size(void);
int green__pool_init(struct green__pool *p, size_t slot, size_t guard, size_t obj_off,
                     ptrdiff_t link_off, size_t first_region, bool release, size_t touch);
void green__pool_destroy(struct green__pool *p);
void *green__pool_get_slow(struct green__pool *p, struct green__cache *c, int *err);
void green__pool_spill(struct green__pool *p, struct green__cache *c);

#define GREEN_POOL_CACHE 64u           /* slots a worker keeps per pool */

static inline void **green__pool_link(struct green__pool *p, void *obj)
{
    return (void **)((char *)obj + p->link_off);
}

/* An object from the worker's cache, else from the pool (may fail: *err). */
static inline void *green__pool_get(struct green__pool *p, struct green__cache *c, int *err)
{
    void *obj = c->head;
    if (GREEN_LIKELY(obj != NULL)) {
        c->head = *green__pool_link(p, obj);
        c->n--;
        return obj;
    }
    return green__pool_get_slow(p, c, err);
}

static inline void green__pool_put(struct green__pool *p, struct green__cache *c, void *obj)
{
    *green__pool_link(p, obj) = c->head;
    c->head = obj;
    if (GREEN_UNLIKELY(++c->n > GREEN_POOL_CACHE))
        green__pool_spill(p, c);
}
/* Release the pages of newly freed slots to the kernel (release pools). */
void green__pool_scavenge(struct green__pool *p);
/* When the next release is due (GREEN_FOREVER: nothing to release). */
uint64_t green__pool_release_due(struct green__pool *p);
/* Does obj name a slot's object handed out by p (free or in use)? */
bool green__pool_owns(struct green__pool *p, const void *obj);
/* Call fn on every object handed out so far (quiescent runtime only). */
void green__pool_foreach(struct green__pool *p, void (*fn)(void *obj, void *arg),
                         void *arg);

#endif /* GREEN_POOL_H */
