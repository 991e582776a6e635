/* Private to libgreen. */
/*
 * One green_run: the runtime (struct green__rt) with its workers, global
 * queue, idle list, pools, monitor, netpoller and offload pool, the hooks
 * through which the preemption layer plugs in, and the calls of the parts
 * that belong to the whole run (run.c, netpoll.c, offload.c, sysmon.c,
 * fork.c, config.c).
 */
#ifndef GREEN_RT_H
#define GREEN_RT_H

#include "worker.h"

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

struct green__trace;                 /* trace.h */

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
     * forget t's hook (struct green__patch, safepoints.h) as the verdict says (walk: enum
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
    void (*thread_main)(struct green__worker *, struct green__thread *);
                                     /* new threads' first function, set by
                                      * thread.c for launch() in switch.c
                                      * (which may not call up to it) */

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

    /* dump.c: while a dump lists the threads, the workers it asked to stop
     * (w->stw_asked) wait in their scheduler loop for stw to go back to 0
     * (loop.c; stw_stopped counts them); runs_next links the process's runs
     * (green__runs_add). */
    _Atomic uint32_t stw;
    _Atomic uint32_t stw_stopped;
    struct green__rt *runs_next;

    /* The timeline (trace.c): GREEN_TRACE's file and clock, or NULL (not
     * traced).  Set before the workers start, freed after they stop. */
    struct green__trace *trace;
};

/* dump.c: the process's runs, for dumps. */
void green__runs_add(struct green__rt *rt);
void green__runs_remove(struct green__rt *rt);


/* run.c: one run of main_fn on green threads, with the preemption layer's
 * hooks (NULL: none).  Requires: cfg checked (green__config_check; green_run
 * does it, and says on stderr what was wrong). */
int green__run(void *(*main_fn)(void *), void *arg, const green_config_t *cfg,
               void **ret, const struct green__hooks *hooks);

/* netpoll.c */
/* Poll the run's fds until deadline (absolute green__clock_ns; 0: do not
 * block, GREEN_FOREVER: no timeout) and make the threads whose fds are
 * ready runnable, in w's queues (w NULL: the global queue).  keep_one: w
 * has nothing to run, the first goes to its LIFO slot and wakes no other
 * worker (the rest may).  Returns how many. */
unsigned green__netpoll(struct green__rt *rt, struct green__worker *w, uint64_t deadline,
                        bool keep_one);
/* The two halves of green__netpoll: one epoll_wait, and the threads whose
 * fds are ready, claimed but not yet runnable (an idle worker leaves idle
 * before it makes them runnable, or it would wake itself); then made
 * runnable in w's queues.  Returns how many. */
struct green__thread *green__netpoll_collect(struct green__rt *rt, uint64_t deadline);
unsigned green__netpoll_ready(struct green__worker *w, struct green__thread *list, bool keep_one);
/* Do threads wait on fds? */
bool green__netpoll_waiting(struct green__rt *rt);
/* Poll without blocking if threads wait and nobody has polled for
 * stale_ns (the monitor, w NULL; a worker at a preemption). */
void green__netpoll_stale(struct green__rt *rt, struct green__worker *w, uint64_t now,
                          uint64_t stale_ns);
#define GREEN_NETPOLL_STALE_NS 10000000u  /* the monitor's: 10 ms, as Go's sysmon */
#define GREEN_NETPOLL_PREEMPT_NS 500000u  /* a worker's, at a preemption */
#define GREEN_NETPOLL_PINNED_NS 20000u    /* before a preempted thread's turn */
/* How long fresh work goes before preempted threads, in quanta (switch.c). */
#define GREEN_PINNED_WAIT_QUANTA 2u
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

/* Make a blocked green__netpoll return now: its doorbell, the eventfd it
 * polls beside the program's fds. */
static inline void green__netpoll_break(struct green__rt *rt)
{
    struct green__netpoll *np = &rt->np;
    if (atomic_load(&np->ready) && atomic_exchange(&np->broken, 1) == 0) {
        uint64_t one = 1;
        while (green__sys_write(np->evfd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

/* sysmon.c */
int green__sysmon_start(struct green__rt *rt);
void green__sysmon_stop(struct green__rt *rt);
/* A worker left idle: make sure the monitor is awake.  Its doorbell, rung
 * from the workers' loops below it. */
static inline void green__sysmon_kick(struct green__rt *rt)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&rt->sysmon_word) == 0) {
        atomic_store(&rt->sysmon_word, 1);
        green__futex_wake(&rt->sysmon_word, 1);
    }
}
/* AS-safe.  Cut the monitor's nap short: something it should look at
 * changed (a worker's slice timer handed it back). */
void green__sysmon_poke(struct green__rt *rt);

/* fork.c: pthread_atfork handlers.  What a fork child keeps of the
 * parent's runs: none (no workers, timers, netpoller or other green
 * thread's code); the parts other files own are reset by them. */
enum green__fork_phase { GREEN_FORK_PREPARE, GREEN_FORK_PARENT, GREEN_FORK_CHILD };
void green__netpoll_atfork(enum green__fork_phase phase);
void green__foreign_atfork_child(void);

/* A green thread's stack (stack.c): its usable bytes, the top's records
 * (thread.h) included, and its lowest one, just above its guard.  AS-safe. */
static inline size_t green__stack_size(const struct green__thread *t)
{
    return t->rt->stacks.slot - t->rt->stacks.guard;
}
static inline char *green__stack_lo(const struct green__thread *t)
{
    return t->stack_hi ? t->stack_hi - green__stack_size(t) : NULL;   /* g0: none */
}

/* config.c */
/* EINVAL for a field out of range; say: one line on stderr naming it. */
int green__config_check(const green_config_t *cfg, bool say);
/* A signal as GREEN_SIGNAL names it (a number, ALRM, SIGQUIT, RTMIN+3...),
 * and whether libgreen may take it (catchable, not a fault, not glibc's). */
bool green__parse_signal(const char *s, int *out);
bool green__signo_ok(int signo);
/* dump.c: GREEN_DUMP_SIGNAL's handler and thread, set up by the first run
 * that finds it set (0, or EINVAL with a line on stderr). */
int green__dump_signal_init(int preempt_signo);

#endif /* GREEN_RT_H */
