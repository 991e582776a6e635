/*
 * green_run: pick the preemption mode, then run.
 *
 * The runtime itself is sched/run.c (green__run); this layer decides which
 * hooks it gets.  Cooperative mode (GREEN_PREEMPT=off) gets none.  Signal
 * mode installs the handler for the run and hands the monitor
 * green__sig_tick, which names the monitor's next deadline.  The reduction budget (and "both")
 * come later; asking for them is an error today, not a silent downgrade.
 */
#include "signals.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int signal_start(struct green__rt *rt) { return green__sig_install(rt); }
static void signal_stop(struct green__rt *rt) { green__sig_uninstall(rt); }

static const struct green__hooks signal_hooks = {
    .start = signal_start,
    .stop = signal_stop,
    .tick = green__sig_tick,
    .worker_exit = green__sig_worker_exit,
};

int green_run(void *(*main_fn)(void *), void *arg, const green_config_t *cfg_in, void **ret)
{
    green_config_t cfg;
    int err;
    if (cfg_in)
        cfg = *cfg_in;
    else if ((err = green_config_init(&cfg)) != 0)
        return err;
    if ((err = green__config_check(&cfg)) != 0)
        return err;

    switch (cfg.preempt) {
    case GREEN_PREEMPT_OFF:
        return green__run(main_fn, arg, &cfg, ret, NULL);
    case GREEN_PREEMPT_SIGNAL: {
        /* The run keeps its own copy of the names (the environment may
         * change while it runs). */
        char *unsafe = NULL;
        if (cfg.unsafe_objects && !(unsafe = strdup(cfg.unsafe_objects)))
            return ENOMEM;
        cfg.unsafe_objects = unsafe;
        err = green__run(main_fn, arg, &cfg, ret, &signal_hooks);
        free(unsafe);
        return err;
    }
    default:
        fprintf(stderr, "libgreen: preemption mode %s is not available yet; "
                        "use GREEN_PREEMPT=signal or off\n",
                cfg.preempt == GREEN_PREEMPT_BUDGET ? "budget" : "both");
        return ENOTSUP;
    }
}
