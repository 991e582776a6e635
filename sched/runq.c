/*
 * Run queues: a bounded local queue per worker, a LIFO slot, and one global
 * inject queue per run.  The shapes are Go's (runtime/proc.go: runqput,
 * runqget, runqgrab, globrunqget).
 *
 * Local queue: a ring of GREEN_RUNQ_SIZE slots.  Only the owning worker
 * pushes (it alone writes tail); the owner and stealers take from head with
 * a CAS.  A stealer copies the slots it wants and then CASes head past them,
 * so a copy made from a ring the owner has since overwritten is thrown away.
 * When the ring is full the owner moves half of it, plus the newcomer, to the
 * global queue in one batch.
 *
 * runnext (the LIFO slot) holds the thread most recently woken by this
 * worker: a receiver woken by a send runs next, on this worker, while its
 * data is hot in the cache.  It is touched on every message, so it is the
 * owner's alone, with plain loads and stores -- no locked instruction, which
 * is a fifth of a channel hop.  Stealers never take it.  Only when the owner
 * is stuck (the monitor sees no switch for a whole period while the slot is
 * full) does the monitor rescue it, by an asymmetric Dekker protocol:
 *
 *   owner:   rn_busy = 1; compiler barrier; if rn_rescue: back off;
 *            ... runnext ...; rn_busy = 0
 *   rescuer: rn_rescue = 1; membarrier(); wait for rn_busy == 0;
 *            take runnext; rn_rescue = 0
 *
 * membarrier(PRIVATE_EXPEDITED) runs a full barrier on every thread of the
 * process, so wherever it lands in the owner's sequence, either the owner
 * sees rn_rescue and backs off, or the rescuer sees rn_busy and waits.
 * Without membarrier (old kernel, seccomp) the slot falls back to Go's
 * scheme: an atomic exchange on both sides (rt->runnext_atomic).
 *
 * Global queue: a singly linked list under a spinlock, for overflow, for
 * threads made runnable from outside any worker, and for fairness (workers
 * look at it every 61st pick, as Go does, so it cannot starve).
 *
 * Memory order: a thread's fields are published by the release store of tail
 * (push) and read after the acquire load of tail (steal); a thread still
 * switching out is protected by its on_cpu flag, not by the queue.
 */
#include "sched.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MASK (GREEN_RUNQ_SIZE - 1)

static void slot_put(struct green__runq *q, uint32_t i, struct green__thread *t)
{
    atomic_store_explicit(&q->slot[i & MASK], t, memory_order_relaxed);
}

static struct green__thread *slot_get(struct green__runq *q, uint32_t i)
{
    return atomic_load_explicit(&q->slot[i & MASK], memory_order_relaxed);
}

/* Move half the ring and t to the global queue.  False if a stealer got
 * there first (the ring then has room again). */
static bool push_slow(struct green__worker *w, struct green__thread *t,
                      uint32_t head, uint32_t tail)
{
    struct green__runq *q = &w->q;
    uint32_t n = (tail - head) / 2;
    green__assert(n == GREEN_RUNQ_SIZE / 2);
    struct green__thread *batch[GREEN_RUNQ_SIZE / 2 + 1];
    for (uint32_t i = 0; i < n; i++)
        batch[i] = slot_get(q, head + i);
    if (!atomic_compare_exchange_strong_explicit(&q->head, &head, head + n,
                                                 memory_order_release,
                                                 memory_order_relaxed))
        return false;
    batch[n] = t;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->next = batch[i + 1];
    t->next = NULL;
    green__globq_push(w->rt, batch[0], t, n + 1);
    return true;
}

/* Requires: w is the caller's worker. */
void green__runq_push(struct green__worker *w, struct green__thread *t)
{
    struct green__runq *q = &w->q;
    for (;;) {
        uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (tail - head < GREEN_RUNQ_SIZE) {
            slot_put(q, tail, t);
            atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
            return;
        }
        if (push_slow(w, t, head, tail))
            return;
    }
}

/* Requires: w is the caller's worker. */
struct green__thread *green__runq_pop(struct green__worker *w)
{
    struct green__runq *q = &w->q;
    if (w->rt->nworkers == 1) {
        /* Nobody can steal from the only worker: no CAS needed. */
        uint32_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
        if (atomic_load_explicit(&q->tail, memory_order_relaxed) == head)
            return NULL;
        struct green__thread *t = slot_get(q, head);
        atomic_store_explicit(&q->head, head + 1, memory_order_relaxed);
        return t;
    }
    for (;;) {
        uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (tail == head)
            return NULL;
        struct green__thread *t = slot_get(q, head);
        if (atomic_compare_exchange_weak_explicit(&q->head, &head, head + 1,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return t;
    }
}

bool green__runq_empty(struct green__worker *w)
{
    uint32_t head = atomic_load_explicit(&w->q.head, memory_order_acquire);
    uint32_t tail = atomic_load_explicit(&w->q.tail, memory_order_acquire);
    return head == tail;
}

/* Copy about half of victim's ring into w's ring (from w's tail, not yet
 * published).  Returns how many. */
static uint32_t grab(struct green__worker *w, struct green__worker *victim)
{
    struct green__runq *vq = &victim->q, *q = &w->q;
    uint32_t mytail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    /* w may have threads of its own (a steal at a preemption, to balance):
     * take no more than its ring has room for. */
    uint32_t room = GREEN_RUNQ_SIZE -
                    (mytail - atomic_load_explicit(&q->head, memory_order_acquire));
    for (;;) {
        uint32_t head = atomic_load_explicit(&vq->head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&vq->tail, memory_order_acquire);
        uint32_t n = tail - head;
        n -= n / 2;
        if (n > room)
            n = room;
        if (n == 0)
            return 0;
        if (n > GREEN_RUNQ_SIZE / 2)
            continue;                /* read head and tail at different times */
        for (uint32_t i = 0; i < n; i++)
            slot_put(q, mytail + i, slot_get(vq, head + i));
        if (atomic_compare_exchange_strong_explicit(&vq->head, &head, head + n,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed))
            return n;
    }
}

struct green__thread *green__runq_steal(struct green__worker *w,
                                        struct green__worker *victim)
{
    struct green__runq *q = &w->q;
    uint32_t n = grab(w, victim);
    if (n == 0)
        return NULL;
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    struct green__thread *t = slot_get(q, tail + n - 1);
    if (n > 1) {
        uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
        green__assert(tail - head + n <= GREEN_RUNQ_SIZE);
        atomic_store_explicit(&q->tail, tail + n - 1, memory_order_release);
    }
    return t;
}

static bool membarrier_ok;

static void membarrier_register(void)
{
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    membarrier_ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

void green__runnext_mode(struct green__rt *rt)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    green__os_once(&once, membarrier_register);
    rt->runnext_atomic = !membarrier_ok;
}

struct green__thread *green__runnext_rescue(struct green__worker *w)
{
    struct green__thread *t;
    if (w->rt->runnext_atomic) {
        t = atomic_load_explicit(&w->runnext, memory_order_acquire);
        return t && atomic_compare_exchange_strong(&w->runnext, &t, NULL) ? t : NULL;
    }
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong(&w->rn_rescue, &zero, 1))
        return NULL;
    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    while (atomic_load_explicit(&w->rn_busy, memory_order_acquire))
        green__cpu_relax();
    t = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    if (t)
        atomic_store_explicit(&w->runnext, NULL, memory_order_relaxed);
    atomic_store_explicit(&w->rn_rescue, 0, memory_order_release);
    return t;
}

void green__globq_push(struct green__rt *rt, struct green__thread *first,
                       struct green__thread *last, size_t n)
{
    last->next = NULL;
    green__spin_lock(&rt->glock);
    if (rt->gtail)
        rt->gtail->next = first;
    else
        rt->ghead = first;
    rt->gtail = last;
    atomic_store_explicit(&rt->glen, atomic_load_explicit(&rt->glen, memory_order_relaxed) + n,
                          memory_order_release);
    green__spin_unlock(&rt->glock);
}

struct green__thread *green__globq_take(struct green__worker *w, size_t max)
{
    struct green__rt *rt = w->rt;
    if (atomic_load_explicit(&rt->glen, memory_order_acquire) == 0)
        return NULL;
    green__spin_lock(&rt->glock);
    size_t len = atomic_load_explicit(&rt->glen, memory_order_relaxed);
    size_t n = len / rt->nworkers + 1;     /* a fair share */
    if (n > len)
        n = len;
    if (n > max)
        n = max;
    if (n > GREEN_RUNQ_SIZE / 2)
        n = GREEN_RUNQ_SIZE / 2;
    struct green__thread *t = NULL;
    if (n > 0) {
        t = rt->ghead;
        struct green__thread *c = t;
        for (size_t i = 1; i < n; i++)
            c = c->next;
        rt->ghead = c->next;
        if (!rt->ghead)
            rt->gtail = NULL;
        c->next = NULL;
        atomic_store_explicit(&rt->glen, len - n, memory_order_release);
    }
    green__spin_unlock(&rt->glock);
    if (t) {
        for (struct green__thread *c = t->next, *nx; c; c = nx) {
            nx = c->next;
            green__runq_push(w, c);
        }
    }
    return t;
}
