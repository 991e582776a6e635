/* Select over channels: ready cases, random choice, mixed send/recv, nil
 * (NULL) channels, the non-blocking form, deadlines, closed channels,
 * wake-ups, and many selectors sharing channels.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

#define NONE ((size_t)-1)

static green_chan_case_t recv_case(green_chan_t *c, void *elem)
{
    return (green_chan_case_t){.chan = c, .op = GREEN_CHAN_RECV, .elem = elem, .err = -1};
}

static green_chan_case_t send_case(green_chan_t *c, void *elem)
{
    return (green_chan_case_t){.chan = c, .op = GREEN_CHAN_SEND, .elem = elem, .err = -1};
}

/* ---- ready cases -------------------------------------------------------- */

struct pick {
    int rc, err;
    size_t chosen;
    long got, untouched;
    size_t len_a;
};

static void *pick_main(void *arg)
{
    struct pick *p = arg;
    green_chan_t *a, *b;
    if (green_chan_create(&a, sizeof(long), 1) || green_chan_create(&b, sizeof(long), 1))
        return P(1);
    long seven = 7;
    green_chan_send(b, &seven);
    long ea = -1, eb = -1;
    green_chan_case_t cases[2] = {recv_case(a, &ea), recv_case(b, &eb)};
    p->chosen = NONE;
    p->rc = green_select(cases, 2, &p->chosen);
    p->err = p->chosen < 2 ? cases[p->chosen].err : -1;
    p->got = eb;
    p->untouched = ea;
    p->len_a = green_chan_len(a);
    green_chan_destroy(a);
    green_chan_destroy(b);
    return NULL;
}

Test(select, picks_the_only_ready_case_and_receives_its_value, .timeout = 5)
{
    struct pick p;
    memset(&p, 0, sizeof p);
    void *ret = NULL;
    cr_assert_eq(run(pick_main, &p, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(p.rc, 0);
    cr_expect_eq(p.chosen, 1u);
    cr_expect_eq(p.err, 0);
    cr_expect_eq(p.got, 7);
    cr_expect_eq(p.untouched, -1, "the case not chosen had its elem written");
    cr_expect_eq(p.len_a, 0u);
}

#define NREADY 3
#define NTRIES 1500

static void *random_main(void *arg)
{
    int *counts = arg;  /* [NREADY], then one error count */
    green_chan_t *c[NREADY];
    green_chan_case_t cases[NREADY];
    long elems[NREADY];
    for (int i = 0; i < NREADY; i++) {
        if (green_chan_create(&c[i], sizeof(long), 1) != 0)
            return P(1);
        long v = i;
        green_chan_send(c[i], &v);
        cases[i] = recv_case(c[i], &elems[i]);
    }
    for (int n = 0; n < NTRIES; n++) {
        size_t k = NONE;
        if (green_select(cases, NREADY, &k) != 0 || k >= NREADY || elems[k] != (long)k) {
            counts[NREADY]++;
            continue;
        }
        counts[k]++;
        long v = (long)k;
        green_chan_send(c[k], &v);  /* make it ready again */
    }
    for (int i = 0; i < NREADY; i++)
        green_chan_destroy(c[i]);
    return NULL;
}

Test(select, chooses_at_random_among_several_ready_cases, .timeout = 5)
{
    int counts[NREADY + 1] = {0};
    void *ret = NULL;
    cr_assert_eq(run(random_main, counts, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(counts[NREADY], 0, "select failed or delivered the wrong value");
    for (int i = 0; i < NREADY; i++)
        cr_expect_geq(counts[i], NTRIES / NREADY / 3, "case %d chosen %d of %d times", i,
                      counts[i], NTRIES);
}

struct mixed {
    int rc1, rc2;
    size_t chosen1, chosen2;
    long sent_and_received, received;
    size_t len_b_after_1;
};

static void *mixed_main(void *arg)
{
    struct mixed *m = arg;
    green_chan_t *a, *b;
    if (green_chan_create(&a, sizeof(long), 1) || green_chan_create(&b, sizeof(long), 1))
        return P(1);
    long in = -1, out = 5;
    /* a empty, b has room: only the send can proceed. */
    green_chan_case_t cases[2] = {recv_case(a, &in), send_case(b, &out)};
    m->rc1 = green_select(cases, 2, &m->chosen1);
    m->len_b_after_1 = green_chan_len(b);
    /* a has a value, b is full: only the recv can proceed. */
    long three = 3;
    green_chan_send(a, &three);
    cases[0].err = cases[1].err = -1;
    m->rc2 = green_select(cases, 2, &m->chosen2);
    m->received = in;
    green_chan_recv(b, &m->sent_and_received);
    green_chan_destroy(a);
    green_chan_destroy(b);
    return NULL;
}

Test(select, mixes_send_and_recv_cases_and_performs_the_one_that_can_proceed,
     .timeout = 5)
{
    struct mixed m;
    memset(&m, 0, sizeof m);
    void *ret = NULL;
    cr_assert_eq(run(mixed_main, &m, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(m.rc1, 0);
    cr_expect_eq(m.chosen1, 1u, "chose the recv on an empty channel");
    cr_expect_eq(m.len_b_after_1, 1u);
    cr_expect_eq(m.sent_and_received, 5);
    cr_expect_eq(m.rc2, 0);
    cr_expect_eq(m.chosen2, 0u, "chose the send on a full channel");
    cr_expect_eq(m.received, 3);
}

struct nil {
    int wrong, errors;
    int only_nil_until_rc, only_nil_try_rc;
};

static void *nil_main(void *arg)
{
    struct nil *n = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(long), 1) != 0)
        return P(1);
    long e0 = 0, e1 = 0, e2 = 1;
    green_chan_case_t cases[3] = {recv_case(NULL, &e0), recv_case(c, &e1),
                                  send_case(NULL, &e2)};
    for (int i = 0; i < 200; i++) {
        long v = i;
        green_chan_send(c, &v);
        size_t k = NONE;
        if (green_select(cases, 3, &k) != 0)
            n->errors++;
        else if (k != 1 || e1 != i)
            n->wrong++;
    }
    green_chan_case_t nils[2] = {recv_case(NULL, &e0), send_case(NULL, &e2)};
    size_t k = NONE;
    n->only_nil_until_rc = green_select_until(nils, 2, &k, green_now_ns() + 10 * MS);
    n->only_nil_try_rc = green_select_try(nils, 2, &k);
    green_chan_destroy(c);
    return NULL;
}

Test(select, never_chooses_a_case_on_a_null_channel, .timeout = 5)
{
    struct nil n;
    memset(&n, 0, sizeof n);
    void *ret = NULL;
    cr_assert_eq(run(nil_main, &n, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(n.errors, 0);
    cr_expect_eq(n.wrong, 0, "a NULL channel case was chosen %d times", n.wrong);
    cr_expect_eq(n.only_nil_until_rc, ETIMEDOUT);
    cr_expect_eq(n.only_nil_try_rc, EAGAIN);
}

/* ---- non-blocking and deadlines ----------------------------------------- */

struct try_ {
    int none_rc, ready_rc;
    size_t none_chosen, ready_chosen;
    long none_elem, ready_elem;
    size_t len_full_after;
};

static void *try_main(void *arg)
{
    struct try_ *t = arg;
    green_chan_t *empty, *full, *u;
    if (green_chan_create(&empty, sizeof(long), 2) || green_chan_create(&full, sizeof(long), 1) ||
        green_chan_create(&u, sizeof(long), 0))
        return P(1);
    long v = 11;
    green_chan_send(full, &v);
    long in = -1, out = 22;
    green_chan_case_t none[3] = {recv_case(empty, &in), send_case(full, &out),
                                 recv_case(u, &in)};
    t->none_chosen = NONE;
    t->none_rc = green_select_try(none, 3, &t->none_chosen);
    t->none_elem = in;
    t->len_full_after = green_chan_len(full);
    green_chan_case_t ready[2] = {recv_case(empty, &in), recv_case(full, &in)};
    t->ready_rc = green_select_try(ready, 2, &t->ready_chosen);
    t->ready_elem = in;
    green_chan_destroy(empty);
    green_chan_destroy(full);
    green_chan_destroy(u);
    return NULL;
}

Test(select, select_try_is_eagain_when_nothing_is_ready_and_takes_a_ready_case_otherwise,
     .timeout = 5)
{
    struct try_ t;
    memset(&t, 0, sizeof t);
    void *ret = NULL;
    cr_assert_eq(run(try_main, &t, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(t.none_rc, EAGAIN);
    cr_expect_eq(t.none_elem, -1, "EAGAIN but a recv elem was written");
    cr_expect_eq(t.len_full_after, 1u);
    cr_expect_eq(t.ready_rc, 0);
    cr_expect_eq(t.ready_chosen, 1u);
    cr_expect_eq(t.ready_elem, 11);
}

struct until {
    int rc;
    uint64_t waited_ns;
    long elem;
    size_t len_after;
};

static void *until_main(void *arg)
{
    struct until *u = arg;
    green_chan_t *empty, *full;
    if (green_chan_create(&empty, sizeof(long), 1) || green_chan_create(&full, sizeof(long), 1))
        return P(1);
    long v = 1, in = -1, out = 2;
    green_chan_send(full, &v);
    green_chan_case_t cases[2] = {recv_case(empty, &in), send_case(full, &out)};
    size_t k = NONE;
    uint64_t t0 = green_now_ns();
    u->rc = green_select_until(cases, 2, &k, t0 + 20 * MS);
    u->waited_ns = green_now_ns() - t0;
    u->elem = in;
    u->len_after = green_chan_len(full);
    green_chan_destroy(empty);
    green_chan_destroy(full);
    return NULL;
}

Test(select, select_until_times_out_at_its_deadline_without_performing_a_case,
     .timeout = 5)
{
    struct until u;
    memset(&u, 0, sizeof u);
    void *ret = NULL;
    cr_assert_eq(run(until_main, &u, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(u.rc, ETIMEDOUT);
    cr_expect_geq(u.waited_ns, 20u * MS, "returned after %llu ns",
                  (unsigned long long)u.waited_ns);
    cr_expect_lt(u.waited_ns, 500u * MS);
    cr_expect_eq(u.elem, -1);
    cr_expect_eq(u.len_after, 1u);
}

/* ---- closed channels ---------------------------------------------------- */

struct closed {
    int recv_rc, send_rc;
    size_t recv_chosen, send_chosen;
    int recv_err, send_err;
    long recv_elem;
};

static void *closed_main(void *arg)
{
    struct closed *c = arg;
    green_chan_t *open, *shut;
    if (green_chan_create(&open, sizeof(long), 0) || green_chan_create(&shut, sizeof(long), 4))
        return P(1);
    green_chan_close(shut);
    long a = 5, b = 0x1234;
    green_chan_case_t rc[2] = {recv_case(open, &a), recv_case(shut, &b)};
    c->recv_rc = green_select(rc, 2, &c->recv_chosen);
    if (c->recv_chosen < 2)
        c->recv_err = rc[c->recv_chosen].err;
    c->recv_elem = b;
    long out = 1;
    green_chan_case_t sc[2] = {recv_case(open, &a), send_case(shut, &out)};
    c->send_rc = green_select(sc, 2, &c->send_chosen);
    if (c->send_chosen < 2)
        c->send_err = sc[c->send_chosen].err;
    green_chan_destroy(open);
    green_chan_destroy(shut);
    return NULL;
}

Test(select, a_closed_channel_case_is_chosen_with_err_epipe, .timeout = 5)
{
    struct closed c;
    memset(&c, 0, sizeof c);
    c.recv_err = c.send_err = -1;
    void *ret = NULL;
    cr_assert_eq(run(closed_main, &c, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(c.recv_rc, 0);
    cr_expect_eq(c.recv_chosen, 1u);
    cr_expect_eq(c.recv_err, EPIPE);
    cr_expect_eq(c.recv_elem, 0, "recv elem not zero-filled on a closed channel");
    cr_expect_eq(c.send_rc, 0);
    cr_expect_eq(c.send_chosen, 1u);
    cr_expect_eq(c.send_err, EPIPE);
}

static void *bad_case_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(long), 1) != 0)
        return P(1);
    long e = 0;
    size_t k = NONE;
    green_chan_case_t bad_op[1] = {{.chan = c, .op = 7, .elem = &e, .err = -1}};
    rc[0] = green_select_try(bad_op, 1, &k);
    rc[1] = green_select_until(bad_op, 1, &k, green_now_ns() + 10 * MS);
    rc[2] = green_select_until(NULL, 1, &k, green_now_ns() + 10 * MS);
    green_chan_destroy(c);
    return NULL;
}

Test(select, a_case_with_a_bad_op_or_no_cases_array_is_einval, .timeout = 5)
{
    int rc[3] = {-1, -1, -1};
    void *ret = NULL;
    cr_assert_eq(run(bad_case_main, rc, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(rc[0], EINVAL);
    cr_expect_eq(rc[1], EINVAL);
    cr_expect_eq(rc[2], EINVAL);
}

/* ---- waking a blocked select -------------------------------------------- */

#define NWAKE 4

struct woken {
    green_chan_t *c[NWAKE];
    int op;            /* the selector's op on every case */
    size_t chosen[NWAKE];
    int rcs[NWAKE];
    long elems[NWAKE][NWAKE];
    long peer_got[NWAKE];
};

struct woken_arg {
    struct woken *w;
    int round;
};

static void *selector(void *arg)
{
    struct woken_arg *a = arg;
    struct woken *w = a->w;
    green_chan_case_t cases[NWAKE];
    for (int i = 0; i < NWAKE; i++) {
        w->elems[a->round][i] = w->op == GREEN_CHAN_SEND ? 1000 + i : -1;
        cases[i] = (green_chan_case_t){w->c[i], w->op, &w->elems[a->round][i], -1};
    }
    w->chosen[a->round] = NONE;
    w->rcs[a->round] = green_select(cases, NWAKE, &w->chosen[a->round]);
    return NULL;
}

static void *woken_main(void *arg)
{
    struct woken *w = arg;
    static struct woken_arg args[NWAKE];
    for (int i = 0; i < NWAKE; i++)
        if (green_chan_create(&w->c[i], sizeof(long), 0) != 0)
            return P(1);
    for (int k = 0; k < NWAKE; k++) {
        args[k] = (struct woken_arg){w, k};
        green_t t;
        if (green_spawn(&t, selector, &args[k]) != 0)
            return P(1);
        green_sleep_ns(5 * MS);  /* let it block in select */
        long v = 100 + k;
        if (w->op == GREEN_CHAN_RECV)
            green_chan_send(w->c[k], &v);
        else
            green_chan_recv(w->c[k], &w->peer_got[k]);
        green_join(t, NULL);
    }
    for (int i = 0; i < NWAKE; i++)
        green_chan_destroy(w->c[i]);
    return NULL;
}

Test(select, a_blocked_receiving_select_is_woken_by_a_send_on_any_channel, .timeout = 5)
{
    static struct woken w;
    memset(&w, 0, sizeof w);
    w.op = GREEN_CHAN_RECV;
    void *ret = NULL;
    cr_assert_eq(run(woken_main, &w, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int k = 0; k < NWAKE; k++) {
        cr_expect_eq(w.rcs[k], 0);
        cr_expect_eq(w.chosen[k], (size_t)k, "send on channel %d chose case %zu", k,
                     w.chosen[k]);
        for (int i = 0; i < NWAKE; i++)
            cr_expect_eq(w.elems[k][i], i == k ? 100 + k : -1,
                         "round %d: case %d elem is %ld", k, i, w.elems[k][i]);
    }
}

Test(select, a_blocked_sending_select_is_woken_by_a_recv_on_any_channel, .timeout = 5)
{
    static struct woken w;
    memset(&w, 0, sizeof w);
    w.op = GREEN_CHAN_SEND;
    void *ret = NULL;
    cr_assert_eq(run(woken_main, &w, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int k = 0; k < NWAKE; k++) {
        cr_expect_eq(w.rcs[k], 0);
        cr_expect_eq(w.chosen[k], (size_t)k, "recv on channel %d chose case %zu", k,
                     w.chosen[k]);
        cr_expect_eq(w.peer_got[k], 1000 + k, "round %d received %ld", k, w.peer_got[k]);
    }
}

/* ---- many selectors ----------------------------------------------------- */

#define NCH 4
#define PER_CH 20000
#define NSELECTORS 8

struct crowd {
    size_t cap;
    green_chan_t *c[NCH];
    atomic_uchar seen[NCH * PER_CH];
    atomic_long received, sum;
    atomic_int dup, bogus, errors;
};

static void *crowd_sender(void *arg)
{
    struct crowd *cr = arg;
    static atomic_int next;
    int ch = atomic_fetch_add(&next, 1);
    for (long i = 0; i < PER_CH; i++) {
        long v = ch * PER_CH + i;
        if (green_chan_send(cr->c[ch], &v) != 0)
            atomic_fetch_add(&cr->errors, 1);
    }
    green_chan_close(cr->c[ch]);
    return NULL;
}

static void *crowd_selector(void *arg)
{
    struct crowd *cr = arg;
    long elems[NCH];
    green_chan_case_t cases[NCH];
    for (int i = 0; i < NCH; i++)
        cases[i] = recv_case(cr->c[i], &elems[i]);
    int open = NCH;
    while (open > 0) {
        size_t k = NONE;
        if (green_select(cases, NCH, &k) != 0 || k >= NCH) {
            atomic_fetch_add(&cr->errors, 1);
            return NULL;
        }
        if (cases[k].err == EPIPE) {
            cases[k].chan = NULL;  /* closed and drained: never again */
            open--;
            continue;
        }
        long v = elems[k];
        if (cases[k].err != 0 || v < 0 || v >= NCH * PER_CH || v / PER_CH != (long)k) {
            atomic_fetch_add(&cr->bogus, 1);
            continue;
        }
        if (atomic_fetch_add(&cr->seen[v], 1) != 0)
            atomic_fetch_add(&cr->dup, 1);
        atomic_fetch_add(&cr->received, 1);
        atomic_fetch_add(&cr->sum, v);
    }
    return NULL;
}

static void *crowd_main(void *arg)
{
    struct crowd *cr = arg;
    for (int i = 0; i < NCH; i++)
        if (green_chan_create(&cr->c[i], sizeof(long), cr->cap) != 0)
            return P(1);
    green_t s[NCH], r[NSELECTORS];
    for (int i = 0; i < NSELECTORS; i++)
        if (green_spawn(&r[i], crowd_selector, cr) != 0)
            return P(1);
    for (int i = 0; i < NCH; i++)
        if (green_spawn(&s[i], crowd_sender, cr) != 0)
            return P(1);
    for (int i = 0; i < NCH; i++)
        green_join(s[i], NULL);
    for (int i = 0; i < NSELECTORS; i++)
        green_join(r[i], NULL);
    for (int i = 0; i < NCH; i++)
        green_chan_destroy(cr->c[i]);
    return NULL;
}

static void check_crowd(size_t cap)
{
    static struct crowd cr;
    memset(&cr, 0, sizeof cr);
    cr.cap = cap;
    void *ret = NULL;
    cr_assert_eq(run(crowd_main, &cr, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    const long n = (long)NCH * PER_CH;
    cr_expect_eq(atomic_load(&cr.errors), 0);
    cr_expect_eq(atomic_load(&cr.bogus), 0);
    cr_expect_eq(atomic_load(&cr.dup), 0, "%d messages received twice", atomic_load(&cr.dup));
    cr_expect_eq(atomic_load(&cr.received), n);
    cr_expect_eq(atomic_load(&cr.sum), n * (n - 1) / 2);
}

Test(select, many_selectors_on_unbuffered_channels_receive_every_message_once,
     .timeout = 20)
{
    check_crowd(0);
}

Test(select, many_selectors_on_buffered_channels_receive_every_message_once,
     .timeout = 20)
{
    check_crowd(8);
}
