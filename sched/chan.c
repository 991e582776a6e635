/*
 * Channels, with Go's semantics: unbuffered channels hand a value from
 * sender to receiver directly; buffered ones hold up to cap values in a ring.
 * Closing wakes every blocked sender and receiver; values already buffered
 * are still received, then receives fail with EPIPE.
 *
 * A value never waits in an intermediate place when a partner is blocked:
 * a sender that finds a blocked receiver copies straight into the receiver's
 * destination (on the receiver's stack, which stays put while it is
 * parked), and a receiver that takes from a full buffer pulls the first
 * blocked sender's value into the freed slot, so FIFO order holds.
 *
 * One spinlock per channel guards everything; select.c takes several of them
 * in address order.  Waiters claimed under the lock are made runnable after
 * it is released, into the waker's LIFO slot: the woken partner runs next,
 * with the value still hot in the cache.
 */
#include "sched.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *slot(green_chan_t *c, size_t i)
{
    return c->buf + (i % c->cap) * c->esz;
}

static void copy(void *dst, const void *src, size_t n)
{
    if (!dst)
        return;
    /* Most elements are a word or two: copy those without a call. */
    switch (n) {
    case 0: break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, n); break;
    }
}

int green_chan_create(green_chan_t **out, size_t esz, size_t cap)
{
    if (!out)
        return EINVAL;
    /* No object is larger than PTRDIFF_MAX bytes: not an element, nor the
     * channel with its buffer. */
    if (esz > (size_t)PTRDIFF_MAX ||
        (cap && esz > ((size_t)PTRDIFF_MAX - sizeof(green_chan_t)) / cap))
        return EINVAL;
    green_chan_t *c = calloc(1, sizeof *c + cap * esz);
    if (!c)
        return ENOMEM;
    c->esz = esz;
    c->cap = cap;
    c->buf = (unsigned char *)(c + 1);
    *out = c;
    return 0;
}

int green_chan_destroy(green_chan_t *c)
{
    if (!c)
        return EINVAL;
    green__spin_lock(&c->lock);
    bool busy = c->recvq.head || c->sendq.head;
    green__spin_unlock(&c->lock);
    if (busy)
        return EBUSY;
    free(c);
    return 0;
}

size_t green_chan_len(const green_chan_t *c)
{
    return c ? __atomic_load_n(&c->len, __ATOMIC_RELAXED) : 0;
}

size_t green_chan_cap(const green_chan_t *c)
{
    return c ? c->cap : 0;
}

/* Inlined into chan_op, the channel's hot path; select.c calls it through
 * green__chan_send_locked. */
static inline __attribute__((always_inline)) int send_locked(green_chan_t *c, const void *elem,
                                                             struct green__thread **wake)
{
    if (c->closed)
        return EPIPE;
    struct green__waiter *wt = green__wq_claim(&c->recvq);
    if (wt) {
        copy(wt->elem, elem, c->esz);
        wt->err = 0;
        *wake = wt->t;
        return 0;
    }
    if (c->len < c->cap) {
        copy(slot(c, c->head + c->len), elem, c->esz);
        c->len++;
        return 0;
    }
    return EAGAIN;
}

int green__chan_send_locked(green_chan_t *c, const void *elem, struct green__thread **wake)
{
    return send_locked(c, elem, wake);
}

int green__chan_recv_locked(green_chan_t *c, void *elem, struct green__thread **wake)
{
    struct green__waiter *wt;
    if (c->len > 0) {
        copy(elem, slot(c, c->head), c->esz);
        c->head = (c->head + 1) % c->cap;
        c->len--;
        /* A sender blocked on the full buffer moves its value in behind. */
        if ((wt = green__wq_claim(&c->sendq)) != NULL) {
            copy(slot(c, c->head + c->len), wt->elem, c->esz);
            c->len++;
            wt->err = 0;
            *wake = wt->t;
        }
        return 0;
    }
    if ((wt = green__wq_claim(&c->sendq)) != NULL) {
        copy(elem, wt->elem, c->esz);
        wt->err = 0;
        *wake = wt->t;
        return 0;
    }
    if (c->closed) {
        if (elem && c->esz)
            memset(elem, 0, c->esz);
        return EPIPE;
    }
    return EAGAIN;
}

/* Block on one channel: send (recv == false) or receive. */
static inline __attribute__((always_inline)) int chan_op(green_chan_t *c, void *elem, bool recv, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (!c || (!recv && !elem && c->esz))
        return EINVAL;

    struct green__thread *wake = NULL;
    green__spin_lock(&c->lock);
    err = recv ? green__chan_recv_locked(c, elem, &wake)
               : send_locked(c, elem, &wake);
    if (err != EAGAIN) {
        green__spin_unlock(&c->lock);
        if (wake)
            green__ready(w, wake, true);
        return err;
    }
    if (green__expired(w->rt, deadline)) {
        green__spin_unlock(&c->lock);
        return ETIMEDOUT;
    }
    struct green__waiter wt = { .t = self, .elem = elem };
    err = green__park_on(&w, &c->lock, recv ? &c->recvq : &c->sendq, &wt,
                         recv ? "green_chan_recv" : "green_chan_send", c, deadline, false);
    return err ? err : wt.err;
}

int green_chan_send_until(green_chan_t *c, const void *elem, uint64_t deadline)
{
    return chan_op(c, (void *)elem, false, deadline);
}

int green_chan_send(green_chan_t *c, const void *elem)
{
    return chan_op(c, (void *)elem, false, GREEN_FOREVER);
}

int green_chan_recv_until(green_chan_t *c, void *elem, uint64_t deadline)
{
    return chan_op(c, elem, true, deadline);
}

int green_chan_recv(green_chan_t *c, void *elem)
{
    return chan_op(c, elem, true, GREEN_FOREVER);
}

/* Claim every waiter of q, fail it with EPIPE, and chain its thread. */
static void fail_all(green_chan_t *c, struct green__wq *q, bool zero,
                     struct green__thread **list)
{
    struct green__waiter *wt;
    while ((wt = green__wq_claim(q)) != NULL) {
        if (zero && wt->elem && c->esz)
            memset(wt->elem, 0, c->esz);
        wt->err = EPIPE;
        wt->t->next = *list;
        *list = wt->t;
    }
}

int green_chan_close(green_chan_t *c)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, c);
    if (err)
        return err;
    struct green__thread *list = NULL;
    green__spin_lock(&c->lock);
    if (c->closed) {
        green__spin_unlock(&c->lock);
        return EPIPE;
    }
    c->closed = true;
    fail_all(c, &c->recvq, true, &list);
    fail_all(c, &c->sendq, false, &list);
    green__spin_unlock(&c->lock);
    green__ready_list(w, list, false);
    return 0;
}
