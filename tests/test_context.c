/* What a switch preserves for each green thread: errno, the MXCSR control
 * bits (rounding, flush-to-zero), the x87 control word -- and what a new
 * thread starts with: the controls of green_run's caller.  The threads yield
 * and sleep between checks, so on two workers they also move between them.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <xmmintrin.h>

#include "common.h"

#define ROUNDS 2000
#define MXCSR_CONTROL 0xffc0u     /* all but the exception flags (bits 0-5) */
#define MXCSR_RC_UP 0x4000u        /* round toward +infinity */
#define MXCSR_FTZ 0x8000u
#define FCW_RC_MASK 0x0c00u
#define FCW_RC_DOWN 0x0400u

static uint16_t fcw_get(void)
{
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}

static void fcw_set(uint16_t cw)
{
    __asm__ volatile("fldcw %0" : : "m"(cw));
}

/* errno read and written afresh.  Compilers treat &errno as constant within
 * a function (glibc declares __errno_location const) and may keep it across
 * a call; after a green thread has moved to another worker that address is
 * the old worker's errno.  README.md documents this (as __thread being
 * per worker); the runtime's part -- each thread's errno value saved and
 * restored at every switch -- is what these helpers let the test see. */
__attribute__((noinline)) static int errno_get(void)
{
    __asm__ volatile("" : : : "memory");
    return errno;
}

__attribute__((noinline)) static void errno_set(int v)
{
    __asm__ volatile("" : : : "memory");
    errno = v;
}

struct keeper {
    int my_errno;
    unsigned my_mxcsr;            /* control bits wanted */
    uint16_t my_fcw;
    int errno_bad, mxcsr_bad, fcw_bad, rounds;
};

/* Set this thread's errno and controls, then yield over and over, and after
 * every switch check that they are still this thread's own. */
static void *keep_context(void *arg)
{
    struct keeper *k = arg;
    _mm_setcsr(k->my_mxcsr);
    fcw_set(k->my_fcw);
    for (int i = 0; i < ROUNDS; i++) {
        errno_set(k->my_errno);
        if (i % 3 == 0)
            green_yield();
        else
            green_sleep_ns(i % 3 == 1 ? 0 : 1000);
        k->errno_bad += errno_get() != k->my_errno;
        k->mxcsr_bad += (_mm_getcsr() & MXCSR_CONTROL) != (k->my_mxcsr & MXCSR_CONTROL);
        k->fcw_bad += fcw_get() != k->my_fcw;
        k->rounds++;
    }
    return NULL;
}

static struct keeper keepers[4];

static void *three_contexts(void *unused)
{
    (void)unused;
    green_t t[4];
    for (int i = 0; i < 4; i++)
        if (green_spawn(&t[i], keep_context, &keepers[i]) != 0)
            return P(1);
    for (int i = 0; i < 4; i++)
        green_join(t[i], NULL);
    return NULL;
}

static void check_contexts(unsigned workers)
{
    unsigned def_mxcsr = _mm_getcsr();
    uint16_t def_fcw = fcw_get();
    memset(keepers, 0, sizeof keepers);
    keepers[0] = (struct keeper){ .my_errno = 11, .my_mxcsr = def_mxcsr, .my_fcw = def_fcw };
    keepers[1] = (struct keeper){ .my_errno = 22, .my_mxcsr = def_mxcsr | MXCSR_RC_UP,
                                  .my_fcw = def_fcw };
    keepers[2] = (struct keeper){ .my_errno = 33, .my_mxcsr = def_mxcsr | MXCSR_FTZ,
                                  .my_fcw = (uint16_t)((def_fcw & ~FCW_RC_MASK) | FCW_RC_DOWN) };
    keepers[3] = (struct keeper){ .my_errno = 44, .my_mxcsr = def_mxcsr,
                                  .my_fcw = def_fcw };
    void *ret = NULL;
    cr_assert_eq(run(three_contexts, NULL, workers, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(keepers[i].rounds, ROUNDS, "thread %d did not finish", i);
        cr_expect_eq(keepers[i].errno_bad, 0, "thread %d saw another's errno %d times", i,
                     keepers[i].errno_bad);
        cr_expect_eq(keepers[i].mxcsr_bad, 0, "thread %d saw another's MXCSR %d times", i,
                     keepers[i].mxcsr_bad);
        cr_expect_eq(keepers[i].fcw_bad, 0, "thread %d saw another's x87 control word %d times",
                     i, keepers[i].fcw_bad);
    }
    /* green_run's caller gets its own controls back. */
    cr_expect_eq(_mm_getcsr() & MXCSR_CONTROL, def_mxcsr & MXCSR_CONTROL);
    cr_expect_eq(fcw_get(), def_fcw);
}

Test(context, errno_and_fp_controls_are_per_thread_on_one_worker, .timeout = 20)
{
    check_contexts(1);
}

Test(context, errno_and_fp_controls_are_per_thread_across_two_workers, .timeout = 20)
{
    check_contexts(2);
}

/* On one worker a thread never changes OS thread, so even code that keeps
 * &errno across the call sees its own errno. */
struct plain {
    int bad;
};

static void *plain_errno(void *arg)
{
    struct plain *p = arg;
    int mine = (int)green_id(green_self());
    for (int i = 0; i < ROUNDS; i++) {
        errno = mine + i;
        green_yield();
        p->bad += errno != mine + i;
    }
    return NULL;
}

static void *two_plain(void *arg)
{
    green_t a, b;
    if (green_spawn(&a, plain_errno, arg) || green_spawn(&b, plain_errno, arg))
        return P(1);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

Test(context, plain_errno_code_keeps_its_errno_on_one_worker, .timeout = 10)
{
    struct plain p = { 0 };
    void *ret = NULL;
    cr_assert_eq(run(two_plain, &p, 1, -1, &ret), 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(p.bad, 0, "errno was another thread's %d times", p.bad);
}

/* ---- what a new thread starts with -------------------------------------- */

struct born {
    unsigned mxcsr;
    uint16_t fcw;
};

static void *report_controls(void *arg)
{
    struct born *b = arg;
    b->mxcsr = _mm_getcsr();
    b->fcw = fcw_get();
    return NULL;
}

static void *spawn_after_changing_own_controls(void *arg)
{
    struct born *b = arg;
    /* The spawner's own change does not leak into its child. */
    _mm_setcsr(_mm_getcsr() | MXCSR_RC_UP);
    green_t t;
    if (green_spawn(&t, report_controls, b) != 0)
        return P(1);
    green_join(t, NULL);
    return NULL;
}

Test(context, a_new_thread_starts_with_the_controls_of_green_runs_caller, .timeout = 10)
{
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | MXCSR_FTZ);          /* as numerical programs do at start */
    struct born b = { 0, 0 };
    void *ret = NULL;
    int rc = run(spawn_after_changing_own_controls, &b, 2, -1, &ret);
    unsigned caller = _mm_getcsr();
    _mm_setcsr(saved);
    cr_assert_eq(rc, 0);
    cr_assert_null(ret, "setup failed");
    cr_expect_eq(b.mxcsr & MXCSR_CONTROL, caller & MXCSR_CONTROL,
                 "child MXCSR %#x, green_run's caller %#x", b.mxcsr, caller);
    cr_expect(b.mxcsr & MXCSR_FTZ, "flush-to-zero set before green_run was lost");
    cr_expect(!(b.mxcsr & MXCSR_RC_UP), "the spawner's own rounding leaked into its child");
}
