/* Private to libgreen. */
/*
 * A green thread: its control block (struct green__thread), its states, the
 * join word, the top of its stack, and the calls that make, start, end and
 * free one (thread.c, stack.c, keys.c).
 */
#ifndef GREEN_THREAD_H
#define GREEN_THREAD_H

#include "base.h"

/* ---- Green threads ------------------------------------------------------ */

enum green__tstate {
    GREEN_T_FREE = 0,
    GREEN_T_RUNNABLE,
    GREEN_T_RUNNING,
    GREEN_T_PARKED,
    GREEN_T_DEAD,
};

/* t->jword: id << GREEN_JW_SHIFT | flags.  Every join/detach transition is a
 * CAS on the whole word, so a stale handle (whose id no longer matches) can
 * never act on a recycled control block. */
#define GREEN_JW_DETACHED 1u
#define GREEN_JW_JOINING  2u
#define GREEN_JW_DONE     4u
#define GREEN_JW_WAITING  8u   /* the joiner is parked: t->joiner is set */
#define GREEN_JW_SHIFT    4

struct green__worker;
struct green__rt;
struct green__waiter;

/* The preemption layer's own state of one thread: the hook on its way out
 * of code that may not be interrupted (struct green__patch, safepoints.h).
 * sched/ does not read it: it only keeps the room, in the cold part, which
 * launch() zeroes. */
struct green__preempt_slot {
    _Alignas(8) unsigned char bytes[24];
};

/* The top 16 bytes of every green stack (just below stack_hi), which no
 * frame uses.  `mark` is GREEN_STACK_TOP_MARK from the thread's start on;
 * `ret` holds the real return address of the hooked frame while a hook is
 * in place, where the trampoline finds it when it fires and its unwind
 * information finds it for unwinders (it looks for the mark at each page
 * boundary above the hooked frame): C++ exceptions, debuggers and
 * backtraces then walk through a hooked return as if it were not there. */
struct green__stack_top {
    uint64_t mark;
    uint64_t ret;
};
#define GREEN_STACK_TOP_MARK 0x9c3e6f1a5b27d48eull

#define GREEN_ON_CPU_LAUNCH 2u       /* on_cpu of a thread that has not run */

#define GREEN_KEYS_MAX 1024u         /* glibc's PTHREAD_KEYS_MAX */
#define GREEN_KEY_PAGES 4u

/* The control block is split in two, so that a parked thread costs one
 * page and a little: the part anyone may read at any time, in the run's
 * pool of control blocks (struct green__thread, three cache lines), and
 * the part only the thread itself needs while it lives, at the top of its
 * own stack (struct green__thread_cold, just below struct green__stack_top).
 * The spawner never touches the cold part: the worker that first runs the
 * thread zeroes it (launch(), switch.c), on the stack page it touches then
 * anyway, and it goes with the stack when the thread ends.
 *
 * Who may use the cold part (green__cold): the thread itself; whoever has
 * claimed it while it is parked (wake_err, wake_from, its waiters); and
 * readers that look at other threads racily (dumps, cycle reports, the
 * long-wait warning) through green__cold_racy, which answers NULL for a
 * thread that has not run or has ended.  Stacks stay mapped for the run's
 * length, so a racy read of a thread that ends meanwhile reads some
 * stack's bytes, never unmapped memory. */
struct green__thread_cold {
    /* Parking: written by the thread as it gets ready to park, and by its
     * claimer (see `wake`) before it makes the thread runnable.  First, in
     * the part's first cache line, with the preemption layer's slot. */
    int wake_err;                    /* 0, ETIMEDOUT, EPIPE, ... */
    uint32_t wait_n;                 /* fd waits: wait_obj's length */
    struct green__waiter *wake_from; /* the waiter that fired (select) */
    const char *wait_what;           /* the blocking call, for reports */
    const void *wait_obj;            /* the object waited on, for reports
                                      * (fd waits: their struct pollfd array) */
    struct green__waiter *waiters;   /* linked by this park, via ->tnext */

    /* The preemption layer's (struct green__preempt_slot). */
    struct green__preempt_slot preempt;

    /* For dumps (dump.c): the name it gave itself (green_set_name), where
     * green_spawn was called (NULL: the run's main thread). */
    char name[GREEN_NAME_MAX];
    const void *spawn_pc;
    /* For the timeline (trace.h), while the run is traced: when and by
     * whom it was last made runnable, written by the waker that claimed
     * it, read by the thread when it runs again (0: not since). */
    uint64_t trace_woken, trace_waker;

    /* Foreign locks: the first GREEN_HELD_INLINE entries (foreign.c). */
    const void *held_inline[4];

    /* Lock cycles (cycle.c): lockwait_gen counts its lock waits;
     * cycle_seen is the gen of the wait in which a cycle through it was
     * reported. */
    uint64_t lockwait_gen, cycle_seen;
    uint64_t lockwait_since;         /* when, if cfg.lock_warn_ms */
    uint64_t lock_warned;            /* the monitor's: parked_tsc of the park
                                      * it last warned of (lockwarn.c) */
    bool lockwait_retake;            /* a condition wait takes its mutex back:
                                      * that call may not fail (cond.c,
                                      * pthread_wait.c) */

    /* Its values of pthread keys (keys.c): a page per 256 keys, taken at
     * its first value there, given back at exit. */
    void *keys[GREEN_KEY_PAGES];
} __attribute__((aligned(16)));

/* Rest state: a control block in a pool (free) has on_cpu, wake,
 * free_on_switch, is_main, joiner, timer_w, timer_idx and asan_fake all
 * zero, as a fresh (mmap'd) one does; green__thread_new sets only the
 * rest.  Its cold part has no rest state: launch() zeroes it. */
struct green__thread {
    /* Switch state.  Owner: the worker running it, then whoever runs it next. */
    void *sp;                        /* saved stack pointer while switched out */
    _Atomic uint32_t on_cpu;         /* see "The on_cpu protocol"; 2 (GREEN_ON_CPU_LAUNCH)
                                      * until it first runs */
    uint8_t state;                   /* enum green__tstate; reports only */
    bool free_on_switch;             /* dead and detached: next context frees it */
    bool is_main;                    /* runs green_run's main_fn */
    /* Preemption.  preempt_pending: set by the signal handler on this
     * thread's worker when it refuses, cleared by the thread at its next
     * switch or poll (read with __atomic: the handler interrupts the
     * thread itself). */
    bool preempt_pending;            /* a preemption was refused meanwhile */
    int err;                         /* saved errno */
    unsigned nopreempt;              /* green_nopreempt_begin depth, plus
                                      * one per foreign lock held */
    struct green__thread *next;      /* link in the global queue / a free list */
    struct green__rt *rt;            /* the run it belongs to; fixed */
    struct green__worker *home;      /* last worker that ran it */
    uint32_t pin_mark;               /* pinned: its worker's ring tail then */
    bool pinned;                     /* in its worker's pinned queue (owner
                                      * writes; others read it as a hint) */
    bool pin_polled;                 /* pinned: fds polled before its turn */
    bool pin_holder;                 /* pinned holding foreign locks */
    /* Parking.  wake: 1 while claimable; the claimer CASes it to 0, then
     * writes the cold part's wake_err / wake_from before making the thread
     * runnable.  wake_solo: this park has one possible waker (one waiter,
     * no deadline), so the claim needs no CAS. */
    bool wake_solo;

    /* Identity and join.  jword: any thread, by CAS.  joiner: written by
     * the joiner right after it sets JW_WAITING, read by exit after that. */
    _Atomic uint64_t jword;
    uint64_t id;                     /* fixed while the slot is in use */
    uint64_t seq;                    /* spawn number on its spawner's worker:
                                      * its name in a deterministic run's digest */
    _Atomic(struct green__thread *) joiner;
    void *(*fn)(void *);             /* read once, at its start */
    void *arg;
    union {
        const void *spawn_pc;        /* until its first run, which moves it
                                      * to the cold part */
        void *ret;                   /* written before JW_DONE (release) */
    };

    _Atomic uint32_t wake;

    /* Foreign locks (foreign.c): the pthread mutexes, rwlocks, spinlocks,
     * stdio locks, once controls and static guards it holds, one entry per
     * acquisition, in the cold part's held_inline until it overflows into
     * `held` (mmap'd).  While nheld > 0 the thread is a holder: never
     * preempted (each entry counts in nopreempt), linked in its worker's
     * holders list and run only there (pthread owners are OS thread ids).
     * Owner: the thread's own worker; holder.c reads them racily. */
    uint32_t nheld, heldcap;         /* entries used, and room in held */
    /* Deadline timer.  timer_w: set by the thread before it parks;
     * timer_idx under timer_w->tlock: heap index + 1, 0 when not in the
     * heap. */
    uint32_t timer_idx;
    struct green__worker *timer_w;
    const void **held;               /* held_inline, or pages of its own */
    struct green__thread *hold_prev, *hold_next;
    bool hold_linked;                /* in its worker's holders list */
    bool trace_parking;              /* traced: between its park record and
                                      * its switch (trace.c) */

    /* Lock cycles (cycle.c).  lockwait: the lock it is committed to take
     * (address | GREEN_LW_* bits), 0 when none; written by the thread
     * (0 again before its lock call returns), read by any thread looking
     * for a cycle. */
    _Atomic uintptr_t lockwait;

    /* For dumps and the long-wait warning: the TSC when it last parked. */
    uint64_t parked_tsc;

    /* Its stack, from the run's stack pool; given back at exit.  Its
     * lowest usable byte and size are the pool's (green__stack_lo). */
    char *stack_hi;                  /* top (the pool's handle); NULL once freed */

#ifdef GREEN_ASAN
    void *asan_fake;                 /* AddressSanitizer's fake stack, if any */
#endif
#ifdef GREEN_VALGRIND
    unsigned vg_stack_id;            /* Valgrind's name for its stack */
#endif
#ifdef GREEN_TSAN
    void *tsan_fiber;                /* ThreadSanitizer's fiber for it */
#endif
} __attribute__((aligned(GREEN_CACHELINE)));

static inline struct green__stack_top *green__stack_top(const struct green__thread *t)
{
    return (struct green__stack_top *)(void *)t->stack_hi - 1;
}

/* The cold part of the stack whose top is hi. */
static inline struct green__thread_cold *green__cold_at(char *hi)
{
    return (struct green__thread_cold *)(void *)((struct green__stack_top *)(void *)hi - 1) - 1;
}

/* t's cold part: t's own, or its claimer's (see struct green__thread_cold). */
static inline struct green__thread_cold *green__cold(const struct green__thread *t)
{
    return green__cold_at(t->stack_hi);
}

/* t's cold part for a reader that may race with t's start or end: NULL
 * unless t has run and still has its stack. */
static inline struct green__thread_cold *green__cold_racy(const struct green__thread *t)
{
    char *hi = __atomic_load_n(&t->stack_hi, __ATOMIC_ACQUIRE);
    if (!hi || atomic_load_explicit(&t->on_cpu, memory_order_acquire) == GREEN_ON_CPU_LAUNCH)
        return NULL;
    return green__cold_at(hi);
}

/* t's name as reports print it, read racily: "" for a thread that has
 * not run or has ended, control characters, quotes and DEL as '?'. */
static inline void green__name_racy(const struct green__thread *t, char out[GREEN_NAME_MAX])
{
    const struct green__thread_cold *c = green__cold_racy(t);
    if (c)
        __builtin_memcpy(out, c->name, GREEN_NAME_MAX);
    else
        out[0] = '\0';
    out[GREEN_NAME_MAX - 1] = '\0';
    for (char *p = out; *p; p++)
        if (*p < ' ' || *p == '"' || *p == 0x7f)
            *p = '?';
}

/* thread.c */
void green__thread_main(struct green__worker *w, struct green__thread *t);
GREEN_NORETURN void green__thread_exit(struct green__worker *w, void *ret);
struct green__thread *green__thread_new(struct green__worker *w, void *(*fn)(void *),
                                        void *arg, bool detached, int *err);
int green__threads_init(struct green__rt *rt);

/* keys.c: pthread keys' values per green thread.  keys_exit runs t's
 * destructors (they may park: returns its worker then) and frees its
 * values. */
int green__keys_init(struct green__rt *rt);
struct green__worker *green__keys_exit(struct green__worker *w, struct green__thread *t);
uint64_t green__fp_control(void);
/* Give a finished thread's control block back (its stack went at exit). */
void green__thread_free(struct green__worker *w, struct green__thread *t);

/* stack.c */
int green__stacks_init(struct green__rt *rt, size_t stack_size);
int green__stack_get(struct green__worker *w, struct green__thread *t);
void green__stack_put(struct green__worker *w, struct green__thread *t);
int green__overflow_install(void);
void green__overflow_uninstall(void);
int green__altstack_setup(struct green__worker *w);
void green__altstack_teardown(struct green__worker *w);

#endif /* GREEN_THREAD_H */
