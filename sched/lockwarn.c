/*
 * The long-wait warning (GREEN_LOCK_WARN_MS): the holder nobody can hand
 * off to (handoff.c) -- one parked on something else, a channel, a socket,
 * a sleep, while others wait for its lock (the "futurelock" of async
 * runtimes).  The monitor (sysmon.c) looks every half of the threshold
 * (green__lock_warn_scan: every thread of the run, so its cost grows with
 * their number) for a thread that has waited that long for a mutex whose
 * holder is parked on anything but a lock (a lock is a chain, which lock
 * cycles cover, cycle.c), and names both in one line on stderr, once per
 * park of the holder.
 */
#include "sched.h"

#include <stdio.h>
#include <string.h>

struct warn_scan {
    struct green__rt *rt;
    uint64_t now, after;
};

static void quoted(char *out, size_t n, const struct green__thread *t)
{
    char name[GREEN_NAME_MAX];
    green__name_racy(t, name);
    if (name[0])
        snprintf(out, n, "green thread %llu \"%s\"", (unsigned long long)t->id, name);
    else
        snprintf(out, n, "green thread %llu", (unsigned long long)t->id);
}

static void warn_one(void *obj, void *arg)
{
    struct green__thread *t = obj;
    struct warn_scan *ws = arg;
    uintptr_t lw = atomic_load_explicit(&t->lockwait, memory_order_acquire);
    if (!lw || green__state(t) != GREEN_T_PARKED)
        return;
    const struct green__thread_cold *tc = green__cold_racy(t);
    uint64_t since = tc ? __atomic_load_n(&tc->lockwait_since, __ATOMIC_RELAXED) : 0;
    if (!since || since >= ws->now || ws->now - since < ws->after)
        return;                      /* (a wait begun after the look began) */
    struct green__thread *h = green__lock_holder(ws->rt, NULL, lw, false);
    if (!h || h == t || green__state(h) != GREEN_T_PARKED ||
        atomic_load_explicit(&h->lockwait, memory_order_relaxed))
        return;
    struct green__thread_cold *hc = green__cold_racy(h);
    uint64_t park = __atomic_load_n(&h->parked_tsc, __ATOMIC_RELAXED);
    if (!hc || hc->lock_warned == park)
        return;
    hc->lock_warned = park;
    const char *what = __atomic_load_n(&hc->wait_what, __ATOMIC_RELAXED);
    const void *on = __atomic_load_n(&hc->wait_obj, __ATOMIC_RELAXED);
    char hn[64], tn[64], line[384];
    quoted(hn, sizeof hn, h);
    quoted(tn, sizeof tn, t);
    snprintf(line, sizeof line,
             "libgreen: warning: %s holds %s %p and is parked in %s on %p, while %s has "
             "waited %llu ms for it (GREEN_LOCK_WARN_MS=%u)\n",
             hn, (lw & GREEN_LW_KIND) == GREEN_LW_GREEN ? "green_mutex_t" : "pthread_mutex_t",
             (const void *)(lw & ~(uintptr_t)GREEN_LW_MASK), what ? what : "?", on, tn,
             (unsigned long long)((ws->now - since) / 1000000u), ws->rt->cfg.lock_warn_ms);
    green__write_str(2, line);
}

uint64_t green__lock_warn_scan(struct green__rt *rt, uint64_t now)
{
    uint64_t after = (uint64_t)rt->cfg.lock_warn_ms * 1000000u;
    struct warn_scan ws = { rt, now, after };
    green__pool_foreach(&rt->threads, warn_one, &ws);
    uint64_t period = after / 2;
    return now + (period < 1000000u ? 1000000u : period);
}
