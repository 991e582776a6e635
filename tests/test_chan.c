/* Channels: FIFO order, exactly-once delivery, close, events, deadlines,
 * length and capacity, destroy and create errors.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- FIFO, one sender --------------------------------------------------- */

#define NORDER 50000

struct order {
    size_t cap;
    green_chan_t *c;
    long out_of_order, first_bad_at, first_bad_value;
    long received;
    int errors;
};

static void *send_in_order(void *arg)
{
    struct order *o = arg;
    for (long i = 0; i < NORDER; i++)
        if (green_chan_send(o->c, &i) != 0)
            o->errors++;
    return NULL;
}

static void *order_main(void *arg)
{
    struct order *o = arg;
    if (green_chan_create(&o->c, sizeof(long), o->cap) != 0)
        return P(1);
    green_t t;
    if (green_spawn(&t, send_in_order, o) != 0)
        return P(1);
    for (long i = 0; i < NORDER; i++) {
        long v = -1;
        if (green_chan_recv(o->c, &v) != 0) {
            o->errors++;
            continue;
        }
        o->received++;
        if (v != i && o->out_of_order++ == 0) {
            o->first_bad_at = i;
            o->first_bad_value = v;
        }
    }
    green_join(t, NULL);
    green_chan_destroy(o->c);
    return NULL;
}

ParameterizedTestParameters(chan, one_sender_values_arrive_in_order)
{
    static size_t caps[] = {0, 1, 16, 1000};
    return cr_make_param_array(size_t, caps, sizeof caps / sizeof caps[0]);
}

ParameterizedTest(size_t *cap, chan, one_sender_values_arrive_in_order, .timeout = 20)
{
    struct order o;
    memset(&o, 0, sizeof o);
    o.cap = *cap;
    void *ret = NULL;
    cr_assert_eq(run(order_main, &o, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(o.errors, 0);
    cr_expect_eq(o.received, NORDER);
    cr_expect_eq(o.out_of_order, 0, "cap %zu: %ld out of order, first at %ld got %ld",
                 o.cap, o.out_of_order, o.first_bad_at, o.first_bad_value);
}

/* ---- many senders ------------------------------------------------------- */

#define NSENDERS 8
#define PER_SENDER 10000

struct many {
    size_t cap;
    int receivers;
    green_chan_t *c;
    atomic_int next_sender;
    atomic_uchar seen[NSENDERS][PER_SENDER];
    atomic_long received;
    atomic_int dup, bogus, out_of_order, errors;
};

static void *tagged_sender(void *arg)
{
    struct many *m = arg;
    long s = atomic_fetch_add(&m->next_sender, 1);
    for (long i = 0; i < PER_SENDER; i++) {
        long v = s * PER_SENDER + i;
        if (green_chan_send(m->c, &v) != 0)
            atomic_fetch_add(&m->errors, 1);
    }
    return NULL;
}

static void *tagged_receiver(void *arg)
{
    struct many *m = arg;
    long last[NSENDERS];
    for (int s = 0; s < NSENDERS; s++)
        last[s] = -1;
    for (;;) {
        long v;
        int rc = green_chan_recv(m->c, &v);
        if (rc == EPIPE)
            return NULL;
        if (rc != 0) {
            atomic_fetch_add(&m->errors, 1);
            return NULL;
        }
        atomic_fetch_add(&m->received, 1);
        long s = v / PER_SENDER, i = v % PER_SENDER;
        if (v < 0 || s >= NSENDERS) {
            atomic_fetch_add(&m->bogus, 1);
            continue;
        }
        if (atomic_fetch_add(&m->seen[s][i], 1) != 0)
            atomic_fetch_add(&m->dup, 1);
        /* Each receiver sees each sender's values in increasing order. */
        if (i <= last[s])
            atomic_fetch_add(&m->out_of_order, 1);
        last[s] = i;
    }
}

static void *many_main(void *arg)
{
    struct many *m = arg;
    if (green_chan_create(&m->c, sizeof(long), m->cap) != 0)
        return P(1);
    green_t s[NSENDERS], r[8];
    for (int i = 0; i < m->receivers; i++)
        if (green_spawn(&r[i], tagged_receiver, m) != 0)
            return P(1);
    for (int i = 0; i < NSENDERS; i++)
        if (green_spawn(&s[i], tagged_sender, m) != 0)
            return P(1);
    for (int i = 0; i < NSENDERS; i++)
        green_join(s[i], NULL);
    green_chan_close(m->c);
    for (int i = 0; i < m->receivers; i++)
        green_join(r[i], NULL);
    green_chan_destroy(m->c);
    return NULL;
}

static void check_many(size_t cap, int receivers)
{
    static struct many m;
    memset(&m, 0, sizeof m);
    m.cap = cap;
    m.receivers = receivers;
    void *ret = NULL;
    cr_assert_eq(run(many_main, &m, 2, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(atomic_load(&m.errors), 0);
    cr_expect_eq(atomic_load(&m.bogus), 0);
    cr_expect_eq(atomic_load(&m.dup), 0, "%d values received twice", atomic_load(&m.dup));
    cr_expect_eq(atomic_load(&m.out_of_order), 0, "per-sender order broken %d times",
                 atomic_load(&m.out_of_order));
    cr_expect_eq(atomic_load(&m.received), (long)NSENDERS * PER_SENDER);
    int missing = 0;
    for (int s = 0; s < NSENDERS; s++)
        for (int i = 0; i < PER_SENDER; i++)
            missing += atomic_load(&m.seen[s][i]) == 0;
    cr_expect_eq(missing, 0, "%d values never received", missing);
}

ParameterizedTestParameters(chan, many_senders_keep_their_order_and_every_value_arrives_once)
{
    static size_t caps[] = {0, 1, 16, 1000};
    return cr_make_param_array(size_t, caps, sizeof caps / sizeof caps[0]);
}

ParameterizedTest(size_t *cap, chan, many_senders_keep_their_order_and_every_value_arrives_once,
                  .timeout = 20)
{
    check_many(*cap, 1);
}

ParameterizedTestParameters(chan, many_senders_and_receivers_deliver_every_value_once)
{
    static size_t caps[] = {0, 1, 16, 1000};
    return cr_make_param_array(size_t, caps, sizeof caps / sizeof caps[0]);
}

ParameterizedTest(size_t *cap, chan, many_senders_and_receivers_deliver_every_value_once,
                  .timeout = 20)
{
    check_many(*cap, 8);
}

/* ---- close -------------------------------------------------------------- */

static void *drain_after_close_main(void *arg)
{
    int *rc = arg;   /* rc[0..9] */
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(long), 4) != 0)
        return P(1);
    for (long v = 1; v <= 3; v++)
        green_chan_send(c, &v);
    rc[0] = green_chan_close(c);
    for (int i = 0; i < 3; i++) {
        long v = 0;
        rc[1 + 2 * i] = green_chan_recv(c, &v);
        rc[2 + 2 * i] = (int)v;
    }
    long v = 0x5a5a5a5a5a5aL;
    rc[7] = green_chan_recv(c, &v);
    rc[8] = v == 0;
    rc[9] = green_chan_recv(c, NULL);
    green_chan_destroy(c);
    return NULL;
}

Test(chan, buffered_values_are_still_received_after_close_then_epipe_with_a_zeroed_elem,
     .timeout = 5)
{
    int rc[10];
    memset(rc, 0xff, sizeof rc);
    void *ret = NULL;
    cr_assert_eq(green_run(drain_after_close_main, rc, NULL, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(rc[0], 0);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(rc[1 + 2 * i], 0, "recv %d after close: %d", i, rc[1 + 2 * i]);
        cr_expect_eq(rc[2 + 2 * i], i + 1);
    }
    cr_expect_eq(rc[7], EPIPE);
    cr_expect_eq(rc[8], 1, "elem not zero-filled at EPIPE");
    cr_expect_eq(rc[9], EPIPE);
}

static void *closed_errors_main(void *arg)
{
    int *rc = arg;
    green_chan_t *c;
    if (green_chan_create(&c, sizeof(int), 4) != 0)
        return P(1);
    rc[0] = green_chan_close(c);
    int v = 1;
    rc[1] = green_chan_send(c, &v);
    rc[2] = green_chan_send_until(c, &v, green_now_ns() + 10 * MS);
    rc[3] = green_chan_close(c);
    rc[4] = (int)green_chan_len(c);
    green_chan_destroy(c);
    green_chan_t *u;
    if (green_chan_create(&u, sizeof(int), 0) != 0)
        return P(1);
    green_chan_close(u);
    rc[5] = green_chan_send(u, &v);
    rc[6] = green_chan_close(u);
    green_chan_destroy(u);
    return NULL;
}

Test(chan, send_on_a_closed_channel_and_closing_twice_are_epipe, .timeout = 5)
{
    int rc[7];
    memset(rc, 0xff, sizeof rc);
    void *ret = NULL;
    cr_assert_eq(green_run(closed_errors_main, rc, NULL, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(rc[0], 0);
    cr_expect_eq(rc[1], EPIPE);
    cr_expect_eq(rc[2], EPIPE);
    cr_expect_eq(rc[3], EPIPE);
    cr_expect_eq(rc[4], 0, "a send on a closed channel buffered a value");
    cr_expect_eq(rc[5], EPIPE);
    cr_expect_eq(rc[6], EPIPE);
}

#define NBLOCKED 6

struct blocked {
    green_chan_t *c;
    int is_send;
    atomic_int started;
    int rcs[NBLOCKED];
    long elems[NBLOCKED];
};

struct blocked_arg {
    struct blocked *b;
    int i;
};

static void *block_on_chan(void *arg)
{
    struct blocked_arg *a = arg;
    struct blocked *b = a->b;
    long v = 0x77;
    atomic_fetch_add(&b->started, 1);
    if (b->is_send)
        b->rcs[a->i] = green_chan_send(b->c, &v);
    else
        b->rcs[a->i] = green_chan_recv(b->c, &v);
    b->elems[a->i] = v;
    return NULL;
}

static void *close_wakes_main(void *arg)
{
    struct blocked *b = arg;
    static struct blocked_arg args[NBLOCKED];
    green_t t[NBLOCKED];
    for (int i = 0; i < NBLOCKED; i++) {
        args[i] = (struct blocked_arg){b, i};
        if (green_spawn(&t[i], block_on_chan, &args[i]) != 0)
            return P(1);
    }
    while (atomic_load(&b->started) < NBLOCKED)
        green_yield();
    settle();
    if (green_chan_close(b->c) != 0)
        return P(2);
    for (int i = 0; i < NBLOCKED; i++)
        green_join(t[i], NULL);
    return NULL;
}

static void check_close_wakes(size_t cap, int is_send)
{
    static struct blocked b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < NBLOCKED; i++)
        b.rcs[i] = -1;
    b.is_send = is_send;
    cr_assert_eq(green_chan_create(&b.c, sizeof(long), cap), 0);
    void *ret = NULL;
    cr_assert_eq(run(close_wakes_main, &b, 1, GREEN_PREEMPT_OFF, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int i = 0; i < NBLOCKED; i++) {
        cr_expect_eq(b.rcs[i], EPIPE, "%s %d returned %d", is_send ? "sender" : "receiver", i,
                     b.rcs[i]);
        if (!is_send)
            cr_expect_eq(b.elems[i], 0, "receiver %d: elem not zero-filled", i);
    }
    green_chan_destroy(b.c);
}

Test(chan, close_wakes_blocked_receivers_with_epipe, .timeout = 5)
{
    check_close_wakes(0, 0);
}

Test(chan, close_wakes_blocked_receivers_of_a_buffered_channel_with_epipe, .timeout = 5)
{
    check_close_wakes(4, 0);
}

Test(chan, close_wakes_blocked_senders_with_epipe, .timeout = 5)
{
    check_close_wakes(0, 1);
}

static void *fill_then_block_main(void *arg)
{
    struct blocked *b = arg;
    long v = 1;
    for (size_t i = 0; i < green_chan_cap(b->c); i++)
        if (green_chan_send(b->c, &v) != 0)
            return P(3);
    return close_wakes_main(b);
}

Test(chan, close_wakes_senders_blocked_on_a_full_buffer_with_epipe, .timeout = 5)
{
    static struct blocked b;
    memset(&b, 0, sizeof b);
    b.is_send = 1;
    cr_assert_eq(green_chan_create(&b.c, sizeof(long), 3), 0);
    void *ret = NULL;
    cr_assert_eq(run(fill_then_block_main, &b, 1, GREEN_PREEMPT_OFF, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int i = 0; i < NBLOCKED; i++)
        cr_expect_eq(b.rcs[i], EPIPE, "sender %d returned %d", i, b.rcs[i]);
    cr_expect_eq(green_chan_len(b.c), 3u, "close dropped buffered values");
    green_chan_destroy(b.c);
}

/* close "may be called from any thread": a plain pthread closes it. */
struct pthread_close {
    green_chan_t *c;
    int close_rc, send_rc, recv_rc, value;
};

static void *pthread_closer(void *arg)
{
    struct pthread_close *pc = arg;
    pc->close_rc = green_chan_close(pc->c);
    return NULL;
}

static void *use_after_refused_close(void *arg)
{
    struct pthread_close *pc = arg;
    int v = 42;
    pc->send_rc = green_chan_send(pc->c, &v);
    pc->recv_rc = green_chan_recv(pc->c, &pc->value);
    return NULL;
}

/* Closing wakes green threads, so it is a call that needs a green thread:
 * from a plain pthread it is refused, and the channel stays open. */
Test(chan, close_from_a_plain_pthread_is_refused_with_eperm, .timeout = 5)
{
    struct pthread_close pc;
    memset(&pc, 0, sizeof pc);
    pc.close_rc = pc.send_rc = pc.recv_rc = -1;
    cr_assert_eq(green_chan_create(&pc.c, sizeof(int), 1), 0);
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, pthread_closer, &pc), 0);
    pthread_join(pt, NULL);
    cr_expect_eq(pc.close_rc, EPERM);
    cr_assert_eq(green_run(use_after_refused_close, &pc, NULL, NULL), 0);
    cr_expect_eq(pc.send_rc, 0, "the channel was closed after all");
    cr_expect_eq(pc.recv_rc, 0);
    cr_expect_eq(pc.value, 42);
    green_chan_destroy(pc.c);
}

/* ---- events (elem_size 0) ----------------------------------------------- */

struct events {
    int rc[8];
    size_t len_full;
    long received;
};

static void *event_sender(void *arg)
{
    green_chan_t *c = arg;
    char dummy = 0;
    for (int i = 0; i < 100; i++)
        green_chan_send(c, &dummy);
    return NULL;
}

static void *events_main(void *arg)
{
    struct events *e = arg;
    green_chan_t *b, *u;
    char dummy = 0;
    if (green_chan_create(&b, 0, 3) != 0 || green_chan_create(&u, 0, 0) != 0)
        return P(1);
    for (int i = 0; i < 3; i++)
        e->rc[i] = green_chan_send(b, &dummy);
    e->len_full = green_chan_len(b);
    e->rc[3] = green_chan_send_until(b, &dummy, green_now_ns() + 5 * MS);
    e->rc[4] = green_chan_recv(b, NULL);
    e->rc[5] = green_chan_recv(b, &dummy);
    green_t t;
    if (green_spawn(&t, event_sender, u) != 0)
        return P(1);
    for (int i = 0; i < 100; i++)
        if (green_chan_recv(u, NULL) == 0)
            e->received++;
    green_join(t, NULL);
    e->rc[6] = green_chan_destroy(b);
    e->rc[7] = green_chan_destroy(u);
    return NULL;
}

Test(chan, channels_of_zero_sized_elements_carry_events, .timeout = 5)
{
    struct events e;
    memset(&e, 0xff, sizeof e.rc);
    e.received = 0;
    void *ret = NULL;
    cr_assert_eq(green_run(events_main, &e, NULL, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int i = 0; i < 3; i++)
        cr_expect_eq(e.rc[i], 0);
    cr_expect_eq(e.len_full, 3u);
    cr_expect_eq(e.rc[3], ETIMEDOUT, "a 4th event fit a 3-slot channel");
    cr_expect_eq(e.rc[4], 0);
    cr_expect_eq(e.rc[5], 0);
    cr_expect_eq(e.received, 100);
    cr_expect_eq(e.rc[6], 0);
    cr_expect_eq(e.rc[7], 0);
}

/* ---- deadlines ---------------------------------------------------------- */

struct deadlines {
    int recv_rc, recv_unbuf_rc, send_rc, send_unbuf_rc;
    uint64_t recv_ns, recv_unbuf_ns, send_ns, send_unbuf_ns;
    size_t len_after;
    long elem_after;
};

static void *deadlines_main(void *arg)
{
    struct deadlines *d = arg;
    green_chan_t *b, *u;
    if (green_chan_create(&b, sizeof(long), 2) != 0 || green_chan_create(&u, sizeof(long), 0))
        return P(1);
    long v = 42;
    uint64_t t0 = green_now_ns();
    d->recv_rc = green_chan_recv_until(b, &v, t0 + 20 * MS);
    d->recv_ns = green_now_ns() - t0;
    d->elem_after = v;
    t0 = green_now_ns();
    d->recv_unbuf_rc = green_chan_recv_until(u, &v, t0 + 20 * MS);
    d->recv_unbuf_ns = green_now_ns() - t0;
    green_chan_send(b, &v);
    green_chan_send(b, &v);
    t0 = green_now_ns();
    d->send_rc = green_chan_send_until(b, &v, t0 + 20 * MS);
    d->send_ns = green_now_ns() - t0;
    d->len_after = green_chan_len(b);
    t0 = green_now_ns();
    d->send_unbuf_rc = green_chan_send_until(u, &v, t0 + 20 * MS);
    d->send_unbuf_ns = green_now_ns() - t0;
    green_chan_destroy(b);
    green_chan_destroy(u);
    return NULL;
}

Test(chan, send_until_and_recv_until_time_out_at_their_deadline, .timeout = 5)
{
    struct deadlines d;
    memset(&d, 0, sizeof d);
    void *ret = NULL;
    cr_assert_eq(green_run(deadlines_main, &d, NULL, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(d.recv_rc, ETIMEDOUT);
    cr_expect_eq(d.recv_unbuf_rc, ETIMEDOUT);
    cr_expect_eq(d.send_rc, ETIMEDOUT);
    cr_expect_eq(d.send_unbuf_rc, ETIMEDOUT);
    uint64_t ns[] = {d.recv_ns, d.recv_unbuf_ns, d.send_ns, d.send_unbuf_ns};
    for (int i = 0; i < 4; i++) {
        cr_expect_geq(ns[i], 20u * MS, "call %d returned early: %llu ns", i,
                      (unsigned long long)ns[i]);
        cr_expect_lt(ns[i], 500u * MS, "call %d returned late: %llu ns", i,
                     (unsigned long long)ns[i]);
    }
    cr_expect_eq(d.len_after, 2u, "a timed-out send buffered its value");
    cr_expect_eq(d.elem_after, 42, "a timed-out recv wrote its elem");
}

/* ---- len, cap, destroy, create ------------------------------------------ */

static void *len_cap_main(void *arg)
{
    size_t *out = arg;
    green_chan_t *b, *u;
    if (green_chan_create(&b, sizeof(int), 16) != 0 || green_chan_create(&u, sizeof(int), 0))
        return P(1);
    int v = 0;
    out[0] = green_chan_cap(b);
    out[1] = green_chan_len(b);
    for (int i = 0; i < 3; i++)
        green_chan_send(b, &v);
    out[2] = green_chan_len(b);
    green_chan_recv(b, &v);
    out[3] = green_chan_len(b);
    out[4] = green_chan_cap(u);
    out[5] = green_chan_len(u);
    green_chan_close(b);
    out[6] = green_chan_len(b);
    green_chan_destroy(b);
    green_chan_destroy(u);
    return NULL;
}

Test(chan, len_counts_buffered_values_and_cap_is_the_capacity, .timeout = 5)
{
    size_t out[7];
    memset(out, 0xff, sizeof out);
    void *ret = NULL;
    cr_assert_eq(green_run(len_cap_main, out, NULL, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(out[0], 16u);
    cr_expect_eq(out[1], 0u);
    cr_expect_eq(out[2], 3u);
    cr_expect_eq(out[3], 2u);
    cr_expect_eq(out[4], 0u);
    cr_expect_eq(out[5], 0u);
    cr_expect_eq(out[6], 2u, "close dropped buffered values");
}

struct destroy_waited {
    green_chan_t *c;
    atomic_int ready;
    int recv_rc, busy_rc, final_rc;
    int value;
};

static void *recv_one(void *arg)
{
    struct destroy_waited *d = arg;
    atomic_store(&d->ready, 1);
    d->recv_rc = green_chan_recv(d->c, &d->value);
    return NULL;
}

static void *destroy_waited_main(void *arg)
{
    struct destroy_waited *d = arg;
    if (green_chan_create(&d->c, sizeof(int), 0) != 0)
        return P(1);
    green_t t;
    if (green_spawn(&t, recv_one, d) != 0)
        return P(1);
    while (!atomic_load(&d->ready))
        green_yield();
    settle();
    d->busy_rc = green_chan_destroy(d->c);
    int v = 9;
    green_chan_send(d->c, &v);
    green_join(t, NULL);
    d->final_rc = green_chan_destroy(d->c);
    return NULL;
}

Test(chan, destroying_a_channel_a_thread_waits_on_is_ebusy, .timeout = 5)
{
    struct destroy_waited d;
    memset(&d, 0, sizeof d);
    d.recv_rc = d.busy_rc = d.final_rc = -1;
    void *ret = NULL;
    cr_assert_eq(run(destroy_waited_main, &d, 1, GREEN_PREEMPT_OFF, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(d.busy_rc, EBUSY);
    cr_expect_eq(d.recv_rc, 0);
    cr_expect_eq(d.value, 9);
    cr_expect_eq(d.final_rc, 0);
}

Test(chan, create_with_bad_arguments_is_einval)
{
    green_chan_t *c = NULL;
    cr_expect_eq(green_chan_create(NULL, sizeof(int), 4), EINVAL);
    cr_expect_eq(green_chan_create(&c, SIZE_MAX / 2, 4), EINVAL,
                 "elem_size * capacity overflows size_t");
    cr_expect_eq(green_chan_create(&c, 8, SIZE_MAX), EINVAL,
                 "elem_size * capacity overflows size_t");
}

Test(chan, create_and_destroy_work_outside_a_run)
{
    green_chan_t *c = NULL;
    cr_assert_eq(green_chan_create(&c, sizeof(int), 4), 0);
    cr_expect_not_null(c);
    cr_expect_eq(green_chan_cap(c), 4u);
    cr_expect_eq(green_chan_len(c), 0u);
    cr_expect_eq(green_chan_destroy(c), 0);
}
