/*
 * The slice timer: a busy worker times its own slices.
 *
 * The monitor finds a thread that overran its quantum and asks for it; from
 * then on the worker arms a one-shot POSIX timer for its next slice at each
 * preemption, and the kernel signals that worker alone when it fires -- no
 * monitor wake and no cross-CPU signal per quantum, which on the VM this
 * was measured on cost ~25 us and ~15 us each.  When it fires:
 * - the slice it was armed for still runs: preempt it;
 * - the worker switched by itself since, and its OS thread ran most of
 *   that time: re-arm for the slice now running, a quantum from now (so it
 *   is preempted between one and two quanta after it began).  The timer
 *   keeps watching a worker that, once preempted, goes on serving short
 *   requests among long ones -- when preemption matters -- where the
 *   monitor would wake every quantum to find it switching (at 100 us on
 *   one CPU: 7 000 wakes a second, a sixth of that CPU, and short requests'
 *   p99 5.9/4.3/5.3/5.1 ms against 7.0/11.7/14.8/307 ms, bench/bimodal);
 * - otherwise the worker goes back to the monitor's watch, with its
 *   backoff: it is idle; or its OS thread ran less than half the time
 *   since the timer was armed -- blocked in a system call libgreen does
 *   not wrap, or kept off the CPU by the host -- where the monitor, which
 *   reads a worker's CPU clock before each signal, sends none (a signal
 *   would only interrupt the call with EINTR: at most this one did);
 *   or the preemption it asked for is refused.
 *
 * The timer's signal carries w itself as its value: the handler tells it
 * from a request and from the program's signals by that (handler.c).
 *
 * Rejected: a periodic per-worker timer from the start (handler.c says
 * why); and a periodic timer from the first preemption on, which saves the
 * re-arming system call but fires on idle workers and, measured in the
 * same runs, left short requests slower (p99 8.0-10.6 ms).
 */
#define _GNU_SOURCE
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <time.h>

/* AS-safe.  CPU time this OS thread has run, ns. */
static uint64_t own_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* AS-safe.  The worker leaves its slice timer; the monitor takes over. */
void green__slice_timer_release(struct green__worker *w)
{
    atomic_store_explicit(&green__sig_worker(w)->slice_timed, 0, memory_order_relaxed);
    green__sysmon_poke(w->rt);
}

/* AS-safe.  Arm s for the slice numbered tick, from now. */
static bool arm_at(struct green__worker *w, struct green__sig_worker *s, uint32_t tick,
                   uint64_t now)
{
    uint64_t end = green__slice_end(now, green__quantum_ns(w->rt),
                                    atomic_load_explicit(&w->timer_next, memory_order_relaxed));
    s->slice_tick = tick;
    s->slice_seen_ns = now;
    s->slice_seen_cpu = own_cpu_ns();
    atomic_store_explicit(&s->slice_timed, 1, memory_order_relaxed);
    GREEN_TEST_TRACE_DEADLINE(w, end);
    struct itimerspec it = { { 0, 0 },
                             { (time_t)(end / 1000000000u), (long)(end % 1000000000u) } };
    if (timer_settime(s->slice_timer, TIMER_ABSTIME, &it, NULL) == 0)
        return true;
    atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
    return false;
}

/* Called by the trampoline's switch, on w, before it picks the next
 * thread: arm the timer for the slice that pick starts (tick + 1). */
void green__slice_timer_arm(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (!s->slice_timer_ok) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = w->rt->cfg.signo;
        ev.sigev_value.sival_ptr = w;
        ev._sigev_un._tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
        if (timer_create(CLOCK_MONOTONIC, &ev, &s->slice_timer) != 0)
            return;                  /* the monitor keeps watching w */
        s->slice_timer_ok = true;
    }
    arm_at(w, s, atomic_load_explicit(&w->tick, memory_order_relaxed) + 1, green__clock_ns());
}

/* AS-safe.  w's slice timer fired: true if its slice is still running and
 * should be asked to switch.  (A run that does not preempt by signal has
 * no slice timer: stale.) */
bool green__slice_timer_fired(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    green__count(&green__sig_stats.signals_sent);
    if (!s || !atomic_load_explicit(&s->slice_timed, memory_order_relaxed))
        return false;                /* released meanwhile: stale */
    uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
    if (w->cur != &w->g0 && tick == s->slice_tick)
        return true;
    /* Busy with a slice begun since, and it really ran: time that one. */
    uint64_t now = green__clock_ns();
    if (w->cur != &w->g0 &&
        own_cpu_ns() - s->slice_seen_cpu >= (now - s->slice_seen_ns) / 2 &&
        arm_at(w, s, tick, now))
        return false;
    green__slice_timer_release(w);
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
