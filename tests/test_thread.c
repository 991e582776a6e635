/* Green threads: spawn, join, detach, identity.
 *
 * Each Criterion test runs in its own process, so each calls green_run
 * itself.  Results are gathered into plain structs inside the green threads
 * and checked after green_run returns.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

/* ---- spawn and join ----------------------------------------------------- */

static void *twice(void *arg) { return P(U(arg) * 2); }

struct join_result {
    int spawn_rc, join_rc;
    uintptr_t value;
};

static void *spawn_and_join_main(void *arg)
{
    struct join_result *r = arg;
    green_t t;
    r->spawn_rc = green_spawn(&t, twice, P(21));
    if (r->spawn_rc != 0)
        return NULL;
    void *v = NULL;
    r->join_rc = green_join(t, &v);
    r->value = U(v);
    return NULL;
}

Test(thread, join_returns_the_result_of_the_spawned_function, .timeout = 5)
{
    struct join_result r = {-1, -1, 0};
    cr_assert_eq(run(spawn_and_join_main, &r, 2, -1, NULL), 0);
    cr_expect_eq(r.spawn_rc, 0);
    cr_expect_eq(r.join_rc, 0);
    cr_expect_eq(r.value, 42u);
}

static void *main_returning(void *arg) { return P(U(arg) + 1); }

Test(thread, green_run_hands_back_the_result_of_main, .timeout = 5)
{
    void *ret = NULL;
    cr_assert_eq(run(main_returning, P(99), 2, -1, &ret), 0);
    cr_expect_eq(U(ret), 100u);
}

struct finished {
    atomic_int done;
    int join_rc;
    uintptr_t value;
};

static void *finish_quickly(void *arg)
{
    struct finished *f = arg;
    atomic_store(&f->done, 1);
    return P(7);
}

static void *join_finished_main(void *arg)
{
    struct finished *f = arg;
    green_t t;
    if (green_spawn(&t, finish_quickly, f) != 0)
        return NULL;
    while (!atomic_load(&f->done))
        green_yield();
    green_sleep_ns(5 * 1000 * 1000);  /* let it exit completely */
    void *v = NULL;
    f->join_rc = green_join(t, &v);
    f->value = U(v);
    return NULL;
}

Test(thread, join_of_an_already_finished_thread_returns_its_result, .timeout = 5)
{
    struct finished f = {.join_rc = -1};
    cr_assert_eq(run(join_finished_main, &f, 2, -1, NULL), 0);
    cr_expect_eq(f.join_rc, 0);
    cr_expect_eq(f.value, 7u);
}

static void *join_null_ret_main(void *arg)
{
    int *rc = arg;
    green_t t;
    if (green_spawn(&t, twice, P(1)) == 0)
        *rc = green_join(t, NULL);
    return NULL;
}

Test(thread, join_accepts_a_null_result_pointer, .timeout = 5)
{
    int rc = -1;
    cr_assert_eq(run(join_null_ret_main, &rc, 2, -1, NULL), 0);
    cr_expect_eq(rc, 0);
}

struct join_until {
    atomic_int release;
    int early_rc, late_rc;
    uint64_t waited_ns;
    uintptr_t value;
};

static void *wait_for_release(void *arg)
{
    struct join_until *j = arg;
    while (!atomic_load(&j->release))
        green_sleep_ns(1000 * 1000);
    return P(5);
}

static void *join_until_main(void *arg)
{
    struct join_until *j = arg;
    green_t t;
    if (green_spawn(&t, wait_for_release, j) != 0)
        return NULL;
    uint64_t t0 = green_now_ns();
    j->early_rc = green_join_until(t, NULL, t0 + 20 * 1000 * 1000);
    j->waited_ns = green_now_ns() - t0;
    atomic_store(&j->release, 1);
    void *v = NULL;
    j->late_rc = green_join_until(t, &v, GREEN_FOREVER);
    j->value = U(v);
    return NULL;
}

Test(thread, join_until_times_out_on_a_running_thread_and_a_later_join_still_works,
     .timeout = 5)
{
    struct join_until j = {.early_rc = -1, .late_rc = -1};
    cr_assert_eq(run(join_until_main, &j, 2, -1, NULL), 0);
    cr_expect_eq(j.early_rc, ETIMEDOUT);
    cr_expect_geq(j.waited_ns, 20u * 1000 * 1000, "returned early: %llu ns",
                  (unsigned long long)j.waited_ns);
    cr_expect_eq(j.late_rc, 0);
    cr_expect_eq(j.value, 5u);
}

/* ---- detach ------------------------------------------------------------- */

struct detached {
    atomic_int ran;
    int detach_rc;
};

static void *mark_after_sleep(void *arg)
{
    struct detached *d = arg;
    green_sleep_ns(10 * 1000 * 1000);
    atomic_fetch_add(&d->ran, 1);
    return NULL;
}

static void *detach_main(void *arg)
{
    struct detached *d = arg;
    green_t t;
    if (green_spawn(&t, mark_after_sleep, d) != 0)
        return NULL;
    d->detach_rc = green_detach(t);
    return NULL;
}

Test(thread, a_detached_thread_still_runs_to_completion, .timeout = 5)
{
    struct detached d = {.detach_rc = -1};
    cr_assert_eq(run(detach_main, &d, 2, -1, NULL), 0);
    cr_expect_eq(d.detach_rc, 0);
    cr_expect_eq(atomic_load(&d.ran), 1);
}

#define NDETACHED 50

struct spawn_null {
    atomic_int ran;
    int rcs[NDETACHED];
};

static void *bump_after_sleep(void *arg)
{
    struct spawn_null *s = arg;
    green_sleep_ns(50 * 1000 * 1000);
    atomic_fetch_add(&s->ran, 1);
    return NULL;
}

static void *spawn_null_main(void *arg)
{
    struct spawn_null *s = arg;
    for (int i = 0; i < NDETACHED; i++)
        s->rcs[i] = green_spawn(NULL, bump_after_sleep, s);
    return NULL;  /* main returns at once: green_run must wait for them */
}

Test(thread, spawn_with_a_null_handle_starts_a_detached_thread_that_green_run_waits_for,
     .timeout = 5)
{
    struct spawn_null s;
    memset(&s, 0, sizeof s);
    uint64_t t0 = mono_ns();
    cr_assert_eq(run(spawn_null_main, &s, 2, -1, NULL), 0);
    uint64_t took = mono_ns() - t0;
    for (int i = 0; i < NDETACHED; i++)
        cr_expect_eq(s.rcs[i], 0, "spawn %d returned %d", i, s.rcs[i]);
    cr_expect_eq(atomic_load(&s.ran), NDETACHED,
                 "green_run returned before every detached thread finished");
    cr_expect_geq(took, 50u * 1000 * 1000);
}

/* ---- identity ----------------------------------------------------------- */

#define NIDS 100

struct ids {
    green_t handles[NIDS];
    uint64_t self_ids[NIDS];    /* green_id(green_self()) as seen by each thread */
    uint64_t main_id;
    int spawn_rcs[NIDS];
    int self_matches[NIDS];
};

struct id_slot {
    struct ids *ids;
    int i;
};

static void *record_self(void *arg)
{
    struct id_slot *s = arg;
    green_t me = green_self();
    s->ids->self_ids[s->i] = green_id(me);
    return NULL;
}

static void *ids_main(void *arg)
{
    struct ids *ids = arg;
    static struct id_slot slots[NIDS];
    ids->main_id = green_id(green_self());
    for (int i = 0; i < NIDS; i++) {
        slots[i] = (struct id_slot){ids, i};
        ids->spawn_rcs[i] = green_spawn(&ids->handles[i], record_self, &slots[i]);
    }
    for (int i = 0; i < NIDS; i++)
        if (ids->spawn_rcs[i] == 0)
            green_join(ids->handles[i], NULL);
    return NULL;
}

Test(thread, ids_are_nonzero_unique_and_agree_with_green_self, .timeout = 5)
{
    static struct ids ids;
    memset(&ids, 0, sizeof ids);
    cr_assert_eq(run(ids_main, &ids, 2, -1, NULL), 0);
    cr_expect_neq(ids.main_id, 0u, "main's id is zero");
    for (int i = 0; i < NIDS; i++) {
        cr_assert_eq(ids.spawn_rcs[i], 0);
        uint64_t id = green_id(ids.handles[i]);
        cr_expect_neq(id, 0u, "thread %d has id 0", i);
        cr_expect_eq(id, ids.self_ids[i], "handle id %llu, green_self id %llu",
                     (unsigned long long)id, (unsigned long long)ids.self_ids[i]);
        cr_expect_neq(id, ids.main_id);
        for (int j = 0; j < i; j++)
            cr_expect_neq(id, green_id(ids.handles[j]), "threads %d and %d share id %llu",
                          i, j, (unsigned long long)id);
    }
}

static void *self_id(void *arg)
{
    (void)arg;
    return P(green_id(green_self()));
}

Test(thread, ids_are_not_reused_by_a_later_green_run, .timeout = 5)
{
    void *a = NULL, *b = NULL;
    cr_assert_eq(run(self_id, NULL, 1, -1, &a), 0);
    cr_assert_eq(run(self_id, NULL, 1, -1, &b), 0);
    cr_expect_neq(U(a), 0u);
    cr_expect_neq(U(b), 0u);
    cr_expect_neq(U(a), U(b), "id %llu used by two runs", (unsigned long long)U(a));
}

Test(thread, green_self_is_the_zero_handle_outside_a_green_thread)
{
    green_t me = green_self();
    cr_expect_null(me.p);
    cr_expect_eq(me.id, 0u);
    cr_expect_eq(green_id(me), 0u);
    green_t zero;
    memset(&zero, 0, sizeof zero);
    cr_expect_eq(green_id(zero), 0u);
    cr_expect_eq(green_worker_index(), -1);
}

/* ---- threads spawned from threads --------------------------------------- */

/* A tree: each node spawns FANOUT children down to DEPTH and returns the
 * number of leaves under it; failures count as a huge number. */
#define FANOUT 4
#define DEPTH 5  /* 4^5 = 1024 leaves, 1365 threads */
#define FAIL_MARK 1000000u

static void *tree(void *arg)
{
    uintptr_t depth = U(arg);
    if (depth == DEPTH)
        return P(1);
    green_t kids[FANOUT];
    uintptr_t leaves = 0;
    int ok[FANOUT];
    for (int i = 0; i < FANOUT; i++) {
        ok[i] = green_spawn(&kids[i], tree, P(depth + 1)) == 0;
        if (!ok[i])
            leaves += FAIL_MARK;
        if (i % 2)
            green_yield();
    }
    for (int i = 0; i < FANOUT; i++) {
        void *v = NULL;
        if (!ok[i])
            continue;
        if (green_join(kids[i], &v) != 0)
            leaves += FAIL_MARK;
        else
            leaves += U(v);
    }
    return P(leaves);
}

Test(thread, threads_spawned_from_threads_are_joined_by_their_parents, .timeout = 10)
{
    void *leaves = NULL;
    cr_assert_eq(run(tree, P(0), 2, -1, &leaves), 0);
    cr_expect_eq(U(leaves), 1024u, "leaves = %lu", (unsigned long)U(leaves));
}

/* ---- worker index ------------------------------------------------------- */

#define NWI 64

struct worker_idx {
    atomic_int lo, hi;
};

static void *note_worker(void *arg)
{
    struct worker_idx *w = arg;
    for (int i = 0; i < 20; i++) {
        int k = green_worker_index();
        int cur = atomic_load(&w->lo);
        while (k < cur && !atomic_compare_exchange_weak(&w->lo, &cur, k))
            ;
        cur = atomic_load(&w->hi);
        while (k > cur && !atomic_compare_exchange_weak(&w->hi, &cur, k))
            ;
        green_yield();
    }
    return NULL;
}

static void *worker_idx_main(void *arg)
{
    green_t t[NWI];
    int ok[NWI];
    for (int i = 0; i < NWI; i++)
        ok[i] = green_spawn(&t[i], note_worker, arg) == 0;
    note_worker(arg);
    for (int i = 0; i < NWI; i++)
        if (ok[i])
            green_join(t[i], NULL);
    return NULL;
}

Test(thread, worker_index_stays_within_the_configured_worker_count, .timeout = 5)
{
    struct worker_idx w;
    atomic_init(&w.lo, 1000);
    atomic_init(&w.hi, -1000);
    cr_assert_eq(run(worker_idx_main, &w, 3, -1, NULL), 0);
    cr_expect_geq(atomic_load(&w.lo), 0);
    cr_expect_leq(atomic_load(&w.hi), 2);
}
