// C++ exceptions through a hooked frame (signals/hijack.c).
//
// While a refused preemption waits for the outermost library frame to
// return, that frame's return address is libgreen's trampoline; an exception
// thrown below it unwinds through it, and the unwinder (libgcc's) must find
// the real caller there -- the trampoline's unwind information leads it to
// the address kept at the stack's top.  Two real throwers: a comparator
// throwing through glibc's qsort (built to let exceptions pass), and
// libstdc++ itself (std::vector::at throws from __throw_out_of_range_fmt,
// where a 50 us quantum lands all the time).
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <x86intrin.h>

#include "green.h"

namespace {

green_stats_t stats_now()
{
    green_stats_t s;
    std::memset(&s, 0, sizeof s);
    green_stats(&s);
    return s;
}

int run_signal(void *(*fn)(void *), void *arg, unsigned workers, unsigned quantum_us)
{
    green_config_t cfg;
    cr_assert_eq(green_config_init(&cfg), 0);
    cfg.workers = workers;
    cfg.preempt = GREEN_PREEMPT_SIGNAL;
    cfg.quantum_us = quantum_us;
    return green_run(fn, arg, &cfg, nullptr);
}

// A thread that keeps the worker wanted, so that preemptions are asked for.
struct Bystander {
    std::atomic<int> stop{ 0 };
    volatile uint64_t count = 0;
    green_t t{};

    static void *run(void *arg)
    {
        auto *b = static_cast<Bystander *>(arg);
        while (!b->stop.load(std::memory_order_relaxed))
            for (int i = 0; i < 4096; i++)
                b->count = b->count + 1;
        return nullptr;
    }
    void start()
    {
        cr_assert_eq(green_spawn(&t, run, this), 0);
        green_yield();
    }
    void finish()
    {
        stop = 1;
        green_join(t, nullptr);
    }
};

// ---- Through qsort -----------------------------------------------------------

struct QsortThrow {
    uint64_t hooks_before = 0;
    int thrown = 0, caught = 0, hooked = 0;
};

int throwing_cmp(const void *, const void *, void *arg)
{
    auto *q = static_cast<QsortThrow *>(arg);
    // Spin in the program's own code until a refused preemption has hooked
    // qsort's return (the walk finds qsort, libc's, below this frame).
    uint64_t until = __rdtsc() + 10'000'000'000ull;
    while (stats_now().hijacks == q->hooks_before && __rdtsc() < until)
        for (int i = 0; i < 20000; i++)
            __asm__ volatile("" ::: "memory");
    q->hooked += stats_now().hijacks != q->hooks_before;
    q->thrown++;
    throw std::runtime_error("from the comparator, through qsort");
}

__attribute__((noinline)) void sort_and_catch(QsortThrow *q)
{
    int v[2] = { 2, 1 };
    q->hooks_before = stats_now().hijacks;
    try {
        qsort_r(v, 2, sizeof v[0], throwing_cmp, q);
    } catch (const std::runtime_error &e) {
        if (std::string(e.what()).find("through qsort") != std::string::npos)
            q->caught++;
    }
}

void *qsort_main(void *arg)
{
    Bystander b;
    b.start();
    for (int i = 0; i < 20; i++)
        sort_and_catch(static_cast<QsortThrow *>(arg));
    b.finish();
    return nullptr;
}

} // namespace

Test(hijack_cxx, an_exception_through_a_hooked_qsort_is_caught_above_it, .timeout = 60)
{
    static QsortThrow q;
    q = QsortThrow{};
    green_stats_t s0 = stats_now();
    cr_assert_eq(run_signal(qsort_main, &q, 1, 100), 0);
    green_stats_t s1 = stats_now();
    cr_log_info("20 throws through a hooked qsort: %d hooked, %d caught; %llu hooks undone",
                q.hooked, q.caught,
                static_cast<unsigned long long>(s1.hijacks_undone - s0.hijacks_undone));
    cr_expect_eq(q.hooked, 20, "qsort's return was not hooked before the throw");
    cr_expect_eq(q.thrown, 20);
    cr_expect_eq(q.caught, 20);
}

// ---- From libstdc++ -----------------------------------------------------------

namespace {

struct AtThrows {
    uint64_t tries = 0, caught = 0;
    green_stats_t s0{}, s1{};
};

__attribute__((noinline)) int out_of_range(const std::vector<int> &v, size_t i)
{
    return v.at(i);
}

void *at_main(void *arg)
{
    auto *a = static_cast<AtThrows *>(arg);
    Bystander b;
    b.start();
    std::vector<int> v(16, 7);
    a->s0 = stats_now();
    uint64_t until = __rdtsc() + 3'000'000'000ull;   // about 1 s
    while (__rdtsc() < until) {
        a->tries++;
        try {
            out_of_range(v, 16 + a->tries % 5);
        } catch (const std::out_of_range &) {
            a->caught++;
        }
    }
    a->s1 = stats_now();
    b.finish();
    return nullptr;
}

} // namespace

Test(hijack_cxx, libstdcxx_exceptions_under_a_50us_quantum_are_all_caught, .timeout = 60)
{
    static AtThrows a;
    a = AtThrows{};
    cr_assert_eq(run_signal(at_main, &a, 1, 50), 0);
    uint64_t hooked = a.s1.hijacks - a.s0.hijacks;
    cr_log_info("%llu throws from std::vector::at, %llu caught; %llu hooked returns, "
                "%llu preemptions taken at them",
                static_cast<unsigned long long>(a.tries),
                static_cast<unsigned long long>(a.caught),
                static_cast<unsigned long long>(hooked),
                static_cast<unsigned long long>(a.s1.deferred_taken - a.s0.deferred_taken));
    cr_expect_eq(a.caught, a.tries);
    cr_expect_gt(hooked, 100, "too few hooks to say anything");
}

// ---- From deeper than the walk goes -----------------------------------------

namespace {

// A callback called by a library frame (tests/libspin.so's spin_call) that
// recurses past the 256 frames the handler walks, spins, and throws.  While
// it spins, a signal's walk does not reach the base and cannot tell whether
// the hook on spin_call's return is still in place: it must keep it, for the
// unwinder may already have read it (a hook taken back there left the
// trampoline's personality without one: abort).
struct Deep {
    void (*call)(void (*)(void)) = nullptr;
    int depth = 0;
    uint64_t tries = 0, caught = 0;
    green_stats_t s0{}, s1{};
};
Deep *deep;

__attribute__((noinline)) void recurse(int n)
{
    if (n > 0) {
        recurse(n - 1);
        __asm__ volatile("" ::: "memory");
        return;
    }
    uint64_t end = __rdtsc() + 200000;
    while (__rdtsc() < end)
        __asm__ volatile("" ::: "memory");
    throw 42;
}

void deep_callback() { recurse(deep->depth); }

void *deep_main(void *)
{
    Bystander b;
    b.start();
    deep->s0 = stats_now();
    uint64_t until = __rdtsc() + 6'000'000'000ull;   // about 2 s
    while (__rdtsc() < until) {
        deep->depth = 246 + static_cast<int>(deep->tries % 16);
        deep->tries++;
        try {
            deep->call(deep_callback);
        } catch (int) {
            deep->caught++;
        }
    }
    deep->s1 = stats_now();
    b.finish();
    return nullptr;
}

} // namespace

Test(hijack_cxx, an_exception_from_deeper_than_the_walk_is_caught_above_a_hooked_frame,
     .timeout = 60)
{
    static Deep d;
    d = Deep{};
    deep = &d;
    const char *dir = std::getenv("abs_top_builddir");
    std::string path = std::string(dir ? dir : ".") + "/tests/.libs/libspin.so";
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "dlopen %s: %s", path.c_str(), dlerror());
    d.call = reinterpret_cast<void (*)(void (*)(void))>(dlsym(h, "spin_call"));
    cr_assert_not_null(d.call);
    cr_assert_eq(run_signal(deep_main, nullptr, 1, 50), 0);
    cr_log_info("%llu throws from 246-261 frames below a library frame, %llu caught; %llu "
                "hooked returns, %llu walks that did not reach the base",
                static_cast<unsigned long long>(d.tries),
                static_cast<unsigned long long>(d.caught),
                static_cast<unsigned long long>(d.s1.hijacks - d.s0.hijacks),
                static_cast<unsigned long long>(d.s1.refused_unwind - d.s0.refused_unwind));
    cr_expect_eq(d.caught, d.tries);
    cr_expect_gt(d.s1.hijacks - d.s0.hijacks, 100, "too few hooks to say anything");
    dlclose(h);
}

