/* page_cost: what one fresh stack page costs on this machine, without
 * libgreen -- the floor under `green_bench park` (README, "A cold million").
 *
 *   page_cost [N [SLOT_KIB [GUARD_KIB]]]     defaults: 200000 80 16
 *
 * Lays out N slots of SLOT_KIB like libgreen's stack pool (a guard of
 * GUARD_KIB at each slot's bottom, the stack above it; the defaults are the
 * default 64 KiB stack) in one fresh MAP_NORESERVE mapping per step, and
 * times, per slot, in microseconds of wall time:
 *
 *   guard            MADV_GUARD_INSTALL on each slot's guard, one madvise
 *                    a slot (0 where the kernel lacks it: before 6.13)
 *   populate         MADV_POPULATE_WRITE on each slot's top page, one
 *                    madvise a slot (the guest kernel allocates and zeroes
 *                    the page and maps it)
 *   touch_populated  the first write to each populated top page, from one
 *                    thread, then from two at once (each writing half)
 *   touch_fresh      the first write to each top page never populated (the
 *                    page fault does all of it), one thread, then two
 *   touch_huge       the first write to each 4 KiB page of a MADV_HUGEPAGE
 *                    mapping, back to back (what a page costs when a 2 MiB
 *                    page is mapped at once), and how much of it the kernel
 *                    gave in huge pages (none: these were 4 KiB faults);
 *                    then touch_huge_again, the same once more, on the huge
 *                    pages the first freed (under a hypervisor, memory the
 *                    guest has not used for a while costs more at its first
 *                    touch, whatever maps it)
 *
 * The slots get 4 KiB pages (MADV_NOHUGEPAGE), as libgreen's stacks do.  A
 * first line names the system's transparent_hugepage mode, the others are
 * "name <us> us/page" (0 for a step the kernel cannot do: guards before
 * Linux 6.13, huge pages without THP).  On the VM libgreen was measured on, a
 * 4 KiB page's first touch costs microseconds of hypervisor time however it
 * was populated, and two CPUs touching at once do not reach twice one's
 * rate: a thread needs its own stack page, so that bounds a cold spawn.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

static size_t n_slots, slot, guard, page;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A fresh mapping.  Slots get 4 KiB pages, as libgreen's stacks do (their
 * guards split any huge page): where transparent huge pages are "always",
 * a first touch would otherwise map 2 MiB and make the whole of it
 * resident. */
static char *fresh(size_t bytes, bool small_pages)
{
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "page_cost: mmap of %zu bytes: %s\n", bytes, strerror(errno));
        exit(1);
    }
    if (small_pages)
        madvise(m, bytes, MADV_NOHUGEPAGE);  /* fails only without THP at all */
    return m;
}

/* This process's AnonHugePages, KiB (0 if unreadable). */
static unsigned long huge_kib(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    unsigned long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %lu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void report(const char *name, double seconds, size_t pages)
{
    printf("%-20s %.2f us/page\n", name, seconds / (double)pages * 1e6);
}

/* The top page of slot i. */
static char *top(char *m, size_t i)
{
    return m + (i + 1) * slot - page;
}

struct part {
    char *m;
    size_t lo, hi;
};

static void *touch_part(void *arg)
{
    struct part *p = arg;
    for (size_t i = p->lo; i < p->hi; i++)
        *(volatile char *)(top(p->m, i) + page - 64) = 1;
    return NULL;
}

/* The first write to every slot's top page, from `threads` threads. */
static double touch_tops(char *m, int threads)
{
    pthread_t th[2];
    struct part parts[2];
    double t0 = now_s();
    for (int k = 0; k < threads; k++) {
        parts[k] = (struct part){ m, n_slots * (size_t)k / (size_t)threads,
                                  n_slots * (size_t)(k + 1) / (size_t)threads };
        int err = pthread_create(&th[k], NULL, touch_part, &parts[k]);
        if (err) {
            fprintf(stderr, "page_cost: pthread_create: %s\n", strerror(err));
            exit(1);
        }
    }
    for (int k = 0; k < threads; k++)
        pthread_join(th[k], NULL);
    return now_s() - t0;
}

static char *populated(void)
{
    char *m = fresh(n_slots * slot, true);
    for (size_t i = 0; i < n_slots; i++)
        if (madvise(top(m, i), page, MADV_POPULATE_WRITE) != 0) {
            fprintf(stderr, "page_cost: MADV_POPULATE_WRITE: %s\n", strerror(errno));
            exit(1);
        }
    return m;
}

static size_t arg(int argc, char **argv, int i, size_t def, bool zero_ok)
{
    if (argc <= i)
        return def;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (errno || *end || end == argv[i] || argv[i][0] == '-' || (v == 0 && !zero_ok) ||
        v > ((size_t)1 << 40)) {
        fprintf(stderr, "usage: page_cost [N [SLOT_KIB [GUARD_KIB]]]: bad '%s'\n", argv[i]);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    n_slots = arg(argc, argv, 1, 200000, false);
    slot = arg(argc, argv, 2, 80, false) << 10;
    guard = arg(argc, argv, 3, 16, true) << 10;
    if (slot % page || guard % page || guard + page > slot || n_slots < 2 ||
        n_slots > ((size_t)1 << 46) / slot) {
        fprintf(stderr, "page_cost: a slot must hold its guard and a page, in whole pages, "
                        "and N be at least 2, N slots at most 64 TiB\n");
        return 2;
    }

    char enabled[128] = "unknown";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (fgets(enabled, sizeof enabled, f))
            enabled[strcspn(enabled, "\n")] = 0;
        fclose(f);
    }
    printf("%-20s %s\n", "transparent_hugepage", enabled);

    char *m = fresh(n_slots * slot, true);
    double t0 = now_s();
    size_t guards = 0;
    for (size_t i = 0; guard && i < n_slots; i++)
        if (madvise(m + i * slot, guard, MADV_GUARD_INSTALL) == 0)
            guards++;
    double t = now_s() - t0;
    report("guard", guards ? t : 0, n_slots);
    munmap(m, n_slots * slot);

    t0 = now_s();
    m = populated();
    report("populate", now_s() - t0, n_slots);
    report("touch_populated_1", touch_tops(m, 1), n_slots);
    munmap(m, n_slots * slot);
    m = populated();
    report("touch_populated_2", touch_tops(m, 2), n_slots);
    munmap(m, n_slots * slot);

    for (int threads = 1; threads <= 2; threads++) {
        m = fresh(n_slots * slot, true);
        report(threads == 1 ? "touch_fresh_1" : "touch_fresh_2", touch_tops(m, threads), n_slots);
        munmap(m, n_slots * slot);
    }

    /* Twice: the second finds the huge pages the first freed. */
    size_t huge = (size_t)2 << 20, bytes = n_slots * page;
    bytes = (bytes + huge - 1) / huge * huge;
    for (int again = 0; again < 2; again++) {
        const char *name = again ? "touch_huge_again" : "touch_huge";
        m = fresh(bytes + huge, false);
        char *h = (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
        if (madvise(h, bytes, MADV_HUGEPAGE) != 0) {
            report(name, 0, 1);
        } else {
            unsigned long before = huge_kib();
            t0 = now_s();
            for (size_t off = 0; off < bytes; off += page)
                *(volatile char *)(h + off) = 1;
            t = now_s() - t0;
            unsigned long got = huge_kib() - before;
            printf("%-20s %.2f us/page (%lu of %zu KiB in huge pages)\n", name,
                   t / (double)(bytes / page) * 1e6, got, bytes >> 10);
        }
        munmap(m, bytes + huge);
    }
    return 0;
}
