/*
 * Making threads runnable, and where: the caller's worker's LIFO slot or
 * ring (the global queue from a thread that is no worker), the pinned
 * queue of a worker for a thread preempted there, and the inbox of its
 * worker for a holder of foreign locks (holders run where they hold: their
 * locks' owner is that OS thread).  Then, when nobody is hunting for work
 * already, an idle worker is woken (green__wakep; loop.c has the protocol).
 *
 * Below the switch (switch.c), the timers and the parking of every blocking
 * call, which all make threads runnable through here.
 */
#include "foreign.h"

/* A preempted thread waits behind the threads queued in the ring when it
 * was preempted (pin_mark), as it would at the tail of a FIFO, and then
 * behind fresh work for GREEN_PINNED_WAIT_QUANTA quanta, a hold that fresh
 * work which is itself preempted restarts once (switch.c, turn_of_pinned).
 * now: a holder of foreign locks made runnable -- others may wait for what
 * it holds, so it need not wait for the ring. */
void green__pinned_push(struct green__worker *w, struct green__thread *t, bool now)
{
    t->next = NULL;
    __atomic_store_n(&t->pinned, true, __ATOMIC_RELAXED);
    t->pin_mark = atomic_load_explicit(now ? &w->q.head : &w->q.tail, memory_order_relaxed);
    t->pin_polled = false;
    t->pin_holder = t->nheld != 0;
    w->pinned_holders += t->pin_holder;
    if (w->pinned_tail)
        w->pinned_tail->next = t;
    else
        w->pinned_head = t;
    w->pinned_tail = t;
    green__add_relaxed(&w->npinned, 1);
}

void green__wakep(struct green__rt *rt)
{
    if (atomic_load(&rt->nidle) == 0 || atomic_load(&rt->nspinning) != 0)
        return;
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
        return;
    green__spin_lock(&rt->idle_lock);
    struct green__worker *v = rt->idle_list;
    if (!v) {
        green__spin_unlock(&rt->idle_lock);
        atomic_fetch_sub(&rt->nspinning, 1);
        return;
    }
    rt->idle_list = v->idle_next;
    v->idle = false;
    v->spinning = true;
    bool was_all = atomic_fetch_sub(&rt->nidle, 1) == rt->nworkers;
    green__spin_unlock(&rt->idle_lock);
    if (was_all)
        green__sysmon_kick(rt);
    green__worker_wake(v);
}

void green__worker_wake(struct green__worker *v)
{
    atomic_store_explicit(&v->wakeword, 1, memory_order_release);
    green__futex_wake(&v->wakeword, 1);
    /* A Dekker pair with go_idle: it publishes in_netpoll, then reads
     * wakeword. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&v->in_netpoll, memory_order_relaxed))
        green__netpoll_break(v->rt);
}

void green__ready(struct green__worker *w, struct green__thread *t, bool next)
{
    struct green__rt *rt = t->rt;
    bool wake = true;
    green__trace_woken(w, t);
    if (GREEN_UNLIKELY(t->nheld)) {
        green__ready_holder(w && w->rt == rt ? w : NULL, t);
        return;
    }
    green__set_state(t, GREEN_T_RUNNABLE);
    if (w && w->rt == rt) {
        if (next) {
            struct green__thread *old = green__runnext_swap(w, t);
            if (old)
                green__runq_push(w, old);
            else
                wake = atomic_load_explicit(&w->q.head, memory_order_relaxed) !=
                       atomic_load_explicit(&w->q.tail, memory_order_relaxed);
        } else {
            green__runq_push(w, t);
        }
    } else {
        green__globq_push(rt, t, t, 1);
    }
    if (wake) {
        atomic_thread_fence(memory_order_seq_cst);
        green__wakep(rt);
    }
}

unsigned green__ready_list(struct green__worker *w, struct green__thread *list, bool next)
{
    unsigned n = 0;
    while (list) {
        struct green__thread *t = list;
        list = t->next;              /* green__ready reuses t->next */
        green__ready(w, t, next);
        n++;
    }
    return n;
}

/* ---- Holders run where they hold ---------------------------------------- */

void green__ready_holder(struct green__worker *w, struct green__thread *t)
{
    struct green__worker *home = t->home;
    green__set_state(t, GREEN_T_RUNNABLE);
    if (w == home) {
        green__pinned_push(home, t, true);
        return;
    }
    green__spin_lock(&home->inbox_lock);
    t->next = NULL;
    if (home->inbox_tail)
        home->inbox_tail->next = t;
    else
        home->inbox_head = t;
    home->inbox_tail = t;
    atomic_fetch_add_explicit(&home->ninbox, 1, memory_order_seq_cst);
    green__spin_unlock(&home->inbox_lock);
    /* It may be asleep: go_idle looks at its inbox after publishing itself
     * idle, and this wake comes after the push. */
    green__worker_wake(home);
}

void green__inbox_drain(struct green__worker *w)
{
    green__spin_lock(&w->inbox_lock);
    struct green__thread *t = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    atomic_store_explicit(&w->ninbox, 0, memory_order_relaxed);
    green__spin_unlock(&w->inbox_lock);
    while (t) {
        struct green__thread *next = t->next;
        green__pinned_push(w, t, true);
        t = next;
    }
}

/* ---- Waiters ------------------------------------------------------------ */

struct green__waiter *green__wq_claim(struct green__wq *q)
{
    struct green__waiter *wt;
    while ((wt = q->head) != NULL) {
        green__wq_remove(q, wt);
        if (green__claim(wt->t)) {
            green__cold(wt->t)->wake_from = wt;
            return wt;
        }
    }
    return NULL;
}
