/*
 * Timers: every deadline of a parked thread (sleep, and the _until variants
 * of every blocking call) is an entry in a per-worker binary min-heap.
 *
 * A thread adds its timer to the heap of the worker it parks on, and removes
 * it itself after it resumes (green__timer_cancel), whoever woke it: so a
 * timer never outlives the park it was made for, and the heap never holds a
 * dangling entry.  Firing is a claim like any other wake (green__claim): if a
 * send or a close claimed the thread first, the timer just drops out.
 *
 * Who fires them: a busy worker looks at its own heap every 64th switch and
 * whenever it looks for work; an idle worker becomes the "watcher" and sleeps
 * until the earliest deadline of all heaps, then fires every expired timer of
 * every heap.  A new timer earlier than the watcher's deadline wakes the
 * watcher (or, with none, an idle worker) so it can sleep less.
 *
 * timer_next is each heap's earliest deadline, readable without the lock.
 */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>

/* Requires: w->tlock held. */
static void place(struct green__worker *w, size_t i, struct green__timer tm)
{
    w->heap[i] = tm;
    tm.t->timer_idx = i + 1;
}

/* Requires: w->tlock held. */
static void sift_up(struct green__worker *w, size_t i)
{
    struct green__timer tm = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->heap[parent].deadline <= tm.deadline)
            break;
        place(w, i, w->heap[parent]);
        i = parent;
    }
    place(w, i, tm);
}

/* Requires: w->tlock held. */
static void sift_down(struct green__worker *w, size_t i)
{
    struct green__timer tm = w->heap[i];
    size_t n = w->ntimers;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && w->heap[c + 1].deadline < w->heap[c].deadline)
            c++;
        if (tm.deadline <= w->heap[c].deadline)
            break;
        place(w, i, w->heap[c]);
        i = c;
    }
    place(w, i, tm);
}

/* Requires: w->tlock held. */
static void remove_at(struct green__worker *w, size_t i)
{
    w->heap[i].t->timer_idx = 0;
    if (i != --w->ntimers) {
        struct green__thread *moved = w->heap[w->ntimers].t;
        place(w, i, w->heap[w->ntimers]);
        sift_down(w, i);
        if (w->heap[i].t == moved)   /* did not go down: may have to go up */
            sift_up(w, i);
    }
}

/* Requires: w->tlock held. */
static void publish_next(struct green__worker *w)
{
    atomic_store(&w->timer_next, w->ntimers ? w->heap[0].deadline : GREEN_FOREVER);
}

/* A new deadline the sleeping workers do not know about: make one of them
 * look again. */
static void poke_watcher(struct green__rt *rt, uint64_t deadline)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (deadline >= atomic_load(&rt->watch_until) || atomic_load(&rt->nidle) == 0)
        return;
    green__spin_lock(&rt->idle_lock);
    struct green__worker *v = rt->watcher;
    if (v)
        green__worker_wake(v);
    green__spin_unlock(&rt->idle_lock);
    if (!v)
        green__wakep(rt);
}

int green__timer_add(struct green__worker *w, struct green__thread *t, uint64_t deadline)
{
    green__spin_lock(&w->tlock);
    if (w->ntimers == w->heapcap) {
        size_t cap = w->heapcap ? w->heapcap * 2 : 64;
        struct green__timer *h = realloc(w->heap, cap * sizeof *h);
        if (!h) {
            green__spin_unlock(&w->tlock);
            return ENOMEM;
        }
        w->heap = h;
        w->heapcap = cap;
    }
    t->timer_w = w;
    w->heap[w->ntimers] = (struct green__timer){ deadline, t };
    sift_up(w, w->ntimers++);
    bool first = w->heap[0].t == t;
    publish_next(w);
    green__spin_unlock(&w->tlock);
    if (first)
        poke_watcher(w->rt, deadline);
    return 0;
}

void green__timer_cancel_slow(struct green__thread *t)
{
    struct green__worker *w = t->timer_w;
    green__spin_lock(&w->tlock);
    if (t->timer_idx) {
        remove_at(w, t->timer_idx - 1);
        publish_next(w);
    }
    green__spin_unlock(&w->tlock);
    t->timer_w = NULL;
}

unsigned green__timers_run(struct green__worker *w, struct green__worker *heap_of,
                           uint64_t now)
{
    struct green__worker *h = heap_of;
    struct green__thread *fired = NULL;
    unsigned n = 0;

    green__spin_lock(&h->tlock);
    while (h->ntimers > 0 && h->heap[0].deadline <= now) {
        struct green__thread *t = h->heap[0].t;
        remove_at(h, 0);
        if (green__claim(t)) {
            struct green__thread_cold *c = green__cold(t);   /* parked: it has run */
            c->wake_err = ETIMEDOUT;
            c->wake_from = NULL;
            t->next = fired;
            fired = t;
            n++;
        }
    }
    publish_next(h);
    green__spin_unlock(&h->tlock);

    /* A sleeper whose time has come runs next (the LIFO slot): its
     * lateness is what users of timers measure. */
    uint64_t by = fired ? green__trace_wakes_by(w, GREEN_TR_BY_TIMER) : 0;
    while (fired) {
        struct green__thread *t = fired;
        fired = t->next;
        green__ready(w, t, true);
    }
    if (n)
        green__trace_wakes_by(w, by);
    return n;
}

uint64_t green__timers_next(struct green__rt *rt)
{
    uint64_t next = GREEN_FOREVER;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        uint64_t d = atomic_load(&rt->workers[i].timer_next);
        if (d < next)
            next = d;
    }
    return next;
}

bool green__timers_pending(struct green__rt *rt)
{
    return green__timers_next(rt) != GREEN_FOREVER;
}

void green__timers_free(struct green__worker *w)
{
    free(w->heap);
    w->heap = NULL;
    w->ntimers = w->heapcap = 0;
}

/* A deterministic run with nothing runnable: its virtual clock jumps to the
 * next deadline (false: no timer is pending). */
bool green__det_idle(struct green__rt *rt)
{
    uint64_t next = green__timers_next(rt);
    if (next == GREEN_FOREVER)
        return false;
    if (next > rt->vnow)
        rt->vnow = next;
    return true;
}
