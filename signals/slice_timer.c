/*
 * The slice timer: a busy worker times its own slices.
 *
 * The monitor finds a thread that overran its quantum and asks for it; from
 * then on the worker runs a periodic POSIX timer, one quantum apart, that
 * the kernel signals to that worker alone -- no monitor wake and no
 * cross-CPU signal per quantum, which on the VM this was measured on cost
 * ~25 us and ~15 us each, far more than the timer's own signal.  At each
 * expiry the handler compares the worker's slice count (w->tick) with the
 * one it saw at the expiry before: the same, and the thread has run a whole
 * quantum (between one and two) -- preempt it; another, and the worker
 * switched on its own meanwhile -- note the new slice and carry on.  So the
 * timer keeps watching while a worker that was once preempted serves short
 * requests among long ones, which is when preemption matters, without the
 * monitor waking every quantum to find the worker switching by itself (at
 * 100 us on one CPU, 7 000 wakes a second, a fifth of that CPU).
 *
 * A timer that keeps running costs nothing per slice: it is set once, when
 * it starts, and again only when a preemption that it did not time (on the
 * way out, at a poll) or a green timer due sooner wants the next slice to
 * end at another time.  Re-arming at every preemption, as a one-shot timer
 * must, was a timer_settime system call (~7 us on that VM) per quantum.
 *
 * It stops, and the monitor takes the worker back (green__slice_timer_release):
 * - when two expiries in a row find the worker idle: an idle worker is
 *   woken by at most two signals for nothing, both inside libgreen's own
 *   waits (futex, epoll), which retry;
 * - when the worker switched since the last expiry but its OS thread ran
 *   less than half of that time: it is blocked in a system call libgreen
 *   does not wrap, or the host keeps it off the CPU, and the monitor, which
 *   reads its CPU clock before each signal, is the one to watch it (a
 *   signal would only interrupt the call with EINTR: at most one does);
 * - when a preemption it asked for is refused (the monitor retries with its
 *   backoff);
 * - before an exec, and when the worker stops.
 *
 * The timer's signal carries w itself as its value: the handler tells it
 * from a request and from the program's signals by that (handler.c).
 *
 * Rejected: a periodic per-worker timer from the start (handler.c says
 * why): this one starts at a preemption and stops with the conditions
 * above.
 */
#define _GNU_SOURCE
#include "signals.h"

#include <signal.h>
#include <string.h>
#include <time.h>

/* Expiries in a row that may find the worker idle before the timer stops. */
#define GREEN_SLICE_IDLE_STOP 2u

/* AS-safe.  CPU time this OS thread has run, ns. */
static uint64_t own_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* AS-safe.  Stop w's timer; w's next expiry may already be queued (the
 * handler finds slice_timed clear and drops it). */
static void stop(struct green__sig_worker *s)
{
    atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
    struct itimerspec off = { { 0, 0 }, { 0, 0 } };
    timer_settime(s->slice_timer, 0, &off, NULL);
}

/* AS-safe.  The worker leaves its slice timer; the monitor takes over. */
void green__slice_timer_release(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (s->slice_timer_ok)
        stop(s);
    green__sysmon_poke(w->rt);
}

static bool create(struct green__worker *w, struct green__sig_worker *s)
{
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = w->rt->cfg.signo;
    ev.sigev_value.sival_ptr = w;
    ev._sigev_un._tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
    if (timer_create(CLOCK_MONOTONIC, &ev, &s->slice_timer) != 0)
        return false;                /* the monitor keeps watching w */
    s->slice_timer_ok = true;
    return true;
}

/* Called by the trampoline's switch, on w, before it picks the next
 * thread: time the slice that pick starts (tick + 1). */
void green__slice_timer_arm(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (!s->slice_timer_ok && !create(w, s))
        return;
    uint64_t now = green__clock_ns(), quantum = green__quantum_ns(w->rt);
    uint64_t end = green__slice_end(now, quantum,
                                    atomic_load_explicit(&w->timer_next, memory_order_relaxed));
    s->slice_tick = atomic_load_explicit(&w->tick, memory_order_relaxed) + 1;
    s->slice_idle = 0;
    /* Running, and its next expiry gives this slice most of a quantum
     * (the expiry that preempted the last one is a quantum away, less the
     * handler's few microseconds) and ends it no later than a green timer
     * due: leave it be. */
    if (atomic_load_explicit(&s->slice_timed, memory_order_relaxed) && s->slice_next <= end &&
        s->slice_next >= now + quantum - quantum / 4)
        return;
    s->slice_next = end;
    s->slice_seen_ns = now;
    s->slice_seen_cpu = own_cpu_ns();
    atomic_store_explicit(&s->slice_timed, 1, memory_order_relaxed);
    GREEN_TEST_TRACE_DEADLINE(w, end);
    struct itimerspec it = {
        { (time_t)(quantum / 1000000000u), (long)(quantum % 1000000000u) },
        { (time_t)(end / 1000000000u), (long)(end % 1000000000u) } };
    if (timer_settime(s->slice_timer, TIMER_ABSTIME, &it, NULL) != 0)
        atomic_store_explicit(&s->slice_timed, 0, memory_order_relaxed);
}

/* AS-safe.  w's slice timer fired: true if the slice it timed is still
 * running and should be asked to switch.  (A run that does not preempt by
 * signal has no slice timer: stale.) */
bool green__slice_timer_fired(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    green__count(&green__sig_stats.signals_sent);
    if (!s || !atomic_load_explicit(&s->slice_timed, memory_order_relaxed))
        return false;                /* stopped meanwhile: stale */
    uint64_t now = green__clock_ns(), quantum = green__quantum_ns(w->rt);
    while (s->slice_next <= now)     /* expiries the kernel merged count once */
        s->slice_next += quantum;
    if (w->cur == &w->g0) {
        if (++s->slice_idle >= GREEN_SLICE_IDLE_STOP)
            green__slice_timer_release(w);
        return false;
    }
    s->slice_idle = 0;
    uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
    if (tick == s->slice_tick)
        return true;                 /* one slice since the last look */
    /* It switched by itself since: time the slice now running from here,
     * if the worker really ran. */
    uint64_t cpu = own_cpu_ns();
    if (cpu - s->slice_seen_cpu < (now - s->slice_seen_ns) / 2) {
        green__slice_timer_release(w);
        return false;
    }
    s->slice_tick = tick;
    s->slice_seen_ns = now;
    s->slice_seen_cpu = cpu;
    return false;
}

/* Before an exec on w (exec.c, through green__sig_quiet): the timer will
 * not fire, and the monitor watches w again. */
void green__slice_timer_disarm(struct green__worker *w)
{
    struct green__sig_worker *s = green__sig_worker(w);
    if (s->slice_timer_ok)
        stop(s);
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
