/*
 * Preemption by signal: the monitor asks, the handler decides, the
 * trampoline switches.
 *
 * 1. The monitor (sched/sysmon.c) wakes at the earliest moment a slice can
 *    end.  green__sig_tick finds a worker whose tick (its count of
 *    scheduling decisions) has not moved for a whole quantum while it runs a
 *    green thread that really used the CPU, sets that worker's request flag
 *    -- a CAS, so duplicate requests merge -- and sends the signal to that
 *    worker alone (rt_tgsigqueueinfo, its value marking it as a request).
 *    Idle workers and threads that switch within their slice never get
 *    one.  Once a worker has been preempted, its own slice timer (below)
 *    takes over while its slices keep ending that way.
 * 2. The handler runs on the worker's sigaltstack.  A signal that is not
 *    ours (neither a marked request nor a slice timer's: alarm(),
 *    setitimer, kill, the program's own pthread_kill) is passed to the
 *    program's handler or default action; a request that finds none
 *    pending -- it outlived its worker's run -- is dropped.  For ours it
 *    only decides, and switches nothing: it refuses when the worker is in
 *    its scheduler, the thread is inside green_nopreempt_begin/end, the PC
 *    is in code that may hold a lock (the safepoint table: libgreen, libc,
 *    ld.so, the vdso, ...), or the stack lacks room for the saved state.
 *    Otherwise it makes the thread call the trampoline: below the red zone
 *    it pushes the interrupted PC and points the PC at
 *    green__preempt_trampoline.
 * 3. The trampoline saves everything and calls green__preempt_switch, a
 *    yield that keeps the thread on this worker (compilers keep TLS
 *    addresses such as &errno in registers across any instruction) until
 *    its next cooperative switch.
 *
 * A refused request is retried by the monitor with a backoff that doubles up
 * to 100 ms (or 64 quanta), so a thread that spends seconds in unsafe code
 * sees a bounded number of signals instead of one per quantum; a thread
 * blocked in a system call libgreen does not wrap uses no CPU, and the
 * monitor, reading the worker's CPU clock, sends it none (no EINTR).
 *
 * Rejected: a periodic per-worker timer from the start.  It signals workers
 * whose threads switch on their own, every quantum, for nothing.  The
 * one-shot slice timer is armed only after a preemption, when the next
 * slice is likely CPU-bound too, and costs at most one signal for nothing
 * when that run of preemptions ends.
 */
#define _GNU_SOURCE
#include "signals.h"
#include "safepoints.h"

#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define GREEN_RETRY_MAX_QUANTA 64u
#define GREEN_RETRY_MAX_NS 100000000u  /* 100 ms */

uint64_t green__xsave_size;

static struct {
    _Atomic uint64_t signals_sent, preemptions, refused_runtime, refused_nopreempt,
        refused_unsafe_pc, refused_headroom, foreign, refused_unsafe_frame, refused_unwind,
        signal_lost;
} stats;

static void count(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

void green_stats(green_stats_t *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->signals_sent = atomic_load(&stats.signals_sent);
    s->preemptions = atomic_load(&stats.preemptions);
    s->refused_runtime = atomic_load(&stats.refused_runtime);
    s->refused_nopreempt = atomic_load(&stats.refused_nopreempt);
    s->refused_unsafe_pc = atomic_load(&stats.refused_unsafe_pc);
    s->refused_headroom = atomic_load(&stats.refused_headroom);
    s->foreign_signals = atomic_load(&stats.foreign);
    s->refused_unsafe_frame = atomic_load(&stats.refused_unsafe_frame);
    s->refused_unwind = atomic_load(&stats.refused_unwind);
    s->deferred_taken = atomic_load(&green__deferred_taken);
    s->budget_yields = atomic_load(&green__budget_yields);
    s->budget_refused = atomic_load(&green__budget_refused);
    s->signal_lost = atomic_load(&stats.signal_lost);
    s->hijacks = atomic_load(&green__hijacks);
    s->hijacks_undone = atomic_load(&green__hijacks_undone);
}

/* ---- Installation ------------------------------------------------------- */

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned users[NSIG];
static struct sigaction old_action[NSIG];
static pid_t self_pid;
static uid_t self_uid;
/* The value a request carries: its address, which no other sender uses. */
static const char request_mark;

static void on_signal(int sig, siginfo_t *si, void *uctx);

/* fork (sched/fork.c): the child has no run, but keeps the handler the
 * parent's runs installed -- it passes the program's own signals on -- and
 * must mark its requests with its own pid should it start a run. */
static void atfork_prepare(void) { green__os_mutex_lock(&install_lock); }
static void atfork_parent(void) { green__os_mutex_unlock(&install_lock); }
static void atfork_child(void)
{
    self_pid = getpid();
    green__os_mutex_unlock(&install_lock);
}
__attribute__((constructor)) static void handler_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int green__xsave_setup(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return ENOTSUP;
    __cpuid_count(0xd, 0, a, b, c, d);
    if (b < 576)
        return ENOTSUP;
    green__xsave_size = b;
    return 0;
}

int green__sig_install(struct green__rt *rt)
{
    int sig = rt->cfg.signo, err = 0;
    if ((err = green__xsave_setup()) != 0)
        return err;
    if ((err = green__sp_acquire(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects)) != 0)
        return err;
    if (!green__sp_knows_runtime()) {
        /* Statically linked, libgreen's code is part of the program and
         * the table cannot keep the signal out of the scheduler. */
        green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
        green__write_str(2, "libgreen: preemption by signal (GREEN_PREEMPT=signal, the "
                            "default) needs the shared library (libgreen.so) for now; link "
                            "with -lgreen, not libgreen.a, or set GREEN_PREEMPT=budget or off\n");
        return ENOTSUP;
    }
    green__os_mutex_lock(&install_lock);
    if (users[sig]++ == 0) {
        self_pid = getpid();
        self_uid = getuid();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_signal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (green__sigaction_chain(sig, &sa, &old_action[sig]) != 0) {
            users[sig]--;
            err = EINVAL;
        }
    }
    green__os_mutex_unlock(&install_lock);
    if (err) {
        green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
        return err;
    }
    green__sp_walk_init();
    return 0;
}

void green__sig_uninstall(struct green__rt *rt)
{
    int sig = rt->cfg.signo;
    green__os_mutex_lock(&install_lock);
    if (--users[sig] == 0) {
        struct sigaction cur;
        /* Put the old disposition back unless the program replaced ours. */
        if (sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
            cur.sa_sigaction == on_signal)
            sigaction(sig, &old_action[sig], NULL);
    }
    green__os_mutex_unlock(&install_lock);
    green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
}

/* ---- The handler -------------------------------------------------------- */

/* AS-safe.  Not ours: the program's handler, or its default action. */
static void forward(int sig, siginfo_t *si, void *uctx)
{
    count(&stats.foreign);
    const struct sigaction *old = &old_action[sig];
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction)
            old->sa_sigaction(sig, si, uctx);
    } else if (old->sa_handler == SIG_DFL) {
        if (sig == SIGURG || sig == SIGCHLD || sig == SIGWINCH || sig == SIGCONT)
            return;                  /* their default is to ignore */
        /* Terminate as the default action would: once this handler
         * returns, the signal (blocked while it runs) is delivered again. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        syscall(SYS_tgkill, self_pid, syscall(SYS_gettid), sig);
    } else if (old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    }
}

/* ---- The slice timer ------------------------------------------------------
 *
 * The monitor finds a thread that overran its quantum and asks for it; from
 * then on, while its worker goes from one preempted slice to the next (CPU
 * hogs taking turns), the worker arms a one-shot POSIX timer for its next
 * slice at each preemption, and the kernel signals that worker alone when it
 * fires -- no monitor wake and no cross-CPU signal per quantum, which on the
 * VM this was measured on cost ~25 us and ~15 us each, far more than the
 * timer (see the closing note of issue 3).  When the timer finds that the
 * slice it was armed for has ended (the thread blocked or yielded: one
 * signal for nothing, at the end of a CPU-bound run), or the preemption is
 * refused, the worker goes back to the monitor's watch, with its backoff.
 */

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* When a slice that began at `start` may be ended: after a quantum, or
 * after a quarter quantum once a timer of its worker (earliest deadline
 * `timer`) is due -- the thread it wakes should not wait out the quantum of
 * a thread that never blocks. */
static uint64_t slice_end(uint64_t start, uint64_t quantum, uint64_t timer)
{
    uint64_t end = start + quantum;
    if (timer != GREEN_FOREVER)
        end = min_u64(end, max_u64(timer, start + quantum / 4));
    return end;
}

/* AS-safe.  The worker leaves its slice timer; the monitor takes over. */
static void slice_timer_release(struct green__worker *w)
{
    atomic_store_explicit(&w->slice_timed, 0, memory_order_relaxed);
    green__sysmon_poke(w->rt);
}

/* Called by the trampoline's switch, on w, before it picks the next
 * thread: arm the timer for the slice that pick starts (tick + 1). */
static void slice_timer_arm(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    if (!w->slice_timer_ok) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = rt->cfg.signo;
        ev.sigev_value.sival_ptr = w;
        ev._sigev_un._tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
        if (timer_create(CLOCK_MONOTONIC, &ev, &w->slice_timer) != 0)
            return;                  /* the monitor keeps watching w */
        w->slice_timer_ok = true;
    }
    uint64_t end = slice_end(green__clock_ns(), (uint64_t)rt->cfg.quantum_us * 1000u,
                             atomic_load_explicit(&w->timer_next, memory_order_relaxed));
    w->slice_tick = atomic_load_explicit(&w->tick, memory_order_relaxed) + 1;
    atomic_store_explicit(&w->slice_timed, 1, memory_order_relaxed);
    GREEN_TRACE_DEADLINE(w, end);
    struct itimerspec it = { { 0, 0 },
                             { (time_t)(end / 1000000000u), (long)(end % 1000000000u) } };
    if (timer_settime(w->slice_timer, TIMER_ABSTIME, &it, NULL) != 0)
        atomic_store_explicit(&w->slice_timed, 0, memory_order_relaxed);
}

void green__sig_worker_exit(struct green__worker *w)
{
    if (w->slice_timer_ok) {
        atomic_store_explicit(&w->slice_timed, 0, memory_order_relaxed);
        /* Deleted while this thread is still a worker: a signal it had
         * queued arrives now, is recognised, and is dropped. */
        timer_delete(w->slice_timer);
        w->slice_timer_ok = false;
    }
}

/* AS-safe.  w's slice timer fired: true if its slice is still running and
 * should be asked to switch; otherwise w goes back to the monitor. */
static bool slice_timer_fired(struct green__worker *w)
{
    count(&stats.signals_sent);
    if (!atomic_load_explicit(&w->slice_timed, memory_order_relaxed))
        return false;                /* released meanwhile: stale */
    if (w->cur == &w->g0 ||
        atomic_load_explicit(&w->tick, memory_order_relaxed) != w->slice_tick) {
        slice_timer_release(w);      /* that slice ended by itself */
        return false;
    }
    return true;
}

/* ---- The handler, continued --------------------------------------------- */

/* AS-safe.  Make t call the trampoline: past the red zone, push the
 * interrupted PC as the return address. */
static void inject(greg_t *g)
{
    uint64_t *nsp = (uint64_t *)((uintptr_t)g[REG_RSP] - 128);
#ifdef GREEN_VALGRIND
    /* Memcheck holds what lies below a stack pointer unaddressable, and
     * does not see the one the handler makes: open the trampoline's frame
     * -- the return address, flags and fifteen registers, the XSAVE area
     * and its alignment -- before anything is written there. */
    size_t span = 8 + 16 * 8 + green__xsave_size + 64;
    VALGRIND_MAKE_MEM_UNDEFINED((char *)nsp - span, span);
#endif
    *--nsp = (uint64_t)g[REG_RIP];
    g[REG_RSP] = (greg_t)(uintptr_t)nsp;
    g[REG_RIP] = (greg_t)(uintptr_t)green__preempt_trampoline;
}

/* AS-safe.  The counter for a refusal at a frame that may not be
 * interrupted (the walk's verdict v); pc_kind: the interrupted PC's. */
static _Atomic uint64_t *refusal(const struct green__sp_verdict *v, enum green_code pc_kind)
{
    if (v->walk == GREEN_WALK_HOOKED)  /* v->kind is the trampoline's */
        return pc_kind == GREEN_CODE_NOPREEMPT    ? &stats.refused_nopreempt
               : pc_kind == GREEN_CODE_PREEMPTIBLE ? &stats.refused_unsafe_frame
                                                   : &stats.refused_unsafe_pc;
    return v->kind == GREEN_CODE_NOPREEMPT ? &stats.refused_nopreempt
           : v->at_pc                      ? &stats.refused_unsafe_pc
                                           : &stats.refused_unsafe_frame;
}

/* AS-safe.  May the thread interrupted in uc be switched out here?  If
 * not, count why, leave the preemption pending on it, and -- where the
 * walk found the frame to leave first -- hook that frame's return
 * (hijack.c), so that it is taken on the way out.  The walk sees a hook
 * already in place, and keeps it (hijack.c says how). */
static bool decide(struct green__worker *w, struct green__thread *t,
                   const struct green__sp_table *tbl, ucontext_t *uc)
{
    greg_t *g = uc->uc_mcontext.gregs;
    uintptr_t pc = (uintptr_t)g[REG_RIP], sp = (uintptr_t)g[REG_RSP];
    if (t == &w->g0) {
        count(&stats.refused_runtime);
        return false;
    }
    enum green_code kind = green__sp_lookup(tbl, pc);
    GREEN_TRACE_STAMP(w, GREEN_STAMP_DECIDED);
    _Atomic uint64_t *why;
    if (kind == GREEN_CODE_RUNTIME || t->patch.exc || sp < (uintptr_t)t->stack_lo ||
        sp >= (uintptr_t)t->stack_hi || green__in_handler > 1) {
        /* In libgreen -- in its code, or in what it called: a walk of t's
         * stack (safepoints/budget.c) that meets libc or libunwind, whose
         * verdict must not be overtaken by a hook placed here meanwhile, or
         * a lock's try made holding a wait-queue lock (sched/foreign.c) --
         * or on the way into it: an exception's unwinder
         * is about to land in the hooked frame's trampoline (hijack.c),
         * and the hook must stay as the unwinder found it; or in a switch
         * that has made t current but still runs on the stack it leaves
         * (the sanitizers' fiber calls there are not libgreen's code): a
         * walk of that stack says nothing about t's. */
        why = &stats.refused_runtime;
    } else if (t->nopreempt) {
        why = &stats.refused_nopreempt;
    } else if (!green__sp_may_walk(tbl, pc)) {
        why = &stats.refused_unsafe_pc;
        if (kind == GREEN_CODE_UNKNOWN) {
            /* Maybe a library loaded since the table was built. */
            green__sp_hint_stale();
            green__sysmon_poke(w->rt);
        }
    } else {
        struct green__sp_verdict v =
            green__sp_walk(tbl, uc, (uintptr_t)t->stack_lo, (uintptr_t)green__stack_top(t),
                           (uintptr_t)green__deferred_trampoline);
        GREEN_TRACE_STAMP(w, GREEN_STAMP_WALKED);
        green__hijack_after_walk(t, v.walk, v.hook_live, v.slot);
        switch (v.walk) {
        case GREEN_WALK_SAFE:
            if (!green__preempt_room(t, sp)) {
                why = &stats.refused_headroom;
                break;
            }
            inject(g);
            return true;
        case GREEN_WALK_HOOK:
        case GREEN_WALK_HOOKED:
        case GREEN_WALK_STUCK:
            why = refusal(&v, kind);
            break;
        default:
            why = &stats.refused_unwind;
            break;
        }
    }
    count(why);
    t->preempt_pending = true;
    return false;
}

static void handle(int sig, siginfo_t *si, void *uctx);

/* AS-safe.  While it runs, this OS thread is on no green thread for the
 * code the handler calls (green__in_handler, sched.h). */
static void on_signal(int sig, siginfo_t *si, void *uctx)
{
    green__in_handler++;
    handle(sig, si, uctx);
    green__in_handler--;
}

/* AS-safe */
static void handle(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    struct green__worker *w = green__worker_self();
    bool timed = false;
    if (w && w->rt->cfg.signo == sig && si->si_code == SI_TIMER &&
        si->si_value.sival_ptr == w) {
        if (!slice_timer_fired(w)) {
            errno = saved;
            return;
        }
        timed = true;
    } else if (!(si->si_code == SI_QUEUE && si->si_pid == self_pid &&
                 si->si_value.sival_ptr == &request_mark)) {
        forward(sig, si, uctx);
        errno = saved;
        return;
    } else if (!(w && w->rt->cfg.signo == sig &&
                 atomic_exchange_explicit(&w->preempt_req, 0, memory_order_acq_rel))) {
        /* A request that outlived its run: it landed after this thread
         * stopped being that run's worker (the monitor decided just before
         * the run ended).  Not the program's either: drop it. */
        errno = saved;
        return;
    }
    GREEN_TRACE_STAMP(w, GREEN_STAMP_ENTRY);
    const struct green__sp_table *tbl = green__sp_enter();
    bool taken = decide(w, w->cur, tbl, uctx);
    green__sp_exit();
    /* Refused: the monitor retries, with its backoff. */
    if (timed && !taken)
        slice_timer_release(w);
    errno = saved;
}

/* Called by the trampoline with every register of the thread saved. */
void green__preempt_switch(uint64_t *ret_slot)
{
    struct green__worker *w = green__worker_self();
    struct green__thread *t = w->cur;
    bool deferred = *ret_slot == 0;
    GREEN_TRACE_STAMP(w, GREEN_STAMP_SAVED);
    if (deferred) {
        /* A hooked frame returned (hijack.c): back to its caller after
         * this, switching first if the preemption is still wanted. */
        if (!green__hijack_fired(t, ret_slot))
            return;
    } else {
        count(&stats.preemptions);
    }
    GREEN_TRACE_PREEMPT(deferred);
    /* A budget's hook ends here too: no signal, so no slice timer. */
    if (w->rt->cfg.preempt & GREEN_PREEMPT_SIGNAL)
        slice_timer_arm(w);
    GREEN_TRACE_STAMP(w, GREEN_STAMP_ARMED);
    green__sched_preempted(w);
    GREEN_TRACE_STAMP(green__worker_self(), GREEN_STAMP_RESUMED);
}

/* ---- The monitor's side -------------------------------------------------- */

/* The CPU-time clock of a thread of this process, from its tid: the kernel's
 * encoding (CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED, linux/posix-timers.h), the
 * value glibc's pthread_getcpuclockid returns.  The monitor knows workers by
 * tid; their pthread_t is not its to read. */
static clockid_t thread_cpu_clock(pid_t tid)
{
    return (clockid_t)((~(uint32_t)tid << 3) | 4u | 2u);
}

/* CPU time the worker's OS thread has run, ns; 0 if unreadable (then the
 * check below lets every request through). */
static uint64_t worker_cpu_ns(const struct green__worker *w)
{
    struct timespec ts;
    if (clock_gettime(thread_cpu_clock(atomic_load_explicit(&w->tid, memory_order_relaxed)),
                      &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Ask w to switch: merge with a pending request, back off before the next. */
/* ---- What the program can do to the signal --------------------------------
 *
 * Two things a program may do that take preemption by signal away, which
 * libgreen cannot undo from outside but must not keep silent:
 *   - install its own handler for the signal during a run: signals sent then
 *     would only feed that handler, so none is sent while it stays;
 *   - block the signal in a worker (pthread_sigmask on a green thread masks
 *     its worker's OS thread, for every green thread that runs there): the
 *     request stays pending and that worker is never preempted.
 * The monitor notices either when it asks for a preemption, says so once on
 * stderr, and counts it (green_stats: signal_lost).
 */
static _Atomic bool said_replaced[NSIG];

static bool handler_ours(int sig)
{
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) != 0 ||
        ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_signal)) {
        atomic_store_explicit(&said_replaced[sig], false, memory_order_relaxed);
        return true;
    }
    if (!atomic_exchange(&said_replaced[sig], true)) {
        count(&stats.signal_lost);
        fprintf(stderr, "libgreen: the program installed its own handler for signal %d, "
                        "which preempts green threads: preemption by signal is off until "
                        "libgreen's handler is back (GREEN_SIGNAL picks another signal)\n", sig);
    }
    return false;
}

/* Is sig blocked in OS thread tid?  From /proc: the monitor's thread may
 * not ask another thread's mask otherwise. */
static bool blocked_in(pid_t tid, int sig)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    unsigned long long mask = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "SigBlk: %llx", &mask) == 1;
    fclose(f);
    return found && (mask >> (sig - 1) & 1);
}

/* Before an exec on worker w (signals/exec.c): no request and no slice
 * timer will signal it from now on.  True if a request may still be on
 * its way (the monitor had decided to send it). */
bool green__sig_quiet(struct green__worker *w)
{
    bool in_flight = atomic_exchange_explicit(&w->preempt_req, 2, memory_order_acq_rel) == 1;
    if (w->slice_timer_ok) {
        struct itimerspec off = { { 0, 0 }, { 0, 0 } };
        timer_settime(w->slice_timer, 0, &off, NULL);
        atomic_store_explicit(&w->slice_timed, 0, memory_order_relaxed);
    }
    return in_flight;
}

/* The exec failed: the monitor may ask again (the slice timer is armed
 * again at the next preemption). */
void green__sig_unquiet(struct green__worker *w)
{
    atomic_store_explicit(&w->preempt_req, 0, memory_order_release);
}

/* Was si sent by libgreen to w -- a request or its slice timer? */
bool green__sig_ours(const struct green__worker *w, const siginfo_t *si)
{
    return (si->si_code == SI_TIMER && si->si_value.sival_ptr == w) ||
           (si->si_code == SI_QUEUE && si->si_pid == self_pid &&
            si->si_value.sival_ptr == &request_mark);
}

/* tgkill with a mark: a request can then be told from the program's own
 * signals even when it lands after its worker's run has ended. */
static void send_request(pid_t tid, int sig)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = SI_QUEUE;
    si.si_pid = self_pid;
    si.si_uid = self_uid;
    si.si_value.sival_ptr = (void *)&request_mark;
    syscall(SYS_rt_tgsigqueueinfo, self_pid, tid, sig, &si);
}

static uint64_t ask(struct green__rt *rt, struct green__worker *w, struct green__watch *m,
                    uint64_t now, uint64_t cpu)
{
    uint64_t quantum = (uint64_t)rt->cfg.quantum_us * 1000u;
    uint32_t zero = 0;
    if (!handler_ours(rt->cfg.signo)) {
        m->retry_at = now + GREEN_RETRY_MAX_NS;   /* look again later */
        return m->retry_at;
    }
    if (atomic_compare_exchange_strong(&w->preempt_req, &zero, 1)) {
        send_request(atomic_load_explicit(&w->tid, memory_order_relaxed), rt->cfg.signo);
        count(&stats.signals_sent);
        m->req_at = now;
        m->blocked_at = 0;
    } else if (now - m->req_at > GREEN_RETRY_MAX_NS && !m->said_blocked &&
               !(blocked_in(atomic_load_explicit(&w->tid, memory_order_relaxed), rt->cfg.signo)
                     ? m->blocked_at ? now - m->blocked_at < GREEN_RETRY_MAX_NS
                                     : (m->blocked_at = now, true)
                     : (m->blocked_at = 0, true))) {
        /* Our last request never landed, and the signal has been blocked
         * there at two looks 100 ms apart (glibc blocks every signal for a
         * moment in pthread_create, and so does a running handler). */
        m->said_blocked = true;
        count(&stats.signal_lost);
        fprintf(stderr, "libgreen: worker %u blocks signal %d (a green thread masked it with "
                        "pthread_sigmask or sigprocmask?): its green threads are not preempted "
                        "by signal while it stays blocked\n", w->index, rt->cfg.signo);
    }
    m->asked = true;
    m->asked_at = now;
    m->asked_cpu = cpu;
    /* Should this one be refused (unsafe code, a nopreempt section), wait
     * longer before the next: the delay doubles up to GREEN_RETRY_MAX_NS
     * (or 64 quanta if longer), so a thread that stays seconds in unsafe
     * code sees tens of signals, not one per quantum. */
    uint64_t cap = max_u64(GREEN_RETRY_MAX_QUANTA * quantum, GREEN_RETRY_MAX_NS);
    m->backoff = m->backoff ? min_u64(m->backoff * 2, cap) : quantum / 2;
    m->retry_at = now + m->backoff;
    return m->retry_at;
}

/*
 * One look at every worker, at `now`; returns when the next slice can end.
 *
 * A slice is what a worker runs between two of its scheduling decisions
 * (w->tick).  The monitor does not see it begin: it learns of it at its next
 * look and dates it from then -- except right after a preemption it asked
 * for, where the new slice began when the signal landed (one decision later,
 * tick + 1), so consecutive slices of CPU-bound threads last one quantum,
 * not two.  A slice ends early when a timer of that worker is due
 * (slice_end).
 *
 * Before signalling, the worker's CPU clock says whether its thread really
 * ran: a worker the kernel -- or the hypervisor, whose steal time the
 * kernel does not count -- kept off the CPU, or one blocked in a system call
 * libgreen does not wrap, has not used its slice, and a signal would only
 * interrupt the call with EINTR.  So threads that yield, even on a host that
 * pauses the VM, draw no signal.
 */
uint64_t green__sig_tick(struct green__rt *rt, uint64_t now)
{
    green__sp_refresh(now);          /* objects loaded or unloaded? */
    uint64_t quantum = (uint64_t)rt->cfg.quantum_us * 1000u;
    uint64_t next = GREEN_FOREVER;
    bool due = false;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        struct green__watch *m = &rt->watch[i];
        uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
        if (atomic_load_explicit(&w->tid, memory_order_acquire) == 0 ||
            __atomic_load_n(&w->cur, __ATOMIC_RELAXED) == &w->g0 ||
            atomic_load_explicit(&w->slice_timed, memory_order_relaxed)) {
            m->busy = false;         /* not started, idle, or its slice timer watches it */
            continue;
        }
        if (!m->busy || tick != m->tick) {
            if (m->busy && m->asked && tick == m->tick + 1) {
                m->since = m->asked_at;
                m->cpu_since = m->asked_cpu;
            } else {
                m->since = now;
                m->cpu_since = worker_cpu_ns(w);
            }
            m->busy = true;
            m->asked = false;
            m->tick = tick;
            m->retry_at = 0;
            m->backoff = 0;
        }
        m->end = max_u64(slice_end(m->since, quantum,
                                   atomic_load_explicit(&w->timer_next, memory_order_relaxed)),
                         m->retry_at);
        due |= m->end <= now;
    }
    /* A wake is the expensive part (a timer interrupt and two context
     * switches, tens of microseconds under virtualization): one that acts
     * also ends the slices due within the next quarter quantum, so the
     * workers' slices fall into step and one wake serves them all. */
    uint64_t horizon = due ? now + quantum / 4 : now;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        struct green__watch *m = &rt->watch[i];
        if (!m->busy)
            continue;
        if (horizon < m->end) {
            next = min_u64(next, m->end);
            continue;
        }
        uint64_t cpu = worker_cpu_ns(w);
        uint64_t ran = cpu - m->cpu_since, need = (m->end - m->since) / 2;
        if (cpu && ran < need) {
            /* Off the CPU for most of the slice: look again once it could
             * have used it -- but not sooner than a quarter quantum.  The
             * monitor may run at real-time priority: looking again every
             * few microseconds, it would spin on the CPU the worker waits
             * for, and the worker would never catch up (seen: 60 000 looks
             * in 20 ms, the worker starved for ~100 ms). */
            m->end = now + max_u64(need - ran, quantum / 4);
            next = min_u64(next, m->end);
            continue;
        }
        next = min_u64(next, ask(rt, w, m, now, cpu));
    }
    return next;
}

/* ---- Critical sections --------------------------------------------------- */

void green_nopreempt_begin(void)
{
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0)
        w->cur->nopreempt++;
}

void green_nopreempt_end(void)
{
    struct green__worker *w = green__worker_self();
    if (!w || w->cur == &w->g0)
        return;
    struct green__thread *t = w->cur;
    if (t->nopreempt > 0 && --t->nopreempt == 0)
        green__poll(w);              /* the one refused meanwhile */
}

void green_safepoint(void)
{
    struct green__worker *w = green__worker_self();
    if (w && w->cur != &w->g0)
        green__poll(w);
}
