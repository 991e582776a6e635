/* The stress program's bookkeeping: failures, checked calls, thread
 * arguments (stress.h). */
#include "stress.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

uint64_t the_seed;

void failf(struct round *r, const char *fmt, ...)
{
    static atomic_flag once = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&once))
        for (;;)
            pause();  /* another thread is already reporting */
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printf("stress: FAIL: %s (round %ld, %u workers, %s, seed %" PRIu64 ")\n", why, r->index,
           r->workers, r->mode, the_seed);
    fflush(stdout);
    _exit(1);
}

void expect_rc(struct round *r, int rc, int want, const char *what)
{
    OP(r);
    if (rc != want)
        failf(r, "%s returned %d (%s), expected %d", what, rc, strerror(rc), want);
}

int spawn(struct round *r, green_t *t, void *(*fn)(void *), void *arg)
{
    OP(r);
    atomic_fetch_add(&r->started, 1);  /* before: the thread may finish first */
    int rc = green_spawn(t, fn, arg);
    if (rc != 0)
        failf(r, "green_spawn returned %d (%s)", rc, strerror(rc));
    return rc;
}

void thread_done(struct round *r)
{
    atomic_fetch_add(&r->finished, 1);
}

void join(struct round *r, green_t t, void **ret)
{
    expect_rc(r, green_join(t, ret), 0, "green_join");
}

struct targ *targs(void *comp, int n, struct rng *g)
{
    struct targ *a = calloc((size_t)n, sizeof *a);
    if (!a) {
        perror("calloc");
        exit(2);
    }
    for (int i = 0; i < n; i++)
        a[i] = (struct targ){comp, i, rng_next(g)};
    return a;
}
