/*
 * The slice timer: a worker that keeps being preempted times its own
 * slices.
 *
 * The monitor finds a thread that overran its quantum and asks for it; from
 * then on, while its worker goes from one preempted slice to the next (CPU
 * hogs taking turns), the worker arms a one-shot POSIX timer for its next
 * slice at each preemption, and the kernel signals that worker alone when it
 * fires -- no monitor wake and no cross-CPU signal per quantum, which on the
 * VM this was measured on cost ~25 us and ~15 us each, far more than the
 * timer.  When the timer finds that the
 * slice it was armed for has ended (the thread blocked or yielded: one
 * signal for nothing, at the end of a CPU-bound run; two when a timer of
 * the worker's is due, green__slice_timer_fired), or the preemption is
 * refused, the worker goes back to the monitor's watch, with its backoff --
 * and so it does when the monitor finds the timer silent for two quanta
 * and 10 ms: an expiry lost to a handler of the program's.
 *
 * The timer's signal carries w itself as its value: the handler tells it
 * from a request and from the program's signals by that (handler.c).
 *
 * Rejected: a periodic per-worker timer from the start (handler.c says
 * why).
 */
#define _GNU_SOURCE
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <time.h>

/* How late an expiry may be before the monitor takes it as lost. */
#define GREEN_SLICE_LOST_NS 10000000u    /* 10 ms */

/* AS-safe.  The worker leaves its slice timer; the monitor takes over. */
void green__slice_timer_release(struct green__worker *w)
{
    atomic_store_explicit(&green__sig_worker(w)->slice_timed, 0, memory_order_relaxed);
    green__sysmon_poke(w->rt);
}

/* AS-safe.  Arm w's created timer for the slice counted `tick`, begun
 * at `now`. */
static void arm_for(struct green__worker *w, struct green__sig_worker *s, uint32_t tick,
                    uint64_t now)
{
    uint64_t end = green__slice_end(now, green__quantum_ns(w->rt),
                                    atomic_load_explicit(&w->timer_next, memory_order_relaxed));
    s->slice_tick = tick;
    __atomic_store_n(&s->slice_armed_ns, now, __ATOMIC_RELAXED);
    atomic_store_explicit(&s->slice_timed, 1, memory_order_relaxed);
    GREEN_TEST_TRACE_DEADLINE(w, end);
    struct itimerspec it = { { 0, 0 },
                             { (time_t)(end / 1000000000u), (long)(end % 1000000000u) } };
    if (timer_settime(s->slice_timer, TIMER_ABSTIME, &it, NULL) != 0)
        atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
}

/* Called by the trampoline's switch, on w, before it picks the next
 * thread: arm the timer for the slice that pick starts (tick + 1). */
void green__slice_timer_arm(struct green__worker *w)
{
    struct green__rt *rt = w->rt;
    struct green__sig_worker *s = green__sig_worker(w);
    if (!s->slice_timer_ok) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = rt->cfg.signo;
        ev.sigev_value.sival_ptr = w;
        ev._sigev_un._tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
        if (timer_create(CLOCK_MONOTONIC, &ev, &s->slice_timer) != 0)
            return;                  /* the monitor keeps watching w */
        s->slice_timer_ok = true;
    }
    s->slice_arming = 1;
    atomic_signal_fence(memory_order_seq_cst);
    s->slice_rearmed = false;
    arm_for(w, s, atomic_load_explicit(&w->tick, memory_order_relaxed) + 1,
            green__clock_ns());
    atomic_signal_fence(memory_order_seq_cst);
    s->slice_arming = 0;
}

/* The monitor's look.  An expiry that never reached libgreen's handler --
 * the program had a handler of its own installed for the signal at that
 * moment, or ignored it, or a green thread took it with sigwait or
 * signalfd -- would leave slice_timed set with no timer armed, and the
 * worker unwatched for good: a thread computing there was never preempted
 * again (tests/test_hostile.c).  An armed timer not heard from in two
 * quanta and GREEN_SLICE_LOST_NS more is taken as lost, and the monitor
 * watches w again (should it merely be late, both watch w a while: a
 * request and an expiry merge). */
bool green__slice_timer_watching(struct green__worker *w, uint64_t now)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (!atomic_load_explicit(&s->slice_timed, memory_order_relaxed))
        return false;
    uint64_t armed = __atomic_load_n(&s->slice_armed_ns, __ATOMIC_RELAXED);
    if (now < armed || now - armed <= 2 * green__quantum_ns(w->rt) + GREEN_SLICE_LOST_NS)
        return true;
    atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
    return false;
}

/* AS-safe.  w's slice timer fired: true if its slice is still running and
 * should be asked to switch.  (A run that does not preempt by signal has
 * no slice timer: stale.)
 *
 * If that slice ended by itself, w goes back to the monitor -- unless a
 * timer of w's is due within a quantum and the timer was armed by a
 * preemption: then it is armed once more, from now, for the slice now
 * running.  That is the slice after a short one, typically a thread woken
 * by its timer that ran a few microseconds and slept again while a CPU hog
 * waited; the hog's slice must end at that thread's next deadline.  Left to
 * the monitor, on the other CPU, it ended when the monitor woke: a halted
 * vCPU that the host woke late made a 1 ms ticker 2-3 ms late, several
 * times a second, in whole phases of a run
 * (hijack::libc_heavy_threads_leave_a_1ms_ticker_on_time).  Armed once and
 * not again, so a worker whose threads switch on their own draws at most
 * two signals for nothing when a run of preemptions ends. */
bool green__slice_timer_fired(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    green__count(&green__sig_stats.signals_sent);
    if (!s || !atomic_load_explicit(&s->slice_timed, memory_order_relaxed))
        return false;                /* released meanwhile: stale */
    if (s->slice_arming)
        return false;                /* the switch arms it for the next slice */
    uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
    if (w->cur != &w->g0 && tick == s->slice_tick)
        return true;
    uint64_t now = green__clock_ns();
    if (w->cur != &w->g0 && !s->slice_rearmed &&
        atomic_load_explicit(&w->timer_next, memory_order_relaxed) <
            now + green__quantum_ns(w->rt)) {
        s->slice_rearmed = true;
        arm_for(w, s, tick, now);
        return false;
    }
    green__slice_timer_release(w);   /* that slice ended by itself */
    return false;
}

/* Before an exec on w (exec.c, through green__sig_quiet): the timer will
 * not fire, and the monitor watches w again. */
void green__slice_timer_disarm(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (s->slice_timer_ok) {
        struct itimerspec off = { { 0, 0 }, { 0, 0 } };
        timer_settime(s->slice_timer, 0, &off, NULL);
        atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
    }
}

/* On w's own thread as it stops (rt->hooks->worker_exit). */
void green__slice_timer_delete(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (s->slice_timer_ok) {
        atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
        /* Deleted while this thread is still a worker: a signal it had
         * queued arrives now, is recognised, and is dropped. */
        timer_delete(s->slice_timer);
        s->slice_timer_ok = false;
    }
}
