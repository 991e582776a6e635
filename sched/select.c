/*
 * Select: wait on several channel operations, perform exactly one.
 *
 * Go's selectgo, step for step:
 *   1. Shuffle the cases (the poll order), so that among ready cases each is
 *      chosen with equal chance.  Sort the distinct channels by address (the
 *      lock order), so that two selects never lock in opposite orders.
 *   2. Lock every channel, and try each case in poll order; the first that
 *      can proceed is performed.
 *   3. If none can, link one waiter per case into its channel's queue -- all
 *      for the same thread, so the first waker to claim the thread wins and
 *      the others skip it -- unlock, and park.
 *   4. On wake-up, lock every channel again and unlink the waiters that were
 *      not chosen.  The chosen one is its cold part's wake_from (set by the claim).
 *
 * Step 4 leaves out the channel of the waiter that fired when no other case
 * names it: that waiter was unlinked by the partner who claimed us, and the
 * partner may destroy the channel as soon as its own call returns.
 *
 * A NULL channel never proceeds (Go's nil channel).  green_select_try is
 * Go's `default:` case: step 3 becomes "return EAGAIN".  Scratch space for up
 * to GREEN_SELECT_STACK cases is on the stack; larger selects allocate.
 */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>

#define GREEN_SELECT_STACK 8

struct scratch {
    uint32_t *order;                 /* poll order: case indexes */
    green_chan_t **locks;            /* distinct channels, by address */
    struct green__waiter *waiters;   /* one per case */
    size_t nlocks;
};

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(green_chan_t *const *)a;
    uintptr_t y = (uintptr_t)*(green_chan_t *const *)b;
    return x < y ? -1 : x > y;
}

/* Lock / unlock every channel of s but `skip` (NULL: every one). */
static void lock_all_but(struct scratch *s, const green_chan_t *skip)
{
    for (size_t i = 0; i < s->nlocks; i++)
        if (s->locks[i] != skip)
            green__spin_lock(&s->locks[i]->lock);
}

static void unlock_all_but(struct scratch *s, const green_chan_t *skip)
{
    for (size_t i = s->nlocks; i-- > 0;)
        if (s->locks[i] != skip)
            green__spin_unlock(&s->locks[i]->lock);
}

static void lock_all(struct scratch *s) { lock_all_but(s, NULL); }
static void unlock_all(struct scratch *s) { unlock_all_but(s, NULL); }

/* The channel of case k, unless another case names it too. */
static green_chan_t *only_chan_of(const green_chan_case_t *cases, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++)
        if (i != k && cases[i].chan == cases[k].chan)
            return NULL;
    return cases[k].chan;
}

static int check_cases(const green_chan_case_t *cases, size_t n)
{
    if (n && !cases)
        return EINVAL;
    for (size_t i = 0; i < n; i++) {
        const green_chan_case_t *k = &cases[i];
        if (k->op != GREEN_CHAN_SEND && k->op != GREEN_CHAN_RECV)
            return EINVAL;
        if (k->chan && k->op == GREEN_CHAN_SEND && !k->elem && k->chan->esz)
            return EINVAL;
    }
    return 0;
}

static void plan(struct green__worker *w, green_chan_case_t *cases, size_t n,
                 struct scratch *s)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t j = green__rand_below(&w->rng, (uint32_t)i + 1);
        s->order[i] = s->order[j];
        s->order[j] = (uint32_t)i;
    }
    s->nlocks = 0;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan)
            s->locks[s->nlocks++] = cases[i].chan;
    qsort(s->locks, s->nlocks, sizeof *s->locks, by_address);
    size_t k = 0;
    for (size_t i = 0; i < s->nlocks; i++)
        if (k == 0 || s->locks[k - 1] != s->locks[i])
            s->locks[k++] = s->locks[i];
    s->nlocks = k;
}

/* Steps 2-4, with every channel of s locked on entry (unlocked on return). */
static int run_select(struct green__worker *w, struct green__thread *self,
                      green_chan_case_t *cases, size_t n, size_t *chosen,
                      uint64_t deadline, bool try, struct scratch *s)
{
    struct green__thread *wake = NULL;
    for (size_t k = 0; k < n; k++) {
        uint32_t i = s->order[k];
        green_chan_t *c = cases[i].chan;
        if (!c)
            continue;
        int err = cases[i].op == GREEN_CHAN_SEND
                      ? green__chan_send_locked(c, cases[i].elem, &wake)
                      : green__chan_recv_locked(c, cases[i].elem, &wake);
        if (err == EAGAIN)
            continue;
        unlock_all(s);
        if (wake)
            green__ready(w, wake, true);
        cases[i].err = err;
        *chosen = i;
        return 0;
    }
    if (try || green__expired(w->rt, deadline)) {
        unlock_all(s);
        return try ? EAGAIN : ETIMEDOUT;
    }

    green__park_prepare(self, "green_select", cases, false);
    for (size_t i = 0; i < n; i++) {
        green_chan_t *c = cases[i].chan;
        if (!c)
            continue;
        s->waiters[i] = (struct green__waiter){ .t = self, .elem = cases[i].elem,
                                                .index = (uint32_t)i };
        green__wq_push(cases[i].op == GREEN_CHAN_SEND ? &c->sendq : &c->recvq,
                       &s->waiters[i]);
    }
    unlock_all(s);

    int err = green__park(&w, deadline);
    struct green__waiter *fired = err ? NULL : green__cold(self)->wake_from;
    green__assert(err || (fired != NULL && fired >= s->waiters && fired < s->waiters + n));
    green_chan_t *gone = fired ? only_chan_of(cases, n, fired->index) : NULL;

    lock_all_but(s, gone);
    for (size_t i = 0; i < n; i++) {
        green_chan_t *c = cases[i].chan;
        if (c && c != gone && s->waiters[i].linked)
            green__wq_remove(cases[i].op == GREEN_CHAN_SEND ? &c->sendq : &c->recvq,
                             &s->waiters[i]);
    }
    unlock_all_but(s, gone);
    if (err)
        return err;
    cases[fired->index].err = fired->err;
    *chosen = fired->index;
    return 0;
}

static int do_select(green_chan_case_t *cases, size_t n, size_t *chosen,
                     uint64_t deadline, bool try)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (!chosen || n > UINT32_MAX || (err = check_cases(cases, n)) != 0)
        return err ? err : EINVAL;

    uint32_t order_buf[GREEN_SELECT_STACK];
    green_chan_t *locks_buf[GREEN_SELECT_STACK];
    struct green__waiter waiters_buf[GREEN_SELECT_STACK];
    struct scratch s = { order_buf, locks_buf, waiters_buf, 0 };
    void *heap = NULL;
    if (n > GREEN_SELECT_STACK) {
        size_t bytes = n * (sizeof *s.order + sizeof *s.locks + sizeof *s.waiters);
        heap = malloc(bytes);
        if (!heap)
            return ENOMEM;
        s.waiters = heap;
        s.locks = (green_chan_t **)(s.waiters + n);
        s.order = (uint32_t *)(s.locks + n);
    }

    plan(w, cases, n, &s);
    lock_all(&s);
    err = run_select(w, self, cases, n, chosen, deadline, try, &s);
    free(heap);
    return err;
}

int green_select(green_chan_case_t *cases, size_t n, size_t *chosen)
{
    return do_select(cases, n, chosen, GREEN_FOREVER, false);
}

int green_select_until(green_chan_case_t *cases, size_t n, size_t *chosen, uint64_t deadline)
{
    return do_select(cases, n, chosen, deadline, false);
}

int green_select_try(green_chan_case_t *cases, size_t n, size_t *chosen)
{
    return do_select(cases, n, chosen, GREEN_FOREVER, true);
}
