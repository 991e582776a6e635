/*
 * Who holds a lock a green thread waits for (green__lock_holder): for lock
 * cycles (cycle.c), handoff and the long-wait warning (handoff.c).
 *
 * A green mutex names its holder (mutex.h).  A pthread mutex names an OS
 * thread: a worker, whose green thread holding it is either running there
 * or in the worker's holders list (foreign.c: a holder that left the CPU
 * is linked there, and stays on that worker).  Those lists are the
 * workers' own, so they are read racily: a pointer read is checked to be a
 * control block of the run (they stay mapped for the run's length), a walk
 * is bounded, and held lists are not unmapped while read
 * (green__held_readers).  A lock other than the caller's own may be freed
 * while it is read -- its waiter may have got it and gone on -- so it is
 * read with process_vm_readv, which fails instead of faulting.
 */
#include "foreign.h"
#include "mutex.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#define HOLDERS_WALK_MAX 4096        /* holders looked at on one worker */

/* Read n bytes at src, or fail (false) where nothing is mapped.  A
 * sandbox that refuses the call (seccomp) leaves cycles of more than one
 * thread and the long-wait warning blind: said once. */
static bool peek(void *dst, const void *src, size_t n)
{
    static _Atomic bool said;
    struct iovec local = { dst, n }, remote = { (void *)src, n };
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n)
        return true;
    if ((errno == EPERM || errno == ENOSYS) && !atomic_exchange(&said, true))
        green__write_str(2, "libgreen: warning: process_vm_readv is refused here: lock "
                            "cycles through other threads' locks and GREEN_LOCK_WARN_MS "
                            "cannot be seen\n");
    return false;
}


/* Is t a live control block of rt's? */
static bool thread_ok(struct green__rt *rt, const struct green__thread *t)
{
    return t && green__pool_owns(&rt->threads, t) && green__state(t) != GREEN_T_FREE;
}

static struct green__thread *green_mutex_holder(struct green__rt *rt, const void *lock, bool direct)
{
    struct green__mutex m;
    if (direct)
        memcpy(&m, lock, sizeof m);
    else if (!peek(&m, lock, sizeof m))
        return NULL;
    struct green__thread *t = atomic_load_explicit(&m.owner, memory_order_relaxed);
    uint64_t id = atomic_load_explicit(&m.owner_id, memory_order_relaxed);
    if (!thread_ok(rt, t) || __atomic_load_n(&t->id, __ATOMIC_RELAXED) != id)
        return NULL;
    return t;
}

/* Does t (not the caller) hold lock?  Its held list may be another thread's
 * to change: read under green__held_readers, the size first. */
static bool holds_racy(struct green__rt *rt, const struct green__thread *t, const void *lock)
{
    if (!thread_ok(rt, t))
        return false;
    bool found = false;
    atomic_fetch_add(&green__held_readers, 1);
    uint32_t cap = __atomic_load_n(&t->heldcap, __ATOMIC_ACQUIRE);
    const void *const *a = __atomic_load_n(&t->held, __ATOMIC_SEQ_CST);
    uint32_t n = __atomic_load_n(&t->nheld, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < n && i < cap && !found; i++)
        found = __atomic_load_n(&a[i], __ATOMIC_RELAXED) == lock;
    atomic_fetch_sub(&green__held_readers, 1);
    return found;
}

static struct green__thread *pthread_holder(struct green__rt *rt, struct green__thread *self,
                                            const void *lock, bool direct)
{
    const pthread_mutex_t *m = lock;
    pid_t tid;
    if (direct)
        tid = __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
    else if (!peek(&tid, &m->__data.__owner, sizeof tid))
        return NULL;
    if (tid == 0)
        return NULL;
    struct green__worker *w = NULL;
    for (unsigned i = 0; i < rt->nworkers && !w; i++)
        if (atomic_load_explicit(&rt->workers[i].tid, memory_order_relaxed) == tid)
            w = &rt->workers[i];
    if (!w)
        return NULL;                 /* a plain OS thread's: no green cycle */
    if (self && self->nheld && green__held_by(self, lock))
        return self;
    struct green__thread *c = __atomic_load_n(&w->cur, __ATOMIC_RELAXED);
    if (c != self && holds_racy(rt, c, lock))
        return c;
    c = __atomic_load_n(&w->holders, __ATOMIC_RELAXED);
    for (unsigned k = 0; c && k < HOLDERS_WALK_MAX; k++) {
        if (!thread_ok(rt, c))
            return NULL;
        if (c != self && holds_racy(rt, c, lock))
            return c;
        c = __atomic_load_n(&c->hold_next, __ATOMIC_RELAXED);
    }
    return NULL;
}

struct green__thread *green__lock_holder(struct green__rt *rt, struct green__thread *self,
                                        uintptr_t lw, bool direct)
{
    const void *lock = (const void *)(lw & ~(uintptr_t)GREEN_LW_MASK);
    switch (lw & GREEN_LW_KIND) {
    case GREEN_LW_GREEN:
        return green_mutex_holder(rt, lock, direct);
    case GREEN_LW_PTHREAD:
        return pthread_holder(rt, self, lock, direct);
    default:
        return NULL;
    }
}

