// C++ function-local statics on green threads (sched/pthread.c,
// __cxa_guard_*): the thread that runs a static's constructor is never
// preempted inside it and stays on its worker; the others that reach the
// static meanwhile park until it is done -- without the interposition they
// sleep in the kernel on the guard, blocking their worker, and with one
// worker the constructor never gets to finish.
#include <criterion/criterion.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>

#include "green.h"

namespace {

std::atomic<int> constructed{0}, entered{0}, workers_seen{0};
std::atomic<int> ctor_worker{-1};

uint64_t mono_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

volatile uint64_t sink;

struct Slow {
    int value;
    Slow()
    {
        constructed++;
        ctor_worker = green_worker_index();
        // Owned work long enough for several preemption signals...
        uint64_t end = mono_ns() + 3000000;
        while (mono_ns() < end)
            for (int i = 0; i < 64; i++)
                sink = sink + uint64_t(i);
        // ...and a park in the middle of the constructor.
        green_sleep_ns(5000000);
        if (green_worker_index() != ctor_worker)
            workers_seen++;
        value = 42;
    }
};

// One static per configuration: a static is constructed once per process.
template <int N> int use_static()
{
    static Slow s;                   // __cxa_guard_acquire / release
    return s.value;
}

void *user(void *which)
{
    entered++;
    int v = which ? use_static<2>() : use_static<1>();
    return reinterpret_cast<void *>(intptr_t(v));
}

void *spawn_users(void *which)
{
    green_t t[8];
    for (auto &x : t)
        cr_assert_eq(green_spawn(&x, user, which), 0);
    for (auto &x : t) {
        void *r = nullptr;
        cr_assert_eq(green_join(x, &r), 0);
        cr_assert_eq(intptr_t(r), 42, "a thread saw the static before its constructor ended");
    }
    return nullptr;
}

} // namespace

Test(foreign_cxx, a_static_whose_constructor_runs_long_and_parks, .timeout = 60)
{
    for (unsigned workers : { 1u, 2u }) {
        green_config_t cfg;
        green_config_init(&cfg);
        cfg.workers = workers;
        cfg.preempt = GREEN_PREEMPT_SIGNAL;
        cfg.quantum_us = 50;
        cfg.signo = SIGALRM;
        void *which = workers == 1 ? nullptr : &cfg;
        cr_assert_eq(green_run(spawn_users, which, &cfg, nullptr), 0);
        cr_assert_eq(entered.load(), 8);
        entered = 0;
    }
    cr_assert_eq(constructed.load(), 2, "each static constructed once");
    cr_assert_eq(workers_seen.load(), 0, "the constructor changed workers");
}
