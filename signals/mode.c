/*
 * green_run: pick the preemption mode, then run.
 *
 * The runtime itself is sched/run.c (green__run); this layer decides which
 * hooks it gets.  Cooperative mode (GREEN_PREEMPT=off) gets none.  Signal
 * mode makes the layer's state for the run's workers (rt->preempt, struct
 * green__sig_worker), installs the handler for the run and hands the
 * monitor green__sig_tick, which names the monitor's next deadline.  Budget mode
 * needs no signal: its hooks only keep the safepoint table (which the
 * budget's walk reads) built and fresh; the budget itself is the slices'
 * (sched/slice.c, safepoints/budget.c).  "both" is signal mode's hooks with
 * the budget on.  A deterministic run has one worker and never signals.
 */
#include "signals.h"
#include "safepoints.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Signal mode: the run's per-worker state (rt->preempt, zeroed: no
 * request, no slice timer), then the handler; undone in reverse once the
 * workers have stopped. */
static int signal_start(struct green__rt *rt)
{
    size_t bytes = rt->nworkers * sizeof(struct green__sig_worker);
    struct green__sig_worker *all = aligned_alloc(GREEN_CACHELINE, bytes);
    if (!all)
        return ENOMEM;
    memset(all, 0, bytes);
    rt->preempt = all;
    int err = green__sig_install(rt);
    if (err) {
        rt->preempt = NULL;
        free(all);
    }
    return err;
}
static void signal_stop(struct green__rt *rt)
{
    green__sig_uninstall(rt);
    free(rt->preempt);
    rt->preempt = NULL;
}

static int budget_start(struct green__rt *rt)
{
    /* A budget's hooked return saves the state as a signal's preemption
     * does (frame.c). */
    int err = green__xsave_setup();
    if (!err)
        err = green__sp_acquire(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
    if (!err)
        green__sp_walk_init();
    return err;
}
static void budget_stop(struct green__rt *rt)
{
    green__sp_release(rt->cfg.unsafe_objects, rt->cfg.preemptible_objects);
}
static uint64_t budget_tick(struct green__rt *rt, uint64_t now)
{
    (void)rt;
    green__sp_refresh(now);          /* objects loaded or unloaded? */
    return GREEN_FOREVER;            /* the monitor's own rhythm will do */
}

/* What sched/ and safepoints/ call for the way out of a refused preemption
 * (hijack.c): the same in both modes. */
#define WAY_OUT                                                                \
    .hijack = green__hijack_after_walk,                                        \
    .hook_ret = (uintptr_t)green__deferred_trampoline,                         \
    .switch_allowed = green__switch_allowed_here

static const struct green__hooks budget_hooks = {
    .start = budget_start, .stop = budget_stop, .tick = budget_tick, WAY_OUT,
};

static const struct green__hooks signal_hooks = {
    .start = signal_start, .stop = signal_stop, .tick = green__sig_tick,
    .worker_exit = green__slice_timer_delete, WAY_OUT,
};

/* The system's runtime (libc, ld.so, libstdc++...) may hold what other
 * green threads need whatever the program says: naming it preemptible is a
 * mistake, said on stderr. */
static bool preemptible_ok(const char *list)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char name[256];
        if (len > 0 && len < sizeof name) {
            memcpy(name, p, len);
            name[len] = '\0';
            if (green__sp_system_object(name)) {
                fprintf(stderr, "libgreen: GREEN_PREEMPTIBLE names \"%s\", part of the "
                                "system's runtime, which is never preempted\n", name);
                return false;
            }
        }
        p = end ? end + 1 : p + len;
    }
    return true;
}

/* Is signo free for libgreen: not blocked by the caller, and the process
 * neither ignores it nor handles it? */
static bool signal_free(int signo, const sigset_t *mask)
{
    struct sigaction sa;
    return !sigismember(mask, signo) && sigaction(signo, NULL, &sa) == 0 &&
           !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/* A program that blocks the preemption signal in the thread calling
 * green_run means to take it itself (sigwait, signalfd: an alarm()
 * loop); the workers would take it instead, and its default action kills
 * the process.  Preempt with a free real-time signal then, the highest,
 * and say so; EINVAL if there is none. */
static int signal_not_blocked(green_config_t *cfg)
{
    sigset_t mask;
    if (pthread_sigmask(SIG_SETMASK, NULL, &mask) != 0 || !sigismember(&mask, cfg->signo))
        return 0;
    for (int s = SIGRTMAX; s >= SIGRTMIN; s--) {
        if (signal_free(s, &mask)) {
            fprintf(stderr, "libgreen: signal %d (GREEN_SIGNAL) is blocked in the thread that "
                            "calls green_run, for sigwait or signalfd: preempting with SIGRTMIN+%d "
                            "instead (set GREEN_SIGNAL to choose)\n",
                    cfg->signo, s - SIGRTMIN);
            cfg->signo = s;
            return 0;
        }
    }
    fprintf(stderr, "libgreen: signal %d (GREEN_SIGNAL) is blocked in the thread that calls "
                    "green_run and no real-time signal is free: set GREEN_SIGNAL to one the "
                    "program leaves alone, or GREEN_PREEMPT=budget\n", cfg->signo);
    return EINVAL;
}

int green_run(void *(*main_fn)(void *), void *arg, const green_config_t *cfg_in, void **ret)
{
    green_config_t cfg;
    int err;
    if (cfg_in)
        cfg = *cfg_in;
    else if ((err = green_config_init(&cfg)) != 0)
        return err;
    if ((err = green__config_check(&cfg, true)) != 0)
        return err;

    if (cfg.deterministic != GREEN_DETERMINISTIC_OFF) {
        if (cfg.workers > 1) {
            fprintf(stderr, "libgreen: a deterministic run has one worker; "
                            "%u were asked for (GREEN_WORKERS)\n", cfg.workers);
            return EINVAL;
        }
        cfg.workers = 1;
        if (cfg.preempt != GREEN_PREEMPT_OFF)
            cfg.preempt = GREEN_PREEMPT_BUDGET;  /* signals come at machine times */
    }
    if ((cfg.preempt == GREEN_PREEMPT_SIGNAL || cfg.preempt == GREEN_PREEMPT_BOTH) &&
        (err = signal_not_blocked(&cfg)) != 0)
        return err;
    const struct green__hooks *hooks = NULL;
    switch (cfg.preempt) {
    case GREEN_PREEMPT_OFF:
        return green__run(main_fn, arg, &cfg, ret, NULL);
    case GREEN_PREEMPT_BUDGET:
        hooks = &budget_hooks;
        break;
    default:
        hooks = &signal_hooks;
        break;
    }
    if (!preemptible_ok(cfg.preemptible_objects))
        return EINVAL;
    /* The run keeps its own copy of the names (the environment may change
     * while it runs). */
    char *unsafe = NULL, *preemptible = NULL;
    if ((cfg.unsafe_objects && !(unsafe = strdup(cfg.unsafe_objects))) ||
        (cfg.preemptible_objects && !(preemptible = strdup(cfg.preemptible_objects)))) {
        free(unsafe);
        return ENOMEM;
    }
    cfg.unsafe_objects = unsafe;
    cfg.preemptible_objects = preemptible;
    err = green__run(main_fn, arg, &cfg, ret, hooks);
    free(unsafe);
    free(preemptible);
    return err;
}
