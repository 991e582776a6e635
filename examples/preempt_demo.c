/* preempt_demo: CPU hogs that never yield, beside a thread that wants to run
 * every millisecond -- without preemption, and with it.
 *
 *     preempt_demo [HOGS [SECONDS]]        (default 4 hogs, 1 s per mode)
 *
 * On two workers, HOGS threads spin on arithmetic and never call into
 * libgreen; a ticker sleeps 1 ms at a time and notes how late it wakes.  The
 * table shows, for each mode, how many ticks the ticker got, its lateness,
 * and how evenly the hogs shared the CPU.  Cooperative scheduling lets the
 * first hogs keep their workers; preemption by signal interrupts each after
 * its quantum.
 */
#include <green.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_HOGS 64
#define MAX_TICKS 100000

struct demo {
    int hogs;
    uint64_t run_ns;
    atomic_int stop;
    uint64_t deadline;
    volatile uint64_t work[MAX_HOGS];
    int ticks;
    uint64_t late_ns[MAX_TICKS];
};

static struct demo demo;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *hog(void *arg)
{
    volatile uint64_t *w = arg;
    /* Arithmetic only; a look at the clock every few million steps lets a
     * hog stop by itself even when nothing else ever runs. */
    while (!atomic_load_explicit(&demo.stop, memory_order_relaxed)) {
        for (int i = 0; i < 4000000; i++)
            (*w)++;
        if (mono_ns() > demo.deadline)
            break;
    }
    return NULL;
}

static void *ticker(void *arg)
{
    (void)arg;
    while (demo.ticks < MAX_TICKS && green_now_ns() < demo.deadline) {
        uint64_t t0 = green_now_ns();
        green_sleep_ns(1000000);
        demo.late_ns[demo.ticks++] = green_now_ns() - t0 - 1000000;
    }
    atomic_store(&demo.stop, 1);
    return NULL;
}

static void *run_mode(void *arg)
{
    (void)arg;
    green_t t[MAX_HOGS + 1];
    demo.deadline = mono_ns() + demo.run_ns;
    for (int i = 0; i < demo.hogs; i++)
        if (green_spawn(&t[i], hog, (void *)&demo.work[i]) != 0)
            return (void *)1;
    if (green_spawn(&t[demo.hogs], ticker, NULL) != 0)
        return (void *)1;
    for (int i = 0; i <= demo.hogs; i++)
        green_join(t[i], NULL);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void one_mode(const char *name, int preempt, unsigned quantum_us)
{
    green_config_t cfg;
    if (green_config_init(&cfg) != 0)
        exit(2);
    cfg.workers = 2;
    cfg.preempt = preempt;
    cfg.quantum_us = quantum_us;
    memset((void *)demo.work, 0, sizeof demo.work);
    demo.ticks = 0;
    atomic_store(&demo.stop, 0);

    green_stats_t s0, s1;
    green_stats(&s0);
    void *ret = NULL;
    int err = green_run(run_mode, NULL, &cfg, &ret);
    green_stats(&s1);
    if (err || ret) {
        printf("%-22s | green_run failed: %s\n", name, err ? strerror(err) : "spawn");
        return;
    }

    uint64_t total = 0, lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < demo.hogs; i++) {
        total += demo.work[i];
        if (demo.work[i] < lo)
            lo = demo.work[i];
        if (demo.work[i] > hi)
            hi = demo.work[i];
    }
    double fair = 100.0 / demo.hogs;
    printf("%-22s | %5d | ", name, demo.ticks);
    if (demo.ticks > 0) {
        qsort(demo.late_ns, (size_t)demo.ticks, sizeof demo.late_ns[0], cmp_u64);
        printf("%8.2f %8.2f %8.2f | ", demo.late_ns[demo.ticks / 2] / 1e6,
               demo.late_ns[(demo.ticks * 99) / 100] / 1e6, demo.late_ns[demo.ticks - 1] / 1e6);
    } else {
        printf("%8s %8s %8s | ", "-", "-", "-");
    }
    printf("%5.1f%% .. %5.1f%% (fair %4.1f%%) | %lu / %lu\n",
           total ? 100.0 * (double)lo / (double)total : 0.0,
           total ? 100.0 * (double)hi / (double)total : 0.0, fair,
           (unsigned long)(s1.signals_sent - s0.signals_sent),
           (unsigned long)(s1.preemptions - s0.preemptions));
}

int main(int argc, char **argv)
{
    demo.hogs = argc > 1 ? atoi(argv[1]) : 4;
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    if (demo.hogs < 1 || demo.hogs > MAX_HOGS || secs <= 0 || secs > 60) {
        fprintf(stderr, "usage: preempt_demo [HOGS (1-%d) [SECONDS (0-60]]]\n", MAX_HOGS);
        return 2;
    }
    demo.run_ns = (uint64_t)(secs * 1e9);

    printf("libgreen preemption: %d call-free CPU hogs and a 1 ms ticker on 2 workers, "
           "%.1f s per mode\n\n", demo.hogs, secs);
    printf("%-22s | ticks | lateness ms: p50      p99      max | hogs' CPU shares, "
           "least .. most     | signals / preemptions\n", "mode");
    one_mode("cooperative (off)", GREEN_PREEMPT_OFF, 1000);
    one_mode("signal, 1 ms quantum", GREEN_PREEMPT_SIGNAL, 1000);
    one_mode("signal, 100 us quantum", GREEN_PREEMPT_SIGNAL, 100);
    printf("\nA ticker that could tick every millisecond gets about %.0f ticks.\n",
           secs * 1000);
    return 0;
}
