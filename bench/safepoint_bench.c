/*
 * safepoint_bench: what the safepoint check costs, and where a preemption's
 * time goes.  Linked with the test build libgreen-trace, which time-stamps
 * each stage of a preemption (signals/test_trace.c); the installed library has
 * no such stamps.
 *
 *   lookup   ns per green_code_kind() -- the handler's decision: enter the
 *            table (two atomic adds), binary search -- for a preemptible,
 *            an unsafe, a libgreen and an unknown address
 *   stages   two call-free hogs on one worker, each spinning DEPTH frames
 *            below its thread's function, preempted every quantum; the
 *            median of each stage over every preemption of the run:
 *              signal   the slice timer's deadline -> the handler runs
 *              decide   PC lookup and the cheap checks
 *              walk     libunwind walk of the DEPTH+2 caller frames
 *              save     handler return, sigreturn, the trampoline's save
 *                       of the registers and the XSAVE area
 *              arm      setting the slice timer for the next slice
 *                       (timer_settime)
 *              switch   scheduler pick and the context switch, until the
 *                       other hog runs again
 *   hooked   a preemption refused in code the program does not own, taken
 *            at that code's return (signals/hijack.c): two hogs on one
 *            worker call hooked_spin (bench/hooked_lib.c, a shared library)
 *            for 100 us at a time, which stamps the TSC as it returns; the
 *            other hog, resuming, reads the TSC: the median of those gaps is
 *            the time from a hooked return to the next thread running --
 *            the trampoline's save, the scheduler, the switch, and the
 *            other thread's restore
 *
 * usage: safepoint_bench [REPS]     (BENCH_REPS in bench/run.sh)
 */
#define _GNU_SOURCE
#include <green.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

struct green_trace_cost {
    uint64_t deliver_ns;
    uint32_t decide, walk, save, arm, switch_;
};
size_t green_trace_costs(struct green_trace_cost *buf, size_t cap);

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cycles_per_ns;

static void calibrate(void)
{
    uint64_t c0 = __rdtsc(), t0 = mono_ns();
    struct timespec ts = { 0, 100 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    cycles_per_ns = (double)(__rdtsc() - c0) / (double)(mono_ns() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One worker, preemption by SIGALRM every quantum_us. */
static green_config_t one_worker(unsigned quantum_us)
{
    green_config_t cfg;
    green_config_init(&cfg);
    cfg.workers = 1;
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.quantum_us = quantum_us;
    cfg.signo = SIGALRM;
    return cfg;
}

/* ---- lookup ------------------------------------------------------------- */

static double lookup_ns(const void *pc)
{
    enum { N = 2000000 };
    volatile int sink = 0;
    uint64_t t0 = mono_ns();
    for (int i = 0; i < N; i++)
        sink += green_code_kind(pc);
    (void)sink;
    return (double)(mono_ns() - t0) / N;
}

/* ---- stages ------------------------------------------------------------- */

static atomic_int stop;
static unsigned depth_wanted;

__attribute__((noipa)) static uint64_t dive(unsigned d)
{
    volatile unsigned here = d;      /* a frame the compiler cannot fold */
    if (d > 0)
        return dive(here - 1) + here;
    uint64_t n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        for (int i = 0; i < 4096; i++)
            __asm__ volatile("" : "+r"(n));
    return n;
}

static void *hog(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)dive(depth_wanted);
}

static void *stages_main(void *arg)
{
    uint64_t ms = *(uint64_t *)arg;
    green_t t[2];
    atomic_store(&stop, 0);
    for (int i = 0; i < 2; i++)
        green_spawn(&t[i], hog, NULL);
    green_sleep_ns(ms * 1000000u);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        green_join(t[i], NULL);
    return NULL;
}

struct stage_medians {
    double signal, decide, walk, save, arm, sw;
    size_t n;
};

static struct stage_medians stages(unsigned depth, unsigned quantum_us, uint64_t ms)
{
    size_t cap = 1 << 20;
    struct green_trace_cost *buf = calloc(cap, sizeof *buf);
    double *v = malloc(cap * sizeof *v);
    if (!buf || !v) {
        perror("safepoint_bench");
        exit(1);
    }
    depth_wanted = depth;
    green_config_t cfg = one_worker(quantum_us);
    green_trace_costs(buf, cap);
    int err = green_run(stages_main, &ms, &cfg, NULL);
    size_t n = green_trace_costs(NULL, 0);
    if (err) {
        fprintf(stderr, "safepoint_bench: green_run: %s\n", strerror(err));
        exit(1);
    }
    struct stage_medians m = { .n = n };
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i].deliver_ns)
            v[k++] = (double)buf[i].deliver_ns;
    m.signal = median(v, k);
#define STAGE(field, out)                                                     \
    do {                                                                      \
        for (size_t i = 0; i < n; i++)                                        \
            v[i] = (double)buf[i].field / cycles_per_ns;                      \
        m.out = median(v, n);                                                 \
    } while (0)
    STAGE(decide, decide);
    STAGE(walk, walk);
    STAGE(save, save);
    STAGE(arm, arm);
    STAGE(switch_, sw);
#undef STAGE
    free(buf);
    free(v);
    return m;
}

/* ---- hooked returns ------------------------------------------------------ */

extern volatile uint64_t hooked_last_tsc;
extern volatile int hooked_last_who;
void hooked_spin(uint64_t until, int who);

struct hooked_hog {
    int who;
    double *gap_ns;                  /* samples: the other's return -> this one runs */
    size_t n, cap;
};

static void *hooked_hog_run(void *arg)
{
    struct hooked_hog *h = arg;
    uint64_t span = (uint64_t)(100e3 * cycles_per_ns);   /* 100 us */
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        hooked_spin(__rdtsc() + span, h->who);
        /* Did the other thread return from hooked_spin after this one did?
         * Then this one was switched out at its return, and the other's
         * last return is the one at which the CPU came back here. */
        uint64_t now = __rdtsc();
        if (hooked_last_who != h->who && h->n < h->cap)
            h->gap_ns[h->n++] = (double)(now - hooked_last_tsc) / cycles_per_ns;
    }
    return NULL;
}

static void *hooked_main(void *arg)
{
    struct hooked_hog *h = arg;
    green_t t[2];
    atomic_store(&stop, 0);
    for (int i = 0; i < 2; i++)
        green_spawn(&t[i], hooked_hog_run, &h[i]);
    green_sleep_ns(500 * 1000000u);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        green_join(t[i], NULL);
    return NULL;
}

/* One run at quantum_us: the median gap, and how many preemptions the
 * hooks took (*taken) of how many signals (*signals). */
static double hooked(unsigned quantum_us, uint64_t *taken, uint64_t *signals)
{
    enum { CAP = 1 << 16 };
    struct hooked_hog h[2];
    for (int i = 0; i < 2; i++) {
        h[i] = (struct hooked_hog){ .who = i + 1, .gap_ns = malloc(CAP * sizeof(double)),
                                    .cap = CAP };
        if (!h[i].gap_ns) {
            perror("safepoint_bench");
            exit(1);
        }
    }
    green_config_t cfg = one_worker(quantum_us);
    green_stats_t s0, s1;
    green_stats(&s0);
    int err = green_run(hooked_main, h, &cfg, NULL);
    green_stats(&s1);
    if (err) {
        fprintf(stderr, "safepoint_bench: green_run: %s\n", strerror(err));
        exit(1);
    }
    *taken = s1.deferred_taken - s0.deferred_taken;
    *signals = s1.signals_sent - s0.signals_sent;
    memcpy(h[0].gap_ns + h[0].n, h[1].gap_ns, h[1].n * sizeof(double));
    double m = median(h[0].gap_ns, h[0].n + h[1].n);
    free(h[0].gap_ns);
    free(h[1].gap_ns);
    return m;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1)
        reps = 1;
    calibrate();
    static int local;
    const struct { const char *what; const void *pc; } pcs[] = {
        { "preemptible (this program)", (const void *)main },
        { "unsafe (libc malloc)", (const void *)malloc },
        { "libgreen (green_spawn)", (const void *)green_spawn },
        { "unknown (a data address)", &local },
    };
    printf("Safepoint check and preemption stages (median of %d runs each; TSC %.2f GHz)\n\n",
           reps, cycles_per_ns);
    printf("%-40s | %8s\n", "table lookup, green_code_kind", "ns/call");
    printf("%s\n", "-----------------------------------------+---------");
    for (size_t i = 0; i < sizeof pcs / sizeof pcs[0]; i++) {
        double r[64];
        for (int k = 0; k < reps && k < 64; k++)
            r[k] = lookup_ns(pcs[i].pc);
        printf("%-40s | %8.1f\n", pcs[i].what, median(r, (size_t)(reps < 64 ? reps : 64)));
    }

    static const unsigned depths[] = { 0, 8, 32, 128 };
    enum { ND = sizeof depths / sizeof depths[0] };
    struct stage_medians med[ND];
    for (unsigned d = 0; d < ND; d++) {
        double s[6][64];
        size_t total = 0;
        /* Repetitions alternate over the depths' order: run each depth
         * once per repetition. */
        for (int k = 0; k < reps && k < 64; k++) {
            struct stage_medians m = stages(depths[d], 1000, 500);
            s[0][k] = m.signal, s[1][k] = m.decide, s[2][k] = m.walk;
            s[3][k] = m.save, s[4][k] = m.arm, s[5][k] = m.sw;
            total += m.n;
        }
        size_t r = (size_t)(reps < 64 ? reps : 64);
        med[d] = (struct stage_medians){ median(s[0], r), median(s[1], r), median(s[2], r),
                                         median(s[3], r), median(s[4], r), median(s[5], r),
                                         total };
    }
    printf("\n%-40s", "preemption stage (ns), frames below");
    for (unsigned d = 0; d < ND; d++)
        printf(" | %8u", depths[d]);
    printf("\n-----------------------------------------");
    for (unsigned d = 0; d < ND; d++)
        printf("+----------");
    printf("\n");
#define ROW(label, expr)                                                      \
    do {                                                                      \
        printf("%-40s", label);                                               \
        for (unsigned d = 0; d < ND; d++)                                     \
            printf(" | %8.0f", (double)(expr));                               \
        printf("\n");                                                         \
    } while (0)
    ROW("signal: timer deadline -> handler", med[d].signal);
    ROW("decide: PC lookup and checks", med[d].decide);
    ROW("walk: libunwind, callers to the base", med[d].walk);
    ROW("save: sigreturn + trampoline XSAVE", med[d].save);
    ROW("arm: slice timer (timer_settime)", med[d].arm);
    ROW("switch: pick + switch to the next", med[d].sw);
    ROW("total, decide .. switch", med[d].decide + med[d].walk + med[d].save + med[d].arm + med[d].sw);
    ROW("preemptions sampled", med[d].n);
#undef ROW
    printf("\n%-40s | %8s | %8s\n", "preemption taken at a hooked return", "q 1 ms", "q 100 us");
    printf("-----------------------------------------+----------+----------\n");
    double gap[2][64];
    uint64_t taken[2] = { 0, 0 }, sigs[2] = { 0, 0 };
    for (int k = 0; k < reps && k < 64; k++)
        for (int q = 0; q < 2; q++) {
            uint64_t tk, sg;
            gap[q][k] = hooked(q ? 100 : 1000, &tk, &sg);
            taken[q] += tk;
            sigs[q] += sg;
        }
    size_t r = (size_t)(reps < 64 ? reps : 64);
    printf("%-40s | %8.0f | %8.0f\n", "hooked return -> next thread runs (ns)", median(gap[0], r),
           median(gap[1], r));
    printf("%-40s | %8llu | %8llu\n", "preemptions taken at returns, all runs",
           (unsigned long long)taken[0], (unsigned long long)taken[1]);
    printf("%-40s | %8llu | %8llu\n", "signals sent, all runs", (unsigned long long)sigs[0],
           (unsigned long long)sigs[1]);

    printf("\nOne worker, two call-free hogs, quantum 1 ms, 0.5 s per run; each hog\n"
           "spins that many frames below its thread function.  signal is a delay (timer\n"
           "expiry to handler, including the kernel's timer slack), not CPU time; the\n"
           "CPU cost of the interrupt alone is the floor row of the preemption table.\n"
           "Hooked returns: two threads on one worker each calling, 100 us at a time,\n"
           "a function of a shared library the program does not own; the time from\n"
           "its return (which takes the refused preemption) to the other thread\n"
           "running, 0.5 s per run.\n");
    return 0;
}
