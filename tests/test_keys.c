/* Thread-specific data per green thread (sched/keys.c): what a green thread
 * stores under a pthread key is its own, whichever other green threads run
 * on its worker meanwhile; the key's destructor runs when it exits; plain
 * OS threads keep libc's values; a key whose value is the OS thread's own
 * static TLS stays per OS thread.  And OpenSSL's error queue, kept under a
 * key, stays each green thread's own.
 *
 * Without the interposition the green threads of one worker share its OS
 * thread's values: every test here but the plain-thread and error-code
 * ones fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "preempt_common.h"

#ifdef HAVE_LIBCRYPTO
#include <openssl/err.h>
#endif

#define THREADS 8
#define ROUNDS 200

/* ---- Each green thread its own value ---------------------------------- */

static pthread_key_t key;
static _Atomic int mixups;

static void *own_value(void *arg)
{
    long id = (long)arg;
    cr_assert_null(pthread_getspecific(key), "a new thread starts with NULL");
    for (int r = 0; r < ROUNDS; r++) {
        long mine = id * 100000 + r + 1;
        cr_assert_eq(pthread_setspecific(key, (void *)mine), 0);
        if (r % 2)
            green_yield();
        else
            green_sleep_ns(10 * US);
        if ((long)pthread_getspecific(key) != mine)
            atomic_fetch_add(&mixups, 1);
    }
    return NULL;
}

static void *own_main(void *arg)
{
    (void)arg;
    green_t g[THREADS];
    for (long i = 0; i < THREADS; i++)
        cr_assert_eq(green_spawn(&g[i], own_value, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    return NULL;
}

Test(keys, each_green_thread_keeps_its_own_value, .timeout = 60)
{
    cr_assert_eq(pthread_key_create(&key, NULL), 0);
    for (unsigned workers = 1; workers <= 2; workers++) {
        mixups = 0;
        cr_assert_eq(run_mode(own_main, NULL, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        cr_assert_eq(mixups, 0, "%d values seen from another green thread (%u workers)",
                     (int)mixups, workers);
    }
    cr_assert_eq(pthread_key_delete(key), 0);
}

/* ---- Destructors at a green thread's exit ------------------------------- */

static pthread_key_t dkey;
static _Atomic int destroyed, destroyed_elsewhere, again;
static uint64_t owner[THREADS];     /* green_self().id */

static void destroy(void *v)
{
    long id = (long)v - 1;
    /* On the exiting green thread itself: its own value is gone now. */
    if (green_self().id != __atomic_load_n(&owner[id % THREADS], __ATOMIC_RELAXED) ||
        pthread_getspecific(dkey) != NULL)
        atomic_fetch_add(&destroyed_elsewhere, 1);
    green_yield();                   /* a destructor may park */
    atomic_fetch_add(&destroyed, 1);
    /* Stores a value again: another round, as libc runs (at most 4). */
    if (id < THREADS && atomic_fetch_add(&again, 1) < THREADS)
        pthread_setspecific(dkey, (void *)(long)(id + THREADS + 1));
}

static void *set_and_exit(void *arg)
{
    long id = (long)arg;
    __atomic_store_n(&owner[id], green_self().id, __ATOMIC_RELAXED);
    cr_assert_eq(pthread_setspecific(dkey, (void *)(id + 1)), 0);
    return NULL;
}

static void *nothing_set(void *arg)
{
    (void)arg;
    (void)pthread_getspecific(dkey);
    return NULL;
}

static void *destructor_main(void *arg)
{
    (void)arg;
    green_t g[THREADS], n;
    for (long i = 0; i < THREADS; i++)
        cr_assert_eq(green_spawn(&g[i], set_and_exit, (void *)i), 0);
    cr_assert_eq(green_spawn(&n, nothing_set, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    cr_assert_eq(green_join(n, NULL), 0);
    return NULL;
}

Test(keys, destructors_run_on_the_exiting_green_thread, .timeout = 60)
{
    cr_assert_eq(pthread_key_create(&dkey, destroy), 0);
    for (unsigned workers = 1; workers <= 2; workers++) {
        destroyed = destroyed_elsewhere = again = 0;
        cr_assert_eq(run_mode(destructor_main, NULL, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        /* Each thread's value, then the value each stored again. */
        cr_assert_eq(destroyed, 2 * THREADS, "%d destructor calls, not %d", (int)destroyed,
                     2 * THREADS);
        cr_assert_eq(destroyed_elsewhere, 0);
    }
    cr_assert_eq(pthread_key_delete(dkey), 0);
}

/* ---- A deleted key's values are gone ------------------------------------ */

static void *stale_main(void *arg)
{
    (void)arg;
    pthread_key_t k1, k2;
    cr_assert_eq(pthread_key_create(&k1, NULL), 0);
    cr_assert_eq(pthread_setspecific(k1, (void *)1), 0);
    cr_assert_eq(pthread_key_delete(k1), 0);
    cr_assert_eq(pthread_key_create(&k2, NULL), 0);
    /* libc hands the same number out again: its value starts as NULL. */
    cr_assert_null(pthread_getspecific(k2));
    cr_assert_eq(pthread_setspecific(k2, (void *)2), 0);
    cr_assert_eq((long)pthread_getspecific(k2), 2);
    cr_assert_eq(pthread_key_delete(k2), 0);
    /* libc's answers for keys that do not exist. */
    cr_assert_eq(pthread_setspecific(k2, (void *)3), EINVAL);
    cr_assert_eq(pthread_key_delete(k2), EINVAL);
    cr_assert_eq(pthread_setspecific((pthread_key_t)INT_MAX, (void *)3), EINVAL);
    cr_assert_null(pthread_getspecific((pthread_key_t)INT_MAX));
    return NULL;
}

Test(keys, a_deleted_keys_values_are_gone)
{
    cr_assert_eq(run_mode(stale_main, NULL, 1, GREEN_PREEMPT_OFF, 1000), 0);
}

/* ---- Plain OS threads keep libc's values -------------------------------- */

static pthread_key_t pkey;
static _Atomic int plain_wrong;

static void *plain_thread(void *arg)
{
    for (int r = 0; r < 20000; r++) {
        pthread_setspecific(pkey, arg);
        if (pthread_getspecific(pkey) != arg)
            atomic_fetch_add(&plain_wrong, 1);
    }
    return NULL;
}

static void *plain_main(void *arg)
{
    (void)arg;
    pthread_t os;
    cr_assert_eq(pthread_create(&os, NULL, plain_thread, (void *)7), 0);
    green_t g[THREADS];
    for (long i = 0; i < THREADS; i++)
        cr_assert_eq(green_spawn(&g[i], own_value, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    cr_assert_eq(pthread_join(os, NULL), 0);
    return NULL;
}

Test(keys, plain_threads_and_green_threads_each_their_own, .timeout = 60)
{
    cr_assert_eq(pthread_key_create(&pkey, NULL), 0);
    key = pkey;
    /* The thread that calls green_run is a plain thread before and after. */
    cr_assert_eq(pthread_setspecific(pkey, (void *)5), 0);
    mixups = plain_wrong = 0;
    cr_assert_eq(run_mode(plain_main, NULL, 2, GREEN_PREEMPT_SIGNAL, 50), 0);
    cr_assert_eq(mixups, 0);
    cr_assert_eq(plain_wrong, 0);
    cr_assert_eq((long)pthread_getspecific(pkey), 5, "green threads changed a plain thread's value");
    cr_assert_eq(pthread_key_delete(pkey), 0);
}

/* ---- A value in the OS thread's static TLS stays the OS thread's -------- */

static __thread long os_state;
static pthread_key_t tkey;
static _Atomic int tls_seen;

static void *tls_setter(void *arg)
{
    (void)arg;
    cr_assert_eq(pthread_setspecific(tkey, &os_state), 0);
    return NULL;
}

static void *tls_reader(void *arg)
{
    (void)arg;
    if (pthread_getspecific(tkey) == &os_state)
        atomic_fetch_add(&tls_seen, 1);
    return NULL;
}

static void *tls_main(void *arg)
{
    (void)arg;
    green_t a, b;
    cr_assert_eq(green_spawn(&a, tls_setter, NULL), 0);
    cr_assert_eq(green_join(a, NULL), 0);
    cr_assert_eq(green_spawn(&b, tls_reader, NULL), 0);
    cr_assert_eq(green_join(b, NULL), 0);
    return NULL;
}

Test(keys, a_value_in_static_tls_is_the_os_threads)
{
    cr_assert_eq(pthread_key_create(&tkey, NULL), 0);
    tls_seen = 0;
    cr_assert_eq(run_mode(tls_main, NULL, 1, GREEN_PREEMPT_OFF, 1000), 0);
    cr_assert_eq(tls_seen, 1, "the worker's value was not seen by the next green thread");
    cr_assert_eq(pthread_key_delete(tkey), 0);
}

/* ---- OpenSSL's error queue ---------------------------------------------- */

#ifdef HAVE_LIBCRYPTO
static _Atomic int err_mixups;

static void *ssl_errors(void *arg)
{
    int reason = 100 + (int)(long)arg;
    for (int r = 0; r < ROUNDS; r++) {
        ERR_clear_error();
        ERR_raise(ERR_LIB_USER, reason);
        if (r % 2)
            green_yield();
        else
            green_sleep_ns(10 * US);
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) != reason || ERR_peek_error() != e)
            atomic_fetch_add(&err_mixups, 1);
    }
    ERR_clear_error();
    return NULL;
}

static void *ssl_main(void *arg)
{
    (void)arg;
    green_t g[THREADS];
    for (long i = 0; i < THREADS; i++)
        cr_assert_eq(green_spawn(&g[i], ssl_errors, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(green_join(g[i], NULL), 0);
    return NULL;
}

Test(keys, openssl_error_queues_stay_each_green_threads_own, .timeout = 60)
{
    for (unsigned workers = 1; workers <= 2; workers++) {
        err_mixups = 0;
        cr_assert_eq(run_mode(ssl_main, NULL, workers, GREEN_PREEMPT_SIGNAL, 50), 0);
        cr_assert_eq(err_mixups, 0, "%d error queues seen from another green thread",
                     (int)err_mixups);
    }
}
#else
Test(keys, openssl_error_queues_stay_each_green_threads_own,
     .description = "skipped: built without libcrypto (install libssl-dev, rerun configure)")
{
    cr_skip_test("built without libcrypto (install libssl-dev, then rerun configure)");
}
#endif
