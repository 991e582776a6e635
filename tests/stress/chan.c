/* The stress program's msgs component: channels, select, close (stress.c says what it checks). */
#include "stress.h"

/* ---- msgs: channels, select, close --------------------------------------- */

#define MAXCH 4

struct msgs {
    struct round *r;
    int nch, nprod, nrecv, per_prod;
    green_chan_t *ch[MAXCH];
    green_wg_t producing;
    atomic_uchar *seen;           /* [nprod * per_prod] */
    atomic_long received, sum;
};

static void msgs_record(struct msgs *m, long v)
{
    long n = (long)m->nprod * m->per_prod;
    if (v < 0 || v >= n) {
        failf(m->r, "msgs: received %ld, never sent", v);
        return;
    }
    if (atomic_fetch_add(&m->seen[v], 1) != 0)
        failf(m->r, "msgs: message %ld delivered twice", v);
    atomic_fetch_add(&m->received, 1);
    atomic_fetch_add(&m->sum, v);
}

static void *msgs_producer(void *arg)
{
    struct targ *a = arg;
    struct msgs *m = a->comp;
    struct round *r = m->r;
    struct rng g = {a->seed};
    for (int seq = 0; seq < m->per_prod; seq++) {
        long v = (long)a->id * m->per_prod + seq;
        int rc;
        switch (below(&g, 3)) {
        case 0:
            expect_rc(r, green_chan_send(m->ch[below(&g, (uint64_t)m->nch)], &v), 0,
                      "green_chan_send");
            break;
        case 1: {
            green_chan_t *c = m->ch[below(&g, (uint64_t)m->nch)];
            do {
                OP(r);
                rc = green_chan_send_until(c, &v, green_now_ns() + between(&g, 50, 500) * US);
            } while (rc == ETIMEDOUT);
            expect_rc(r, rc, 0, "green_chan_send_until");
            break;
        }
        default: {
            green_chan_case_t cases[MAXCH];
            for (int i = 0; i < m->nch; i++)
                cases[i] = (green_chan_case_t){m->ch[i], GREEN_CHAN_SEND, &v, -1};
            size_t k = SIZE_MAX;
            expect_rc(r, green_select(cases, (size_t)m->nch, &k), 0, "green_select (send)");
            if (k >= (size_t)m->nch)
                failf(r, "msgs: select chose case %zu of %d", k, m->nch);
            else if (cases[k].err != 0)
                failf(r, "msgs: select send case err %d", cases[k].err);
        }
        }
        maybe_yield(&g);
    }
    free(a);
    thread_done(r);
    green_wg_done(&m->producing);  /* last touch of m */
    return NULL;
}

static void *msgs_receiver(void *arg)
{
    struct targ *a = arg;
    struct msgs *m = a->comp;
    struct round *r = m->r;
    struct rng g = {a->seed};
    long elems[MAXCH];
    green_chan_case_t cases[MAXCH];
    for (int i = 0; i < m->nch; i++)
        cases[i] = (green_chan_case_t){m->ch[i], GREEN_CHAN_RECV, &elems[i], -1};
    int open = m->nch;
    int mode = (int)below(&g, 4);
    while (open > 0) {
        size_t k = SIZE_MAX;
        int rc;
        OP(r);
        if (mode == 3) {  /* recv_until on one open channel */
            int i;
            do
                i = (int)below(&g, (uint64_t)m->nch);
            while (!cases[i].chan);
            long v = -1;
            rc = green_chan_recv_until(cases[i].chan, &v, green_now_ns() + below(&g, 1000) * US);
            if (rc == ETIMEDOUT)
                continue;
            if (rc == EPIPE) {
                if (v != 0)
                    failf(r, "msgs: recv at EPIPE left elem %ld, not zero", v);
                cases[i].chan = NULL;
                open--;
            } else if (rc == 0) {
                msgs_record(m, v);
            } else {
                failf(r, "msgs: green_chan_recv_until returned %d", rc);
                break;
            }
            continue;
        }
        if (mode == 0)
            rc = green_select(cases, (size_t)m->nch, &k);
        else if (mode == 1)
            rc = green_select_until(cases, (size_t)m->nch, &k,
                                    green_now_ns() + below(&g, 1000) * US);
        else
            rc = green_select_try(cases, (size_t)m->nch, &k);
        if ((mode == 1 && rc == ETIMEDOUT) || (mode == 2 && rc == EAGAIN)) {
            green_yield();
            continue;
        }
        if (rc != 0 || k >= (size_t)m->nch || !cases[k].chan) {
            failf(r, "msgs: select mode %d returned %d, chose %zu", mode, rc, k);
            break;
        }
        if (cases[k].err == EPIPE) {
            cases[k].chan = NULL;  /* closed and drained: a nil case from now on */
            open--;
        } else if (cases[k].err == 0) {
            msgs_record(m, elems[k]);
        } else {
            failf(r, "msgs: select recv case err %d", cases[k].err);
            break;
        }
        maybe_yield(&g);
    }
    free(a);
    thread_done(r);
    return NULL;
}

void *msgs_driver(void *arg)
{
    struct targ *da = arg;
    struct round *r = da->comp;
    struct rng g = {da->seed};
    struct msgs *m = calloc(1, sizeof *m);
    m->r = r;
    m->nch = (int)between(&g, 1, MAXCH);
    m->nprod = (int)between(&g, 1, 8);
    m->nrecv = (int)between(&g, 1, 8);
    m->per_prod = (int)between(&g, 50, 1500);
    long n = (long)m->nprod * m->per_prod;
    m->seen = calloc((size_t)n, sizeof *m->seen);
    static const size_t caps[] = {0, 1, 2, 16, 64};
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_create(&m->ch[i], sizeof(long), caps[below(&g, 5)]), 0,
                  "green_chan_create");
    green_wg_init(&m->producing);
    expect_rc(r, green_wg_add(&m->producing, m->nprod), 0, "green_wg_add");

    struct targ *ra = targs(m, m->nrecv, &g), *pa = targs(m, m->nprod, &g);
    green_t *rt = calloc((size_t)m->nrecv, sizeof *rt);
    green_t *pt = calloc((size_t)m->nprod, sizeof *pt);
    int *joinable = calloc((size_t)m->nprod, sizeof *joinable);
    for (int i = 0; i < m->nrecv; i++) {
        struct targ *a = malloc(sizeof *a);
        *a = ra[i];
        spawn(r, &rt[i], msgs_receiver, a);
    }
    for (int i = 0; i < m->nprod; i++) {
        struct targ *a = malloc(sizeof *a);
        *a = pa[i];
        int how = (int)below(&g, 3);  /* 0: spawn(NULL), 1: spawn+detach, 2: join later */
        spawn(r, how == 0 ? NULL : &pt[i], msgs_producer, a);
        if (how == 1)
            expect_rc(r, green_detach(pt[i]), 0, "green_detach");
        joinable[i] = how == 2;
    }
    expect_rc(r, green_wg_wait(&m->producing), 0, "green_wg_wait");
    for (int i = 0; i < m->nprod; i++)
        if (joinable[i])
            join(r, pt[i], NULL);
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_close(m->ch[i]), 0, "green_chan_close");
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_close(m->ch[i]), EPIPE, "green_chan_close (twice)");
    for (int i = 0; i < m->nrecv; i++)
        join(r, rt[i], NULL);
    if (atomic_load(&m->received) != n)
        failf(r, "msgs: %ld of %ld messages received", atomic_load(&m->received), n);
    if (atomic_load(&m->sum) != n * (n - 1) / 2)
        failf(r, "msgs: sum %ld, expected %ld", atomic_load(&m->sum), n * (n - 1) / 2);
    for (long v = 0; v < n; v++)
        if (atomic_load(&m->seen[v]) != 1) {
            failf(r, "msgs: message %ld received %d times", v, atomic_load(&m->seen[v]));
            break;
        }
    for (int i = 0; i < m->nch; i++)
        expect_rc(r, green_chan_destroy(m->ch[i]), 0, "green_chan_destroy");
    expect_rc(r, green_wg_destroy(&m->producing), 0, "green_wg_destroy");
    free(m->seen);
    free(m);
    free(ra);
    free(pa);
    free(rt);
    free(pt);
    free(joinable);
    free(da);
    thread_done(r);
    return NULL;
}

