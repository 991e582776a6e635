/*
 * Green threads: birth, identity, join, detach, death.
 *
 * A thread is born RUNNABLE in its spawner's LIFO slot, its stack untouched:
 * the worker that first switches to it builds the initial frame there
 * (launch() in switch.c), which makes that switch "return" into
 * green__ctx_entry, which calls green__thread_main.  It starts with the
 * floating-point controls (MXCSR, x87 control word) that green_run's caller
 * had: a program that sets flush-to-zero or a rounding mode before green_run
 * gets it everywhere, and a spawn costs no STMXCSR (11 cycles on this
 * machine's CPU).
 *
 * Join and detach.  t->jword holds the thread's id and three flags:
 *
 *   DETACHED  nobody will join; the thread frees its own slot at exit
 *   JOINING   one joiner has claimed the right to join (pins the slot)
 *   WAITING   that joiner is parked, and t->joiner names it
 *   DONE      fn has returned and ret is set
 *
 * Every transition is a CAS on the whole word, so a handle whose id no longer
 * matches (the slot was freed, maybe reused) fails cleanly with EINVAL, and
 * exactly one of {joiner, detacher, exiting thread} frees the slot:
 *
 *   joinable:  exit sets DONE; the joiner (who set JOINING) frees.
 *   detached:  exit sees DETACHED and is freed by the next context
 *              (free_on_switch); or detach sees DONE and frees.
 *
 * The joiner and the exiting thread meet in jword too: one CAS sets JOINING
 * and, unless DONE is already there, WAITING; the joiner then publishes
 * itself in t->joiner and parks.  Exit sets DONE and, if it finds WAITING,
 * waits the few instructions it may take for t->joiner to appear, and wakes
 * it.  Two locked instructions per join, one on each side.  A slot is freed only once its thread has
 * left the CPU (on_cpu == 0): the exiting thread still runs on that stack
 * while it switches away.
 */
#include "foreign.h"

#include <errno.h>
#include <unistd.h>

#define GREEN_ID_BLOCK 1024u
#define GREEN_THREAD_REGION ((size_t)1 << 36)   /* 64 GiB of address space */
#define GREEN_THREAD_HUGE_FROM ((size_t)4 << 20)

static _Atomic uint64_t id_blocks;

static uint64_t next_id(struct green__worker *w)
{
    if (w->id_next == w->id_end) {
        uint64_t b = atomic_fetch_add_explicit(&id_blocks, GREEN_ID_BLOCK,
                                               memory_order_relaxed);
        w->id_next = b + 1;          /* ids start at 1; 0 names no thread */
        w->id_end = b + 1 + GREEN_ID_BLOCK;
    }
    return w->id_next++;
}

/* MXCSR and the x87 control word of the calling OS thread, packed as the
 * switch keeps them. */
uint64_t green__fp_control(void)
{
    uint32_t mxcsr;
    uint16_t fcw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fcw));
    return (uint64_t)mxcsr | (uint64_t)fcw << 32;
}

struct green__thread *green__thread_new(struct green__worker *w, void *(*fn)(void *),
                                        void *arg, bool detached, int *err)
{
    if (w->rt->det) {
        size_t live = atomic_load_explicit(&w->spawned, memory_order_relaxed) -
                      atomic_load_explicit(&w->exited, memory_order_relaxed);
        if ((*err = green__det_reserve(w->rt, live + 1)) != 0)
            return NULL;
    }
    struct green__thread *t = green__pool_get(&w->rt->threads, &w->thread_cache, err);
    if (!t)
        return NULL;
    /* Before its stack: a racy reader (green__cold_racy) must not take
     * the stack's last owner's cold part for this thread's. */
    atomic_store_explicit(&t->on_cpu, GREEN_ON_CPU_LAUNCH, memory_order_relaxed);
    if ((*err = green__stack_get(w, t)) != 0) {
        atomic_store_explicit(&t->on_cpu, 0, memory_order_relaxed);   /* rest state */
        green__pool_put(&w->rt->threads, &w->thread_cache, t);
        return NULL;
    }
    uint64_t id = next_id(w);

    /* Everything else is at rest already: zero in a fresh slot, and put
     * back to rest by the previous owner's death (green__thread_free and
     * the paths to it: see "Rest state" in thread.h). */
    green__set_state(t, GREEN_T_RUNNABLE);
    t->rt = w->rt;
    t->id = id;
    t->seq = atomic_load_explicit(&w->spawned, memory_order_relaxed);
    t->fn = fn;
    t->arg = arg;
    /* foreign.c: no lock held.  Only an address: the cold part is not
     * touched before the thread first runs. */
    t->held = green__cold(t)->held_inline;
    t->heldcap = GREEN_HELD_INLINE;
    t->spawn_pc = NULL;

    /* Its stack is not touched here: its first switch-in builds its
     * first frame (launch() in switch.c, "The on_cpu protocol"). */
    t->sp = NULL;

    atomic_store_explicit(&t->jword, id << GREEN_JW_SHIFT | (detached ? GREEN_JW_DETACHED : 0),
                          memory_order_release);
    atomic_store_explicit(&w->spawned,
                          atomic_load_explicit(&w->spawned, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return t;
}

/* What a parked thread costs is a page of stack and this (README, "A cold
 * million"): keep it to three cache lines. */
#if !defined GREEN_ASAN && !defined GREEN_VALGRIND && !defined GREEN_TSAN
_Static_assert(sizeof(struct green__thread) <= 3 * GREEN_CACHELINE,
               "struct green__thread grew past three cache lines: move what only the "
               "thread itself uses to struct green__thread_cold");
#endif
_Static_assert(sizeof(struct green__thread_cold) + sizeof(struct green__stack_top) == 240,
               "the records at a stack's top changed size: green.h and green_run(3) say 240");

int green__threads_init(struct green__rt *rt)
{
    rt->thread_main = green__thread_main;
    size_t size = (sizeof(struct green__thread) + GREEN_CACHELINE - 1) / GREEN_CACHELINE *
                  GREEN_CACHELINE;
    /* A free block keeps its cache link in `sp` (offset 0), never in jword:
     * a stale handle must keep reading "no such thread" there. */
    int err = green__pool_init(&rt->threads, size, 0, 0, 0, GREEN_THREAD_REGION, false, size);
    /* Control blocks lie back to back and are all touched: past the first
     * GREEN_THREAD_HUGE_FROM bytes (~21 000 threads), in huge pages, where
     * the system's THP mode is "madvise" ("always" gives them anyway).  A
     * fresh 4 KiB page costs ~4-6 us at its first touch on the VM this was
     * measured on, whoever populated it (the hypervisor maps it then), and
     * holds 21 control blocks; a huge page is mapped at once.  A cold
     * million: park_spawn 5.62 -> 5.17 us a thread, medians of 7 (README,
     * "A cold million").  Not for the first ones: a program of a few
     * threads does not take 2 MiB of memory for them.  The price: the
     * populate that maps a huge page holds the pool's lock for all of it,
     * ~3 ms on memory the host must back anew, once per ~11 000 new
     * threads while the pool grows. */
    rt->threads.huge_from = GREEN_THREAD_HUGE_FROM;
    return err;
}


void green__thread_main(struct green__worker *w, struct green__thread *t)
{
    green__switch_finish(w);
    *w->errno_loc = 0;
    void *ret = green__call_entry(t->fn, t->arg);
    struct green__worker *w_end = green__worker_self();
    if (GREEN_UNLIKELY(!w_end))
        _exit(0);                    /* a fork child's copy of the thread (fork.c) */
    green__thread_exit(w_end, ret);
}

void green__thread_exit(struct green__worker *w, void *ret)
{
    struct green__thread *self = w->cur;
    /* Its pthread keys' destructors first: program code, on the thread. */
    w = green__keys_exit(w, self);
    self->ret = ret;
    if (self->is_main)
        w->rt->main_ret = ret;

    green__held_forget(w, self);     /* what it holds stays locked */
    green__trace(w, GREEN_TR_EXIT, self->id, 0, 0);
    green__set_state(self, GREEN_T_DEAD);
    /* DONE is clear until now and only we set it: adding it is or-ing it,
     * and `lock xadd` needs no compare-and-retry loop. */
    uint64_t old = atomic_fetch_add_explicit(&self->jword, GREEN_JW_DONE,
                                             memory_order_acq_rel);
    struct green__thread *heir = NULL;
    if (old & GREEN_JW_DETACHED) {
        self->free_on_switch = true;
    } else if (old & GREEN_JW_WAITING) {
        /* The joiner publishes itself right after setting WAITING. */
        struct green__thread *joiner;
        while (!(joiner = atomic_load_explicit(&self->joiner, memory_order_acquire)))
            green__cpu_relax();
        if (green__claim(joiner)) {
            green__cold(joiner)->wake_err = 0;
            green__trace_woken(w, joiner);
            heir = joiner;
        }
    }
    atomic_store_explicit(&w->exited,
                          atomic_load_explicit(&w->exited, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    /* A joiner of this run takes over the CPU at once, as if it had been
     * put in the LIFO slot and picked: the same order, without the trip
     * through the slot. */
    if (heir && heir->rt == w->rt && w->runnext_streak < GREEN_RUNNEXT_MAX &&
        (!heir->nheld || heir->home == w)) {
        w->runnext_streak++;
        green__switch(w, heir);
    } else if (heir) {
        green__ready(w, heir, true);
    }
    green__sched_leave(w);
    green__panic("a finished green thread was resumed");
}

int green_spawn(green_t *out, void *(*fn)(void *), void *arg)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter_obj(&w, &self, fn);
    if (err)
        return err;
    struct green__thread *t = green__thread_new(w, fn, arg, out == NULL, &err);
    if (!t)
        return err;
    t->spawn_pc = __builtin_return_address(0);
    green__trace(w, GREEN_TR_SPAWN, t->id, self->id, 0);
    if (out) {
        out->p = t;
        out->id = t->id;
    }
    green__ready(w, t, true);
    return 0;
}

/* The calling green thread and the control block h names in this run:
 * EPERM outside a green thread, EINVAL for a handle naming no slot. */
static int enter_handle(green_t h, struct green__worker **wp, struct green__thread **selfp,
                        struct green__thread **tp)
{
    int err = green__enter(wp, selfp);
    if (err)
        return err;
    *tp = h.id && green__pool_owns(&(*wp)->rt->threads, h.p) ? h.p : NULL;
    return *tp ? 0 : EINVAL;
}

static void wait_off_cpu(struct green__thread *t)
{
    while (atomic_load_explicit(&t->on_cpu, memory_order_acquire))
        green__cpu_relax();
}

/* CAS jword from an unflagged state of thread `id` to one with `flag`.
 * Returns the word it replaced, or 0 when the handle may not do that. */
static uint64_t claim_flag(struct green__thread *t, uint64_t id, uint64_t flag)
{
    uint64_t cur = atomic_load_explicit(&t->jword, memory_order_acquire);
    for (;;) {
        if (cur >> GREEN_JW_SHIFT != id || (cur & (GREEN_JW_DETACHED | GREEN_JW_JOINING)))
            return 0;
        if (atomic_compare_exchange_weak_explicit(&t->jword, &cur, cur | flag,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return cur;
    }
}

int green_join_until(green_t h, void **ret, uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self, *t;
    int err = enter_handle(h, &w, &self, &t);
    if (err)
        return err;
    if (t == self && h.id == self->id)
        return EDEADLK;
    /* One CAS claims the join and, if the thread still runs, says we wait
     * (WAITING): the exiting thread then finds us in t->joiner, which we
     * publish right after.  JOINING pins the slot: it is ours to free. */
    green__park_prepare(self, "green_join", t, deadline == GREEN_FOREVER);
    uint64_t cur = atomic_load_explicit(&t->jword, memory_order_acquire);
    for (;;) {
        if (cur >> GREEN_JW_SHIFT != h.id || (cur & (GREEN_JW_DETACHED | GREEN_JW_JOINING)))
            return EINVAL;
        uint64_t want = cur | GREEN_JW_JOINING | (cur & GREEN_JW_DONE ? 0 : GREEN_JW_WAITING);
        if (atomic_compare_exchange_weak_explicit(&t->jword, &cur, want,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    if (!(cur & GREEN_JW_DONE)) {
        atomic_store_explicit(&t->joiner, self, memory_order_release);
        err = green__park(&w, deadline);
        if (err) {
            /* Take the join back, unless the thread finished meanwhile (its
             * wake-up lost to our deadline): then the join stands. */
            cur = atomic_load_explicit(&t->jword, memory_order_acquire);
            while (!(cur & GREEN_JW_DONE) &&
                   !atomic_compare_exchange_weak_explicit(
                       &t->jword, &cur, cur & ~(uint64_t)(GREEN_JW_WAITING | GREEN_JW_JOINING),
                       memory_order_acq_rel, memory_order_acquire))
                ;
            if (!(cur & GREEN_JW_DONE)) {
                atomic_store_explicit(&t->joiner, NULL, memory_order_relaxed);
                return err;
            }
        }
    }
    wait_off_cpu(t);
    if (ret)
        *ret = t->ret;
    green__thread_free(w, t);
    return 0;
}

int green_join(green_t h, void **ret)
{
    return green_join_until(h, ret, GREEN_FOREVER);
}

int green_detach(green_t h)
{
    struct green__worker *w;
    struct green__thread *self, *t;
    int err = enter_handle(h, &w, &self, &t);
    if (err)
        return err;
    uint64_t old = claim_flag(t, h.id, GREEN_JW_DETACHED);
    if (!old)
        return EINVAL;
    if (old & GREEN_JW_DONE) {
        wait_off_cpu(t);
        green__thread_free(w, t);
    }
    return 0;
}

green_t green_self(void)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return (green_t){ NULL, 0 };
    return (green_t){ w->cur, w->cur->id };
}

int green_set_name(const char *name)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0 || green__in_handler_now())
        return EPERM;
    if (!name)
        return EINVAL;
    size_t n = strnlen(name, GREEN_NAME_MAX);
    if (n >= GREEN_NAME_MAX)
        return ERANGE;
    /* Zero-filled: a dump reading it meanwhile may see a mix of the old
     * and the new name, never a missing terminator. */
    char buf[GREEN_NAME_MAX] = { 0 };
    memcpy(buf, name, n);
    memcpy(green__cold(w->cur)->name, buf, sizeof buf);
    green__trace_name(w, w->cur);
    return 0;
}

uint64_t green_id(green_t t)
{
    return t.id;
}

int green_sleep_until(uint64_t deadline)
{
    struct green__worker *w;
    struct green__thread *self;
    int err = green__enter(&w, &self);
    if (err)
        return err;
    if (deadline <= green__now(w->rt)) {
        green_yield();
        return 0;
    }
    green__park_prepare(self, "green_sleep", NULL, false);
    err = green__park(&w, deadline);
    return err == ETIMEDOUT ? 0 : err;
}

int green_sleep_ns(uint64_t ns)
{
    uint64_t now = green_now_ns();
    return green_sleep_until(ns > GREEN_FOREVER - now ? GREEN_FOREVER - 1 : now + ns);
}
