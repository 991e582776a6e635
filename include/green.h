/* libgreen: preemptive green threads for C.
 *
 * Many green threads (stackful coroutines) run on a few worker OS threads
 * (M:N, work stealing).  This is the only header libgreen installs.
 *
 * Conventions, as in pthreads: a function returns 0 or an errno value and
 * never sets errno.  Every call that may block has an `_until` variant that
 * takes an absolute deadline in nanoseconds on green_now_ns()'s clock
 * (CLOCK_MONOTONIC) and returns ETIMEDOUT when it passes; GREEN_FOREVER
 * means no deadline.  A call that needs a green thread, made from any other
 * thread, returns EPERM.
 *
 * A green thread may continue on another worker after any call that blocks
 * or yields.  Its errno, MXCSR and x87 control word go with it; __thread
 * variables stay with the worker, and a compiler may keep the address of
 * errno or of a __thread variable across such a call (see README.md).
 */
#ifndef GREEN_H
#define GREEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GREEN_API __attribute__((visibility("default")))

#define GREEN_VERSION_MAJOR 0
#define GREEN_VERSION_MINOR 1
#define GREEN_VERSION_PATCH 0

/* A deadline that never passes. */
#define GREEN_FOREVER UINT64_MAX

/* ---- Configuration ------------------------------------------------------ */

enum green_preempt {
    GREEN_PREEMPT_OFF    = 0,   /* cooperative only */
    GREEN_PREEMPT_SIGNAL = 1,   /* timer signal at safe points */
    GREEN_PREEMPT_BUDGET = 2,   /* reduction budget, no signals */
    GREEN_PREEMPT_BOTH   = 3,
};

/* A deterministic run: one worker, preemption by the reduction budget (never
 * by signal), timers on a virtual clock, and every choice -- which runnable
 * thread runs next, how long each slice is, select's pick -- drawn from the
 * seed.  The same program with the same seed runs the same schedule. */
enum green_deterministic {
    GREEN_DETERMINISTIC_OFF   = 0,
    GREEN_DETERMINISTIC_ON    = 1,
    GREEN_DETERMINISTIC_PRINT = 2,  /* also print the seed and the schedule's
                                     * digest on stderr when the run ends */
};

/* Lock cycles -- green threads each holding a lock the next one waits for,
 * around to the first -- are found when the lock call that closes one is
 * made (green mutexes and pthread mutexes; the rest of the program goes
 * on).  What then: */
enum green_deadlock {
    GREEN_DEADLOCK_REPORT = 0,      /* describe the cycle on stderr; the call
                                     * waits, as it would without libgreen */
    GREEN_DEADLOCK_ERROR  = 1,      /* describe it, and the call that closed
                                     * it returns EDEADLK */
    GREEN_DEADLOCK_OFF    = 2,      /* do not look */
};

/* Lock-holder handoff: a green thread about to wait for a mutex whose
 * holder was preempted (or, for a pthread mutex, waits to run on its own
 * worker) asks that the holder run next, ahead of its queue. */
enum green_handoff {
    GREEN_HANDOFF_ON  = 0,          /* the default */
    GREEN_HANDOFF_OFF = 1,
};

typedef struct green_config {
    unsigned workers;      /* worker OS threads; 0: one per online CPU   GREEN_WORKERS */
    unsigned quantum_us;   /* time slice before preemption, microseconds GREEN_QUANTUM_US */
    int      preempt;      /* enum green_preempt, default signal         GREEN_PREEMPT */
    int      signo;        /* preemption signal, default SIGALRM         GREEN_SIGNAL */
    size_t   stack_size;   /* stack bytes per green thread (the top 240
                            * hold its own records)                      GREEN_STACK_SIZE */
    unsigned budget;       /* reductions per slice                       GREEN_BUDGET */
    uint64_t seed;         /* seed for every random choice               GREEN_SEED */
    const char *unsafe_objects; /* objects of the program never to preempt
                            * in: a ':'-separated list of names or paths GREEN_UNSAFE */
    unsigned deterministic;/* enum green_deterministic, default off      GREEN_DETERMINISTIC */
    unsigned offload_threads; /* most OS threads green_offload may use at
                            * once; 0: the default, 16       GREEN_OFFLOAD_THREADS */
    const char *preemptible_objects; /* shared objects the program owns, to be
                            * preempted in like the executable: a ':'-separated
                            * list of file names or paths    GREEN_PREEMPTIBLE */
    unsigned deadlock;     /* enum green_deadlock, default report        GREEN_DEADLOCK */
    unsigned handoff;      /* enum green_handoff, default on             GREEN_HANDOFF */
    unsigned lock_warn_ms; /* warn once when a green thread has waited this
                            * long for a mutex whose holder is parked on
                            * something else; 0: never (the default)
                            *                                 GREEN_LOCK_WARN_MS */
    uint64_t reserved[3];  /* zero: room for fields to come, same ABI */
} green_config_t;

/* Fill *cfg with the defaults, then apply the GREEN_* environment variables.
 * A variable set to "" counts as unset.  Returns 0, or EINVAL when cfg is
 * NULL or a variable is malformed or out of range (one line on stderr for
 * each such variable names it; that field keeps its default, the others
 * apply).  docs/bad-input.md lists what each variable accepts. */
GREEN_API int green_config_init(green_config_t *cfg);

/* Start the workers, run main_fn(arg) as a green thread, and return when every
 * green thread has finished (detached ones too).  cfg may be NULL: the
 * defaults and environment.  *ret (if ret is not NULL) receives main_fn's
 * result.  Returns 0; EINVAL for a NULL main_fn, or an absurd cfg (one line
 * on stderr names the field; a cfg not filled by green_config_init, whose
 * reserved[] is not zero, is one); EBUSY when
 * called from a green thread; EAGAIN/ENOMEM when workers or stacks cannot be
 * had; EDEADLK when every green thread blocked with nothing left that could
 * wake it (the threads and what each waits on are printed on stderr).
 * green_run may be called again afterwards, and from several OS threads at
 * once: each call is an independent runtime. */
GREEN_API int green_run(void *(*main_fn)(void *), void *arg,
                        const green_config_t *cfg, void **ret);

/* Current time on the clock deadlines use, in nanoseconds.  On a green
 * thread of a deterministic run it is that run's virtual clock: it starts at
 * 1 s, advances 1 ns per reduction the run's threads consume (each call of
 * green_now_ns is one), and jumps to the next deadline when every thread
 * waits. */
GREEN_API uint64_t green_now_ns(void);

/* ---- Green threads ------------------------------------------------------ */

/* A handle.  It stays safe to pass after the thread is gone: a stale handle
 * gets EINVAL, never a crash.  The zero handle names no thread. */
typedef struct green_handle {
    void    *p;
    uint64_t id;
} green_t;

/* Start fn(arg) on a new green thread.  With t == NULL the thread starts
 * detached.  EINVAL: fn is NULL.  EAGAIN/ENOMEM: no stack could be had. */
GREEN_API int green_spawn(green_t *t, void *(*fn)(void *), void *arg);

/* Wait for t to finish; *ret (if ret is not NULL) receives its result.
 * EDEADLK: t is the caller.  EINVAL: t is detached, already joined, being
 * joined by another thread, or not a thread of this run. */
GREEN_API int green_join(green_t t, void **ret);
GREEN_API int green_join_until(green_t t, void **ret, uint64_t deadline_ns);

/* Let t's resources go when it finishes.  EINVAL as for green_join. */
GREEN_API int green_detach(green_t t);

/* The calling green thread; the zero handle on any other thread. */
GREEN_API green_t green_self(void);

/* t's id: unique in the process, never reused, 0 for the zero handle. */
GREEN_API uint64_t green_id(green_t t);

/* Name the calling green thread, for dumps (green_dump): at most
 * GREEN_NAME_MAX - 1 bytes.  EPERM outside a green thread, EINVAL for
 * NULL, ERANGE for a longer name (the name is then unchanged). */
#define GREEN_NAME_MAX 32
GREEN_API int green_set_name(const char *name);

/* Write every green thread of every run in the process to fd: id, name,
 * state, what a parked one waits on (and who holds it), the locks it
 * holds, where it was spawned, its backtrace.  Safe while the program
 * runs: each run's workers stop at their next scheduling decision while
 * its threads are listed (for 200 ms at most; those that do not are
 * named, and no stack is unwound then).  0, or EBADF, EIO, ENOMEM.  The
 * signal named by GREEN_DUMP_SIGNAL does the same on stderr. */
GREEN_API int green_dump(int fd);

/* Index of the worker running the caller (0 .. workers-1), or -1 outside
 * a green thread -- and inside libgreen's own signal handler, including a
 * handler of the program's that it passes a signal on to. */
GREEN_API int green_worker_index(void);

/* Let other runnable green threads run.  Does nothing outside one. */
GREEN_API void green_yield(void);

/* Park the calling green thread for ns nanoseconds / until a deadline.
 * Returns 0 (the time passed) or EPERM.  0 ns or a deadline passed already:
 * a yield.  A sleep until GREEN_FOREVER never ends (alone, it is a deadlock,
 * which green_run reports); ns so large that now + ns overflows sleeps until
 * GREEN_FOREVER - 1. */
GREEN_API int green_sleep_ns(uint64_t ns);
GREEN_API int green_sleep_until(uint64_t deadline_ns);

/* ---- File descriptors --------------------------------------------------- */

/* Park the calling green thread until fd may be ready for `events` (POLLIN,
 * POLLOUT or both, from <poll.h>) or the deadline passes -- the worker runs
 * other threads meanwhile.  Use it after a call on a non-blocking fd
 * returned EAGAIN, and retry the call: a return of 0 means "try again",
 * which now and then yields EAGAIN once more.  fd is registered with the
 * run's epoll at its first wait (edge-triggered); files that epoll refuses
 * (regular files) are always ready.  Returns 0; ETIMEDOUT; EBADF: fd < 0,
 * not open, or closed with green_fd_close meanwhile; EINVAL: bad events;
 * EPERM: not on a green thread; ENOMEM. */
GREEN_API int green_fd_wait(int fd, int events, uint64_t deadline_ns);

/* Like poll(2) on a green thread: park until one of the nfds fds is ready
 * for its events (revents filled in as poll does, *nready -- if not NULL --
 * set to the number of fds with revents) or the deadline passes (ETIMEDOUT,
 * every revents 0).  Negative fds are skipped; a closed fd is reported
 * POLLNVAL.  With no fd to wait on (nfds 0, every fd negative) it waits for
 * the deadline alone -- with GREEN_FOREVER, for good: a deadlock when
 * nothing else runs.  Returns 0; ETIMEDOUT; EINVAL (fds NULL with nfds > 0,
 * nfds > INT_MAX or more fds than RLIMIT_NOFILE); EPERM: not on a green
 * thread; ENOMEM. */
struct pollfd;
GREEN_API int green_poll(struct pollfd *fds, size_t nfds, uint64_t deadline_ns, int *nready);

/* Wake every green thread waiting on fd (in green_fd_wait or green_poll, in
 * any run) with EBADF and forget its registration, without closing it.
 * Call it before fd's number is given to another file (dup2 onto it, a
 * close that does not go through green_fd_close).  Returns 0; EBADF for
 * fd < 0.  From any thread. */
GREEN_API int green_fd_forget(int fd);

/* green_fd_forget(fd), then close(fd).  Close with this, not close(), any fd
 * green threads have waited on: its number may be reused.  Returns 0 or
 * close()'s errno.  From any thread. */
GREEN_API int green_fd_close(int fd);

/* ---- Offloading --------------------------------------------------------- */

/* Run fn(arg) on one of the run's offload OS threads and park the calling
 * green thread until it returns; *ret (if ret is not NULL) receives its
 * result.  For work that would block a worker and cannot be polled: a
 * blocking library call, regular-file I/O, getaddrinfo.  The pool starts
 * threads as jobs arrive, at most green_config_t.offload_threads (default
 * 16) at once; more jobs wait their turn in order.  fn cannot be cancelled
 * and keeps its thread until it returns.  Outside a green thread fn runs
 * right there.  Returns 0; EINVAL: fn is NULL; EAGAIN: the pool has no
 * thread and none could be started. */
GREEN_API int green_offload(void *(*fn)(void *), void *arg, void **ret);

/* ---- Preemption --------------------------------------------------------- */

/* Code between begin and end is never preempted (calls nest).  A preemption
 * asked for meanwhile is taken at the end.  An end without a begin does
 * nothing; a thread that finishes inside begin/end leaves no trace.
 * Outside a green thread: no-op. */
GREEN_API void green_nopreempt_begin(void);
GREEN_API void green_nopreempt_end(void);

/* A safepoint poll: take a preemption that was refused and is still
 * pending (the thread was in unsafe code when asked).  Every libgreen call
 * also polls.  Cheap when nothing is pending. */
GREEN_API void green_safepoint(void);

/* ---- Reduction budget (GREEN_PREEMPT=budget or both) -------------------- */

/* Charge n reductions to the running slice.  When the slice's budget
 * (green_config_t.budget, default 4000) is spent, the thread yields here, as
 * at green_yield.  Code built with `pkg-config --cflags --libs green-budget`
 * (-finstrument-functions and libgreen-budget's hooks) is charged one at
 * every function entry; every call into libgreen costs one.  In the other
 * modes, and outside a green thread, it only counts (cheap). */
GREEN_API void green_reduce(unsigned n);

/* For libgreen-budget's hooks; a program has no need to call these.
 * green_budget_counter: this OS thread's count of reductions left in the
 * running slice (the address is fixed for the thread's life).
 * green_budget_spent: the count reached zero at a function entry.  The
 * thread yields unless a caller frame forbids it (unsafe code such as a qsort
 * comparator's caller, or a GREEN_NOPREEMPT function): then the yield waits
 * for the next safepoint poll, as a refused signal's does. */
GREEN_API int64_t *green_budget_counter(void);
GREEN_API void green_budget_spent(void);

/* In a deterministic run (green_config_t.deterministic), from one of its
 * green threads: the run's seed and a digest of its schedule so far (the
 * order in which threads took the CPU).  Two runs of one program with one
 * seed give equal digests.  EPERM: not on a green thread.  EINVAL: the run
 * is not deterministic.  Either pointer may be NULL. */
GREEN_API int green_schedule_digest(uint64_t *digest, uint64_t *seed);

/* A function that is never preempted, nor anything it calls, while it runs:
 *     GREEN_NOPREEMPT static void update_shared_table(void) { ... }
 * It goes to the section green_nopreempt, which libgreen finds in the
 * objects it preempts (the program, GREEN_PREEMPTIBLE libraries).  A
 * preemption asked for while it runs is taken the moment it returns:
 * libgreen points its return address at a trampoline for that (whose
 * unwind information leads C++ exceptions and debuggers on to the real
 * caller).  It makes no tail calls: a call it ends with would otherwise run
 * after its frame is gone, unprotected.  Calls into libgreen from it are
 * switch points as anywhere (a blocking call must switch; any call takes a
 * pending preemption). */
#if defined(__clang__)
#define GREEN__NOPREEMPT_ATTRS noinline, disable_tail_calls
#else
#define GREEN__NOPREEMPT_ATTRS noinline, noclone, optimize("no-optimize-sibling-calls")
#endif
#define GREEN_NOPREEMPT __attribute__((section("green_nopreempt"), GREEN__NOPREEMPT_ATTRS))

/* Kinds of code, as the preemption signal's handler sees them. */
enum green_code {
    GREEN_CODE_PREEMPTIBLE = 0, /* the program's own: the executable, GREEN_PREEMPTIBLE
                                 * objects, ranges added as preemptible */
    GREEN_CODE_NOPREEMPT   = 1, /* a GREEN_NOPREEMPT function */
    GREEN_CODE_UNSAFE      = 2, /* any other object (libc, ld.so, third-party
                                 * libraries), GREEN_UNSAFE objects: never
                                 * interrupted; a preemption refused there is
                                 * taken as the outermost such frame returns
                                 * into the program's code */
    GREEN_CODE_UNKNOWN     = 3, /* in no loaded object nor added range (treated
                                 * as unsafe) */
    GREEN_CODE_RUNTIME     = 4, /* libgreen itself */
};

/* Declare the code in [start, start + len) preemptible (e.g. code generated
 * at run time, which is otherwise unknown and never preempted) or unsafe
 * (never preempted in, nor while it is on the stack: a preemption refused
 * there is taken as it returns into preemptible code).  Overrides what the
 * loaded objects say, except for libgreen's own code.  Process-wide; may be
 * called before, during and between runs.  EINVAL: start NULL, len 0, the
 * range wraps, or kind is neither of the two.  EEXIST: it overlaps a range
 * added before.  ENOMEM. */
GREEN_API int green_code_range_add(const void *start, size_t len, int kind);
/* Take back a range added with exactly these bounds.  ENOENT: none. */
GREEN_API int green_code_range_remove(const void *start, size_t len);
/* The kind of the code at pc (enum green_code).  Loaded objects are seen
 * within a few milliseconds of dlopen/dlclose while a run is in signal mode,
 * at its start otherwise. */
GREEN_API int green_code_kind(const void *pc);

/* Counters of this process, since it started (all runs).  A refused
 * preemption stays pending: it is taken when the outermost frame that may
 * not be interrupted returns into the program's code (its return address is
 * hooked), at the thread's next safepoint poll (any libgreen call,
 * green_safepoint, green_nopreempt_end) or at the monitor's next try. */
typedef struct green_stats {
    uint64_t signals_sent;        /* preemption signals sent (monitor, slice timers) */
    uint64_t preemptions;         /* threads switched out by one */
    uint64_t refused_runtime;     /* the worker was in libgreen or its scheduler */
    uint64_t refused_nopreempt;   /* in green_nopreempt_begin/end or a GREEN_NOPREEMPT
                                   * function (at the PC or a caller) */
    uint64_t refused_unsafe_pc;   /* the PC in code the program does not own,
                                   * or unknown code */
    uint64_t refused_headroom;    /* too little stack left to save the state */
    uint64_t foreign_signals;     /* the signal was not libgreen's: passed on */
    uint64_t refused_unsafe_frame;/* a caller frame in unsafe or unknown code (a
                                   * callback from qsort, a pthread_once routine...) */
    uint64_t refused_unwind;      /* the walk of the callers did not reach the
                                   * thread's base (no unwind information, or deeper
                                   * than 256 frames) */
    uint64_t deferred_taken;      /* refused preemptions taken later, at a hooked
                                   * return or a poll */
    uint64_t budget_yields;       /* slices ended by the reduction budget */
    uint64_t budget_refused;      /* budgets spent where no switch may happen (an
                                   * unsafe or GREEN_NOPREEMPT caller, a
                                   * nopreempt section): left pending */
    uint64_t signal_lost;         /* times preemption by signal was found taken
                                   * away: the program installed its own handler
                                   * for the signal during a run, or blocked it
                                   * in a worker (each also reported once on
                                   * stderr) */
    uint64_t hijacks;             /* refused preemptions hooked to the return of
                                   * the outermost frame that may not be
                                   * interrupted, to be taken the moment it
                                   * returns into the program's code (counted in
                                   * deferred_taken when they switch) */
    uint64_t hijacks_undone;      /* of those, hooks taken back unfired: a switch
                                   * came first, or the frame was left by longjmp
                                   * or an exception */
    uint64_t lock_handoffs;       /* lock holders run ahead of their queue for a
                                   * waiter (GREEN_HANDOFF) */
} green_stats_t;

/* s NULL: does nothing.  From any thread. */
GREEN_API void green_stats(green_stats_t *s);

/* ---- Mutex (error-checking, no starvation) ------------------------------ */

/* Zero-filled storage is an unlocked mutex; GREEN_MUTEX_INIT spells it.
 * Every call: EINVAL for m NULL; lock, trylock and unlock: EPERM off a
 * green thread.  As a pthread mutex, one still locked when its owner
 * finishes stays locked (a later thread's unlock is EPERM, its lock
 * waits).  init and destroy from any thread. */
typedef struct green_mutex { uint64_t opaque[6]; } green_mutex_t;
#define GREEN_MUTEX_INIT {{0}}

GREEN_API int green_mutex_init(green_mutex_t *m);
GREEN_API int green_mutex_destroy(green_mutex_t *m);  /* EBUSY: held or waited on */
GREEN_API int green_mutex_lock(green_mutex_t *m);     /* EDEADLK: caller holds it */
GREEN_API int green_mutex_lock_until(green_mutex_t *m, uint64_t deadline_ns);
GREEN_API int green_mutex_trylock(green_mutex_t *m);  /* EBUSY: held */
GREEN_API int green_mutex_unlock(green_mutex_t *m);   /* EPERM: caller does not hold it */

/* ---- Condition variable ------------------------------------------------- */

typedef struct green_cond { uint64_t opaque[4]; } green_cond_t;
#define GREEN_COND_INIT {{0}}

GREEN_API int green_cond_init(green_cond_t *c);
GREEN_API int green_cond_destroy(green_cond_t *c);    /* EBUSY: waited on */
/* Both reacquire m before returning, also on ETIMEDOUT.  EPERM: m not held
 * by the caller, or not on a green thread.  EINVAL: c or m NULL.  signal and
 * broadcast need a green thread too (EPERM), and return 0 with no waiter. */
GREEN_API int green_cond_wait(green_cond_t *c, green_mutex_t *m);
GREEN_API int green_cond_wait_until(green_cond_t *c, green_mutex_t *m, uint64_t deadline_ns);
GREEN_API int green_cond_signal(green_cond_t *c);
GREEN_API int green_cond_broadcast(green_cond_t *c);

/* ---- Channels (Go's semantics) ------------------------------------------ */

/* Elements are copied by value, elem_size bytes each (0 is allowed: a channel
 * of events).  capacity 0 is unbuffered: a send waits for its receiver.
 * create: EINVAL for c NULL, or elem_size or the buffer larger than any
 * object can be (PTRDIFF_MAX bytes); ENOMEM.  A channel of events may have
 * any capacity.  A destroyed channel is freed: like a freed pointer it must
 * not be used again (no call can tell).  Every call but create, destroy,
 * len and cap needs a green thread (EPERM) and a channel (EINVAL). */
typedef struct green_chan green_chan_t;

GREEN_API int green_chan_create(green_chan_t **c, size_t elem_size, size_t capacity);
GREEN_API int green_chan_destroy(green_chan_t *c);    /* EBUSY: threads wait on it */

/* EPIPE: the channel is closed (send), or closed and drained (recv: *elem is
 * zero-filled).  recv's elem may be NULL to drop the value. */
GREEN_API int green_chan_send(green_chan_t *c, const void *elem);
GREEN_API int green_chan_send_until(green_chan_t *c, const void *elem, uint64_t deadline_ns);
GREEN_API int green_chan_recv(green_chan_t *c, void *elem);
GREEN_API int green_chan_recv_until(green_chan_t *c, void *elem, uint64_t deadline_ns);

/* Wake every receiver (EPIPE once drained) and every blocked sender (EPIPE).
 * Values already buffered are still received.  EPIPE: already closed. */
GREEN_API int green_chan_close(green_chan_t *c);

GREEN_API size_t green_chan_len(const green_chan_t *c);  /* values buffered now; 0 for NULL */
GREEN_API size_t green_chan_cap(const green_chan_t *c);  /* 0 for NULL */

enum green_chan_op { GREEN_CHAN_SEND = 1, GREEN_CHAN_RECV = 2 };

typedef struct green_chan_case {
    green_chan_t *chan;   /* NULL: never ready, like a nil channel in Go */
    int           op;     /* enum green_chan_op */
    void         *elem;   /* send: the value; recv: where it goes (may be NULL) */
    int           err;    /* out, for the chosen case: 0, or EPIPE (closed) */
} green_chan_case_t;

/* Wait until one case can proceed, perform it, and store its index in
 * *chosen.  Among several ready cases one is chosen at random.  Returns 0
 * (the case's own outcome is in its err), ETIMEDOUT, EINVAL (cases NULL
 * with n > 0, chosen NULL, n > UINT32_MAX, an op that is neither, a send
 * of NULL on a channel whose elements have a size), or for
 * green_select_try -- Go's `default:` -- EAGAIN when no case is ready.
 * With no case that can ever proceed (n 0, every chan NULL) it waits for
 * the deadline alone: Go's `select {}`.  The channel whose operation was
 * performed may be destroyed by the partner as soon as its call returns. */
GREEN_API int green_select(green_chan_case_t *cases, size_t n, size_t *chosen);
GREEN_API int green_select_until(green_chan_case_t *cases, size_t n, size_t *chosen,
                                 uint64_t deadline_ns);
GREEN_API int green_select_try(green_chan_case_t *cases, size_t n, size_t *chosen);

/* ---- Wait group --------------------------------------------------------- */

typedef struct green_wg { uint64_t opaque[4]; } green_wg_t;
#define GREEN_WG_INIT {{0}}

GREEN_API int green_wg_init(green_wg_t *wg);
GREEN_API int green_wg_destroy(green_wg_t *wg);              /* EBUSY: waited on */
GREEN_API int green_wg_add(green_wg_t *wg, int64_t delta);   /* EINVAL: counter < 0 or
                                                              * > INT64_MAX (unchanged) */
GREEN_API int green_wg_done(green_wg_t *wg);                 /* green_wg_add(wg, -1) */
GREEN_API int green_wg_wait(green_wg_t *wg);
GREEN_API int green_wg_wait_until(green_wg_t *wg, uint64_t deadline_ns);

#ifdef __cplusplus
}
#endif

#endif /* GREEN_H */
