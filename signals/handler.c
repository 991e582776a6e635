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
 * when that run of preemptions ends (two when a timer of the worker's is
 * due: slice_timer.c re-arms it once for the slice after a short one).
 *
 * This file is step 2: the handler, and what tells libgreen's signals from
 * the program's.  Step 1 is monitor.c (and slice_timer.c), step 3
 * trampoline_x86_64.S and trampoline.c; install.c installs the handler,
 * hijack.c takes a refused preemption on the way out.
 */
#define _GNU_SOURCE
#include "signals.h"
#include "safepoints.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

pid_t green__sig_pid;
uid_t green__sig_uid;
const char green__sig_request_mark;
struct sigaction green__sig_chained[NSIG];

/* AS-safe.  Not ours: the program's handler, or its default action. */
static void forward(int sig, siginfo_t *si, void *uctx)
{
    green__count(&green__sig_stats.foreign);
    const struct sigaction *old = &green__sig_chained[sig];
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
        syscall(SYS_tgkill, green__sig_pid, syscall(SYS_gettid), sig);
    } else if (old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    }
}

/* AS-safe.  Make t call the trampoline: past the red zone, push the
 * interrupted PC as the return address. */
static void push_trampoline_call(greg_t *g)
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
    struct green__sig_stats *c = &green__sig_stats;
    if (v->walk == GREEN_WALK_HOOKED)  /* v->kind is the trampoline's */
        return pc_kind == GREEN_CODE_NOPREEMPT    ? &c->refused_nopreempt
               : pc_kind == GREEN_CODE_PREEMPTIBLE ? &c->refused_unsafe_frame
                                                   : &c->refused_unsafe_pc;
    return v->kind == GREEN_CODE_NOPREEMPT ? &c->refused_nopreempt
           : v->at_pc                      ? &c->refused_unsafe_pc
                                           : &c->refused_unsafe_frame;
}

/* AS-safe.  A refusal's counter, as the timeline names it. */
static const char *refusal_name(const _Atomic uint64_t *why)
{
    const struct green__sig_stats *c = &green__sig_stats;
    return why == &c->refused_runtime        ? "in libgreen"
           : why == &c->refused_nopreempt    ? "nopreempt or a foreign lock held"
           : why == &c->refused_unsafe_pc    ? "unsafe code (not the program's)"
           : why == &c->refused_unsafe_frame ? "unsafe caller"
           : why == &c->refused_headroom     ? "no stack room"
           : why == &c->refused_unwind       ? "stack walk failed"
                                             : "?";
}

/* AS-safe.  May the thread interrupted in uc be switched out here?  If
 * not, count why, leave the preemption pending on it, and -- where the
 * walk found the frame to leave first -- hook that frame's return
 * (hijack.c), so that it is taken on the way out.  The walk sees a hook
 * already in place, and keeps it (hijack.c says how). */
static bool preempt_or_defer(struct green__worker *w, struct green__thread *t,
                             const struct green__sp_table *tbl, ucontext_t *uc)
{
    greg_t *g = uc->uc_mcontext.gregs;
    uintptr_t pc = (uintptr_t)g[REG_RIP], sp = (uintptr_t)g[REG_RSP];
    if (t == &w->g0) {
        green__count(&green__sig_stats.refused_runtime);
        return false;
    }
    enum green_code kind = green__sp_lookup(tbl, pc);
    GREEN_TEST_TRACE_STAMP(w, GREEN_STAMP_DECIDED);
    _Atomic uint64_t *why;
    if (kind == GREEN_CODE_RUNTIME || green__patch_of(t)->exc || sp < (uintptr_t)green__stack_lo(t) ||
        sp >= (uintptr_t)t->stack_hi || green__in_handler > 1) {
        /* In libgreen -- in its code, or in what it called: a walk of t's
         * stack (safepoints/budget.c) that meets libc or libunwind, whose
         * verdict must not be overtaken by a hook placed here meanwhile, or
         * a lock's try made holding a wait-queue lock (sched/foreign.c) --
         * or on the way into it: an exception's unwinder
         * is about to land in the hooked frame's trampoline (trampoline.c),
         * and the hook must stay as the unwinder found it; or in a switch
         * that has made t current but still runs on the stack it leaves
         * (the sanitizers' fiber calls there are not libgreen's code): a
         * walk of that stack says nothing about t's. */
        why = &green__sig_stats.refused_runtime;
    } else if (t->nopreempt) {
        why = &green__sig_stats.refused_nopreempt;
    } else if (!green__sp_may_walk(tbl, pc)) {
        why = &green__sig_stats.refused_unsafe_pc;
        if (kind == GREEN_CODE_UNKNOWN) {
            /* Maybe a library loaded since the table was built. */
            green__sp_hint_stale();
            green__sysmon_poke(w->rt);
        }
    } else {
        struct green__sp_verdict v =
            green__sp_walk(tbl, uc, (uintptr_t)green__stack_lo(t), (uintptr_t)green__stack_top(t),
                           (uintptr_t)green__deferred_trampoline);
        GREEN_TEST_TRACE_STAMP(w, GREEN_STAMP_WALKED);
        green__hijack_after_walk(t, v.walk, v.hook_live, v.slot);
        switch (v.walk) {
        case GREEN_WALK_SAFE:
            if (!green__preempt_room(t, sp)) {
                why = &green__sig_stats.refused_headroom;
                break;
            }
            push_trampoline_call(g);
            return true;
        case GREEN_WALK_HOOK:
        case GREEN_WALK_HOOKED:
        case GREEN_WALK_STUCK:
            why = refusal(&v, kind);
            break;
        default:
            why = &green__sig_stats.refused_unwind;
            break;
        }
    }
    green__count(why);
    green__trace_refused(w, t, refusal_name(why));
    t->preempt_pending = true;
    return false;
}

/* AS-safe.  Take w's pending request, if it has one (an exec's 2 stays:
 * exec.c blocks the signal before it sets it). */
static bool take_request(struct green__worker *w, int sig)
{
    struct green__sig_worker *s;
    uint32_t one = 1;
    return w && w->rt->cfg.signo == sig && (s = green__sig_worker(w)) &&
           atomic_compare_exchange_strong_explicit(&s->preempt_req, &one, 0,
                                                   memory_order_acq_rel, memory_order_relaxed);
}

/* AS-safe.  Ours -- a slice timer's whose slice still runs, or a request
 * that finds one pending -- is decided; the program's is passed on; one
 * that came too late is dropped.
 *
 * SIGALRM and the other signals below SIGRTMIN are not queued twice: while
 * one is pending on the worker, the kernel drops another sent to it and
 * tells the sender nothing.  A request sent while the slice timer's signal
 * (or the program's own alarm) was pending was thus lost, its flag stayed
 * set, and the monitor, which sends only when it sets the flag, never
 * asked that worker again: a thread that computes forever was never
 * preempted (a green thread forking in a loop beside a CPU-bound one, at a
 * 50 us quantum, hung 1 run in a few hundred).  So every instance of the
 * signal that reaches a worker takes its pending request with it: the one
 * that carried the request may have been this one. */
static void handle(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    struct green__worker *w = green__worker_self();
    bool timed = false, asked;
    if (w && w->rt->cfg.signo == sig && si->si_code == SI_TIMER &&
        si->si_value.sival_ptr == w) {
        timed = green__slice_timer_fired(w);
        asked = take_request(w, sig);
    } else if (!(si->si_code == SI_QUEUE && si->si_pid == green__sig_pid &&
                 si->si_value.sival_ptr == &green__sig_request_mark)) {
        /* Taken first: a handler of the program's may longjmp out, and
         * the monitor asks again only once the flag is clear. */
        asked = take_request(w, sig);
        forward(sig, si, uctx);
    } else {
        /* Without a request pending, it outlived its run: it landed after
         * this thread stopped being that run's worker (the monitor decided
         * just before the run ended), maybe on a worker of a run that
         * preempts by other means.  Not the program's either: drop it. */
        asked = take_request(w, sig);
    }
    if (!timed && !asked) {
        errno = saved;
        return;
    }
    GREEN_TEST_TRACE_STAMP(w, GREEN_STAMP_ENTRY);
    const struct green__sp_table *tbl = green__sp_enter();
    bool taken = preempt_or_defer(w, w->cur, tbl, uctx);
    green__sp_exit();
    /* Refused: the monitor retries, with its backoff. */
    if (timed && !taken)
        green__slice_timer_release(w);
    errno = saved;
}

/* AS-safe.  While it runs, this OS thread is on no green thread for the
 * code the handler calls (green__in_handler and its mark, sched/worker.h):
 * first, a handler of ours that the program's left by siglongjmp is
 * forgotten -- the interrupted PC is back on that thread's stack. */
void green__sig_handler(int sig, siginfo_t *si, void *uctx)
{
    struct green__worker *w = green__worker_self();
    if (green__in_handler)
        green__handler_left_at(
            (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RSP]);
    struct green__handler_mark outer = green__handler_mark;
    unsigned entry = green__in_handler;
    green__handler_mark = (struct green__handler_mark){
        w ? w->cur : NULL, (uintptr_t)__builtin_frame_address(0), outer.depth + 1 };
    green__in_handler++;
    handle(sig, si, uctx);
    /* As at entry: a handler nested in this one that the program left by
     * siglongjmp within its own handler counts no more. */
    green__in_handler = entry;
    green__handler_mark = outer;
}

/* Was si sent by libgreen to w -- a request or its slice timer? */
bool green__sig_ours(const struct green__worker *w, const siginfo_t *si)
{
    return (si->si_code == SI_TIMER && si->si_value.sival_ptr == w) ||
           (si->si_code == SI_QUEUE && si->si_pid == green__sig_pid &&
            si->si_value.sival_ptr == &green__sig_request_mark);
}
