/*
 * Stacks: where green threads run, and what happens when one runs out.
 *
 * A stack is a slot of the run's stack pool (pool.c):
 *
 *     slot:  [ guard | stack .................................... ]
 *            low                                             high = the handle
 *
 * The guard (16 KiB of address space, no memory) sits below the stack; the
 * pool installs it once per slot, a batch of fresh slots at a time, and
 * populates their top pages with it (pool.c): a cold spawn then costs no
 * page fault of its own.  The stack's top holds two records (thread.h):
 *
 *     [ ... frames | struct green__thread_cold | struct green__stack_top ]
 *                                                                  high
 *
 * The control block proper lives in a pool of its own: a thread that has
 * finished gives its stack back at once, even while it waits to be
 * joined, so "spawn a million, then join them" recycles warm stacks
 * instead of touching a million new pages.  A parked thread that has not
 * gone deep costs one page of stack and its 192-byte control block.
 *
 * Overflow: a thread that runs off the bottom of its stack hits the guard;
 * SIGSEGV arrives on the worker's sigaltstack, and the handler reports
 * "green thread N overflowed its K-byte stack" and aborts.  Faults that are
 * not ours go to the handler that was installed before.
 *
 * Rejected: one mmap per stack (a syscall per spawn, and one VMA each);
 * the whole control block on the stack's top page (one allocation fewer,
 * but a finished, unjoined thread then pins a whole stack, and the spawner,
 * which writes the control block, takes the page's first touch).
 */
#include "sched.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define GREEN_STACK_REGION ((size_t)1 << 40)
#define GREEN_GUARD_BYTES ((size_t)16 << 10)

static size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

int green__stacks_init(struct green__rt *rt, size_t stack_size)
{
    size_t page = green__page_size();
    size_t guard = round_up(GREEN_GUARD_BYTES, page);
    size_t slot = round_up(guard + stack_size, page);
    /* The handle is the top of the stack; a free stack keeps its cache
     * link in its top word. */
    return green__pool_init(&rt->stacks, slot, guard, slot, -(ptrdiff_t)sizeof(void *),
                            GREEN_STACK_REGION, true, page);
}

int green__stack_get(struct green__worker *w, struct green__thread *t)
{
    struct green__pool *p = &w->rt->stacks;
    int err = 0;
    char *hi = green__pool_get(p, &w->stack_cache, &err);
    if (!hi)
        return err ? err : EAGAIN;
    t->stack_hi = hi;
#if defined GREEN_ASAN || defined GREEN_VALGRIND
    size_t size = p->slot - p->guard;   /* green__stack_size: t->rt is not set yet */
#endif
#ifdef GREEN_ASAN
    /* The last thread on this stack never returned from its frames: their
     * redzones are still poisoned in AddressSanitizer's shadow. */
    __asan_unpoison_memory_region(hi - size, size);
#endif
#ifdef GREEN_VALGRIND
    /* Else memcheck takes each switch for a huge stack-pointer move. */
    t->vg_stack_id = VALGRIND_STACK_REGISTER(hi - size, hi);
#endif
#ifdef GREEN_TSAN
    /* A fiber per stack: ThreadSanitizer keeps each green thread's history
     * apart from its worker's (green__switch switches fibers). */
    t->tsan_fiber = __tsan_create_fiber(0);
#endif
    return 0;
}

void green__stack_put(struct green__worker *w, struct green__thread *t)
{
#ifdef GREEN_VALGRIND
    VALGRIND_STACK_DEREGISTER(t->vg_stack_id);
#endif
#ifdef GREEN_TSAN
    __tsan_destroy_fiber(t->tsan_fiber);  /* switched away from for good */
#endif
    green__pool_put(&w->rt->stacks, &w->stack_cache, t->stack_hi);
    t->stack_hi = NULL;
}

/* ---- Overflow reports --------------------------------------------------- */

static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned handler_users;
static struct sigaction old_segv;

/* AS-safe */
static bool is_overflow(const struct green__thread *t, const char *addr,
                        const char *rsp)
{
    const char *lo = green__stack_lo(t);
    size_t guard = t->rt->stacks.guard;
    if (addr < lo && addr >= lo - guard)
        return true;
    /* A frame larger than the guard may fault beyond it: then the stack
     * pointer itself has left the stack. */
    return rsp < lo && rsp >= lo - guard - t->rt->stacks.slot;
}

/* AS-safe */
static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    struct green__worker *w = green__worker_self();
    ucontext_t *uc = uctx;
    if (w && w->cur && w->cur != &w->g0) {
        struct green__thread *t = w->cur;
        const char *rsp = (const char *)uc->uc_mcontext.gregs[REG_RSP];
        if (is_overflow(t, si->si_addr, rsp)) {
            green__write_str(2, "libgreen: green thread ");
            green__write_u64(2, t->id);
            green__write_str(2, " overflowed its ");
            green__write_u64(2, t->rt->cfg.stack_size);
            green__write_str(2, "-byte stack (set GREEN_STACK_SIZE or "
                                "green_config_t.stack_size)\n");
            abort();
        }
    }
    /* Not ours: hand it to whoever had it before. */
    if (old_segv.sa_flags & SA_SIGINFO) {
        old_segv.sa_sigaction(sig, si, uctx);
    } else if (old_segv.sa_handler == SIG_DFL || old_segv.sa_handler == SIG_IGN) {
        /* Return and fault again, now with the default action. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    } else {
        old_segv.sa_handler(sig);
    }
    errno = saved;
}

int green__overflow_install(void)
{
    int err = 0;
    green__os_mutex_lock(&handler_lock);
    if (handler_users++ == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (green__sigaction_chain(SIGSEGV, &sa, &old_segv) != 0) {
            handler_users--;
            err = EAGAIN;
        }
    }
    green__os_mutex_unlock(&handler_lock);
    return err;
}

void green__overflow_uninstall(void)
{
    green__os_mutex_lock(&handler_lock);
    if (--handler_users == 0) {
        struct sigaction cur;
        /* Put the old handler back unless the program replaced ours. */
        if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
            cur.sa_sigaction == on_segv)
            sigaction(SIGSEGV, &old_segv, NULL);
    }
    green__os_mutex_unlock(&handler_lock);
}

int green__altstack_setup(struct green__worker *w)
{
    size_t size = round_up(64 << 10, green__page_size());
    long min = sysconf(_SC_MINSIGSTKSZ);
    if (min > 0 && (size_t)min * 4 > size)
        size = round_up((size_t)min * 4, green__page_size());
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return EAGAIN;
    stack_t ss = { .ss_sp = p, .ss_size = size, .ss_flags = 0 };
    if (sigaltstack(&ss, &w->old_altstack) != 0) {
        munmap(p, size);
        return EAGAIN;
    }
    w->altstack = p;
    w->altstack_size = size;
    return 0;
}

void green__altstack_teardown(struct green__worker *w)
{
    if (!w->altstack)
        return;
    sigaltstack(&w->old_altstack, NULL);
    munmap(w->altstack, w->altstack_size);
    w->altstack = NULL;
}

/* Give a finished thread's control block back (its stack went at exit),
 * at rest: as green__thread_new expects it (sched.h). */
void green__thread_free(struct green__worker *w, struct green__thread *t)
{
    green__assert(!atomic_load_explicit(&t->on_cpu, memory_order_relaxed) &&
                  !t->free_on_switch && !t->timer_w && t->timer_idx == 0);
    green__set_state(t, GREEN_T_FREE);
    t->is_main = false;
    t->nopreempt = 0;
    t->preempt_pending = false;
#ifdef GREEN_ASAN
    t->asan_fake = NULL;
#endif
    atomic_store_explicit(&t->joiner, NULL, memory_order_relaxed);
    atomic_store_explicit(&t->wake, 0, memory_order_relaxed);
    atomic_store_explicit(&t->jword, 0, memory_order_release);
    green__pool_put(&w->rt->threads, &w->thread_cache, t);
}
