/* Safepoints: preemption never lands where a lock may be held.
 *
 * Linked with the test build libgreen-trace, which hands every preemption's
 * frames (glibc's backtrace(): libgcc's unwinder, not the handler's
 * libunwind walk) to check_trace.  The oracle is built here, independently
 * of libgreen's table, from the rule: only the program's own code may be
 * interrupted -- the executable, and a library the test names preemptible
 * -- never any other object, nor this program's green_nopreempt section
 * (the linker's __start_/__stop_ symbols), nor ranges the tests register. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <sys/mman.h>

#include "preempt_common.h"
#include "trace.h"

/* ---- The oracle ---------------------------------------------------------- */

enum what { W_UNSAFE_OBJECT, W_NOPREEMPT, W_LIBGREEN, W_SANITIZER };

struct orange {
    uintptr_t lo, hi;
    enum what what;
    char name[48];
};

static struct orange oracle[256];
static atomic_int noracle;

extern const char __start_green_nopreempt[] __attribute__((weak));
extern const char __stop_green_nopreempt[] __attribute__((weak));

static const char *extra_owned;    /* a library named preemptible, or NULL */

static void oracle_add(uintptr_t lo, uintptr_t hi, enum what what, const char *name)
{
    int i = atomic_load(&noracle);
    cr_assert_lt(i, 256);
    oracle[i] = (struct orange){ lo, hi, what, "" };
    snprintf(oracle[i].name, sizeof oracle[i].name, "%s", name);
    atomic_store(&noracle, i + 1);
}

static int oracle_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    int *index = arg;
    const char *path = info->dlpi_name ? info->dlpi_name : "";
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    bool program = (*index)++ == 0 && path[0] == '\0';
    if (program || (extra_owned && strstr(base, extra_owned)))
        return 0;                      /* the program's own */
    enum what what = W_UNSAFE_OBJECT;
    if (strstr(base, "libgreen-trace"))
        what = W_LIBGREEN;
    else if (strncmp(base, "libasan", 7) == 0 || strncmp(base, "libubsan", 8) == 0)
        what = W_SANITIZER;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X))
            oracle_add(info->dlpi_addr + ph->p_vaddr,
                       info->dlpi_addr + ph->p_vaddr + ph->p_memsz, what,
                       base[0] ? base : "(vdso)");
    }
    return 0;
}

/* Requires: no run going on (the callback reads the oracle lock-free). */
static void oracle_build(void)
{
    atomic_store(&noracle, 0);
    int index = 0;
    dl_iterate_phdr(oracle_object, &index);
    if (__start_green_nopreempt)
        oracle_add((uintptr_t)__start_green_nopreempt, (uintptr_t)__stop_green_nopreempt,
                   W_NOPREEMPT, "green_nopreempt");
}

static const struct orange *oracle_find(uintptr_t pc)
{
    int n = atomic_load(&noracle);
    for (int i = 0; i < n; i++)
        if (pc >= oracle[i].lo && pc < oracle[i].hi)
            return &oracle[i];
    return NULL;
}

/* ---- The trace ----------------------------------------------------------- */

static atomic_ulong traced, reached_base, bad, taken_deferred;
static char bad_report[160];

/* Runs on the preempted thread, in libgreen's switch path. */
static void check_trace(void *const *ip, int n, bool deferred)
{
    atomic_fetch_add(&traced, 1);
    if (deferred)
        atomic_fetch_add(&taken_deferred, 1);
    /* Skip the switch path: libgreen's frames, and under ASan its
     * interceptor of backtrace(). */
    int i = 0;
    for (const struct orange *o; i < n && (o = oracle_find((uintptr_t)ip[i])) &&
                                 (o->what == W_LIBGREEN || o->what == W_SANITIZER);)
        i++;
    for (int k = i; k < n; k++) {
        /* Return addresses are looked up one byte back (a call may end its
         * function); the first frame is the interrupted PC itself. */
        uintptr_t pc = (uintptr_t)ip[k] - (k > i);
        const struct orange *o = oracle_find(pc);
        if (o && o->what == W_LIBGREEN) {
            if (k > i)
                atomic_fetch_add(&reached_base, 1);
            return;
        }
        if (o && atomic_fetch_add(&bad, 1) == 0)
            snprintf(bad_report, sizeof bad_report, "preempted with frame %d (of %d) at %p in %s",
                     k - i, n - i, ip[k], o->name);
        if (o)
            return;
    }
}

static void trace_on(void)
{
    oracle_build();
    atomic_store(&traced, 0);
    atomic_store(&reached_base, 0);
    atomic_store(&bad, 0);
    atomic_store(&taken_deferred, 0);
    green_trace_set(check_trace);
}

static void trace_off_and_check(void)
{
    green_trace_set(NULL);
    unsigned long t = atomic_load(&traced), b = atomic_load(&reached_base);
    cr_expect_eq(atomic_load(&bad), 0, "%lu of %lu preemptions in unsafe code; first: %s",
                 atomic_load(&bad), t, bad_report);
    /* The oracle must really see the frames, or it proves nothing. */
    cr_expect_geq(b * 10, t * 9, "only %lu of %lu traces reached the thread's base", b, t);
}

static int run_named(void *(*fn)(void *), void *arg, unsigned workers, unsigned quantum_us,
                     const char *unsafe, const char *preemptible)
{
    green_config_t cfg = config(workers);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.quantum_us = quantum_us;
    cfg.signo = SIGALRM;
    cfg.stack_size = 64 << 10;
    cfg.unsafe_objects = unsafe;
    cfg.preemptible_objects = preemptible;
    return green_run(fn, arg, &cfg, NULL);
}

static int run_q(void *(*fn)(void *), void *arg, unsigned workers, unsigned quantum_us)
{
    return run_named(fn, arg, workers, quantum_us, NULL, NULL);
}

/* ---- The mix: libc under preemption -------------------------------------- */

static FILE *shared_file;
static atomic_int stop_mix;
static atomic_ulong ops, heap_errors, once_errors, sort_errors, fmt_errors;
static volatile uint64_t sink;

static void spin(unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        __asm__ volatile("" ::: "memory");
}

static int slow_cmp(const void *a, const void *b)
{
    spin(300);                         /* user code, called back by libc */
    return cmp_i64(a, b);
}

static atomic_int once_runs;
static void once_init(void)
{
    spin(20000);                       /* a pthread_once routine, in user code */
    atomic_fetch_add(&once_runs, 1);
}

GREEN_NOPREEMPT static uint64_t nopreempt_work(unsigned n)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++)
        __asm__ volatile("" : "+r"(x));
    return x + n;
}

static void heap_round(uint64_t *rng)
{
    enum { N = 16 };
    unsigned char *p[N];
    size_t len[N];
    for (int i = 0; i < N; i++) {
        len[i] = 16 + splitmix(rng) % 4000;
        p[i] = malloc(len[i]);
        if (!p[i])
            continue;
        memset(p[i], (int)(i + 1), len[i]);
    }
    for (int i = 0; i < N; i += 2) {
        if (!p[i])
            continue;
        size_t nl = 16 + splitmix(rng) % 8000;
        unsigned char *q = realloc(p[i], nl);
        if (!q)
            continue;
        for (size_t k = 0; k < (nl < len[i] ? nl : len[i]); k++)
            if (q[k] != (unsigned char)(i + 1)) {
                atomic_fetch_add(&heap_errors, 1);
                break;
            }
        memset(q, (int)(i + 1), nl);
        p[i] = q;
        len[i] = nl;
    }
    for (int i = 0; i < N; i++) {
        if (!p[i])
            continue;
        for (size_t k = 0; k < len[i]; k++)
            if (p[i][k] != (unsigned char)(i + 1)) {
                atomic_fetch_add(&heap_errors, 1);
                break;
            }
        free(p[i]);
    }
}

static void sort_round(uint64_t *rng)
{
    int64_t v[48];
    for (int i = 0; i < 48; i++)
        v[i] = (int64_t)(splitmix(rng) % 1000);
    qsort(v, 48, sizeof v[0], slow_cmp);
    for (int i = 1; i < 48; i++)
        if (v[i - 1] > v[i])
            atomic_fetch_add(&sort_errors, 1);
}

static void format_round(uint64_t *rng)
{
    char buf[128];
    unsigned x = (unsigned)splitmix(rng);
    int n = snprintf(buf, sizeof buf, "%u %s %.3f", x, "green", (double)x / 7.0);
    unsigned back = 0;
    if (n <= 0 || sscanf(buf, "%u", &back) != 1 || back != x)
        atomic_fetch_add(&fmt_errors, 1);
    fprintf(shared_file, "%s\n", buf);  /* one FILE lock for every thread */
}

static void once_round(void)
{
    pthread_once_t once = PTHREAD_ONCE_INIT;
    int before = atomic_load(&once_runs);
    pthread_once(&once, once_init);
    pthread_once(&once, once_init);
    if (atomic_load(&once_runs) - before < 1)
        atomic_fetch_add(&once_errors, 1);
}

static void runtime_round(green_mutex_t *m)
{
    for (int i = 0; i < 2000; i++)
        if (green_mutex_trylock(m) == 0)
            green_mutex_unlock(m);
}

static void *mixer(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15u;
    green_mutex_t m = GREEN_MUTEX_INIT;
    while (!atomic_load_explicit(&stop_mix, memory_order_relaxed)) {
        switch (splitmix(&rng) % 8) {
        case 0: heap_round(&rng); break;
        case 1: format_round(&rng); break;
        case 2: sort_round(&rng); break;
        case 3: once_round(); break;
        case 4: sink += nopreempt_work(20000); break;
        case 5:
            green_nopreempt_begin();
            spin(20000);
            green_nopreempt_end();
            break;
        case 6: spin(50000); break;         /* preemptible user code */
        default: runtime_round(&m); break;
        }
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Recurse until less stack is left than a preemption needs, then spin. */
static uint64_t deep(char *top, int depth)
{
    volatile char pad[512];
    pad[0] = (char)depth;
    if (top - (char *)pad < (56 << 10) && depth < 1000)
        return deep(top, depth + 1) + pad[0];
    uint64_t until = tsc_after(2 * MS);
    while (!tsc_passed(until))
        spin(100);
    return pad[0];
}

static void *deep_diver(void *arg)
{
    (void)arg;
    char top;
    while (!atomic_load_explicit(&stop_mix, memory_order_relaxed)) {
        sink += deep(&top, 0);
        green_sleep_ns(5 * MS);
    }
    return NULL;
}

struct mix {
    uint64_t target_signals, max_ns;
    uint64_t signals, elapsed_ns;
};

static void *mix_main(void *arg)
{
    struct mix *mx = arg;
    enum { THREADS = 16 };
    green_t t[THREADS + 1];
    green_stats_t s0 = stats_now();
    uint64_t t0 = mono_ns();
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(green_spawn(&t[i], mixer, P(i + 1)), 0);
    cr_assert_eq(green_spawn(&t[THREADS], deep_diver, NULL), 0);
    do {
        green_sleep_ns(100 * MS);
        mx->signals = stats_now().signals_sent - s0.signals_sent;
        mx->elapsed_ns = mono_ns() - t0;
    } while (mx->signals < mx->target_signals && mx->elapsed_ns < mx->max_ns);
    atomic_store(&stop_mix, 1);
    for (int i = 0; i <= THREADS; i++)
        green_join(t[i], NULL);
    return NULL;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 10) : dflt;
}

Test(safepoint, libc_under_a_50us_quantum_is_never_preempted_where_a_lock_may_be_held,
     .timeout = 300)
{
    shared_file = fopen("/dev/null", "w");
    cr_assert_not_null(shared_file);
    struct mix mx = { env_u64("GREEN_TEST_SIGNALS", 1000000), env_u64("GREEN_TEST_SECONDS", 200) * SEC,
                      0, 0 };
    trace_on();
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_q(mix_main, &mx, 2, 50), 0);
    green_stats_t s1 = stats_now();
    trace_off_and_check();
    fclose(shared_file);
    cr_log_info("%llu signals, %llu preemptions, %lu ops in %.1f s; refused: runtime %llu, "
                "nopreempt %llu, unsafe pc %llu, unsafe frame %llu, unwind %llu, headroom %llu; "
                "deferred taken %llu",
                (unsigned long long)mx.signals,
                (unsigned long long)(s1.preemptions - s0.preemptions), atomic_load(&ops),
                (double)mx.elapsed_ns / 1e9,
                (unsigned long long)(s1.refused_runtime - s0.refused_runtime),
                (unsigned long long)(s1.refused_nopreempt - s0.refused_nopreempt),
                (unsigned long long)(s1.refused_unsafe_pc - s0.refused_unsafe_pc),
                (unsigned long long)(s1.refused_unsafe_frame - s0.refused_unsafe_frame),
                (unsigned long long)(s1.refused_unwind - s0.refused_unwind),
                (unsigned long long)(s1.refused_headroom - s0.refused_headroom),
                (unsigned long long)(s1.deferred_taken - s0.deferred_taken));
    cr_expect_geq(mx.signals, mx.target_signals, "only %llu signals in %.1f s",
                  (unsigned long long)mx.signals, (double)mx.elapsed_ns / 1e9);
    cr_expect_eq(atomic_load(&heap_errors), 0);
    cr_expect_eq(atomic_load(&sort_errors), 0);
    cr_expect_eq(atomic_load(&fmt_errors), 0);
    cr_expect_eq(atomic_load(&once_errors), 0);
    cr_expect_gt(s1.preemptions - s0.preemptions, 1000);
    cr_expect_gt(s1.refused_runtime - s0.refused_runtime, 0);
    cr_expect_gt(s1.refused_nopreempt - s0.refused_nopreempt, 0);
    cr_expect_gt(s1.refused_unsafe_pc - s0.refused_unsafe_pc, 0);
    cr_expect_gt(s1.refused_unsafe_frame - s0.refused_unsafe_frame, 0);
    cr_expect_gt(s1.refused_headroom - s0.refused_headroom, 0);
    cr_expect_gt(s1.deferred_taken - s0.deferred_taken, 0);
    /* The heap is whole: glibc's own consistency checks walk it. */
    cr_expect_eq(malloc_trim(0) >= 0, 1);
    void *p = malloc(1 << 20);
    cr_expect_not_null(p);
    free(p);
}

/* ---- A library loaded at run time ---------------------------------------- */

struct lib {
    const char *unsafe, *preemptible;  /* the run's GREEN_UNSAFE, GREEN_PREEMPTIBLE */
    void *code;                        /* spin_until_tsc, while loaded */
    int kind_loaded, kind_unloaded;    /* green_code_kind of it, then */
    uint64_t signals, preemptions, inside, hijacks;
};

static atomic_ulong preempted_in_lib;
static uintptr_t lib_lo, lib_hi;

static void count_in_lib(void *const *ip, int n, bool deferred)
{
    check_trace(ip, n, deferred);
    for (int k = 0; k < n; k++)
        if ((uintptr_t)ip[k] >= lib_lo && (uintptr_t)ip[k] < lib_hi)
            atomic_fetch_add(&preempted_in_lib, 1);
}

static int lib_range(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && (uintptr_t)arg >= lo &&
            (uintptr_t)arg < lo + ph->p_memsz) {
            lib_lo = lo;
            lib_hi = lo + ph->p_memsz;
        }
    }
    return 0;
}

/* green_code_kind(pc) within 2 s, or the last kind seen. */
static int wait_kind(const void *pc, int want)
{
    int k = green_code_kind(pc);
    for (int i = 0; i < 200 && k != want; i++) {
        green_sleep_ns(10 * MS);
        k = green_code_kind(pc);
    }
    return k;
}

/* Spin in the library for ms, in 20 calls (each return may take a refused
 * preemption). */
static void spin_in(uint64_t (*spin_until)(uint64_t), uint64_t ms, struct lib *l)
{
    green_stats_t s0 = stats_now();
    for (int i = 0; i < 20; i++)
        spin_until(tsc_after(ms * MS / 20));
    green_stats_t s1 = stats_now();
    l->signals += s1.signals_sent - s0.signals_sent;
    l->preemptions += s1.preemptions - s0.preemptions;
    l->hijacks += s1.hijacks - s0.hijacks;
}

static void *lib_main(void *arg)
{
    struct lib *l = arg;
    void *h = libspin_open();
    uint64_t (*spin_until)(uint64_t) = (uint64_t (*)(uint64_t))dlsym(h, "spin_until_tsc");
    cr_assert_not_null(spin_until);
    l->code = (void *)spin_until;
    dl_iterate_phdr(lib_range, l->code);
    /* Called at once, before the monitor can have rebuilt the table: the
     * library is unknown code until then, and unknown code is not
     * preempted either. */
    spin_in(spin_until, 300, l);
    int want = l->preemptible && !l->unsafe ? GREEN_CODE_PREEMPTIBLE : GREEN_CODE_UNSAFE;
    l->kind_loaded = wait_kind(l->code, want);
    spin_in(spin_until, 300, l);
    cr_assert_eq(dlclose(h), 0);
    l->kind_unloaded = wait_kind(l->code, GREEN_CODE_UNKNOWN);
    l->inside = atomic_load(&preempted_in_lib);
    return NULL;
}

static void *lib_with_company(void *arg)
{
    /* A second thread on the worker, so that a preemption has a thread to
     * switch to. */
    atomic_int stop = 0;
    struct hog h = { .stop = &stop, .until = tsc_after(30 * SEC) };
    green_t t;
    cr_assert_eq(green_spawn(&t, hog_run, &h), 0);
    lib_main(arg);
    atomic_store(&stop, 1);
    green_join(t, NULL);
    return NULL;
}

static void run_lib(struct lib *l)
{
    extra_owned = l->preemptible && !l->unsafe ? "libspin" : NULL;
    trace_on();
    atomic_store(&preempted_in_lib, 0);
    green_trace_set(count_in_lib);
    cr_assert_eq(run_named(lib_with_company, l, 1, 1000, l->unsafe, l->preemptible), 0);
    trace_off_and_check();
    cr_log_info("libspin (unsafe: %s, preemptible: %s): %llu signals, %llu preemptions, "
                "%llu inside it, %llu hooked returns",
                l->unsafe ? l->unsafe : "-", l->preemptible ? l->preemptible : "-",
                (unsigned long long)l->signals, (unsigned long long)l->preemptions,
                (unsigned long long)l->inside, (unsigned long long)l->hijacks);
}

Test(safepoint, a_library_not_named_is_never_preempted_inside_and_left_by_its_return,
     .timeout = 60)
{
    struct lib l = { 0 };
    run_lib(&l);
    cr_expect_geq(l.signals, 5, "the monitor must keep asking while the library runs");
    cr_expect_eq(l.inside, 0);
    cr_expect_geq(l.hijacks, 5, "refusals in the library must hook its return");
    cr_expect_eq(l.kind_loaded, GREEN_CODE_UNSAFE);
    cr_expect_eq(l.kind_unloaded, GREEN_CODE_UNKNOWN, "dlclose'd code still in the table");
}

Test(safepoint, a_library_named_preemptible_is_preempted_once_the_table_knows_it,
     .timeout = 60)
{
    struct lib l = { .preemptible = "libspin" };
    run_lib(&l);
    cr_expect_eq(l.kind_loaded, GREEN_CODE_PREEMPTIBLE);
    cr_expect_gt(l.inside, 100, "the named library must be preempted inside");
    cr_expect_eq(l.kind_unloaded, GREEN_CODE_UNKNOWN);
}

Test(safepoint, a_library_named_preemptible_and_unsafe_is_unsafe, .timeout = 60)
{
    struct lib l = { .preemptible = "libspin", .unsafe = "libspin.so" };
    run_lib(&l);
    cr_expect_eq(l.kind_loaded, GREEN_CODE_UNSAFE);
    cr_expect_eq(l.inside, 0);
}

static void *idle_main(void *arg) { return arg; }

Test(safepoint, the_system_runtime_cannot_be_named_preemptible)
{
    green_config_t cfg = config(1);
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    const char *names[] = { "libc.so.6", "libc", "libspin:libstdc++", "/lib/x86_64-linux-gnu/libc.so.6",
                            "ld-linux-x86-64.so.2" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cfg.preemptible_objects = names[i];
        cr_expect_eq(green_run(idle_main, NULL, &cfg, NULL), EINVAL, "%s", names[i]);
    }
    cfg.preemptible_objects = "libcurl.so.4:libm";
    cr_expect_eq(green_run(idle_main, NULL, &cfg, NULL), 0);
}

/* ---- GREEN_NOPREEMPT ---------------------------------------------------- */

struct np {
    uint64_t start_ns, returned_ns;
    uint64_t other_ran[64];            /* when the other thread ran */
    int nran;
    atomic_int stop;
    uint64_t deferred;
};

/* Spins until the TSC passes `until`; *end gets the time it returns at. */
GREEN_NOPREEMPT static void nopreempt_spin(uint64_t until, uint64_t *end)
{
    while (__rdtsc() < until)
        for (int i = 0; i < 256; i++)
            __asm__ volatile("" ::: "memory");
    *end = mono_ns();
}

static void *np_other(void *arg)
{
    struct np *n = arg;
    while (!atomic_load(&n->stop)) {
        if (n->nran < 64)
            n->other_ran[n->nran++] = mono_ns();
        uint64_t until = tsc_after(200 * US);  /* then ask for the CPU back */
        while (!tsc_passed(until) && !atomic_load(&n->stop))
            spin(100);
    }
    return NULL;
}

static void *np_main(void *arg)
{
    struct np *n = arg;
    green_t t;
    cr_assert_eq(green_spawn(&t, np_other, n), 0);
    green_yield();                     /* let it start */
    n->nran = 0;
    green_stats_t s0 = stats_now();
    n->start_ns = mono_ns();
    nopreempt_spin(tsc_after(100 * MS), &n->returned_ns);
    uint64_t until = tsc_after(20 * MS);  /* preemptible now */
    while (!tsc_passed(until))
        spin(100);
    n->deferred = stats_now().deferred_taken - s0.deferred_taken;
    atomic_store(&n->stop, 1);
    green_join(t, NULL);
    return NULL;
}

Test(safepoint, a_nopreempt_function_runs_100ms_unpreempted_and_yields_as_it_returns,
     .timeout = 30)
{
    static struct np n;
    memset(&n, 0, sizeof n);
    trace_on();
    cr_assert_eq(run_q(np_main, &n, 1, 1000), 0);
    trace_off_and_check();
    cr_assert_gt(n.nran, 0, "the other thread never ran after the function");
    uint64_t first_after = 0;
    for (int i = 0; i < n.nran; i++) {
        cr_expect(n.other_ran[i] < n.start_ns || n.other_ran[i] >= n.returned_ns,
                  "the other thread ran %.3f ms into the nopreempt function",
                  (double)(n.other_ran[i] - n.start_ns) / 1e6);
        if (!first_after && n.other_ran[i] >= n.returned_ns)
            first_after = n.other_ran[i];
    }
    cr_assert_gt(first_after, 0);
    double late_ms = (double)(first_after - n.returned_ns) / 1e6;
    cr_log_info("the other thread ran %.3f ms after the return; %llu deferred", late_ms,
                (unsigned long long)n.deferred);
    cr_expect_lt(late_ms, 0.5, "the preemption was not taken at the return");
    cr_expect_geq(n.deferred, 1);
    cr_expect_geq(atomic_load(&taken_deferred), 1, "the trace saw no deferred preemption");
}

/* ---- Seconds in unsafe code --------------------------------------------- */

/* The other thread's progress when the unsafe code is about to return. */
static volatile uint64_t *bystander_count;
static uint64_t count_at_return;

/* A registered unsafe range: this function, bounded by its own section. */
__attribute__((section("test_unsafe_code"), noinline, noclone)) static void unsafe_spin(uint64_t until)
{
    while (__rdtsc() < until)
        for (int i = 0; i < 256; i++)
            __asm__ volatile("" ::: "memory");
    count_at_return = *bystander_count;
}
extern const char __start_test_unsafe_code[], __stop_test_unsafe_code[];

static int spin_cmp(const void *a, const void *b)
{
    static __thread uint64_t until;
    if (!until)
        until = tsc_after(2 * SEC);
    while (!tsc_passed(until))
        spin(100);
    count_at_return = *bystander_count;
    return cmp_i64(a, b);
}

struct bounded {
    int how;                           /* 0: unsafe range, 1: qsort callback */
    uint64_t signals, preemptions, hijacks, deferred;
    uint64_t ran_inside, ran_after;    /* the bystander's progress */
};

static void *bounded_main(void *arg)
{
    struct bounded *b = arg;
    atomic_int stop = 0;
    struct hog h = { .stop = &stop, .until = tsc_after(30 * SEC) };
    green_t t;
    cr_assert_eq(green_spawn(&t, hog_run, &h), 0);
    green_yield();
    bystander_count = &h.count;
    uint64_t c0 = h.count;
    green_stats_t s0 = stats_now();
    if (b->how == 0) {
        unsafe_spin(tsc_after(2 * SEC));
    } else {
        int64_t v[2] = { 2, 1 };
        qsort(v, 2, sizeof v[0], spin_cmp);
    }
    /* The refused preemption was taken as the unsafe frame returned: the
     * bystander has run by now. */
    uint64_t c1 = h.count;
    green_stats_t s1 = stats_now();
    b->signals = s1.signals_sent - s0.signals_sent;
    b->preemptions = s1.preemptions - s0.preemptions;
    b->hijacks = s1.hijacks - s0.hijacks;
    b->deferred = s1.deferred_taken - s0.deferred_taken;
    b->ran_inside = count_at_return - c0;
    b->ran_after = c1 - count_at_return;
    atomic_store(&stop, 1);
    green_join(t, NULL);
    return NULL;
}

static void check_bounded(int how)
{
    struct bounded b = { .how = how };
    trace_on();
    cr_assert_eq(run_q(bounded_main, &b, 1, 1000), 0);
    trace_off_and_check();
    cr_log_info("2 s in %s: %llu signals, %llu preemptions, %llu hooked returns, "
                "%llu taken later; the other thread ran %llu before the return, %llu after",
                how ? "qsort" : "an unsafe range", (unsigned long long)b.signals,
                (unsigned long long)b.preemptions, (unsigned long long)b.hijacks,
                (unsigned long long)b.deferred, (unsigned long long)b.ran_inside,
                (unsigned long long)b.ran_after);
    /* 1 ms quantum, retries doubling to 100 ms: about 8 + 20; one per
     * quantum would be 2000. */
    cr_expect_leq(b.signals, 60);
    cr_expect_geq(b.signals, 5, "the monitor must keep asking");
    cr_expect_eq(b.ran_inside, 0, "the other thread ran inside the unsafe code");
    cr_expect_eq(b.hijacks, 1, "one hook, placed again by every later refusal");
    cr_expect_geq(b.deferred, 1);
    cr_expect_gt(b.ran_after, 0, "the preemption was not taken at the return");
}

Test(safepoint, two_seconds_in_an_unsafe_range_draw_a_bounded_number_of_signals, .timeout = 30)
{
    size_t len = (size_t)(__stop_test_unsafe_code - __start_test_unsafe_code);
    cr_assert_eq(green_code_range_add(__start_test_unsafe_code, len, GREEN_CODE_UNSAFE), 0);
    cr_expect_eq(green_code_kind((void *)unsafe_spin), GREEN_CODE_UNSAFE);
    check_bounded(0);
    cr_assert_eq(green_code_range_remove(__start_test_unsafe_code, len), 0);
    cr_expect_eq(green_code_kind((void *)unsafe_spin), GREEN_CODE_PREEMPTIBLE);
}

Test(safepoint, two_seconds_in_a_qsort_callback_draw_a_bounded_number_of_signals, .timeout = 30)
{
    check_bounded(1);
}

/* ---- The calls ------------------------------------------------------------ */

Test(safepoint, code_kinds_name_what_the_handler_sees)
{
    int local;
    cr_expect_eq(green_code_kind((void *)check_bounded), GREEN_CODE_PREEMPTIBLE);
    cr_expect_eq(green_code_kind((void *)nopreempt_spin), GREEN_CODE_NOPREEMPT);
    cr_expect_eq(green_code_kind((void *)malloc), GREEN_CODE_UNSAFE);
    cr_expect_eq(green_code_kind((void *)green_spawn), GREEN_CODE_RUNTIME);
    cr_expect_eq(green_code_kind(&local), GREEN_CODE_UNKNOWN);
    cr_expect_eq(green_code_kind(NULL), GREEN_CODE_UNKNOWN);
}

Test(safepoint, code_ranges_are_checked_and_override_what_objects_say)
{
    long page = sysconf(_SC_PAGESIZE);
    char *jit = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(jit, MAP_FAILED);
    cr_expect_eq(green_code_range_add(NULL, 16, GREEN_CODE_PREEMPTIBLE), EINVAL);
    cr_expect_eq(green_code_range_add(jit, 0, GREEN_CODE_PREEMPTIBLE), EINVAL);
    cr_expect_eq(green_code_range_add(jit, SIZE_MAX, GREEN_CODE_PREEMPTIBLE), EINVAL);
    cr_expect_eq(green_code_range_add(jit, 16, GREEN_CODE_RUNTIME), EINVAL);
    cr_expect_eq(green_code_range_add(jit, 16, 42), EINVAL);
    cr_expect_eq(green_code_kind(jit), GREEN_CODE_UNKNOWN);
    cr_assert_eq(green_code_range_add(jit, (size_t)page, GREEN_CODE_PREEMPTIBLE), 0);
    cr_expect_eq(green_code_kind(jit), GREEN_CODE_PREEMPTIBLE);
    cr_expect_eq(green_code_kind(jit + page), GREEN_CODE_UNKNOWN);
    cr_expect_eq(green_code_range_add(jit + 8, 16, GREEN_CODE_UNSAFE), EEXIST);
    cr_expect_eq(green_code_range_remove(jit, 16), ENOENT);
    /* Over a loaded object: the range wins, except over libgreen. */
    cr_assert_eq(green_code_range_add((void *)malloc, 1, GREEN_CODE_PREEMPTIBLE), 0);
    cr_expect_eq(green_code_kind((void *)malloc), GREEN_CODE_PREEMPTIBLE);
    cr_assert_eq(green_code_range_add((void *)green_spawn, 1, GREEN_CODE_PREEMPTIBLE), 0);
    cr_expect_eq(green_code_kind((void *)green_spawn), GREEN_CODE_RUNTIME);
    cr_expect_eq(green_code_range_remove((void *)malloc, 1), 0);
    cr_expect_eq(green_code_range_remove((void *)green_spawn, 1), 0);
    cr_expect_eq(green_code_kind((void *)malloc), GREEN_CODE_UNSAFE);
    cr_expect_eq(green_code_range_remove(jit, (size_t)page), 0);
    cr_expect_eq(green_code_kind(jit), GREEN_CODE_UNKNOWN);
    cr_expect_eq(green_code_range_remove(jit, (size_t)page), ENOENT);
    munmap(jit, (size_t)page * 2);
}

/* A GREEN_NOPREEMPT function that keeps no frame: its return address sits
 * at the stack pointer while it spins.  The first refused signal points it
 * at the deferred trampoline; every later one must take that back before
 * walking the callers (the stress run found it was not: the walk met the
 * trampoline as a caller, and libunwind crashed in the handler). */
GREEN_NOPREEMPT static void nopreempt_leaf(uint64_t until)
{
    while (__rdtsc() < until)
        __asm__ volatile("" ::: "memory");
}

struct leaf {
    struct np np;
    uint64_t refused, deferred;
};

static void *leaf_main(void *arg)
{
    struct leaf *l = arg;
    green_t t;
    cr_assert_eq(green_spawn(&t, np_other, &l->np), 0);
    green_yield();
    green_stats_t s0 = stats_now();
    for (int i = 0; i < 5; i++)
        nopreempt_leaf(tsc_after(20 * MS));
    green_stats_t s1 = stats_now();
    l->refused = s1.refused_nopreempt - s0.refused_nopreempt;
    l->deferred = s1.deferred_taken - s0.deferred_taken;
    atomic_store(&l->np.stop, 1);
    green_join(t, NULL);
    return NULL;
}

Test(safepoint, a_frameless_nopreempt_function_survives_many_refused_signals, .timeout = 30)
{
    static struct leaf l;
    memset(&l, 0, sizeof l);
    cr_assert_eq(run_q(leaf_main, &l, 1, 100), 0);
    cr_log_info("frameless GREEN_NOPREEMPT function, 5 x 20 ms at a 100 us quantum: "
                "%llu refusals, %llu taken at the return",
                (unsigned long long)l.refused, (unsigned long long)l.deferred);
    cr_expect_geq(l.refused, 10, "too few signals landed inside to test anything");
    cr_expect_geq(l.deferred, 1);
}
