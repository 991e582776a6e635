/* The stress program's nopre component: nopreempt sections and GREEN_NOPREEMPT functions (stress.c says what it checks). */
#include "stress.h"

/* ---- nopre: nopreempt sections and GREEN_NOPREEMPT functions ------------- */

/* Each worker has an owner slot.  A thread inside a nopreempt section (or a
 * GREEN_NOPREEMPT function) claims its worker's slot, spins without calls
 * for a random while -- long enough for preemption signals and budgets to
 * come due -- and releases it.  Had it been switched out inside, another
 * thread of the same worker could claim the slot meanwhile: the claim or
 * the release would fail. */
#define NOPRE_WORKERS 64

struct nopre {
    struct round *r;
    int iterations;
    _Atomic uint64_t owner[NOPRE_WORKERS];
    atomic_long sections;
};

/* No libgreen call in here: in a GREEN_NOPREEMPT function such a call is a
 * switch point like any other (README). */
static bool nopre_hold(_Atomic uint64_t *slot, uint64_t me, unsigned spins)
{
    uint64_t none = 0;
    if (!atomic_compare_exchange_strong(slot, &none, me))
        return false;
    for (volatile unsigned i = 0; i < spins; i++)
        ;
    return atomic_exchange(slot, 0) == me;
}

GREEN_NOPREEMPT static bool nopre_function(_Atomic uint64_t *slot, uint64_t me, unsigned spins)
{
    return nopre_hold(slot, me, spins);
}

static void *nopre_thread(void *arg)
{
    struct targ *a = arg;
    struct nopre *np = a->comp;
    struct round *r = np->r;
    struct rng g = {a->seed};
    uint64_t me = green_id(green_self());
    for (int i = 0; i < np->iterations; i++) {
        unsigned spins = (unsigned)below(&g, 50000);
        bool ok;
        int w;
        OP(r);
        if (below(&g, 2)) {
            green_nopreempt_begin();
            w = green_worker_index();
            ok = nopre_hold(&np->owner[w], me, spins) && green_worker_index() == w;
            green_nopreempt_end();
        } else {
            /* A preemption between here and the call leaves the thread on
             * this worker (a preempted thread resumes where it was). */
            w = green_worker_index();
            ok = nopre_function(&np->owner[w], me, spins);
        }
        if (!ok)
            failf(r, "nopre: thread %" PRIu64 " was switched out inside a nopreempt %s",
                  me, "section or function");
        atomic_fetch_add(&np->sections, 1);
        maybe_yield(&g);
    }
    thread_done(r);
    return NULL;
}

void *nopre_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct nopre *np = calloc(1, sizeof *np);
    np->r = r;
    np->iterations = (int)between(&g, 10, 200);
    int n = (int)between(&g, 2, 12);
    struct targ *ta = targs(np, n, &g);
    green_t *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        spawn(r, &t[i], nopre_thread, &ta[i]);
    for (int i = 0; i < n; i++)
        join(r, t[i], NULL);
    if (atomic_load(&np->sections) != (long)n * np->iterations)
        failf(r, "nopre: %ld sections, expected %ld", atomic_load(&np->sections),
              (long)n * np->iterations);
    free(t);
    free(ta);
    free(np);
    free(da);
    thread_done(r);
    return NULL;
}

