/*
 * Thread-specific data -- pthread_key_create, pthread_getspecific,
 * pthread_setspecific, pthread_key_delete -- per green thread.
 *
 * To a program every green thread is a thread: what it stores under a key
 * is its own, as its errno is, and the key's destructor runs when it exits.
 * Libraries depend on it.  OpenSSL keeps each thread's error queue under a
 * key and tells a file's end from a failure by the last error on it; its
 * per-thread random generators too.  Two green threads on one worker that
 * shared the OS thread's values, one parked inside OpenSSL (on a lock, on
 * I/O) while the other ran there, read each other's errors and used one
 * generator at once.
 *
 * The keys themselves stay libc's: pthread_key_create asks libc for one,
 * so plain OS threads, libgreen's workers outside green threads, and libc's
 * destructors at an OS thread's exit are exactly as without libgreen.
 * libgreen records each key's destructor and a sequence number, odd while
 * the key exists (glibc's scheme: a value stored under a deleted key is not
 * returned for a new key with the same number).  A green thread's values
 * live in pages of a run-wide pool (struct keypage, 256 keys each), taken
 * at its first pthread_setspecific of a key in that range and given back
 * at its exit, after the destructors have run.
 *
 * Two kinds of key stay per OS thread, libc's as they are:
 *   - a key libgreen did not see created (one made by libc itself, or
 *     while libgreen-preload.so was still resolving its calls);
 *   - a key whose value is the address of the OS thread's own static TLS
 *     (a __thread variable of the program or of a library loaded with it).
 *     That is OS-thread state by construction, and the key is there for its
 *     destructor at the OS thread's exit -- jemalloc's thread cache does
 *     this.  From the first such value on, the key is libc's for good.
 */
#include "pthread.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

extern int libc_key_create(pthread_key_t *, void (*)(void *));
extern void *libc_getspecific(pthread_key_t);
extern int libc_setspecific(pthread_key_t, const void *);
__asm__(".symver libc_key_create, __pthread_key_create@GLIBC_2.2.5");
__asm__(".symver libc_getspecific, __pthread_getspecific@GLIBC_2.2.5");
__asm__(".symver libc_setspecific, __pthread_setspecific@GLIBC_2.2.5");

#define KEYS_MAX GREEN_KEYS_MAX      /* glibc's PTHREAD_KEYS_MAX */
#define PAGE_KEYS 256u
#define DESTRUCTOR_ROUNDS 4          /* PTHREAD_DESTRUCTOR_ITERATIONS */
#define KEYPAGE_REGION ((size_t)1 << 34)   /* 16 GiB of address space */

_Static_assert(GREEN_KEY_PAGES * PAGE_KEYS == KEYS_MAX, "key pages cover every key");

/* A green thread's values of 256 keys.  A value counts only while its seq
 * is the key's. */
struct keypage {
    struct keyval {
        uintptr_t seq;
        void *val;
    } v[PAGE_KEYS];
};

/* The keys as libgreen knows them.  seq: odd while the key exists. */
#define KEY_OS 1u                    /* flags: libc's, per OS thread */
static struct {
    _Atomic uintptr_t seq;
    void (*_Atomic destr)(void *);
    _Atomic unsigned flags;
} keys[KEYS_MAX];

/* The green thread the calls are about, or NULL: everything else (a plain
 * OS thread, a worker's scheduler loop, libgreen's signal handler) uses
 * libc's values. */
static inline struct green__thread *key_thread(void)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0 || green__in_handler_now())
        return NULL;
    return w->cur;
}

/* ---- Static TLS ------------------------------------------------------- */

/* The calling OS thread's static TLS block lies just below its thread
 * pointer (x86-64's TLS variant II); its size is the dynamic linker's
 * (_dl_get_tls_static_info, which sanitizer runtimes use the same way).
 * Without it, no value is taken for OS-thread state. */
static size_t static_tls_size(void)
{
    static _Atomic size_t size = SIZE_MAX;
    size_t s = atomic_load_explicit(&size, memory_order_relaxed);
    if (s == SIZE_MAX) {
        void (*info)(size_t *, size_t *);
        *(void **)&info = dlsym(RTLD_DEFAULT, "_dl_get_tls_static_info");
        size_t align = 0;
        s = 0;
        if (info)
            info(&s, &align);
        atomic_store_explicit(&size, s, memory_order_relaxed);
    }
    return s;
}

static bool in_static_tls(const void *p)
{
    uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
    size_t size = static_tls_size();
    return size && (uintptr_t)p < tp && (uintptr_t)p >= tp - size;
}

/* ---- The calls ---------------------------------------------------------- */

EXPORT int pthread_key_create(pthread_key_t *k, void (*destr)(void *))
{
    int r = libc_key_create(k, destr);
    if (r == 0 && *k < KEYS_MAX) {
        /* libc hands *k out only once it is deleted, and pthread_key_delete
         * makes the seq even before it lets libc have it back. */
        atomic_store_explicit(&keys[*k].destr, destr, memory_order_relaxed);
        atomic_store_explicit(&keys[*k].flags, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&keys[*k].seq, 1, memory_order_release);
    }
    return r;
}

EXPORT int pthread_key_delete(pthread_key_t k)
{
    if (k < KEYS_MAX) {
        uintptr_t s = atomic_load_explicit(&keys[k].seq, memory_order_relaxed);
        /* One deleter ends the key; a second finds it even, as libc will. */
        while ((s & 1) && !atomic_compare_exchange_weak_explicit(&keys[k].seq, &s, s + 1,
                                                                  memory_order_acq_rel,
                                                                  memory_order_relaxed))
            ;
    }
    return LIBC(key_delete)(k);
}

/* The key's seq if green threads keep their own values under it, else 0. */
static inline uintptr_t key_green_seq(pthread_key_t k)
{
    if (GREEN_UNLIKELY(k >= KEYS_MAX))
        return 0;
    uintptr_t s = atomic_load_explicit(&keys[k].seq, memory_order_acquire);
    if (!(s & 1) || (atomic_load_explicit(&keys[k].flags, memory_order_relaxed) & KEY_OS))
        return 0;
    return s;
}

EXPORT void *pthread_getspecific(pthread_key_t k)
{
    struct green__thread *t = key_thread();
    uintptr_t s;
    if (!t || !(s = key_green_seq(k)))
        return libc_getspecific(k);
    const struct keypage *pg = green__cold(t)->keys[k / PAGE_KEYS];
    if (!pg)
        return NULL;
    const struct keyval *e = &pg->v[k % PAGE_KEYS];
    return e->seq == s ? e->val : NULL;
}

/* <pthread.h> declares the value `access (none)` -- only its address is
 * kept -- and gcc 12 then warns that passing it on to libc's may read it
 * uninitialized.  Nothing reads it. */
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
EXPORT int pthread_setspecific(pthread_key_t k, const void *val)
{
    struct green__thread *t = key_thread();
    uintptr_t s;
    if (!t || !(s = key_green_seq(k)))
        return libc_setspecific(k, val);
    if (GREEN_UNLIKELY(val && in_static_tls(val))) {
        atomic_fetch_or_explicit(&keys[k].flags, KEY_OS, memory_order_relaxed);
        return libc_setspecific(k, val);
    }
    struct keypage *pg = green__cold(t)->keys[k / PAGE_KEYS];
    if (!pg) {
        if (!val)
            return 0;                /* nothing stored: NULL already */
        struct green__worker *w = green__worker_self();
        int err = ENOMEM;
        if (!(pg = green__pool_get(&w->rt->keypages, &w->key_cache, &err)))
            return err;
        memset(pg, 0, sizeof *pg);
        green__cold(t)->keys[k / PAGE_KEYS] = pg;
    }
    pg->v[k % PAGE_KEYS] = (struct keyval){ s, (void *)val };
    return 0;
}
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* ---- A green thread exits ----------------------------------------------- */

/* One round over t's values: each non-NULL one of a live key is cleared,
 * then its destructor called.  True if any was. */
static bool destructor_round(struct green__thread *t)
{
    bool called = false;
    void **pages = green__cold(t)->keys;
    for (unsigned p = 0; p < GREEN_KEY_PAGES; p++) {
        struct keypage *pg = pages[p];
        for (unsigned i = 0; pg && i < PAGE_KEYS; i++) {
            struct keyval *e = &pg->v[i];
            void *val = e->val;
            if (!val)
                continue;
            pthread_key_t k = p * PAGE_KEYS + i;
            e->val = NULL;
            void (*destr)(void *) = atomic_load_explicit(&keys[k].destr, memory_order_relaxed);
            if (e->seq == atomic_load_explicit(&keys[k].seq, memory_order_acquire) && destr) {
                destr(val);          /* may park, store values again */
                called = true;
            }
        }
    }
    return called;
}

struct green__worker *green__keys_exit(struct green__worker *w, struct green__thread *t)
{
    bool any = false;
    void **pages = green__cold(t)->keys;
    for (unsigned p = 0; p < GREEN_KEY_PAGES; p++)
        any |= pages[p] != NULL;
    if (!any)
        return w;
    /* As libc does at a thread's exit: rounds while destructors store
     * values again, up to PTHREAD_DESTRUCTOR_ITERATIONS. */
    for (unsigned round = 0; round < DESTRUCTOR_ROUNDS && destructor_round(t); round++)
        ;
    w = green__worker_self();        /* a destructor may have parked */
    for (unsigned p = 0; p < GREEN_KEY_PAGES; p++) {
        if (pages[p]) {
            green__pool_put(&w->rt->keypages, &w->key_cache, pages[p]);
            pages[p] = NULL;
        }
    }
    return w;
}

int green__keys_init(struct green__rt *rt)
{
    return green__pool_init(&rt->keypages, sizeof(struct keypage), 0, 0, 0,
                            KEYPAGE_REGION, false, 0);
}
