/* Preemption by signal: a green thread that computes without ever calling
 * into libgreen is still switched out, and what it held -- every register,
 * its flags, MXCSR, zmm0-31 and k0-7, the red zone below its stack pointer,
 * errno -- is intact when it resumes, on the worker it left.  Around that:
 * fairness between hogs, a ticker beside a hog (and, with preemption off,
 * the same ticker starving), alarm() still reaching the program,
 * green_nopreempt_begin/end, no signal for threads that yield, and a
 * bounded number of EINTRs for a thread in a slow system call libgreen does
 * not wrap.
 *
 * How a test proves that preemption happened, rather than that code ran: the
 * threads make no libgreen call while they compute, so on one worker the
 * only way for thread B to advance while thread A is inside its loop is that
 * A was switched out by a signal.  Each thread samples the other's progress
 * counter before and after a call-free stretch and counts the stretches
 * during which the other advanced.  With preemption off these counts are 0
 * and the tests fail; every thread also stops by itself at a deadline (on
 * the TSC, see tsc_after), so a runtime that never preempts fails the test
 * instead of hanging it.
 *
 * What preemption must preserve (registers, red zone, errno) is tested in
 * test_preempt_state.c; the helpers are in preempt_common.h.
 */
#include "preempt_common.h"

#include <setjmp.h>

/* ---- a ticker beside a hog ----------------------------------------------- */

#define TICKS 200

struct ticker {
    struct hog hog;
    atomic_int stop;
    int n;                       /* ticks done */
    int64_t late_ns[TICKS];
    int64_t off_cpu_ns[TICKS];   /* how long the worker was off its CPU meanwhile */
    /* with preemption off */
    uint64_t ticks_while_hog_ran;
    atomic_int hog_done;
};

static void *tick_200(void *arg)
{
    struct ticker *k = arg;
    for (k->n = 0; k->n < TICKS; k->n++) {
        tick_beside_hogs(MS, &k->late_ns[k->n], &k->off_cpu_ns[k->n]);
    }
    atomic_store(&k->stop, 1);
    return NULL;
}

static void *ticker_main(void *arg)
{
    struct ticker *k = arg;
    return hog_beside(hog_run, &k->hog, tick_200, k);
}

/* nanosleep(1 ms) TICKS times on a plain pthread, at the same time as the
 * green run: how late the kernel itself wakes a sleeper on this machine now. */
struct baseline {
    int64_t late_ns[TICKS];
};

static void *baseline_run(void *arg)
{
    struct baseline *b = arg;
    for (int i = 0; i < TICKS; i++) {
        struct timespec ts = { 0, (long)MS };
        uint64_t t0 = mono_ns();
        nanosleep(&ts, NULL);
        b->late_ns[i] = (int64_t)(mono_ns() - t0) - (int64_t)MS;
    }
    return NULL;
}

/* The ticker's lateness is the time from its timer's expiry to the hog's
 * preemption -- the runtime's part -- plus any time the worker's OS thread
 * itself was off the CPU: with another busy process on this 2-vCPU host the
 * kernel deschedules the worker for a few milliseconds at a time, and no
 * runtime can run a thread on a worker that is not running (seen: p99 4 ms
 * with one external CPU hog, 0.6-0.8 ms without).  While the ticker sleeps
 * the hog keeps the worker busy, so wall time minus the worker's CPU time
 * over one sleep is that off-CPU time; it is taken out of each sample
 * before the p99 (generously: off-CPU time before the expiry, which made
 * nothing late, comes out too; on a quiet host it is ~50 us a sample, the
 * monitor's own turns).  A runtime that never preempted keeps its worker on
 * the CPU and stays seconds late.  nanosleep's own p99, from a plain pthread at the same
 * time, covers the rest (the host waking the worker late). */
Test(preempt, a_call_free_hog_does_not_starve_a_ticker, .timeout = 30)
{
    static struct ticker k;
    static struct baseline b;
    memset(&k, 0, sizeof k);
    memset(&b, 0, sizeof b);
    k.hog.stop = &k.stop;
    /* Without preemption the hog would run to this deadline, the ticker's
     * first tick would be 5 s late, and the test fails rather than hangs. */
    k.hog.until = tsc_after(5 * SEC);
    pthread_t base;
    cr_assert_eq(pthread_create(&base, NULL, baseline_run, &b), 0);
    green_stats_t s0 = stats_now();
    int rc = run_mode(ticker_main, &k, 1, GREEN_PREEMPT_SIGNAL, 1000);
    green_stats_t s1 = stats_now();
    pthread_join(base, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_eq(k.n, TICKS);
    static int64_t own[TICKS];
    int64_t off_max = ticks_own(k.late_ns, k.off_cpu_ns, TICKS, own);
    int64_t raw_p99 = p99_of(k.late_ns, TICKS), base_p99 = p99_of(b.late_ns, TICKS);
    int64_t p99 = p99_of(own, TICKS), max = own[TICKS - 1];
    cr_log_info("ticker beside a hog: median %lld us, p99 %lld us, max %lld us without the "
                "worker's off-CPU time (raw p99 %lld us, off-CPU max %lld us; nanosleep p99 "
                "%lld us); %llu signals, %llu preemptions, refused %llu runtime %llu unsafe-pc",
                (long long)(own[TICKS / 2] / 1000), (long long)(p99 / 1000),
                (long long)(max / 1000), (long long)(raw_p99 / 1000),
                (long long)(off_max / 1000), (long long)(base_p99 / 1000),
                (unsigned long long)(s1.signals_sent - s0.signals_sent),
                (unsigned long long)(s1.preemptions - s0.preemptions),
                (unsigned long long)(s1.refused_runtime - s0.refused_runtime),
                (unsigned long long)(s1.refused_unsafe_pc - s0.refused_unsafe_pc));
    cr_expect_leq(p99, 2 * (int64_t)MS + base_p99,
                  "p99 lateness %lld us beside a hog at a 1 ms quantum, without the "
                  "worker's off-CPU time (max %lld us; raw p99 %lld us; nanosleep's own "
                  "p99: %lld us)",
                  (long long)(p99 / 1000), (long long)(max / 1000), (long long)(raw_p99 / 1000),
                  (long long)(base_p99 / 1000));
    cr_expect_gt(k.hog.count, 0, "the hog never ran");
}

static void *tick_until_hog_done(void *arg)
{
    struct ticker *k = arg;
    while (!atomic_load(&k->hog_done)) {
        green_sleep_ns(1 * MS);
        if (!atomic_load(&k->hog_done))
            k->ticks_while_hog_ran++;
    }
    return NULL;
}

static void *hog_then_done(void *arg)
{
    struct ticker *k = arg;
    hog_run(&k->hog);
    atomic_store(&k->hog_done, 1);
    return NULL;
}

static void *starve_main(void *arg)
{
    struct ticker *k = arg;
    return hog_beside(hog_then_done, k, tick_until_hog_done, k);
}

/* The control: what the test above would see if preemption did nothing. */
Test(preempt, with_preemption_off_the_same_hog_starves_the_ticker, .timeout = 30)
{
    static struct ticker k;
    memset(&k, 0, sizeof k);
    uint64_t start = mono_ns();
    k.hog.until = tsc_after(300 * MS);
    cr_assert_eq(run_mode(starve_main, &k, 1, GREEN_PREEMPT_OFF, 1000), 0);
    cr_assert_geq(k.hog.ended_ns - start, 250 * MS, "the hog did not run its 300 ms");
    cr_expect_leq(k.ticks_while_hog_ran, 2,
                  "%llu ticks of 1 ms while a call-free hog ran 300 ms without preemption",
                  (unsigned long long)k.ticks_while_hog_ran);
}

/* ---- fairness ----------------------------------------------------------- */

#define FAIR_HOGS 4

static void *fair_main(void *arg)
{
    struct hog *h = arg;
    green_t t[FAIR_HOGS];
    for (int i = 0; i < FAIR_HOGS; i++)
        if (green_spawn(&t[i], hog_run, &h[i]) != 0)
            return P(1);
    for (int i = 0; i < FAIR_HOGS; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* Four hogs on two workers for 2 s.  *info gets one line: each hog's
 * iterations as a deviation from the mean of all four, its worker, and the
 * time it ran (struct hog's ran_ticks). */
static void fair_run(struct hog *h, green_stats_t *s0, green_stats_t *s1, char *info,
                     size_t size)
{
    memset(h, 0, FAIR_HOGS * sizeof *h);
    uint64_t until = tsc_after(2 * SEC);
    for (int i = 0; i < FAIR_HOGS; i++)
        h[i].until = until;
    *s0 = stats_now();
    cr_assert_eq(run_mode(fair_main, h, 2, GREEN_PREEMPT_SIGNAL, 1000), 0);
    *s1 = stats_now();
    double mean = 0;
    for (int i = 0; i < FAIR_HOGS; i++) {
        mean += (double)h[i].count / FAIR_HOGS;
        cr_assert(h[i].worker == 0 || h[i].worker == 1);
    }
    cr_assert_gt(mean, 0);
    int off = 0;
    for (int i = 0; i < FAIR_HOGS; i++)
        off += snprintf(info + off, size - (size_t)off, " %+.1f%% (w%d, ran %.0f ms)",
                        100.0 * ((double)h[i].count - mean) / mean, h[i].worker,
                        hog_ran_ns(&h[i]) / 1e6);
    cr_log_info("fairness:%s (%llu preemptions)", info,
                (unsigned long long)(s1->preemptions - s0->preemptions));
}

/* A preempted thread resumes on the worker it left, so once the hogs have
 * spread each worker's hogs share its CPU, and how they share it is the
 * round robin's doing, whatever CPU the host gives that worker: each hog
 * runs within ±5% of the mean of the hogs on the same worker.
 *
 * The share is the time each hog ran (ran_ticks), not its iterations.  The
 * host takes a vCPU away for tens of milliseconds now and then, and all of
 * that lands on the one hog whose slice was running: iterations once came
 * out at +5.8% / -5.8% in CI (ASan build) while the round robin was even.
 * Measured with ran_ticks: within 0.4% over 9 runs, ASan build and not,
 * with iterations between +-0.1% and +-6% in the same runs.
 * How the hogs spread is the next test's matter. */
Test(preempt, hogs_on_the_same_worker_share_its_cpu_equally, .timeout = 30)
{
    static struct hog h[FAIR_HOGS];
    green_stats_t s0, s1;
    char info[256];
    fair_run(h, &s0, &s1, info, sizeof info);
    double wsum[2] = { 0, 0 };
    int wn[2] = { 0, 0 };
    for (int i = 0; i < FAIR_HOGS; i++) {
        wsum[h[i].worker] += hog_ran_ns(&h[i]);
        wn[h[i].worker]++;
    }
    for (int i = 0; i < FAIR_HOGS; i++) {
        double wmean = wsum[h[i].worker] / wn[h[i].worker];
        double wdev = (hog_ran_ns(&h[i]) - wmean) / wmean;
        cr_expect(wdev >= -0.05 && wdev <= 0.05,
                  "hog %d ran %+.1f%% off the mean of the %d hogs on its worker (all:%s)", i,
                  100.0 * wdev, wn[h[i].worker], info);
    }
}

/* Across workers, what a thread gets done is also the host's doing: a
 * worker is an OS thread on a vCPU, and on the shared 2-vCPU VM these tests
 * were written on one vCPU can run a quarter slower than the other for
 * seconds (hogs measured +-14% in iterations by worker while both workers
 * had the same CPU time, within 4%: a busy sibling hyperthread on the host,
 * invisible from here).  A preempted thread stays on its worker until it
 * switches by itself (its code may hold TLS addresses), so hogs cannot be
 * moved to even that out.
 *
 * So the share compared is CPU time, not work done: a hog's share is its
 * worker's CPU time (the thread CPU clock over the run) times its part of
 * the time the hogs of that worker ran (ran_ticks: iterations would charge
 * a vCPU the host took away to the hog whose slice was running).  Hogs split 3/1 over the workers (what happened before
 * preemption points balanced the queues: the hog on its own ran +60% to
 * +95%) or shared unevenly within a worker fail it; a slow vCPU does not,
 * nor a worker that other processes kept from its CPU (its CPU time 20%
 * below the other's: then hogs are compared within their worker).
 * The iteration shares and run times are logged beside. */
Test(preempt, four_hogs_on_two_workers_share_the_cpu_fairly, .timeout = 30)
{
    static struct hog h[FAIR_HOGS];
    green_stats_t s0, s1;
    char info[256];
    fair_run(h, &s0, &s1, info, sizeof info);
    uint64_t lo[2] = { UINT64_MAX, UINT64_MAX }, hi[2] = { 0, 0 };
    double done[2] = { 0, 0 };
    int on1 = 0;
    for (int i = 0; i < FAIR_HOGS; i++) {
        int w = h[i].worker;
        on1 += w == 1;
        lo[w] = h[i].cpu_start < lo[w] ? h[i].cpu_start : lo[w];
        hi[w] = h[i].cpu_end > hi[w] ? h[i].cpu_end : hi[w];
        done[w] += hog_ran_ns(&h[i]);
    }
    cr_assert_eq(on1, FAIR_HOGS / 2, "the hogs split %d/%d over the workers:%s",
                 FAIR_HOGS - on1, on1, info);
    double cpu[2] = { (double)(hi[0] - lo[0]), (double)(hi[1] - lo[1]) };
    double share[FAIR_HOGS], mean = 0;
    for (int i = 0; i < FAIR_HOGS; i++) {
        share[i] = cpu[h[i].worker] * hog_ran_ns(&h[i]) / done[h[i].worker];
        mean += share[i] / FAIR_HOGS;
    }
    cr_log_info("fairness: CPU time per hog %.0f %.0f %.0f %.0f ms (workers %.0f / %.0f ms)",
                share[0] / 1e6, share[1] / 1e6, share[2] / 1e6, share[3] / 1e6, cpu[0] / 1e6,
                cpu[1] / 1e6);
    /* Both workers busy the whole run, yet one got far less CPU: other
     * processes took it (the host's scheduler, not ours).  Then each hog is
     * compared with the hogs of its own worker only. */
    double wmean[2] = { cpu[0] / (FAIR_HOGS / 2), cpu[1] / (FAIR_HOGS / 2) };
    bool host_uneven = cpu[0] < 0.8 * cpu[1] || cpu[1] < 0.8 * cpu[0];
    if (host_uneven)
        cr_log_info("fairness: the workers had %.0f and %.0f ms of CPU: the host's "
                    "doing, so each hog is compared within its worker",
                    cpu[0] / 1e6, cpu[1] / 1e6);
    for (int i = 0; i < FAIR_HOGS; i++) {
        double ref = host_uneven ? wmean[h[i].worker] : mean;
        double dev = (share[i] - ref) / ref;
        cr_expect(dev >= -0.10 && dev <= 0.10,
                  "hog %d had %.0f ms of CPU, %+.1f%% off the mean of %s "
                  "(workers %.0f / %.0f ms; iterations:%s; %llu preemptions)",
                  i, share[i] / 1e6, 100.0 * dev, host_uneven ? "its worker's" : "all four",
                  cpu[0] / 1e6, cpu[1] / 1e6, info,
                  (unsigned long long)(s1.preemptions - s0.preemptions));
    }
}

/* ---- alarm() ------------------------------------------------------------ */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* The program's own SIGALRM handler, installed before the run (libgreen
 * passes it the signals it did not send); the count starts over. */
static void program_alarm_handler(void (*fn)(int), struct sigaction *old)
{
    alarms = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGALRM, &sa, old), 0);
}

struct alarm_run {
    struct hog hog;
    atomic_int stop;
    uint64_t fired_after_ns;     /* 0: not within 3 s */
    int alarm_seen;              /* alarms when first seen */
};

static void *alarm_main(void *arg)
{
    struct alarm_run *a = arg;
    uint64_t t0 = mono_ns();
    alarm(1);
    green_t h;
    if (green_spawn(&h, hog_run, &a->hog) != 0)
        return P(1);
    while (!alarms && mono_ns() - t0 < 3 * SEC)
        green_sleep_ns(5 * MS);
    if (alarms)
        a->fired_after_ns = mono_ns() - t0;
    a->alarm_seen = alarms;
    /* The hog keeps the preemption signals coming: none of them may reach
     * the program's handler. */
    green_sleep_ns(200 * MS);
    atomic_store(&a->stop, 1);
    green_join(h, NULL);
    return NULL;
}

Test(preempt, alarm_still_works, .timeout = 30)
{
    static struct alarm_run a;
    memset(&a, 0, sizeof a);
    a.hog.stop = &a.stop;
    a.hog.until = tsc_after(4 * SEC);
    struct sigaction old;
    program_alarm_handler(on_alarm, &old);
    green_stats_t s0 = stats_now();
    int rc = run_mode(alarm_main, &a, 1, GREEN_PREEMPT_SIGNAL, 1000);
    green_stats_t s1 = stats_now();
    alarm(0);
    sigaction(SIGALRM, &old, NULL);
    cr_log_info("alarm: seen after %llu ms, %d calls; %llu foreign, %llu preemptions",
                (unsigned long long)(a.fired_after_ns / MS), (int)alarms,
                (unsigned long long)(s1.foreign_signals - s0.foreign_signals),
                (unsigned long long)(s1.preemptions - s0.preemptions));
    cr_assert_eq(rc, 0);
    cr_expect_neq(a.fired_after_ns, 0, "alarm(1) did not reach the handler within 3 s");
    cr_expect_eq(alarms, 1, "the handler ran %d times for one alarm(1)", (int)alarms);
    cr_expect_geq(s1.foreign_signals - s0.foreign_signals, 1);
    cr_expect_gt(s1.preemptions - s0.preemptions, 10,
                 "only %llu preemptions of a hog in about 1.2 s at a 1 ms quantum",
                 (unsigned long long)(s1.preemptions - s0.preemptions));
}

/* ---- a thread that only yields ------------------------------------------ */

/* Beside a call-free loop on one worker, it advances only when the loop is
 * preempted. */
struct yielder {
    volatile uint64_t ran;
    atomic_int stop;
};

static void *yielder_run(void *arg)
{
    struct yielder *y = arg;
    while (!atomic_load_explicit(&y->stop, memory_order_relaxed)) {
        y->ran++;
        green_yield();
    }
    return NULL;
}

/* Call-free until y has run since it had run `seen` times (up to 2 s): was
 * the caller preempted? */
static bool preempted_since(const struct yielder *y, uint64_t seen)
{
    uint64_t give_up = tsc_after(2 * SEC);
    while (y->ran == seen && !tsc_passed(give_up))
        ;
    return y->ran != seen;
}

/* ---- a handler of the program's that leaves by siglongjmp ------------------
 *
 * The classic alarm() timeout: the program's SIGALRM handler siglongjmps
 * back to where the timed call began.  libgreen's handler, which called it,
 * never returned -- and its "a handler runs on this OS thread" count stayed
 * up: that worker refused every preemption from then on (the thread below
 * spun forever beside a runnable one), its lock calls were libc's, and
 * green_worker_index said -1.  The count is now judged by where the stack
 * is (sched/worker.h). */

#define JUMPS 5

static sigjmp_buf jump_env;

static void on_alarm_jump(int sig)
{
    (void)sig;
    alarms++;
    siglongjmp(jump_env, 1);
}

struct jumped {
    struct yielder other;
    int jumps, index_after[JUMPS], preempted[JUMPS];
};

static void *jump_main(void *arg)
{
    struct jumped *j = arg;
    green_t o;
    if (green_spawn(&o, yielder_run, &j->other) != 0)
        return P(1);
    for (j->jumps = 0; j->jumps < JUMPS; j->jumps++) {
        if (sigsetjmp(jump_env, 1) == 0) {
            raise(SIGALRM);
            break;                       /* the handler did not jump */
        }
        j->index_after[j->jumps] = green_worker_index();
        j->preempted[j->jumps] = preempted_since(&j->other, j->other.ran);
    }
    atomic_store(&j->other.stop, 1);
    green_join(o, NULL);
    return NULL;
}

Test(preempt, a_program_handler_that_longjmps_out_leaves_the_worker_preemptible,
     .timeout = 60)
{
    static struct jumped j;
    memset(&j, 0, sizeof j);
    struct sigaction old;
    program_alarm_handler(on_alarm_jump, &old);
    int rc = run_mode(jump_main, &j, 1, GREEN_PREEMPT_SIGNAL, 1000);
    sigaction(SIGALRM, &old, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_eq(j.jumps, JUMPS, "the program's handler did not jump out (%d of %d)",
                 j.jumps, JUMPS);
    cr_expect_eq(alarms, JUMPS);
    for (int i = 0; i < JUMPS; i++) {
        cr_expect_eq(j.index_after[i], 0,
                     "after jump %d out of the program's handler green_worker_index "
                     "said %d", i + 1, j.index_after[i]);
        cr_expect(j.preempted[i], "after jump %d out of the program's handler the thread "
                                  "was never preempted (2 s)", i + 1);
    }
}

/* ---- a request that meets a pending SIGALRM -------------------------------
 *
 * SIGALRM is not queued twice: sent while one is pending on the worker, the
 * monitor's request is dropped by the kernel, which tells it nothing.  The
 * request must still be served by the instance that does land -- here the
 * program's own, raised while the green thread had the signal blocked.  It
 * was not: the request's flag stayed set, the monitor (which signals only
 * when it sets the flag) never asked again, and a thread that computed from
 * then on was never preempted.  The slice timer's own signal met requests
 * the same way, and hung a test now and then (test_hijack's fork test).
 *
 * Each round: block SIGALRM, raise it, compute for 20 quanta call-free (the
 * monitor asks, and its signal is merged), unblock (the program's handler
 * runs), then compute call-free until the other thread has run -- which
 * only a preemption lets it do.  The monitor sends a request that has not
 * landed in 100 ms again, so without the handler's part each round waits
 * 100 ms; with it, the switch comes at the unblock. */

#define MERGE_ROUNDS 20

/* Call-free computing for ns. */
static void spin_for(uint64_t ns)
{
    volatile uint64_t spin = 0;
    uint64_t until = tsc_after(ns);
    while (!tsc_passed(until))
        for (int i = 0; i < 4096; i++)
            spin++;
}


struct merged {
    struct yielder other;
    int rounds;
    int64_t wait_ns[MERGE_ROUNDS];   /* from the unblock to the other's turn */
};

static void *merge_main(void *arg)
{
    struct merged *m = arg;
    green_t o;
    if (green_spawn(&o, yielder_run, &m->other) != 0)
        return P(1);
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    for (m->rounds = 0; m->rounds < MERGE_ROUNDS; m->rounds++) {
        pthread_sigmask(SIG_BLOCK, &alrm, NULL);
        raise(SIGALRM);
        spin_for(20 * MS);
        uint64_t seen = m->other.ran, t0 = mono_ns();
        pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
        if (!preempted_since(&m->other, seen))
            break;
        m->wait_ns[m->rounds] = (int64_t)(mono_ns() - t0);
        /* That preemption armed the worker's slice timer.  Sleep until it
         * has fired (a quantum later; green_stats counts it), finding its
         * slice over: the worker is the monitor's again, whose request the
         * next round is about -- and a timer's signal pending on the
         * worker when the next round raises SIGALRM would swallow the
         * program's (handler.c). */
        uint64_t sent = stats_now().signals_sent;
        for (int i = 0; i < 50 && stats_now().signals_sent == sent; i++)
            green_sleep_ns(MS);
    }
    atomic_store(&m->other.stop, 1);
    green_join(o, NULL);
    return NULL;
}

Test(preempt, a_request_merged_with_a_pending_sigalrm_is_still_served, .timeout = 60)
{
    static struct merged m;
    memset(&m, 0, sizeof m);
    struct sigaction old;
    program_alarm_handler(on_alarm, &old);
    green_stats_t s0 = stats_now();
    int rc = run_mode(merge_main, &m, 1, GREEN_PREEMPT_SIGNAL, 1000);
    green_stats_t s1 = stats_now();
    sigaction(SIGALRM, &old, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_eq(m.rounds, MERGE_ROUNDS,
                 "round %d: the thread was never preempted after its SIGALRM landed",
                 m.rounds + 1);
    int64_t med = median_of(m.wait_ns, MERGE_ROUNDS);
    cr_log_info("%d rounds of a request merged with the program's SIGALRM, 1 ms quantum: "
                "the other thread ran %.2f ms (median) after the unblock, %.2f ms at worst; "
                "%llu signals sent, %llu preemptions, %llu hooked returns (%llu taken), "
                "%llu refused in libc",
                MERGE_ROUNDS, med / 1e6, m.wait_ns[MERGE_ROUNDS - 1] / 1e6,
                (unsigned long long)(s1.signals_sent - s0.signals_sent),
                (unsigned long long)(s1.preemptions - s0.preemptions),
                (unsigned long long)(s1.hijacks - s0.hijacks),
                (unsigned long long)(s1.deferred_taken - s0.deferred_taken),
                (unsigned long long)(s1.refused_unsafe_pc - s0.refused_unsafe_pc));
    cr_expect_eq(alarms, MERGE_ROUNDS, "the program's handler ran %d times for %d raises",
                 (int)alarms, MERGE_ROUNDS);
    /* Served at the unblock, or by the monitor's next retry (its backoff
     * reaches 16 ms over the 20 quanta); not by the 100 ms resend. */
    cr_expect_lt(med, 50 * MS, "the median round waited %.1f ms: the merged request was "
                               "not served by the signal that landed", med / 1e6);
}

/* ---- green_nopreempt_begin/end ----------------------------------------- */

#define SECTIONS 3

struct nopreempt {
    struct hog hog;
    atomic_int stop;
    int other_started;
    uint64_t during[SECTIONS];   /* the hog's progress inside a section */
    uint64_t across[SECTIONS];   /* ... inside green_nopreempt_end */
};

static void *sectioner(void *arg)
{
    struct nopreempt *n = arg;
    /* Call-free until the hog has run: only preemption gets it there. */
    uint64_t give_up = tsc_after(2 * SEC);
    while (n->hog.count == 0 && !tsc_passed(give_up))
        ;
    n->other_started = n->hog.count != 0;
    for (int s = 0; s < SECTIONS && n->other_started; s++) {
        green_nopreempt_begin();
        uint64_t b0 = n->hog.count;
        spin_for(100 * MS);
        uint64_t b1 = n->hog.count;
        green_nopreempt_end();
        uint64_t b2 = n->hog.count;
        n->during[s] = b1 - b0;
        n->across[s] = b2 - b1;
        spin_for(5 * MS);
    }
    atomic_store(&n->stop, 1);
    return NULL;
}

static void *nopreempt_main(void *arg)
{
    struct nopreempt *n = arg;
    return hog_beside(hog_run, &n->hog, sectioner, n);
}

Test(preempt, nopreempt_sections_are_not_preempted, .timeout = 30)
{
    static struct nopreempt n;
    memset(&n, 0, sizeof n);
    n.hog.stop = &n.stop;
    n.hog.until = tsc_after(5 * SEC);
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_mode(nopreempt_main, &n, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
    green_stats_t s1 = stats_now();
    cr_assert(n.other_started, "the hog never ran beside a call-free thread");
    cr_log_info("nopreempt: during %llu %llu %llu, across end %llu %llu %llu, %llu refusals",
                (unsigned long long)n.during[0], (unsigned long long)n.during[1],
                (unsigned long long)n.during[2], (unsigned long long)n.across[0],
                (unsigned long long)n.across[1], (unsigned long long)n.across[2],
                (unsigned long long)(s1.refused_nopreempt - s0.refused_nopreempt));
    for (int s = 0; s < SECTIONS; s++) {
        cr_expect_eq(n.during[s], 0, "section %d: the other thread ran %llu iterations inside it",
                     s, (unsigned long long)n.during[s]);
        cr_expect_gt(n.across[s], 0,
                     "section %d: the preemption asked for meanwhile was not taken at "
                     "green_nopreempt_end",
                     s);
    }
    cr_expect_geq(s1.refused_nopreempt - s0.refused_nopreempt, SECTIONS,
                  "%llu refusals in %d sections of 100 ms at a 50 us quantum",
                  (unsigned long long)(s1.refused_nopreempt - s0.refused_nopreempt),
                  SECTIONS);
}

/* ---- no signal for threads that yield ----------------------------------- */

#define YIELDERS 4
#define YIELD_QUANTUM_US 1000u

struct yielders {
    uint64_t deadline_ns;
    atomic_uint_fast64_t stalls;  /* gaps of a quantum between two yields */
    atomic_uint_fast64_t yields;
    green_stats_t s_mid;
    struct hog hogs[3];
};

static void *yield_run(void *arg)
{
    struct yielders *y = arg;
    uint64_t prev = mono_ns(), n = 0, stalls = 0;
    while (prev < y->deadline_ns) {
        green_yield();
        uint64_t now = mono_ns();
        stalls += now - prev >= YIELD_QUANTUM_US * US;
        prev = now;
        n++;
    }
    atomic_fetch_add(&y->stalls, stalls);
    atomic_fetch_add(&y->yields, n);
    return NULL;
}

static void *yielders_main(void *arg)
{
    struct yielders *y = arg;
    green_t t[YIELDERS];
    for (int i = 0; i < YIELDERS; i++)
        if (green_spawn(&t[i], yield_run, y) != 0)
            return P(1);
    for (int i = 0; i < YIELDERS; i++)
        green_join(t[i], NULL);
    green_stats(&y->s_mid);
    /* The control, in the same run: hogs that never yield do get signals. */
    uint64_t until = tsc_after(100 * MS);
    for (int i = 0; i < 3; i++) {
        y->hogs[i].until = until;
        if (green_spawn(&t[i], hog_run, &y->hogs[i]) != 0)
            return P(1);
    }
    for (int i = 0; i < 3; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* A slice can outlast the quantum without the thread's fault when the host
 * deschedules the worker (the VM these tests run on is shared); the monitor
 * may then rightly signal it.  Any such stall shows as a gap of a quantum
 * between two of the thread's own yields, so the test allows one signal per
 * observed stall -- 0 on a quiet machine -- where a monitor that ignores
 * yields would send ~600 (2 workers x 300 ms / 1 ms). */
Test(preempt, signals_sent_is_zero_when_every_thread_yields, .timeout = 30)
{
    static struct yielders y;
    memset(&y, 0, sizeof y);
    y.deadline_ns = mono_ns() + 300 * MS;
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_mode(yielders_main, &y, 2, GREEN_PREEMPT_SIGNAL, YIELD_QUANTUM_US), 0);
    green_stats_t s1 = stats_now();
    uint64_t sent = y.s_mid.signals_sent - s0.signals_sent;
    uint64_t stalls = atomic_load(&y.stalls);
    cr_log_info("yielders: %llu signals, %llu stalls, %llu yields; control %llu signals",
                (unsigned long long)sent, (unsigned long long)stalls,
                (unsigned long long)atomic_load(&y.yields),
                (unsigned long long)(s1.signals_sent - y.s_mid.signals_sent));
    cr_assert_gt(atomic_load(&y.yields), 1000, "the threads hardly yielded");
    /* Two more for the stalls that fall just under a quantum between two
     * yields of the same thread yet over one between two looks of the
     * monitor (seen under ASan on the shared host). */
    cr_expect_leq(sent, stalls + 2,
                  "%llu signals sent to threads that yield all the time (%llu yields; "
                  "%llu stalls of a quantum seen)",
                  (unsigned long long)sent, (unsigned long long)atomic_load(&y.yields),
                  (unsigned long long)stalls);
    cr_expect_geq(s1.signals_sent - y.s_mid.signals_sent, 10,
                  "the control failed: 3 hogs on 2 workers for 100 ms got %llu signals",
                  (unsigned long long)(s1.signals_sent - y.s_mid.signals_sent));
}

/* ---- an unwrapped slow system call -------------------------------------- */

struct sleeper {
    uint64_t eintr, took_ns;
    int other_error;
    struct hog hogs[2];
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    struct timespec req = { 2, 0 }, rem;
    uint64_t t0 = mono_ns();
    for (;;) {
        if (nanosleep(&req, &rem) == 0)
            break;
        if (errno_get() != EINTR) {
            s->other_error = errno_get();
            break;
        }
        s->eintr++;
        req = rem;
    }
    s->took_ns = mono_ns() - t0;
    /* The control, in the same run: hogs are preempted. */
    uint64_t until = tsc_after(100 * MS);
    green_t t[2];
    for (int i = 0; i < 2; i++) {
        s->hogs[i].until = until;
        if (green_spawn(&t[i], hog_run, &s->hogs[i]) != 0)
            return P(1);
    }
    for (int i = 0; i < 2; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* 2 s at a 50 us quantum is 40000 quanta; the bound is three orders of
 * magnitude below, and far above what a backoff costs. */
Test(preempt, an_unwrapped_nanosleep_is_interrupted_a_bounded_number_of_times, .timeout = 30)
{
    static struct sleeper s;
    memset(&s, 0, sizeof s);
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_mode(sleeper_main, &s, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
    green_stats_t s1 = stats_now();
    cr_assert_eq(s.other_error, 0, "nanosleep failed: %s", strerror(s.other_error));
    cr_log_info("nanosleep(2 s): %llu EINTRs, took %llu ms; %llu signals, %llu unsafe-pc refusals",
                (unsigned long long)s.eintr, (unsigned long long)(s.took_ns / MS),
                (unsigned long long)(s1.signals_sent - s0.signals_sent),
                (unsigned long long)(s1.refused_unsafe_pc - s0.refused_unsafe_pc));
    cr_expect_leq(s.eintr, 50, "nanosleep(2 s) was interrupted %llu times",
                  (unsigned long long)s.eintr);
    cr_expect_geq(s.took_ns, 2 * SEC - 1 * MS, "slept only %llu ms",
                  (unsigned long long)(s.took_ns / MS));
    cr_expect_lt(s.took_ns, 2 * SEC + 500 * MS, "took %llu ms to sleep 2 s",
                 (unsigned long long)(s.took_ns / MS));
    cr_expect_gt(s1.preemptions - s0.preemptions, 0,
                 "the control failed: two hogs on one worker were never preempted");
}

/* ---- a preempted thread stays on its worker ----------------------------- */

/* A compiler may keep the address of errno or of a __thread variable in a
 * register across any instruction, so a thread switched out by a signal
 * must resume on the worker it left (until its next call into libgreen).
 * Four hogs on two workers: between two reads of green_worker_index() the
 * only switches are preemptions, and the index must not change. */
#define STAY_THREADS 4
#define STAY_SPIN_NS (200 * US)

struct stay {
    uint64_t until;
    atomic_uint_fast64_t moved, spins, interrupted;
};

static void *stay_run(void *arg)
{
    struct stay *st = arg;
    volatile uint64_t spin = 0;
    uint64_t gap = (uint64_t)(20.0 * US * tsc_per_ns);   /* a switch, or the host */
    uint64_t moved = 0, spins = 0, interrupted = 0;
    while (!tsc_passed(st->until)) {
        int w0 = green_worker_index();
        uint64_t end = tsc_after(STAY_SPIN_NS), now = __rdtsc(), worst = 0;
        /* The gap that carries the spin past its end counts too: with
         * several threads taking turns on a worker, that is where the
         * switch usually falls. */
        while (now < end) {
            uint64_t prev = now;
            for (int i = 0; i < 64; i++)
                spin++;
            now = __rdtsc();
            worst = now - prev > worst ? now - prev : worst;
        }
        int w1 = green_worker_index();
        moved += w0 != w1;
        interrupted += worst > gap;
        spins++;
    }
    atomic_fetch_add(&st->moved, moved);
    atomic_fetch_add(&st->spins, spins);
    atomic_fetch_add(&st->interrupted, interrupted);
    return NULL;
}

static void *stay_main(void *arg)
{
    green_t t[STAY_THREADS];
    for (int i = 0; i < STAY_THREADS; i++)
        if (green_spawn(&t[i], stay_run, arg) != 0)
            return P(1);
    for (int i = 0; i < STAY_THREADS; i++)
        green_join(t[i], NULL);
    return NULL;
}

Test(preempt, a_preempted_thread_resumes_on_the_worker_it_left, .timeout = 30)
{
    static struct stay st;
    memset(&st, 0, sizeof st);
    st.until = tsc_after(1 * SEC);
    green_stats_t s0 = stats_now();
    run_mode_ok(stay_main, &st, 2, GREEN_PREEMPT_SIGNAL, 50);
    green_stats_t s1 = stats_now();
    uint64_t preemptions = s1.preemptions - s0.preemptions;
    cr_log_info("same worker: %llu of %llu spins interrupted, %llu moved; %llu preemptions",
                (unsigned long long)atomic_load(&st.interrupted),
                (unsigned long long)atomic_load(&st.spins),
                (unsigned long long)atomic_load(&st.moved), (unsigned long long)preemptions);
    cr_expect_eq(atomic_load(&st.moved), 0,
                 "%llu times a thread was on another worker after being switched out "
                 "without a call",
                 (unsigned long long)atomic_load(&st.moved));
    cr_expect_gt(preemptions, 100, "only %llu preemptions in 1 s at a 50 us quantum",
                 (unsigned long long)preemptions);
    cr_expect_gt(atomic_load(&st.interrupted), 100, "only %llu spins were interrupted",
                 (unsigned long long)atomic_load(&st.interrupted));
}


/* ---- fresh work before preempted threads, for two quanta at most --------- */

/* Threads that used up a quantum wait behind threads that did not (woken,
 * spawned, yielded), for up to two quanta from the first pick that held
 * them back (sched/switch.c, turn_of_pinned).  On one worker at 1 ms: three
 * hogs, preempted at every quantum, and two threads that compute 50 us and
 * yield, for 400 ms.  The yielders are fresh work at every turn: they get
 * about two thirds of the worker (two quanta, then one hog's quantum) -- not
 * 50 us per hog quantum, 5%, as when a preempted thread came back at its
 * turn of the ring -- and the hogs the rest: the bound holds, or they would
 * run only their first quantum each (3 preemptions in all, not 100 or more,
 * and the yielders near 100%).  Shares are of the worker's CPU time
 * (the thread CPU clock), so a host that takes the vCPU away does not move
 * them. */
#define FRESH_HOGS 3
#define FRESH_YIELDERS 2

struct fresh {
    struct hog hog[FRESH_HOGS];
    uint64_t until;                    /* TSC deadline of the yielders */
    _Atomic uint64_t yielder_cpu_ns;   /* CPU time the yielders computed */
    uint64_t worker_cpu_ns;            /* the worker's, over the run */
};

static void *fresh_yielder(void *arg)
{
    struct fresh *f = arg;
    uint64_t mine = 0;
    while (!tsc_passed(f->until)) {
        uint64_t c0 = thread_cpu_ns();
        spin_for(50 * US);
        mine += thread_cpu_ns() - c0;
        green_yield();
    }
    atomic_fetch_add(&f->yielder_cpu_ns, mine);
    return NULL;
}

static void *fresh_main(void *arg)
{
    struct fresh *f = arg;
    green_t t[FRESH_HOGS + FRESH_YIELDERS];
    uint64_t c0 = thread_cpu_ns();
    for (int i = 0; i < FRESH_HOGS; i++)
        if (green_spawn(&t[i], hog_run, &f->hog[i]) != 0)
            return P(1);
    for (int i = 0; i < FRESH_YIELDERS; i++)
        if (green_spawn(&t[FRESH_HOGS + i], fresh_yielder, f) != 0)
            return P(1);
    for (int i = 0; i < FRESH_HOGS + FRESH_YIELDERS; i++)
        green_join(t[i], NULL);
    f->worker_cpu_ns = thread_cpu_ns() - c0;
    return NULL;
}

Test(preempt, fresh_work_goes_before_preempted_threads_for_two_quanta_at_most, .timeout = 30)
{
    static struct fresh f;
    memset(&f, 0, sizeof f);
    f.until = tsc_after(400 * MS);
    for (int i = 0; i < FRESH_HOGS; i++)
        f.hog[i].until = f.until;
    green_stats_t s0 = stats_now();
    run_mode_ok(fresh_main, &f, 1, GREEN_PREEMPT_SIGNAL, 1000);
    green_stats_t s1 = stats_now();
    double share = (double)atomic_load(&f.yielder_cpu_ns) / (double)f.worker_cpu_ns;
    uint64_t preemptions = s1.preemptions - s0.preemptions;
    cr_log_info("yielders' share of the worker: %.0f%% (%.0f ms of %.0f); %llu preemptions; "
                "hogs' iterations %llu %llu %llu",
                100 * share, atomic_load(&f.yielder_cpu_ns) / 1e6, f.worker_cpu_ns / 1e6,
                (unsigned long long)preemptions, (unsigned long long)f.hog[0].count,
                (unsigned long long)f.hog[1].count, (unsigned long long)f.hog[2].count);
    cr_expect_gt(share, 0.40, "fresh work got %.0f%% of the worker beside preempted hogs",
                 100 * share);
    cr_expect_lt(share, 0.85, "preempted hogs got %.0f%% of the worker: starved",
                 100 * (1 - share));
    cr_expect_gt(preemptions, 30, "only %llu preemptions: the hogs did not get turns",
                 (unsigned long long)preemptions);
    for (int i = 0; i < FRESH_HOGS; i++)
        cr_expect_gt(f.hog[i].count, 0, "hog %d never ran", i);
}
