/*
 * Wait group: a counter and the threads waiting for it to reach zero.
 *
 * As Go's sync.WaitGroup, except that a counter driven below zero is an
 * error (EINVAL, counter unchanged) rather than a panic.  The counter and the
 * queue share one spinlock; the waiters are claimed while it is held and made
 * runnable after it is released.
 */
#include "sched.h"

#include <errno.h>
#include <string.h>

struct wg {
    green__spin_t lock;
    uint32_t unused;
    int64_t count;
    struct green__wq q;
};

_Static_assert(sizeof(struct wg) <= sizeof(green_wg_t), "green_wg_t too small");

static struct wg *impl(green_wg_t *g) { return (struct wg *)(void *)g; }

int green_wg_init(green_wg_t *g)
{
    return green__init_zero(g, sizeof *g);
}

int green_wg_destroy(green_wg_t *gp)
{
    if (!gp)
        return EINVAL;
    struct wg *g = impl(gp);
    return green__wq_busy(&g->lock, &g->q) ? EBUSY : 0;
}

int green_wg_add(green_wg_t *gp, int64_t delta)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, gp);
    if (err)
        return err;
    struct wg *g = impl(gp);
    struct green__thread *list = NULL;

    green__spin_lock(&g->lock);
    /* Below zero or past INT64_MAX: refused, the count unchanged.  (-delta
     * itself overflows for INT64_MIN, which no count can take.) */
    if ((delta < 0 && (delta == INT64_MIN || g->count < -delta)) ||
        (delta > 0 && g->count > INT64_MAX - delta)) {
        green__spin_unlock(&g->lock);
        return EINVAL;
    }
    g->count += delta;
    if (g->count == 0) {
        struct green__waiter *wt;
        while ((wt = green__wq_claim(&g->q)) != NULL) {
            wt->t->next = list;
            list = wt->t;
        }
    }
    green__spin_unlock(&g->lock);

    green__ready_list(w, list, false);
    return 0;
}

int green_wg_done(green_wg_t *g)
{
    return green_wg_add(g, -1);
}

int green_wg_wait_until(green_wg_t *gp, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, gp);
    if (err)
        return err;
    struct wg *g = impl(gp);
    struct green__waiter wt = { .t = self };

    green__spin_lock(&g->lock);
    if (g->count == 0) {
        green__spin_unlock(&g->lock);
        return 0;
    }
    return green__park_on(&w, &g->lock, &g->q, &wt, "green_wg_wait", g, deadline, false);
}

int green_wg_wait(green_wg_t *g)
{
    return green_wg_wait_until(g, GREEN_FOREVER);
}
