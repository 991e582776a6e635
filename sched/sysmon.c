/*
 * The monitor: one OS thread per run that watches the workers from outside,
 * as Go's sysmon does.
 *
 * Why it exists.  Waking an idle worker costs a futex syscall, far more than
 * a channel message or a spawn, so the scheduler does not wake one for every
 * thread it makes runnable: a thread put in the LIFO slot usually runs on
 * this worker within nanoseconds, because its waker is about to block (see
 * loop.c).  When the waker instead keeps computing, that thread -- and
 * anything queued behind it -- would wait while other workers sleep.  The
 * monitor notices a worker that has not switched since its last look yet has
 * runnable threads queued, and wakes an idle worker to steal them.
 *
 * Its rhythm: a look every GREEN_SYSMON_BASE_NS while any worker is busy,
 * stretching to GREEN_SYSMON_MAX_NS after 50 quiet looks (nothing to do), and
 * none at all while every worker is idle: it then sleeps on sysmon_word
 * until a worker leaves idle (green__sysmon_kick, a Dekker pair with the
 * idle count).  The preemption layer (rt->hooks: signals/ asks a worker
 * stuck on one thread for a whole quantum to switch) is called whenever the
 * monitor wakes and names its own next deadline; the monitor sleeps until
 * the earlier of the two.  Every wake costs a timer interrupt and two
 * context switches -- tens of microseconds of some CPU under virtualization
 * -- so it wakes at deadlines, never on a fixed fraction of the quantum.
 *
 * It reads w->tick (relaxed) and the run queues' ends; it writes nothing of
 * a worker's, and wakes workers only through green__wakep.
 */
#include "sched.h"

#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>

#define GREEN_SYSMON_BASE_NS 500000u      /* 0.5 ms */
#define GREEN_SYSMON_MAX_NS 10000000u     /* 10 ms */
#define GREEN_SYSMON_QUIET 50u

static bool has_queued(struct green__worker *w)
{
    uint32_t head = atomic_load_explicit(&w->q.head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&w->q.tail, memory_order_relaxed);
    return head != tail || atomic_load_explicit(&w->runnext, memory_order_relaxed);
}

/* Sleep until `until` (green__clock_ns time; absolute, so time spent
 * looking does not stretch the rhythm) or a poke.  The caller cleared
 * sysmon_nap before it looked: a poke since then ends the nap at once. */
static void nap_until(struct green__rt *rt, uint64_t until)
{
    while (atomic_load(&rt->sysmon_nap) == 0 && green__clock_ns() < until)
        green__futex_wait(&rt->sysmon_nap, 0, until);
}

void green__sysmon_poke(struct green__rt *rt)
{
    if (atomic_exchange(&rt->sysmon_nap, 1) == 0)
        green__futex_wake(&rt->sysmon_nap, 1);
}

/* One look at every worker; true if it had to act. */
static bool sysmon_tick(struct green__rt *rt)
{
    bool acted = false;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct green__worker *w = &rt->workers[i];
        uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed);
        if (tick == rt->sysmon_seen[i] && has_queued(w) && atomic_load(&rt->nidle) > 0) {
            /* Stuck on one thread with others waiting: the ring can be
             * stolen by a woken worker; the LIFO slot must be rescued. */
            struct green__thread *t = green__runnext_rescue(w);
            if (t)
                green__globq_push(rt, t, t, 1);
            green__wakep(rt);
            acted = true;
        }
        rt->sysmon_seen[i] = tick;
    }
    return acted;
}

static void *sysmon_main(void *arg)
{
    struct green__rt *rt = arg;
    const struct green__hooks *h = rt->hooks;
    prctl(PR_SET_NAME, "green-monitor");
    uint64_t period = GREEN_SYSMON_BASE_NS;
    uint64_t next_look = green__clock_ns() + period;
    uint64_t next_warn = rt->cfg.lock_warn_ms ? next_look : GREEN_FOREVER;
    unsigned quiet = 0;

    while (!atomic_load(&rt->done)) {
        if (atomic_load(&rt->nidle) == rt->nworkers) {
            atomic_store(&rt->sysmon_word, 0);
            atomic_thread_fence(memory_order_seq_cst);
            /* Every worker idle: only the long-wait warning (a holder
             * parked on a channel while others wait) has a deadline. */
            if (atomic_load(&rt->nidle) == rt->nworkers && !atomic_load(&rt->done))
                green__futex_wait(&rt->sysmon_word, 0, next_warn);
            if (next_warn != GREEN_FOREVER && green__clock_ns() >= next_warn)
                next_warn = green__lock_warn_scan(rt, green__clock_ns());
            period = GREEN_SYSMON_BASE_NS;
            quiet = 0;
            next_look = green__clock_ns() + period;
            continue;
        }
        atomic_store(&rt->sysmon_nap, 0);
        uint64_t now = green__clock_ns();
        /* Two rhythms: its own look for stuck queues, backing off when
         * nothing happens, and the preemption layer's deadlines. */
        if (now >= next_look) {
            /* A deterministic run's schedule is its worker's alone. */
            if (!rt->det && sysmon_tick(rt)) {
                period = GREEN_SYSMON_BASE_NS;
                quiet = 0;
            } else if (++quiet > GREEN_SYSMON_QUIET && period < GREEN_SYSMON_MAX_NS) {
                period *= 2;
            }
            next_look = now + period;
        }
        green__netpoll_stale(rt, NULL, now, GREEN_NETPOLL_STALE_NS); /* while all are busy */
        if (now >= next_warn)
            next_warn = green__lock_warn_scan(rt, now);
        uint64_t wake = next_look < next_warn ? next_look : next_warn;
        if (h && h->tick) {
            uint64_t t = h->tick(rt, now);
            if (t < wake)
                wake = t;
        }
        nap_until(rt, wake);
    }
    return NULL;
}

int green__sysmon_start(struct green__rt *rt)
{
    atomic_store(&rt->sysmon_word, 1);
    if (pthread_create(&rt->sysmon, NULL, sysmon_main, rt) != 0)
        return EAGAIN;
    /* With every CPU busy running green threads, a monitor at normal
     * priority waits its turn behind them (milliseconds), and preemption
     * with it.  Where the system allows (root, CAP_SYS_NICE, RLIMIT_RTPRIO)
     * it runs at the lowest real-time priority: it sleeps almost all the
     * time and takes microseconds when it wakes.  Elsewhere it stays normal. */
    struct sched_param sp = { .sched_priority = 1 };
    pthread_setschedparam(rt->sysmon, SCHED_FIFO, &sp);
    rt->sysmon_started = true;
    return 0;
}

void green__sysmon_stop(struct green__rt *rt)
{
    if (!rt->sysmon_started)
        return;
    atomic_store(&rt->done, 1);
    atomic_store(&rt->sysmon_word, 1);
    green__futex_wake(&rt->sysmon_word, 1);
    green__sysmon_poke(rt);
    green__os_join(rt->sysmon, NULL);
    rt->sysmon_started = false;
}
