/* Deterministic runs: one worker, the reduction budget, a virtual clock and
 * every choice drawn from the seed.  The same program with the same seed
 * gives the same schedule (digest) and the same observable behaviour;
 * different seeds give different schedules; timers fire in virtual time,
 * with no real waiting; and a planted race is found by trying seeds, then
 * reproduced by its seed.  (tests/replay.sh checks the same across
 * processes, where addresses differ.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "budget_work.h"

#define SEC (1000ull * MS)

static int run_det(void *(*fn)(void *), void *arg, uint64_t seed, int preempt)
{
    green_config_t cfg = config(0);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.seed = seed;
    cfg.preempt = preempt;
    cfg.budget = 4000;
    return green_run(fn, arg, &cfg, NULL);
}

/* ---- a program with threads, channels, a mutex, a cond, select, timers ------ */

#define PRODUCERS 12
#define RELAYS 4
#define PER_PRODUCER 40

struct prog {
    green_chan_t *raw, *relayed, *quit;
    green_mutex_t mu;
    green_cond_t cv;
    green_wg_t producers;
    uint64_t total;                  /* under mu */
    unsigned done;                   /* producers finished, under mu */
    /* results */
    uint64_t observed;               /* hash of the order values arrived in */
    uint64_t digest, seed, end_ns;
    int handler_was_default;
};

static void mixin(uint64_t *h, uint64_t v) { *h = (*h ^ v) * 0x100000001b3u; }

static struct prog *the_prog;

static void *producer(void *arg)
{
    struct prog *p = the_prog;
    uint64_t id = U(arg);            /* ids differ from run to run: indexes do not */
    for (uint64_t i = 0; i < PER_PRODUCER; i++) {
        green_mutex_lock(&p->mu);
        p->total += bw_fib(6);       /* instrumented: the budget ends slices here */
        green_mutex_unlock(&p->mu);
        uint64_t v = (id % 1000) * 1000 + i;
        green_chan_send(p->raw, &v);
        if (i % 8 == 0)
            green_sleep_ns((i + 1) * 1000);
    }
    green_mutex_lock(&p->mu);
    p->done++;
    green_cond_broadcast(&p->cv);
    green_mutex_unlock(&p->mu);
    green_wg_done(&p->producers);
    return NULL;
}

static void *relay(void *arg)
{
    struct prog *p = arg;
    for (;;) {
        uint64_t v;
        green_chan_case_t cs[2] = {
            { .chan = p->raw, .op = GREEN_CHAN_RECV, .elem = &v },
            { .chan = p->quit, .op = GREEN_CHAN_RECV },
        };
        size_t chosen;
        if (green_select(cs, 2, &chosen) != 0 || chosen == 1)
            return NULL;             /* main has every value: quit is closed */
        v = v * 10 + (uint64_t)bw_fib(3);
        green_chan_send(p->relayed, &v);
    }
}

static void *waiter(void *arg)
{
    struct prog *p = arg;
    green_wg_wait(&p->producers);
    green_mutex_lock(&p->mu);
    while (p->done < PRODUCERS)      /* the cond, for its own sake */
        green_cond_wait(&p->cv, &p->mu);
    mixin(&p->observed, p->total);
    green_mutex_unlock(&p->mu);
    return NULL;
}

static void *prog_main(void *arg)
{
    struct prog *p = arg;
    struct sigaction sa;
    sigaction(SIGALRM, NULL, &sa);
    p->handler_was_default = sa.sa_handler == SIG_DFL;
    if (green_chan_create(&p->raw, sizeof(uint64_t), 4) || green_chan_create(&p->relayed, sizeof(uint64_t), 0) ||
        green_chan_create(&p->quit, 0, 0))
        return P(1);
    green_mutex_init(&p->mu);
    green_cond_init(&p->cv);
    green_wg_init(&p->producers);
    green_wg_add(&p->producers, PRODUCERS);
    green_t t[PRODUCERS + RELAYS + 1];
    size_t n = 0;
    p->observed = 0xcbf29ce484222325u;
    the_prog = p;
    for (uint64_t i = 0; i < PRODUCERS; i++)
        green_spawn(&t[n++], producer, P(i));
    for (int i = 0; i < RELAYS; i++)
        green_spawn(&t[n++], relay, p);
    green_spawn(&t[n++], waiter, p);

    for (int i = 0; i < PRODUCERS * PER_PRODUCER; i++) {
        uint64_t v;
        if (green_chan_recv(p->relayed, &v) != 0)
            return P(2);
        mixin(&p->observed, v);
    }
    green_chan_close(p->quit);
    for (size_t i = 0; i < n; i++)
        green_join(t[i], NULL);
    p->end_ns = green_now_ns();
    green_schedule_digest(&p->digest, &p->seed);
    green_chan_destroy(p->raw);
    green_chan_destroy(p->relayed);
    green_chan_destroy(p->quit);
    return NULL;
}

static struct prog run_prog(uint64_t seed, int preempt)
{
    struct prog p;
    memset(&p, 0, sizeof p);
    void *ret = NULL;
    green_config_t cfg = config(0);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.seed = seed;
    cfg.preempt = preempt;
    cfg.budget = 4000;
    cr_assert_eq(green_run(prog_main, &p, &cfg, &ret), 0);
    cr_assert_null(ret, "the program failed (%p)", ret);
    cr_assert_eq(p.seed, seed);
    return p;
}

Test(deterministic, one_seed_gives_one_schedule_and_one_outcome, .timeout = 60)
{
    green_stats_t s0;
    green_stats(&s0);
    struct prog a = run_prog(42, GREEN_PREEMPT_SIGNAL);   /* signal: replaced by budget */
    struct prog b = run_prog(42, GREEN_PREEMPT_BUDGET);
    green_stats_t s1;
    green_stats(&s1);
    cr_log_info("seed 42: digest %016llx, observed %016llx, virtual end %llu ns",
                (unsigned long long)a.digest, (unsigned long long)a.observed,
                (unsigned long long)a.end_ns);
    cr_expect_eq(a.digest, b.digest, "digests %016llx / %016llx",
                 (unsigned long long)a.digest, (unsigned long long)b.digest);
    cr_expect_eq(a.observed, b.observed, "the values arrived in another order");
    cr_expect_eq(a.end_ns, b.end_ns, "the virtual clock ended elsewhere");
    cr_expect(a.handler_was_default && b.handler_was_default, "a signal handler was installed");
    cr_expect_eq(s1.signals_sent, s0.signals_sent, "a deterministic run sent signals");
    cr_expect_gt(s1.budget_yields, s0.budget_yields, "the budget never ended a slice");
}

Test(deterministic, different_seeds_give_different_schedules, .timeout = 60)
{
    enum { N = 8 };
    uint64_t digest[N], observed[N];
    unsigned distinct_observed = 0;
    for (int i = 0; i < N; i++) {
        struct prog p = run_prog((uint64_t)i + 1, GREEN_PREEMPT_BUDGET);
        digest[i] = p.digest;
        observed[i] = p.observed;
        bool seen = false;
        for (int j = 0; j < i; j++) {
            cr_expect_neq(digest[j], digest[i], "seeds %d and %d: one digest", j + 1, i + 1);
            seen |= observed[j] == observed[i];
        }
        distinct_observed += !seen;
    }
    cr_log_info("%d seeds: %d distinct digests expected, %u distinct arrival orders", N, N,
                distinct_observed);
    cr_expect_gt(distinct_observed, 1, "every seed gave the same arrival order");
}

Test(deterministic, with_preemption_off_a_run_is_still_replayed, .timeout = 60)
{
    struct prog a = run_prog(7, GREEN_PREEMPT_OFF), b = run_prog(7, GREEN_PREEMPT_OFF);
    cr_expect_eq(a.digest, b.digest);
    cr_expect_eq(a.observed, b.observed);
    struct prog c = run_prog(8, GREEN_PREEMPT_OFF);
    cr_expect_neq(a.digest, c.digest, "seeds 7 and 8: one digest");
}

/* ---- virtual time ---------------------------------------------------------- */

#define SLEEPERS 50

struct sleepers {
    uint64_t woke[SLEEPERS];         /* index of each sleeper, in waking order */
    unsigned nwoke;
    uint64_t start, end;
    int timed_out;
    uint64_t timeout_late;
};

static struct sleepers sl;

static void *sleeper(void *arg)
{
    uint64_t i = U(arg);
    /* In reverse order of spawning: sleeper i wakes at (SLEEPERS - i) * 200 ms. */
    green_sleep_until(sl.start + (SLEEPERS - i) * 200 * MS);
    sl.woke[sl.nwoke++] = i;
    return NULL;
}

static void *sleepers_main(void *arg)
{
    (void)arg;
    sl.start = green_now_ns();
    green_t t[SLEEPERS];
    for (uint64_t i = 0; i < SLEEPERS; i++)
        green_spawn(&t[i], sleeper, P(i));
    green_chan_t *c;
    green_chan_create(&c, 0, 0);
    uint64_t deadline = sl.start + 3 * SEC;
    sl.timed_out = green_chan_recv_until(c, NULL, deadline) == ETIMEDOUT;
    sl.timeout_late = green_now_ns() - deadline;
    green_chan_destroy(c);
    for (int i = 0; i < SLEEPERS; i++)
        green_join(t[i], NULL);
    sl.end = green_now_ns();
    return NULL;
}

Test(deterministic, timers_fire_in_virtual_time_in_order_without_waiting, .timeout = 30)
{
    memset(&sl, 0, sizeof sl);
    uint64_t t0 = mono_ns();
    cr_assert_eq(run_det(sleepers_main, NULL, 3, GREEN_PREEMPT_BUDGET), 0);
    uint64_t real = mono_ns() - t0;
    cr_log_info("%d sleepers over %.1f virtual s in %.1f real ms; a 3 s timeout fired %llu ns "
                "after its deadline",
                SLEEPERS, (double)(sl.end - sl.start) / 1e9, (double)real / 1e6,
                (unsigned long long)sl.timeout_late);
    cr_expect_eq(sl.nwoke, SLEEPERS);
    for (unsigned k = 0; k < sl.nwoke; k++)
        cr_expect_eq(sl.woke[k], SLEEPERS - 1 - k, "woke %u-th: sleeper %llu", k,
                     (unsigned long long)sl.woke[k]);
    cr_expect_geq(sl.start, 1000000000u, "the virtual clock starts at 1 s");
    cr_expect_geq(sl.end - sl.start, SLEEPERS * 200 * (uint64_t)MS);
    cr_expect_lt(sl.end - sl.start, SLEEPERS * 200 * (uint64_t)MS + 1 * MS, "%llu ns",
                 (unsigned long long)(sl.end - sl.start));
    cr_expect(sl.timed_out, "green_chan_recv_until did not time out");
    cr_expect_lt(sl.timeout_late, 1000, "the timeout came %llu virtual ns late",
                 (unsigned long long)sl.timeout_late);
    cr_expect_lt(real, 2 * SEC, "10 virtual seconds took %llu real ns", (unsigned long long)real);
}

struct spin_clock { uint64_t loops; };

static void *spin_on_clock(void *arg)
{
    /* Waits for time to pass by reading the clock, and nothing else: each
     * read is a reduction, so virtual time moves and the loop ends. */
    struct spin_clock *s = arg;
    uint64_t until = green_now_ns() + 100 * US;
    while (green_now_ns() < until)
        s->loops++;
    return NULL;
}

Test(deterministic, a_loop_that_waits_on_the_clock_ends, .timeout = 30)
{
    struct spin_clock s = { 0 };
    cr_assert_eq(run_det(spin_on_clock, &s, 1, GREEN_PREEMPT_BUDGET), 0);
    cr_expect_geq(s.loops, 99 * US);
    cr_expect_leq(s.loops, 100 * US);
}

/* ---- a planted race --------------------------------------------------------- */

#define DEPOSITORS 3
#define DEPOSITS 40

struct race {
    long balance;
    uint64_t digest;
};

static void *depositor(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < DEPOSITS; i++) {
        bw_fib(8);                   /* other work: 67 function entries */
        long b = r->balance;         /* the bug: read ... */
        bw_touch();                  /* ... a function entry, where a slice may end ... */
        r->balance = b + 1;          /* ... write back */
    }
    return NULL;
}

static void *race_main(void *arg)
{
    struct race *r = arg;
    green_t t[DEPOSITORS];
    for (int i = 0; i < DEPOSITORS; i++)
        green_spawn(&t[i], depositor, r);
    for (int i = 0; i < DEPOSITORS; i++)
        green_join(t[i], NULL);
    green_schedule_digest(&r->digest, NULL);
    return NULL;
}

static struct race run_race(uint64_t seed)
{
    struct race r = { 0, 0 };
    cr_assert_eq(run_det(race_main, &r, seed, GREEN_PREEMPT_BUDGET), 0);
    return r;
}

Test(deterministic, a_planted_race_is_found_by_trying_seeds_and_replayed_by_its_seed,
     .timeout = 120)
{
    const long want = DEPOSITORS * DEPOSITS;
    uint64_t bad_seed = 0, good_seed = 0;
    unsigned bad = 0, tried = 200;
    long bad_balance = 0;
    for (uint64_t seed = 1; seed <= tried; seed++) {
        struct race r = run_race(seed);
        if (r.balance == want) {
            if (!good_seed)
                good_seed = seed;
            continue;
        }
        if (!bad++) {
            bad_seed = seed;
            bad_balance = r.balance;
        }
    }
    cr_log_info("planted race: %u of %u seeds lose deposits; first seed %llu (%ld of %ld)",
                bad, tried, (unsigned long long)bad_seed, bad_balance, want);
    cr_assert_gt(bad, 0, "no seed of %u found the race", tried);
    cr_expect_lt(bad, tried, "every seed lost deposits: not a search");

    struct race first = run_race(bad_seed);
    for (int k = 0; k < 3; k++) {
        struct race again = run_race(bad_seed);
        cr_expect_eq(again.balance, bad_balance, "replay %d of seed %llu: %ld, not %ld", k,
                     (unsigned long long)bad_seed, again.balance, bad_balance);
        cr_expect_eq(again.digest, first.digest);
    }
    cr_expect_eq(run_race(good_seed).balance, want, "the clean seed %llu lost deposits",
                 (unsigned long long)good_seed);
}

/* ---- errors ----------------------------------------------------------------- */

static void *noop(void *arg) { return arg; }

static void *digest_in_plain_run(void *arg)
{
    *(int *)arg = green_schedule_digest(NULL, NULL);
    return NULL;
}

Test(deterministic, asks_that_cannot_be_met_are_refused, .timeout = 30)
{
    green_config_t cfg = config(2);
    cfg.deterministic = GREEN_DETERMINISTIC_ON;
    cfg.seed = 1;
    cr_expect_eq(green_run(noop, NULL, &cfg, NULL), EINVAL, "two workers");
    cfg.workers = 1;
    cfg.deterministic = 3;
    cr_expect_eq(green_run(noop, NULL, &cfg, NULL), EINVAL, "mode 3");

    cr_expect_eq(green_schedule_digest(NULL, NULL), EPERM, "outside a green thread");
    int err = 0;
    cr_assert_eq(run(digest_in_plain_run, &err, 1, GREEN_PREEMPT_OFF, NULL), 0);
    cr_expect_eq(err, EINVAL, "in a run that is not deterministic");

    setenv("GREEN_DETERMINISTIC", "print", 1);
    cr_expect_eq(green_config_init(&cfg), 0);
    cr_expect_eq(cfg.deterministic, GREEN_DETERMINISTIC_PRINT);
    setenv("GREEN_DETERMINISTIC", "maybe", 1);
    cr_expect_eq(green_config_init(&cfg), EINVAL);
    cr_expect_eq(cfg.deterministic, GREEN_DETERMINISTIC_OFF);
    unsetenv("GREEN_DETERMINISTIC");
}
