/* The reduction budget (GREEN_PREEMPT=budget, and both): threads built with
 * -finstrument-functions yield when their slice's reductions run out, with no
 * signal at all; green_reduce and libgreen's own calls charge the same
 * budget; a spent budget waits while an unsafe caller (qsort) or a
 * GREEN_NOPREEMPT function is on the stack; and in "both" mode the signal
 * catches what the budget cannot (a loop without calls).
 *
 * The instrumented code is tests/budget_work.c.  As in test_preempt.c, a
 * test proves a switch happened by the other thread's progress on one
 * worker, and every busy loop also stops at a TSC deadline, so a budget that
 * never fires fails a test instead of hanging it.
 */
#include "preempt_common.h"
#include "budget_work.h"

/* green_run on one worker in mode `preempt`, with `budget` reductions per
 * slice and a 1 ms quantum, whatever GREEN_* says. */
static int run_budget(void *(*fn)(void *), void *arg, int preempt, unsigned budget)
{
    green_config_t cfg = config(1);
    cfg.preempt = preempt;
    cfg.budget = budget;
    cfg.quantum_us = 1000;
    cfg.signo = SIGALRM;
    cfg.deterministic = GREEN_DETERMINISTIC_OFF;
    return green_run(fn, arg, &cfg, NULL);
}

/* ---- fib beside a ticker ---------------------------------------------------- */

#define TICKS 200

struct fib_ticker {
    atomic_int stop;
    uint64_t until;                  /* TSC deadline for both loops */
    uint64_t fibs, bad_fibs;
    int ticks;
    int64_t late_ns[TICKS];
    int64_t off_cpu_ns[TICKS];       /* how long the worker was off its CPU meanwhile */
    int handler_was_default;         /* SIGALRM's disposition during the run */
};

static void *fib_hog(void *arg)
{
    struct fib_ticker *k = arg;
    while (!atomic_load_explicit(&k->stop, memory_order_relaxed) && !tsc_passed(k->until)) {
        if (bw_fib(22) != 17711)
            k->bad_fibs++;
        k->fibs++;
    }
    return NULL;
}

static void *fib_ticks(void *arg)
{
    struct fib_ticker *k = arg;
    struct sigaction sa;
    sigaction(SIGALRM, NULL, &sa);
    k->handler_was_default = sa.sa_handler == SIG_DFL;
    for (k->ticks = 0; k->ticks < TICKS && !tsc_passed(k->until); k->ticks++) {
        tick_beside_hogs(MS, &k->late_ns[k->ticks], &k->off_cpu_ns[k->ticks]);
    }
    atomic_store(&k->stop, 1);
    return NULL;
}

static void *fib_ticker_main(void *arg)
{
    struct fib_ticker *k = arg;
    return hog_beside(fib_hog, k, fib_ticks, k);
}

Test(budget, an_instrumented_fib_beside_a_ticker_keeps_it_ticking_with_no_signal,
     .timeout = 60)
{
    static struct fib_ticker k;
    memset(&k, 0, sizeof k);
    k.until = tsc_after(20 * SEC);
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_budget(fib_ticker_main, &k, GREEN_PREEMPT_BUDGET, 4000), 0);
    green_stats_t s1 = stats_now();

    cr_expect_eq(k.ticks, TICKS, "the ticker ticked %d times of %d", k.ticks, TICKS);
    cr_expect_gt(k.fibs, 0, "the hog made no progress");
    cr_expect_eq(k.bad_fibs, 0, "%llu wrong results", (unsigned long long)k.bad_fibs);
    cr_expect(k.handler_was_default, "a handler was installed for SIGALRM");
    cr_expect_eq(s1.signals_sent - s0.signals_sent, 0, "%llu signals were sent",
                 (unsigned long long)(s1.signals_sent - s0.signals_sent));
    cr_expect_eq(s1.preemptions - s0.preemptions, 0);
    uint64_t yields = s1.budget_yields - s0.budget_yields;
    cr_expect_gt(yields, (uint64_t)TICKS, "only %llu budget yields", (unsigned long long)yields);
    /* The lateness is the runtime's part, as in test_preempt.c's ticker:
     * the fib keeps the worker busy while the ticker sleeps. */
    static int64_t own[TICKS];
    int n = k.ticks > 1 ? k.ticks : 2;
    int64_t off_max = ticks_own(k.late_ns, k.off_cpu_ns, n, own);
    int64_t raw_p99 = p99_of(k.late_ns, n), p99 = p99_of(own, n);
    cr_log_info("fib beside a ticker, budget 4000: %d ticks, p99 late %.1f us without the "
                "worker's off-CPU time (raw %.1f us, off-CPU max %.1f us), %llu fib(22), "
                "%llu budget yields, 0 signals",
                k.ticks, (double)p99 / 1e3, (double)raw_p99 / 1e3, (double)off_max / 1e3,
                (unsigned long long)k.fibs, (unsigned long long)yields);
    cr_expect_lt(p99, 5 * (int64_t)MS, "ticks p99 %lld ns late without the worker's off-CPU "
                 "time (raw %lld ns)", (long long)p99, (long long)raw_p99);
}

/* ---- both: signal for call-free loops, budget for call-heavy ones ------------- */

struct both {
    struct hog hog;
    struct fib_ticker fib;
    atomic_int stop;
    int ticks;
};

static void *both_ticks(void *arg)
{
    struct both *b = arg;
    uint64_t until = tsc_after(20 * SEC);
    for (b->ticks = 0; b->ticks < 100 && !tsc_passed(until); b->ticks++)
        green_sleep_ns(1 * MS);
    atomic_store(&b->stop, 1);
    return NULL;
}

static void *both_call_free(void *arg)
{
    struct both *b = arg;
    atomic_store(&b->stop, 0);
    b->hog.stop = &b->stop;
    b->hog.until = tsc_after(20 * SEC);
    return hog_beside(hog_run, &b->hog, both_ticks, b);
}

Test(budget, both_mode_catches_a_call_free_loop_by_signal_and_a_call_heavy_one_by_budget,
     .timeout = 90)
{
    static struct both b;
    memset(&b, 0, sizeof b);

    green_stats_t s0 = stats_now();
    cr_assert_eq(run_budget(both_call_free, &b, GREEN_PREEMPT_BOTH, 4000), 0);
    green_stats_t s1 = stats_now();
    cr_expect_eq(b.ticks, 100, "beside the call-free loop: %d ticks of 100", b.ticks);
    cr_expect_gt(s1.preemptions - s0.preemptions, 0, "the call-free loop was never preempted");

    b.fib.until = tsc_after(20 * SEC);
    cr_assert_eq(run_budget(fib_ticker_main, &b.fib, GREEN_PREEMPT_BOTH, 4000), 0);
    green_stats_t s2 = stats_now();
    cr_expect_eq(b.fib.ticks, TICKS, "beside fib: %d ticks of %d", b.fib.ticks, TICKS);
    uint64_t yields = s2.budget_yields - s1.budget_yields;
    uint64_t signals = s2.signals_sent - s1.signals_sent;
    cr_log_info("both: call-free loop %llu preemptions by signal; fib %llu budget yields, "
                "%llu signals, %llu preemptions by signal",
                (unsigned long long)(s1.preemptions - s0.preemptions),
                (unsigned long long)yields, (unsigned long long)signals,
                (unsigned long long)(s2.preemptions - s1.preemptions));
    cr_expect_gt(yields, (uint64_t)TICKS, "fib: only %llu budget yields",
                 (unsigned long long)yields);
    /* Budget slices end long before a quantum: the monitor has no reason to
     * signal (one stray slice-timer signal is allowed). */
    cr_expect_leq(s2.preemptions - s1.preemptions, 1);
}

/* ---- what charges the budget ---------------------------------------------------- */

struct race_flag {
    atomic_int other_ran;
    int saw_it;                      /* the loop ended because it ran */
    uint64_t loops;                  /* done before the other thread ran */
    uint64_t until;
    unsigned mode;                   /* 0: green_reduce(1), 1: a libgreen call,
                                      * 2: an instrumented call */
};

static void *set_flag(void *arg)
{
    atomic_store(&((struct race_flag *)arg)->other_ran, 1);
    return NULL;
}

static void *charge_until_other_runs(void *arg)
{
    struct race_flag *f = arg;
    green_mutex_t m = GREEN_MUTEX_INIT;
    green_t t;
    if (green_spawn(&t, set_flag, f) != 0)
        return P(1);
    while (!(f->saw_it = atomic_load(&f->other_ran)) && !tsc_passed(f->until)) {
        f->loops++;
        if (f->mode == 0) {
            green_reduce(1);
        } else if (f->mode == 1) {
            if (green_mutex_trylock(&m) == 0)
                green_mutex_unlock(&m);
        } else {
            bw_touch();
        }
    }
    green_join(t, NULL);
    return NULL;
}

static uint64_t loops_before_other_runs(unsigned mode, int preempt, unsigned budget)
{
    struct race_flag f = { .mode = mode, .until = tsc_after(2 * SEC) };
    cr_assert_eq(run_budget(charge_until_other_runs, &f, preempt, budget), 0);
    return f.saw_it ? f.loops : UINT64_MAX;
}

Test(budget, green_reduce_libgreen_calls_and_function_entries_spend_the_budget, .timeout = 30)
{
    static const char *const what[] = { "green_reduce(1)", "trylock+unlock", "bw_touch()" };
    /* Each loop charges 1 (reduce, an instrumented call) or 2 (two calls). */
    static const uint64_t per_loop[] = { 1, 2, 1 };
    for (unsigned mode = 0; mode < 3; mode++) {
        uint64_t n = loops_before_other_runs(mode, GREEN_PREEMPT_BUDGET, 100);
        cr_log_info("budget 100: the other thread ran after %llu loops of %s",
                    (unsigned long long)n, what[mode]);
        cr_expect_leq(n, 100 / per_loop[mode] + 1, "%s: %llu loops", what[mode],
                      (unsigned long long)n);
        cr_expect_geq(n, 100 / per_loop[mode] - 10, "%s: only %llu loops", what[mode],
                      (unsigned long long)n);
    }
}

Test(budget, with_preemption_off_the_charges_never_yield, .timeout = 30)
{
    /* Cooperative: the loops run to their 2 s deadline without the other
     * thread running in between -- a million charges and no yield. */
    uint64_t n = loops_before_other_runs(0, GREEN_PREEMPT_OFF, 100);
    cr_expect_eq(n, UINT64_MAX, "green_reduce yielded after %llu loops", (unsigned long long)n);
}

/* ---- where a spent budget must wait --------------------------------------------- */

struct watch {
    atomic_ulong other;              /* the bystander's progress */
    atomic_int stop;
    size_t moved_in_qsort;
    int moved_in_nopreempt, moved_in_section;
    uint64_t fib_result;
    unsigned long after_section;     /* progress seen right after the section */
};

static void *bystander(void *arg)
{
    struct watch *w = arg;
    while (!atomic_load(&w->stop)) {
        atomic_fetch_add(&w->other, 1);
        green_yield();
    }
    return NULL;
}

static void *watched_work(void *arg)
{
    struct watch *w = arg;
    green_t b;
    if (green_spawn(&b, bystander, w) != 0)
        return P(1);
    green_yield();                   /* let it start */

    static int64_t v[3000];
    uint64_t x = 7;
    for (size_t i = 0; i < 3000; i++)
        v[i] = (int64_t)splitmix(&x);
    w->moved_in_qsort = bw_sort_watching(v, 3000, &w->other);
    for (size_t i = 1; i < 3000; i++)
        if (v[i - 1] > v[i])
            return P(2);

    w->moved_in_nopreempt = bw_nopreempt_fib(22, &w->other, &w->fib_result);

    green_nopreempt_begin();
    unsigned long before = atomic_load(&w->other);
    bw_fib(22);
    w->moved_in_section = atomic_load(&w->other) != before;
    green_nopreempt_end();           /* takes the spent budget: the bystander runs */
    w->after_section = atomic_load(&w->other) - before;

    atomic_store(&w->stop, 1);
    green_join(b, NULL);
    return NULL;
}

Test(budget, a_spent_budget_waits_for_qsort_a_nopreempt_function_and_a_section, .timeout = 30)
{
    static struct watch w;
    memset(&w, 0, sizeof w);
    green_stats_t s0 = stats_now();
    void *ret = NULL;
    green_config_t cfg = config(1);
    cfg.preempt = GREEN_PREEMPT_BUDGET;
    cfg.budget = 50;
    cr_assert_eq(green_run(watched_work, &w, &cfg, &ret), 0);
    cr_assert_null(ret, "the sort or the spawn failed");
    green_stats_t s1 = stats_now();
    uint64_t refused = s1.budget_refused - s0.budget_refused;
    cr_log_info("budget 50: %llu budgets spent where no switch may happen, %llu yields",
                (unsigned long long)refused,
                (unsigned long long)(s1.budget_yields - s0.budget_yields));
    cr_expect_eq(w.moved_in_qsort, 0, "%zu comparisons saw the bystander run", w.moved_in_qsort);
    cr_expect_eq(w.moved_in_nopreempt, 0, "the GREEN_NOPREEMPT function was left");
    cr_expect_eq(w.fib_result, 17711);
    cr_expect_eq(w.moved_in_section, 0, "the nopreempt section was left");
    cr_expect_gt(w.after_section, 0, "green_nopreempt_end did not take the spent budget");
    /* qsort's comparisons and fib(22) spend many budgets of 50 each. */
    cr_expect_gt(refused, 100);
}

/* ---- outside a budget ------------------------------------------------------------ */

static void *fib_in_thread(void *arg)
{
    *(uint64_t *)arg = bw_fib(25);
    return NULL;
}

static void *fib_in_signal_mode(void *arg)
{
    return fib_in_thread(arg);
}

Test(budget, instrumented_code_runs_unchanged_outside_a_budget, .timeout = 30)
{
    cr_expect_eq(bw_fib(25), 75025, "on the program's main thread");
    uint64_t r = 0;
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, fib_in_thread, &r), 0);
    pthread_join(pt, NULL);
    cr_expect_eq(r, 75025, "on a pthread");

    green_stats_t s0 = stats_now();
    r = 0;
    cr_assert_eq(run_budget(fib_in_signal_mode, &r, GREEN_PREEMPT_SIGNAL, 100), 0);
    green_stats_t s1 = stats_now();
    cr_expect_eq(r, 75025, "on a green thread in signal mode");
    cr_expect_eq(s1.budget_yields - s0.budget_yields, 0, "signal mode yielded for a budget");
}

/* ---- a spent budget never yields a thread that is already parking ------- */

#define TURN_THREADS 16
#define TURN_ROUNDS 1000

struct turns {
    green_mutex_t m;
    green_cond_t cv;
    unsigned turn;                   /* whose turn, under m */
    unsigned long done[TURN_THREADS];
};

static struct turns turns;

static void *take_turns(void *arg)
{
    unsigned me = (unsigned)U(arg);
    for (int i = 0; i < TURN_ROUNDS; i++) {
        green_mutex_lock(&turns.m);
        while (turns.turn % TURN_THREADS != me)
            green_cond_wait(&turns.cv, &turns.m);
        turns.turn++;
        turns.done[me]++;
        green_mutex_unlock(&turns.m);
        green_cond_broadcast(&turns.cv);     /* outside the lock: it may meet a
                                              * waiter still on its way to park */
    }
    return NULL;
}

static void *turns_main(void *arg)
{
    (void)arg;
    green_t t[TURN_THREADS];
    for (uintptr_t i = 0; i < TURN_THREADS; i++)
        if (green_spawn(&t[i], take_turns, P(i)) != 0)
            return P(1);
    for (int i = 0; i < TURN_THREADS; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(budget, a_budget_of_one_yields_at_every_call_and_never_inside_a_park, .timeout = 60)
{
    /* Every libgreen call spends the whole budget, including the unlock
     * green_cond_wait makes once the thread is already claimable: a yield
     * there would let the broadcast queue it a second time. */
    memset(&turns, 0, sizeof turns);
    green_config_t cfg = config(2);
    cfg.preempt = GREEN_PREEMPT_BUDGET;
    cfg.budget = 1;
    green_stats_t s0 = stats_now();
    void *ret = NULL;
    cr_assert_eq(green_run(turns_main, NULL, &cfg, &ret), 0);
    cr_assert_null(ret);
    green_stats_t s1 = stats_now();
    cr_expect_eq(turns.turn, TURN_THREADS * TURN_ROUNDS);
    for (int i = 0; i < TURN_THREADS; i++)
        cr_expect_eq(turns.done[i], TURN_ROUNDS);
    cr_log_info("budget 1, 2 workers: %u turns, %llu budget yields", turns.turn,
                (unsigned long long)(s1.budget_yields - s0.budget_yields));
    cr_expect_gt(s1.budget_yields - s0.budget_yields, TURN_THREADS * TURN_ROUNDS);
}
