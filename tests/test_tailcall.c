/* GREEN_NOPREEMPT holds under tail calls (tests/nopreempt_tail.c): a
 * protected function that ends by calling another is not left, as far as
 * preemption goes, before that call returns -- built at -O2 with gcc and
 * with clang.  The control, the section alone, shows what the macro
 * prevents: the callee runs after a jump, outside any protected frame, and
 * another thread runs in the middle of the critical part. */
#include "preempt_common.h"

#define DECLARE(v)                                                             \
    extern volatile int v##_in_crit;                                           \
    void v##_crit(uint64_t until);
DECLARE(gcc)
DECLARE(clang)
DECLARE(control)

struct variant {
    void (*crit)(uint64_t);
    volatile int *in_crit;
    atomic_int stop;
    uint64_t ran_inside, ran;          /* the bystander's turns: in crit, all */
    green_stats_t s0, s1;
};

static void *bystander(void *arg)
{
    struct variant *v = arg;
    while (!atomic_load(&v->stop)) {
        v->ran++;
        v->ran_inside += *v->in_crit;
        uint64_t until = tsc_after(50 * US);   /* then wait to be preempted */
        while (!tsc_passed(until) && !atomic_load(&v->stop))
            __asm__ volatile("" ::: "memory");
    }
    return NULL;
}

static void *crit_main(void *arg)
{
    struct variant *v = arg;
    green_t t;
    cr_assert_eq(green_spawn(&t, bystander, v), 0);
    green_yield();
    v->s0 = stats_now();
    for (int i = 0; i < 5; i++)
        v->crit(tsc_after(50 * MS));
    v->s1 = stats_now();
    atomic_store(&v->stop, 1);
    green_join(t, NULL);
    return NULL;
}

static void check(const char *name, void (*crit)(uint64_t), volatile int *in_crit,
                  bool protected)
{
    static struct variant v;
    memset(&v, 0, sizeof v);
    v.crit = crit;
    v.in_crit = in_crit;
    cr_assert_eq(run_mode(crit_main, &v, 1, GREEN_PREEMPT_SIGNAL, 100), 0);
    cr_log_info("%s: 5 x 50 ms ending in a tail call, 100 us quantum: the other thread ran "
                "%llu times, %llu of them inside; %llu refused as GREEN_NOPREEMPT",
                name, (unsigned long long)v.ran, (unsigned long long)v.ran_inside,
                (unsigned long long)(v.s1.refused_nopreempt - v.s0.refused_nopreempt));
    cr_expect_gt(v.ran, 2, "the other thread hardly ran");
    if (protected)
        cr_expect_eq(v.ran_inside, 0, "%s: another thread ran inside the protected call", name);
    else
        cr_expect_gt(v.ran_inside, 0, "%s: the control was never interrupted", name);
}

Test(tailcall, a_nopreempt_function_built_by_gcc_at_O2_covers_its_last_call, .timeout = 30)
{
    check("gcc -O2", gcc_crit, &gcc_in_crit, true);
}

Test(tailcall, a_nopreempt_function_built_by_clang_at_O2_covers_its_last_call, .timeout = 30)
{
#ifdef HAVE_CLANG_VARIANT
    check("clang -O2", clang_crit, &clang_in_crit, true);
#else
    cr_skip("clang not found at configure time (Debian: install clang)");
#endif
}

Test(tailcall, without_the_attribute_the_last_call_runs_unprotected, .timeout = 30)
{
    check("control (section only)", control_crit, &control_in_crit, false);
}
