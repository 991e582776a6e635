/* Private to libgreen. */
/*
 * The scheduler's shared vocabulary: green threads, workers, the runtime, and
 * the cross-file entry points of sched/.
 *
 * Glossary
 *   thread   a green thread: a control block (struct green__thread) at the
 *            top of its own mmap'd stack slot.
 *   worker   an OS thread that runs green threads (struct green__worker);
 *            one per online CPU by default.  Its own OS stack runs the
 *            scheduler loop, modelled as a pseudo-thread w->g0.
 *   rt       one green_run call: its workers, queues, stacks and counters.
 *   park     leave the CPU until some waker claims the thread and makes it
 *            runnable again (green__park).
 *   claim    the single winner among the wakers of one park (a send, a
 *            close, a timer) takes the thread with a CAS on t->wake.
 *
 * Thread states (t->state), for reports; the scheduling protocol itself rests
 * on t->on_cpu and t->wake:
 *   FREE -> RUNNABLE -> RUNNING -> (RUNNABLE | PARKED) ... -> DEAD -> FREE
 *
 * The on_cpu protocol.  A thread is on a CPU from the moment a worker decides
 * to switch to it until the next context has saved its registers.  A waker may
 * make a parking thread runnable -- and another worker may pick it -- before
 * the parking thread has finished switching out; the worker that picks it
 * waits for on_cpu to drop (a few instructions) before switching in.  This is
 * the Linux scheduler's p->on_cpu, and it lets every sync object release its
 * own lock before parking instead of holding it across the switch.  It waits
 * on g0 only, never while a thread of its own is still on its CPU: two
 * workers could each wait for the other's (green__switch goes by way of g0).
 *
 * Dependencies point one way: sched/ knows nothing of signals; the
 * preemption layer calls in through the functions declared here.
 */
#ifndef GREEN_SCHED_H
#define GREEN_SCHED_H

#include "green.h"

#include <errno.h>
#include <pthread.h>
#include <sys/types.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define GREEN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREEN_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define GREEN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GREEN_TSAN 1
#endif
#endif
#ifdef GREEN_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#ifdef GREEN_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif
#ifdef GREEN_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define GREEN_NORETURN __attribute__((noreturn))
#define GREEN_LIKELY(x) __builtin_expect(!!(x), 1)
#define GREEN_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define GREEN_CACHELINE 64

/* ---- util.c ------------------------------------------------------------- */

/* Impossible state: print "libgreen: panic: ..." and abort. */
GREEN_NORETURN void green__panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* An assertion that stays in release builds. */
#define green__assert(cond)                                                    \
    do {                                                                       \
        if (GREEN_UNLIKELY(!(cond)))                                           \
            green__panic("%s:%d: assertion failed: %s", __FILE__, __LINE__,    \
                         #cond);                                               \
    } while (0)

uint64_t green__clock_ns(void);
/* Wait while *word == val, until deadline_ns (CLOCK_MONOTONIC; GREEN_FOREVER
 * for none).  Spurious returns are allowed. */
void green__futex_wait(_Atomic uint32_t *word, uint32_t val, uint64_t deadline_ns);
void green__futex_wake(_Atomic uint32_t *word, int n);
/* &errno of the calling OS thread, read afresh: never cached across a switch. */
int *green__errno(void);
/* AS-safe: write a NUL-terminated string / an unsigned number to fd. */
void green__write_str(int fd, const char *s);
void green__write_u64(int fd, uint64_t v);
/* sigaction(sig, sa, old) for a handler that passes what is not its own to
 * *old: *old is filled before sa is installed.  (sigaction(2) fills it only
 * after, and a signal already on its way runs the new handler in between,
 * which would find *old empty -- SIG_DFL -- and kill the process.) */
int green__sigaction_chain(int sig, const struct sigaction *sa, struct sigaction *old);
uint64_t green__rand_next(uint64_t *state);
/* A uniformly random number in [0, n). */
uint32_t green__rand_below(uint64_t *state, uint32_t n);

static inline void green__cpu_relax(void) { __builtin_ia32_pause(); }

/* A test-and-test-and-set lock for the runtime's short critical sections.
 * Never held across a switch.  Zero is unlocked. */
typedef struct green__spin { _Atomic uint32_t v; } green__spin_t;
void green__spin_lock_slow(green__spin_t *l);
static inline void green__spin_lock(green__spin_t *l)
{
    uint32_t z = 0;
    if (GREEN_LIKELY(atomic_compare_exchange_weak_explicit(
            &l->v, &z, 1, memory_order_acquire, memory_order_relaxed)))
        return;
    green__spin_lock_slow(l);
}
static inline void green__spin_unlock(green__spin_t *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* ---- switch_x86_64.S ---------------------------------------------------- */

/* Save the callee-saved registers, MXCSR and the x87 control word on the
 * current stack, store the stack pointer in *save_sp, load new_sp and restore
 * from it.  Returns `transfer` as handed over by whoever switches back. */
void *green__ctx_switch(void **save_sp, void *new_sp, void *transfer);
/* First return address of a new thread: calls r12(transfer, rbx). */
void green__ctx_entry(void);
/* fn(arg) from a known return address: the base of a green thread's own
 * frames, where the safepoint walk stops. */
void *green__call_entry(void *(*fn)(void *), void *arg);

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

/* A return address on a thread's stack that the preemption layer pointed
 * at its trampoline (signals/hijack.c): the return of a frame that may not
 * be interrupted, hooked so that a refused preemption is taken the instant
 * that frame returns into preemptible code.  Owned by that layer and written
 * on the thread's own worker; sched/ only puts it to rest with the control
 * block.  Whether a hook is still in place is never read from its slot --
 * after a longjmp the slot may be a live frame's memory -- but from a walk
 * of the stack, which meets the trampoline as a caller while it is. */
struct green__patch {
    uint64_t *slot;                  /* the hooked slot; NULL: none */
    uint32_t trusted;                /* budgets it answers for unwalked */
    void *exc;                       /* an exception landed in the trampoline */
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

#define GREEN_KEYS_MAX 1024u         /* glibc's PTHREAD_KEYS_MAX */
#define GREEN_KEY_PAGES 4u

/* Rest state: a control block in a pool (free) has on_cpu, wake,
 * free_on_switch, is_main, joiner, timer_w, timer_idx, asan_fake and keys
 * all zero, as a fresh (mmap'd) one does; green__thread_new sets only the
 * rest. */
struct green__thread {
    /* Switch state.  Owner: the worker running it, then whoever runs it next. */
    void *sp;                        /* saved stack pointer while switched out */
    _Atomic uint32_t on_cpu;         /* see "The on_cpu protocol" */
    uint8_t state;                   /* enum green__tstate; reports only */
    bool free_on_switch;             /* dead and detached: next context frees it */
    bool is_main;                    /* runs green_run's main_fn */
    int err;                         /* saved errno */
    struct green__thread *next;      /* link in the global queue / a free list */
    struct green__rt *rt;            /* the run it belongs to; fixed */
    struct green__worker *home;      /* last worker that ran it */
    uint32_t pin_mark;               /* pinned: its worker's ring tail then */

    /* Identity and join.  jword: any thread, by CAS.  joiner: written by
     * the joiner right after it sets JW_WAITING, read by exit after that. */
    _Atomic uint64_t jword;
    uint64_t id;                     /* fixed while the slot is in use */
    uint64_t seq;                    /* spawn number on its spawner's worker:
                                      * its name in a deterministic run's digest */
    _Atomic(struct green__thread *) joiner;
    void *(*fn)(void *);
    void *arg;
    void *ret;                       /* written before JW_DONE (release) */

    /* Parking.  wake: 1 while claimable; the claimer CASes it to 0, then
     * writes wake_err / wake_from before making the thread runnable.
     * wake_solo: this park has one possible waker (one waiter, no deadline),
     * so the claim needs no CAS. */
    _Atomic uint32_t wake;
    bool wake_solo;
    int wake_err;                    /* 0, ETIMEDOUT, EPIPE, ... */
    struct green__waiter *wake_from; /* the waiter that fired (select) */
    const char *wait_what;           /* the blocking call, for reports */
    const void *wait_obj;            /* the object waited on, for reports */
    struct green__waiter *waiters;   /* linked by this park, via ->tnext */

    /* Deadline timer.  timer_w: set by the thread before it parks; timer_idx
     * under timer_w->tlock: heap index + 1, 0 when not in the heap. */
    struct green__worker *timer_w;
    size_t timer_idx;
    uint64_t deadline;

    void *asan_fake;                 /* AddressSanitizer's fake stack, if any */
#ifdef GREEN_VALGRIND
    unsigned vg_stack_id;            /* Valgrind's name for its stack */
#endif
#ifdef GREEN_TSAN
    void *tsan_fiber;                /* ThreadSanitizer's fiber for it */
#endif

    /* Preemption.  nopreempt: the thread's own.  preempt_pending: set by
     * the signal handler on this thread's worker when it refuses, cleared
     * by the thread at its next switch or poll (read with __atomic: the
     * handler interrupts the thread itself).  patch: a return address on
     * this stack that the preemption layer hooked (struct green__patch). */
    unsigned nopreempt;              /* green_nopreempt_begin depth, plus
                                      * one per foreign lock held */
    bool preempt_pending;            /* a preemption was refused meanwhile */
    struct green__patch patch;

    /* Foreign locks (foreign.c): the pthread mutexes, rwlocks, spinlocks,
     * stdio locks, once controls and static guards it holds, one entry per
     * acquisition, in held_inline until it overflows into `held` (mmap'd).
     * While nheld > 0 the thread is a holder: never preempted (each entry
     * counts in nopreempt), linked in its worker's holders list and run
     * only there (pthread owners are OS thread ids).  Owner: the thread's
     * own worker. */
    uint32_t nheld, heldcap;         /* entries used, and room in held */
    const void **held;               /* held_inline, or pages of its own */
    const void *held_inline[4];
    struct green__thread *hold_prev, *hold_next;
    bool hold_linked;                /* in its worker's holders list */

    /* Its values of pthread keys (keys.c): a page per 256 keys, taken at
     * its first value there, given back at exit (so NULL at rest). */
    void *keys[GREEN_KEY_PAGES];

    /* Its stack, from the run's stack pool; given back at exit. */
    char *stack_hi;                  /* top (the pool's handle); NULL once freed */
    char *stack_lo;                  /* lowest usable byte (above the guard) */
    size_t stack_size;               /* usable bytes */
} __attribute__((aligned(GREEN_CACHELINE)));

static inline struct green__stack_top *green__stack_top(const struct green__thread *t)
{
    return (struct green__stack_top *)(void *)t->stack_hi - 1;
}

/* ---- Run queues (runq.c) ------------------------------------------------ */

#define GREEN_RUNQ_SIZE 256u
#define GREEN_RUNNEXT_MAX 32u      /* LIFO picks in a row before the queue's turn */

/* Go's runq: single producer (the owner), many consumers (owner and
 * stealers, by CAS on head). */
struct green__runq {
    _Atomic uint32_t head;
    _Atomic uint32_t tail;
    _Atomic(struct green__thread *) slot[GREEN_RUNQ_SIZE];
};

/* ---- Timers (timer.c) --------------------------------------------------- */

struct green__timer {
    uint64_t deadline;
    struct green__thread *t;
};

/* ---- Pools (pool.c) ---------------------------------------------------- */

#define GREEN_MAX_REGIONS 48

struct green__region {
    char *base;
    size_t size;
    _Atomic size_t used;             /* bytes handed out, from base */
};

/* A worker's private LIFO of free objects of one pool. */
struct green__cache {
    void *head;
    unsigned n;
};

struct green__pool {
    size_t slot;                     /* bytes per slot */
    unsigned slot_shift;             /* log2(slot) if a power of two, else 0 */
    size_t guard;                    /* guard bytes at the bottom of a slot */
    size_t obj_off;                  /* the object handed out: slot + obj_off */
    ptrdiff_t link_off;              /* a free object's cache link: obj + link_off */
    bool release;                    /* give free slots' pages back */
    bool use_mprotect;               /* kernel lacks MADV_GUARD_INSTALL */
    pthread_mutex_t lock;            /* regions (append), free array */
    struct green__region regions[GREEN_MAX_REGIONS];
    _Atomic unsigned nregions;
    size_t next_region_size;
    void **free;                     /* objects spilled by worker caches */
    size_t nfree, nclean, freecap;   /* [0, nclean) already released */
    uint64_t dirty_since;            /* when [nclean, nfree) began to fill; 0 */
};

/* ---- Workers ------------------------------------------------------------ */

struct green__worker {
    /* Fixed at start. */
    struct green__rt *rt;
    unsigned index;
    pthread_t pthread;

    /* Owner: this worker's OS thread. */
    struct green__thread *cur;       /* running: a green thread or &g0; the
                                      * monitor and other workers read it:
                                      * relaxed atomic stores and loads */
    struct green__thread *prev;      /* context just left; finished by the next */
    struct green__thread *detour;    /* picked while still on another CPU: g0
                                      * switches to it (green__switch) */
    _Atomic uint32_t tick;           /* picks; owner writes, sysmon reads */
    uint32_t runnext_streak;         /* consecutive runnext picks */
    uint32_t fair_tick;              /* picks since the global queue's turn */
    uint64_t rng;
    bool spinning;                   /* counted in rt->nspinning */
    struct green__cache stack_cache; /* free stacks and control blocks */
    struct green__cache thread_cache;
    struct green__cache key_cache;   /* free key pages (keys.c) */
    struct green__thread *pinned_head, *pinned_tail; /* preempted: stay here */
    _Atomic uint32_t npinned;        /* their number; others read it */
    /* Holders of foreign locks that run here (foreign.c): its own list.
     * inbox: holders made runnable by other OS threads, under inbox_lock,
     * moved to the pinned queue by the owner at its next pick. */
    struct green__thread *holders;
    green__spin_t inbox_lock;
    struct green__thread *inbox_head, *inbox_tail;
    _Atomic uint32_t ninbox;
    uint32_t kept_for_idle;          /* preemptions deferred for an idle worker */
    int64_t slice_len;               /* reductions the running slice was given */

    /* Published by the worker's OS thread when it starts (release; 0
     * before: the monitor leaves it alone). */
    _Atomic pid_t tid;
    uint64_t id_next, id_end;        /* block of thread ids */
    int *errno_loc;                  /* this OS thread's errno: fixed */
    sigset_t sigmask;                /* its signal mask, once started */
    sigset_t sigmask_before;         /* its OS thread's mask before the run */
    _Atomic uint64_t spawned, exited;/* written by owner; read when quiescent */
    void *altstack;                  /* sigaltstack for overflow reports */
    size_t altstack_size;
    stack_t old_altstack;
    void *os_stack_lo;               /* g0's stack, for sanitizers */
    size_t os_stack_size;

    /* Run queue: see runq.c.  runnext: the owner's alone, but for a
     * rescue by the monitor (rn_busy / rn_rescue, runq.c). */
    _Atomic(struct green__thread *) runnext;
    _Atomic uint32_t rn_busy;        /* owner is touching runnext */
    _Atomic uint32_t rn_rescue;      /* the monitor wants runnext */
    struct green__runq q;

    /* Timers: heap under tlock; timer_next = earliest deadline or FOREVER. */
    green__spin_t tlock;
    struct green__timer *heap;
    size_t ntimers, heapcap;
    _Atomic uint64_t timer_next;

    /* Idle parking.  wakeword: futex; idle_next/idle: under rt->idle_lock.
     * in_netpoll: asleep in epoll_wait, not on wakeword (netpoll.c). */
    _Atomic uint32_t wakeword;
    _Atomic uint32_t in_netpoll;
    struct green__worker *idle_next;
    bool idle;

    struct green__thread g0;         /* the scheduler loop's context */
} __attribute__((aligned(GREEN_CACHELINE)));

/* ---- The netpoller (netpoll.c) ------------------------------------------ */

struct green__pfd;                   /* an fd's waiters and edges */

struct green__netpoll {
    pthread_mutex_t init_lock;       /* making the rest, once */
    _Atomic uint32_t ready;          /* epfd, evfd and chunks exist */
    int epfd, evfd;
    _Atomic(struct green__pfd *) *chunks;   /* fd descriptors, GREEN_PFD_CHUNK each */
    size_t nchunks;
    _Atomic uint32_t waiters;        /* threads parked on fds */
    _Atomic uint32_t blocked;        /* a worker sleeps in epoll_wait */
    _Atomic uint32_t broken;         /* evfd written and not yet drained */
    _Atomic uint64_t last_poll;      /* green__clock_ns of the last epoll_wait */
    struct green__netpoll *next;     /* in the process's list (netpoll.c) */
};

/* The offload pool (offload.c): OS threads that run green_offload's jobs.
 * Under lock; threads are started on demand, up to max, and kept until the
 * run ends. */
#define GREEN_DEFAULT_OFFLOAD_THREADS 16u
struct green__offload {
    pthread_mutex_t lock;
    pthread_cond_t cond;             /* jobs queued, or stopping */
    struct green__job *head, *tail;  /* queued jobs (on their threads' stacks) */
    unsigned nthreads, nidle, nqueued, max;
    bool stopping;
    pthread_t *tids;                 /* nthreads of them, to join */
    _Atomic uint32_t pending;        /* green threads parked on a job */
};

/* ---- The runtime (one green_run) ---------------------------------------- */

/* What a layer above sched/ (signals/) plugs into a run. */
struct green__hooks {
    int (*start)(struct green__rt *rt);          /* before the workers start */
    void (*stop)(struct green__rt *rt);          /* after they have stopped */
    /* Every time the monitor wakes while a worker is busy: look, act, and
     * return when to look next (absolute, green__clock_ns; FOREVER if no
     * deadline is pending). */
    uint64_t (*tick)(struct green__rt *rt, uint64_t now);
    /* On each worker's own OS thread, as it leaves its loop. */
    void (*worker_exit)(struct green__worker *w);
    /* The way out of a refused preemption (signals/hijack.c), for the
     * budget: after a walk of t's stack, on t's worker, keep, place or
     * forget t's hook (struct green__patch) as the verdict says (walk: enum
     * green__sp_walk; hook_live: the walk met the hook; slot: a HOOK's).
     * hook_ret is the return address a hook in place has: the walk meets
     * it as a caller. */
    void (*hijack)(struct green__thread *t, int walk, bool hook_live, uint64_t *slot);
    uintptr_t hook_ret;
    /* May t switch right here, on its own worker (safepoints/budget.c)?
     * Its callers are walked: if one is not preemptible code, the way out
     * of the outermost is hooked instead and the answer is no.  For a
     * preemption refused while t held a foreign lock, taken when the last
     * one is released -- by whatever code released it. */
    bool (*switch_allowed)(struct green__worker *w, struct green__thread *t);
};

struct green__rt {
    green_config_t cfg;
    unsigned nworkers;
    struct green__worker *workers;
    bool runnext_atomic;             /* no membarrier: LIFO slots use xchg */
    uint64_t fp_control;             /* new threads' MXCSR | x87 CW << 32 */

    /* Global inject queue, under glock; glen readable without it. */
    green__spin_t glock;
    struct green__thread *ghead, *gtail;
    _Atomic size_t glen;

    /* Idle workers: a stack under idle_lock. */
    green__spin_t idle_lock;
    struct green__worker *idle_list;
    _Atomic unsigned nidle;
    _Atomic unsigned nspinning;
    struct green__worker *watcher;   /* the idle worker sleeping on timers */
    _Atomic uint64_t watch_until;    /* its deadline, FOREVER if none */

    _Atomic int done;                /* all threads finished, or deadlock */
    int result;                      /* green_run's return value */
    void *main_ret;

    struct green__pool stacks;       /* stacks (stack.c) */
    struct green__pool threads;      /* control blocks (thread.c) */
    struct green__pool keypages;     /* green threads' key values (keys.c) */

    /* The monitor (sysmon.c).  sysmon_seen: its own. */
    pthread_t sysmon;
    bool sysmon_started;
    _Atomic uint32_t sysmon_word;    /* futex: 0 while it sleeps, all idle */
    _Atomic uint32_t sysmon_nap;     /* futex: 0 while it naps; 1 wakes it */
    uint32_t *sysmon_seen;           /* w->tick at its last look */
    const struct green__hooks *hooks;/* signals/, or NULL */
    void *preempt;                   /* the hooks' own (signals/), or NULL */

    /* Slices (slice.c).  slice_budget: fixed.  The rest belongs to a
     * deterministic run's single worker: its virtual clock, the digest of
     * its schedule, and its runnable threads (room for every live one is
     * reserved at spawn, so making one runnable never fails). */
    int64_t slice_budget;            /* reductions per slice; GREEN_BUDGET_NONE */
    bool det;                        /* a deterministic run */
    uint64_t vnow;                   /* virtual clock at the running slice's start */
    uint64_t digest, switches;
    struct green__thread **detq;
    size_t detn, detcap;

    /* Green threads parked on a pthread condition or semaphore
     * (sched/pthread.c): a plain OS thread may signal or post it, so they
     * are no deadlock. */
    _Atomic uint32_t os_wakeable;

    struct green__netpoll np;        /* fds green threads wait on */
    struct green__offload off;       /* green_offload's OS threads */
};

/* run.c */
int green__run(void *(*main_fn)(void *), void *arg, const green_config_t *cfg,
               void **ret, const struct green__hooks *hooks);

/* ---- Cross-file entry points ------------------------------------------- */

/* worker.c */
extern __thread struct green__worker *green__tls_worker
    __attribute__((tls_model("initial-exec")));
/* AS-safe.  The worker this OS thread is, or NULL.  Inline is safe: with the
 * initial-exec model each use is one %fs-relative load, and any switch in
 * between is an opaque call after which the compiler must load again. */
static inline struct green__worker *green__worker_self(void)
{
    return green__tls_worker;
}
void green__worker_set(struct green__worker *w);
/* AS-safe.  Set while libgreen's own signal handler runs on this OS thread
 * (signals/handler.c), or libgreen walks a green thread's stack on it
 * (safepoints/budget.c): what runs then -- libunwind, which may call read()
 * and write() on a pipe of its own and lock a mutex, or the program's
 * handler for a signal that was not libgreen's -- belongs to no green
 * thread.  green_worker_index says so (the LD_PRELOAD shim then passes
 * calls straight through), and so does green__foreign_self (the lock calls
 * are libc's). */
extern __thread unsigned green__in_handler __attribute__((tls_model("initial-exec")));
int green__workers_start(struct green__rt *rt);   /* workers 1..n-1 */
void green__worker_loop(struct green__worker *w); /* runs until rt->done */
void green__workers_join(struct green__rt *rt);
void green__wakep(struct green__rt *rt);
/* Make t runnable.  w: the caller's worker (its queues are used), or NULL
 * from a foreign thread (the global queue).  next: run t soon (LIFO slot). */
void green__ready(struct green__worker *w, struct green__thread *t, bool next);
/* green__ready for each thread of a list chained by t->next; returns how
 * many. */
unsigned green__ready_list(struct green__worker *w, struct green__thread *list, bool next);
/* Switch from the running thread to `to`; returns, on whatever worker
 * resumes the caller, that worker. */
struct green__worker *green__switch(struct green__worker *w, struct green__thread *to);
/* The running thread leaves the CPU (already queued, parked or dead). */
struct green__worker *green__sched_leave(struct green__worker *w);
/* The running thread was preempted asynchronously: let others run, and come
 * back on this same worker (its code may hold TLS addresses). */
void green__sched_preempted(struct green__worker *w);
/* Done by every context right after it is switched to. */
void green__switch_finish(struct green__worker *w);
/* A refused preemption is pending on the running thread, or its budget is
 * spent: take it now (a yield), unless inside green_nopreempt_begin/end.
 * Returns the worker the thread resumes on. */
struct green__worker *green__take_deferred(struct green__worker *w);
/* Refused preemptions taken at polls and returns, for green_stats. */
extern _Atomic uint64_t green__deferred_taken;

/* slice.c: the reduction budget's counter, the virtual clock and the
 * schedule of deterministic runs. */
#define GREEN_BUDGET_NONE (INT64_MAX / 2)   /* a slice without a budget */
#define GREEN_DET_EPOCH 1000000000u         /* a deterministic run's clock starts at 1 s */
/* Reductions left in the running slice of this OS thread's worker: set at
 * every switch, counted down by polls, green_reduce and the instrumentation
 * hooks (through green_budget_counter). */
extern __thread int64_t green__reductions __attribute__((tls_model("initial-exec")));
extern _Atomic uint64_t green__budget_yields, green__budget_refused;
void green__det_slice(struct green__worker *w, struct green__thread *to, bool switching);
uint64_t green__det_now(struct green__rt *rt);
/* Make room in rt->detq for one more live thread.  0 or ENOMEM. */
int green__det_reserve(struct green__rt *rt, size_t live);
void green__det_push(struct green__rt *rt, struct green__thread *t);
/* A random one of the runnable threads, or NULL. */
struct green__thread *green__det_take(struct green__worker *w);
/* Is a timer pending?  Then the virtual clock jumps to it. */
bool green__det_idle(struct green__rt *rt);
/* The running slice of w ends and the one of `to` begins (a switch). */
static inline void green__slice_start(struct green__worker *w, struct green__thread *to)
{
    if (GREEN_UNLIKELY(w->rt->det))
        green__det_slice(w, to, true);
    else
        green__reductions = w->rt->slice_budget;
}
/* The running thread goes on with a new slice (it yielded, nobody else
 * could run). */
static inline void green__slice_refill(struct green__worker *w)
{
    if (GREEN_UNLIKELY(w->rt->det))
        green__det_slice(w, w->cur, false);
    else
        green__reductions = w->rt->slice_budget;
}
/* The run's clock: CLOCK_MONOTONIC, or a deterministic run's virtual one. */
static inline uint64_t green__now(struct green__rt *rt)
{
    return GREEN_UNLIKELY(rt->det) ? green__det_now(rt) : green__clock_ns();
}
/* Has deadline passed on the run's clock?  Reads it only for a real one. */
static inline bool green__expired(struct green__rt *rt, uint64_t deadline)
{
    return deadline != GREEN_FOREVER && deadline <= green__now(rt);
}
/* A safepoint poll on w's running green thread: charge one reduction, and
 * take a pending preemption or a spent budget unless inside
 * green_nopreempt_begin/end (the end polls).  Returns the worker the thread
 * runs on afterwards. */
static inline struct green__worker *green__poll(struct green__worker *w)
{
    bool spent = --green__reductions <= 0;
    if (GREEN_UNLIKELY(spent || __atomic_load_n(&w->cur->preempt_pending, __ATOMIC_RELAXED)))
        return green__take_deferred(w);  /* it checks for a nopreempt section */
    return w;
}

/* Wake an idle worker v from its futex or from epoll_wait. */
void green__worker_wake(struct green__worker *v);

/* netpoll.c */
/* Poll the run's fds until deadline (absolute green__clock_ns; 0: do not
 * block, GREEN_FOREVER: no timeout) and make the threads whose fds are
 * ready runnable, in w's queues (w NULL: the global queue).  Returns how
 * many. */
unsigned green__netpoll(struct green__rt *rt, struct green__worker *w, uint64_t deadline);
/* Make a blocked green__netpoll return now. */
void green__netpoll_break(struct green__rt *rt);
/* Do threads wait on fds? */
bool green__netpoll_waiting(struct green__rt *rt);
/* Poll without blocking if threads wait and nobody has polled for
 * stale_ns (the monitor, w NULL; a worker at a preemption). */
void green__netpoll_stale(struct green__rt *rt, struct green__worker *w, uint64_t now,
                          uint64_t stale_ns);
#define GREEN_NETPOLL_STALE_NS 10000000u  /* the monitor's: 10 ms, as Go's sysmon */
#define GREEN_NETPOLL_PREEMPT_NS 500000u  /* a worker's, at a preemption */
void green__netpoll_free(struct green__rt *rt);

/* offload.c */
void green__offload_init(struct green__rt *rt);
/* After the workers stopped: stop and join the pool's threads. */
void green__offload_free(struct green__rt *rt);
/* Do threads wait on offloaded jobs? */
bool green__offload_waiting(struct green__rt *rt);

/* The system calls the LD_PRELOAD shim interposes, made without going
 * through their libc names: libgreen must never enter the shim (the shim
 * calls libgreen, which would call the shim...).  -1 and errno on failure. */
static inline ssize_t green__sys_read(int fd, void *buf, size_t n)
{
    return syscall(SYS_read, fd, buf, n);
}
static inline ssize_t green__sys_write(int fd, const void *buf, size_t n)
{
    return syscall(SYS_write, fd, buf, n);
}
static inline int green__sys_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

/* sysmon.c */
int green__sysmon_start(struct green__rt *rt);
void green__sysmon_stop(struct green__rt *rt);
/* A worker left idle: make sure the monitor is awake. */
void green__sysmon_kick(struct green__rt *rt);
/* AS-safe.  Cut the monitor's nap short: something it should look at
 * changed (a worker's slice timer handed it back). */
void green__sysmon_poke(struct green__rt *rt);

/* runq.c */
/* Put t (may be NULL) in w's LIFO slot; returns what was there.
 * Requires: w is the caller's worker.  No atomic read-modify-write: only a
 * rescue (green__runnext_rescue) ever races with the owner, and it pays for
 * both sides with a membarrier.  See runq.c. */
static inline struct green__thread *green__runnext_swap(struct green__worker *w,
                                                        struct green__thread *t)
{
    if (GREEN_UNLIKELY(w->rt->runnext_atomic))
        return atomic_exchange_explicit(&w->runnext, t, memory_order_acq_rel);
    for (;;) {
        atomic_store_explicit(&w->rn_busy, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        if (GREEN_LIKELY(!atomic_load_explicit(&w->rn_rescue, memory_order_acquire)))
            break;
        atomic_store_explicit(&w->rn_busy, 0, memory_order_release);
        while (atomic_load_explicit(&w->rn_rescue, memory_order_acquire))
            green__cpu_relax();
    }
    struct green__thread *old = atomic_load_explicit(&w->runnext, memory_order_relaxed);
    atomic_store_explicit(&w->runnext, t, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->rn_busy, 0, memory_order_release);
    return old;
}
/* Take w's LIFO thread from outside (the monitor, when w is stuck).  */
struct green__thread *green__runnext_rescue(struct green__worker *w);
/* Once per process: can rescues use membarrier?  Sets rt->runnext_atomic. */
void green__runnext_mode(struct green__rt *rt);
void green__runq_push(struct green__worker *w, struct green__thread *t);
struct green__thread *green__runq_pop(struct green__worker *w);
bool green__runq_empty(struct green__worker *w);
/* Steal about half of victim's queue into w's; returns one to run, or NULL. */
struct green__thread *green__runq_steal(struct green__worker *w,
                                        struct green__worker *victim);
void green__globq_push(struct green__rt *rt, struct green__thread *first,
                       struct green__thread *last, size_t n);
/* Take a fair share of the global queue: one to run, the rest into w's. */
struct green__thread *green__globq_take(struct green__worker *w, size_t max);

/* timer.c */
int green__timer_add(struct green__worker *w, struct green__thread *t,
                     uint64_t deadline);
void green__timer_cancel_slow(struct green__thread *t);
static inline void green__timer_cancel(struct green__thread *t)
{
    if (t->timer_w)
        green__timer_cancel_slow(t);
}
/* Fire w's expired timers; returns how many threads became runnable. */
unsigned green__timers_run(struct green__worker *w, struct green__worker *heap_of,
                           uint64_t now);
/* Earliest deadline across all workers (FOREVER: none). */
uint64_t green__timers_next(struct green__rt *rt);
bool green__timers_pending(struct green__rt *rt);
void green__timers_free(struct green__worker *w);

/* park.c: wait queues and the claim protocol. */
struct green__waiter {
    struct green__waiter *prev, *next;  /* in the object's queue, under its lock */
    struct green__wq *q;                 /* that queue, while linked */
    struct green__waiter *tnext;         /* the thread's other waiters (select) */
    struct green__thread *t;
    void *elem;                          /* chan: value source or destination */
    int err;                             /* set by the waker */
    uint32_t index;                      /* select: the case */
    bool linked;                         /* in a queue; under the object's lock */
    bool handoff;                        /* mutex: ownership handed over */
    uint64_t since;                      /* mutex: when it began waiting */
};
struct green__wq { struct green__waiter *head, *tail; };

static inline void green__wq_linked(struct green__wq *q, struct green__waiter *wt)
{
    wt->linked = true;
    wt->q = q;
    wt->tnext = wt->t->waiters;
    wt->t->waiters = wt;
}

static inline void green__wq_push(struct green__wq *q, struct green__waiter *wt)
{
    wt->next = NULL;
    wt->prev = q->tail;
    if (q->tail)
        q->tail->next = wt;
    else
        q->head = wt;
    q->tail = wt;
    green__wq_linked(q, wt);
}

static inline void green__wq_remove(struct green__wq *q, struct green__waiter *wt)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        q->head = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    else
        q->tail = wt->prev;
    wt->next = wt->prev = NULL;
    wt->linked = false;
}

void green__wq_push_front(struct green__wq *q, struct green__waiter *wt);
/* Pop the first waiter whose thread can be claimed; NULL if none.
 * Unclaimable waiters met on the way are unlinked (their threads were woken
 * by someone else and will not look at them again). */
struct green__waiter *green__wq_claim(struct green__wq *q);

/* Take t out of its park: true for exactly one caller per park. */
/* t->state is for reports and assertions: written by the thread's owner
 * and by its waker without a common lock, so relaxed atomics. */
static inline void green__set_state(struct green__thread *t, uint8_t s)
{
    __atomic_store_n(&t->state, s, __ATOMIC_RELAXED);
}
static inline uint8_t green__state(const struct green__thread *t)
{
    return __atomic_load_n(&t->state, __ATOMIC_RELAXED);
}

static inline bool green__claim(struct green__thread *t)
{
    if (t->wake_solo) {
        /* Nobody else can race for it: no timer, no second queue. */
        atomic_store_explicit(&t->wake, 0, memory_order_relaxed);
        return true;
    }
    uint32_t one = 1;
    return atomic_compare_exchange_strong_explicit(&t->wake, &one, 0,
                                                   memory_order_acq_rel,
                                                   memory_order_relaxed);
}

/* The running thread: get ready to park (claimable from now on).  solo:
 * exactly one waiter will be linked and the park has no deadline. */
static inline void green__park_prepare(struct green__thread *self, const char *what,
                                       const void *obj, bool solo)
{
    self->wake_solo = solo;
    self->waiters = NULL;
    self->wait_what = what;
    self->wait_obj = obj;
    self->wake_err = 0;
    self->wake_from = NULL;
    /* Published to wakers by the release of the object's lock. */
    atomic_store_explicit(&self->wake, 1, memory_order_relaxed);
}
/* Park until claimed or deadline; returns the claimer's wake_err (ETIMEDOUT
 * when the deadline fired).  The deadline timer is gone on return. */
int green__park(struct green__worker **wp, uint64_t deadline);
/* As green__enter, for a call on an object: EINVAL if obj is NULL. */
#define green__enter_obj(wp, tp, obj) \
    (green__enter((wp), (tp)) ? EPERM : (obj) ? 0 : EINVAL)

/* The calling green thread, and its worker, or EPERM. */
static inline int green__enter(struct green__worker **wp, struct green__thread **tp)
{
    struct green__worker *w = green__worker_self();
    if (GREEN_UNLIKELY(!w || w->cur == &w->g0))
        return EPERM;
    w = green__poll(w);              /* every call into libgreen is a safepoint */
    *wp = w;
    *tp = w->cur;
    return 0;
}

/* foreign.c: the program's and its libraries' locks on green threads --
 * declared in foreign.h, for the files that deal in them. */

/* pthread_libc.c, pthread.c: libc's own calls, for libgreen's internal locks (the public
 * names are libgreen's interposed ones, which may park). */
int green__os_mutex_lock(pthread_mutex_t *m);
int green__os_mutex_trylock(pthread_mutex_t *m);
int green__os_mutex_unlock(pthread_mutex_t *m);
int green__os_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int green__os_cond_signal(pthread_cond_t *c);
int green__os_cond_broadcast(pthread_cond_t *c);
int green__os_once(pthread_once_t *o, void (*fn)(void));
int green__os_join(pthread_t t, void **ret);

/* mutex.c */
bool green__mutex_owned(green_mutex_t *m, struct green__thread *self);
/* green_mutex_unlock without the safepoint poll of green__enter. */
int green__mutex_unlock(struct green__worker *w, struct green__thread *self, green_mutex_t *m);

/* chan.c: a channel, and its two halves for select.c.  Under c->lock,
 * try to send / receive without blocking: 0 (done; *wake, if set, must be
 * made runnable once the lock is released), EPIPE (closed), or EAGAIN. */
struct green_chan {
    green__spin_t lock;
    bool closed;
    size_t esz, cap;                 /* element size, capacity: fixed */
    size_t len, head;                /* buffered values, oldest at head */
    struct green__wq recvq, sendq;   /* blocked receivers / senders */
    unsigned char *buf;              /* cap * esz bytes */
};
int green__chan_send_locked(green_chan_t *c, const void *elem, struct green__thread **wake);
int green__chan_recv_locked(green_chan_t *c, void *elem, struct green__thread **wake);

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

/* pool.c */
size_t green__page_size(void);
int green__pool_init(struct green__pool *p, size_t slot, size_t guard, size_t obj_off,
                     ptrdiff_t link_off, size_t first_region, bool release);
void green__pool_destroy(struct green__pool *p);
void *green__pool_get_slow(struct green__pool *p, struct green__cache *c, int *err);
void green__pool_spill(struct green__pool *p, struct green__cache *c);

#define GREEN_POOL_CACHE 64u           /* slots a worker keeps per pool */

static inline void **green__pool_link(struct green__pool *p, void *obj)
{
    return (void **)((char *)obj + p->link_off);
}

/* An object from the worker's cache, else from the pool (may fail: *err). */
static inline void *green__pool_get(struct green__pool *p, struct green__cache *c, int *err)
{
    void *obj = c->head;
    if (GREEN_LIKELY(obj != NULL)) {
        c->head = *green__pool_link(p, obj);
        c->n--;
        return obj;
    }
    return green__pool_get_slow(p, c, err);
}

static inline void green__pool_put(struct green__pool *p, struct green__cache *c, void *obj)
{
    *green__pool_link(p, obj) = c->head;
    c->head = obj;
    if (GREEN_UNLIKELY(++c->n > GREEN_POOL_CACHE))
        green__pool_spill(p, c);
}
/* Release the pages of newly freed slots to the kernel (release pools). */
void green__pool_scavenge(struct green__pool *p);
/* When the next release is due (GREEN_FOREVER: nothing to release). */
uint64_t green__pool_release_due(struct green__pool *p);
/* Does obj name a slot's object handed out by p (free or in use)? */
bool green__pool_owns(struct green__pool *p, const void *obj);
/* Call fn on every object handed out so far (quiescent runtime only). */
void green__pool_foreach(struct green__pool *p, void (*fn)(void *obj, void *arg),
                         void *arg);

/* stack.c */
int green__stacks_init(struct green__rt *rt, size_t stack_size);
int green__stack_get(struct green__worker *w, struct green__thread *t);
void green__stack_put(struct green__worker *w, struct green__thread *t);
int green__overflow_install(void);
void green__overflow_uninstall(void);
int green__altstack_setup(struct green__worker *w);
void green__altstack_teardown(struct green__worker *w);

/* run.c */
/* Print the blocked threads, then unlink their waiters from the objects
 * they wait on, so that the program can destroy those objects. */
void green__deadlock_report(struct green__rt *rt);

/* fork.c: pthread_atfork handlers.  What a fork child keeps of the
 * parent's runs: none (no workers, timers, netpoller or other green
 * thread's code); the parts other files own are reset by them. */
enum green__fork_phase { GREEN_FORK_PREPARE, GREEN_FORK_PARENT, GREEN_FORK_CHILD };
void green__netpoll_atfork(enum green__fork_phase phase);
void green__foreign_atfork_child(void);

/* config.c */
/* EINVAL for a field out of range; say: one line on stderr naming it. */
int green__config_check(const green_config_t *cfg, bool say);

#endif /* GREEN_SCHED_H */
