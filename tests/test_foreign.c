/* The program's and libraries' own locks on green threads (sched/foreign.c,
 * sched/pthread.c): a holder of a pthread mutex, rwlock, spinlock, stdio
 * lock or once control is never preempted and stays on its worker; a
 * waiter parks instead of blocking its worker, and is woken by a release
 * from a green thread or a plain OS thread; libc's return values hold;
 * threads all parked on such locks are reported as a deadlock.
 *
 * Most of these hang for good without the interposition: the holder is
 * preempted (or parks) and the next locker blocks the worker's OS thread
 * in the kernel, where the holder can never run again to release it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "preempt_common.h"

/* Owned busy work: where the preemption signal lands (a call-free loop on
 * the TSC; see preempt_common.h). */
static volatile uint64_t sink;
static void busy_ns(uint64_t ns)
{
    uint64_t end = tsc_after(ns);
    while (!tsc_passed(end))
        for (int i = 0; i < 64; i++)
            sink += (uint64_t)i;
}

/* ---- A mutex held across the program's own code ---------------------------- */

struct hold {
    pthread_mutex_t *m;
    int threads, iters;
    uint64_t hold_ns, gap_ns;
    _Atomic int inside;
    _Atomic long entered, moved;
    bool rw;                         /* m is unused: rw is the lock */
    pthread_rwlock_t *rwl;
};

static void *holder(void *arg)
{
    struct hold *h = arg;
    for (int i = 0; i < h->iters; i++) {
        if (h->rw)
            cr_assert_eq(pthread_rwlock_wrlock(h->rwl), 0);
        else
            cr_assert_eq(pthread_mutex_lock(h->m), 0);
        int where = green_worker_index();
        cr_assert_eq(atomic_fetch_add(&h->inside, 1), 0, "two holders at once");
        busy_ns(h->hold_ns);
        atomic_fetch_sub(&h->inside, 1);
        if (green_worker_index() != where)
            atomic_fetch_add(&h->moved, 1);
        atomic_fetch_add(&h->entered, 1);
        if (h->rw)
            cr_assert_eq(pthread_rwlock_unlock(h->rwl), 0);
        else
            cr_assert_eq(pthread_mutex_unlock(h->m), 0);
        busy_ns(h->gap_ns);
    }
    return NULL;
}

static void *spawn_holders(void *arg)
{
    struct hold *h = arg;
    green_t t[16];
    for (int i = 0; i < h->threads; i++)
        cr_assert_eq(green_spawn(&t[i], holder, h), 0);
    for (int i = 0; i < h->threads; i++)
        cr_assert_eq(green_join(t[i], NULL), 0);
    return NULL;
}

/* The case: 4 threads, a mutex held ~300 us across owned code, 100
 * runs; every run must finish, exclusion hold, and the signal must have
 * come while the lock was held (or the test proves nothing). */
static void mutex_runs(int kind, unsigned workers, unsigned quantum_us, int runs)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, kind);
    pthread_mutex_t m;
    pthread_mutex_init(&m, &a);
    /* A signal comes only to a slice longer than the quantum, and on two
     * workers at 1 ms the holders' slices rarely are: the runs go on (up to
     * ten times as many) until one has come while a lock was held. */
    green_stats_t s0 = stats_now(), s1;
    int r = 0;
    do {
        struct hold h = { .m = &m, .threads = 4, .iters = 6, .hold_ns = 300 * US,
                          .gap_ns = 100 * US };
        cr_assert_eq(run_mode(spawn_holders, &h, workers, GREEN_PREEMPT_SIGNAL, quantum_us), 0);
        cr_assert_eq(h.entered, 24);
        cr_assert_eq(h.moved, 0, "a holder changed workers");
        s1 = stats_now();
    } while (++r < runs || (s1.refused_nopreempt == s0.refused_nopreempt && r < 10 * runs));
    runs = r;
    cr_log_info("kind %d, %u workers, %u us: %d runs, %llu refused in a nopreempt "
                "section or holding a lock, %llu preemptions",
                kind, workers, quantum_us, runs,
                (unsigned long long)(s1.refused_nopreempt - s0.refused_nopreempt),
                (unsigned long long)(s1.preemptions - s0.preemptions));
    cr_assert_gt(s1.refused_nopreempt - s0.refused_nopreempt, 0,
                 "no preemption was ever refused to a holder: the test saw nothing");
    pthread_mutex_destroy(&m);
}

Test(foreign, mutex_1_worker_1ms, .timeout = 120)
{
    mutex_runs(PTHREAD_MUTEX_NORMAL, 1, 1000, 100);
}
Test(foreign, mutex_2_workers_1ms, .timeout = 120)
{
    mutex_runs(PTHREAD_MUTEX_NORMAL, 2, 1000, 100);
}
Test(foreign, mutex_1_worker_50us, .timeout = 120)
{
    mutex_runs(PTHREAD_MUTEX_NORMAL, 1, 50, 100);
}
Test(foreign, mutex_2_workers_50us, .timeout = 120)
{
    mutex_runs(PTHREAD_MUTEX_NORMAL, 2, 50, 100);
}
Test(foreign, recursive_and_errorcheck_mutexes, .timeout = 120)
{
    mutex_runs(PTHREAD_MUTEX_RECURSIVE, 1, 50, 30);
    mutex_runs(PTHREAD_MUTEX_RECURSIVE, 2, 50, 30);
    mutex_runs(PTHREAD_MUTEX_ERRORCHECK, 1, 50, 30);
    mutex_runs(PTHREAD_MUTEX_ERRORCHECK, 2, 50, 30);
}

static void *rw_runs_main(void *arg)
{
    pthread_rwlock_t *rw = arg;
    struct hold h = { .rw = true, .rwl = rw, .threads = 4, .iters = 6, .hold_ns = 300 * US,
                      .gap_ns = 100 * US };
    spawn_holders(&h);
    cr_assert_eq(h.entered, 24);
    cr_assert_eq(h.moved, 0);
    return NULL;
}

Test(foreign, rwlock_writers, .timeout = 120)
{
    pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
    for (unsigned workers = 1; workers <= 2; workers++)
        for (int r = 0; r < 30; r++)
            cr_assert_eq(run_mode(rw_runs_main, &rw, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
}

/* ---- A holder that parks keeps its worker; others on it wait ------------- */

struct park_hold {
    pthread_mutex_t m;
    _Atomic int step;
    int a_worker, b_got;
};

static void *parker_a(void *arg)
{
    struct park_hold *p = arg;
    cr_assert_eq(pthread_mutex_lock(&p->m), 0);
    cr_assert_eq(pthread_mutex_lock(&p->m), 0);      /* recursive: a count */
    p->a_worker = green_worker_index();
    atomic_store(&p->step, 1);
    for (int i = 0; i < 20; i++) {
        green_sleep_ns(1 * MS);                       /* parks, holding */
        cr_assert_eq(green_worker_index(), p->a_worker, "a holder moved");
    }
    cr_assert_eq(p->b_got, 0, "another green thread entered a held recursive mutex");
    cr_assert_eq(pthread_mutex_unlock(&p->m), 0);
    cr_assert_eq(pthread_mutex_unlock(&p->m), 0);
    return NULL;
}

static void *parker_b(void *arg)
{
    struct park_hold *p = arg;
    while (atomic_load(&p->step) == 0)
        green_yield();
    /* Same OS thread as the holder (one worker): libc would let it in. */
    cr_assert_eq(pthread_mutex_trylock(&p->m), EBUSY);
    cr_assert_eq(pthread_mutex_unlock(&p->m), EPERM, "unlocked another thread's mutex");
    cr_assert_eq(pthread_mutex_lock(&p->m), 0);
    p->b_got = 1;
    cr_assert_eq(pthread_mutex_unlock(&p->m), 0);
    return NULL;
}

static void *park_hold_main(void *arg)
{
    struct park_hold *p = arg;
    green_t a, b;
    cr_assert_eq(green_spawn(&a, parker_a, p), 0);
    cr_assert_eq(green_spawn(&b, parker_b, p), 0);
    cr_assert_eq(green_join(a, NULL), 0);
    cr_assert_eq(green_join(b, NULL), 0);
    cr_assert_eq(p->b_got, 1);
    return NULL;
}

Test(foreign, a_parked_holder_keeps_its_worker_and_its_recursive_mutex, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        struct park_hold p = { .step = 0 };
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&p.m, &a);
        cr_assert_eq(run_mode(park_hold_main, &p, workers, GREEN_PREEMPT_SIGNAL, 1000), 0);
        pthread_mutex_destroy(&p.m);
    }
}

/* ---- libc's answers ------------------------------------------------------- */

static void *errors_main(void *arg)
{
    (void)arg;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t m;
    pthread_mutex_init(&m, &a);
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM);
    cr_assert_eq(pthread_mutex_lock(&m), 0);
    cr_assert_eq(pthread_mutex_lock(&m), EDEADLK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cr_assert_eq(pthread_mutex_timedlock(&m, &ts), EDEADLK);
    cr_assert_eq(pthread_mutex_unlock(&m), 0);
    cr_assert_eq(pthread_mutex_unlock(&m), EPERM);

    /* Held by another green thread: a timed lock times out, parked. */
    pthread_mutex_t n = PTHREAD_MUTEX_INITIALIZER;
    cr_assert_eq(pthread_mutex_lock(&n), 0);
    green_t t;
    cr_assert_eq(green_spawn(&t, (void *(*)(void *))(void *)NULL == NULL ? NULL : NULL, NULL),
                 EINVAL);
    pthread_mutex_unlock(&n);

    pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
    cr_assert_eq(pthread_rwlock_wrlock(&rw), 0);
    cr_assert_eq(pthread_rwlock_wrlock(&rw), EDEADLK);
    cr_assert_eq(pthread_rwlock_rdlock(&rw), EDEADLK);
    cr_assert_eq(pthread_rwlock_tryrdlock(&rw), EBUSY);
    cr_assert_eq(pthread_rwlock_unlock(&rw), 0);
    cr_assert_eq(pthread_rwlock_rdlock(&rw), 0);
    cr_assert_eq(pthread_rwlock_rdlock(&rw), 0);
    cr_assert_eq(pthread_rwlock_trywrlock(&rw), EBUSY);
    cr_assert_eq(pthread_rwlock_unlock(&rw), 0);
    cr_assert_eq(pthread_rwlock_unlock(&rw), 0);
    pthread_mutex_destroy(&m);
    return NULL;
}

Test(foreign, libc_errors_on_green_threads)
{
    cr_assert_eq(run_mode(errors_main, NULL, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
}

struct timed {
    pthread_mutex_t m;
    _Atomic int held, ticks;
};

static void *timed_holder(void *arg)
{
    struct timed *t = arg;
    cr_assert_eq(pthread_mutex_lock(&t->m), 0);
    atomic_store(&t->held, 1);
    green_sleep_ns(60 * MS);
    cr_assert_eq(pthread_mutex_unlock(&t->m), 0);
    return NULL;
}

static void *timed_ticker(void *arg)
{
    struct timed *t = arg;
    for (int i = 0; i < 10; i++) {
        green_sleep_ns(1 * MS);
        atomic_fetch_add(&t->ticks, 1);
    }
    return NULL;
}

static void *timed_main(void *arg)
{
    struct timed *t = arg;
    green_t h, k;
    cr_assert_eq(green_spawn(&h, timed_holder, t), 0);
    while (!atomic_load(&t->held))
        green_yield();
    cr_assert_eq(green_spawn(&k, timed_ticker, t), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * (long)MS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    uint64_t t0 = mono_ns();
    cr_assert_eq(pthread_mutex_timedlock(&t->m, &ts), ETIMEDOUT);
    uint64_t waited = mono_ns() - t0;
    cr_assert_geq(waited, 19 * MS);
    cr_assert_lt(waited, 50 * MS);
    /* The worker ran the ticker meanwhile: the wait was a park. */
    cr_assert_geq(atomic_load(&t->ticks), 5);
    struct timespec bad = { 0, 1000000000L };
    cr_assert_eq(pthread_mutex_timedlock(&t->m, &bad), EINVAL);
    cr_assert_eq(pthread_mutex_clocklock(&t->m, CLOCK_PROCESS_CPUTIME_ID, &ts), EINVAL);
    cr_assert_eq(pthread_mutex_lock(&t->m), 0);  /* parks until the holder lets go */
    cr_assert_eq(pthread_mutex_unlock(&t->m), 0);
    green_join(h, NULL);
    green_join(k, NULL);
    return NULL;
}

Test(foreign, a_timed_lock_parks_and_times_out, .timeout = 30)
{
    struct timed t = { .m = PTHREAD_MUTEX_INITIALIZER };
    cr_assert_eq(run_mode(timed_main, &t, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
}

/* ---- Conditions, semaphores: green threads and a plain pthread ----------- */

#define ITEMS 2000

struct queue {
    pthread_mutex_t m;
    pthread_cond_t nonempty, nonfull;
    int buf[16], head, len;
    long sum_in, sum_out;
    int closed_by;                   /* producers done */
};

static void q_put(struct queue *q, int v)
{
    pthread_mutex_lock(&q->m);
    while (q->len == 16)
        pthread_cond_wait(&q->nonfull, &q->m);
    q->buf[(q->head + q->len++) % 16] = v;
    q->sum_in += v;
    pthread_cond_signal(&q->nonempty);
    pthread_mutex_unlock(&q->m);
}

static int q_get(struct queue *q)
{
    pthread_mutex_lock(&q->m);
    while (q->len == 0)
        pthread_cond_wait(&q->nonempty, &q->m);
    int v = q->buf[q->head];
    q->head = (q->head + 1) % 16;
    q->len--;
    q->sum_out += v;
    pthread_cond_signal(&q->nonfull);
    pthread_mutex_unlock(&q->m);
    return v;
}

static void *os_producer(void *arg)
{
    for (int i = 1; i <= ITEMS; i++)
        q_put(arg, i);
    return NULL;
}

static void *os_consumer(void *arg)
{
    for (int i = 1; i <= ITEMS; i++)
        q_get(arg);
    return NULL;
}

static void *green_consumer(void *arg)
{
    for (int i = 0; i < ITEMS / 2; i++)
        q_get(arg);
    return NULL;
}

static void *green_producer(void *arg)
{
    for (int i = 1; i <= ITEMS / 2; i++)
        q_put(arg, i);
    return NULL;
}

static void *cond_main(void *arg)
{
    struct queue *q = arg;
    /* A plain pthread produces for two green consumers... */
    pthread_t os;
    cr_assert_eq(pthread_create(&os, NULL, os_producer, q), 0);
    green_t c[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_spawn(&c[i], green_consumer, q), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_join(c[i], NULL), 0);
    pthread_join(os, NULL);
    /* ...and consumes from two green producers. */
    cr_assert_eq(pthread_create(&os, NULL, os_consumer, q), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_spawn(&c[i], green_producer, q), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(green_join(c[i], NULL), 0);
    pthread_join(os, NULL);
    return NULL;
}

Test(foreign, a_condition_hands_work_between_green_threads_and_a_pthread, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++)
        for (unsigned quantum = 50; quantum <= 1000; quantum += 950) {
            struct queue q = { .m = PTHREAD_MUTEX_INITIALIZER,
                               .nonempty = PTHREAD_COND_INITIALIZER,
                               .nonfull = PTHREAD_COND_INITIALIZER };
            cr_assert_eq(run_mode(cond_main, &q, workers, GREEN_PREEMPT_SIGNAL, quantum), 0);
            cr_assert_eq(q.sum_in, q.sum_out);
            cr_assert_eq(q.sum_in, (long)ITEMS * (ITEMS + 1) / 2 + (long)(ITEMS / 2) * (ITEMS / 2 + 1));
        }
}

static void *cond_timeout_main(void *arg)
{
    (void)arg;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_t c;
    pthread_cond_init(&c, &ca);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 10 * (long)MS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m);
    uint64_t t0 = mono_ns();
    cr_assert_eq(pthread_cond_timedwait(&c, &m, &ts), ETIMEDOUT);
    cr_assert_geq(mono_ns() - t0, 9 * MS);
    /* It holds the mutex again, as libc's does. */
    cr_assert_eq(pthread_mutex_trylock(&m), EBUSY);
    pthread_mutex_unlock(&m);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t e;
    pthread_mutex_init(&e, &a);
    cr_assert_eq(pthread_cond_wait(&c, &e), EPERM);
    pthread_cond_destroy(&c);
    return NULL;
}

Test(foreign, cond_timedwait_on_the_conditions_clock)
{
    cr_assert_eq(run_mode(cond_timeout_main, NULL, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
}

struct sems {
    sem_t s;
    _Atomic long got;
};

static void *sem_waiter(void *arg)
{
    struct sems *x = arg;
    for (int i = 0; i < 500; i++) {
        while (sem_wait(&x->s) != 0)
            cr_assert_eq(errno, EINTR);
        atomic_fetch_add(&x->got, 1);
    }
    return NULL;
}

static void *sem_os_poster(void *arg)
{
    struct sems *x = arg;
    for (int i = 0; i < 1000; i++) {
        sem_post(&x->s);
        if (i % 50 == 0)
            usleep(200);
    }
    return NULL;
}

static void *sem_main(void *arg)
{
    struct sems *x = arg;
    green_t w[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_spawn(&w[i], sem_waiter, x), 0);
    /* Half the posts from a plain pthread, half from a green thread. */
    pthread_t os;
    cr_assert_eq(pthread_create(&os, NULL, sem_os_poster, x), 0);
    for (int i = 0; i < 1000; i++) {
        sem_post(&x->s);
        if (i % 50 == 0)
            green_sleep_ns(200 * US);
    }
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_join(w[i], NULL), 0);
    pthread_join(os, NULL);
    cr_assert_eq(x->got, 2000);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cr_assert_eq(sem_timedwait(&x->s, &ts), -1);
    cr_assert_eq(errno, ETIMEDOUT);
    struct timespec bad = { 0, -1 };
    cr_assert_eq(sem_timedwait(&x->s, &bad), -1);
    cr_assert_eq(errno, EINVAL);
    return NULL;
}

Test(foreign, semaphores_park_and_are_posted_by_anyone, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        struct sems x;
        sem_init(&x.s, 0, 0);
        x.got = 0;
        cr_assert_eq(run_mode(sem_main, &x, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        sem_destroy(&x.s);
    }
}

/* ---- Spinlocks, stdio locks, once ---------------------------------------- */

static pthread_spinlock_t spin;
static _Atomic int spin_inside;

static void *spinner(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(pthread_spin_lock(&spin), 0);
        cr_assert_eq(atomic_fetch_add(&spin_inside, 1), 0);
        busy_ns(50 * US);
        if (i % 5 == 0)
            green_sleep_ns(500 * US);        /* parks, holding */
        atomic_fetch_sub(&spin_inside, 1);
        cr_assert_eq(pthread_spin_unlock(&spin), 0);
    }
    return NULL;
}

static void *spin_main(void *arg)
{
    (void)arg;
    green_t t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(green_spawn(&t[i], spinner, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(green_join(t[i], NULL), 0);
    return NULL;
}

Test(foreign, a_spinlock_holder_that_parks_does_not_spin_the_worker_forever, .timeout = 60)
{
    pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE);
    cr_assert_eq(run_mode(spin_main, NULL, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
    cr_assert_eq(run_mode(spin_main, NULL, 2, GREEN_PREEMPT_SIGNAL, 50), 0);
    pthread_spin_destroy(&spin);
}

/* Two green threads on one worker write blocks of lines under flockfile,
 * with a preemption due mid-block and a sleep inside some: no block may be
 * split by the other's lines. */
static FILE *blocks;

static void *block_writer(void *arg)
{
    char tag = (char)(uintptr_t)arg;
    for (int b = 0; b < 20; b++) {
        flockfile(blocks);
        for (int l = 0; l < 5; l++) {
            fprintf(blocks, "%c%d\n", tag, b);
            busy_ns(30 * US);
            if (l == 2 && b % 4 == 0)
                green_sleep_ns(200 * US);
        }
        funlockfile(blocks);
        busy_ns(20 * US);
    }
    return NULL;
}

static void *blocks_main(void *arg)
{
    (void)arg;
    green_t a, b;
    cr_assert_eq(green_spawn(&a, block_writer, P('a')), 0);
    cr_assert_eq(green_spawn(&b, block_writer, P('b')), 0);
    green_join(a, NULL);
    green_join(b, NULL);
    return NULL;
}

Test(foreign, flockfile_blocks_stay_whole, .timeout = 60)
{
    for (int run = 0; run < 20; run++) {
        char *text = NULL;
        size_t size = 0;
        blocks = open_memstream(&text, &size);
        cr_assert_not_null(blocks);
        cr_assert_eq(run_mode(blocks_main, NULL, 1, GREEN_PREEMPT_SIGNAL, 50), 0);
        fclose(blocks);
        /* 40 blocks of 5 identical lines each. */
        char prev[16] = "";
        int same = 0, lines = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            if (same > 0 && same < 5)
                cr_assert_str_eq(line, prev, "run %d: a block was split at line %d", run, lines);
            same = strcmp(line, prev) == 0 && same < 5 ? same + 1 : 1;
            snprintf(prev, sizeof prev, "%s", line);
            lines++;
        }
        cr_assert_eq(lines, 200);
        free(text);
    }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic int once_runs, once_done;

static void once_init(void)
{
    atomic_fetch_add(&once_runs, 1);
    busy_ns(2 * MS);
    green_sleep_ns(5 * MS);                  /* the initializer parks */
    busy_ns(2 * MS);
    atomic_store(&once_done, 1);
}

static void *once_caller(void *arg)
{
    (void)arg;
    cr_assert_eq(pthread_once(&once, once_init), 0);
    cr_assert_eq(atomic_load(&once_done), 1, "pthread_once returned before the routine ended");
    return NULL;
}

static void *once_main(void *arg)
{
    (void)arg;
    green_t t[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(green_spawn(&t[i], once_caller, NULL), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(green_join(t[i], NULL), 0);
    return NULL;
}

Test(foreign, pthread_once_whose_routine_parks, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++)
        for (int r = 0; r < 10; r++) {
            once = (pthread_once_t)PTHREAD_ONCE_INIT;
            once_runs = once_done = 0;
            cr_assert_eq(run_mode(once_main, NULL, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
            cr_assert_eq(once_runs, 1);
        }
}

/* ---- Plain OS threads keep libc's behaviour -------------------------------- */

static pthread_mutex_t shared = PTHREAD_MUTEX_INITIALIZER;
static long shared_count;

static void *os_incr(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&shared);
        shared_count++;
        pthread_mutex_unlock(&shared);
    }
    return NULL;
}

static void *green_incr(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&shared);
        shared_count++;
        if (i % 1000 == 0)
            busy_ns(100 * US);
        pthread_mutex_unlock(&shared);
    }
    return NULL;
}

static void *mixed_main(void *arg)
{
    (void)arg;
    pthread_t os[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&os[i], NULL, os_incr, NULL), 0);
    green_t g[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_spawn(&g[i], green_incr, NULL), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(os[i], NULL);
    return NULL;
}

Test(foreign, green_threads_and_plain_threads_share_a_mutex, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        shared_count = 0;
        cr_assert_eq(run_mode(mixed_main, NULL, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        cr_assert_eq(shared_count, 6 * 20000L);
    }
    /* Outside any run, libc's own answers. */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t e;
    pthread_mutex_init(&e, &a);
    cr_assert_eq(pthread_mutex_lock(&e), 0);
    cr_assert_eq(pthread_mutex_lock(&e), EDEADLK);
    cr_assert_eq(pthread_mutex_unlock(&e), 0);
    cr_assert_eq(pthread_mutex_unlock(&e), EPERM);
}

/* ---- Deadlock ------------------------------------------------------------- */

static pthread_mutex_t dl_a = PTHREAD_MUTEX_INITIALIZER, dl_b = PTHREAD_MUTEX_INITIALIZER;

static void *dl_one(void *arg)
{
    bool ab = arg != NULL;
    pthread_mutex_lock(ab ? &dl_a : &dl_b);
    green_sleep_ns(5 * MS);
    pthread_mutex_lock(ab ? &dl_b : &dl_a);
    return NULL;
}

static void *dl_main(void *arg)
{
    (void)arg;
    green_t x, y;
    green_spawn(&x, dl_one, P(1));
    green_spawn(&y, dl_one, NULL);
    green_join(x, NULL);
    return NULL;
}

Test(foreign, green_threads_parked_on_pthread_mutexes_are_a_reported_deadlock, .timeout = 30)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    int saved = dup(2);
    cr_assert_geq(dup2(fileno(tmp), 2), 0);
    int rc = run_mode(dl_main, NULL, 2, GREEN_PREEMPT_SIGNAL, 1000);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, tmp);
    buf[n] = 0;
    fclose(tmp);
    cr_assert_eq(rc, EDEADLK, "stderr: %s", buf);
    cr_assert(strstr(buf, "deadlock"), "no report: %s", buf);
    cr_assert(strstr(buf, "pthread_mutex_lock"), "the report names no mutex: %s", buf);
    cr_assert(strstr(buf, "held by green thread"), "the report names no holder: %s", buf);
}

/* ---- Barriers and joins of OS threads ------------------------------------ */

#define ROUNDS 300

struct bar {
    pthread_barrier_t b;
    _Atomic int arrived[ROUNDS];
    _Atomic int serial;
};

static void bar_rounds(struct bar *x, int parties)
{
    for (int r = 0; r < ROUNDS; r++) {
        atomic_fetch_add(&x->arrived[r], 1);
        int rc = pthread_barrier_wait(&x->b);
        cr_assert(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD, "barrier: %d", rc);
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&x->serial, 1);
        /* Nobody leaves a round before everyone arrived in it. */
        cr_assert_eq(atomic_load(&x->arrived[r]), parties, "round %d left early", r);
        if (r % 50 == 0)
            busy_ns(200 * US);
    }
}

static void *bar_green(void *arg)
{
    bar_rounds(arg, 6);
    return NULL;
}

static void *bar_os(void *arg)
{
    bar_rounds(arg, 6);
    return NULL;
}

static void *bar_main(void *arg)
{
    struct bar *x = arg;
    pthread_t os[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&os[i], NULL, bar_os, x), 0);
    green_t g[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_spawn(&g[i], bar_green, x), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    /* pthread_join of an OS thread parks: done by now, or soon. */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_join(os[i], NULL), 0);
    return NULL;
}

Test(foreign, a_barrier_of_green_threads_and_pthreads, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        static struct bar x;
        memset(&x, 0, sizeof x);
        pthread_barrier_init(&x.b, NULL, 6);
        cr_assert_eq(run_mode(bar_main, &x, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        cr_assert_eq(x.serial, ROUNDS, "one serial thread per round");
        pthread_barrier_destroy(&x.b);
    }
}

struct joiner {
    _Atomic int ticks;
};

static void *sleeper_os(void *arg)
{
    (void)arg;
    usleep(30 * 1000);
    return P(7);
}

static void *join_ticker(void *arg)
{
    struct joiner *j = arg;
    for (int i = 0; i < 20; i++) {
        green_sleep_ns(1 * MS);
        atomic_fetch_add(&j->ticks, 1);
    }
    return NULL;
}

static void *join_main(void *arg)
{
    struct joiner *j = arg;
    pthread_t os;
    cr_assert_eq(pthread_create(&os, NULL, sleeper_os, NULL), 0);
    green_t k;
    cr_assert_eq(green_spawn(&k, join_ticker, j), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5 * (long)MS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    cr_assert_eq(pthread_timedjoin_np(os, NULL, &ts), ETIMEDOUT);
    void *ret = NULL;
    cr_assert_eq(pthread_join(os, &ret), 0);
    cr_assert_eq(U(ret), 7);
    /* The single worker ran the ticker while the join waited. */
    cr_assert_geq(atomic_load(&j->ticks), 10);
    cr_assert_eq(pthread_join(pthread_self(), NULL), EDEADLK);
    green_join(k, NULL);
    return NULL;
}

Test(foreign, joining_a_pthread_parks, .timeout = 30)
{
    struct joiner j = { 0 };
    cr_assert_eq(run_mode(join_main, &j, 1, GREEN_PREEMPT_SIGNAL, 1000), 0);
}

/* Readers and writers, some parking while they hold: a writer's unlock on
 * another OS thread than its lock's would be taken by libc for a reader's
 * and leave the lock write-locked for good. */
static pthread_rwlock_t rwmix = PTHREAD_RWLOCK_INITIALIZER;
static _Atomic int rw_writers_in, rw_readers_in;

static void *rw_mixer(void *arg)
{
    uint64_t s = U(arg) * 2654435761u + 1;
    for (int i = 0; i < 100; i++) {
        bool wr = splitmix(&s) % 4 == 0;
        cr_assert_eq(wr ? pthread_rwlock_wrlock(&rwmix) : pthread_rwlock_rdlock(&rwmix), 0);
        if (wr) {
            cr_assert_eq(atomic_fetch_add(&rw_writers_in, 1), 0, "two writers");
            cr_assert_eq(atomic_load(&rw_readers_in), 0, "a writer beside readers");
        } else {
            atomic_fetch_add(&rw_readers_in, 1);
            cr_assert_eq(atomic_load(&rw_writers_in), 0, "a reader beside a writer");
        }
        busy_ns(splitmix(&s) % 20 * US);
        if (splitmix(&s) % 16 == 0)
            green_sleep_ns(20 * US);
        if (wr)
            atomic_fetch_sub(&rw_writers_in, 1);
        else
            atomic_fetch_sub(&rw_readers_in, 1);
        cr_assert_eq(pthread_rwlock_unlock(&rwmix), 0);
        busy_ns(5 * US);
    }
    return NULL;
}

static void *rw_mix_main(void *arg)
{
    (void)arg;
    green_t t[30];
    for (int i = 0; i < 30; i++)
        cr_assert_eq(green_spawn(&t[i], rw_mixer, P(i + 1)), 0);
    for (int i = 0; i < 30; i++)
        cr_assert_eq(green_join(t[i], NULL), 0);
    return NULL;
}

Test(foreign, rwlock_readers_and_writers_that_park, .timeout = 120)
{
    for (unsigned workers = 1; workers <= 2; workers++)
        for (int r = 0; r < 10; r++) {
            cr_assert_eq(run_mode(rw_mix_main, NULL, workers, GREEN_PREEMPT_SIGNAL,
                                  r % 2 ? 50 : 1000), 0);
            /* Free again: a reader's unlock taken for a writer's (or the
             * reverse) would leave it locked. */
            cr_assert_eq(pthread_rwlock_trywrlock(&rwmix), 0);
            cr_assert_eq(pthread_rwlock_unlock(&rwmix), 0);
        }
}
